//! The access-token verifier embedders use: checks a JWT against the issuer's JWKS and
//! turns it into a [`TenantContext`].
//!
//! ```
//! use std::sync::Arc;
//! use chrono::Utc;
//! use tenancy_core::clock::SystemClock;
//! use tenancy_core::token::{CachedJwks, Jwks, StaticJwks, Verifier, VerifierConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenancy_core::Result<()> {
//! let source = Arc::new(StaticJwks(Jwks::default()));
//! let keys = CachedJwks::new(source, Arc::new(SystemClock));
//! let verifier = Verifier::new(VerifierConfig::new("https://id.example.com", ["api"]), keys)?;
//! let err = verifier.verify("not.a.token").await.unwrap_err();
//! assert_eq!(err.kind(), tenancy_core::ErrorKind::Unauthenticated);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use uuid::Uuid;

use super::claims::AccessClaims;
use super::jwks::{Jwks, VerifyKey, index};
use super::keys::Algorithm;
use super::manager::KeyManager;
use crate::clock::Clock;
use crate::context::{Subject, TenantContext};
use crate::error::{Error, Result};
use crate::ids::{TenantId, UserId};

/// The largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest leeway a verifier applies to `exp`, `nbf` and `iat`.
pub const MAX_LEEWAY: Duration = Duration::seconds(300);
/// The longest base64url header or signature accepted (a 1,024-byte RSA-8192 signature).
const MAX_PART_CHARS: usize = 1368;
/// Room for a decoded header or signature of `MAX_PART_CHARS`.
const PART_BUF: usize = 1040;

/// What a [`Verifier`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The issuer (`iss`) tokens must name, exactly.
    pub issuer: String,
    /// The audiences of this resource server: a token is accepted when its `aud` names
    /// any of them.
    pub audiences: Vec<String>,
    /// The algorithms accepted (default `ES256` and `EdDSA`; `RS256` only if listed).
    /// `none` and every HMAC algorithm are always refused.
    pub algorithms: Vec<Algorithm>,
    /// The clock skew tolerated on `exp`, `nbf` and `iat` (default 60 s, at most
    /// [`MAX_LEEWAY`]).
    pub leeway: Duration,
}

impl VerifierConfig {
    /// A configuration for tokens of `issuer` meant for any of `audiences`, with the
    /// default algorithms and leeway.
    pub fn new<A: Into<String>>(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = A>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
            leeway: Duration::seconds(60),
        }
    }
}

/// Where a verifier gets the issuer's public keys.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The current key set. Called rarely (see [`CachedJwks`]).
    async fn fetch(&self) -> Result<Jwks>;
}

/// A fixed key set (tests, or keys configured out of band).
#[derive(Debug, Clone, Default)]
pub struct StaticJwks(pub Jwks);

#[async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<Jwks> {
        Ok(self.0.clone())
    }
}

/// Local verification inside the provider: the key set of the manager's current ring.
#[async_trait]
impl JwksSource for KeyManager {
    async fn fetch(&self) -> Result<Jwks> {
        Ok(self.jwks())
    }
}

#[async_trait]
impl<T: JwksSource + ?Sized> JwksSource for Arc<T> {
    async fn fetch(&self) -> Result<Jwks> {
        (**self).fetch().await
    }
}

/// What the cache holds.
#[derive(Default)]
struct CacheState {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// The last successful fetch.
    fetched_at: Option<DateTime<Utc>>,
    /// The last fetch, successful or not.
    attempted_at: Option<DateTime<Utc>>,
}

/// A [`JwksSource`] wrapped in a cache of parsed verification keys by `kid`.
///
/// The key set is fetched again after `ttl` (default 5 minutes) and when a token names
/// an unknown `kid` — but never twice within `min_refetch_interval` (default 30 s), so
/// tokens with made-up key ids cannot hammer the source. When a fetch fails, the keys
/// already known keep serving.
pub struct CachedJwks {
    source: Arc<dyn JwksSource>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    min_refetch_interval: Duration,
    state: RwLock<CacheState>,
    fetching: tokio::sync::Mutex<()>,
}

