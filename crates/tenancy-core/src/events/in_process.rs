//! [`InProcessBus`]: the event bus of the embedded default, in one process's memory.
//!
//! Each topic is a set of partitioned logs; a key's partition is a hash of the key.
//! Each consumer group keeps, per partition, the offset below which everything is
//! acknowledged (`committed`), the acknowledged offsets above it, the next offset to
//! hand out and the deliveries in flight with their deadlines. The members of a group
//! own partitions round-robin in the order they joined. When a partition changes
//! owner (a member joins or leaves) or one of its deliveries passes its visibility
//! timeout, the group rewinds it to `committed`: the unacknowledged events come again,
//! in order, and the acknowledged ones are skipped.
//!
//! Retention: a partition keeps at least its last `retention` events, and never drops
//! an event some group has not acknowledged yet, so a group's restart loses nothing; a
//! group subscribing for the first time starts at the oldest event retained.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Delivery, Event, EventBus, Subscription, check_group, check_topic};
use crate::error::{Error, Result};

/// The settings of an [`InProcessBus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProcessConfig {
    /// Partitions per topic (at least 1): how many members of one group can share the
    /// work of a topic.
    pub partitions: u32,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub visibility_timeout: Duration,
    /// Events each partition keeps at least; older ones go once every group has
    /// acknowledged them.
    pub retention: usize,
}

impl Default for InProcessConfig {
    /// 8 partitions, a visibility timeout of 30 s, a retention of 100 000 events.
    fn default() -> Self {
        Self {
            partitions: 8,
            visibility_timeout: Duration::from_secs(30),
            retention: 100_000,
        }
    }
}

/// The in-process event bus: partitions, consumer groups and redelivery like Kafka's,
/// within one process (nothing survives it). Cloning shares the bus.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

struct Shared {
    config: InProcessConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus with the default [`InProcessConfig`].
    #[must_use]
    pub fn new() -> Self {
        Self::build(InProcessConfig::default())
    }

    /// A bus with `config`: `InvalidInput` on field `partitions` when it is 0.
    pub fn with_config(config: InProcessConfig) -> Result<Self> {
        if config.partitions == 0 {
            return Err(Error::invalid("partitions", "must be at least 1"));
        }
        Ok(Self::build(config))
    }

    fn build(config: InProcessConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                topics: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        check_topic(name)?;
        let mut topics = lock(&self.shared.topics);
        let topic = topics.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Topic {
                log: Mutex::new(TopicLog::new(self.shared.config.partitions)),
                changed: Notify::new(),
            })
        });
        Ok(topic.clone())
    }

    fn append(&self, topic: &str, batch: &[(&str, &Event)]) -> Result<()> {
        let topic = self.topic(topic)?;
        {
            let mut log = lock(&topic.log);
            for (key, event) in batch {
                log.append(key, event, self.shared.config.retention);
            }
        }
        topic.changed.notify_waiters();
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// FNV-1a: a stable hash, so a key keeps its partition for the life of the bus.
fn partition_of(key: &str, partitions: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    usize::try_from(hash % partitions).unwrap_or(0)
}

struct Topic {
    log: Mutex<TopicLog>,
    /// Woken on every publish and membership change.
    changed: Notify,
}

struct TopicLog {
    partitions: Vec<PartitionLog>,
    groups: HashMap<String, Group>,
    next_member: u64,
}

#[derive(Default)]
struct PartitionLog {
    /// The offset of `entries[0]`.
    base: u64,
    entries: VecDeque<(String, Event)>,
}

impl PartitionLog {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&(String, Event)> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.entries.get(index)
    }
}

struct Group {
    /// Member ids in the order they joined.
    members: Vec<u64>,
    cursors: Vec<Cursor>,
}

/// A group's position in one partition.
#[derive(Default)]
struct Cursor {
    /// Every offset below is acknowledged.
    committed: u64,
    /// Acknowledged offsets at or above `committed`.
    acked: BTreeSet<u64>,
    /// The next offset to hand out.
    next: u64,
    /// One past the highest offset ever handed out.
    high: u64,
    /// Offsets handed out and not acknowledged, with their redelivery deadlines.
    /// Between two rewinds offsets are handed out in increasing order with
    /// non-decreasing deadlines, so the first entry has the earliest deadline.
    in_flight: BTreeMap<u64, Instant>,
}

impl Cursor {
    fn rewind(&mut self) {
        self.next = self.committed;
        self.in_flight.clear();
    }

    fn ack(&mut self, offset: u64) {
        self.in_flight.remove(&offset);
        if offset < self.committed {
            return;
        }
        self.acked.insert(offset);
        while self.acked.remove(&self.committed) {
            self.committed += 1;
        }
    }
}

