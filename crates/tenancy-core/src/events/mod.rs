//! Events between services: the [`Event`] envelope (CloudEvents-shaped JSON), the
//! [`EventBus`] that carries it ([`InProcessBus`] for the embedded default, `KafkaBus`
//! with feature `kafka`), and the transactional outbox ([`OutboxStore`], [`Relay`]) that
//! lets a store write and the events it implies commit together.
//!
//! Delivery is at least once: a subscriber acknowledges a [`Delivery`] only after its
//! own database transaction committed, and an unacknowledged delivery comes again (to
//! the same subscriber after a visibility timeout, to whichever member owns its
//! partition after a restart or a rebalance). Consumers therefore apply each event at
//! most once per [`Event::id`], which makes the effect exactly once.
//!
//! Events published under one key (the tenant id, see [`EventBusExt::publish_event`])
//! go to one partition and are delivered in the order they were published; a consumer
//! group shares a topic's partitions among its members, and independent groups each see
//! every event.
//!
//! ```
//! use std::time::Duration;
//! use tenancy_core::TenantId;
//! use tenancy_core::events::{Event, EventBus, EventBusExt, InProcessBus, USAGE_EVENTS};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenancy_core::Result<()> {
//! let bus = InProcessBus::new();
//! let mut usage = bus.subscribe(USAGE_EVENTS, "aggregator").await?;
//! let event = Event::new(
//!     TenantId::new(),
//!     "tenancy.usage.recorded",
//!     "/tenancy/gateway",
//!     "api-calls",
//!     serde_json::json!({ "quantity": 1 }),
//! )?;
//! bus.publish_event(USAGE_EVENTS, &event).await?;
//!
//! let delivery = usage.next(Duration::from_secs(1)).await?.expect("an event");
//! assert_eq!(delivery.event(), &event);
//! // ... apply it in the consumer's own transaction, commit, then:
//! usage.ack(&delivery).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

mod envelope;
mod in_process;
#[cfg(feature = "kafka")]
pub mod kafka;
mod outbox;

pub use envelope::{Event, SPEC_VERSION};
pub use in_process::{InProcessBus, InProcessConfig};
pub use outbox::{MemoryOutbox, OutboxEntry, OutboxStore, Relay};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use outbox::{already_enqueued, check_limit};

/// Usage events: what tenants consumed, for metering and quotas.
pub const USAGE_EVENTS: &str = "usage.events";
/// Billing events: subscriptions, invoices, payments.
pub const BILLING_EVENTS: &str = "billing.events";
/// Audit events: security-relevant actions, appended to each tenant's hash chain.
pub const AUDIT_EVENTS: &str = "audit.events";
/// The topics every deployment has.
pub const TOPICS: [&str; 3] = [USAGE_EVENTS, BILLING_EVENTS, AUDIT_EVENTS];

/// Carries events from producers to consumer groups.
///
/// Contract, checked by the conformance suite (`conformance::events`):
/// - events published under one key to one topic are delivered in publication order
///   (they share a partition); across keys there is no order;
/// - [`EventBus::publish`] returns once the bus holds the event (Kafka: acknowledged by
///   all in-sync replicas); an error means it may or may not have been published, so
///   a retry may duplicate it, which consumers absorb by [`Event::id`];
/// - each consumer group receives every event published to the topic, including those
///   published before its first subscription that the bus still retains; the members
///   of one group share the partitions, so each event goes to one member;
/// - an event that is not acknowledged is delivered again; after an acknowledgement
///   a group resumes after it (see [`Subscription::ack`]).
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `event` to `topic` under `key` (normally the tenant id). `InvalidInput`
    /// for an invalid topic name.
    async fn publish(&self, topic: &str, key: &str, event: &Event) -> Result<()>;

    /// Publishes `(key, event)` pairs to `topic`, in order. On error any part of the
    /// batch may have been published (publish it again: consumers absorb duplicates).
    async fn publish_batch(&self, topic: &str, batch: &[(&str, &Event)]) -> Result<()>;

    /// Joins consumer group `group` of `topic` as a new member. `InvalidInput` for an
    /// invalid topic or group name.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>>;
}

/// Convenience methods for every [`EventBus`].
#[async_trait]
pub trait EventBusExt: EventBus {
    /// Publishes `event` to `topic` under its tenant id, so a tenant's events stay in
    /// order.
    async fn publish_event(&self, topic: &str, event: &Event) -> Result<()> {
        self.publish(topic, &event.tenant_id().to_string(), event)
            .await
    }
}

impl<B: EventBus + ?Sized> EventBusExt for B {}

