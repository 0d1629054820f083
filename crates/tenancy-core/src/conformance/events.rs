//! The event bus and outbox conformance suites (feature `conformance`): plain async
//! functions over [`EventBus`] and [`OutboxStore`] that every implementation runs, the
//! in-process and Kafka buses and the memory, SQLite and PostgreSQL outboxes here.
//!
//! The bus functions may share one bus (each uses topics and groups of its own, named
//! `tenancy-test-…`); they wait up to a minute for what they expect, so a broker that
//! takes its time to rebalance passes, and they never wait for something not to
//! happen: they publish a sentinel event and check what comes before it. The outbox
//! functions expect an empty outbox.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{assert_kind, now};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{
    BILLING_EVENTS, Delivery, Event, EventBus, EventBusExt, InProcessBus, OutboxEntry, OutboxStore,
    Relay, Subscription, USAGE_EVENTS,
};
use crate::ids::{EventId, TenantId};

/// How long a function waits for an event it expects.
const PATIENCE: Duration = Duration::from_secs(60);
/// One wait of a polling loop.
const POLL: Duration = Duration::from_millis(200);

/// A topic or group name of its own for one test.
fn unique_name(what: &str) -> String {
    format!("tenancy-test-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A valid event of `tenant` whose data is `{"n": n}`.
#[must_use]
pub fn sample_event(tenant: TenantId, n: u64) -> Event {
    Event::new(
        tenant,
        "tenancy.test.happened",
        "/tenancy/conformance",
        format!("thing-{n}"),
        json!({ "n": n }),
    )
    .unwrap()
}

fn key(tenant: TenantId) -> String {
    tenant.to_string()
}

/// The next delivery, waiting up to [`PATIENCE`].
async fn next(sub: &mut dyn Subscription) -> Delivery {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < give_up {
        if let Some(delivery) = sub.next(POLL).await.unwrap() {
            return delivery;
        }
    }
    panic!("no event arrived within {PATIENCE:?}");
}

/// Deliveries up to and including the one of `sentinel`, acknowledging each.
async fn until(sub: &mut dyn Subscription, sentinel: EventId) -> Vec<Delivery> {
    let mut seen = Vec::new();
    loop {
        let delivery = next(sub).await;
        sub.ack(&delivery).await.unwrap();
        let done = delivery.event().id() == sentinel;
        seen.push(delivery);
        if done {
            return seen;
        }
        assert!(seen.len() < 10_000, "the sentinel never arrived");
    }
}

/// Invalid topic and group names are `InvalidInput` naming the field.
pub async fn bus_rejects_bad_names(bus: &dyn EventBus) {
    let event = sample_event(TenantId::new(), 0);
    let err = bus.publish("no spaces", "k", &event).await.unwrap_err();
    assert_eq!(err.field(), Some("topic"), "{err}");
    let err = bus.publish_batch("", &[("k", &event)]).await.unwrap_err();
    assert_eq!(err.field(), Some("topic"), "{err}");
    let err = bus.subscribe("a/b", "g").await.unwrap_err();
    assert_eq!(err.field(), Some("topic"), "{err}");
    let err = bus.subscribe(&unique_name("names"), "").await.unwrap_err();
    assert_eq!(err.field(), Some("group"), "{err}");
}

/// Events of one key arrive in the order they were published (single publishes and
/// batches alike), intact, each once, with their key and topic.
pub async fn bus_per_key_ordering(bus: &dyn EventBus) {
    let topic = unique_name("order");
    let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::new()).collect();
    let mut published: HashMap<TenantId, Vec<Event>> = HashMap::new();
    for n in 0..5 {
        for tenant in &tenants {
            let event = sample_event(*tenant, n);
            bus.publish_event(&topic, &event).await.unwrap();
            published.entry(*tenant).or_default().push(event);
        }
    }
    let mut batch_events = Vec::new();
    for n in 5..10 {
        for tenant in &tenants {
            batch_events.push(sample_event(*tenant, n));
        }
    }
    let keys: Vec<String> = batch_events.iter().map(|e| key(e.tenant_id())).collect();
    let batch: Vec<(&str, &Event)> = keys.iter().map(String::as_str).zip(&batch_events).collect();
    bus.publish_batch(&topic, &batch).await.unwrap();
    for event in &batch_events {
        published
            .entry(event.tenant_id())
            .or_default()
            .push(event.clone());
    }

    let mut sub = bus.subscribe(&topic, &unique_name("order")).await.unwrap();
    let mut received: HashMap<TenantId, Vec<Event>> = HashMap::new();
    for _ in 0..40 {
        let delivery = next(&mut *sub).await;
        assert_eq!(delivery.topic(), topic);
        assert_eq!(delivery.key(), key(delivery.event().tenant_id()));
        sub.ack(&delivery).await.unwrap();
        received
            .entry(delivery.event().tenant_id())
            .or_default()
            .push(delivery.into_event());
    }
    assert_eq!(
        received, published,
        "per key, events must arrive in publication order, each once"
    );
}

/// What a member does not acknowledge is delivered again after it leaves, before
/// anything newer; what it acknowledged is not, and a group whose every delivery is
/// acknowledged gets nothing again.
pub async fn bus_redelivers_unacked(bus: &dyn EventBus) {
    let topic = unique_name("redeliver");
    let group = unique_name("redeliver");
    let tenant = TenantId::new();
    let events: Vec<Event> = (0..3).map(|n| sample_event(tenant, n)).collect();
    for event in &events {
        bus.publish_event(&topic, event).await.unwrap();
    }
    let [first, second, third] = [&events[0], &events[1], &events[2]];

    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut *sub).await);
    }
    let ids: Vec<EventId> = got.iter().map(|d| d.event().id()).collect();
    assert_eq!(ids, vec![first.id(), second.id(), third.id()]);
    // Acknowledge the first and the third, not the second.
    sub.ack(&got[0]).await.unwrap();
    sub.ack(&got[2]).await.unwrap();
    sub.ack(&got[0]).await.unwrap(); // twice: no effect
    drop(sub);

    let sentinel = sample_event(tenant, 99);
    bus.publish_event(&topic, &sentinel).await.unwrap();
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let seen = until(&mut *sub, sentinel.id()).await;
    let ids: Vec<EventId> = seen.iter().map(|d| d.event().id()).collect();
    assert_eq!(
        ids.first(),
        Some(&second.id()),
        "the unacknowledged event must come first: {ids:?}"
    );
    assert!(
        !ids.contains(&first.id()),
        "an acknowledged event before every unacknowledged one must not come again"
    );
    // The third may come again (it follows the unacknowledged second), at most once,
    // and before the sentinel.
    assert!(ids.iter().filter(|id| **id == third.id()).count() <= 1);
    assert_eq!(ids.last(), Some(&sentinel.id()));
    drop(sub);

    let sentinel = sample_event(tenant, 100);
    bus.publish_event(&topic, &sentinel).await.unwrap();
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let seen = until(&mut *sub, sentinel.id()).await;
    assert_eq!(seen.len(), 1, "everything before was acknowledged");
}

