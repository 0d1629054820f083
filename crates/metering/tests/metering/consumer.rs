//! `UsageConsumer` on the in-process bus and on Kafka (when
//! `TENANCY_TEST_KAFKA_BROKERS` is set), each over SQLite and PostgreSQL (when
//! `TENANCY_TEST_POSTGRES_URL` is set): the duplicate storm over the bus, a consumer
//! killed mid-batch (after a commit, and while an ingest is in flight), rejected
//! events, and store errors.
//!
//! Every test uses a consumer group and tenants of its own; on Kafka also a topic of
//! its own (the consumer's topic is configurable), so runs never see each other's
//! events. The in-process bus is new for each test and uses `usage.events`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tenancy_core::conformance::backend_url;
use tenancy_core::events::kafka::{KafkaBus, KafkaConfig};
use tenancy_core::events::{Event, EventBus, EventBusExt, InProcessBus, USAGE_EVENTS};
use tenancy_core::{Error, Result, TenantId};
use tenancy_metering::rollup::{IngestBatch, RollupRow, UniqueValue};
use tenancy_metering::{
    Aggregation, Consumed, ConsumerConfig, ConsumerStats, Meter, MeterKey, Metering, MeteringStore,
    NewMeter, Quota, QuotaCounter, TenantDirectory, UsageConsumer, Window,
};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// How long a test waits for what it expects.
const PATIENCE: Duration = Duration::from_secs(120);

/// A bus and the topic the test's consumers read.
struct TestBus {
    bus: Arc<dyn EventBus>,
    topic: String,
}

fn unique(what: &str) -> String {
    format!("tenancy-test-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn in_process() -> Option<TestBus> {
    Some(TestBus {
        bus: Arc::new(InProcessBus::new()),
        topic: USAGE_EVENTS.to_owned(),
    })
}

async fn kafka() -> Option<TestBus> {
    let brokers = backend_url("TENANCY_TEST_KAFKA_BROKERS", "the usage consumer on Kafka")?;
    let mut config = KafkaConfig::new(brokers);
    config.client_id = "tenancy-test".into();
    config.partitions = 4;
    config.heartbeat_interval = Duration::from_millis(500);
    config.session_timeout = Duration::from_secs(6);
    Some(TestBus {
        bus: Arc::new(KafkaBus::connect(config).await.unwrap()),
        topic: unique("usage"),
    })
}

impl TestBus {
    fn config(&self, group: &str) -> ConsumerConfig {
        ConsumerConfig {
            topic: self.topic.clone(),
            group: group.to_owned(),
            batch_size: 1_000,
            poll_timeout: Duration::from_millis(200),
            max_backoff: Duration::from_millis(400),
            concurrency: 4,
        }
    }

    /// Publishes `events` one at a time, each in a record batch of its own, for tests
    /// whose group resumes in the middle of what was published: tansu (the broker of
    /// the tests) serves a fetch from an offset inside a record batch wrongly (it
    /// skips the rest of that batch), where Kafka serves the whole batch.
    async fn publish_singly(&self, events: &[Event]) {
        for event in events {
            self.bus.publish_event(&self.topic, event).await.unwrap();
        }
    }

    /// Publishes `events` under their tenant ids, in batches of 1,000.
    async fn publish(&self, events: &[Event]) {
        for chunk in events.chunks(1_000) {
            let keys: Vec<String> = chunk.iter().map(|e| e.tenant_id().to_string()).collect();
            let batch: Vec<(&str, &Event)> = keys.iter().map(String::as_str).zip(chunk).collect();
            self.bus.publish_batch(&self.topic, &batch).await.unwrap();
        }
    }
}

/// A consumer running in a task of its own.
struct Running {
    task: JoinHandle<Result<()>>,
    stop: oneshot::Sender<()>,
    stats: ConsumerStats,
}

fn start(metering: Metering, bus: &TestBus, group: &str) -> Running {
    start_with(metering, bus, bus.config(group))
}

fn start_with(metering: Metering, bus: &TestBus, config: ConsumerConfig) -> Running {
    let consumer = UsageConsumer::new(metering, bus.bus.clone()).with_config(config);
    let stats = consumer.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    Running { task, stop, stats }
}

impl Running {
    /// Shuts the consumer down and waits for it to return.
    async fn stop(self) -> ConsumerStats {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the consumer must stop")
            .unwrap()
            .unwrap();
        self.stats
    }

    /// Kills the consumer's task wherever it is (a crash: nothing more runs).
    async fn kill(self) -> ConsumerStats {
        self.task.abort();
        let err = self.task.await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        self.stats
    }
}

/// The time of the test's events: all of them share it, so they fall in one day
/// window, and it is in the past (events ahead of the clock are rejected).
fn recent() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(1)
}

