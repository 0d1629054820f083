//! The PostgreSQL metering store: a batch is a handful of statements over `UNNEST`
//! arrays in one transaction, whatever its size. Concurrent batches take their row
//! locks in one global order (events by id, unique-count cells by hash, rollup rows by
//! cell), so they queue instead of deadlocking; a deadlock or serialization failure
//! PostgreSQL still reports is retried.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::prelude::ToPrimitive as _;
use sqlx::{Postgres, Row as _};
use tenancy_core::postgres::PgStore;
use tenancy_core::{Error, Result, TenantId};
use uuid::Uuid;

use crate::model::Aggregation;
use crate::rollup::{CellDelta, CellKey, IngestBatch, unique_allowance};

super::sql_metering_store!(PgStore, Postgres, ingest);

/// Applies the metering migrations to a PostgreSQL database.
pub async fn migrate_postgres(store: &PgStore) -> Result<()> {
    let mut m = sqlx::migrate!("./migrations/postgres");
    m.set_ignore_missing(true);
    store.apply_migrations(&m).await
}

/// How often a batch is tried when PostgreSQL aborts it for a deadlock or a
/// serialization failure.
const ATTEMPTS: usize = 8;

enum Failure {
    Retry(Error),
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Fatal(e)
    }
}

fn classify(e: sqlx::Error) -> Failure {
    if let sqlx::Error::Database(d) = &e
        && matches!(d.code().as_deref(), Some("40P01" | "40001"))
    {
        return Failure::Retry(db(e));
    }
    Failure::Fatal(db(e))
}

async fn ingest(store: &PgStore, tenant: TenantId, batch: &IngestBatch<'_>) -> Result<Vec<bool>> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt(store, tenant, batch).await {
            Ok(inserted) => return Ok(inserted),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => {
                tracing::debug!(error = %e, "metering batch retried");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Unavailable("metering batch failed".into())))
}

/// The arrays of a set of cells, in cell order.
#[derive(Default)]
struct CellArrays {
    meters: Vec<String>,
    windows: Vec<String>,
    starts: Vec<i64>,
    groups: Vec<String>,
}

impl CellArrays {
    fn push(&mut self, cell: &CellKey) {
        self.meters.push(cell.meter.as_str().to_owned());
        self.windows.push(cell.window.as_str().to_owned());
        self.starts.push(cell.window_start);
        self.groups.push(cell.group_key.clone());
    }
}

type CellTuple = (String, String, i64, String);

fn tuple(cell: &CellKey) -> CellTuple {
    (
        cell.meter.as_str().to_owned(),
        cell.window.as_str().to_owned(),
        cell.window_start,
        cell.group_key.clone(),
    )
}

fn lock_key(tenant: TenantId, cell: &CellKey) -> i64 {
    let text = format!(
        "{tenant}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        cell.meter, cell.window, cell.window_start, cell.group_key
    );
    i64::from_ne_bytes(xxhash_rust::xxh3::xxh3_64(text.as_bytes()).to_ne_bytes())
}

