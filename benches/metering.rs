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
//!
//! Run with `cargo bench --bench metering`; add `TENANCY_TEST_POSTGRES_URL=postgres://…`
//! for PostgreSQL.
#![expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails must stop loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use tenancy::TenantId;
use tenancy::core::conformance::PgTestDatabase;
use tenancy::core::postgres::PgStore;
use tenancy::core::sqlite::SqliteStore;
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
    UsageEvent {
        id: uuid::Uuid::now_v7(),
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
    let url = format!("sqlite://{}", dir.path().join("metering.db").display());
    let store = SqliteStore::connect(&url).await.expect("sqlite");
    store.migrate().await.expect("identity migrations");
    migrate_sqlite(&store).await.expect("metering migrations");
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
    let owner = PgStore::connect_with(db.owner_options())
        .await
        .expect("postgres");
    owner.migrate().await.expect("identity migrations");
    migrate_postgres(&owner).await.expect("metering migrations");
    owner
        .grant_app_role(PgTestDatabase::APP_ROLE)
        .await
        .expect("grant");
    owner.pool().close().await;
    let app = PgStore::connect_with(db.app_options())
        .await
        .expect("postgres app role");
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The benchmark list (in a private module: the macro's function has no docs).
mod suite {
    use super::{config, ingest_1000, query_30_days};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = ingest_1000, query_30_days
    }
}
criterion_main!(suite::benches);
