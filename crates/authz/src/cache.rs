//! Caches: compiled policy sets per tenant (bounded, least recently used evicted) and
//! the optional decision cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tenancy_core::{Result, TenantId};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use crate::compile::CompiledPolicies;
use crate::engine::{CheckRequest, Decision};

/// Compiled policy sets of the most recently used tenants.
#[derive(Debug)]
pub(crate) struct CompiledCache {
    capacity: usize,
    slots: RwLock<HashMap<TenantId, Slot>>,
    clock: AtomicU64,
    epoch: Instant,
}

#[derive(Debug)]
struct Slot {
    compiled: Arc<CompiledPolicies>,
    /// When the store last confirmed this version, in nanoseconds since `epoch`.
    confirmed_at: AtomicU64,
    last_used: AtomicU64,
}

/// What a lookup found.
pub(crate) enum Cached {
    /// Compiled and confirmed recently enough.
    Fresh(Arc<CompiledPolicies>),
    /// Compiled, but the store should be asked whether the version is still current.
    Stale(Arc<CompiledPolicies>),
    /// Not cached.
    Missing,
}

impl CompiledCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: RwLock::new(HashMap::new()),
            clock: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn get(&self, tenant: TenantId, max_age: Duration) -> Cached {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = slots.get(&tenant) else {
            return Cached::Missing;
        };
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let age = self
            .now()
            .saturating_sub(slot.confirmed_at.load(Ordering::Relaxed));
        let max = u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX);
        if age <= max {
            Cached::Fresh(slot.compiled.clone())
        } else {
            Cached::Stale(slot.compiled.clone())
        }
    }

    /// Records that the store still has `version` for `tenant`.
    pub(crate) fn confirm(&self, tenant: TenantId, version: i64) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(&tenant)
            && slot.compiled.version == version
        {
            slot.confirmed_at.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Caches `compiled` for `tenant` unless a newer version is cached already,
    /// evicting the least recently used tenant when full.
    pub(crate) fn insert(
        &self,
        tenant: TenantId,
        compiled: Arc<CompiledPolicies>,
    ) -> Arc<CompiledPolicies> {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = slots.get(&tenant)
            && existing.compiled.version > compiled.version
        {
            return existing.compiled.clone();
        }
        if slots.len() >= self.capacity && !slots.contains_key(&tenant) {
            let victim = slots
                .iter()
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(t, _)| *t);
            if let Some(victim) = victim {
                slots.remove(&victim);
            }
        }
        let now = self.now();
        slots.insert(
            tenant,
            Slot {
                compiled: compiled.clone(),
                confirmed_at: AtomicU64::new(now),
                last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            },
        );
        compiled
    }

    pub(crate) fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Identifies a decision: the tenant, the policy version it was made under, and a
/// 128-bit fingerprint of the whole request (principal, action, resource, context,
/// entities). A new policy version changes the key, so a policy change is never
/// answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's policy version.
    pub policy_version: i64,
    /// Fingerprint of the request.
    pub fingerprint: u128,
}

impl DecisionKey {
    /// The key of `request` under `policy_version` of `tenant`.
    #[must_use]
    pub fn new(tenant: TenantId, policy_version: i64, request: &CheckRequest) -> Self {
        let parts = [
            xxh3_128(request.principal.as_bytes()),
            xxh3_128(request.action.as_bytes()),
            xxh3_128(request.resource.as_bytes()),
            json_fingerprint(&request.context),
            json_fingerprint(&request.entities),
        ];
        let mut bytes = [0_u8; 80];
        for (chunk, part) in bytes.chunks_exact_mut(16).zip(parts) {
            chunk.copy_from_slice(&part.to_le_bytes());
        }
        Self {
            tenant,
            policy_version,
            fingerprint: xxh3_128(&bytes),
        }
    }

    /// The key as text (for caches outside the process).
    #[must_use]
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}:{:032x}",
            self.tenant, self.policy_version, self.fingerprint
        )
    }
}

/// Combines two fingerprints in order.
fn mix(a: u128, b: u128) -> u128 {
    let mut bytes = [0_u8; 32];
    let (left, right) = bytes.split_at_mut(16);
    left.copy_from_slice(&a.to_le_bytes());
    right.copy_from_slice(&b.to_le_bytes());
    xxh3_128(&bytes)
}

/// A 128-bit fingerprint (xxh3) of a JSON value in which the order of object keys does
/// not count: an object sums its entries' fingerprints. Leaves are hashed with a
/// different seed per kind, so `1`, `"1"` and `true` differ.
fn json_fingerprint(value: &serde_json::Value) -> u128 {
    use serde_json::Value;
    match value {
        Value::Null => xxh3_128_with_seed(b"null", 1),
        Value::Bool(b) => xxh3_128_with_seed(if *b { b"true" } else { b"false" }, 2),
        Value::Number(n) => {
            let bits = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i.to_le_bytes(),
                (None, Some(u)) => u.to_le_bytes(),
                (None, None) => n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes(),
            };
            xxh3_128_with_seed(&bits, 3)
        }
        Value::String(s) => xxh3_128_with_seed(s.as_bytes(), 4),
        Value::Array(items) => items.iter().fold(
            xxh3_128_with_seed(&items.len().to_le_bytes(), 5),
            |acc, item| mix(acc, json_fingerprint(item)),
        ),
        Value::Object(map) => {
            let entries = map.iter().fold(0_u128, |acc, (k, v)| {
                acc.wrapping_add(mix(xxh3_128(k.as_bytes()), json_fingerprint(v)))
            });
            mix(xxh3_128_with_seed(&map.len().to_le_bytes(), 6), entries)
        }
    }
}

/// A cache of decisions. Entries may be dropped at any time; a hit must be a decision
/// made for the same key.
#[async_trait]
pub trait DecisionCache: Send + Sync {
    /// The cached decision for `key`, if any.
    async fn get(&self, key: &DecisionKey) -> Result<Option<Decision>>;
    /// Caches `decision` for `key`.
    async fn put(&self, key: &DecisionKey, decision: &Decision) -> Result<()>;
}

/// An in-process decision cache: bounded, with a time to live. The time to live bounds
/// how long a change of entity data outside the request (a user's roles in the
/// identity store) takes to show; policy changes show at once (they change the key).
#[derive(Debug)]
pub struct MemoryDecisionCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<DecisionKey, (Decision, Instant)>>,
}

impl MemoryDecisionCache {
    /// A cache of at most `capacity` decisions, each kept for `ttl`.
    #[must_use]
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl DecisionCache for MemoryDecisionCache {
    async fn get(&self, key: &DecisionKey) -> Result<Option<Decision>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(d, _)| d.clone()))
    }

    async fn put(&self, key: &DecisionKey, decision: &Decision) -> Result<()> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(*key, (decision.clone(), Instant::now()));
        Ok(())
    }
}
