//! The PostgreSQL metering store: a batch of new events costs two statements over
//! `UNNEST` arrays in one transaction, whatever its size (a third when it feeds a
//! unique-count meter).
//!
//! 1. One statement inserts the events (`ON CONFLICT DO NOTHING RETURNING id`) and, in
//!    the same statement, upserts the rollup deltas computed in Rust on the guess that
//!    every event is new: the upserts only run when the insert returned every id.
//!    When some events were duplicates the guess is void, nothing was added, and the
//!    same statement is sent again with no events and the deltas of the new events
//!    only. Unique-count cells are upserted with their event count only; the upsert
//!    locks the cell's row and returns the distinct values it holds.
//! 2. Under those row locks a second statement stores the new distinct values the
//!    bound leaves room for (the smallest first, in byte order) and adds their number
//!    to the cell.
//!
//! Concurrent batches take their row locks in one global order (events by id, rollup
//! rows by cell), so they queue instead of deadlocking; a deadlock or serialization
//! failure PostgreSQL still reports is retried.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::prelude::ToPrimitive as _;
use sqlx::{AssertSqlSafe, Postgres, Row as _};
use tenancy_core::postgres::PgStore;
use tenancy_core::{Error, Result, TenantId};
use uuid::Uuid;

use crate::model::Aggregation;
use crate::rollup::{CellDelta, CellKey, IngestBatch};

super::sql_metering_store!(PgStore, Postgres, begin, read, ingest_many);

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

/// What a batch sends, computed once for every attempt: its events as arrays, and its
/// deltas if all are new (as a map and as arrays).
struct Prepared<'a> {
    tenant: TenantId,
    batch: &'a IngestBatch<'a>,
    events: EventArrays<'a>,
    all_new: BTreeMap<CellKey, CellDelta>,
    all_new_arrays: DeltaArrays,
}

