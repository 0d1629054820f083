//! tenancy-metering integration tests: the conformance suite on memory, SQLite and
//! PostgreSQL (when `TENANCY_TEST_POSTGRES_URL` is set), the quota suite on those and
//! on Redis (when `TENANCY_TEST_REDIS_URL` is set; with
//! `TENANCY_TEST_REQUIRE_BACKENDS=1` a missing URL fails), PostgreSQL's row-level
//! security on the metering tables, and the usage consumer on the in-process bus and
//! Kafka (when `TENANCY_TEST_KAFKA_BROKERS` is set).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "tests"
)]

use std::sync::Arc;

#[path = "metering/consumer.rs"]
mod consumer;

use sqlx::postgres::PgPoolOptions;
use tenancy_core::TenantId;
use tenancy_core::conformance::{PgTestDatabase, backend_url, sqlite_test_store};
use tenancy_metering::conformance;
use tenancy_metering::memory::MemoryMeteringStore;
use tenancy_metering::sql::{migrate_postgres, migrate_sqlite};
use tenancy_metering::{MeteringStore, QuotaCounter, RedisQuotaCounter};

struct Backend {
    store: Arc<dyn MeteringStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

impl Backend {
    fn counter(&self) -> Arc<dyn QuotaCounter> {
        self.store.clone()
    }

    async fn finish(self) {
        drop(self.store);
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

async fn memory() -> Option<Backend> {
    Some(Backend {
        store: Arc::new(MemoryMeteringStore::new()),
        _dir: None,
        pg: None,
    })
}

async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_test_store(dir.path(), "metering.db", migrate_sqlite).await;
    Some(Backend {
        store: Arc::new(store),
        _dir: Some(dir),
        pg: None,
    })
}

/// A database of its own, migrated by the admin (identity, then metering), used by a
/// role that owns nothing and cannot bypass row-level security.
async fn postgres() -> Option<Backend> {
    let db = PgTestDatabase::create().await?;
    let app = db.app_store(migrate_postgres).await;
    Some(Backend {
        store: Arc::new(app),
        _dir: None,
        pg: Some(db),
    })
}

macro_rules! metering_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! store_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(b.store.clone()).await;
                            b.finish().await;
                        }
                    };
                }

                macro_rules! quota_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(b.store.clone(), b.counter()).await;
                            b.finish().await;
                        }
                    };
                }

                store_test!(meters_crud);
                store_test!(rollups_every_aggregation);
                store_test!(dedup_forever);
                store_test!(bad_input);
                store_test!(tenant_isolation);
                store_test!(ingest_many_tenants);
                store_test!(duplicate_storm);
                store_test!(unique_bound);
                quota_test!(quota_rules);
                quota_test!(quota_race);
            }
        )+
    };
}

metering_suite!(memory, sqlite, postgres);

async fn redis_counter() -> Option<Arc<dyn QuotaCounter>> {
    let url = backend_url("TENANCY_TEST_REDIS_URL", "Redis quota counter")?;
    let prefix = format!("tenancy-test-{}", uuid::Uuid::now_v7().simple());
    Some(Arc::new(
        RedisQuotaCounter::connect(&url, &prefix).await.unwrap(),
    ))
}

/// Quota definitions in memory, counters in Redis.
mod redis {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quota_rules() {
        let Some(counter) = redis_counter().await else {
            return;
        };
        conformance::quota_rules(Arc::new(MemoryMeteringStore::new()), counter).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quota_race() {
        let Some(counter) = redis_counter().await else {
            return;
        };
        conformance::quota_race(Arc::new(MemoryMeteringStore::new()), counter).await;
    }
}

/// Row-level security on every metering table: the application role sees no row
/// without the tenant setting, only its tenant's with it, and cannot write rows of
/// another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_metering_rls() {
    let Some(b) = postgres().await else { return };
    let (a, other) = (TenantId::new(), TenantId::new());
    let (m, _) = conformance::metering(b.store.clone());
    for t in [a, other] {
        m.create_meter(
            t,
            tenancy_metering::NewMeter {
                key: "users".into(),
                event_type: "login".into(),
                aggregation: tenancy_metering::Aggregation::UniqueCount,
                value_property: Some("user".into()),
                windows: vec![tenancy_metering::Window::Day],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let e = conformance::event(
            t,
            "login",
            conformance::now(),
            serde_json::json!({ "user": "u1" }),
        );
        assert_eq!(m.ingest(t, &[e]).await.unwrap().accepted, [0]);
        m.set_quota(
            t,
            "users",
            tenancy_metering::QuotaLimit {
                period: tenancy_metering::QuotaPeriod::Day,
                limit: 5.into(),
                mode: tenancy_metering::QuotaMode::Hard,
            },
        )
        .await
        .unwrap();
        m.check_and_consume(t, "users", 1.into()).await.unwrap();
    }
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(b.pg.as_ref().unwrap().app_options())
        .await
        .unwrap();
    let tables = [
        "usage_meters",
        "usage_events",
        "usage_rollups",
        "usage_unique_values",
        "usage_quotas",
        "usage_quota_counters",
    ];
    for table in tables {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&raw)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}: no tenant setting must mean no rows");
    }
    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in tables {
        let seen: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT tenant_id FROM {table}"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(seen, vec![a.as_uuid()], "{table}");
    }
    // Writing a row of the other tenant under tenant A's setting is refused.
    let err = sqlx::query(
        "INSERT INTO usage_rollups (tenant_id, meter_key, window_size, window_start, group_key, events, value) \
         VALUES ($1, 'users', 'day', 0, '{}', 1, 1000)",
    )
    .bind(other.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    // An update without the setting touches nothing.
    let n = sqlx::query("UPDATE usage_rollups SET value = 1000000")
        .execute(&raw)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0);
    raw.close().await;
    b.finish().await;
}

