//! Kafka → store throughput of [`UsageConsumer`]: publishes `EVENTS` usage events
//! (default 200,000) of `TENANTS` tenants (default 100) to a fresh topic, then runs
//! the consumer over it into each store — memory, SQLite (a temporary file) and, when
//! `TENANCY_TEST_POSTGRES_URL` is set, PostgreSQL (a fresh database, as the
//! row-level-security role) — and reports events/s from the first event received to
//! the last one counted. Each store gets a topic of its own, so the figures do not
//! depend on each other.
//!
//! ```sh
//! TENANCY_TEST_KAFKA_BROKERS=127.0.0.1:9092 cargo run --release -p tenancy-metering \
//!     --features sqlite,postgres,conformance --example kafka_ingest
//! ```
//!
//! Settings (environment): `TENANCY_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`),
//! `EVENTS`, `TENANTS`, `BATCH` (the consumer's batch size, default 1,000),
//! `CONCURRENCY` (its ingest calls in flight, default 1), `PARTITIONS` (of the fresh
//! topics, default 6), `STORES` (comma-separated subset of `memory,sqlite,postgres`),
//! `BUS=in-process` (the in-process bus instead of Kafka: the consumer and the store
//! alone), `BUS_ONLY=1` (no store: receive and acknowledge only), `KAFKA_PROPS`
//! (`key=value,…` librdkafka properties for every client).
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a load program whose setup fails must stop loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use tenancy_core::TenantId;
use tenancy_core::conformance::{PgTestDatabase, sqlite_test_store};
use tenancy_core::events::kafka::{KafkaBus, KafkaConfig};
use tenancy_core::events::{Event, EventBus, InProcessBus, InProcessConfig};
use tenancy_metering::memory::MemoryMeteringStore;
use tenancy_metering::sql::{migrate_postgres, migrate_sqlite};
use tenancy_metering::{
    Aggregation, ConsumerConfig, Metering, MeteringStore, NewMeter, UsageConsumer, Window,
};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A store and what must live as long as it.
struct Store {
    name: &'static str,
    store: Arc<dyn MeteringStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

async fn sqlite() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        sqlite_test_store(dir.path(), "metering.db", async |s| migrate_sqlite(s).await).await;
    Store {
        name: "sqlite",
        store: Arc::new(store),
        _dir: Some(dir),
        pg: None,
    }
}

async fn postgres() -> Option<Store> {
    std::env::var("TENANCY_TEST_POSTGRES_URL").ok()?;
    let db = PgTestDatabase::create().await?;
    let app = db.app_store(async |s| migrate_postgres(s).await).await;
    Some(Store {
        name: "postgres",
        store: Arc::new(app),
        _dir: None,
        pg: Some(db),
    })
}

/// Two meters per tenant, as a gateway would have: requests by route (hour and day)
/// and the sum of bytes (day).
async fn meters(metering: &Metering, tenants: &[TenantId]) {
    for tenant in tenants {
        metering
            .create_meter(
                *tenant,
                NewMeter {
                    key: "requests".into(),
                    event_type: "api.request".into(),
                    aggregation: Aggregation::Count,
                    group_by: vec!["route".into()],
                    windows: vec![Window::Hour, Window::Day],
                    ..NewMeter::default()
                },
            )
            .await
            .expect("meter");
        metering
            .create_meter(
                *tenant,
                NewMeter {
                    key: "bytes".into(),
                    event_type: "api.request".into(),
                    aggregation: Aggregation::Sum,
                    value_property: Some("bytes".into()),
                    windows: vec![Window::Day],
                    ..NewMeter::default()
                },
            )
            .await
            .expect("meter");
    }
}

