//! [`KafkaBus`] (feature `kafka`): the event bus between services at scale, over
//! `rdkafka` with a bundled librdkafka.
//!
//! - Producing: an idempotent producer with `acks=all`, so a publish that returned is
//!   on every in-sync replica and retries never duplicate or reorder within a
//!   partition; the key (the tenant id) picks the partition with the Java client's
//!   murmur2 partitioner. Events travel in CloudEvents' structured mode: the value is
//!   the JSON envelope, with header `content-type: application/cloudevents+json`.
//! - Topics: created through the admin client when absent (the three standard topics
//!   at [`KafkaBus::connect`], others on first use) with the configured partitions and
//!   replication.
//! - Consuming: each [`Subscription`] is one consumer of the group with
//!   `enable.auto.commit=false`. Acknowledging offset N of a partition commits the
//!   group's position only up to the oldest delivery of that partition still
//!   unacknowledged, synchronously, so a committed position never passes an event whose
//!   effects the consumer has not committed in its own database. `ack_batch` commits
//!   every partition it touches in one call, so a batch costs one round trip. A
//!   restart or a rebalance resumes from the committed position
//!   (`auto.offset.reset=earliest` for a group's first start). A message that is not
//!   a valid event is logged and skipped.
//! - Receiving: messages are polled and decoded on the blocking pool, a batch at a
//!   time, and as soon as a batch is handed out the next one is polled (read ahead)
//!   while the caller works on it. A read-ahead batch is only held in memory: nothing
//!   is recorded for it until it is handed out, so dropping the subscription loses
//!   nothing (it is delivered again).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use super::{Delivery, Event, EventBus, Subscription, TOPICS, check_group, check_topic};
use crate::error::{Error, Result};