/// One member of a consumer group. Dropping it leaves the group: its partitions go to
/// the remaining members, and what it did not acknowledge is delivered again.
#[async_trait]
pub trait Subscription: Send + Sync + std::fmt::Debug {
    /// The next event of this member's partitions, waiting at most `timeout`; `None`
    /// when none arrived in time. Events of one partition come in order.
    async fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>>;

    /// Acknowledges `delivery`: call it only after the event's effects are committed
    /// (in the consumer's own database). The group's position in a partition moves
    /// past offset N only once every earlier delivery of that partition is
    /// acknowledged, so a restart never skips an unacknowledged event; it may
    /// redeliver acknowledged ones that followed it. Acknowledging a delivery twice,
    /// or one whose partition a rebalance has since given to another member, has no
    /// effect. `InvalidInput` on field `delivery` for a delivery of another topic (the
    /// in-process bus also refuses offsets it never handed out; Kafka ignores them).
    /// An error leaves the delivery unacknowledged: acknowledging it again retries.
    async fn ack(&mut self, delivery: &Delivery) -> Result<()>;

    /// Up to `max` events of this member's partitions: waits at most `timeout` for the
    /// first, then takes what is available at once, without waiting again. Empty when
    /// nothing arrived in time. Events of one partition come in order, as with
    /// [`Subscription::next`]; `InvalidInput` on field `max` when it is 0.
    ///
    /// The default calls [`Subscription::next`] once with `timeout`, then with a zero
    /// timeout until it has `max` or none comes. If a receive fails after some
    /// deliveries were taken, those are returned (the error comes again on the next
    /// call); buses override it to take a batch at a lower cost.
    async fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Err(Error::invalid("max", "must be at least 1"));
        }
        let Some(first) = self.next(timeout).await? else {
            return Ok(Vec::new());
        };
        let mut batch = Vec::with_capacity(max.min(1024));
        batch.push(first);
        while batch.len() < max {
            match self.next(Duration::ZERO).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Acknowledges every delivery of `deliveries`, with the contract of
    /// [`Subscription::ack`] for each: call it only after their effects are committed;
    /// a group's position in a partition never moves past a delivery that is not
    /// acknowledged (by this call or an earlier one), whatever the order of the list.
    /// `InvalidInput` on field `delivery` if one is of another topic (buses check the
    /// whole list first and then acknowledge none). On any other error some
    /// deliveries may be acknowledged and others not: acknowledging the same list
    /// again retries, and acknowledging a delivery twice has no effect.
    ///
    /// The default acknowledges them one by one; buses override it to commit each
    /// partition once per call.
    async fn ack_batch(&mut self, deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            self.ack(delivery).await?;
        }
        Ok(())
    }

    /// The partitions currently assigned to this member (a rebalance may change them;
    /// Kafka assigns them only after the member joined the group, which happens while
    /// [`Subscription::next`] waits).
    fn assignment(&self) -> Result<Vec<u32>>;
}

/// An event handed to a subscriber, with where it came from (to acknowledge it).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    topic: String,
    key: String,
    partition: u32,
    offset: u64,
    event: Event,
}

impl Delivery {
    /// A delivery of `event` from `offset` of `partition` of `topic` (for
    /// [`EventBus`] implementations).
    #[must_use]
    pub fn new(topic: String, key: String, partition: u32, offset: u64, event: Event) -> Self {
        Self {
            topic,
            key,
            partition,
            offset,
            event,
        }
    }

    /// The event.
    #[must_use]
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event, by value.
    #[must_use]
    pub fn into_event(self) -> Event {
        self.event
    }

    /// The topic it was published to.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The key it was published under.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The partition of the topic that holds it.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Its position in the partition.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A topic name as Kafka accepts it: 1–249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "topic",
            format!(
                "`{}` must be 1 to 249 letters, digits, `.`, `_` or `-`",
                topic.escape_debug()
            ),
        ))
    }
}

/// A consumer group name: 1–255 bytes without control characters.
pub(crate) fn check_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 || group.chars().any(char::is_control) {
        return Err(Error::invalid(
            "group",
            format!(
                "`{}` must be 1 to 255 bytes without control characters",
                group.escape_debug()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for good in TOPICS.into_iter().chain(["a", "A-b_c.9"]) {
            assert!(check_topic(good).is_ok(), "{good}");
        }
        let long = "t".repeat(250);
        for bad in ["", ".", "..", "a b", "a/b", "ä", long.as_str()] {
            let err = check_topic(bad).err();
            assert_eq!(err.as_ref().and_then(Error::field), Some("topic"), "{bad}");
        }
        assert!(check_group("billing workers").is_ok());
        assert!(check_group("").is_err());
        assert!(check_group("a\u{0}").is_err());
    }
}
