//! Protocol errors: the `error` codes of RFC 6749 §4.1.2.1 and §5.2, OpenID Connect Core
//! §3.1.2.6 and RFC 6750 §3.1, with a human description. Servers turn them into a JSON
//! body (token, introspection, revocation), a redirect (authorization) or a
//! `WWW-Authenticate` header (userinfo), and pick the status from [`OAuthError::status`].

use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// An OAuth2 / OpenID Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// The request is missing a parameter, repeats one, or is otherwise malformed.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The code, refresh token or verifier is invalid, expired, revoked or not bound to
    /// this client or redirect URI.
    InvalidGrant,
    /// The client may not use this grant or response type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// The response type is not supported.
    UnsupportedResponseType,
    /// The scope is unknown, malformed or beyond what was granted.
    InvalidScope,
    /// The user or the server denied the request.
    AccessDenied,
    /// `prompt=none` but the user must log in.
    LoginRequired,
    /// `prompt=none` but the user must consent.
    ConsentRequired,
    /// `prompt=none` but the user must choose an organization.
    AccountSelectionRequired,
    /// The bearer token is missing, invalid, expired or revoked.
    InvalidToken,
    /// Too many attempts: try again later.
    SlowDown,
    /// The server is temporarily unable to answer.
    TemporarilyUnavailable,
    /// The server failed.
    ServerError,
}

impl OAuthErrorCode {
    /// The code as it appears on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::AccountSelectionRequired => "account_selection_required",
            Self::InvalidToken => "invalid_token",
            Self::SlowDown => "slow_down",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// A protocol error with its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The error code.
    pub code: OAuthErrorCode,
    /// A human-readable description (lowercase, no final period).
    pub description: String,
    /// For [`OAuthErrorCode::SlowDown`]: when to try again.
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    /// An error with a description.
    #[must_use]
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// `invalid_request`.
    #[must_use]
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    /// `invalid_client`.
    #[must_use]
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidClient, description)
    }

    /// `invalid_grant`.
    #[must_use]
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }

    /// `invalid_scope`.
    #[must_use]
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, description)
    }

    /// `invalid_token`.
    #[must_use]
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidToken, description)
    }

    /// The HTTP status this error is answered with: 401 for `invalid_client` and
    /// `invalid_token`, 429 for `slow_down`, 500/503 for server trouble, else 400.
    #[must_use]
    pub const fn status(&self) -> u16 {
        match self.code {
            OAuthErrorCode::InvalidClient | OAuthErrorCode::InvalidToken => 401,
            OAuthErrorCode::SlowDown => 429,
            OAuthErrorCode::ServerError => 500,
            OAuthErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidInput => OAuthErrorCode::InvalidRequest,
            ErrorKind::Unauthenticated => OAuthErrorCode::InvalidClient,
            ErrorKind::PermissionDenied => OAuthErrorCode::AccessDenied,
            ErrorKind::QuotaExceeded => OAuthErrorCode::SlowDown,
            ErrorKind::Unavailable => OAuthErrorCode::TemporarilyUnavailable,
            ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::Conflict => {
                OAuthErrorCode::InvalidRequest
            }
            ErrorKind::Internal => OAuthErrorCode::ServerError,
        };
        let description = match code {
            // Never leak internals to a client.
            OAuthErrorCode::ServerError => "the server failed to answer".to_owned(),
            _ => e.to_string(),
        };
        Self::new(code, description)
    }
}

/// Result of a protocol operation.
pub type OAuthResult<T> = std::result::Result<T, OAuthError>;