/// Two members of one group split the partitions: each event goes to exactly one of
/// them, a key's events all to the same one, and each receives only from its own
/// partitions.
pub async fn bus_group_members_share_partitions(bus: &dyn EventBus) {
    let topic = unique_name("share");
    let group = unique_name("share");
    let mut a = bus.subscribe(&topic, &group).await.unwrap();
    let mut b = bus.subscribe(&topic, &group).await.unwrap();

    // Wait for the group to settle: both assigned, nothing shared.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let (parts_a, parts_b) = loop {
        assert!(
            a.next(POLL).await.unwrap().is_none(),
            "nothing was published yet"
        );
        assert!(
            b.next(POLL).await.unwrap().is_none(),
            "nothing was published yet"
        );
        let (pa, pb) = (a.assignment().unwrap(), b.assignment().unwrap());
        if !pa.is_empty() && !pb.is_empty() && pa.iter().all(|p| !pb.contains(p)) {
            break (pa, pb);
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the group did not settle: {pa:?} / {pb:?}"
        );
    };

    let tenants: Vec<TenantId> = (0..20).map(|_| TenantId::new()).collect();
    let mut expected = HashSet::new();
    for n in 0..2 {
        for tenant in &tenants {
            let event = sample_event(*tenant, n);
            expected.insert(event.id());
            bus.publish_event(&topic, &event).await.unwrap();
        }
    }

    let mut by_member: [Vec<Delivery>; 2] = [Vec::new(), Vec::new()];
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while by_member[0].len() + by_member[1].len() < expected.len() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {} of {} events arrived",
            by_member[0].len() + by_member[1].len(),
            expected.len()
        );
        for (member, sub) in [&mut a, &mut b].into_iter().enumerate() {
            if let Some(delivery) = sub.next(POLL).await.unwrap() {
                sub.ack(&delivery).await.unwrap();
                by_member[member].push(delivery);
            }
        }
    }
    let all: Vec<EventId> = by_member.iter().flatten().map(|d| d.event().id()).collect();
    let unique: HashSet<EventId> = all.iter().copied().collect();
    assert_eq!(unique, expected);
    assert_eq!(
        all.len(),
        expected.len(),
        "each event goes to one member, once"
    );
    assert!(
        by_member.iter().all(|d| !d.is_empty()),
        "both members must get work"
    );
    for (deliveries, parts) in by_member.iter().zip([&parts_a, &parts_b]) {
        for d in deliveries {
            assert!(
                parts.contains(&d.partition()),
                "delivered from a partition not assigned"
            );
        }
    }
    let keys_a: HashSet<&str> = by_member[0].iter().map(Delivery::key).collect();
    assert!(
        by_member[1].iter().all(|d| !keys_a.contains(d.key())),
        "a key's events must all go to one member"
    );
}

