//! Metering benchmarks: durable batch ingestion with deduplication, and the 30-day
//! query that rollups turn into a read of 30 rows.
//!
//! Groups (each on SQLite in a temporary file, and on PostgreSQL in a fresh database
//! as the row-level-security role when `TENANCY_TEST_POSTGRES_URL` is set):
//! - `ingest_1000`: one `Metering::ingest` of 1,000 new events (three meters: a count
//!   grouped by route kept per hour and day, a sum and a unique count per day), in one
//!   transaction with deduplication on (tenant, id); throughput in events/s.
//!   `resent` sends a batch the store has already seen (every event a duplicate).
//! - `query_30_days`: one meter over 30 days by day, ungrouped and grouped by route
//!   (10 routes), over rollups pre-filled by ingesting events spread over the 30
//!   days. The query reads rollup rows only, so its cost does not depend on how many
//!   events were ingested.
//! - `query_10m`: the same query over a dataset that really holds 10,000,000 events,
//!   ingested through `Metering::ingest` in batches of 1,000 over a fixed 30 days
//!   (January 2025, with a clock set to its end), on memory, SQLite and PostgreSQL.
//!   Building it takes minutes, so the SQLite file (under the target directory,
//!   `bench-data/`) and the PostgreSQL database (its name kept in the same directory)
//!   are kept and reused when they hold the whole dataset, and an interrupted build
//!   resumes where it stopped (event ids are fixed, so a resent batch is deduplicated).
//!   The group only runs when no filter is given or the filter names it
//!   (`cargo bench --bench metering -- query_10m`).
//!
//! Run with `cargo bench --bench metering`; add `TENANCY_TEST_POSTGRES_URL=postgres://…`
//! for PostgreSQL.
#![expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails must stop loudly"
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeZone as _, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use tenancy::TenantId;
use tenancy::core::clock::ManualClock;
use tenancy::core::conformance::{PgTestDatabase, sqlite_test_store};
use tenancy::core::postgres::PgStore;
use tenancy::core::sqlite::SqliteStore;
use tenancy::metering::memory::MemoryMeteringStore;
use tenancy::metering::sql::{migrate_postgres, migrate_sqlite};
use tenancy::metering::{
    Aggregation, Metering, MeteringConfig, MeteringStore, NewMeter, UsageEvent, UsageQuery, Window,
};
use tokio::runtime::Runtime;

/// Events per ingest call.
const BATCH: usize = 1_000;
/// Events pre-filled per day for the query group.
const EVENTS_PER_DAY: usize = 2_000;

struct Backend {
    name: &'static str,
    metering: Metering,
    tenant: TenantId,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn meters() -> Vec<NewMeter> {
    vec![
        NewMeter {
            key: "requests".into(),
            event_type: "api.request".into(),
            aggregation: Aggregation::Count,
            group_by: vec!["route".into()],
            windows: vec![Window::Hour, Window::Day],
            ..Default::default()
        },
        NewMeter {
            key: "bytes".into(),
            event_type: "api.request".into(),
            aggregation: Aggregation::Sum,
            value_property: Some("bytes".into()),
            windows: vec![Window::Day],
            ..Default::default()
        },
        NewMeter {
            key: "callers".into(),
            event_type: "api.request".into(),
            aggregation: Aggregation::UniqueCount,
            value_property: Some("caller".into()),
            windows: vec![Window::Day],
            ..Default::default()
        },
    ]
}

fn event(tenant: TenantId, i: usize, time: DateTime<Utc>) -> UsageEvent {
    event_with_id(tenant, uuid::Uuid::now_v7(), i, time)
}

fn event_with_id(tenant: TenantId, id: uuid::Uuid, i: usize, time: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        id,
        tenant_id: tenant,
        event_type: "api.request".into(),
        source: "bench".into(),
        subject: format!("key-{}", i % 50),
        time,
        data: serde_json::json!({
            "route": format!("/v1/route/{}", i % 10),
            "bytes": (i % 4_096) * 3 + 17,
            "caller": format!("caller-{}", i % 200),
        }),
    }
}

/// A batch of new events within the last hour.
fn recent_batch(tenant: TenantId) -> Vec<UsageEvent> {
    let now = Utc::now();
    (0..BATCH)
        .map(|i| {
            event(
                tenant,
                i,
                now - chrono::Duration::seconds((i % 3_600) as i64),
            )
        })
        .collect()
}