/// Every batch of `batches` in one transaction, the tenant's scope set before each;
/// the batches are written in tenant order so that concurrent writers take row locks
/// in one order. A serialization failure or deadlock retries the whole transaction.
async fn ingest_many(
    store: &PgStore,
    batches: &[(TenantId, &IngestBatch<'_>)],
) -> Result<Vec<Vec<bool>>> {
    let mut prepared = Vec::with_capacity(batches.len());
    for (tenant, batch) in batches {
        let all_new = batch.deltas(&vec![true; batch.events.len()])?;
        prepared.push(Prepared {
            tenant: *tenant,
            batch,
            events: EventArrays::of(batch),
            all_new_arrays: DeltaArrays::of(&all_new),
            all_new,
        });
    }
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by_key(|&i| prepared.get(i).map(|p| p.tenant));
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt(store, &prepared, &order).await {
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

/// One attempt of [`ingest_many`]: the batches in `order`, answers in the given order.
async fn attempt(
    store: &PgStore,
    prepared: &[Prepared<'_>],
    order: &[usize],
) -> Result<Vec<Vec<bool>>, Failure> {
    let mut out = vec![Vec::new(); prepared.len()];
    let mut tx: Option<sqlx::Transaction<'static, Postgres>> = None;
    for &i in order {
        let Some(p) = prepared.get(i) else { continue };
        let tx = match &mut tx {
            Some(tx) => {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(p.tenant.as_uuid().hyphenated().to_string())
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
                tx
            }
            None => tx.insert(begin(store, p.tenant, true).await?),
        };
        let inserted = write(tx, p).await?;
        if let Some(slot) = out.get_mut(i) {
            *slot = inserted;
        }
    }
    if let Some(tx) = tx {
        tx.commit().await.map_err(classify)?;
    }
    Ok(out)
}

/// Opens a transaction scoped to `tenant` for row-level security in one round trip:
/// `BEGIN` and `SET LOCAL app.tenant_id` go as one simple query (the text is a UUID
/// formatted here, never input). Reads and writes alike, as `PgStore` does.
/// Reads run in the same single-round-trip tenant transaction as writes.
async fn read(store: &PgStore, tenant: TenantId) -> Result<sqlx::Transaction<'static, Postgres>> {
    begin(store, tenant, false).await
}

async fn begin(
    store: &PgStore,
    tenant: TenantId,
    write: bool,
) -> Result<sqlx::Transaction<'static, Postgres>> {
    let _ = write;
    let statement = format!(
        "BEGIN; SET LOCAL app.tenant_id = '{}'",
        tenant.as_uuid().hyphenated()
    );
    store
        .pool()
        .begin_with(AssertSqlSafe(statement))
        .await
        .map_err(db)
}

/// The kinds of rollup merge, as the statement's `k` column names them.
fn merge_kind(aggregation: Aggregation) -> i16 {
    match aggregation {
        Aggregation::Count | Aggregation::Sum => 0,
        Aggregation::Min => 1,
        Aggregation::Max => 2,
        Aggregation::Latest => 3,
        Aggregation::UniqueCount => 4,
    }
}

/// The rollup deltas of a batch as the arrays of [`INGEST`], in cell order.
#[derive(Default)]
struct DeltaArrays {
    meters: Vec<String>,
    windows: Vec<String>,
    starts: Vec<i64>,
    groups: Vec<String>,
    events: Vec<i64>,
    values: Vec<String>,
    latest_times: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    latest_ids: Vec<Option<Uuid>>,
    kinds: Vec<i16>,
}

impl DeltaArrays {
    fn of(deltas: &BTreeMap<CellKey, CellDelta>) -> Self {
        let mut a = Self::default();
        for (cell, d) in deltas {
            a.meters.push(cell.meter.as_str().to_owned());
            a.windows.push(cell.window.as_str().to_owned());
            a.starts.push(cell.window_start);
            a.groups.push(cell.group_key.clone());
            a.events.push(d.events);
            a.values.push(d.value.normalize().to_string());
            a.latest_times.push(d.latest_time);
            a.latest_ids.push(d.latest_id);
            a.kinds.push(merge_kind(d.aggregation));
        }
        a
    }
}

/// The events of a batch as the arrays of [`INGEST`], in id order.
#[derive(Default)]
struct EventArrays<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    sources: Vec<&'a str>,
    subjects: Vec<&'a str>,
    times: Vec<chrono::DateTime<chrono::Utc>>,
    data: Vec<sqlx::types::Json<&'a serde_json::Value>>,
}

impl<'a> EventArrays<'a> {
    fn of(batch: &'a IngestBatch<'_>) -> Self {
        let mut sorted: Vec<_> = batch.events.iter().map(|p| p.event).collect();
        sorted.sort_by_key(|e| e.id);
        let mut a = Self::default();
        for e in sorted {
            a.ids.push(e.id);
            a.types.push(e.event_type.as_str());
            a.sources.push(e.source.as_str());
            a.subjects.push(e.subject.as_str());
            a.times.push(e.time);
            a.data.push(sqlx::types::Json(&e.data));
        }
        a
    }
}

/// Inserts the events `$2..$7` that are new and, when every one of them was,
/// upserts the rollup deltas `$8..$16`. Returns one row per inserted event (`id`)
/// and one per upserted unique-count cell (its key and the distinct values it
/// holds, `held`).
const INGEST: &str = "\
WITH ins AS ( \
    INSERT INTO usage_events (tenant_id, id, event_type, source, subject, time, data) \
    SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], \
        $6::timestamptz[], $7::jsonb[]) \
    ON CONFLICT DO NOTHING RETURNING id \
), cells AS MATERIALIZED ( \
    SELECT * FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], \
        $13::text[], $14::timestamptz[], $15::uuid[], $16::smallint[]) \
        AS u(m, w, s, g, e, v, lt, li, k) \
    WHERE (SELECT count(*) FROM ins) = cardinality($2::uuid[]) \
), added AS ( \
    INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
        group_key, events, value, latest_time, latest_id) \
    SELECT $1, m, w, s, g, e, v::numeric, lt, li FROM cells WHERE k = 0 \
    ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE \
    SET events = r.events + EXCLUDED.events, value = r.value + EXCLUDED.value \
), lowest AS ( \
    INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
        group_key, events, value, latest_time, latest_id) \
    SELECT $1, m, w, s, g, e, v::numeric, lt, li FROM cells WHERE k = 1 \
    ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE \
    SET events = r.events + EXCLUDED.events, value = least(r.value, EXCLUDED.value) \
), highest AS ( \
    INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
        group_key, events, value, latest_time, latest_id) \
    SELECT $1, m, w, s, g, e, v::numeric, lt, li FROM cells WHERE k = 2 \
    ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE \
    SET events = r.events + EXCLUDED.events, value = greatest(r.value, EXCLUDED.value) \
), latest AS ( \
    INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
        group_key, events, value, latest_time, latest_id) \
    SELECT $1, m, w, s, g, e, v::numeric, lt, li FROM cells WHERE k = 3 \
    ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE \
    SET events = r.events + EXCLUDED.events, \
        value = CASE WHEN (EXCLUDED.latest_time, EXCLUDED.latest_id) > (r.latest_time, r.latest_id) \
            THEN EXCLUDED.value ELSE r.value END, \
        latest_id = CASE WHEN (EXCLUDED.latest_time, EXCLUDED.latest_id) > (r.latest_time, r.latest_id) \
            THEN EXCLUDED.latest_id ELSE r.latest_id END, \
        latest_time = greatest(r.latest_time, EXCLUDED.latest_time) \
), uniq AS ( \
    INSERT INTO usage_rollups AS r (tenant_id, meter_key, window_size, window_start, \
        group_key, events, value) \
    SELECT $1, m, w, s, g, e, 0 FROM cells WHERE k = 4 \
    ON CONFLICT (tenant_id, meter_key, window_size, window_start, group_key) DO UPDATE \
    SET events = r.events + EXCLUDED.events \
    RETURNING meter_key, window_size, window_start, group_key, CAST(value AS TEXT) AS held \
) \
SELECT id, NULL::text AS meter_key, NULL::text AS window_size, NULL::bigint AS window_start, \
    NULL::text AS group_key, NULL::text AS held FROM ins \
