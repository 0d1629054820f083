//! Caches: compiled policy sets per tenant (bounded, least recently used evicted) and
//! the optional decision cache.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tenancy_core::{Result, TenantId};

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
        let half = |seed: u64| {
            let mut h = DefaultHasher::new();
            seed.hash(&mut h);
            request.principal.hash(&mut h);
            request.action.hash(&mut h);
            request.resource.hash(&mut h);
            json_fingerprint(&request.context, seed).hash(&mut h);
            json_fingerprint(&request.entities, seed).hash(&mut h);
            h.finish()
        };
        Self {
            tenant,
            policy_version,
            fingerprint: (u128::from(half(0x0123_4567)) << 64) | u128::from(half(0x89ab_cdef)),
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

/// A fingerprint of a JSON value in which the order of object keys does not count
/// (objects combine their entries' fingerprints with a commutative sum).
fn json_fingerprint(value: &serde_json::Value, seed: u64) -> u64 {
    use serde_json::Value;
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    match value {
        Value::Null => 0_u8.hash(&mut h),
        Value::Bool(b) => (1_u8, b).hash(&mut h),
        Value::Number(n) => (2_u8, n.to_string()).hash(&mut h),
        Value::String(s) => (3_u8, s).hash(&mut h),
        Value::Array(items) => {
            (4_u8, items.len()).hash(&mut h);
            for item in items {
                json_fingerprint(item, seed).hash(&mut h);
            }
        }
        Value::Object(map) => {
            let entries = map.iter().fold(0_u64, |acc, (k, v)| {
                let mut e = DefaultHasher::new();
                (seed, k, json_fingerprint(v, seed)).hash(&mut e);
                acc.wrapping_add(e.finish())
            });
            (5_u8, map.len(), entries).hash(&mut h);
        }
    }
    h.finish()
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
