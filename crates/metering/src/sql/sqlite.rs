//! The SQLite metering store: batches under the database write lock (`BEGIN
//! IMMEDIATE`), so reading the touched rollup rows and writing them back is atomic.

use std::collections::{HashMap, HashSet};

use rust_decimal::prelude::ToPrimitive as _;
use sqlx::{QueryBuilder, Row as _, Sqlite};
use tenancy_core::sqlite::SqliteStore;
use tenancy_core::{Result, TenantId};
use uuid::Uuid;

use crate::rollup::{CellKey, IngestBatch, RollupRow, unique_allowance};

super::sql_metering_store!(SqliteStore, Sqlite, begin, read, ingest_many);

/// A transaction scoped to `tenant` (`write`: under the database write lock).
/// Reads need no transaction in SQLite (a statement sees one snapshot, and there is
/// no row-level security): a pooled connection saves the `BEGIN` and the rollback,
/// each a hop to the connection's worker thread.
async fn read(
    store: &SqliteStore,
    _tenant: TenantId,
) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
    Ok(store.pool().acquire().await?)
}

async fn begin(
    store: &SqliteStore,
    tenant: TenantId,
    write: bool,
) -> Result<sqlx::Transaction<'static, Sqlite>> {
    store.tenant_transaction(tenant, write).await
}

/// Applies the metering migrations to a SQLite database.
pub async fn migrate_sqlite(store: &SqliteStore) -> Result<()> {
    let mut m = sqlx::migrate!("./migrations/sqlite");
    m.set_ignore_missing(true);
    store.apply_migrations(&m).await
}

/// Events per `INSERT` (7 parameters each, under SQLite's 32,766).
const EVENT_CHUNK: usize = 1_000;
/// Cells per statement (at most 10 parameters each).
const CELL_CHUNK: usize = 500;

type CellTuple = (String, String, i64, String);

fn tuple(cell: &CellKey) -> CellTuple {
    (
        cell.meter.as_str().to_owned(),
        cell.window.as_str().to_owned(),
        cell.window_start,
        cell.group_key.clone(),
    )
}