UNION ALL \
SELECT NULL, meter_key, window_size, window_start, group_key, held FROM uniq";

/// Under the row locks of the unique-count cells: stores the candidate values
/// `$2..$6` a cell does not hold yet, the smallest first (byte order) up to the room
/// `$7` its bound leaves, and adds their number to the cell, flagging it saturated
/// when some had to go.
const UNIQUE: &str = "\
WITH fresh AS ( \
    SELECT c.*, row_number() OVER (PARTITION BY m, w, s, g ORDER BY v COLLATE \"C\") AS rank \
    FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[]) \
        AS c(m, w, s, g, v, room) \
    WHERE NOT EXISTS (SELECT 1 FROM usage_unique_values x WHERE x.tenant_id = $1 \
        AND x.meter_key = c.m AND x.window_size = c.w AND x.window_start = c.s \
        AND x.group_key = c.g AND x.value = c.v) \
), kept AS ( \
    INSERT INTO usage_unique_values \
        (tenant_id, meter_key, window_size, window_start, group_key, value) \
    SELECT $1, m, w, s, g, v FROM fresh WHERE rank <= room \
    ON CONFLICT DO NOTHING \
    RETURNING meter_key AS m, window_size AS w, window_start AS s, group_key AS g \
), counts AS ( \
    SELECT f.m, f.w, f.s, f.g, bool_or(f.rank > f.room) AS saturated, \
        (SELECT count(*) FROM kept k WHERE (k.m, k.w, k.s, k.g) = (f.m, f.w, f.s, f.g)) AS added \
    FROM fresh f GROUP BY f.m, f.w, f.s, f.g \
) \
UPDATE usage_rollups r SET value = r.value + c.added, saturated = r.saturated OR c.saturated \
FROM counts c WHERE r.tenant_id = $1 AND r.meter_key = c.m AND r.window_size = c.w \
    AND r.window_start = c.s AND r.group_key = c.g";

