//! Settings of the provider.

use std::time::Duration;

use super::store::Quota;

/// How the provider behaves. [`ProviderConfig::new`] gives the defaults for an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The issuer identifier: an `https` URL (or `http` on loopback for development)
    /// without query or fragment; every endpoint hangs below it.
    pub issuer: String,
    /// Lifetime of access tokens (default 15 minutes).
    pub access_token_ttl: Duration,
    /// Lifetime of ID tokens (default 15 minutes).
    pub id_token_ttl: Duration,
    /// Lifetime of refresh tokens, renewed on every rotation (default 30 days).
    pub refresh_token_ttl: Duration,
    /// Lifetime of authorization codes (default 60 seconds).
    pub code_ttl: Duration,
    /// Lifetime of login sessions (default 12 hours).
    pub session_ttl: Duration,
    /// How long an authorization in progress (login, organization, consent pages) stays
    /// valid (default 10 minutes).
    pub flow_ttl: Duration,
    /// Failed logins allowed per account (default 5 per 5 minutes).
    pub login_account_quota: Quota,
    /// Failed logins allowed per client IP (default 20 per 5 minutes).
    pub login_ip_quota: Quota,
    /// Failed token-endpoint authentications allowed per client id and per IP (default
    /// 10 per minute).
    pub client_auth_quota: Quota,
    /// How long a registered client is served from the in-process cache before it is
    /// read again (default 5 seconds; local updates invalidate at once).
    pub client_cache_ttl: Duration,
    /// Extra audiences put in every access token besides the client id.
    pub access_token_audiences: Vec<String>,
}

impl ProviderConfig {
    /// The defaults for `issuer`.
    #[must_use]
    pub fn new(issuer: impl Into<String>) -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            access_token_ttl: minutes(15),
            id_token_ttl: minutes(15),
            refresh_token_ttl: minutes(60 * 24 * 30),
            code_ttl: Duration::from_secs(60),
            session_ttl: minutes(60 * 12),
            flow_ttl: minutes(10),
            login_account_quota: Quota {
                burst: 5,
                period: minutes(5),
            },
            login_ip_quota: Quota {
                burst: 20,
                period: minutes(5),
            },
            client_auth_quota: Quota {
                burst: 10,
                period: minutes(1),
            },
            client_cache_ttl: Duration::from_secs(5),
            access_token_audiences: Vec::new(),
        }
    }

    /// The URL of an endpoint below the issuer, e.g. `endpoint("/token")`.
    #[must_use]
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}
