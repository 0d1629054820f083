//! The in-memory metering store and quota counter: conformant, for tests, demos and
//! embedding. One lock makes every ingest atomic. Raw events are not kept, only
//! their ids (for deduplication).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tenancy_core::{Error, Result, TenantId};
use uuid::Uuid;

use crate::model::{Meter, MeterKey, Quota, Window};
use crate::rollup::{CellKey, IngestBatch, RollupRow, UniqueValue, unique_allowance};
use crate::store::{Consumed, MeteringStore, QuotaCounter};

type RowKey = (TenantId, MeterKey, Window, i64, String);

#[derive(Debug, Default)]
struct Inner {
    meters: BTreeMap<(TenantId, MeterKey), Meter>,
    events: HashSet<(TenantId, Uuid)>,
    rollups: BTreeMap<RowKey, RollupRow>,
    uniques: BTreeMap<RowKey, BTreeSet<String>>,
    quotas: HashMap<(TenantId, MeterKey), Quota>,
    counters: HashMap<(TenantId, MeterKey, i64), i64>,
}

/// Every tenant's meters, event ids, rollups, quotas and quota counters, in memory.
#[derive(Debug, Default)]
pub struct MemoryMeteringStore {
    inner: Mutex<Inner>,
}

impl MemoryMeteringStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn row_key(tenant: TenantId, cell: &CellKey) -> RowKey {
    (
        tenant,
        cell.meter.clone(),
        cell.window,
        cell.window_start,
        cell.group_key.clone(),
    )
}

fn range_of(
    tenant: TenantId,
    meter: &MeterKey,
    window: Window,
    from: i64,
    to: i64,
) -> (RowKey, RowKey) {
    (
        (tenant, meter.clone(), window, from, String::new()),
        (tenant, meter.clone(), window, to, String::new()),
    )
}

#[async_trait]
impl MeteringStore for MemoryMeteringStore {
    async fn insert_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()> {
        tenant.check_scope(meter.tenant_id)?;
        let mut inner = self.lock();
        let key = (tenant, meter.key.clone());
        if inner.meters.contains_key(&key) {
            return Err(Error::AlreadyExists(format!(
                "meter `{}` already exists",
                meter.key
            )));
        }
        inner.meters.insert(key, meter.clone());
        Ok(())
    }

    async fn meter(&self, tenant: TenantId, key: &MeterKey) -> Result<Meter> {
        self.lock()
            .meters
            .get(&(tenant, key.clone()))
            .cloned()
            .ok_or_else(|| Error::not_found("meter", key))
    }