/// Metering over `store` with a `calls` meter (count) and a `units` meter (sum of
/// `n`) of event type `call` for each tenant.
async fn metering(store: Arc<dyn MeteringStore>, tenants: &[TenantId]) -> Metering {
    let m = Metering::new(store);
    for tenant in tenants {
        for (key, aggregation, value) in [
            ("calls", Aggregation::Count, None),
            ("units", Aggregation::Sum, Some("n".to_owned())),
        ] {
            m.create_meter(
                *tenant,
                NewMeter {
                    key: key.into(),
                    event_type: "call".into(),
                    aggregation,
                    value_property: value,
                    windows: vec![Window::Day],
                    ..NewMeter::default()
                },
            )
            .await
            .unwrap();
        }
    }
    m
}

/// Event `i` of `tenant`: a `call` with `n = i % 7`.
fn call(tenant: TenantId, i: u64, time: DateTime<Utc>) -> Event {
    Event::new(
        tenant,
        "call",
        "/tests/consumer",
        format!("caller-{}", i % 10),
        json!({ "n": i % 7 }),
    )
    .unwrap()
    .with_time(time)
}

/// What `events` add up to per tenant: (events, sum of `n`).
fn expected(events: &[Event], tenant: TenantId) -> (u64, Decimal) {
    let mine: Vec<&Event> = events.iter().filter(|e| e.tenant_id() == tenant).collect();
    let sum = mine
        .iter()
        .map(|e| Decimal::from(e.data()["n"].as_u64().unwrap()))
        .sum();
    (mine.len() as u64, sum)
}

/// The day's totals of `tenant`: (events of `calls`, value of `units`).
async fn totals(m: &Metering, tenant: TenantId, time: DateTime<Utc>) -> (u64, Decimal) {
    let day = time.duration_trunc(chrono::Duration::days(1)).unwrap();
    let totals = m
        .period_totals(tenant, day, day + chrono::Duration::days(1))
        .await
        .unwrap();
    let calls = totals.iter().find(|t| t.meter.as_str() == "calls").unwrap();
    let units = totals.iter().find(|t| t.meter.as_str() == "units").unwrap();
    (calls.events, units.value.unwrap_or_default())
}