/// The settings of a [`KafkaBus`]. Start from [`KafkaConfig::new`] and change what
/// differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Partitions of the topics the bus creates: how many members of one group can
    /// share a topic's work.
    pub partitions: u32,
    /// Replicas of each partition of the topics the bus creates (1 for a single
    /// broker; 3 in production).
    pub replication: u32,
    /// The `client.id` the brokers log.
    pub client_id: String,
    /// How long a publish may take, retries included, before it fails.
    pub publish_timeout: Duration,
    /// How long the group waits for a silent member before giving its partitions to
    /// the others.
    pub session_timeout: Duration,
    /// How often members tell the group they are alive; also how soon a member learns
    /// of a rebalance.
    pub heartbeat_interval: Duration,
    /// The longest a broker may hold a consumer's fetch before answering
    /// (`fetch.wait.max.ms`). Kafka answers as soon as it has a message, so there
    /// this only bounds the long poll of an idle member (one fetch per period). tansu
    /// (the broker of the tests) waits the whole period, or half of it from 250 ms
    /// up, before every answer, even with data at hand: at librdkafka's default of
    /// 500 ms a consumer received about 64,000 events/s from it, at 50 ms about
    /// 250,000.
    pub fetch_wait: Duration,
    /// More librdkafka properties for every client (e.g. `security.protocol`), applied
    /// last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Settings for `brokers`: 6 partitions, replication 1, client id `tenancy`,
    /// publish timeout 30 s, session timeout 10 s, heartbeat every second, fetch wait
    /// 50 ms.
    #[must_use]
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            partitions: 6,
            replication: 1,
            client_id: "tenancy".into(),
            publish_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            fetch_wait: Duration::from_millis(50),
            properties: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::invalid("brokers", "must name at least one broker"));
        }
        if self.partitions == 0 || i32::try_from(self.partitions).is_err() {
            return Err(Error::invalid(
                "partitions",
                format!("`{}` is not a valid partition count", self.partitions),
            ));
        }
        if self.replication == 0 || i32::try_from(self.replication).is_err() {
            return Err(Error::invalid(
                "replication",
                format!("`{}` is not a valid replication factor", self.replication),
            ));
        }
        if self.fetch_wait > Duration::from_secs(300) {
            return Err(Error::invalid(
                "fetch_wait",
                "must be at most 300 s (librdkafka's limit)",
            ));
        }
        Ok(())
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        config
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn kafka_error(what: &str, err: &KafkaError) -> Error {
    Error::Unavailable(format!("kafka {what} failed: {err}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The event bus on a Kafka cluster (or a Kafka-compatible broker such as tansu).
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    topics: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects to the brokers of `config` and creates the standard topics
    /// ([`TOPICS`]) if absent. `InvalidInput` for invalid settings, `Unavailable` when
    /// the brokers cannot be reached.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let mut producer = config.client();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", millis(config.publish_timeout));
        let producer: FutureProducer = config
            .finish(producer)
            .create()
            .map_err(|e| Error::invalid("kafka", format!("cannot create a producer: {e}")))?;
        let admin: AdminClient<DefaultClientContext> = config
            .finish(config.client())
            .create()
            .map_err(|e| Error::invalid("kafka", format!("cannot create an admin client: {e}")))?;
        let bus = Self {
            config,
            producer,
            admin,
            topics: Mutex::new(HashSet::new()),
        };
        for topic in TOPICS {
            bus.ensure_topic(topic).await?;
        }
        Ok(bus)
    }

    /// Creates `topic` unless it is known to exist.
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        if lock(&self.topics).contains(topic) {
            return Ok(());
        }
        let partitions = i32::try_from(self.config.partitions).unwrap_or(1);
        let replication = i32::try_from(self.config.replication).unwrap_or(1);
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let options = AdminOptions::new().operation_timeout(Some(self.config.publish_timeout));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| kafka_error(&format!("creating topic `{topic}`"), &e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::Unavailable(format!(
                        "kafka creating topic `{topic}` failed: {code}"
                    )));
                }
            }
        }
        lock(&self.topics).insert(topic.to_owned());
        Ok(())
    }

    fn record<'a>(topic: &'a str, key: &'a str, payload: &'a [u8]) -> FutureRecord<'a, str, [u8]> {
        FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json"),
            }))
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, topic: &str, key: &str, event: &Event) -> Result<()> {
        self.ensure_topic(topic).await?;
        let payload = event.encode()?;
        self.producer
            .send(
                Self::record(topic, key, &payload),
                Timeout::After(self.config.publish_timeout),
            )
            .await
            .map_err(|(e, _)| kafka_error(&format!("publishing to `{topic}`"), &e))?;
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, batch: &[(&str, &Event)]) -> Result<()> {
        self.ensure_topic(topic).await?;
        let payloads = batch
            .iter()
            .map(|(_, event)| event.encode())
            .collect::<Result<Vec<_>>>()?;
        let failed = |e: &KafkaError| kafka_error(&format!("publishing to `{topic}`"), e);
        // Queue every record (in order: the idempotent producer keeps it), then wait
        // for all acknowledgements; a full queue waits for the oldest one first.
        let mut in_flight = std::collections::VecDeque::new();
        for ((key, _), payload) in batch.iter().zip(&payloads) {
            let mut record = Self::record(topic, key, payload);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match in_flight.pop_front() {
                            Some(oldest) => check_delivery(oldest.await, &failed)?,
                            None => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    Err((e, _)) => return Err(failed(&e)),
                }
            }
        }
        for delivery in in_flight {
            check_delivery(delivery.await, &failed)?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        check_group(group)?;
        self.ensure_topic(topic).await?;
        let mut config = self.config.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", millis(self.config.fetch_wait))
            .set("session.timeout.ms", millis(self.config.session_timeout))
            .set(
                "heartbeat.interval.ms",
                millis(self.config.heartbeat_interval),
            );
        let resets = Arc::new(Mutex::new(HashSet::new()));
        let context = GroupContext {
            topic: topic.to_owned(),
            resets: resets.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = self
            .config
            .finish(config)
            .create_with_context(context)
            .map_err(|e| Error::invalid("kafka", format!("cannot create a consumer: {e}")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error(&format!("subscribing to `{topic}`"), &e))?;
        Ok(Box::new(KafkaSubscription {
            topic: topic.to_owned(),
            group: group.to_owned(),
            consumer: Arc::new(consumer),
            resets,
            partitions: HashMap::new(),
            buffered: VecDeque::new(),
            inflight: None,
            closed: Arc::new(AtomicBool::new(false)),
        }))
    }
}

/// What a delivery future of the producer resolves to.
type DeliveryOutcome = <DeliveryFuture as std::future::Future>::Output;

fn check_delivery(outcome: DeliveryOutcome, failed: &impl Fn(&KafkaError) -> Error) -> Result<()> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(failed(&e)),
        Err(_) => Err(Error::Unavailable(
            "kafka producer closed before the broker acknowledged".into(),
        )),
    }
}

/// Records which partitions of the topic were assigned or revoked, so the
/// subscription forgets its bookkeeping for them.
struct GroupContext {
    topic: String,
    resets: Arc<Mutex<HashSet<i32>>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) | Rebalance::Revoke(list) = rebalance {
            let mut resets = lock(&self.resets);
            for element in list.elements_for_topic(&self.topic) {
                resets.insert(element.partition());
            }
        }
    }
}

