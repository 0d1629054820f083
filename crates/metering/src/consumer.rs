//! [`UsageConsumer`]: reads usage events from the event bus (`usage.events`) and
//! writes them through [`Metering::ingest_many`], the validation and storage path the
//! HTTP API takes, with one store call (one transaction on the SQL stores) for the
//! batch's tenants.
//!
//! Delivery is at least once and ingestion is idempotent per (tenant, event id), so
//! each event counts exactly once: a batch is acknowledged only after every ingest
//! call of it committed, and a batch that comes again after a crash is reported as
//! duplicates and changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tenancy_core::events::{Delivery, EventBus, Subscription, USAGE_EVENTS};
use tenancy_core::{Error, Result, TenantId};

use crate::model::{IngestReport, MAX_BATCH, UsageEvent};
use crate::service::Metering;

/// The first wait after a failure; it doubles up to [`ConsumerConfig::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The settings of a [`UsageConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The topic to read, [`USAGE_EVENTS`] by default.
    pub topic: String,
    /// The consumer group. Every consumer of one group shares the topic's partitions
    /// and resumes after what the group acknowledged; `tenancy-usage` by default.
    pub group: String,
    /// The most events taken from the bus at once (at least 1), 1,000 by default.
    /// A batch is split by tenant, and into ingest calls of at most
    /// [`MAX_BATCH`] events each.
    pub batch_size: usize,
    /// How long one wait for events lasts before the consumer looks again; 1 s by
    /// default.
    pub poll_timeout: Duration,
    /// The longest wait between two attempts after a failure (the wait starts at
    /// 100 ms, or this if shorter, and doubles); 30 s by default.
    pub max_backoff: Duration,
    /// How many store calls one batch is split into, running at once (at least 1);
    /// 1 by default. The batch's tenants are shared out among them, each call
    /// writing its tenants in one transaction on the SQL stores. More can help
    /// PostgreSQL, whose transactions overlap; SQLite writes one transaction at a
    /// time, so leave it at 1 there.
    pub concurrency: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            topic: USAGE_EVENTS.to_owned(),
            group: "tenancy-usage".to_owned(),
            batch_size: MAX_BATCH,
            poll_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            concurrency: 1,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
}

/// What a [`UsageConsumer`] has done since it was created: a cheap handle (clones
/// share the counters) that a server reads while the consumer runs. Counters only
/// grow.
#[derive(Clone, Default)]
pub struct ConsumerStats {
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ConsumerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStats")
            .field("received", &self.received())
            .field("accepted", &self.accepted())
            .field("duplicates", &self.duplicates())
            .field("rejected", &self.rejected())
            .field("batches", &self.batches())
            .field("errors", &self.errors())
            .finish()
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl ConsumerStats {
    /// Events received from the bus, redeliveries included.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Events stored and counted (new for their tenant).
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Events whose id their tenant had sent before: counted once already.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        self.counters.duplicates.load(Ordering::Relaxed)
    }

    /// Events refused by validation (or of a tenant the directory does not know):
    /// logged and acknowledged, never counted.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    /// Batches fully ingested and acknowledged.
    #[must_use]
    pub fn batches(&self) -> u64 {
        self.counters.batches.load(Ordering::Relaxed)
    }

    /// Failed attempts (receiving, ingesting or acknowledging), each retried.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }

    fn record(&self, report: &IngestReport) {
        add(&self.counters.accepted, report.accepted.len());
        add(&self.counters.duplicates, report.duplicates.len());
        add(&self.counters.rejected, report.rejected.len());
    }