async fn attempt(
    store: &PgStore,
    tenant: TenantId,
    batch: &IngestBatch<'_>,
) -> Result<Vec<bool>, Failure> {
    let t = tenant.as_uuid();
    let mut sorted: Vec<_> = batch.events.iter().collect();
    sorted.sort_by_key(|p| p.event.id);
    let mut tx = store.tenant_transaction(tenant, true).await?;
    let new_ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO usage_events (tenant_id, id, event_type, source, subject, time, data) \
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], \
         $6::timestamptz[], $7::jsonb[]) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(t)
    .bind(sorted.iter().map(|p| p.event.id).collect::<Vec<_>>())
    .bind(
        sorted
            .iter()
            .map(|p| p.event.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|p| p.event.source.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sorted
            .iter()
            .map(|p| p.event.subject.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(sorted.iter().map(|p| p.event.time).collect::<Vec<_>>())
    .bind(
        sorted
            .iter()
            .map(|p| sqlx::types::Json(&p.event.data))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(classify)?;
    let new_ids: HashSet<Uuid> = new_ids.into_iter().collect();
    let inserted: Vec<bool> = batch
        .events
        .iter()
        .map(|p| new_ids.contains(&p.event.id))
        .collect();
    let mut deltas = batch.deltas(&inserted)?;
    if deltas.is_empty() {
        tx.commit().await.map_err(classify)?;
        return Ok(inserted);
    }
    if deltas.values().any(|d| !d.unique_values.is_empty()) {
        unique_sets(&mut tx, tenant, batch.unique_bound, &mut deltas).await?;
    }
    for aggregation in Aggregation::ALL {
        let mut cells = CellArrays::default();
        let mut events = Vec::new();
        let mut values = Vec::new();
        let mut latest_times = Vec::new();
        let mut latest_ids = Vec::new();
        let mut saturated = Vec::new();
        for (cell, d) in deltas.iter().filter(|(_, d)| d.aggregation == aggregation) {
            cells.push(cell);
            events.push(d.events);
            values.push(d.value.normalize().to_string());
            latest_times.push(d.latest_time);
            latest_ids.push(d.latest_id);
            saturated.push(d.saturated);
        }
        if events.is_empty() {
            continue;
        }
        sqlx::query(upsert_sql(aggregation))
            .bind(t)
            .bind(cells.meters)
            .bind(cells.windows)
            .bind(cells.starts)
            .bind(cells.groups)
            .bind(events)
            .bind(values)
            .bind(latest_times)
            .bind(latest_ids)
            .bind(saturated)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)?;
    Ok(inserted)
}

/// Stores the new distinct values of the batch's unique-count cells, keeping each
/// cell under `bound`, and sets each delta's value to the number of values it added.
async fn unique_sets(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    tenant: TenantId,
    bound: u64,
    deltas: &mut BTreeMap<CellKey, CellDelta>,
) -> Result<(), Failure> {
    let t = tenant.as_uuid();
    let unique: Vec<&CellKey> = deltas
        .iter()
        .filter(|(_, d)| !d.unique_values.is_empty())
        .map(|(c, _)| c)
        .collect();
    // One writer per cell at a time, so the bound holds exactly.
    let mut locks: Vec<i64> = unique.iter().map(|c| lock_key(tenant, c)).collect();
    locks.sort_unstable();
    locks.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) AS k")
        .bind(locks)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;

    let mut cells = CellArrays::default();
    for c in &unique {
        cells.push(c);
    }
    let mut held: HashMap<CellTuple, i64> = HashMap::new();
    for r in sqlx::query(
        "SELECT meter_key, window_size, window_start, group_key, CAST(value AS TEXT) AS value \
         FROM usage_rollups WHERE tenant_id = $1 AND (meter_key, window_size, window_start, group_key) \
         IN (SELECT * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[]))",
    )
    .bind(t)
    .bind(&cells.meters)
    .bind(&cells.windows)
    .bind(&cells.starts)
    .bind(&cells.groups)
    .fetch_all(&mut **tx)
    .await
    .map_err(classify)?
    {
        let value: String = r.try_get("value").map_err(classify)?;
        let count = super::stored_decimal(&value)?;
        let key = (
            r.try_get("meter_key").map_err(classify)?,
            r.try_get("window_size").map_err(classify)?,
            r.try_get("window_start").map_err(classify)?,
            r.try_get("group_key").map_err(classify)?,
        );
        held.insert(key, count.to_i64().unwrap_or(i64::MAX));
    }

    let mut values = CellArrays::default();
    let mut texts = Vec::new();
    for (cell, d) in deltas.iter().filter(|(_, d)| !d.unique_values.is_empty()) {
        for v in &d.unique_values {
            values.push(cell);
            texts.push(v.clone());
        }
    }
    let mut fresh: HashMap<CellTuple, Vec<String>> = HashMap::new();
    for r in sqlx::query(
        "INSERT INTO usage_unique_values \
         (tenant_id, meter_key, window_size, window_start, group_key, value) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]) \
         ON CONFLICT DO NOTHING RETURNING meter_key, window_size, window_start, group_key, value",
    )
    .bind(t)
    .bind(values.meters)
    .bind(values.windows)
    .bind(values.starts)
    .bind(values.groups)
    .bind(texts)
    .fetch_all(&mut **tx)
    .await
    .map_err(classify)?
    {
        let key = (
            r.try_get("meter_key").map_err(classify)?,
            r.try_get("window_size").map_err(classify)?,
            r.try_get("window_start").map_err(classify)?,
            r.try_get("group_key").map_err(classify)?,
        );
        fresh
            .entry(key)
            .or_default()
            .push(r.try_get("value").map_err(classify)?);
    }

    let mut excess = CellArrays::default();
    let mut excess_values = Vec::new();
    for (cell, d) in deltas.iter_mut() {
        if d.unique_values.is_empty() {
            continue;
        }
        let key = tuple(cell);
        let mut added = fresh.remove(&key).unwrap_or_default();
        added.sort();
        let (keep, saturated) =
            unique_allowance(bound, held.get(&key).copied().unwrap_or(0), added.len());
        for v in added.iter().skip(keep) {
            excess.push(cell);
            excess_values.push(v.clone());
        }
        d.value = rust_decimal::Decimal::from(keep);
        d.saturated = saturated;
    }
    if !excess_values.is_empty() {
        sqlx::query(
            "DELETE FROM usage_unique_values WHERE tenant_id = $1 AND \
             (meter_key, window_size, window_start, group_key, value) IN \
             (SELECT * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]))",
        )
        .bind(t)
        .bind(excess.meters)
        .bind(excess.windows)
        .bind(excess.starts)
        .bind(excess.groups)
        .bind(excess_values)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

macro_rules! upsert {
    ($merge:literal) => {
        concat!(
            "INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
             group_key, events, value, latest_time, latest_id, saturated) \
             SELECT $1, m, w, s, g, e, v::numeric, lt, li, sat FROM UNNEST($2::text[], $3::text[], \
             $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::timestamptz[], $9::uuid[], \
             $10::boolean[]) AS u(m, w, s, g, e, v, lt, li, sat) \
             ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE SET \
             events = r.events + EXCLUDED.events, saturated = r.saturated OR EXCLUDED.saturated, ",
            $merge
        )
    };
}

/// The rollup upsert of one aggregation: the decimals merge in SQL (`numeric`).
fn upsert_sql(aggregation: Aggregation) -> &'static str {
    match aggregation {
        Aggregation::Count | Aggregation::Sum | Aggregation::UniqueCount => {
            upsert!("value = r.value + EXCLUDED.value")
        }
        Aggregation::Min => upsert!("value = least(r.value, EXCLUDED.value)"),
        Aggregation::Max => upsert!("value = greatest(r.value, EXCLUDED.value)"),
        Aggregation::Latest => upsert!(
            "value = CASE WHEN (EXCLUDED.latest_time, EXCLUDED.latest_id) > (r.latest_time, r.latest_id) \
             THEN EXCLUDED.value ELSE r.value END, \
             latest_id = CASE WHEN (EXCLUDED.latest_time, EXCLUDED.latest_id) > (r.latest_time, r.latest_id) \
             THEN EXCLUDED.latest_id ELSE r.latest_id END, \
             latest_time = greatest(r.latest_time, EXCLUDED.latest_time)"
        ),
    }
}