impl fmt::Debug for CachedJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut kids: Vec<&str> = state.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("CachedJwks")
            .field("ttl", &self.ttl)
            .field("min_refetch_interval", &self.min_refetch_interval)
            .field("kids", &kids)
            .field("fetched_at", &state.fetched_at)
            .finish_non_exhaustive()
    }
}

impl CachedJwks {
    /// A cache over `source`, timed by `clock`, empty until the first token arrives.
    pub fn new(source: Arc<dyn JwksSource>, clock: Arc<dyn Clock>) -> Self {
        Self {
            source,
            clock,
            ttl: Duration::minutes(5),
            min_refetch_interval: Duration::seconds(30),
            state: RwLock::new(CacheState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets how long a fetched key set is used before it is fetched again.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the least time between two fetches.
    #[must_use]
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Fetches the key set now (at start-up, to fail early on a bad source).
    pub async fn prefetch(&self) -> Result<()> {
        let _fetching = self.fetching.lock().await;
        self.fetch_now(self.clock.now()).await
    }

    /// Looks a key up from the cache: `(key, fresh, may_fetch)`.
    fn lookup(&self, kid: &str, now: DateTime<Utc>) -> (Option<Arc<VerifyKey>>, bool, bool) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let fresh = state.fetched_at.is_some_and(|t| now < t + self.ttl);
        let may_fetch = state
            .attempted_at
            .is_none_or(|t| now >= t + self.min_refetch_interval);
        (state.keys.get(kid).cloned(), fresh, may_fetch)
    }

    /// The verification key of `kid`: `Ok(None)` when the source does not publish it.
    async fn key(&self, kid: &str, now: DateTime<Utc>) -> Result<Option<Arc<VerifyKey>>> {
        let (key, fresh, may_fetch) = self.lookup(kid, now);
        if (fresh && key.is_some()) || !may_fetch {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        let (key, fresh, may_fetch) = self.lookup(kid, now);
        if (fresh && key.is_some()) || !may_fetch {
            return Ok(key);
        }
        match self.fetch_now(now).await {
            Ok(()) => Ok(self.lookup(kid, now).0),
            Err(err) => {
                let never_fetched = self
                    .state
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .fetched_at
                    .is_none();
                tracing::warn!(error = %err, "fetching the jwks failed; known keys keep serving");
                if never_fetched { Err(err) } else { Ok(key) }
            }
        }
    }

    /// Fetches and parses the key set; records the attempt either way.
    async fn fetch_now(&self, now: DateTime<Utc>) -> Result<()> {
        let fetched = self.source.fetch().await;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.attempted_at = Some(now);
        let jwks = fetched?;
        state.keys = index(&jwks);
        state.fetched_at = Some(now);
        Ok(())
    }
}

/// A verified access token and the request context it establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's claims.
    pub claims: AccessClaims,
    /// The tenant, subject, client, scopes and roles it carries.
    pub context: TenantContext,
}

/// Verifies access tokens (and, with [`Verifier::verify_claims`], other tokens of the
/// issuer such as ID-token hints). Every refusal is [`Error::Unauthenticated`]; a key
/// set that cannot be fetched at all is `Unavailable`.
#[derive(Debug)]
pub struct Verifier {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    keys: CachedJwks,
}

/// The JOSE header members the verifier reads.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// The registered claims [`Verifier::verify_claims`] checks.
#[derive(Deserialize)]
struct RegisteredClaims {
    iss: String,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
}

fn refuse(reason: impl Into<String>) -> Error {
    Error::Unauthenticated(reason.into())
}

/// Untrusted text fit for a message: at most 64 characters, escaped.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// Decodes one base64url part of at most `MAX_PART_CHARS` into `buf`.
fn decode_part<'b>(part: &str, buf: &'b mut [u8; PART_BUF], what: &str) -> Result<&'b [u8]> {
    if part.len() > MAX_PART_CHARS {
        return Err(refuse(format!("token {what} is too long")));
    }
    let len = URL_SAFE_NO_PAD
        .decode_slice(part, buf)
        .map_err(|_| refuse(format!("token {what} is not base64url")))?;
    buf.get(..len)
        .ok_or_else(|| refuse(format!("token {what} is not base64url")))
}

