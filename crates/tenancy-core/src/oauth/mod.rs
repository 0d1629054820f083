//! The OAuth2 / OpenID Connect provider engine (feature `oauth`): clients, the
//! authorization-code (PKCE), client-credentials and refresh-token grants, introspection,
//! revocation, userinfo, discovery and logout, over storage-agnostic traits.
//!
//! It follows RFC 6749, RFC 7636, OpenID Connect Core and Discovery, RFC 7662, RFC 7009,
//! RFC 8414 and the OAuth 2.0 Security BCP (RFC 9700). HTTP belongs to the servers: this
//! module takes parsed parameters and returns what to answer.

mod authorize;
mod clients;
mod config;
mod endpoints;
mod error;
pub(crate) mod gcra;
mod grants;
mod model;
mod provider;
pub(crate) mod rules;
mod store;

pub use crate::memory::MemoryRateLimiter;
pub use authorize::{
    AuthorizationPageError, AuthorizationParams, AuthorizationStep, NewSession,
    PendingAuthorization, StepInput,
};
pub use clients::{ClientAuthentication, ClientRegistration, ClientSecret, JWT_BEARER_ASSERTION};
pub use config::ProviderConfig;
pub use endpoints::{Introspection, LogoutOutcome};
pub use error::{OAuthError, OAuthErrorCode, OAuthResult};
pub use grants::{TokenRequest, TokenResponse};
pub use model::{
    AuthMethod, AuthorizationCode, Client, ClientKind, CodeRedemption, Consent, Grant, GrantType,
    LoginSession, MAX_REDIRECT_URIS, MAX_SCOPE_BYTES, MAX_SCOPES, MAX_URI_BYTES, RedirectUri,
    RefreshRotation, RefreshToken, Scopes, SecretDigest,
};
pub use provider::{Provider, ProviderParts};
pub use store::{
    ClientScope, OAuthStore, ProviderStore, Quota, RateDecision, RateLimiter, SessionStore,
};