/// The bus alone: publishes `events` to a fresh topic, then takes them with
/// `next_batch` and acknowledges each batch at once (what the consumer does, without
/// the store).
async fn bus_only(bus: &dyn EventBus, events: &[Event], keys: &[String], batch: usize) {
    let topic = format!("tenancy-bench-usage-{}", uuid::Uuid::now_v7().simple());
    for (chunk, keys) in events.chunks(10_000).zip(keys.chunks(10_000)) {
        let pairs: Vec<(&str, &Event)> = keys.iter().map(String::as_str).zip(chunk).collect();
        bus.publish_batch(&topic, &pairs).await.expect("publish");
    }
    let group = format!("tenancy-bench-{}", uuid::Uuid::now_v7().simple());
    let mut sub = bus.subscribe(&topic, &group).await.expect("subscribe");
    let mut received = 0;
    let mut first = None;
    let mut batches = 0;
    let give_up = Instant::now() + Duration::from_secs(600);
    while received < events.len() {
        assert!(Instant::now() < give_up, "stuck after {received} events");
        let deliveries = sub
            .next_batch(batch, Duration::from_millis(100))
            .await
            .expect("receive");
        if deliveries.is_empty() {
            continue;
        }
        first.get_or_insert_with(Instant::now);
        received += deliveries.len();
        batches += 1;
        sub.ack_batch(&deliveries).await.expect("ack");
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    println!(
        "bus only: {received} events in {:.2} s = {:.0} events/s ({batches} batches)",
        took.as_secs_f64(),
        received as f64 / took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let brokers =
        std::env::var("TENANCY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let n = setting("EVENTS", 200_000);
    let tenant_count = setting("TENANTS", 100).max(1);
    let batch = setting("BATCH", 1_000);
    let concurrency = setting("CONCURRENCY", 1);
    let partitions = setting("PARTITIONS", 6);
    let wanted = std::env::var("STORES").unwrap_or_else(|_| "memory,sqlite,postgres".into());

    let in_process = std::env::var("BUS").is_ok_and(|b| b == "in-process");
    let bus: Arc<dyn EventBus> = if in_process {
        Arc::new(
            InProcessBus::with_config(InProcessConfig {
                partitions: u32::try_from(partitions).expect("partitions"),
                retention: n,
                ..InProcessConfig::default()
            })
            .expect("bus"),
        )
    } else {
        let mut config = KafkaConfig::new(brokers.clone());
        config.client_id = "tenancy-kafka-ingest".into();
        config.partitions = u32::try_from(partitions).expect("partitions");
        if let Ok(props) = std::env::var("KAFKA_PROPS") {
            for pair in props.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .expect("KAFKA_PROPS holds key=value pairs");
                config.properties.push((k.to_owned(), v.to_owned()));
            }
        }
        Arc::new(KafkaBus::connect(config).await.expect("kafka"))
    };

    let tenants: Vec<TenantId> = (0..tenant_count).map(|_| TenantId::new()).collect();
    // All in the current hour, so every store does the same rollup work.
    let time = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .expect("hour");
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::new(
                tenants[i % tenant_count],
                "api.request",
                "/gateway",
                format!("key-{}", i % 50),
                serde_json::json!({ "route": format!("/v1/r{}", i % 10), "bytes": i % 1_000 }),
            )
            .expect("event")
            .with_time(time + chrono::Duration::milliseconds((i % 3_600_000) as i64))
        })
        .collect();
    let keys: Vec<String> = events.iter().map(|e| e.tenant_id().to_string()).collect();
    println!(
        "{n} events of {tenant_count} tenants, consumer batch {batch}, concurrency {concurrency}, {partitions} partitions, bus {}",
        if in_process { "in-process" } else { &brokers }
    );

    if std::env::var("BUS_ONLY").is_ok_and(|v| v == "1") {
        bus_only(&*bus, &events, &keys, batch).await;
        return;
    }

    let mut stores: Vec<Store> = Vec::new();
    for name in wanted.split(',') {
        match name.trim() {
            "memory" => stores.push(Store {
                name: "memory",
                store: Arc::new(MemoryMeteringStore::new()),
                _dir: None,
                pg: None,
            }),
            "sqlite" => stores.push(sqlite().await),
            "postgres" => match postgres().await {
                Some(store) => stores.push(store),
                None => println!("postgres: skipped (TENANCY_TEST_POSTGRES_URL is unset)"),
            },
            other => panic!("unknown store `{other}`"),
        }
    }

    for store in stores {
        let topic = format!("tenancy-bench-usage-{}", uuid::Uuid::now_v7().simple());
        let started = Instant::now();
        for (chunk, keys) in events.chunks(10_000).zip(keys.chunks(10_000)) {
            let pairs: Vec<(&str, &Event)> = keys.iter().map(String::as_str).zip(chunk).collect();
            bus.publish_batch(&topic, &pairs).await.expect("publish");
        }
        let publish = started.elapsed();

        let metering = Metering::new(store.store.clone());
        meters(&metering, &tenants).await;
        let consumer =
            UsageConsumer::new(metering.clone(), bus.clone()).with_config(ConsumerConfig {
                topic: topic.clone(),
                group: format!("tenancy-bench-{}", uuid::Uuid::now_v7().simple()),
                batch_size: batch,
                concurrency,
                poll_timeout: Duration::from_millis(100),
                ..ConsumerConfig::default()
            });
        let stats = consumer.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(consumer.run(async move {
            let _ = stopped.await;
        }));
        // From the first event received to the last one counted.
        let give_up = Instant::now() + Duration::from_secs(600);
        while stats.received() == 0 {
            assert!(Instant::now() < give_up, "no event arrived");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let first = Instant::now();
        while stats.accepted() + stats.duplicates() + stats.rejected() < n as u64 {
            assert!(Instant::now() < give_up, "stuck: {stats:?}");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let consume = first.elapsed();
        let _ = stop.send(());
        run.await.expect("consumer task").expect("consumer");

        let day = time.duration_trunc(chrono::Duration::days(1)).expect("day");
        let mut counted = 0;
        for tenant in &tenants {
            let totals = metering
                .period_totals(*tenant, day, day + chrono::Duration::days(1))
                .await
                .expect("totals");
            counted += totals
                .iter()
                .find(|t| t.meter.as_str() == "requests")
                .map_or(0, |t| t.events);
        }
        assert_eq!(stats.accepted(), n as u64, "{stats:?}");
        assert_eq!(counted, n as u64, "every event counted once");
        println!(
            "{:<8} publish {:>8.0} events/s ({:.2} s) | consume → store {:>8.0} events/s ({:.2} s, {} batches, {:.0} events/batch)",
            store.name,
            n as f64 / publish.as_secs_f64(),
            publish.as_secs_f64(),
            n as f64 / consume.as_secs_f64(),
            consume.as_secs_f64(),
            stats.batches(),
            n as f64 / stats.batches().max(1) as f64,
        );
        drop(metering);
        drop(store.store);
        if let Some(db) = store.pg {
            db.drop_database().await;
        }
    }
}