/// Whether `typ` names a JWT access token (RFC 9068 §2.1; the `application/` prefix
/// may be left out, and media types ignore case).
fn is_access_token_typ(typ: &str) -> bool {
    let typ = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .and_then(|_| typ.get(12..))
        .unwrap_or(typ);
    typ.eq_ignore_ascii_case("at+jwt")
}

impl Verifier {
    /// A verifier for `config` over the cached key set `keys` (whose clock it uses).
    /// `InvalidInput` when the issuer, the audiences or the algorithms are empty.
    /// The leeway is clamped to `0..=`[`MAX_LEEWAY`].
    pub fn new(config: VerifierConfig, keys: CachedJwks) -> Result<Self> {
        if config.issuer.is_empty() {
            return Err(Error::invalid("issuer", "must not be empty"));
        }
        if config.audiences.is_empty() || config.audiences.iter().any(String::is_empty) {
            return Err(Error::invalid(
                "audiences",
                "must name at least one audience, none empty",
            ));
        }
        if config.algorithms.is_empty() {
            return Err(Error::invalid(
                "algorithms",
                "must allow at least one algorithm",
            ));
        }
        Ok(Self {
            issuer: config.issuer,
            audiences: config.audiences,
            algorithms: config.algorithms,
            leeway: config
                .leeway
                .num_seconds()
                .clamp(0, MAX_LEEWAY.num_seconds()),
            keys,
        })
    }