impl Group {
    fn owner(&self, partition: usize) -> Option<u64> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        self.members.get(partition % n).copied()
    }

    /// Changes the members, rewinding every partition that changes owner.
    fn set_members(&mut self, members: Vec<u64>) {
        let n = self.cursors.len();
        let before: Vec<Option<u64>> = (0..n).map(|p| self.owner(p)).collect();
        self.members = members;
        let after: Vec<Option<u64>> = (0..n).map(|p| self.owner(p)).collect();
        for ((cursor, was), is) in self.cursors.iter_mut().zip(before).zip(after) {
            if was != is {
                cursor.rewind();
            }
        }
    }
}

impl TopicLog {
    fn new(partitions: u32) -> Self {
        Self {
            partitions: (0..partitions).map(|_| PartitionLog::default()).collect(),
            groups: HashMap::new(),
            next_member: 0,
        }
    }

    fn append(&mut self, key: &str, event: &Event, retention: usize) {
        let p = partition_of(key, self.partitions.len());
        if let Some(log) = self.partitions.get_mut(p) {
            log.entries.push_back((key.to_owned(), event.clone()));
        }
        self.trim(p, retention);
    }

    /// Drops the oldest events of partition `p` beyond `retention` that every group
    /// has acknowledged.
    fn trim(&mut self, p: usize, retention: usize) {
        let floor = self
            .groups
            .values()
            .filter_map(|g| g.cursors.get(p).map(|c| c.committed))
            .min();
        let Some(log) = self.partitions.get_mut(p) else {
            return;
        };
        let floor = floor.unwrap_or_else(|| log.end());
        while log.entries.len() > retention && log.base < floor {
            log.entries.pop_front();
            log.base += 1;
        }
    }

    fn join(&mut self, group: &str) -> u64 {
        let member = self.next_member;
        self.next_member += 1;
        let partitions = &self.partitions;
        let group = self
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                members: Vec::new(),
                // A new group starts at the oldest event retained.
                cursors: partitions
                    .iter()
                    .map(|log| Cursor {
                        committed: log.base,
                        next: log.base,
                        high: log.base,
                        ..Cursor::default()
                    })
                    .collect(),
            });
        let mut members = group.members.clone();
        members.push(member);
        group.set_members(members);
        member
    }

    fn leave(&mut self, group: &str, member: u64) {
        if let Some(g) = self.groups.get_mut(group) {
            let members = g.members.iter().copied().filter(|m| *m != member).collect();
            g.set_members(members);
        }
    }

    /// The next delivery for `member`, starting the scan at partition `start`; else
    /// the earliest redelivery deadline among its partitions.
    fn take(
        &mut self,
        topic: &str,
        group: &str,
        member: u64,
        start: usize,
        visibility: Duration,
    ) -> (Option<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let Some(g) = self.groups.get_mut(group) else {
            return (None, None);
        };
        let n = self.partitions.len();
        let mut earliest: Option<Instant> = None;
        for i in 0..n {
            let p = (start + i) % n;
            if g.owner(p) != Some(member) {
                continue;
            }
            let (Some(cursor), Some(log)) = (g.cursors.get_mut(p), self.partitions.get(p)) else {
                continue;
            };
            if cursor
                .in_flight
                .first_key_value()
                .is_some_and(|(_, deadline)| *deadline <= now)
            {
                cursor.rewind();
            }
            cursor.next = cursor.next.max(log.base).max(cursor.committed);
            while cursor.next < log.end() && cursor.acked.contains(&cursor.next) {
                cursor.next += 1;
            }
            if let Some((key, event)) = log.get(cursor.next) {
                let offset = cursor.next;
                let deadline = now + visibility;
                cursor.in_flight.insert(offset, deadline);
                cursor.next += 1;
                cursor.high = cursor.high.max(cursor.next);
                let delivery = Delivery::new(
                    topic.to_owned(),
                    key.clone(),
                    u32::try_from(p).unwrap_or(u32::MAX),
                    offset,
                    event.clone(),
                );
                return (Some(delivery), None);
            }
            if let Some((_, first)) = cursor.in_flight.first_key_value() {
                earliest = Some(earliest.map_or(*first, |e| e.min(*first)));
            }
        }
        (None, earliest)
    }

    /// The partition of `delivery` once checked to be one this group was handed.
    fn check_ack(&self, group: &str, delivery: &Delivery) -> Result<usize> {
        let p = usize::try_from(delivery.partition()).unwrap_or(usize::MAX);
        let cursor = self
            .groups
            .get(group)
            .and_then(|g| g.cursors.get(p))
            .ok_or_else(|| {
                Error::invalid(
                    "delivery",
                    format!("partition `{}` does not exist", delivery.partition()),
                )
            })?;
        if delivery.offset() >= cursor.high {
            return Err(Error::invalid(
                "delivery",
                format!(
                    "offset `{}` of partition `{}` was never delivered to this group",
                    delivery.offset(),
                    delivery.partition()
                ),
            ));
        }
        Ok(p)
    }

    /// Acknowledges every delivery of `deliveries`, or none if one is refused.
    fn ack(&mut self, group: &str, deliveries: &[Delivery], retention: usize) -> Result<()> {
        let partitions = deliveries
            .iter()
            .map(|d| self.check_ack(group, d))
            .collect::<Result<Vec<usize>>>()?;
        let mut touched = BTreeSet::new();
        if let Some(g) = self.groups.get_mut(group) {
            for (delivery, p) in deliveries.iter().zip(partitions) {
                if let Some(cursor) = g.cursors.get_mut(p) {
                    cursor.ack(delivery.offset());
                    touched.insert(p);
                }
            }
        }
        for p in touched {
            self.trim(p, retention);
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, topic: &str, key: &str, event: &Event) -> Result<()> {
        self.append(topic, &[(key, event)])
    }

    async fn publish_batch(&self, topic: &str, batch: &[(&str, &Event)]) -> Result<()> {
        self.append(topic, batch)
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        check_group(group)?;
        let state = self.topic(topic)?;
        let member = lock(&state.log).join(group);
        state.changed.notify_waiters();
        Ok(Box::new(InProcessSubscription {
            topic_name: topic.to_owned(),
            group: group.to_owned(),
            member,
            topic: state,
            visibility: self.shared.config.visibility_timeout,
            retention: self.shared.config.retention,
            start: 0,
        }))
    }
}