/// After a member acknowledged everything and left, the group's next member starts
/// with the first event published after, in order.
pub async fn bus_restart_resumes_after_last_ack(bus: &dyn EventBus) {
    let topic = unique_name("resume");
    let group = unique_name("resume");
    let tenant = TenantId::new();
    for n in 0..3 {
        bus.publish_event(&topic, &sample_event(tenant, n))
            .await
            .unwrap();
    }
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    for n in 0..3 {
        let delivery = next(&mut *sub).await;
        assert_eq!(delivery.event().data(), &json!({ "n": n }));
        sub.ack(&delivery).await.unwrap();
    }
    drop(sub);

    let later: Vec<Event> = (3..5).map(|n| sample_event(tenant, n)).collect();
    for event in &later {
        bus.publish_event(&topic, event).await.unwrap();
    }
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    for event in &later {
        let delivery = next(&mut *sub).await;
        assert_eq!(
            delivery.event(),
            event,
            "the group must resume after its last ack"
        );
        sub.ack(&delivery).await.unwrap();
    }
}

/// Independent groups each see every event, whether they subscribed before or after
/// it was published.
pub async fn bus_independent_groups(bus: &dyn EventBus) {
    let topic = unique_name("groups");
    let mut early = bus.subscribe(&topic, &unique_name("early")).await.unwrap();
    let tenants = [TenantId::new(), TenantId::new()];
    let mut expected = HashSet::new();
    for n in 0..5 {
        for tenant in tenants {
            let event = sample_event(tenant, n);
            expected.insert(event.id());
            bus.publish_event(&topic, &event).await.unwrap();
        }
    }
    let mut late = bus.subscribe(&topic, &unique_name("late")).await.unwrap();
    for sub in [&mut early, &mut late] {
        let mut seen = HashSet::new();
        while seen.len() < expected.len() {
            let delivery = next(&mut **sub).await;
            sub.ack(&delivery).await.unwrap();
            seen.insert(delivery.event().id());
        }
        assert_eq!(seen, expected);
    }
}

/// Deliveries taken with `next_batch` and acknowledged with `ack_batch` until every
/// event of `sentinels` has come, in arrival order.
async fn until_all_batched(sub: &mut dyn Subscription, sentinels: &[EventId]) -> Vec<Delivery> {
    let mut seen = Vec::new();
    let mut missing: HashSet<EventId> = sentinels.iter().copied().collect();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !missing.is_empty() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the sentinels never arrived"
        );
        let batch = sub.next_batch(16, POLL).await.unwrap();
        sub.ack_batch(&batch).await.unwrap();
        for delivery in batch {
            missing.remove(&delivery.event().id());
            seen.push(delivery);
        }
        assert!(seen.len() < 10_000, "the sentinels never arrived");
    }
    seen
}