    /// Verifies an access token: its form, header (`typ` `at+jwt`, an allowed `alg`
    /// matching its key, a published `kid`, no `crit`), signature, `iss`, `aud`, `exp`,
    /// `nbf` and `iat` (with leeway), and that its subject is a user or client id.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken> {
        let now = self.keys.clock.now();
        let payload = self.verified_payload(token, true, now).await?;
        let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|e| {
            refuse(format!(
                "token claims are malformed: {}",
                shown(&e.to_string())
            ))
        })?;
        self.check_issuer(&claims.iss)?;
        if !self.audiences.iter().any(|a| claims.aud.contains(a)) {
            return Err(refuse("token audience is not accepted here"));
        }
        let now_s = now.timestamp();
        self.check_times(Some(claims.exp), claims.nbf, now_s)?;
        if claims.iat > now_s + self.leeway {
            return Err(refuse("token was issued in the future"));
        }
        let subject = match Uuid::parse_str(&claims.sub) {
            Ok(id) if id == claims.client_id.as_uuid() => Subject::Client(claims.client_id),
            Ok(id) => Subject::User(UserId::from_uuid(id)),
            Err(_) => {
                return Err(refuse(format!(
                    "token subject `{}` is not a user or client id",
                    shown(&claims.sub)
                )));
            }
        };
        let context = TenantContext {
            tenant_id: claims.tenant_id,
            subject,
            client_id: claims.client_id,
            scopes: claims
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<BTreeSet<_>>(),
            roles: claims.roles.clone(),
        };
        Ok(VerifiedToken { claims, context })
    }

    /// [`Verifier::verify`], refusing a token of a tenant other than `tenant`.
    pub async fn verify_for_tenant(&self, token: &str, tenant: TenantId) -> Result<VerifiedToken> {
        let verified = self.verify(token).await?;
        if verified.context.tenant_id != tenant {
            return Err(refuse(format!("token is not valid for tenant `{tenant}`")));
        }
        Ok(verified)
    }

    /// Verifies any token of the issuer and returns its claims as `T` (for an
    /// `id_token_hint`, say). Checks the form, header (an allowed `alg` matching its
    /// key, a published `kid`, no `crit`; any `typ`), signature and `iss`; `exp` and
    /// `nbf` only when `check_exp` (logout accepts expired hints). It does not check
    /// `aud`: the caller knows which audience to expect.
    pub async fn verify_claims<T: DeserializeOwned>(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<T> {
        let now = self.keys.clock.now();
        let payload = self.verified_payload(token, false, now).await?;
        let registered: RegisteredClaims = serde_json::from_slice(&payload).map_err(|e| {
            refuse(format!(
                "token claims are malformed: {}",
                shown(&e.to_string())
            ))
        })?;
        self.check_issuer(&registered.iss)?;
        if check_exp {
            let exp = registered
                .exp
                .ok_or_else(|| refuse("token has no expiry (`exp`)"))?;
            self.check_times(Some(exp), registered.nbf, now.timestamp())?;
        }
        serde_json::from_slice(&payload).map_err(|e| {
            refuse(format!(
                "token claims are malformed: {}",
                shown(&e.to_string())
            ))
        })
    }

    fn check_issuer(&self, iss: &str) -> Result<()> {
        if iss == self.issuer {
            Ok(())
        } else {
            Err(refuse(format!(
                "token issuer `{}` is not accepted",
                shown(iss)
            )))
        }
    }

    fn check_times(&self, exp: Option<i64>, nbf: Option<i64>, now: i64) -> Result<()> {
        if exp.is_some_and(|exp| now > exp.saturating_add(self.leeway)) {
            return Err(refuse("token has expired"));
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(refuse("token is not valid yet (`nbf`)"));
        }
        Ok(())
    }

    /// Checks the form, header and signature of `token`; returns the decoded payload.
    async fn verified_payload(
        &self,
        token: &str,
        access_token: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse(format!(
                "token is too large (more than {MAX_TOKEN_BYTES} bytes)"
            )));
        }
        let malformed = || refuse("token is not a compact jws (three base64url parts)");
        let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (header, payload) = message.split_once('.').ok_or_else(malformed)?;
        if payload.contains('.') {
            return Err(malformed());
        }

        let mut header_buf = [0_u8; PART_BUF];
        let header_json = decode_part(header, &mut header_buf, "header")?;
        let header: JoseHeader<'_> = serde_json::from_slice(header_json)
            .map_err(|_| refuse("token header is not a json object with a string `alg`"))?;
        let alg = Algorithm::from_jose(&header.alg).ok_or_else(|| {
            let alg = header.alg.as_ref();
            if alg.eq_ignore_ascii_case("none") {
                refuse("unsigned tokens (`alg: none`) are refused")
            } else if alg.starts_with("HS") {
                refuse(format!("symmetric algorithm `{}` is refused", shown(alg)))
            } else {
                refuse(format!("algorithm `{}` is not supported", shown(alg)))
            }
        })?;
        if !self.algorithms.contains(&alg) {
            return Err(refuse(format!("algorithm `{alg}` is not allowed here")));
        }
        if header.crit.is_some() {
            return Err(refuse(
                "token has critical header parameters (`crit`) this verifier does not understand",
            ));
        }
        if access_token {
            match header.typ.as_deref() {
                Some(typ) if is_access_token_typ(typ) => {}
                Some(typ) => {
                    return Err(refuse(format!(
                        "token type `{}` is not an access token (`at+jwt`)",
                        shown(typ)
                    )));
                }
                None => {
                    return Err(refuse(
                        "token has no type (`typ`); access tokens are `at+jwt`",
                    ));
                }
            }
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refuse("token has no key id (`kid`)"))?;
        let key = self
            .keys
            .key(kid, now)
            .await?
            .ok_or_else(|| refuse(format!("token key id `{}` is unknown", shown(kid))))?;
        if key.alg != alg {
            return Err(refuse(format!(
                "token algorithm `{alg}` does not match its key's `{}`",
                key.alg
            )));
        }

        let mut signature_buf = [0_u8; PART_BUF];
        let signature = decode_part(signature, &mut signature_buf, "signature")?;
        if !key.verify(message.as_bytes(), signature) {
            return Err(refuse("token signature is invalid"));
        }
        URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| refuse("token payload is not base64url"))
    }
}