/// Events and meters read from CloudEvents-shaped JSON; absent optional fields take
/// their defaults; decimals travel as strings.
#[test]
fn wire_format() {
    let tenant = TenantId::new();
    let id = uuid::Uuid::now_v7();
    let event: tenancy_metering::UsageEvent = serde_json::from_value(serde_json::json!({
        "id": id,
        "type": "llm.completion",
        "tenant_id": tenant,
        "time": "2026-03-10T12:00:00.123456Z",
        "data": { "tokens": 12 }
    }))
    .unwrap();
    assert_eq!((event.id, event.tenant_id), (id, tenant));
    assert_eq!(event.event_type, "llm.completion");
    assert_eq!((event.source.as_str(), event.subject.as_str()), ("", ""));
    let back = serde_json::to_value(&event).unwrap();
    assert_eq!(back["type"], "llm.completion");
    assert!(back.get("event_type").is_none());

    // A bus event becomes the same usage event, its id still the idempotency key.
    let bus = tenancy_core::events::Event::new(
        tenant,
        "llm.completion",
        "gateway",
        "key-1",
        serde_json::json!({ "tokens": 12 }),
    )
    .unwrap();
    let usage = tenancy_metering::UsageEvent::from(bus.clone());
    assert_eq!(usage.id, bus.id().as_uuid());
    assert_eq!(usage.tenant_id, tenant);
    assert_eq!(
        (usage.source.as_str(), usage.subject.as_str()),
        ("gateway", "key-1")
    );
    assert_eq!((usage.time, &usage.data), (bus.time(), bus.data()));

    let meter: tenancy_metering::NewMeter = serde_json::from_value(serde_json::json!({
        "key": "api_calls", "event_type": "api.request", "windows": ["hour", "day"]
    }))
    .unwrap();
    assert_eq!(meter.aggregation, tenancy_metering::Aggregation::Count);
    assert!(meter.value_property.is_none() && meter.group_by.is_empty());
    let bad: Result<tenancy_metering::NewMeter, _> = serde_json::from_value(serde_json::json!({
        "key": "k", "event_type": "e", "aggregation": "avg", "windows": ["day"]
    }));
    assert!(bad.is_err(), "no avg aggregation");

    let limit = tenancy_metering::QuotaLimit {
        period: tenancy_metering::QuotaPeriod::Month,
        limit: "12.5".parse().unwrap(),
        mode: tenancy_metering::QuotaMode::Soft,
    };
    assert_eq!(
        serde_json::to_value(&limit).unwrap(),
        serde_json::json!({ "period": "month", "limit": "12.5", "mode": "soft" })
    );
}

/// Quota periods and windows align to UTC; months roll over the year.
#[test]
fn periods_and_windows_align_to_utc() {
    use chrono::TimeZone as _;
    use tenancy_metering::{QuotaPeriod, Window};
    let t = chrono::Utc
        .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
        .unwrap();
    let (start, end) = QuotaPeriod::Month.bounds(t);
    assert_eq!(
        (start.to_rfc3339(), end.to_rfc3339()),
        (
            "2026-12-01T00:00:00+00:00".to_owned(),
            "2027-01-01T00:00:00+00:00".to_owned()
        )
    );
    let (start, end) = QuotaPeriod::Hour.bounds(t);
    assert_eq!(end - start, chrono::Duration::hours(1));
    assert_eq!(
        Window::Day.start_of(t.timestamp()),
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 31, 0, 0, 0)
            .unwrap()
            .timestamp()
    );
    assert_eq!(Window::Minute.start_of(-1), -60, "before the epoch too");
    assert!(Window::Hour.is_aligned(start));
    assert!(!Window::Hour.is_aligned(t));
}