/// `next_batch` refuses a `max` of 0, returns at most `max` deliveries, several when
/// several are waiting, and with `ack_batch` gets every event once, in order per key.
pub async fn bus_next_batch(bus: &dyn EventBus) {
    let topic = unique_name("batch");
    let mut sub = bus.subscribe(&topic, &unique_name("batch")).await.unwrap();
    let err = sub.next_batch(0, POLL).await.unwrap_err();
    assert_eq!(err.field(), Some("max"), "{err}");

    let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::new()).collect();
    let events: Vec<Event> = (0..10)
        .flat_map(|n| tenants.iter().map(move |t| sample_event(*t, n)))
        .collect();
    let keys: Vec<String> = events.iter().map(|e| key(e.tenant_id())).collect();
    let batch: Vec<(&str, &Event)> = keys.iter().map(String::as_str).zip(&events).collect();
    bus.publish_batch(&topic, &batch).await.unwrap();
    let mut published: HashMap<TenantId, Vec<Event>> = HashMap::new();
    for event in &events {
        published
            .entry(event.tenant_id())
            .or_default()
            .push(event.clone());
    }

    let mut received: HashMap<TenantId, Vec<Event>> = HashMap::new();
    let (mut count, mut largest) = (0, 0);
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while count < events.len() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {count} of {} events arrived",
            events.len()
        );
        let batch = sub.next_batch(7, POLL).await.unwrap();
        assert!(
            batch.len() <= 7,
            "a batch of {} for a max of 7",
            batch.len()
        );
        largest = largest.max(batch.len());
        sub.ack_batch(&batch).await.unwrap();
        for delivery in batch {
            assert_eq!(delivery.topic(), topic);
            count += 1;
            received
                .entry(delivery.event().tenant_id())
                .or_default()
                .push(delivery.into_event());
        }
    }
    assert_eq!(
        received, published,
        "per key, events must arrive in publication order, each once"
    );
    assert!(
        largest > 1,
        "events waiting must come together, not one per call"
    );
}

/// `ack_batch` acknowledges a whole list, whatever its order, but the group's
/// position never passes a delivery left out of it: after a restart that delivery
/// comes first, and only it and what follows it in its partition come again.
pub async fn bus_ack_batch_stops_at_unacked(bus: &dyn EventBus) {
    let topic = unique_name("ack-batch");
    let group = unique_name("ack-batch");
    let (a, b) = (TenantId::new(), TenantId::new());
    let events: Vec<Event> = (0..5)
        .flat_map(|n| [sample_event(a, n), sample_event(b, n)])
        .collect();
    // One by one: the group resumes in the middle of what was published, and tansu
    // (the broker of the tests) serves a fetch from an offset inside a record batch
    // wrongly (it skips the rest of that batch), where Kafka serves the whole batch.
    for event in &events {
        bus.publish_event(&topic, event).await.unwrap();
    }

    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let mut got = Vec::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while got.len() < events.len() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {} of {} events arrived",
            got.len(),
            events.len()
        );
        got.extend(sub.next_batch(4, POLL).await.unwrap());
    }
    assert_eq!(got.len(), events.len(), "each event once");
    // Leave out tenant a's third event.
    let held_id = events[4].id();
    let (held, mut rest): (Vec<Delivery>, Vec<Delivery>) =
        got.into_iter().partition(|d| d.event().id() == held_id);
    let held = held.into_iter().next().unwrap();

    let mut with_foreign = rest.clone();
    with_foreign.push(Delivery::new(
        unique_name("elsewhere"),
        key(a),
        0,
        0,
        sample_event(a, 9),
    ));
    let err = sub.ack_batch(&with_foreign).await.unwrap_err();
    assert_eq!(err.field(), Some("delivery"), "{err}");
    rest.reverse();
    sub.ack_batch(&rest).await.unwrap();
    sub.ack_batch(&rest).await.unwrap(); // twice: no effect
    sub.ack_batch(&[]).await.unwrap();
    drop(sub);

    let sentinels = [sample_event(a, 99), sample_event(b, 99)];
    for event in &sentinels {
        bus.publish_event(&topic, event).await.unwrap();
    }
    let sentinel_ids: Vec<EventId> = sentinels.iter().map(Event::id).collect();
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let seen = until_all_batched(&mut *sub, &sentinel_ids).await;
    let first_of_a = seen.iter().find(|d| d.event().tenant_id() == a);
    assert_eq!(
        first_of_a.map(|d| d.event().id()),
        Some(held_id),
        "the delivery left out must come first"
    );
    for d in seen
        .iter()
        .filter(|d| !sentinel_ids.contains(&d.event().id()))
    {
        assert!(
            d.partition() == held.partition() && d.offset() >= held.offset(),
            "an acknowledged event before every unacknowledged one came again: {:?}",
            d.event().data()
        );
    }
    drop(sub);

    // Everything is acknowledged now: only newer events come.
    let sentinels = [sample_event(a, 100), sample_event(b, 100)];
    for event in &sentinels {
        bus.publish_event(&topic, event).await.unwrap();
    }
    let sentinel_ids: Vec<EventId> = sentinels.iter().map(Event::id).collect();
    let mut sub = bus.subscribe(&topic, &group).await.unwrap();
    let seen = until_all_batched(&mut *sub, &sentinel_ids).await;
    assert_eq!(seen.len(), 2, "everything before was acknowledged");
}

