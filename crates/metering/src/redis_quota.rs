//! Quota counters in Redis (feature `redis`), shared by every process of a
//! deployment: one integer per (tenant, meter, period) under
//! `<prefix>:quota:<tenant>:<meter>:<period start>`, expiring one period and a day
//! after its first use (so never before its period ends),
//! and one Lua script per check, atomic across processes.

use async_trait::async_trait;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use tenancy_core::{Error, Result, TenantId};

use crate::model::MeterKey;
use crate::store::{Consumed, QuotaCounter};

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

/// Adds `ARGV[1]` to `KEYS[1]` unless the sum would pass `ARGV[2]`; a new key expires
/// `ARGV[3]` milliseconds later (by the server's clock). Returns `{1, used}` when added, `{0, used}`
/// otherwise. Counters stay below 2^53, so Lua's numbers are exact.
const CONSUME: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then
    return {0, used}
end
used = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
";

/// [`QuotaCounter`] in Redis.
#[derive(Clone)]
pub struct RedisQuotaCounter {
    connection: ConnectionManager,
    prefix: String,
    consume: redis::Script,
}

impl std::fmt::Debug for RedisQuotaCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotaCounter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisQuotaCounter {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::invalid("redis_url", format!("`{url}` is not a Redis URL: {e}")))?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self::from_connection(connection, prefix))
    }

    /// Uses an existing connection; keys start with `prefix`.
    #[must_use]
    pub fn from_connection(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            consume: redis::Script::new(CONSUME),
        }
    }

    fn key(&self, tenant: TenantId, meter: &MeterKey, period_start: i64) -> String {
        format!("{}:quota:{tenant}:{meter}:{period_start}", self.prefix)
    }
}

#[async_trait]
impl QuotaCounter for RedisQuotaCounter {
    async fn consume(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        period_start: i64,
        period_end: i64,
        amount: i64,
        ceiling: i64,
    ) -> Result<Consumed> {
        let ttl_ms = period_end
            .saturating_sub(period_start)
            .saturating_add(86_400)
            .saturating_mul(1_000);
        let mut c = self.connection.clone();
        let (consumed, used): (i64, i64) = self
            .consume
            .key(self.key(tenant, meter, period_start))
            .arg(amount)
            .arg(ceiling)
            .arg(ttl_ms)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(Consumed {
            consumed: consumed == 1,
            used,
        })
    }

    async fn used(&self, tenant: TenantId, meter: &MeterKey, period_start: i64) -> Result<i64> {
        let mut c = self.connection.clone();
        let used: Option<i64> = c
            .get(self.key(tenant, meter, period_start))
            .await
            .map_err(unavailable)?;
        Ok(used.unwrap_or(0))
    }
}