async fn setup(name: &'static str, store: Arc<dyn MeteringStore>) -> (Metering, TenantId) {
    let metering = Metering::new(store).with_config(MeteringConfig {
        lateness: chrono::Duration::days(40),
        ..MeteringConfig::default()
    });
    let tenant = TenantId::new();
    for m in meters() {
        metering.create_meter(tenant, m).await.expect(name);
    }
    (metering, tenant)
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        sqlite_test_store(dir.path(), "metering.db", async |s| migrate_sqlite(s).await).await;
    let (metering, tenant) = setup("sqlite", Arc::new(store)).await;
    Backend {
        name: "sqlite",
        metering,
        tenant,
        _dir: Some(dir),
        pg: None,
    }
}

async fn postgres() -> Option<Backend> {
    std::env::var("TENANCY_TEST_POSTGRES_URL").ok()?;
    let db = PgTestDatabase::create().await?;
    let app = db.app_store(async |s| migrate_postgres(s).await).await;
    let (metering, tenant) = setup("postgres", Arc::new(app)).await;
    Some(Backend {
        name: "postgres",
        metering,
        tenant,
        _dir: None,
        pg: Some(db),
    })
}

fn backends(rt: &Runtime) -> Vec<Backend> {
    rt.block_on(async {
        let mut out = vec![sqlite().await];
        out.extend(postgres().await);
        out
    })
}

fn finish(rt: &Runtime, backends: Vec<Backend>) {
    rt.block_on(async {
        for b in backends {
            drop(b.metering);
            if let Some(db) = b.pg {
                db.drop_database().await;
            }
        }
    });
}

fn ingest_1000(c: &mut Criterion) {
    let rt = runtime();
    let backends = backends(&rt);
    let mut group = c.benchmark_group("ingest_1000");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for b in &backends {
        group.bench_function(BenchmarkId::new("new", b.name), |bencher| {
            bencher.iter_batched(
                || recent_batch(b.tenant),
                |batch| {
                    let report = rt
                        .block_on(b.metering.ingest(b.tenant, &batch))
                        .expect("ingest");
                    assert_eq!(report.accepted.len(), BATCH);
                },
                BatchSize::PerIteration,
            );
        });
        let seen = recent_batch(b.tenant);
        rt.block_on(b.metering.ingest(b.tenant, &seen))
            .expect("ingest");
        group.bench_function(BenchmarkId::new("resent", b.name), |bencher| {
            bencher.iter(|| {
                let report = rt
                    .block_on(b.metering.ingest(b.tenant, &seen))
                    .expect("ingest");
                assert_eq!(report.duplicates.len(), BATCH);
            });
        });
    }
    group.finish();
    finish(&rt, backends);
}

fn query_30_days(c: &mut Criterion) {
    let rt = runtime();
    let backends = backends(&rt);
    let today = Utc::now()
        .duration_trunc(chrono::Duration::days(1))
        .expect("today");
    let from = today - chrono::Duration::days(29);
    let to = today + chrono::Duration::days(1);
    for b in &backends {
        rt.block_on(async {
            let mut pending = Vec::with_capacity(BATCH);
            for day in 0..30_i64 {
                for i in 0..EVENTS_PER_DAY {
                    let offset = (i * 86_399 / EVENTS_PER_DAY) as i64;
                    let mut time =
                        from + chrono::Duration::days(day) + chrono::Duration::seconds(offset);
                    if time > Utc::now() {
                        time = Utc::now();
                    }
                    pending.push(event(b.tenant, i, time));
                    if pending.len() == BATCH {
                        b.metering
                            .ingest(b.tenant, &pending)
                            .await
                            .expect("prefill");
                        pending.clear();
                    }
                }
            }
        });
    }
    let mut group = c.benchmark_group("query_30_days");
    for b in &backends {
        for grouped in [false, true] {
            let query = UsageQuery {
                meter: "requests".into(),
                from,
                to,
                window: Window::Day,
                group_by: if grouped {
                    vec!["route".into()]
                } else {
                    Vec::new()
                },
                filter: Default::default(),
            };
            let rows = rt
                .block_on(b.metering.query(b.tenant, &query))
                .expect("query");
            assert_eq!(rows.len(), if grouped { 300 } else { 30 });
            let total: u64 = rows.iter().map(|r| r.events).sum();
            assert_eq!(total, 30 * EVENTS_PER_DAY as u64);
            let id = if grouped { "by_route" } else { "total" };
            group.bench_function(BenchmarkId::new(id, b.name), |bencher| {
                bencher.iter(|| {
                    black_box(
                        rt.block_on(b.metering.query(b.tenant, &query))
                            .expect("query"),
                    )
                });
            });
        }
    }
    group.finish();
    finish(&rt, backends);
}