/// The outbox keeps enqueued events in order until they are marked sent, refuses a
/// second row for one event id, and purges sent rows.
pub async fn outbox_pending_and_sent(store: &dyn OutboxStore) {
    let tenant = TenantId::new();
    let events: Vec<Event> = (0..5).map(|n| sample_event(tenant, n)).collect();
    let topics = [
        USAGE_EVENTS,
        BILLING_EVENTS,
        USAGE_EVENTS,
        USAGE_EVENTS,
        BILLING_EVENTS,
    ];
    for (topic, event) in topics.iter().zip(&events) {
        store.enqueue(topic, event).await.unwrap();
    }
    let expected: Vec<OutboxEntry> = topics
        .iter()
        .zip(&events)
        .map(|(topic, event)| OutboxEntry {
            topic: (*topic).to_owned(),
            event: event.clone(),
        })
        .collect();
    assert_eq!(store.pending(10).await.unwrap(), expected);
    assert_eq!(store.pending(2).await.unwrap(), expected[..2]);
    assert_kind(
        store.enqueue(USAGE_EVENTS, &events[0]).await,
        ErrorKind::AlreadyExists,
    );
    let err = store
        .enqueue("not a topic", &sample_event(tenant, 9))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("topic"));
    assert_eq!(store.pending(0).await.unwrap_err().field(), Some("limit"));
    assert_eq!(
        store.pending(10).await.unwrap().len(),
        5,
        "refused writes change nothing"
    );

    let sent_at = now();
    let marked = store
        .mark_sent(&[events[0].id(), events[2].id(), EventId::new()], sent_at)
        .await
        .unwrap();
    assert_eq!(marked, 2);
    assert_eq!(
        store.mark_sent(&[events[0].id()], sent_at).await.unwrap(),
        0,
        "already sent"
    );
    let rest: Vec<OutboxEntry> = [1, 3, 4].iter().map(|i| expected[*i].clone()).collect();
    assert_eq!(store.pending(10).await.unwrap(), rest);

    assert_eq!(
        store.purge_sent(sent_at).await.unwrap(),
        0,
        "sent at, not before"
    );
    assert_eq!(
        store
            .purge_sent(sent_at + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.pending(10).await.unwrap(),
        rest,
        "pending rows are never purged"
    );
    // Rows enqueued after a purge still come last.
    let newer = sample_event(tenant, 10);
    store.enqueue(USAGE_EVENTS, &newer).await.unwrap();
    let pending = store.pending(10).await.unwrap();
    assert_eq!(pending.len(), 4);
    assert_eq!(pending.last().map(|e| e.event.id()), Some(newer.id()));
}

/// The relay publishes pending events in outbox order, each under its tenant id, marks
/// them sent, and its loop keeps doing so until shut down.
pub async fn outbox_relay(store: Arc<dyn OutboxStore>) {
    let bus = Arc::new(InProcessBus::new());
    let group = unique_name("relay");
    let mut usage = bus.subscribe(USAGE_EVENTS, &group).await.unwrap();
    let mut billing = bus.subscribe(BILLING_EVENTS, &group).await.unwrap();
    let tenants = [TenantId::new(), TenantId::new()];
    let mut expected: HashMap<&str, Vec<Event>> = HashMap::new();
    for n in 0..7 {
        let topic = if n % 3 == 0 {
            BILLING_EVENTS
        } else {
            USAGE_EVENTS
        };
        let event = sample_event(tenants[usize::try_from(n % 2).unwrap()], n);
        store.enqueue(topic, &event).await.unwrap();
        expected.entry(topic).or_default().push(event);
    }

    let relay = Relay::new(store.clone(), bus.clone()).with_batch_size(3);
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert!(store.pending(10).await.unwrap().is_empty());

    for (topic, sub) in [(USAGE_EVENTS, &mut usage), (BILLING_EVENTS, &mut billing)] {
        let want = &expected[topic];
        let mut got: HashMap<TenantId, Vec<Event>> = HashMap::new();
        for _ in 0..want.len() {
            let delivery = next(&mut **sub).await;
            assert_eq!(delivery.key(), key(delivery.event().tenant_id()));
            sub.ack(&delivery).await.unwrap();
            got.entry(delivery.event().tenant_id())
                .or_default()
                .push(delivery.into_event());
        }
        let mut want_by_tenant: HashMap<TenantId, Vec<Event>> = HashMap::new();
        for event in want {
            want_by_tenant
                .entry(event.tenant_id())
                .or_default()
                .push(event.clone());
        }
        assert_eq!(got, want_by_tenant, "{topic}: per tenant, in outbox order");
    }

    // The loop relays what is enqueued while it runs, and stops when told.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let later = [sample_event(tenants[0], 50), sample_event(tenants[0], 51)];
    let consume = async {
        for event in &later {
            store.enqueue(USAGE_EVENTS, event).await.unwrap();
        }
        for event in &later {
            let delivery = next(&mut *usage).await;
            assert_eq!(delivery.event(), event);
            usage.ack(&delivery).await.unwrap();
        }
        stop.send(()).unwrap();
    };
    let run = relay.run(Duration::from_millis(20), async {
        let _ = stopped.await;
    });
    tokio::time::timeout(PATIENCE, async { tokio::join!(run, consume) })
        .await
        .expect("the relay loop must deliver and stop");
    assert!(store.pending(10).await.unwrap().is_empty());
}