/// Sends [`INGEST`]: the ids it inserted, and the unique-count cells it locked with
/// the distinct values each holds.
async fn send(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    tenant: TenantId,
    events: &EventArrays<'_>,
    deltas: &DeltaArrays,
) -> Result<(HashSet<Uuid>, HashMap<CellTuple, i64>), Failure> {
    let rows = sqlx::query(INGEST)
        .bind(tenant.as_uuid())
        .bind(&events.ids)
        .bind(&events.types)
        .bind(&events.sources)
        .bind(&events.subjects)
        .bind(&events.times)
        .bind(&events.data)
        .bind(&deltas.meters)
        .bind(&deltas.windows)
        .bind(&deltas.starts)
        .bind(&deltas.groups)
        .bind(&deltas.events)
        .bind(&deltas.values)
        .bind(&deltas.latest_times)
        .bind(&deltas.latest_ids)
        .bind(&deltas.kinds)
        .fetch_all(&mut **tx)
        .await
        .map_err(classify)?;
    let mut ids = HashSet::with_capacity(rows.len());
    let mut held = HashMap::new();
    for r in rows {
        if let Some(id) = r.try_get::<Option<Uuid>, _>("id").map_err(classify)? {
            ids.insert(id);
            continue;
        }
        let value: String = r.try_get("held").map_err(classify)?;
        let count = super::stored_decimal(&value)?.to_i64().unwrap_or(i64::MAX);
        let key = (
            r.try_get("meter_key").map_err(classify)?,
            r.try_get("window_size").map_err(classify)?,
            r.try_get("window_start").map_err(classify)?,
            r.try_get("group_key").map_err(classify)?,
        );
        held.insert(key, count);
    }
    Ok((ids, held))
}

/// Writes one prepared batch in `tx`, scoped to its tenant already.
async fn write(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    prepared: &Prepared<'_>,
) -> Result<Vec<bool>, Failure> {
    let Prepared {
        tenant,
        batch,
        events,
        all_new,
        all_new_arrays,
    } = prepared;
    let tenant = *tenant;
    let (new_ids, mut held) = send(tx, tenant, events, all_new_arrays).await?;
    let inserted: Vec<bool> = batch
        .events
        .iter()
        .map(|p| new_ids.contains(&p.event.id))
        .collect();
    let mut deltas = std::borrow::Cow::Borrowed(all_new);
    if new_ids.len() != batch.events.len() {
        // Some were duplicates: nothing was added yet; add what the new ones bring.
        deltas = std::borrow::Cow::Owned(batch.deltas(&inserted)?);
        if !deltas.is_empty() {
            let none = EventArrays::default();
            held = send(tx, tenant, &none, &DeltaArrays::of(&deltas)).await?.1;
        }
    }
    if deltas.values().any(|d| !d.unique_values.is_empty()) {
        unique_sets(tx, tenant, batch.unique_bound, &deltas, &held).await?;
    }
    Ok(inserted)
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

/// Stores the new distinct values of the batch's unique-count cells (whose rows
/// [`INGEST`] locked, returning the counts they `held`), keeping each under `bound`.
async fn unique_sets(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    tenant: TenantId,
    bound: u64,
    deltas: &BTreeMap<CellKey, CellDelta>,
    held: &HashMap<CellTuple, i64>,
) -> Result<(), Failure> {
    let mut meters = Vec::new();
    let mut windows = Vec::new();
    let mut starts = Vec::new();
    let mut groups = Vec::new();
    let mut values = Vec::new();
    let mut rooms = Vec::new();
    for (cell, d) in deltas.iter().filter(|(_, d)| !d.unique_values.is_empty()) {
        let current = held.get(&tuple(cell)).copied().ok_or_else(|| {
            Error::Internal(format!(
                "unique-count cell of meter `{}` was not locked",
                cell.meter
            ))
        })?;
        let current = u64::try_from(current).unwrap_or(0);
        let room = i64::try_from(bound.saturating_sub(current)).unwrap_or(i64::MAX);
        for v in &d.unique_values {
            meters.push(cell.meter.as_str());
            windows.push(cell.window.as_str());
            starts.push(cell.window_start);
            groups.push(cell.group_key.as_str());
            values.push(v.as_str());
            rooms.push(room);
        }
    }
    sqlx::query(UNIQUE)
        .bind(tenant.as_uuid())
        .bind(meters)
        .bind(windows)
        .bind(starts)
        .bind(groups)
        .bind(values)
        .bind(rooms)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}