/// Waits until every tenant's totals reach what `events` add up to, then checks
/// they are exactly that.
async fn wait_for_totals(
    m: &Metering,
    tenants: &[TenantId],
    events: &[Event],
    time: DateTime<Utc>,
) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    for tenant in tenants {
        let want = expected(events, *tenant);
        loop {
            let got = totals(m, *tenant, time).await;
            if got.0 >= want.0 {
                assert_eq!(got, want, "tenant {tenant}: each event counted once");
                break;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "tenant {tenant}: {got:?} of {want:?} after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same 10,000 events (10 tenants) published three times by three concurrent
/// tasks: each counted once, and the consumer reports 10,000 accepted.
async fn duplicate_storm_over_the_bus(bus: TestBus, store: Arc<dyn MeteringStore>) {
    let tenants: Vec<TenantId> = (0..10).map(|_| TenantId::new()).collect();
    let m = metering(store, &tenants).await;
    let time = recent();
    let events: Vec<Event> = (0..10_000_u64)
        .map(|i| call(tenants[usize::try_from(i % 10).unwrap()], i, time))
        .collect();
    let running = start(m.clone(), &bus, &unique("storm"));

    let bus = Arc::new(bus);
    let copies: Vec<JoinHandle<()>> = (0..3)
        .map(|copy| {
            let bus = bus.clone();
            let mut events = events.clone();
            // Each copy goes in another order (per tenant the order stays).
            events.rotate_left(copy * 3_333);
            tokio::spawn(async move { bus.publish(&events).await })
        })
        .collect();
    for copy in copies {
        copy.await.unwrap();
    }
    let stats = running.stats.clone();
    wait_until("30,000 deliveries", || {
        stats.accepted() + stats.duplicates() + stats.rejected() >= 30_000
    })
    .await;
    let stats = running.stop().await;
    wait_for_totals(&m, &tenants, &events, time).await;
    assert_eq!(stats.accepted(), 10_000, "{stats:?}");
    assert_eq!(stats.rejected(), 0, "{stats:?}");
    assert!(stats.duplicates() >= 20_000, "{stats:?}");
    assert!(stats.batches() >= 30, "at most 1,000 a batch: {stats:?}");
}

/// A store that misbehaves on cue: fails ingests, hangs after a committed one, or
/// tells when an ingest starts.
struct FaultyStore {
    inner: Arc<dyn MeteringStore>,
    calls: AtomicUsize,
    /// The ingest call (from 0) that commits and then never returns.
    hang_after_commit: Option<usize>,
    /// The ingest call (from 0) that signals `reached` as it starts.
    signal_in_flight: Option<usize>,
    /// Every ingest fails while set.
    down: AtomicBool,
    /// The next this many ingests fail.
    fail_next: AtomicUsize,
    reached: Notify,
    /// Events the hung call stored as new.
    hung_new: AtomicUsize,
}

impl FaultyStore {
    fn new(inner: Arc<dyn MeteringStore>) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            hang_after_commit: None,
            signal_in_flight: None,
            down: AtomicBool::new(false),
            fail_next: AtomicUsize::new(0),
            reached: Notify::new(),
            hung_new: AtomicUsize::new(0),
        }
    }

    /// One store write (`ingest` or `ingest_many`, counted alike) through the faults:
    /// down or failing before `write`, signalling while it runs, hanging forever after
    /// it committed.
    async fn through(
        &self,
        write: impl Future<Output = Result<Vec<Vec<bool>>>>,
    ) -> Result<Vec<Vec<bool>>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail_now = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if self.down.load(Ordering::SeqCst) || fail_now {
            return Err(Error::Unavailable("the test store is down".into()));
        }
        if self.signal_in_flight == Some(call) {
            self.reached.notify_one();
        }
        let result = write.await;
        if self.hang_after_commit == Some(call) {
            let new = result
                .as_ref()
                .map_or(0, |r| r.iter().flatten().filter(|n| **n).count());
            self.hung_new.store(new, Ordering::SeqCst);
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }

    async fn reached(&self) {
        tokio::time::timeout(PATIENCE, self.reached.notified())
            .await
            .expect("the ingest call to crash on never came");
    }
}

#[async_trait]
impl QuotaCounter for FaultyStore {
    async fn consume(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        period_start: i64,
        period_end: i64,
        amount: i64,
        ceiling: i64,
    ) -> Result<Consumed> {
        self.inner
            .consume(tenant, meter, period_start, period_end, amount, ceiling)
            .await
    }

    async fn used(&self, tenant: TenantId, meter: &MeterKey, period_start: i64) -> Result<i64> {
        self.inner.used(tenant, meter, period_start).await
    }
}

#[async_trait]
impl MeteringStore for FaultyStore {
    async fn insert_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()> {
        self.inner.insert_meter(tenant, meter).await
    }

    async fn meter(&self, tenant: TenantId, key: &MeterKey) -> Result<Meter> {
        self.inner.meter(tenant, key).await
    }

    async fn list_meters(&self, tenant: TenantId) -> Result<Vec<Meter>> {
        self.inner.list_meters(tenant).await
    }

    async fn update_meter(&self, tenant: TenantId, meter: &Meter) -> Result<()> {
        self.inner.update_meter(tenant, meter).await
    }

    async fn delete_meter(&self, tenant: TenantId, key: &MeterKey, version: i64) -> Result<()> {
        self.inner.delete_meter(tenant, key, version).await
    }

    async fn ingest(&self, tenant: TenantId, batch: &IngestBatch<'_>) -> Result<Vec<bool>> {
        let mut out = self
            .through(async { Ok(vec![self.inner.ingest(tenant, batch).await?]) })
            .await?;
        Ok(out.pop().unwrap_or_default())
    }

    async fn ingest_many(
        &self,
        batches: &[(TenantId, &IngestBatch<'_>)],
    ) -> Result<Vec<Vec<bool>>> {
        self.through(self.inner.ingest_many(batches)).await
    }

    async fn rollups(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupRow>> {
        self.inner.rollups(tenant, meter, window, from, to).await
    }

    async fn unique_values(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<UniqueValue>> {
        self.inner
            .unique_values(tenant, meter, window, from, to)
            .await
    }

    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()> {
        self.inner.set_quota(tenant, quota).await
    }

    async fn quota(&self, tenant: TenantId, key: &MeterKey) -> Result<Option<Quota>> {
        self.inner.quota(tenant, key).await
    }

    async fn delete_quota(&self, tenant: TenantId, key: &MeterKey) -> Result<bool> {
        self.inner.delete_quota(tenant, key).await
    }
}

/// 3,000 events of 5 tenants: enough for several batches and many ingest calls.
fn crash_events(tenants: &[TenantId], time: DateTime<Utc>) -> Vec<Event> {
    (0..3_000_u64)
        .map(|i| call(tenants[usize::try_from(i % 5).unwrap()], i, time))
        .collect()
}

/// The consumer dies right after the store committed an ingest call of a batch and
/// before the batch is acknowledged; a new consumer of the group gets the batch
/// again, finds its committed events to be duplicates, and every event counts once.
async fn crash_after_commit(bus: TestBus, store: Arc<dyn MeteringStore>) {
    let tenants: Vec<TenantId> = (0..5).map(|_| TenantId::new()).collect();
    let time = recent();
    let events = crash_events(&tenants, time);
    let mut faulty = FaultyStore::new(store.clone());
    faulty.hang_after_commit = Some(1);
    let faulty = Arc::new(faulty);
    let crashing = metering(faulty.clone(), &tenants).await;
    let group = unique("crash-commit");
    bus.publish_singly(&events).await;

    // One call at a time, so that the hung call is the only one whose outcome the
    // first consumer's stats miss.
    let config = ConsumerConfig {
        concurrency: 1,
        ..bus.config(&group)
    };
    let first = start_with(crashing, &bus, config);
    faulty.reached().await;
    let first = first.kill().await;
    let hung = faulty.hung_new.load(Ordering::SeqCst) as u64;

    let m = Metering::new(store);
    let second = start(m.clone(), &bus, &group);
    wait_for_totals(&m, &tenants, &events, time).await;
    let second = second.stop().await;
    assert!(
        second.duplicates() >= hung,
        "the committed, unacknowledged events must come again: {second:?}"
    );
    assert_eq!(
        first.accepted() + hung + second.accepted(),
        events.len() as u64,
        "each event accepted once, by one of the consumers: {first:?} / {second:?}"
    );
    wait_for_totals(&m, &tenants, &events, time).await;
}

/// The consumer's task is aborted while an ingest call is in flight (it commits or
/// not); a new consumer of the group finishes the work and every event counts once.
async fn crash_in_flight(bus: TestBus, store: Arc<dyn MeteringStore>) {
    let tenants: Vec<TenantId> = (0..5).map(|_| TenantId::new()).collect();
    let time = recent();
    let events = crash_events(&tenants, time);
    let mut faulty = FaultyStore::new(store.clone());
    faulty.signal_in_flight = Some(2);
    let faulty = Arc::new(faulty);
    let crashing = metering(faulty.clone(), &tenants).await;
    let group = unique("crash-in-flight");
    bus.publish_singly(&events).await;

    let first = start(crashing, &bus, &group);
    faulty.reached().await;
    let first = first.kill().await;

    let m = Metering::new(store);
    let second = start(m.clone(), &bus, &group);
    wait_for_totals(&m, &tenants, &events, time).await;
    let second = second.stop().await;
    assert!(
        first.accepted() + second.accepted() <= events.len() as u64,
        "{first:?} / {second:?}"
    );
    assert!(second.received() > 0, "{second:?}");
    wait_for_totals(&m, &tenants, &events, time).await;
}

/// Knows only the tenants it was given.
struct Directory(HashSet<TenantId>);

#[async_trait]
impl TenantDirectory for Directory {
    async fn is_known(&self, tenant: TenantId) -> Result<bool> {
        Ok(self.0.contains(&tenant))
    }
}

/// Invalid events and events of an unknown tenant are logged, counted as rejected
/// and acknowledged: the valid events behind them are counted, and the group's next
/// consumer never sees them again.
async fn rejected_events_are_acknowledged(bus: TestBus, store: Arc<dyn MeteringStore>) {
    let (good, unknown) = (TenantId::new(), TenantId::new());
    let m = metering(store, &[good])
        .await
        .with_tenants(Arc::new(Directory(HashSet::from([good]))));
    let time = recent();
    let mut events: Vec<Event> = (0..100_u64).map(|i| call(unknown, i, time)).collect();
    events.extend((0..100_u64).map(|i| {
        Event::new(
            good,
            "call",
            "/tests",
            "bad",
            json!({ "n": format!("not {i}") }),
        )
        .unwrap()
        .with_time(time)
    }));
    let valid: Vec<Event> = (0..300_u64).map(|i| call(good, i, time)).collect();
    events.extend(valid.iter().cloned());
    let group = unique("rejected");
    bus.publish(&events).await;

    let first = start(m.clone(), &bus, &group);
    wait_for_totals(&m, &[good], &valid, time).await;
    let stats = first.stats.clone();
    wait_until("200 rejections", || stats.rejected() >= 200).await;
    let first = first.stop().await;
    assert_eq!(
        (first.accepted(), first.rejected()),
        (300, 200),
        "{first:?}"
    );

    let second = start(m.clone(), &bus, &group);
    let last = call(good, 300, time);
    bus.publish(std::slice::from_ref(&last)).await;
    let mut all = valid;
    all.push(last);
    wait_for_totals(&m, &[good], &all, time).await;
    let second = second.stop().await;
    assert_eq!(
        (second.received(), second.accepted(), second.rejected()),
        (1, 1, 0),
        "only the new event may come: {second:?}"
    );
}

/// While the store fails, nothing is acknowledged: a consumer that stops then leaves
/// the batch to the group, the next one gets it again, retries through more
/// failures, and every event counts once.
async fn store_errors_redeliver(bus: TestBus, store: Arc<dyn MeteringStore>) {
    let tenants: Vec<TenantId> = (0..2).map(|_| TenantId::new()).collect();
    let time = recent();
    let events: Vec<Event> = (0..1_000_u64)
        .map(|i| call(tenants[usize::try_from(i % 2).unwrap()], i, time))
        .collect();
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    faulty.down.store(true, Ordering::SeqCst);
    let m = metering(faulty.clone(), &tenants).await;
    let group = unique("store-down");
    bus.publish(&events).await;

    let first = start(m.clone(), &bus, &group);
    let stats = first.stats.clone();
    wait_until("three failed attempts", || stats.errors() >= 3).await;
    let first = first.stop().await;
    assert_eq!((first.accepted(), first.batches()), (0, 0), "{first:?}");
    for tenant in &tenants {
        assert_eq!(totals(&m, *tenant, time).await.0, 0, "nothing was stored");
    }

    faulty.down.store(false, Ordering::SeqCst);
    faulty.fail_next.store(2, Ordering::SeqCst);
    let second = start(m.clone(), &bus, &group);
    wait_for_totals(&m, &tenants, &events, time).await;
    let second = second.stop().await;
    assert_eq!(second.accepted(), 1_000, "{second:?}");
    assert!(second.errors() >= 2, "{second:?}");
    assert!(second.received() >= 1_000, "redelivered: {second:?}");
}

/// A batch size or concurrency of 0 is refused before subscribing.
#[tokio::test]
async fn zero_batch_size_or_concurrency_is_refused() {
    let bus = in_process().await.unwrap();
    let m = Metering::new(Arc::new(
        tenancy_metering::memory::MemoryMeteringStore::new(),
    ));
    let config = ConsumerConfig {
        batch_size: 0,
        ..ConsumerConfig::default()
    };
    let err = UsageConsumer::new(m, bus.bus)
        .with_config(config)
        .run(async {})
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("batch_size"), "{err}");
    let config = ConsumerConfig {
        concurrency: 0,
        ..ConsumerConfig::default()
    };
    let m = Metering::new(Arc::new(
        tenancy_metering::memory::MemoryMeteringStore::new(),
    ));
    let err = UsageConsumer::new(m, in_process().await.unwrap().bus)
        .with_config(config)
        .run(async {})
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("concurrency"), "{err}");
    let defaults = ConsumerConfig::default();
    assert_eq!(
        (
            defaults.topic.as_str(),
            defaults.group.as_str(),
            defaults.batch_size
        ),
        (USAGE_EVENTS, "tenancy-usage", 1_000)
    );
}

macro_rules! consumer_suite {
    ($($name:ident: $bus:ident on $store:ident;)+) => {
        $(
            mod $name {
                macro_rules! consumer_test {
                    ($test:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $test() {
                            let Some(bus) = super::$bus().await else { return };
                            let Some(b) = super::super::$store().await else { return };
                            super::$test(bus, b.store.clone()).await;
                            b.finish().await;
                        }
                    };
                }

                consumer_test!(duplicate_storm_over_the_bus);
                consumer_test!(crash_after_commit);
                consumer_test!(crash_in_flight);
                consumer_test!(rejected_events_are_acknowledged);
                consumer_test!(store_errors_redeliver);
            }
        )+
    };
}

consumer_suite! {
    in_process_sqlite: in_process on sqlite;
    in_process_postgres: in_process on postgres;
    kafka_sqlite: kafka on sqlite;
    kafka_postgres: kafka on postgres;
}