/// An outbox whose `mark_sent` fails while `fail` is set: a crash between publishing
/// and marking.
struct CrashBeforeMark {
    inner: Arc<dyn OutboxStore>,
    fail: AtomicBool,
}

#[async_trait]
impl OutboxStore for CrashBeforeMark {
    async fn enqueue(&self, topic: &str, event: &Event) -> Result<()> {
        self.inner.enqueue(topic, event).await
    }

    async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        self.inner.pending(limit).await
    }

    async fn mark_sent(&self, ids: &[EventId], now: DateTime<Utc>) -> Result<u64> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("crashed before marking".into()));
        }
        self.inner.mark_sent(ids, now).await
    }

    async fn purge_sent(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.purge_sent(before).await
    }
}

/// A bus that refuses every publish.
#[derive(Debug)]
struct DownBus;

#[async_trait]
impl EventBus for DownBus {
    async fn publish(&self, _: &str, _: &str, _: &Event) -> Result<()> {
        Err(Error::Unavailable("bus down".into()))
    }

    async fn publish_batch(&self, _: &str, _: &[(&str, &Event)]) -> Result<()> {
        Err(Error::Unavailable("bus down".into()))
    }

    async fn subscribe(&self, _: &str, _: &str) -> Result<Box<dyn Subscription>> {
        Err(Error::Unavailable("bus down".into()))
    }
}

/// A crash after publishing and before marking re-sends on the next pass (duplicates,
/// never loss); a failed publish marks nothing.
pub async fn outbox_relay_crash_resends(store: Arc<dyn OutboxStore>) {
    let tenant = TenantId::new();
    let events: Vec<Event> = (0..3).map(|n| sample_event(tenant, n)).collect();
    for event in &events {
        store.enqueue(USAGE_EVENTS, event).await.unwrap();
    }

    let down = Relay::new(store.clone(), Arc::new(DownBus));
    assert_kind(down.relay_once().await, ErrorKind::Unavailable);
    assert_eq!(
        store.pending(10).await.unwrap().len(),
        3,
        "nothing was published"
    );

    let bus = Arc::new(InProcessBus::new());
    let mut sub = bus
        .subscribe(USAGE_EVENTS, &unique_name("crash"))
        .await
        .unwrap();
    let crashing = Arc::new(CrashBeforeMark {
        inner: store.clone(),
        fail: AtomicBool::new(true),
    });
    let relay = Relay::new(crashing.clone(), bus.clone());
    assert_kind(relay.relay_once().await, ErrorKind::Unavailable);
    assert_eq!(
        store.pending(10).await.unwrap().len(),
        3,
        "published but not marked: still pending"
    );
    crashing.fail.store(false, Ordering::SeqCst);
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert!(store.pending(10).await.unwrap().is_empty());

    let mut received = Vec::new();
    for _ in 0..6 {
        let delivery = next(&mut *sub).await;
        sub.ack(&delivery).await.unwrap();
        received.push(delivery.event().id());
    }
    let ids: Vec<EventId> = events.iter().map(Event::id).collect();
    let mut twice = ids.clone();
    twice.extend(ids.iter().copied());
    assert_eq!(received, twice, "every event twice, in order each time");
}