    async fn list_meters(&self, tenant: TenantId) -> Result<Vec<Meter>> {
        Ok(self
            .lock()
            .meters
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn update_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()> {
        tenant.check_scope(meter.tenant_id)?;
        let mut inner = self.lock();
        let stored = inner
            .meters
            .get_mut(&(tenant, meter.key.clone()))
            .ok_or_else(|| Error::not_found("meter", &meter.key))?;
        if stored.version + 1 != meter.version {
            return Err(Error::stale("meter", &meter.key, meter.version - 1));
        }
        *stored = meter.clone();
        Ok(())
    }

    async fn delete_meter(&self, tenant: TenantId, key: &MeterKey, version: i64) -> Result<()> {
        let mut inner = self.lock();
        let stored = inner
            .meters
            .get(&(tenant, key.clone()))
            .ok_or_else(|| Error::not_found("meter", key))?;
        if stored.version != version {
            return Err(Error::stale("meter", key, version));
        }
        inner.meters.remove(&(tenant, key.clone()));
        inner.quotas.remove(&(tenant, key.clone()));
        inner
            .rollups
            .retain(|(t, m, ..), _| !(*t == tenant && m == key));
        inner
            .uniques
            .retain(|(t, m, ..), _| !(*t == tenant && m == key));
        Ok(())
    }

    async fn ingest(&self, tenant: TenantId, batch: &IngestBatch<'_>) -> Result<Vec<bool>> {
        for prepared in &batch.events {
            tenant.check_scope(prepared.event.tenant_id)?;
        }
        let mut inner = self.lock();
        let inserted: Vec<bool> = batch
            .events
            .iter()
            .map(|p| !inner.events.contains(&(tenant, p.event.id)))
            .collect();
        let mut deltas = batch.deltas(&inserted)?;
        // Compute every new row before changing anything, so a failure changes nothing.
        let mut rows = Vec::with_capacity(deltas.len());
        let mut sets = Vec::new();
        for (cell, delta) in &mut deltas {
            let key = row_key(tenant, cell);
            if !delta.unique_values.is_empty() {
                let current = inner.uniques.get(&key);
                let fresh: Vec<String> = delta
                    .unique_values
                    .iter()
                    .filter(|v| !current.is_some_and(|s| s.contains(*v)))
                    .cloned()
                    .collect();
                let held = current.map_or(0, BTreeSet::len);
                let (keep, saturated) = unique_allowance(
                    batch.unique_bound,
                    i64::try_from(held).unwrap_or(i64::MAX),
                    fresh.len(),
                );
                delta.value = rust_decimal::Decimal::from(keep);
                delta.saturated = saturated;
                sets.push((
                    key.clone(),
                    fresh.into_iter().take(keep).collect::<Vec<_>>(),
                ));
            }
            let row = match inner.rollups.get(&key) {
                Some(existing) => {
                    let mut row = existing.clone();
                    row.apply(cell, delta)?;
                    row
                }
                None => RollupRow::from_delta(cell, delta),
            };
            rows.push((key, row));
        }
        for (prepared, &new) in batch.events.iter().zip(&inserted) {
            if new {
                inner.events.insert((tenant, prepared.event.id));
            }
        }
        for (key, values) in sets {
            inner.uniques.entry(key).or_default().extend(values);
        }
        inner.rollups.extend(rows);
        Ok(inserted)
    }

    async fn rollups(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupRow>> {
        let (lo, hi) = range_of(tenant, meter, window, from, to);
        Ok(self
            .lock()
            .rollups
            .range(lo..hi)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn unique_values(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<UniqueValue>> {
        let (lo, hi) = range_of(tenant, meter, window, from, to);
        Ok(self
            .lock()
            .uniques
            .range(lo..hi)
            .flat_map(|((_, _, _, start, group), values)| {
                values.iter().map(|v| UniqueValue {
                    window_start: *start,
                    group_key: group.clone(),
                    value: v.clone(),
                })
            })
            .collect())
    }

    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()> {
        tenant.check_scope(quota.tenant_id)?;
        let mut inner = self.lock();
        if !inner.meters.contains_key(&(tenant, quota.meter.clone())) {
            return Err(Error::not_found("meter", &quota.meter));
        }
        inner
            .quotas
            .insert((tenant, quota.meter.clone()), quota.clone());
        Ok(())
    }

    async fn quota(&self, tenant: TenantId, key: &MeterKey) -> Result<Option<Quota>> {
        Ok(self.lock().quotas.get(&(tenant, key.clone())).cloned())
    }

    async fn delete_quota(&self, tenant: TenantId, key: &MeterKey) -> Result<bool> {
        Ok(self.lock().quotas.remove(&(tenant, key.clone())).is_some())
    }
}

#[async_trait]
impl QuotaCounter for MemoryMeteringStore {
    async fn consume(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        period_start: i64,
        _period_end: i64,
        amount: i64,
        ceiling: i64,
    ) -> Result<Consumed> {
        let mut inner = self.lock();
        let used = inner
            .counters
            .entry((tenant, meter.clone(), period_start))
            .or_insert(0);
        match used.checked_add(amount) {
            Some(next) if next <= ceiling => {
                *used = next;
                Ok(Consumed {
                    consumed: true,
                    used: next,
                })
            }
            _ => Ok(Consumed {
                consumed: false,
                used: *used,
            }),
        }
    }

    async fn used(&self, tenant: TenantId, meter: &MeterKey, period_start: i64) -> Result<i64> {
        Ok(self
            .lock()
            .counters
            .get(&(tenant, meter.clone(), period_start))
            .copied()
            .unwrap_or(0))
    }
}