/// Events in the `query_10m` dataset.
const EVENTS_10M: usize = 10_000_000;
/// Batches of the `query_10m` build in flight at once.
const IN_FLIGHT: usize = 2;

/// The tenant of the `query_10m` dataset (fixed, so a stored dataset is found again).
fn tenant_10m() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::from_u128(
        0x0194_1a2b_3c4d_7e5f_8a00_0000_0010_0000,
    ))
}

/// The first of the dataset's 30 days.
fn start_10m() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("start of the dataset")
}

/// Event `i` of the dataset: the 30 days hold the 10 million events evenly (one per
/// 259.2 ms), with an id that depends on `i` only.
fn event_10m(tenant: TenantId, i: usize) -> UsageEvent {
    let offset_ms = i as u64 * 2_592 / 10;
    let time = start_10m() + chrono::Duration::milliseconds(offset_ms as i64);
    let millis = time.timestamp_millis() as u64;
    let mut random = [0_u8; 10];
    random[2..].copy_from_slice(&(i as u64).to_be_bytes());
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    event_with_id(tenant, id, i, time)
}

/// Whether the command line's filter (if any) selects `group`.
fn selected(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| group.starts_with(f.as_str()) || f.starts_with(group))
}

/// `target/bench-data`, beside criterion's own output.
fn bench_data_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable");
    // target/release/deps/metering-… → target
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).expect("bench data directory");
    dir
}

fn month_query(grouped: bool) -> UsageQuery {
    UsageQuery {
        meter: "requests".into(),
        from: start_10m(),
        to: start_10m() + chrono::Duration::days(30),
        window: Window::Day,
        group_by: if grouped {
            vec!["route".into()]
        } else {
            Vec::new()
        },
        filter: Default::default(),
    }
}

/// The metering of the dataset over `store`: meters created when missing, the
/// clock at the end of the 30 days.
async fn metering_10m(name: &str, store: Arc<dyn MeteringStore>) -> Metering {
    let end = start_10m() + chrono::Duration::days(30);
    let metering = Metering::new(store)
        .with_config(MeteringConfig {
            lateness: chrono::Duration::days(31),
            ..MeteringConfig::default()
        })
        .with_clock(Arc::new(ManualClock::new(end)));
    let tenant = tenant_10m();
    let existing = metering.list_meters(tenant).await.expect(name);
    for m in meters() {
        if !existing.iter().any(|e| e.key.as_str() == m.key.as_str()) {
            metering.create_meter(tenant, m).await.expect(name);
        }
    }
    metering
}

/// Events the dataset holds, by the rollups of the count meter.
async fn stored_10m(metering: &Metering) -> usize {
    let rows = metering
        .query(tenant_10m(), &month_query(false))
        .await
        .expect("count the stored events");
    rows.iter().map(|r| r.events as usize).sum()
}

/// Ingests the part of the dataset `metering` does not hold yet, printing progress.
async fn fill_10m(name: &str, metering: &Metering) {
    let tenant = tenant_10m();
    let stored = stored_10m(metering).await;
    if stored == EVENTS_10M {
        eprintln!("query_10m/{name}: reusing the stored {EVENTS_10M} events");
        return;
    }
    // Batches complete in order but up to IN_FLIGHT at a time: resume a little
    // earlier (deduplication skips what is already stored).
    let first = (stored / BATCH).saturating_sub(IN_FLIGHT);
    let batches = EVENTS_10M / BATCH;
    eprintln!(
        "query_10m/{name}: {stored} events stored, ingesting batches {first}..{batches} \
         (this takes minutes, once)"
    );
    let started = Instant::now();
    let mut next = first;
    while next < batches {
        let calls: Vec<_> = (next..batches.min(next + IN_FLIGHT))
            .map(|b| {
                let metering = metering.clone();
                tokio::spawn(async move {
                    let batch: Vec<UsageEvent> = (b * BATCH..(b + 1) * BATCH)
                        .map(|i| event_10m(tenant, i))
                        .collect();
                    metering.ingest(tenant, &batch).await
                })
            })
            .collect();
        for call in calls {
            let report = call.await.expect("ingest task").expect("ingest");
            assert!(report.rejected.is_empty(), "{:?}", report.rejected.first());
        }
        next += IN_FLIGHT;
        if next.is_multiple_of(500) || next >= batches {
            let done = (next.min(batches) - first) * BATCH;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let left = (batches.saturating_sub(next) * BATCH) as f64 / rate;
            eprintln!(
                "query_10m/{name}: {} of {EVENTS_10M} events, {rate:.0} events/s, \
                 about {left:.0} s left",
                next.min(batches) * BATCH
            );
        }
    }
    assert_eq!(
        stored_10m(metering).await,
        EVENTS_10M,
        "{name}: dataset incomplete"
    );
}