    fn error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Consumes usage events from the event bus into [`Metering`].
///
/// Contract:
/// - It joins consumer group [`ConsumerConfig::group`] of [`ConsumerConfig::topic`]
///   and takes batches of up to [`ConsumerConfig::batch_size`] events. Each batch is
///   grouped by tenant and written with [`Metering::ingest`] (validation, tenant
///   directory, deduplication and rollups as for any caller), up to
///   [`ConsumerConfig::concurrency`] calls at once (each is a transaction of its
///   own).
/// - The batch is acknowledged only after every ingest call of it succeeded, so the
///   group's position never passes an event the store has not committed. A crash
///   in between delivers the batch again; its events are then duplicates and count
///   nothing: each event counts exactly once.
/// - Rejected events (invalid, of an unknown tenant) are logged with their reason
///   and acknowledged with the batch: they would be rejected forever.
/// - Any error (store unavailable, commit refused) leaves the batch
///   unacknowledged: the consumer waits (100 ms, doubling up to
///   [`ConsumerConfig::max_backoff`]) and retries the calls that failed, for as long
///   as it takes. [`ConsumerStats::errors`] counts the
///   attempts that failed.
pub struct UsageConsumer {
    metering: Metering,
    bus: Arc<dyn EventBus>,
    config: ConsumerConfig,
    stats: ConsumerStats,
}

impl std::fmt::Debug for UsageConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageConsumer")
            .field("bus", &self.bus)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// One tenant's events of a batch, at most [`MAX_BATCH`].
struct Chunk {
    tenant: TenantId,
    events: Vec<UsageEvent>,
}

/// The events of `deliveries` grouped by tenant (tenants in order of first
/// appearance, each tenant's events in delivery order), in chunks of at most
/// [`MAX_BATCH`].
fn chunks(deliveries: &[Delivery]) -> Vec<Chunk> {
    let mut by_tenant: Vec<(TenantId, Vec<UsageEvent>)> = Vec::new();
    let mut index: HashMap<TenantId, usize> = HashMap::new();
    for delivery in deliveries {
        let tenant = delivery.event().tenant_id();
        let event = UsageEvent::from(delivery.event().clone());
        let slot = *index.entry(tenant).or_insert_with(|| {
            by_tenant.push((tenant, Vec::new()));
            by_tenant.len() - 1
        });
        if let Some((_, events)) = by_tenant.get_mut(slot) {
            events.push(event);
        }
    }
    let mut out = Vec::with_capacity(by_tenant.len());
    for (tenant, mut events) in by_tenant {
        while events.len() > MAX_BATCH {
            let rest = events.split_off(MAX_BATCH);
            out.push(Chunk { tenant, events });
            events = rest;
        }
        out.push(Chunk { tenant, events });
    }
    out
}

/// `chunks` in at most `n` groups of consecutive chunks with about as many events
/// each: one store call per group.
fn groups(chunks: Vec<Chunk>, n: usize) -> Vec<Vec<Chunk>> {
    let total: usize = chunks.iter().map(|c| c.events.len()).sum();
    let target = total.div_ceil(n.max(1)).max(1);
    let mut out: Vec<Vec<Chunk>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for chunk in chunks {
        size += chunk.events.len();
        current.push(chunk);
        if size >= target {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Bounded exponential waits, cut short by shutdown.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF.min(max),
            max,
        }
    }

    /// Waits the next delay: `false` if `shutdown` completed first.
    async fn wait<F: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut F>) -> bool {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        tokio::select! {
            biased;
            () = shutdown.as_mut() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl UsageConsumer {
    /// A consumer of `bus` into `metering` with the default [`ConsumerConfig`].
    #[must_use]
    pub fn new(metering: Metering, bus: Arc<dyn EventBus>) -> Self {
        Self {
            metering,
            bus,
            config: ConsumerConfig::default(),
            stats: ConsumerStats::default(),
        }
    }

    /// Uses `config`.
    #[must_use]
    pub fn with_config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// The consumer's counters (a shared handle: it keeps counting after `run`
    /// starts).
    #[must_use]
    pub fn stats(&self) -> ConsumerStats {
        self.stats.clone()
    }

    /// Subscribes, then consumes batches until `shutdown` completes. A batch in hand
    /// is finished (ingested and acknowledged) before it returns, unless it is
    /// waiting to retry a failure then: that batch stays unacknowledged and comes
    /// again to the group. Errors: `InvalidInput` on field `batch_size` or
    /// `concurrency` when it is 0, and whatever [`EventBus::subscribe`] returns (e.g. `InvalidInput` for a bad
    /// topic or group name, `Unavailable`); failures after subscribing are retried,
    /// never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        if self.config.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if self.config.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        let mut sub = self
            .bus
            .subscribe(&self.config.topic, &self.config.group)
            .await?;
        tracing::info!(
            topic = %self.config.topic,
            group = %self.config.group,
            "usage consumer started"
        );
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            let polled = tokio::select! {
                biased;
                () = shutdown.as_mut() => break,
                polled = sub.next_batch(self.config.batch_size, self.config.poll_timeout) => polled,
            };
            let deliveries = match polled {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    self.stats.error();
                    tracing::warn!(%error, topic = %self.config.topic, "receiving usage events failed");
                    if backoff.wait(&mut shutdown).await {
                        continue;
                    }
                    break;
                }
            };
            backoff = Backoff::new(self.config.max_backoff);
            if deliveries.is_empty() {
                continue;
            }
            if !self.consume(&mut *sub, &deliveries, &mut shutdown).await {
                break;
            }
        }
        tracing::info!(group = %self.config.group, "usage consumer stopped");
        Ok(())
    }

