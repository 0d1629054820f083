//! The event bus suite (`conformance::events`) on the in-process bus always and on
//! Kafka when `TENANCY_TEST_KAFKA_BROKERS` is set; the outbox suite on every store; and
//! the SQL outboxes inside a transaction the caller holds.

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::conformance::backend_url;
use tenancy_core::conformance::events as suite;
use tenancy_core::events::kafka::{KafkaBus, KafkaConfig};
use tenancy_core::events::{EventBus, InProcessBus, OutboxStore, USAGE_EVENTS};
use tenancy_core::postgres::PgStore;
use tenancy_core::sqlite::SqliteStore;
use tenancy_core::{ErrorKind, TenantId};

use super::migrated_database;

async fn in_process() -> Option<Arc<dyn EventBus>> {
    Some(Arc::new(InProcessBus::new()))
}

/// A bus on the brokers of `TENANCY_TEST_KAFKA_BROKERS`; the suite names its topics
/// and groups `tenancy-test-…` with a fresh UUID, so runs never collide.
async fn kafka() -> Option<Arc<dyn EventBus>> {
    let brokers = backend_url("TENANCY_TEST_KAFKA_BROKERS", "Kafka")?;
    let mut config = KafkaConfig::new(brokers);
    config.client_id = "tenancy-test".into();
    config.partitions = 4;
    config.heartbeat_interval = Duration::from_millis(500);
    config.session_timeout = Duration::from_secs(6);
    Some(Arc::new(KafkaBus::connect(config).await.unwrap()))
}

macro_rules! bus_suite {
    ($($bus:ident),+) => {
        $(
            mod $bus {
                macro_rules! bus_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(bus) = super::$bus().await else { return };
                            super::suite::$name(&*bus).await;
                        }
                    };
                }

                bus_test!(bus_rejects_bad_names);
                bus_test!(bus_per_key_ordering);
                bus_test!(bus_redelivers_unacked);
                bus_test!(bus_group_members_share_partitions);
                bus_test!(bus_restart_resumes_after_last_ack);
                bus_test!(bus_independent_groups);
                bus_test!(bus_next_batch);
                bus_test!(bus_ack_batch_stops_at_unacked);
            }
        )+
    };
}

bus_suite!(in_process, kafka);

macro_rules! outbox_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn outbox_pending_and_sent() {
                    let Some(t) = super::super::$backend().await else { return };
                    super::suite::outbox_pending_and_sent(&*t.outbox).await;
                    t.finish().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn outbox_relay() {
                    let Some(t) = super::super::$backend().await else { return };
                    super::suite::outbox_relay(t.outbox.clone()).await;
                    t.finish().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn outbox_relay_crash_resends() {
                    let Some(t) = super::super::$backend().await else { return };
                    super::suite::outbox_relay_crash_resends(t.outbox.clone()).await;
                    t.finish().await;
                }
            }
        )+
    };
}

outbox_suite!(memory, sqlite, postgres);

/// Events enqueued in a transaction exist exactly when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_outbox_joins_the_callers_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let (first, second) = (
        suite::sample_event(tenant, 1),
        suite::sample_event(tenant, 2),
    );

    let mut tx = store.tenant_transaction(tenant, true).await.unwrap();
    tenancy_core::sqlite::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        store.pending(10).await.unwrap().is_empty(),
        "a rolled-back change implies no event"
    );

    let mut tx = store.tenant_transaction(tenant, true).await.unwrap();
    tenancy_core::sqlite::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap();
    tenancy_core::sqlite::enqueue(&mut tx, USAGE_EVENTS, &second)
        .await
        .unwrap();
    let err = tenancy_core::sqlite::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    tx.commit().await.unwrap();
    let pending: Vec<_> = store
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(pending, vec![first, second]);
}

/// The same on PostgreSQL, as the application role (no ownership, no BYPASSRLS) in a
/// tenant transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outbox_joins_the_callers_transaction() {
    let Some(db) = migrated_database().await else {
        return;
    };
    let store = PgStore::connect_with(db.app_options()).await.unwrap();
    let tenant = TenantId::new();
    let (first, second) = (
        suite::sample_event(tenant, 1),
        suite::sample_event(tenant, 2),
    );

    let mut tx = store.tenant_transaction(tenant, true).await.unwrap();
    tenancy_core::postgres::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        store.pending(10).await.unwrap().is_empty(),
        "a rolled-back change implies no event"
    );

    let mut tx = store.tenant_transaction(tenant, true).await.unwrap();
    tenancy_core::postgres::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap();
    tenancy_core::postgres::enqueue(&mut tx, USAGE_EVENTS, &second)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let pending: Vec<_> = store
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(pending, vec![first.clone(), second]);

    // A duplicate fails the statement; the transaction must then be rolled back.
    let mut tx = store.tenant_transaction(tenant, true).await.unwrap();
    let err = tenancy_core::postgres::enqueue(&mut tx, USAGE_EVENTS, &first)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    tx.rollback().await.unwrap();
    store.pool().close().await;
    db.drop_database().await;
}

/// Bad settings are refused before any connection is tried.
#[tokio::test]
async fn kafka_refuses_bad_settings() {
    let err = KafkaBus::connect(KafkaConfig::new(" ")).await.unwrap_err();
    assert_eq!(err.field(), Some("brokers"), "{err}");
    let mut config = KafkaConfig::new("127.0.0.1:9");
    config.partitions = 0;
    let err = KafkaBus::connect(config).await.unwrap_err();
    assert_eq!(err.field(), Some("partitions"), "{err}");
    let mut config = KafkaConfig::new("127.0.0.1:9");
    config.fetch_wait = Duration::from_secs(301);
    let err = KafkaBus::connect(config).await.unwrap_err();
    assert_eq!(err.field(), Some("fetch_wait"), "{err}");
}