/// Every batch of `batches` in one transaction under the write lock.
async fn ingest_many(
    store: &SqliteStore,
    batches: &[(TenantId, &IngestBatch<'_>)],
) -> Result<Vec<Vec<bool>>> {
    let Some((first, _)) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut tx = store.tenant_transaction(*first, true).await?;
    let mut out = Vec::with_capacity(batches.len());
    for (tenant, batch) in batches {
        out.push(ingest_in(&mut tx, *tenant, batch).await?);
    }
    tx.commit().await.map_err(db)?;
    Ok(out)
}

/// Writes `batch` of `tenant` in `tx` (the caller commits).
async fn ingest_in(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    tenant: TenantId,
    batch: &IngestBatch<'_>,
) -> Result<Vec<bool>> {
    let t = tenant.as_uuid();
    let mut new_ids: HashSet<Uuid> = HashSet::with_capacity(batch.events.len());
    for chunk in batch.events.chunks(EVENT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_events (tenant_id, id, event_type, source, subject, time, data) ",
        );
        q.push_values(chunk, |mut row, p| {
            row.push_bind(t)
                .push_bind(p.event.id)
                .push_bind(p.event.event_type.as_str())
                .push_bind(p.event.source.as_str())
                .push_bind(p.event.subject.as_str())
                .push_bind(p.event.time)
                .push_bind(sqlx::types::Json(&p.event.data));
        });
        q.push(" ON CONFLICT DO NOTHING RETURNING id");
        let ids: Vec<Uuid> = q
            .build_query_scalar()
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?;
        new_ids.extend(ids);
    }
    let inserted: Vec<bool> = batch
        .events
        .iter()
        .map(|p| new_ids.contains(&p.event.id))
        .collect();
    let mut deltas = batch.deltas(&inserted)?;
    if deltas.is_empty() {
        return Ok(inserted);
    }

    let cells: Vec<CellKey> = deltas.keys().cloned().collect();
    let mut current: HashMap<CellTuple, RollupRow> = HashMap::with_capacity(cells.len());
    for chunk in cells.chunks(CELL_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT meter_key, window_size, window_start, group_key, events, value, latest_time, \
             latest_id, saturated FROM usage_rollups WHERE tenant_id = ",
        );
        q.push_bind(t);
        q.push(" AND (meter_key, window_size, window_start, group_key) IN (");
        q.push_values(chunk, |mut row, c| {
            row.push_bind(c.meter.as_str())
                .push_bind(c.window.as_str())
                .push_bind(c.window_start)
                .push_bind(c.group_key.as_str());
        });
        q.push(")");
        for r in q.build().fetch_all(&mut **tx).await.map_err(db)? {
            let key: CellTuple = (
                r.try_get("meter_key").map_err(db)?,
                r.try_get("window_size").map_err(db)?,
                r.try_get("window_start").map_err(db)?,
                r.try_get("group_key").map_err(db)?,
            );
            current.insert(key, rollup_row(&r)?);
        }
    }

    // Unique-count sets: under the write lock, read which values are stored already,
    // then insert only the new ones the bound leaves room for.
    let pairs: Vec<(&CellKey, &str)> = deltas
        .iter()
        .flat_map(|(cell, d)| d.unique_values.iter().map(move |v| (cell, v.as_str())))
        .collect();
    let mut stored: HashSet<(CellTuple, String)> = HashSet::new();
    for chunk in pairs.chunks(CELL_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT meter_key, window_size, window_start, group_key, value \
             FROM usage_unique_values WHERE tenant_id = ",
        );
        q.push_bind(t);
        q.push(" AND (meter_key, window_size, window_start, group_key, value) IN (");
        q.push_values(chunk, |mut row, (c, v)| {
            row.push_bind(c.meter.as_str())
                .push_bind(c.window.as_str())
                .push_bind(c.window_start)
                .push_bind(c.group_key.as_str())
                .push_bind(*v);
        });
        q.push(")");
        for r in q.build().fetch_all(&mut **tx).await.map_err(db)? {
            let key: CellTuple = (
                r.try_get("meter_key").map_err(db)?,
                r.try_get("window_size").map_err(db)?,
                r.try_get("window_start").map_err(db)?,
                r.try_get("group_key").map_err(db)?,
            );
            stored.insert((key, r.try_get("value").map_err(db)?));
        }
    }
    let mut kept: Vec<(&CellKey, String)> = Vec::new();
    for (cell, delta) in &mut deltas {
        if delta.unique_values.is_empty() {
            continue;
        }
        let key = tuple(cell);
        let fresh: Vec<&String> = delta
            .unique_values
            .iter()
            .filter(|v| !stored.contains(&(key.clone(), (*v).clone())))
            .collect();
        let held = current
            .get(&key)
            .and_then(|r| r.value.to_i64())
            .unwrap_or(0);
        let (keep, saturated) = unique_allowance(batch.unique_bound, held, fresh.len());
        kept.extend(fresh.into_iter().take(keep).map(|v| (&*cell, v.clone())));
        delta.value = rust_decimal::Decimal::from(keep);
        delta.saturated = saturated;
    }
    for chunk in kept.chunks(CELL_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_unique_values \
             (tenant_id, meter_key, window_size, window_start, group_key, value) ",
        );
        q.push_values(chunk, |mut row, (c, v)| {
            row.push_bind(t)
                .push_bind(c.meter.as_str())
                .push_bind(c.window.as_str())
                .push_bind(c.window_start)
                .push_bind(c.group_key.as_str())
                .push_bind(v.as_str());
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut **tx).await.map_err(db)?;
    }

    let mut merged = Vec::with_capacity(deltas.len());
    for (cell, delta) in &deltas {
        let row = match current.remove(&tuple(cell)) {
            Some(mut row) => {
                row.apply(cell, delta)?;
                row
            }
            None => RollupRow::from_delta(cell, delta),
        };
        merged.push((cell, row));
    }
    for chunk in merged.chunks(CELL_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_rollups (tenant_id, meter_key, window_size, window_start, group_key, \
             events, value, latest_time, latest_id, saturated) ",
        );
        q.push_values(chunk, |mut b, (cell, row)| {
            b.push_bind(t)
                .push_bind(cell.meter.as_str())
                .push_bind(cell.window.as_str())
                .push_bind(cell.window_start)
                .push_bind(cell.group_key.as_str())
                .push_bind(row.events)
                .push_bind(row.value.normalize().to_string())
                .push_bind(row.latest_time)
                .push_bind(row.latest_id)
                .push_bind(row.saturated);
        });
        q.push(
            " ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE SET \
             events = excluded.events, value = excluded.value, latest_time = excluded.latest_time, \
             latest_id = excluded.latest_id, saturated = excluded.saturated",
        );
        q.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(inserted)
}
