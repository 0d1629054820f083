//! [`Provider`]: the engine every endpoint calls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::ProviderConfig;
use super::error::{OAuthError, OAuthResult};
use super::model::{Client, Grant};
use super::store::{OAuthStore, RateDecision, RateLimiter, SessionStore};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::{Identity, SecretToken, TokenHash};
use crate::ids::{ClientId, GrantId, TenantId};
use crate::token::{
    Algorithm, CachedJwks, JwksSource, KeyManager, MasterKey, Verifier, VerifierConfig,
};

/// What the provider is built from.
pub struct ProviderParts {
    /// Settings.
    pub config: ProviderConfig,
    /// Users, tenants and memberships (password login, roles in tokens).
    pub identity: Identity,
    /// Clients, codes, grants, refresh tokens, consents.
    pub store: Arc<dyn OAuthStore>,
    /// Login sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Signing keys.
    pub keys: Arc<KeyManager>,
    /// Brute-force protection for logins and client authentication.
    pub limiter: Arc<dyn RateLimiter>,
    /// The master key: client-secret hashing, CSRF and flow-state keys derive from it.
    pub master_key: MasterKey,
    /// The clock (a [`SystemClock`] unless testing).
    pub clock: Option<Arc<dyn Clock>>,
}

/// The OAuth2 / OpenID Connect provider.
pub struct Provider {
    pub(super) config: ProviderConfig,
    pub(super) identity: Identity,
    pub(super) store: Arc<dyn OAuthStore>,
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) keys: Arc<KeyManager>,
    pub(super) limiter: Arc<dyn RateLimiter>,
    pub(super) clock: Arc<dyn Clock>,
    secret_key: hmac::Key,
    flow_key: hmac::Key,
    csrf_key: hmac::Key,
    own_tokens: Verifier,
    clients: RwLock<HashMap<ClientId, (Arc<Client>, Instant)>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider over `parts`; `InvalidInput` on field `issuer` when the issuer is not an
    /// absolute `https` URL (or `http` on a loopback host) without query or fragment.
    pub fn new(parts: ProviderParts) -> Result<Self> {
        check_issuer(&parts.config.issuer)?;
        let key = |label: &str| hmac::Key::new(hmac::HMAC_SHA256, &parts.master_key.derive(label));
        let clock = parts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let source: Arc<dyn JwksSource> = parts.keys.clone();
        let own_tokens = Verifier::new(
            VerifierConfig {
                algorithms: vec![Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256],
                // Our own clock judges our own tokens: no skew to forgive.
                leeway: chrono::Duration::zero(),
                ..VerifierConfig::new(parts.config.issuer.clone(), [parts.config.issuer.clone()])
            },
            CachedJwks::new(source, Arc::clone(&clock)),
        )?;
        Ok(Self {
            own_tokens,
            secret_key: key("tenancy client secrets v1"),
            flow_key: key("tenancy authorization flow v1"),
            csrf_key: key("tenancy csrf v1"),
            config: parts.config,
            identity: parts.identity,
            store: parts.store,
            sessions: parts.sessions,
            keys: parts.keys,
            limiter: parts.limiter,
            clock,
            clients: RwLock::new(HashMap::new()),
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The signing keys.
    #[must_use]
    pub fn keys(&self) -> &Arc<KeyManager> {
        &self.keys
    }

    /// The identity service the provider logs users in against.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Verifies a token this provider signed (signature with a published key, issuer,
    /// and expiry when `check_exp`), returning its claims. No audience check.
    pub(super) async fn verify_own<T: DeserializeOwned>(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<T> {
        self.own_tokens.verify_claims(token, check_exp).await
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The keyed digest of a client secret.
    pub(super) fn secret_digest(&self, secret: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.secret_key, secret.as_bytes());
        let mut out = [0_u8; 32];
        out.copy_from_slice(tag.as_ref().get(..32).unwrap_or(&[0_u8; 32]));
        out
    }

    // ----- CSRF -----

    /// A fresh value for the CSRF cookie of the login, organization and consent forms.
    pub fn new_csrf_cookie(&self) -> Result<String> {
        Ok(SecretToken::generate()?.expose().to_owned())
    }

    /// The form token that goes with a CSRF cookie value (double submit, signed).
    #[must_use]
    pub fn csrf_token(&self, cookie: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.csrf_key, cookie.as_bytes()).as_ref())
    }

    /// Whether a submitted form token matches the CSRF cookie (constant time).
    #[must_use]
    pub fn check_csrf(&self, cookie: Option<&str>, form_token: Option<&str>) -> bool {
        let (Some(cookie), Some(token)) = (cookie, form_token) else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        hmac::verify(&self.csrf_key, cookie.as_bytes(), &tag).is_ok()
    }

    // ----- signed flow state -----

    /// Seals a value into a tamper-proof (not secret) string for a hidden form field.
    pub(super) fn seal_flow<T: Serialize>(&self, value: &T) -> Result<String> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Internal(format!("cannot encode flow state: {e}")))?;
        let tag = hmac::sign(&self.flow_key, &json);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// Opens a value sealed by [`Provider::seal_flow`]; `InvalidInput` on field `request`
    /// when it was altered or is not one.
    pub(super) fn open_flow<T: DeserializeOwned>(&self, sealed: &str) -> Result<T> {
        let bad = || {
            Error::invalid(
                "request",
                "the authorization request is invalid or was altered",
            )
        };
        let (body, tag) = sealed.split_once('.').ok_or_else(bad)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        hmac::verify(&self.flow_key, &json, &tag).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }

    // ----- clients -----

    /// The client with this id, from the in-process cache when fresh.
    pub(super) async fn cached_client(&self, id: ClientId) -> Result<Arc<Client>> {
        if let Ok(cache) = self.clients.read()
            && let Some((client, at)) = cache.get(&id)
            && at.elapsed() < self.config.client_cache_ttl
        {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(self.store.client(id).await?);
        if let Ok(mut cache) = self.clients.write() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(id, (Arc::clone(&client), Instant::now()));
        }
        Ok(client)
    }

    /// Drops a client from the cache after a local change.
    pub(super) fn forget_client(&self, id: ClientId) {
        if let Ok(mut cache) = self.clients.write() {
            cache.remove(&id);
        }
    }

    // ----- grants -----

    /// The grant, if it exists and was not revoked.
    pub(super) async fn live_grant(&self, tenant: TenantId, id: GrantId) -> Result<Option<Grant>> {
        match self.store.grant(tenant, id).await {
            Ok(grant) if grant.revoked_at.is_none() => Ok(Some(grant)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Revokes a grant now; one that was never stored (its code was not exchanged) has
    /// nothing to revoke.
    pub(super) async fn revoke_grant_if_any(&self, tenant: TenantId, id: GrantId) -> Result<()> {
        match self.store.revoke_grant(tenant, id, self.now()).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    // ----- rate limits -----

    /// Whether `key` is currently blocked under `quota`, without counting a request.
    pub(super) async fn blocked(&self, key: &str, quota: super::store::Quota) -> OAuthResult<()> {
        match self.limiter.peek(key, quota, self.now()).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => Err(OAuthError {
                retry_after: Some(retry_after),
                ..OAuthError::new(
                    super::error::OAuthErrorCode::SlowDown,
                    "too many failed attempts: try again later",
                )
            }),
        }
    }

    /// Counts one failure against `key`.
    pub(super) async fn count_failure(&self, key: &str, quota: super::store::Quota) -> Result<()> {
        self.limiter.check(key, quota, self.now()).await.map(|_| ())
    }
}

/// A secret handle (authorization code, refresh token) that carries its tenant, so the
/// lookup can be scoped before anything is read: `<tenant uuid, 32 hex>.<random>`.
pub(super) fn new_handle(tenant: TenantId) -> Result<(String, TokenHash)> {
    let secret = SecretToken::generate()?;
    let handle = format!("{}.{}", tenant.as_uuid().simple(), secret.expose());
    let hash = SecretToken::from_presented("token", &handle)?.hash();
    Ok((handle, hash))
}

/// The tenant and hash of a presented handle; `None` when it is not one of ours.
pub(super) fn parse_handle(handle: &str) -> Option<(TenantId, TokenHash)> {
    let (tenant, rest) = handle.split_once('.')?;
    if tenant.len() != 32 || rest.is_empty() {
        return None;
    }
    let tenant = uuid::Uuid::try_parse(tenant).ok()?;
    let hash = SecretToken::from_presented("token", handle).ok()?.hash();
    Some((TenantId::from_uuid(tenant), hash))
}

fn check_issuer(issuer: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("issuer", format!("`{issuer}` {why}"));
    let url = url::Url::parse(issuer).map_err(|_| bad("is not an absolute URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad("must use https (http only on a loopback host)")),
    }
}