struct InProcessSubscription {
    topic_name: String,
    group: String,
    member: u64,
    topic: Arc<Topic>,
    visibility: Duration,
    retention: usize,
    /// Where the next scan starts, so one busy partition cannot starve the others.
    start: usize,
}

impl std::fmt::Debug for InProcessSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessSubscription")
            .field("topic", &self.topic_name)
            .field("group", &self.group)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        let give_up = Instant::now() + timeout;
        loop {
            let changed = self.topic.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (delivery, redeliver_at) = lock(&self.topic.log).take(
                &self.topic_name,
                &self.group,
                self.member,
                self.start,
                self.visibility,
            );
            if let Some(delivery) = delivery {
                self.start = usize::try_from(delivery.partition())
                    .unwrap_or(0)
                    .wrapping_add(1);
                return Ok(Some(delivery));
            }
            let wake = redeliver_at.map_or(give_up, |at| at.min(give_up));
            if Instant::now() >= give_up {
                return Ok(None);
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        self.ack_batch(std::slice::from_ref(delivery)).await
    }

    /// Takes the first delivery as [`Subscription::next`] does, then the rest under
    /// one lock of the topic.
    async fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Err(Error::invalid("max", "must be at least 1"));
        }
        let Some(first) = self.next(timeout).await? else {
            return Ok(Vec::new());
        };
        let mut batch = Vec::with_capacity(max.min(1024));
        batch.push(first);
        let mut log = lock(&self.topic.log);
        while batch.len() < max {
            let (Some(delivery), _) = log.take(
                &self.topic_name,
                &self.group,
                self.member,
                self.start,
                self.visibility,
            ) else {
                break;
            };
            self.start = usize::try_from(delivery.partition())
                .unwrap_or(0)
                .wrapping_add(1);
            batch.push(delivery);
        }
        Ok(batch)
    }

    /// Checks every delivery, then acknowledges all of them under one lock (or none).
    async fn ack_batch(&mut self, deliveries: &[Delivery]) -> Result<()> {
        if let Some(foreign) = deliveries.iter().find(|d| d.topic() != self.topic_name) {
            return Err(Error::invalid(
                "delivery",
                format!(
                    "it comes from topic `{}`, not `{}`",
                    foreign.topic(),
                    self.topic_name
                ),
            ));
        }
        lock(&self.topic.log).ack(&self.group, deliveries, self.retention)
    }

    fn assignment(&self) -> Result<Vec<u32>> {
        let log = lock(&self.topic.log);
        let Some(group) = log.groups.get(&self.group) else {
            return Ok(Vec::new());
        };
        Ok((0..log.partitions.len())
            .filter(|p| group.owner(*p) == Some(self.member))
            .filter_map(|p| u32::try_from(p).ok())
            .collect())
    }
}

