//! Operator authentication of the administrative gRPC APIs: a static admin token
//! presented as `authorization: Bearer <token>`.
//!
//! [`AdminAuth`] is a tonic interceptor; it is applied to the administrative services
//! only, never to `grpc.health.v1.Health` or server reflection, which stay open so load
//! balancers and tools can use them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenancy_core::Error;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::status::to_status;

/// Checks the admin bearer token of each request.
///
/// Tokens are compared as SHA-256 digests with a constant-time equality, so neither
/// the content nor the length of the expected token leaks through timing. In insecure
/// development mode ([`AdminAuth::insecure_dev`]) every request is let through, with or
/// without a token.
#[derive(Clone)]
pub struct AdminAuth {
    /// SHA-256 of the expected token; `None` in insecure development mode.
    expected: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.expected.is_some() {
            "bearer token"
        } else {
            "insecure development mode: no authentication"
        };
        f.debug_struct("AdminAuth").field("mode", &mode).finish()
    }
}

impl AdminAuth {
    /// Requires `authorization: Bearer <token>` on every request. Fails on an empty
    /// token.
    pub fn new(token: &str) -> Result<Self, crate::Error> {
        if token.is_empty() {
            return Err(crate::Error::Config(
                "the admin token must not be empty".into(),
            ));
        }
        Ok(Self {
            expected: Some(digest(token.as_bytes())),
        })
    }

    /// Lets every request through, with any token or none. For local development only.
    #[must_use]
    pub const fn insecure_dev() -> Self {
        Self { expected: None }
    }

    /// Whether this is insecure development mode (no authentication).
    #[must_use]
    pub const fn is_insecure(&self) -> bool {
        self.expected.is_none()
    }

    /// Checks the `authorization` metadata of a request: `Unauthenticated` when the
    /// bearer token is missing, malformed or wrong.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Error> {
        self.check_authorization(metadata.get("authorization").and_then(|v| v.to_str().ok()))
    }

    /// Checks the value of an `authorization` header (HTTP) or metadata entry (gRPC):
    /// `Unauthenticated` when the bearer token is missing, malformed or wrong.
    pub fn check_authorization(&self, value: Option<&str>) -> Result<(), Error> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let presented = value.and_then(bearer_token).ok_or_else(|| {
            Error::Unauthenticated("missing `authorization: Bearer <admin token>`".into())
        })?;
        if bool::from(digest(presented.as_bytes()).ct_eq(expected)) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("invalid admin token".into()))
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata()).map_err(|e| to_status(&e))?;
        Ok(request)
    }
}

/// The token of an `authorization` value `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tenancy_core::ErrorKind;

    use super::*;

    fn with_auth(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn accepts_only_the_right_bearer_token() {
        let auth = AdminAuth::new("s3cret").unwrap();
        assert!(auth.check(&with_auth("Bearer s3cret")).is_ok());
        assert!(auth.check(&with_auth("bearer s3cret")).is_ok());
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            let err = auth.check(&with_auth(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{bad}");
        }
        let err = auth.check(&MetadataMap::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    }

    #[test]
    fn insecure_dev_accepts_anything_and_empty_tokens_are_refused() {
        let auth = AdminAuth::insecure_dev();
        assert!(auth.is_insecure());
        assert!(auth.check(&MetadataMap::new()).is_ok());
        assert!(auth.check(&with_auth("Bearer whatever")).is_ok());
        assert!(AdminAuth::new("").is_err());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let auth = AdminAuth::new("s3cret").unwrap();
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