async fn sqlite_10m() -> Metering {
    let path = bench_data_dir().join("metering-10m.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite");
    store.migrate().await.expect("identity migrations");
    migrate_sqlite(&store).await.expect("metering migrations");
    metering_10m("sqlite", Arc::new(store)).await
}

/// The PostgreSQL database of the dataset: created once as a test database whose
/// name is kept in `bench-data/metering-10m.postgres`, then reused.
async fn postgres_10m() -> Option<Metering> {
    std::env::var("TENANCY_TEST_POSTGRES_URL").ok()?;
    let name_file = bench_data_dir().join("metering-10m.postgres");
    // A fresh test database gives the server's options; it is dropped when the kept
    // one is still there.
    let mut fresh = Some(PgTestDatabase::create().await?);
    let new = fresh.as_ref().expect("test database");
    let kept = std::fs::read_to_string(&name_file)
        .ok()
        .map(|n| n.trim().to_owned());
    let mut options = (new.owner_options(), new.app_options());
    let new_name = new.name().to_owned();
    let mut owner = None;
    if let Some(name) = &kept {
        match PgStore::connect_with(options.0.clone().database(name)).await {
            Ok(store) => {
                owner = Some(store);
                options = (options.0.database(name), options.1.database(name));
                if let Some(unused) = fresh.take() {
                    unused.drop_database().await;
                }
            }
            Err(e) => eprintln!("query_10m/postgres: kept database `{name}` unusable ({e})"),
        }
    }
    let owner = match owner {
        Some(owner) => owner,
        None => {
            eprintln!("query_10m/postgres: building the dataset in `{new_name}`");
            std::fs::write(&name_file, &new_name).expect("keep the database name");
            PgStore::connect_with(options.0.clone())
                .await
                .expect("postgres")
        }
    };
    owner.migrate().await.expect("identity migrations");
    migrate_postgres(&owner).await.expect("metering migrations");
    owner
        .grant_app_role(PgTestDatabase::APP_ROLE)
        .await
        .expect("grant");
    owner.pool().close().await;
    let app = PgStore::connect_with(options.1)
        .await
        .expect("postgres app role");
    Some(metering_10m("postgres", Arc::new(app)).await)
}

fn query_10m(c: &mut Criterion) {
    if !selected("query_10m") {
        return;
    }
    let rt = runtime();
    let mut backends: Vec<(&str, Metering)> = Vec::new();
    rt.block_on(async {
        let memory = metering_10m("memory", Arc::new(MemoryMeteringStore::new())).await;
        fill_10m("memory", &memory).await;
        backends.push(("memory", memory));
        let sqlite = sqlite_10m().await;
        fill_10m("sqlite", &sqlite).await;
        backends.push(("sqlite", sqlite));
        if let Some(postgres) = postgres_10m().await {
            fill_10m("postgres", &postgres).await;
            backends.push(("postgres", postgres));
        }
    });
    let tenant = tenant_10m();
    let mut group = c.benchmark_group("query_10m");
    for (name, metering) in &backends {
        for grouped in [false, true] {
            let query = month_query(grouped);
            let rows = rt.block_on(metering.query(tenant, &query)).expect("query");
            assert_eq!(rows.len(), if grouped { 300 } else { 30 });
            let total: u64 = rows.iter().map(|r| r.events).sum();
            assert_eq!(total, EVENTS_10M as u64);
            let id = if grouped { "by_route" } else { "total" };
            group.bench_function(BenchmarkId::new(id, *name), |bencher| {
                bencher.iter(|| {
                    black_box(rt.block_on(metering.query(tenant, &query)).expect("query"))
                });
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The benchmark list (in a private module: the macro's function has no docs).
mod suite {
    use super::{config, ingest_1000, query_10m, query_30_days};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = ingest_1000, query_30_days, query_10m
    }
}
criterion_main!(suite::benches);