    /// Ingests and acknowledges one batch, retrying failures: `false` if `shutdown`
    /// completed during a wait (the batch is then left unacknowledged).
    async fn consume<F: Future<Output = ()>>(
        &self,
        sub: &mut dyn Subscription,
        deliveries: &[Delivery],
        shutdown: &mut Pin<&mut F>,
    ) -> bool {
        add(&self.stats.counters.received, deliveries.len());
        let mut backoff = Backoff::new(self.config.max_backoff);
        let mut pending = groups(chunks(deliveries), self.config.concurrency);
        while !pending.is_empty() {
            let mut outcomes = futures_util::stream::iter(std::mem::take(&mut pending))
                .map(|group| async move {
                    let calls: Vec<(TenantId, &[UsageEvent])> = group
                        .iter()
                        .map(|c| (c.tenant, c.events.as_slice()))
                        .collect();
                    let outcome = self.metering.ingest_many(&calls).await;
                    (group, outcome)
                })
                .buffer_unordered(self.config.concurrency.max(1));
            while let Some((group, outcome)) = outcomes.next().await {
                match outcome {
                    Ok(reports) => {
                        for (chunk, report) in group.iter().zip(&reports) {
                            self.log_rejections(chunk, report);
                            self.stats.record(report);
                        }
                    }
                    Err(error) => {
                        self.stats.error();
                        tracing::warn!(
                            %error,
                            tenants = group.len(),
                            events = group.iter().map(|c| c.events.len()).sum::<usize>(),
                            "ingesting usage events failed: retrying"
                        );
                        pending.push(group);
                    }
                }
            }
            drop(outcomes);
            if !pending.is_empty() && !backoff.wait(shutdown).await {
                return false;
            }
        }
        loop {
            match sub.ack_batch(deliveries).await {
                Ok(()) => {
                    self.stats.counters.batches.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(error) => {
                    self.stats.error();
                    tracing::warn!(%error, "acknowledging usage events failed: retrying");
                    if !backoff.wait(shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    fn log_rejections(&self, chunk: &Chunk, report: &IngestReport) {
        for rejection in &report.rejected {
            let id = chunk
                .events
                .get(rejection.index)
                .map(|e| e.id.to_string())
                .unwrap_or_default();
            tracing::warn!(
                tenant = %chunk.tenant,
                event = %id,
                field = %rejection.field,
                reason = %rejection.reason,
                topic = %self.config.topic,
                "usage event rejected: acknowledged without counting it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(events: usize) -> Chunk {
        let tenant = TenantId::new();
        let events = (0..events)
            .map(|i| {
                let event = tenancy_core::events::Event::new(
                    tenant,
                    "api.call",
                    "/test",
                    "s",
                    serde_json::json!({ "i": i }),
                )
                .unwrap();
                UsageEvent::from(event)
            })
            .collect();
        Chunk { tenant, events }
    }

    fn sizes(groups: &[Vec<Chunk>]) -> Vec<Vec<usize>> {
        groups
            .iter()
            .map(|g| g.iter().map(|c| c.events.len()).collect())
            .collect()
    }

    #[test]
    fn groups_share_the_events_out_in_order() {
        let make = || vec![chunk(3), chunk(1), chunk(2), chunk(2), chunk(4)];
        assert_eq!(sizes(&groups(make(), 1)), vec![vec![3, 1, 2, 2, 4]]);
        assert_eq!(sizes(&groups(make(), 2)), vec![vec![3, 1, 2], vec![2, 4]]);
        assert_eq!(
            sizes(&groups(make(), 5)),
            vec![vec![3], vec![1, 2], vec![2, 4]]
        );
        assert_eq!(sizes(&groups(make(), 100)).len(), 5);
        assert!(groups(Vec::new(), 3).is_empty());
    }
}
