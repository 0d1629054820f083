//! The provider's store traits. Each backend (memory, SQLite, PostgreSQL; Redis for
//! sessions and rate limits) implements them and passes the conformance suite.
//!
//! Contract shared by every method (as for the identity stores):
//! - Records are written as given; validation, hashing and timestamps are the caller's.
//! - A tenant-scoped method takes the [`TenantId`] first and never sees rows of another
//!   tenant: a code, grant or refresh token of tenant B is `Unknown`/`NotFound` through A.
//! - Single-use operations ([`OAuthStore::redeem_code`], [`OAuthStore::rotate_refresh_token`],
//!   [`OAuthStore::record_assertion`]) are atomic: of any number of concurrent calls on
//!   the same record, exactly one observes it unused.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::model::{
    AuthorizationCode, Client, CodeRedemption, Consent, Grant, LoginSession, RefreshRotation,
    RefreshToken,
};
use crate::error::Result;
use crate::identity::TokenHash;
use crate::ids::{ClientId, GrantId, TenantId, UserId};
use crate::page::{Page, PageRequest};

/// Which clients a listing or write is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientScope {
    /// Global clients (no owning tenant).
    Global,
    /// Clients owned by one tenant.
    Tenant(TenantId),
}

impl ClientScope {
    /// The owning tenant, if any.
    #[must_use]
    pub const fn tenant(self) -> Option<TenantId> {
        match self {
            Self::Global => None,
            Self::Tenant(t) => Some(t),
        }
    }
}

/// Clients, codes, grants, refresh tokens, consents and revocations.
#[async_trait]
pub trait OAuthStore: Send + Sync {
    /// Registers a client; `AlreadyExists` if its id is taken.
    async fn insert_client(&self, client: &Client) -> Result<()>;
    /// The client with this id, global or of any tenant; `NotFound` if none. Client ids
    /// are global handles (they arrive before any tenant is known); a backend with
    /// row-level security resolves the owner first and then reads within that scope.
    async fn client(&self, id: ClientId) -> Result<Client>;
    /// Replaces a client if its version is current (returns it with `version + 1`);
    /// `InvalidInput` when the record names another owner than `scope`, `NotFound` when
    /// it is not in `scope`, `Conflict` when stale.
    async fn update_client(&self, scope: ClientScope, client: &Client) -> Result<Client>;
    /// Deletes a client of `scope` with its codes, grants, tokens and consents;
    /// `NotFound` when it is not in `scope`.
    async fn delete_client(&self, scope: ClientScope, id: ClientId) -> Result<()>;
    /// A page of the clients of `scope`, by ascending id.
    async fn list_clients(&self, scope: ClientScope, page: &PageRequest) -> Result<Page<Client>>;

    /// Stores a new authorization code; `InvalidInput` if it names another tenant,
    /// `NotFound` if its client does not exist, `AlreadyExists` if its hash is taken in
    /// this tenant.
    async fn insert_code(&self, tenant: TenantId, code: &AuthorizationCode) -> Result<()>;
    /// Marks the code with this hash redeemed and returns it, atomically: the first call
    /// gets `Redeemed`, every later one `AlreadyRedeemed`. Expiry is the caller's check.
    async fn redeem_code(&self, tenant: TenantId, code_hash: &TokenHash) -> Result<CodeRedemption>;

    /// Stores a new grant; `InvalidInput` if it names another tenant, `NotFound` if its
    /// client does not exist, `AlreadyExists` if its id is taken in this tenant.
    async fn insert_grant(&self, tenant: TenantId, grant: &Grant) -> Result<()>;
    /// The grant; `NotFound` if none in this tenant.
    async fn grant(&self, tenant: TenantId, id: GrantId) -> Result<Grant>;
    /// Marks the grant revoked at `at` (idempotent: an earlier revocation time is kept)
    /// and makes every refresh token of it unusable; `NotFound` if none in this tenant.
    async fn revoke_grant(&self, tenant: TenantId, id: GrantId, at: DateTime<Utc>) -> Result<()>;