/// One partition as this member has received it since it was assigned.
#[derive(Debug)]
struct PartitionState {
    /// Delivered, not acknowledged.
    pending: BTreeSet<i64>,
    /// One past the last offset received.
    next: i64,
    /// The group's position as last committed (or found at assignment).
    committed: i64,
}

impl PartitionState {
    /// Where the group may resume: the oldest unacknowledged delivery, else after the
    /// last one received.
    fn position(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

struct KafkaSubscription {
    topic: String,
    group: String,
    consumer: Arc<BaseConsumer<GroupContext>>,
    resets: Arc<Mutex<HashSet<i32>>>,
    partitions: HashMap<i32, PartitionState>,
    /// Messages polled and decoded but not handed out yet.
    buffered: VecDeque<Received>,
    /// A poll running on the blocking pool: the read-ahead started after the last
    /// batch was handed out, or a poll an earlier call stopped waiting for. Its
    /// messages are handed out by the next call, so none is ever lost.
    inflight: Option<tokio::task::JoinHandle<KafkaResult<Vec<Received>>>>,
    /// Set when the subscription is dropped, so a poll in flight stops early and the
    /// consumer leaves the group at once.
    closed: Arc<AtomicBool>,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// What a poll took from one message (owned and decoded, so the message can go).
#[derive(Debug)]
struct Received {
    partition: i32,
    offset: i64,
    key: String,
    event: Option<Result<Event>>,
}

/// The longest a blocking poll waits between looks at the subscription's `closed`
/// flag.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Polls `consumer` on the calling (blocking) thread: waits up to `timeout` for a
/// first message, then takes what is already fetched, up to `max` messages, decoding
/// each. Serves rebalances on the way. An error after some messages ends the batch
/// (the error comes again on a later poll).
fn poll_messages(
    consumer: &BaseConsumer<GroupContext>,
    max: usize,
    timeout: Duration,
    closed: &AtomicBool,
) -> KafkaResult<Vec<Received>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < max {
        let wait = if out.is_empty() {
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .min(POLL_SLICE)
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => out.push(Received {
                partition: message.partition(),
                offset: message.offset(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                event: message.payload().map(Event::decode),
            }),
            Some(Err(e)) if out.is_empty() => return Err(e),
            // Nothing more at once (or an error for the next poll to report).
            Some(Err(_)) | None if !out.is_empty() => break,
            // Nothing yet, or a rebalance served: wait on until the deadline.
            _ => {
                if closed.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    Ok(out)
}

impl KafkaSubscription {
    /// Forgets the partitions a rebalance assigned or revoked since the last call.
    fn apply_resets(&mut self) {
        let resets: Vec<i32> = lock(&self.resets).drain().collect();
        for partition in resets {
            self.partitions.remove(&partition);
        }
    }

    /// Records `offset` of `partition` as received; `pending` when it awaits an ack.
    fn receive(&mut self, partition: i32, offset: i64, pending: bool) {
        let state = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                pending: BTreeSet::new(),
                next: offset,
                committed: offset,
            });
        if offset < state.next {
            // Delivered again without a rebalance (the consumer went back): start over.
            *state = PartitionState {
                pending: BTreeSet::new(),
                next: offset,
                committed: offset.min(state.committed),
            };
        }
        if pending {
            state.pending.insert(offset);
        }
        state.next = offset + 1;
    }

    /// Commits the group's position in each of `partitions` that moved, in one
    /// synchronous commit call.
    async fn commit(&mut self, partitions: impl IntoIterator<Item = i32>) -> Result<()> {
        let moved: Vec<(i32, i64)> = partitions
            .into_iter()
            .filter_map(|partition| {
                let state = self.partitions.get(&partition)?;
                let position = state.position();
                (position > state.committed).then_some((partition, position))
            })
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let positions = moved.clone();
        tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::with_capacity(positions.len());
            for (partition, position) in positions {
                list.add_partition_offset(&topic, partition, Offset::Offset(position))?;
            }
            consumer.commit(&list, CommitMode::Sync)
        })
        .await
        .map_err(|e| Error::Internal(format!("kafka commit task failed: {e}")))?
        .map_err(|e| kafka_error(&format!("committing offsets of `{}`", self.topic), &e))?;
        for (partition, position) in moved {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.committed = state.committed.max(position);
            }
        }
        Ok(())
    }

    /// Starts a poll of up to `max` messages on the blocking pool.
    fn start_poll(&mut self, max: usize, timeout: Duration) {
        let consumer = self.consumer.clone();
        let closed = self.closed.clone();
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            poll_messages(&consumer, max, timeout, &closed)
        }));
    }

    /// Hands out up to `max` buffered messages as deliveries, recording each as
    /// pending; a message that is not an event is logged, skipped and committed past.
    async fn hand_out(&mut self, max: usize) -> Result<Vec<Delivery>> {
        self.apply_resets();
        let mut batch = Vec::with_capacity(max.min(self.buffered.len()));
        while batch.len() < max {
            let Some(received) = self.buffered.pop_front() else {
                break;
            };
            match received.event {
                Some(Ok(event)) => {
                    self.receive(received.partition, received.offset, true);
                    let (Ok(partition), Ok(offset)) = (
                        u32::try_from(received.partition),
                        u64::try_from(received.offset),
                    ) else {
                        return Err(Error::Internal(format!(
                            "kafka returned offset `{}` of partition `{}`",
                            received.offset, received.partition
                        )));
                    };
                    batch.push(Delivery::new(
                        self.topic.clone(),
                        received.key,
                        partition,
                        offset,
                        event,
                    ));
                }
                bad => {
                    let reason = match bad {
                        Some(Err(e)) => e.to_string(),
                        _ => "no payload".to_owned(),
                    };
                    tracing::warn!(
                        topic = %self.topic,
                        partition = received.partition,
                        offset = received.offset,
                        %reason,
                        "skipping a message that is not an event"
                    );
                    self.receive(received.partition, received.offset, false);
                    self.commit([received.partition]).await?;
                }
            }
        }
        Ok(batch)
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        Ok(self.next_batch(1, timeout).await?.pop())
    }

    /// Polls on the blocking pool (librdkafka's own loop, no wake-up per message) and
    /// decodes there; once a batch is handed out, the next one is polled and decoded
    /// while the caller processes this one.
    async fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Err(Error::invalid("max", "must be at least 1"));
        }
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let batch = self.hand_out(max).await?;
                if !batch.is_empty() {
                    if self.buffered.is_empty() && self.inflight.is_none() {
                        self.start_poll(max, timeout);
                    }
                    return Ok(batch);
                }
                continue;
            }
            if self.inflight.is_none() {
                let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                self.start_poll(max, left);
            }
            let Some(handle) = self.inflight.as_mut() else {
                return Ok(Vec::new());
            };
            let joined = match tokio::time::timeout_at(give_up, handle).await {
                // The poll goes on; its messages wait for the next call.
                Err(_) => return Ok(Vec::new()),
                Ok(joined) => joined,
            };
            self.inflight = None;
            let polled = joined
                .map_err(|e| Error::Internal(format!("kafka poll task failed: {e}")))?
                .map_err(|e| kafka_error(&format!("receiving from `{}`", self.topic), &e))?;
            if polled.is_empty() && tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            self.buffered.extend(polled);
        }
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        self.ack_batch(std::slice::from_ref(delivery)).await
    }

    /// Checks the whole list, marks every delivery acknowledged, then commits the
    /// touched partitions' positions in one synchronous call; on a failed commit the
    /// deliveries are unacknowledged again.
    async fn ack_batch(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut offsets = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if delivery.topic() != self.topic {
                return Err(Error::invalid(
                    "delivery",
                    format!(
                        "it comes from topic `{}`, not `{}`",
                        delivery.topic(),
                        self.topic
                    ),
                ));
            }
            let (Ok(partition), Ok(offset)) = (
                i32::try_from(delivery.partition()),
                i64::try_from(delivery.offset()),
            ) else {
                return Err(Error::invalid(
                    "delivery",
                    "its partition or offset is out of range",
                ));
            };
            offsets.push((partition, offset));
        }
        self.apply_resets();
        let mut removed = Vec::with_capacity(offsets.len());
        let mut touched = BTreeSet::new();
        for (partition, offset) in offsets {
            // A partition revoked since (or never ours) is skipped: its new owner
            // delivers the event again.
            if let Some(state) = self.partitions.get_mut(&partition)
                && state.pending.remove(&offset)
            {
                removed.push((partition, offset));
                touched.insert(partition);
            }
        }
        if let Err(e) = self.commit(touched).await {
            // Still unacknowledged as far as the group knows: a retry commits again.
            for (partition, offset) in removed {
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.pending.insert(offset);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    fn assignment(&self) -> Result<Vec<u32>> {
        let list = self
            .consumer
            .assignment()
            .map_err(|e| kafka_error("reading the assignment", &e))?;
        let mut partitions: Vec<u32> = list
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }
}
