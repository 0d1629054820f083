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

/// What the cache knows of one `kid`.
struct Lookup {
    key: Option<Arc<VerifyKey>>,
    fresh: bool,
    may_fetch: bool,
    ever_fetched: bool,
}

impl Lookup {
    /// The answer without fetching, if there is one: a fresh key, or whatever is known
    /// while fetching again is not allowed yet.
    fn settled(&self) -> Option<Result<Option<Arc<VerifyKey>>>> {
        if self.key.is_some() && (self.fresh || !self.may_fetch) {
            Some(Ok(self.key.clone()))
        } else if self.may_fetch {
            None
        } else if self.ever_fetched {
            Some(Ok(None))
        } else {
            Some(Err(Error::Unavailable(
                "the issuer's jwks could not be fetched yet".into(),
            )))
        }
    }
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

    /// Looks a key up from the cache.
    fn lookup(&self, kid: &str, now: DateTime<Utc>) -> Lookup {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Lookup {
            key: state.keys.get(kid).cloned(),
            fresh: state.fetched_at.is_some_and(|t| now < t + self.ttl),
            may_fetch: state
                .attempted_at
                .is_none_or(|t| now >= t + self.min_refetch_interval),
            ever_fetched: state.fetched_at.is_some(),
        }
    }

    /// The verification key of `kid`: `Ok(None)` when the source does not publish it;
    /// `Unavailable` when the key set was never fetched successfully.
    async fn key(&self, kid: &str, now: DateTime<Utc>) -> Result<Option<Arc<VerifyKey>>> {
        let first = self.lookup(kid, now);
        if let Some(answer) = first.settled() {
            return answer;
        }
        // A stale key keeps serving while another task fetches; only a missing key waits.
        let _fetching = match (self.fetching.try_lock(), first.key) {
            (Ok(guard), _) => guard,
            (Err(_), Some(stale)) => return Ok(Some(stale)),
            (Err(_), None) => self.fetching.lock().await,
        };
        // Another task may have fetched while this one waited.
        let before = self.lookup(kid, now);
        if let Some(answer) = before.settled() {
            return answer;
        }
        match self.fetch_now(now).await {
            Ok(()) => Ok(self.lookup(kid, now).key),
            Err(err) => {
                tracing::warn!(error = %err, "fetching the jwks failed; known keys keep serving");
                if before.ever_fetched {
                    Ok(before.key)
                } else {
                    Err(err)
                }
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
        let not_a_header = || refuse("token header is not a json object with a string `alg`");
        // serde would read a struct from an array too; a JOSE header is an object.
        if header_json.trim_ascii_start().first() != Some(&b'{') {
            return Err(not_a_header());
        }
        let header: JoseHeader<'_> =
            serde_json::from_slice(header_json).map_err(|_| not_a_header())?;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lc_rs::hmac;
    use chrono::TimeZone;
    use serde_json::{Value, json};

    use super::*;
    use crate::ErrorKind;
    use crate::clock::ManualClock;
    use crate::ids::{ClientId, GrantId};
    use crate::memory::MemoryStore;
    use crate::token::claims::IdTokenClaims;
    use crate::token::manager::{RotationPolicy, TYP_ACCESS_TOKEN, TYP_ID_TOKEN};
    use crate::token::master::MasterKey;

    const ISSUER: &str = "https://id.example.com";

    /// Counts the fetches of the source it wraps.
    struct Counting {
        inner: Arc<KeyManager>,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl JwksSource for Counting {
        async fn fetch(&self) -> Result<Jwks> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.inner.fetch().await
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        manager: Arc<KeyManager>,
        source: Arc<Counting>,
        verifier: Verifier,
    }

    async fn fixture_with(alg: Algorithm, config: VerifierConfig) -> Fixture {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        ));
        let policy = RotationPolicy {
            algorithm: alg,
            ..RotationPolicy::default()
        };
        let manager = Arc::new(
            KeyManager::new(
                Arc::new(MemoryStore::new()),
                MasterKey::generate().unwrap(),
                policy,
                clock.clone(),
            )
            .unwrap(),
        );
        manager.refresh().await.unwrap();
        let source = Arc::new(Counting {
            inner: manager.clone(),
            fetches: AtomicUsize::new(0),
        });
        let keys = CachedJwks::new(source.clone(), clock.clone());
        let verifier = Verifier::new(config, keys).unwrap();
        Fixture {
            clock,
            manager,
            source,
            verifier,
        }
    }

    async fn fixture() -> Fixture {
        fixture_with(Algorithm::Es256, config()).await
    }

    fn config() -> VerifierConfig {
        VerifierConfig::new(ISSUER, ["api", "billing"])
    }

    impl Fixture {
        fn now(&self) -> i64 {
            self.clock.now().timestamp()
        }

        fn claims(&self) -> AccessClaims {
            let now = self.now();
            AccessClaims {
                iss: ISSUER.into(),
                sub: UserId::new().to_string(),
                aud: Audience::Many(vec!["other".into(), "api".into()]),
                exp: now + 600,
                iat: now,
                nbf: None,
                jti: "jti-1".into(),
                scope: "read write  admin".into(),
                client_id: ClientId::new(),
                tenant_id: TenantId::new(),
                roles: vec!["owner".into()],
                gid: Some(GrantId::new()),
            }
        }

        fn kid(&self) -> String {
            self.manager
                .ring()
                .signing_key(self.clock.now())
                .unwrap()
                .kid()
                .to_owned()
        }

        fn token(&self, claims: &AccessClaims) -> String {
            self.manager.sign(TYP_ACCESS_TOKEN, claims).unwrap()
        }

        /// A token with any header and payload, signed by the current key with `alg`.
        fn forge(&self, header: &Value, payload: &Value, alg: jsonwebtoken::Algorithm) -> String {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
            );
            let ring = self.manager.ring();
            let key = ring.signing_key(self.clock.now()).unwrap();
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), key.encoding_key(), alg).unwrap();
            format!("{message}.{signature}")
        }

