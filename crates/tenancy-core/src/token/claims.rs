//! The claims of the tokens the provider issues: JWT access tokens (RFC 9068) and
//! OpenID Connect ID tokens.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::keys::Algorithm;
use crate::ids::{ClientId, GrantId, TenantId};

/// The `aud` claim: one audience or several (RFC 7519 §4.1.3 allows both forms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is one of the audiences.
    #[must_use]
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(one) => one == aud,
            Self::Many(many) => many.iter().any(|a| a == aud),
        }
    }

    /// The audiences.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many.as_slice(),
        };
        slice.iter().map(String::as_str)
    }
}

impl From<String> for Audience {
    fn from(aud: String) -> Self {
        Self::One(aud)
    }
}

impl From<&str> for Audience {
    fn from(aud: &str) -> Self {
        Self::One(aud.to_owned())
    }
}

impl From<Vec<String>> for Audience {
    fn from(auds: Vec<String>) -> Self {
        Self::Many(auds)
    }
}

/// The claims of a JWT access token (RFC 9068), signed with `typ: at+jwt`. Times are
/// seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer URL.
    pub iss: String,
    /// The user id, or the client id for a client acting for itself.
    pub sub: String,
    /// The resource servers the token is for.
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not before, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The unique token id.
    pub jti: String,
    /// The granted scopes, space-delimited.
    pub scope: String,
    /// The client the token was issued to.
    pub client_id: ClientId,
    /// The tenant the token is for.
    pub tenant_id: TenantId,
    /// The user's roles in the tenant (empty for clients).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The grant (token family) the token was issued from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<GrantId>,
}

/// The claims of an OpenID Connect ID token, signed with `typ: JWT`. Times are seconds
/// since the Unix epoch; absent optional claims are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// The issuer URL.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The client id(s) the token is for.
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The `nonce` of the authorization request, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The hash of the access token issued with it; see [`at_hash`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The authorized party: the client id, when `aud` names several audiences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// The login session id (for logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's email address (scope `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email address was verified (scope `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// The user's display name (scope `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tenant the user signed in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
}

/// The `at_hash` of an access token (OpenID Connect Core §3.1.3.6): base64url of the
/// left half of the hash of its ASCII text, with the hash of the ID token's algorithm —
/// SHA-256 for `ES256` and `RS256`, and SHA-512 for `EdDSA` with Ed25519 (the hash
/// Ed25519 uses internally, as the OpenID Foundation's guidance for `EdDSA` says).
#[must_use]
pub fn at_hash(access_token: &str, alg: Algorithm) -> String {
    match alg {
        Algorithm::Es256 | Algorithm::Rs256 => {
            let digest = Sha256::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.first_chunk::<16>().map_or(&[][..], |h| h))
        }
        Algorithm::EdDsa => {
            let digest = Sha512::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.first_chunk::<32>().map_or(&[][..], |h| h))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audience_reads_and_writes_both_forms() {
        let one: Audience = serde_json::from_value(json!("api")).unwrap();
        assert_eq!(one, Audience::One("api".into()));
        assert!(one.contains("api") && !one.contains("other"));
        assert_eq!(serde_json::to_value(&one).unwrap(), json!("api"));
        let many: Audience = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert!(many.contains("b"));
        assert_eq!(many.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(serde_json::to_value(&many).unwrap(), json!(["a", "b"]));
        assert!(serde_json::from_value::<Audience>(json!(3)).is_err());
    }

    #[test]
    fn optional_claims_are_left_out() {
        let claims = IdTokenClaims {
            iss: "https://id.example".into(),
            sub: "u".into(),
            aud: "client".into(),
            exp: 2,
            iat: 1,
            auth_time: 1,
            nonce: None,
            at_hash: None,
            azp: None,
            sid: None,
            email: None,
            email_verified: None,
            name: None,
            tenant_id: None,
        };
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            value,
            json!({"iss": "https://id.example", "sub": "u", "aud": "client", "exp": 2, "iat": 1, "auth_time": 1})
        );
        assert_eq!(
            serde_json::from_value::<IdTokenClaims>(value).unwrap(),
            claims
        );
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // OpenID Connect Core, appendix A.3/A.4: the RS256 example.
        assert_eq!(
            at_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                Algorithm::Rs256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash("x", Algorithm::Es256).len(), 22);
        let ed = at_hash("x", Algorithm::EdDsa);
        assert_eq!(ed.len(), 43);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&ed).unwrap(),
            Sha512::digest(b"x")[..32].to_vec()
        );
    }
}