impl Drop for InProcessSubscription {
    fn drop(&mut self) {
        lock(&self.topic.log).leave(&self.group, self.member);
        self.topic.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use serde_json::json;

    use super::*;
    use crate::TenantId;

    fn event(tenant: TenantId, n: u64) -> Event {
        Event::new(tenant, "test.event", "/test", "thing", json!({ "n": n })).unwrap()
    }

    const WAIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn unacked_delivery_comes_back_after_the_visibility_timeout() {
        let bus = InProcessBus::with_config(InProcessConfig {
            partitions: 1,
            visibility_timeout: Duration::from_millis(50),
            ..InProcessConfig::default()
        })
        .unwrap();
        let tenant = TenantId::new();
        let (a, b) = (event(tenant, 1), event(tenant, 2));
        bus.publish("t", "k", &a).await.unwrap();
        bus.publish("t", "k", &b).await.unwrap();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let first = sub.next(WAIT).await.unwrap().unwrap();
        assert_eq!(first.event(), &a);
        let second = sub.next(WAIT).await.unwrap().unwrap();
        assert_eq!(second.event(), &b);
        sub.ack(&second).await.unwrap();
        // `a` times out and comes again; `b`, acknowledged, does not.
        let again = sub.next(Duration::from_secs(2)).await.unwrap().unwrap();
        assert_eq!(again.event(), &a);
        assert_eq!(again.offset(), first.offset());
        sub.ack(&again).await.unwrap();
        assert!(
            sub.next(Duration::from_millis(150))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish() {
        let bus = InProcessBus::new();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let publisher = bus.clone();
        let e = event(TenantId::new(), 1);
        let sent = e.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            publisher.publish("t", "k", &sent).await.unwrap();
        });
        let got = sub.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(got.event(), &e);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn dropping_a_member_hands_its_unacked_events_to_the_rest() {
        let bus = InProcessBus::with_config(InProcessConfig {
            partitions: 2,
            ..InProcessConfig::default()
        })
        .unwrap();
        let mut a = bus.subscribe("t", "g").await.unwrap();
        let mut b = bus.subscribe("t", "g").await.unwrap();
        assert_eq!(a.assignment().unwrap(), vec![0]);
        assert_eq!(b.assignment().unwrap(), vec![1]);
        // Keys that land on each partition.
        let tenants: Vec<TenantId> = (0..16).map(|_| TenantId::new()).collect();
        let on_b = tenants
            .iter()
            .find(|t| partition_of(&t.to_string(), 2) == 1)
            .expect("a key of partition 1");
        let e = event(*on_b, 1);
        bus.publish("t", &on_b.to_string(), &e).await.unwrap();
        assert!(a.next(WAIT).await.unwrap().is_none());
        let got = b.next(WAIT).await.unwrap().unwrap();
        assert_eq!(got.event(), &e);
        drop(b);
        assert_eq!(a.assignment().unwrap(), vec![0, 1]);
        let again = a.next(WAIT).await.unwrap().unwrap();
        assert_eq!(again.event(), &e);
        // The dropped member's delivery may still be acknowledged (its work was done).
        a.ack(&got).await.unwrap();
        assert!(a.next(WAIT).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn retention_keeps_what_a_group_has_not_acknowledged() {
        let bus = InProcessBus::with_config(InProcessConfig {
            partitions: 1,
            retention: 2,
            ..InProcessConfig::default()
        })
        .unwrap();
        let tenant = TenantId::new();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let events: Vec<Event> = (0..5).map(|n| event(tenant, n)).collect();
        for e in &events {
            bus.publish("t", "k", e).await.unwrap();
        }
        // Nothing acknowledged: all five retained.
        for e in &events[..3] {
            let d = sub.next(WAIT).await.unwrap().unwrap();
            assert_eq!(d.event(), e);
            sub.ack(&d).await.unwrap();
        }
        drop(sub);
        // Three acknowledged and trimmed to the last two: a new group starts there.
        let mut late = bus.subscribe("t", "late").await.unwrap();
        let d = late.next(WAIT).await.unwrap().unwrap();
        assert_eq!(d.event(), &events[3]);
        assert_eq!(d.offset(), 3);
        // The first group resumes after its last acknowledgement.
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        assert_eq!(sub.next(WAIT).await.unwrap().unwrap().event(), &events[3]);
    }

    #[tokio::test]
    async fn acks_of_foreign_deliveries_are_refused() {
        let bus = InProcessBus::new();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let e = event(TenantId::new(), 1);
        let other_topic = Delivery::new("u".into(), "k".into(), 0, 0, e.clone());
        let err = sub.ack(&other_topic).await.unwrap_err();
        assert_eq!(err.field(), Some("delivery"));
        let never = Delivery::new("t".into(), "k".into(), 0, 7, e.clone());
        let err = sub.ack(&never).await.unwrap_err();
        assert_eq!(err.field(), Some("delivery"));
        let no_partition = Delivery::new("t".into(), "k".into(), 99, 0, e);
        assert!(sub.ack(&no_partition).await.is_err());
        let zero = InProcessConfig {
            partitions: 0,
            ..InProcessConfig::default()
        };
        assert_eq!(
            InProcessBus::with_config(zero).unwrap_err().field(),
            Some("partitions")
        );
    }
}
