//! A decision cache in Redis (feature `redis`): shared by every process of a
//! deployment, entries expire after a time to live (Redis `PX`).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use tenancy_core::{Error, Result};

use crate::cache::{DecisionCache, DecisionKey};
use crate::engine::Decision;

/// Decisions in Redis under `<prefix>:decision:<tenant>:<policy version>:<fingerprint>`.
#[derive(Clone)]
pub struct RedisDecisionCache {
    connection: ConnectionManager,
    ttl_ms: u64,
    prefix: String,
}

impl std::fmt::Debug for RedisDecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDecisionCache")
            .field("ttl_ms", &self.ttl_ms)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

impl RedisDecisionCache {
    /// Connects to `url` (`redis://host:port/db`); entries live for `ttl` (at least
    /// 1 ms) under keys starting with `prefix`.
    pub async fn connect(url: &str, ttl: Duration, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::invalid("redis_url", format!("`{url}` is not a Redis URL: {e}")))?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self {
            connection,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, key: &DecisionKey) -> String {
        format!("{}:decision:{}", self.prefix, key.to_text())
    }
}

#[async_trait]
impl DecisionCache for RedisDecisionCache {
    async fn get(&self, key: &DecisionKey) -> Result<Option<Decision>> {
        let mut c = self.connection.clone();
        let raw: Option<Vec<u8>> = c.get(self.key(key)).await.map_err(unavailable)?;
        // An entry that does not decode is treated as a miss (and will be overwritten).
        Ok(raw.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    async fn put(&self, key: &DecisionKey, decision: &Decision) -> Result<()> {
        let bytes = serde_json::to_vec(decision)
            .map_err(|e| Error::Internal(format!("cannot encode decision: {e}")))?;
        let mut c = self.connection.clone();
        let _: () = c
            .pset_ex(self.key(key), bytes, self.ttl_ms)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