    /// Stores a new refresh token; `InvalidInput` if it names another tenant, `NotFound`
    /// if its client, or its grant in this tenant, does not exist, `AlreadyExists` if its
    /// hash is taken in this tenant.
    async fn insert_refresh_token(&self, tenant: TenantId, token: &RefreshToken) -> Result<()>;
    /// The refresh token with this hash, used or not; `NotFound` if none in this tenant.
    async fn refresh_token(&self, tenant: TenantId, token_hash: &TokenHash)
    -> Result<RefreshToken>;
    /// Spends the refresh token `old` and stores `new` in one transaction. `Rotated`
    /// (with the old record, now spent at `at`) when `old` was unused; `Replayed` when it
    /// had been used, storing nothing; `Unknown` when there is no such token in this
    /// tenant. `InvalidInput` if `new` names another tenant or another grant than `old`;
    /// a failed insert of `new` (as in [`OAuthStore::insert_refresh_token`]) spends
    /// nothing.
    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &TokenHash,
        new: &RefreshToken,
        at: DateTime<Utc>,
    ) -> Result<RefreshRotation>;

    /// The user's remembered consent to the client in this tenant, if any.
    async fn consent(
        &self,
        tenant: TenantId,
        user: UserId,
        client: ClientId,
    ) -> Result<Option<Consent>>;
    /// Remembers consent, replacing the scope set of an earlier one; `InvalidInput` if it
    /// names another tenant, `NotFound` if its client does not exist.
    async fn put_consent(&self, tenant: TenantId, consent: &Consent) -> Result<()>;
    /// Forgets the user's consent to the client (no error if there was none).
    async fn delete_consent(&self, tenant: TenantId, user: UserId, client: ClientId) -> Result<()>;

    /// Records a revoked access token (`jti`) until it would have expired anyway
    /// (idempotent: the later expiry is kept).
    async fn revoke_access_token(
        &self,
        tenant: TenantId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Whether the access token `jti` was revoked.
    async fn is_access_token_revoked(&self, tenant: TenantId, jti: &str) -> Result<bool>;

    /// Records the `jti` of a client assertion (`private_key_jwt`) until `expires_at`;
    /// `true` on first use, `false` on a replay. Atomic.
    async fn record_assertion(
        &self,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Deletes codes, refresh tokens, revocations and assertion records that expired
    /// before `now` (and, in a backend that also keeps the login sessions, expired
    /// sessions), in every tenant; returns how many rows went.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// Login sessions at the provider. Not tenant data: a session belongs to a user before
/// any tenant is chosen.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session; `AlreadyExists` if its id hash is taken.
    async fn insert_session(&self, session: &LoginSession) -> Result<()>;
    /// The session with this id hash, if it exists and has not expired at `now`.
    async fn session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<LoginSession>>;
    /// Ends a session (no error if there was none).
    async fn delete_session(&self, id_hash: &TokenHash) -> Result<()>;
    /// Ends every session of a user; returns how many ended.
    async fn delete_user_sessions(&self, user: UserId) -> Result<u64>;
}

/// A rate: `burst` requests at once, refilling one every `period / burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed in a burst.
    pub burst: u32,
    /// The time in which a full burst refills.
    pub period: std::time::Duration,
}

/// The answer of a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Refused; try again after this long.
    Limited {
        /// How long until one request is allowed again.
        retry_after: std::time::Duration,
    },
}

/// A GCRA rate limiter keyed by string (e.g. `login:acct:<email>`, `login:ip:<addr>`).
/// `check` counts the request when it is allowed; atomic per key across every process
/// sharing the backend.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request against `key` under `quota` at `now`.
    async fn check(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision>;
    /// What [`RateLimiter::check`] would answer at `now`, without counting anything:
    /// used to refuse early while only failures are counted.
    async fn peek(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision>;
    /// Forgets `key` (e.g. after a successful login).
    async fn reset(&self, key: &str) -> Result<()>;
}

/// Every provider store at once, as one backend implements them.
pub trait ProviderStore: OAuthStore + SessionStore + crate::token::KeyStore {}
impl<T: OAuthStore + SessionStore + crate::token::KeyStore> ProviderStore for T {}