        fn header(&self) -> Value {
            json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid()})
        }

        fn payload(&self) -> Value {
            serde_json::to_value(self.claims()).unwrap()
        }

        async fn refusal(&self, token: &str) -> String {
            let err = self.verifier.verify(token).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
            err.to_string()
        }
    }

    use crate::token::claims::Audience;

    #[tokio::test]
    async fn tokens_of_every_algorithm_verify_into_a_tenant_context() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
            let mut config = config();
            config.algorithms = vec![alg];
            let f = fixture_with(alg, config).await;
            let claims = f.claims();
            let verified = f.verifier.verify(&f.token(&claims)).await.unwrap();
            assert_eq!(verified.claims, claims);
            let ctx = verified.context;
            assert_eq!(ctx.tenant_id, claims.tenant_id);
            assert_eq!(ctx.client_id, claims.client_id);
            assert_eq!(ctx.subject, Subject::User(claims.sub.parse().unwrap()));
            assert_eq!(
                ctx.scopes.iter().map(String::as_str).collect::<Vec<_>>(),
                ["admin", "read", "write"]
            );
            assert_eq!(ctx.roles, ["owner"]);
            assert!(ctx.has_scope("write"));
        }
    }

    #[tokio::test]
    async fn a_client_acting_for_itself_is_a_client_subject() {
        let f = fixture().await;
        let mut claims = f.claims();
        claims.sub = claims.client_id.to_string();
        claims.roles.clear();
        claims.aud = "billing".into();
        let verified = f.verifier.verify(&f.token(&claims)).await.unwrap();
        assert_eq!(verified.context.subject, Subject::Client(claims.client_id));

        claims.sub = "alice".into();
        let msg = f.refusal(&f.token(&claims)).await;
        assert!(msg.contains("`alice`"), "{msg}");
    }

    #[tokio::test]
    async fn verify_for_tenant_refuses_other_tenants() {
        let f = fixture().await;
        let claims = f.claims();
        let token = f.token(&claims);
        assert!(
            f.verifier
                .verify_for_tenant(&token, claims.tenant_id)
                .await
                .is_ok()
        );
        let other = TenantId::new();
        let err = f
            .verifier
            .verify_for_tenant(&token, other)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
        assert!(err.to_string().contains(&other.to_string()), "{err}");
    }

    #[tokio::test]
    async fn unsigned_and_symmetric_tokens_are_refused() {
        let f = fixture().await;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&f.payload()).unwrap());
        for none in ["none", "None", "NONE"] {
            let header = json!({"alg": none, "typ": "at+jwt", "kid": f.kid()});
            let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
            for token in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}"),
            ] {
                let msg = f.refusal(&token).await;
                assert!(
                    msg.contains("alg: none") || msg.contains("compact"),
                    "{msg}"
                );
            }
        }
        // RS256 -> HS256 key confusion: an HMAC keyed with the public key.
        let jwks = serde_json::to_vec(&f.manager.jwks()).unwrap();
        let public_jwk = serde_json::to_vec(&f.manager.jwks().keys[0]).unwrap();
        for (alg, secret) in [
            ("HS256", &jwks),
            ("HS256", &public_jwk),
            ("HS384", &jwks),
            ("HS512", &jwks),
        ] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": f.kid()});
            let message = format!(
                "{}.{payload}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
            );
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, secret),
                message.as_bytes(),
            );
            let msg = f
                .refusal(&format!(
                    "{message}.{}",
                    URL_SAFE_NO_PAD.encode(tag.as_ref())
                ))
                .await;
            assert!(msg.contains("symmetric") && msg.contains(alg), "{msg}");
        }
    }

    #[tokio::test]
    async fn algorithms_outside_the_allow_list_or_the_key_are_refused() {
        // An RS256 issuer is refused by a verifier with the default allow-list.
        let f = fixture_with(Algorithm::Rs256, config()).await;
        let msg = f.refusal(&f.token(&f.claims())).await;
        assert!(msg.contains("`RS256` is not allowed"), "{msg}");

        // The header names an allowed algorithm the key is not for.
        let mut config = config();
        config.algorithms = vec![Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256];
        let f = fixture_with(Algorithm::Es256, config).await;
        for alg in ["EdDSA", "RS256"] {
            let mut header = f.header();
            header["alg"] = json!(alg);
            let token = f.forge(&header, &f.payload(), jsonwebtoken::Algorithm::ES256);
            let msg = f.refusal(&token).await;
            assert!(msg.contains("does not match its key's `ES256`"), "{msg}");
        }
        for alg in ["ES384", "PS256", "ES256K", ""] {
            let mut header = f.header();
            header["alg"] = json!(alg);
            let token = f.forge(&header, &f.payload(), jsonwebtoken::Algorithm::ES256);
            let msg = f.refusal(&token).await;
            assert!(msg.contains("not supported"), "{msg}");
        }
    }

    #[tokio::test]
    async fn header_problems_are_refused() {
        let f = fixture().await;
        let es = jsonwebtoken::Algorithm::ES256;
        let cases: Vec<(Value, &str)> = vec![
            (json!({"alg": "ES256", "typ": "at+jwt"}), "no key id"),
            (
                json!({"alg": "ES256", "typ": "at+jwt", "kid": "nope"}),
                "`nope` is unknown",
            ),
            (
                json!({"alg": "ES256", "typ": "JWT", "kid": f.kid()}),
                "not an access token",
            ),
            (json!({"alg": "ES256", "kid": f.kid()}), "no type"),
            (
                json!({"alg": "ES256", "typ": "at+jwt", "kid": f.kid(), "crit": ["exp"]}),
                "crit",
            ),
            (json!({"typ": "at+jwt", "kid": f.kid()}), "header is not"),
            (
                json!({"alg": 256, "typ": "at+jwt", "kid": f.kid()}),
                "header is not",
            ),
            (json!(["ES256"]), "header is not"),
        ];
        for (header, expected) in cases {
            let msg = f.refusal(&f.forge(&header, &f.payload(), es)).await;
            assert!(msg.contains(expected), "{msg} should contain {expected}");
        }
        for typ in ["application/at+jwt", "AT+JWT"] {
            let mut header = f.header();
            header["typ"] = json!(typ);
            assert!(
                f.verifier
                    .verify(&f.forge(&header, &f.payload(), es))
                    .await
                    .is_ok(),
                "{typ}"
            );
        }
    }

    #[tokio::test]
    async fn claim_problems_are_refused() {
        let f = fixture().await;
        let now = f.now();
        let mut cases: Vec<(AccessClaims, &str)> = Vec::new();
        let mut c = f.claims();
        c.iss = "https://evil.example.com".into();
        cases.push((c, "issuer `https://evil.example.com`"));
        let mut c = f.claims();
        c.aud = "other".into();
        cases.push((c, "audience"));
        let mut c = f.claims();
        c.aud = Audience::Many(vec![]);
        cases.push((c, "audience"));
        let mut c = f.claims();
        c.exp = now - 61;
        cases.push((c, "expired"));
        let mut c = f.claims();
        c.nbf = Some(now + 61);
        cases.push((c, "not valid yet"));
        let mut c = f.claims();
        c.iat = now + 61;
        cases.push((c, "issued in the future"));
        for (claims, expected) in cases {
            let msg = f.refusal(&f.token(&claims)).await;
            assert!(msg.contains(expected), "{msg} should contain {expected}");
        }
        // Within the leeway.
        let mut c = f.claims();
        c.exp = now - 59;
        c.nbf = Some(now + 59);
        c.iat = now + 59;
        assert!(f.verifier.verify(&f.token(&c)).await.is_ok());

        let mut missing = f.payload();
        missing.as_object_mut().unwrap().remove("tenant_id");
        let msg = f
            .refusal(&f.forge(&f.header(), &missing, jsonwebtoken::Algorithm::ES256))
            .await;
        assert!(
            msg.contains("malformed") && msg.contains("tenant_id"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn the_leeway_is_clamped() {
        let mut config = config();
        config.leeway = Duration::hours(1);
        let f = fixture_with(Algorithm::Es256, config).await;
        let mut c = f.claims();
        c.exp = f.now() - 299;
        assert!(f.verifier.verify(&f.token(&c)).await.is_ok());
        c.exp = f.now() - 301;
        assert!(f.refusal(&f.token(&c)).await.contains("expired"));
    }

    #[tokio::test]
    async fn tampered_and_malformed_tokens_are_refused_without_panicking() {
        let f = fixture().await;
        let token = f.token(&f.claims());
        // Every truncation and every single-character change.
        for len in 0..token.len() {
            f.refusal(&token[..len]).await;
        }
        let bytes = token.as_bytes();
        for i in (0..bytes.len()).step_by(3) {
            for replacement in [b'A', b'.', b'-', b'='] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                let changed = String::from_utf8(changed).unwrap();
                f.refusal(&changed).await;
            }
        }
        let (message, _) = token.rsplit_once('.').unwrap();
        let msg = f
            .refusal(&format!("{message}.{}", URL_SAFE_NO_PAD.encode([0_u8; 64])))
            .await;
        assert!(msg.contains("signature is invalid"), "{msg}");
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(f.refusal(&huge).await.contains("too large"));
        let long_part = format!("{}.{}.{}", "a".repeat(5000), "b", "c");
        assert!(f.refusal(&long_part).await.contains("too long"));
        for junk in [
            "", ".", "..", "...", "a.b", "a.b.c", "a.b.c.d", "é.é.é", "\0.\0.\0", " . . ",
        ] {
            f.refusal(junk).await;
        }
        let header = URL_SAFE_NO_PAD.encode(b"not json");
        f.refusal(&format!("{header}.e30.sig")).await;
        let payload = URL_SAFE_NO_PAD.encode(b"not json");
        let (head, _) = message.split_once('.').unwrap();
        let forged = f.forge(&f.header(), &json!("x"), jsonwebtoken::Algorithm::ES256);
        f.refusal(&forged).await;
        f.refusal(&format!("{head}.{payload}.sig")).await;
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let f = fixture().await;
        let token = f.token(&f.claims());
        f.verifier.verify(&token).await.unwrap();
        f.verifier.verify(&token).await.unwrap();
        assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1, "cached");

        let mut header = f.header();
        for i in 0..50 {
            header["kid"] = json!(format!("junk-{i}"));
            f.refusal(&f.forge(&header, &f.payload(), jsonwebtoken::Algorithm::ES256))
                .await;
        }
        assert_eq!(
            f.source.fetches.load(Ordering::SeqCst),
            1,
            "within the interval: no fetch"
        );
        f.clock.advance(Duration::seconds(31));
        for _ in 0..5 {
            f.refusal(&f.forge(&header, &f.payload(), jsonwebtoken::Algorithm::ES256))
                .await;
        }
        assert_eq!(
            f.source.fetches.load(Ordering::SeqCst),
            2,
            "one fetch per interval"
        );

        // The ttl expires: the next verification fetches again.
        f.clock.advance(Duration::minutes(5));
        f.verifier.verify(&f.token(&f.claims())).await.unwrap();
        assert_eq!(f.source.fetches.load(Ordering::SeqCst), 3);
    }

    /// Serves the manager's key set while `up`, fails otherwise.
    struct Flaky {
        inner: Arc<KeyManager>,
        up: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl JwksSource for Flaky {
        async fn fetch(&self) -> Result<Jwks> {
            if self.up.load(Ordering::SeqCst) {
                self.inner.fetch().await
            } else {
                Err(Error::Unavailable("jwks down".into()))
            }
        }
    }

    #[tokio::test]
    async fn a_failing_source_is_unavailable_until_it_serves_then_its_keys_outlive_failures() {
        let f = fixture().await;
        let source = Arc::new(Flaky {
            inner: f.manager.clone(),
            up: false.into(),
        });
        let keys = CachedJwks::new(source.clone(), f.clock.clone());
        assert_eq!(
            keys.prefetch().await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        let verifier = Verifier::new(config(), keys).unwrap();
        let token = f.token(&f.claims());
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);

        source.up.store(true, Ordering::SeqCst);
        f.clock.advance(Duration::seconds(31));
        verifier.verify(&token).await.unwrap();

        // The source goes down: the known keys keep serving past the ttl.
        source.up.store(false, Ordering::SeqCst);
        f.clock.advance(Duration::minutes(6));
        verifier.verify(&token).await.unwrap();
        verifier.verify(&token).await.unwrap();
        // An unknown kid is refused, not unavailable, once keys are known.
        let mut header = f.header();
        header["kid"] = json!("junk");
        let junk = f.forge(&header, &f.payload(), jsonwebtoken::Algorithm::ES256);
        let err = verifier.verify(&junk).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    }

    /// Holds every fetch after the first until released.
    struct Gated {
        inner: Arc<KeyManager>,
        fetches: AtomicUsize,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl JwksSource for Gated {
        async fn fetch(&self) -> Result<Jwks> {
            if self.fetches.fetch_add(1, Ordering::SeqCst) > 0 {
                self.release.notified().await;
            }
            self.inner.fetch().await
        }
    }

    #[tokio::test]
    async fn stale_keys_serve_while_one_task_fetches() {
        let f = fixture().await;
        let source = Arc::new(Gated {
            inner: f.manager.clone(),
            fetches: AtomicUsize::new(0),
            release: tokio::sync::Notify::new(),
        });
        let keys = CachedJwks::new(source.clone(), f.clock.clone());
        let verifier = Arc::new(Verifier::new(config(), keys).unwrap());
        let token = f.token(&f.claims());
        verifier.verify(&token).await.unwrap();

        f.clock.advance(Duration::minutes(6));
        let fetching = tokio::spawn({
            let (verifier, token) = (verifier.clone(), token.clone());
            async move { verifier.verify(&token).await }
        });
        while source.fetches.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // The refetch hangs; other verifications do not wait for it.
        let quick =
            tokio::time::timeout(std::time::Duration::from_secs(5), verifier.verify(&token));
        quick.await.expect("not blocked by the fetch").unwrap();
        source.release.notify_one();
        fetching.await.unwrap().unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tokens_survive_a_rotation_until_their_key_expires() {
        let f = fixture().await;
        let old_kid = f.kid();
        let next_kid = f
            .manager
            .jwks()
            .keys
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .find(|k| *k != old_kid)
            .unwrap();
        let mut claims = f.claims();
        claims.exp = f.now() + 3600;
        let old_token = f.token(&claims);
        f.verifier.verify(&old_token).await.unwrap();

        f.clock.advance(Duration::minutes(2));
        f.manager.rotate_now().await.unwrap();
        assert_eq!(
            f.kid(),
            next_kid,
            "rotate_now switches to the published next key"
        );
        // The new key was already in the verifier's cache: no fetch needed.
        let new_token = f.token(&f.claims());
        f.verifier.verify(&new_token).await.unwrap();
        assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1);
        // The old token still verifies, after a fresh fetch too.
        f.clock.advance(Duration::minutes(40));
        f.manager.refresh().await.unwrap();
        f.verifier.verify(&old_token).await.unwrap();
        assert_eq!(f.source.fetches.load(Ordering::SeqCst), 2);

        // Its key leaves the JWKS once every token it signed has expired.
        f.clock.advance(Duration::minutes(21));
        f.manager.refresh().await.unwrap();
        // (retired at +2 min, published until +62 min)
        assert!(
            f.manager
                .jwks()
                .keys
                .iter()
                .all(|k| k["kid"] != old_kid.as_str())
        );
        f.clock.advance(Duration::minutes(5));
        let msg = f.refusal(&old_token).await;
        assert!(msg.contains("unknown"), "{msg}");
        f.verifier.verify(&f.token(&f.claims())).await.unwrap();
    }

    #[tokio::test]
    async fn verify_claims_reads_id_token_hints_expired_or_not() {
        let f = fixture().await;
        let now = f.now();
        let id = IdTokenClaims {
            iss: ISSUER.into(),
            sub: UserId::new().to_string(),
            aud: "some-client".into(),
            exp: now + 300,
            iat: now,
            auth_time: now,
            nonce: Some("n".into()),
            at_hash: None,
            azp: None,
            sid: Some("s".into()),
            email: None,
            email_verified: None,
            name: None,
            tenant_id: None,
        };
        let token = f.manager.sign(TYP_ID_TOKEN, &id).unwrap();
        let read: IdTokenClaims = f.verifier.verify_claims(&token, true).await.unwrap();
        assert_eq!(read, id);
        // Not an access token.
        f.refusal(&token).await;

        f.clock.advance(Duration::hours(1));
        let err = f
            .verifier
            .verify_claims::<IdTokenClaims>(&token, true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let read: IdTokenClaims = f.verifier.verify_claims(&token, false).await.unwrap();
        assert_eq!(read.sid.as_deref(), Some("s"));

        let mut other = id.clone();
        other.iss = "https://other.example.com".into();
        let token = f.manager.sign(TYP_ID_TOKEN, &other).unwrap();
        let err = f
            .verifier
            .verify_claims::<IdTokenClaims>(&token, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    }

    #[test]
    fn configs_are_checked_and_leeway_clamped() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Utc::now()));
        let keys = || CachedJwks::new(Arc::new(StaticJwks::default()), clock.clone());
        let mut c = config();
        c.issuer.clear();
        assert_eq!(
            Verifier::new(c, keys()).unwrap_err().field(),
            Some("issuer")
        );
        let c = VerifierConfig::new(ISSUER, Vec::<String>::new());
        assert_eq!(
            Verifier::new(c, keys()).unwrap_err().field(),
            Some("audiences")
        );
        let mut c = config();
        c.algorithms.clear();
        assert_eq!(
            Verifier::new(c, keys()).unwrap_err().field(),
            Some("algorithms")
        );
        let mut c = config();
        c.leeway = Duration::seconds(-5);
        assert_eq!(Verifier::new(c, keys()).unwrap().leeway, 0);
        assert_eq!(config().algorithms, [Algorithm::Es256, Algorithm::EdDsa]);
        assert_eq!(config().leeway, Duration::seconds(60));
    }

    #[test]
    fn access_token_types() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(is_access_token_typ(typ), "{typ}");
        }
        for typ in [
            "JWT",
            "application/jwt",
            "application/",
            "",
            "xat+jwt",
            "applicationxat+jwt",
            "é",
        ] {
            assert!(!is_access_token_typ(typ), "{typ}");
        }
    }
}
