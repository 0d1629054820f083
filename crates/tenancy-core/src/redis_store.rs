//! Login sessions and rate limits in Redis (feature `redis`), shared by every process
//! of a deployment.
//!
//! Keys start with a configurable prefix (`<prefix>:session:<hash>`,
//! `<prefix>:user-sessions:<user>`, `<prefix>:rate:<key>`), so deployments and tests
//! can share one server. Sessions expire with Redis (`PXAT` = their expiry); the
//! rate limiter's GCRA step runs as one Lua script, atomic across processes.

use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::TokenHash;
use crate::ids::UserId;
use crate::oauth::gcra::Gcra;
use crate::oauth::{LoginSession, Quota, RateDecision, RateLimiter, SessionStore};

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

async fn connect(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url)
        .map_err(|e| Error::invalid("redis_url", format!("`{url}` is not a Redis URL: {e}")))?;
    ConnectionManager::new(client).await.map_err(unavailable)
}

fn hex(hash: &TokenHash) -> String {
    hash.as_bytes()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Stores a session unless its key exists, and adds it to its user's set, whose
/// expiry is raised to the latest session's. Returns 0 when the key existed.
const INSERT_SESSION: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then
    return 0
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[2], 'NX')
redis.call('PEXPIREAT', KEYS[2], ARGV[2], 'GT')
return 1
";

/// A session as stored (its id hash is in the key).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    user_id: UserId,
    auth_time: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// [`SessionStore`] in Redis: each session a JSON value under its own key, expiring
/// with the session; each user's session ids in a set, for
/// [`SessionStore::delete_user_sessions`].
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: ConnectionManager,
    prefix: String,
    insert: redis::Script,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self::from_connection(connect(url).await?, prefix))
    }

    /// Uses an existing connection; keys start with `prefix`.
    #[must_use]
    pub fn from_connection(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            insert: redis::Script::new(INSERT_SESSION),
        }
    }

    fn session_key(&self, member: &str) -> String {
        format!("{}:session:{member}", self.prefix)
    }

    fn user_key(&self, user: UserId) -> String {
        format!("{}:user-sessions:{user}", self.prefix)
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    /// A session that the system clock says has expired already is not stored.
    async fn insert_session(&self, session: &LoginSession) -> Result<()> {
        let expires_ms = session.expires_at.timestamp_millis();
        if expires_ms <= Utc::now().timestamp_millis() {
            return Ok(());
        }
        let value = serde_json::to_string(&StoredSession {
            user_id: session.user_id,
            auth_time: session.auth_time,
            expires_at: session.expires_at,
        })
        .map_err(|e| Error::Internal(format!("cannot encode session: {e}")))?;
        let member = hex(&session.id_hash);
        let mut c = self.connection.clone();
        let stored: i64 = self
            .insert
            .key(self.session_key(&member))
            .key(self.user_key(session.user_id))
            .arg(value)
            .arg(expires_ms)
            .arg(&member)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if stored == 0 {
            return Err(Error::AlreadyExists("session already exists".into()));
        }
        Ok(())
    }

    async fn session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<LoginSession>> {
        let mut c = self.connection.clone();
        let raw: Option<String> = c
            .get(self.session_key(&hex(id_hash)))
            .await
            .map_err(unavailable)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let s: StoredSession = serde_json::from_str(&raw)
            .map_err(|e| Error::Internal(format!("stored session is invalid: {e}")))?;
        Ok((s.expires_at > now).then_some(LoginSession {
            id_hash: *id_hash,
            user_id: s.user_id,
            auth_time: s.auth_time,
            expires_at: s.expires_at,
        }))
    }

    /// Deletes the session's key; its id leaves the user's set when that set is next
    /// emptied or expires.
    async fn delete_session(&self, id_hash: &TokenHash) -> Result<()> {
        let mut c = self.connection.clone();
        let _: i64 = c
            .del(self.session_key(&hex(id_hash)))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
        let mut c = self.connection.clone();
        let user_key = self.user_key(user);
        let members: Vec<String> = c.smembers(&user_key).await.map_err(unavailable)?;
        if members.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = members.iter().map(|m| self.session_key(m)).collect();
        // Sessions added after the read above stay in the set (and alive).
        let (deleted, _): (u64, i64) = redis::pipe()
            .atomic()
            .del(&keys)
            .srem(&user_key, &members)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(deleted)
    }
}

/// One GCRA step on `KEYS[1]` (the key's theoretical arrival time, in microseconds).
/// `ARGV`: now, emission interval, burst tolerance (microseconds). Returns -1 when the
/// request is allowed (and counted), else the microseconds to wait.
const GCRA_STEP: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then
    tat = now
end
if tat - now > tolerance then
    return tat - now - tolerance
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return -1
";

/// A GCRA [`RateLimiter`] in Redis: one theoretical arrival time per key, expiring
/// when it has passed; each check is one Lua script, atomic across processes.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    prefix: String,
    step: redis::Script,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self::from_connection(connect(url).await?, prefix))
    }

    /// Uses an existing connection; keys start with `prefix`.
    #[must_use]
    pub fn from_connection(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            step: redis::Script::new(GCRA_STEP),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:rate:{key}", self.prefix)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision> {
        let gcra = Gcra::new(quota)?;
        let mut c = self.connection.clone();
        let wait: i64 = self
            .step
            .key(self.key(key))
            .arg(now.timestamp_micros())
            .arg(gcra.interval)
            .arg(gcra.tolerance)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(match u64::try_from(wait) {
            Ok(micros) => RateDecision::Limited {
                retry_after: std::time::Duration::from_micros(micros),
            },
            Err(_) => RateDecision::Allowed,
        })
    }

    async fn peek(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision> {
        let gcra = Gcra::new(quota)?;
        let mut c = self.connection.clone();
        let tat: Option<String> = c.get(self.key(key)).await.map_err(unavailable)?;
        let tat = tat.and_then(|t| t.parse::<i64>().ok());
        Ok(gcra.check(tat, now.timestamp_micros()).0)
    }

    async fn reset(&self, key: &str) -> Result<()> {
        let mut c = self.connection.clone();
        let _: i64 = c.del(self.key(key)).await.map_err(unavailable)?;
        Ok(())
    }
}
