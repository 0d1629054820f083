//! The storage traits: [`MeteringStore`] (meters, idempotent ingestion with rollups,
//! rollup reads, quota definitions) and [`QuotaCounter`] (atomic per-period
//! counters).

use async_trait::async_trait;
use tenancy_core::{Result, TenantId};

use crate::model::{Meter, MeterKey, Quota, Window};
use crate::rollup::{IngestBatch, RollupRow, UniqueValue};

/// Where meters, events, rollups and quota definitions live. Every method takes the
/// tenant first and never reads or writes another tenant's rows.
///
/// Contract:
/// - Meters are unique per (tenant, key); writes carry versions: an update stores
///   version `n + 1` only over version `n`, a delete names the version it read;
///   otherwise `Conflict` and nothing changes.
/// - [`MeteringStore::ingest`] is atomic and idempotent per (tenant, event id),
///   forever: in one transaction it stores the events whose id the tenant has not
///   stored before and adds the contributions of exactly those events to the rollups
///   (and unique-count sets, keeping at most `unique_bound` values per cell). A
///   concurrent ingest of the same ids stores and counts each once.
/// - Reads never scan raw events: queries read rollup rows (and unique-count sets).
#[async_trait]
pub trait MeteringStore: QuotaCounter + Send + Sync {
    /// Stores a new meter; `AlreadyExists` if the tenant has one with its key,
    /// `InvalidInput` if it names another tenant.
    async fn insert_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()>;
    /// The meter `key` of `tenant`; `NotFound` if none.
    async fn meter(&self, tenant: TenantId, key: &MeterKey) -> Result<Meter>;
    /// Every meter of `tenant`, sorted by key.
    async fn list_meters(&self, tenant: TenantId) -> Result<Vec<Meter>>;
    /// Replaces a meter with `meter` (version `n + 1`) if the stored one has version
    /// `n`; `Conflict` otherwise, `NotFound` if there is none.
    async fn update_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()>;
    /// Deletes meter `key` at `version` with its rollups, unique-count sets and quota
    /// (stored events stay); `Conflict` if the version is stale, `NotFound` if none.
    async fn delete_meter(&self, tenant: TenantId, key: &MeterKey, version: i64) -> Result<()>;
    /// Stores the batch's new events and their rollups (see the trait docs). Returns,
    /// per event of the batch, whether it was new.
    async fn ingest(&self, tenant: TenantId, batch: &IngestBatch<'_>) -> Result<Vec<bool>>;
    /// [`MeteringStore::ingest`] of several tenants' batches: per batch (in the order
    /// given), per event, whether it was new. The SQL stores write them all in one
    /// transaction, all or nothing, so many small batches pay for one commit; this
    /// default ingests them one by one, so on an error the earlier ones stay stored
    /// (ingesting them again is harmless).
    async fn ingest_many(
        &self,
        batches: &[(TenantId, &IngestBatch<'_>)],
    ) -> Result<Vec<Vec<bool>>> {
        let mut out = Vec::with_capacity(batches.len());
        for (tenant, batch) in batches {
            out.push(self.ingest(*tenant, batch).await?);
        }
        Ok(out)
    }
    /// The rollup rows of `meter` and `window` with `from <= window_start < to` (Unix
    /// seconds), sorted by window start and group.
    async fn rollups(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupRow>>;
    /// [`MeteringStore::rollups`] of several (meter, window) pairs at once, in the
    /// order asked: the SQL backends read them in one query.
    async fn rollups_of(
        &self,
        tenant: TenantId,
        wanted: &[(MeterKey, Window)],
        from: i64,
        to: i64,
    ) -> Result<Vec<Vec<RollupRow>>> {
        let mut out = Vec::with_capacity(wanted.len());
        for (meter, window) in wanted {
            out.push(self.rollups(tenant, meter, *window, from, to).await?);
        }
        Ok(out)
    }
    /// The stored distinct values of unique-count `meter` and `window` with
    /// `from <= window_start < to`, in any order.
    async fn unique_values(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<UniqueValue>>;
    /// Sets (creates or replaces) the quota of a meter; `NotFound` if the meter does
    /// not exist, `InvalidInput` if the quota names another tenant.
    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()>;
    /// The quota of meter `key`, if any.
    async fn quota(&self, tenant: TenantId, key: &MeterKey) -> Result<Option<Quota>>;
    /// Deletes the quota of meter `key`; whether there was one.
    async fn delete_quota(&self, tenant: TenantId, key: &MeterKey) -> Result<bool>;
}

/// The result of [`QuotaCounter::consume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    /// Whether the amount was added.
    pub consumed: bool,
    /// The counter after the call.
    pub used: i64,
}

/// Per-period quota counters in integer units (1/10,000 of a quota unit), keyed by
/// (tenant, meter, period start).
///
/// Contract: [`QuotaCounter::consume`] is atomic. It adds `amount` only if the
/// counter stays at most `ceiling`; concurrent callers never overspend: of calls
/// that together would pass the ceiling, the ones counted add up to at most it.
/// A counter that was never consumed reads 0.
#[async_trait]
pub trait QuotaCounter: Send + Sync {
    /// Adds `amount` (> 0) to the counter of (`tenant`, `meter`, `period_start`) if it
    /// stays at most `ceiling`. `period_end` (Unix seconds) lets backends expire it.
    async fn consume(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        period_start: i64,
        period_end: i64,
        amount: i64,
        ceiling: i64,
    ) -> Result<Consumed>;
    /// The counter of (`tenant`, `meter`, `period_start`).
    async fn used(&self, tenant: TenantId, meter: &MeterKey, period_start: i64) -> Result<i64>;
}
