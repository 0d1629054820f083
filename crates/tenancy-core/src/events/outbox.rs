//! The transactional outbox: a store writes the events a change implies into its
//! `event_outbox` in the same transaction as the change, and a [`Relay`] publishes the
//! pending rows in order and then marks them sent. A crash between publishing and
//! marking re-sends the rows on the next pass: events may be duplicated (consumers are
//! idempotent on the event id), never lost, and never invented by a change that rolled
//! back.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Event, EventBus, check_topic};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::ids::EventId;

/// A pending row of the outbox: an event and the topic it goes to (under its tenant
/// id as the key).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The topic to publish to.
    pub topic: String,
    /// The event.
    pub event: Event,
}

/// The outbox of a store, as the [`Relay`] sees it. The SQL backends also offer an
/// `enqueue` that writes into a transaction the caller holds, which is what makes a
/// change and its events atomic.
///
/// Contract (checked by `conformance::events`): [`OutboxStore::pending`] returns the
/// unsent rows in the order they were enqueued (per transaction; rows of concurrent
/// transactions may interleave); a row stays pending until [`OutboxStore::mark_sent`]
/// names it; an event id is enqueued at most once.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Enqueues `event` for `topic` in a transaction of its own. `AlreadyExists` when
    /// its id is in the outbox already; `InvalidInput` for an invalid topic name.
    async fn enqueue(&self, topic: &str, event: &Event) -> Result<()>;

    /// At most `limit` unsent rows, oldest first. `InvalidInput` on field `limit`
    /// when it is 0.
    async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>>;

    /// Marks the rows of `ids` sent at `now`; returns how many were pending (unknown
    /// or already sent ids are ignored).
    async fn mark_sent(&self, ids: &[EventId], now: DateTime<Utc>) -> Result<u64>;

    /// Deletes the rows sent before `before`; returns how many.
    async fn purge_sent(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// An outbox in memory, to embed in a memory store's state so that a change and its
/// events are written under the same lock (as `MemoryStore` does). Nothing survives
/// the process.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    next_seq: u64,
    rows: BTreeMap<u64, MemoryRow>,
    by_id: HashMap<EventId, u64>,
}

#[derive(Debug)]
struct MemoryRow {
    entry: OutboxEntry,
    sent_at: Option<DateTime<Utc>>,
}

impl MemoryOutbox {
    /// An empty outbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an event with `id` was enqueued (and not purged).
    #[must_use]
    pub fn contains(&self, id: EventId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// See [`OutboxStore::enqueue`].
    pub fn enqueue(&mut self, topic: &str, event: &Event) -> Result<()> {
        check_topic(topic)?;
        if self.by_id.contains_key(&event.id()) {
            return Err(already_enqueued(event.id()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(event.id(), seq);
        self.rows.insert(
            seq,
            MemoryRow {
                entry: OutboxEntry {
                    topic: topic.to_owned(),
                    event: event.clone(),
                },
                sent_at: None,
            },
        );
        Ok(())
    }

    /// See [`OutboxStore::pending`].
    pub fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        check_limit(limit)?;
        Ok(self
            .rows
            .values()
            .filter(|row| row.sent_at.is_none())
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|row| row.entry.clone())
            .collect())
    }

    /// See [`OutboxStore::mark_sent`].
    pub fn mark_sent(&mut self, ids: &[EventId], now: DateTime<Utc>) -> u64 {
        let mut marked = 0;
        for id in ids {
            let row = self.by_id.get(id).and_then(|seq| self.rows.get_mut(seq));
            if let Some(row) = row
                && row.sent_at.is_none()
            {
                row.sent_at = Some(now);
                marked += 1;
            }
        }
        marked
    }

    /// See [`OutboxStore::purge_sent`].
    pub fn purge_sent(&mut self, before: DateTime<Utc>) -> u64 {
        let gone: Vec<(u64, EventId)> = self
            .rows
            .iter()
            .filter(|(_, row)| row.sent_at.is_some_and(|at| at < before))
            .map(|(seq, row)| (*seq, row.entry.event.id()))
            .collect();
        for (seq, id) in &gone {
            self.rows.remove(seq);
            self.by_id.remove(id);
        }
        gone.len() as u64
    }
}

pub(crate) fn already_enqueued(id: EventId) -> Error {
    Error::AlreadyExists(format!("event `{id}` is already in the outbox"))
}

pub(crate) fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 {
        return Err(Error::invalid("limit", "must be at least 1"));
    }
    Ok(())
}

/// Publishes an outbox's pending events to a bus and marks them sent. Run one relay
/// per outbox: two relays would both publish a row before either marks it (duplicates,
/// which consumers absorb, but also interleaving that breaks per-key order).
pub struct Relay {
    outbox: Arc<dyn OutboxStore>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    batch_size: u32,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("bus", &self.bus)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `outbox` to `bus`, 100 events per pass, on the system clock.
    #[must_use]
    pub fn new(outbox: Arc<dyn OutboxStore>, bus: Arc<dyn EventBus>) -> Self {
        Self {
            outbox,
            bus,
            clock: Arc::new(SystemClock),
            batch_size: 100,
        }
    }

    /// The same relay publishing at most `batch_size` events per pass (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The same relay stamping `sent_at` from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// One pass: publishes up to a batch of pending events in outbox order (each
    /// under its tenant id) and marks them sent; returns how many were published.
    /// When publishing fails part-way, the events published before the failure are
    /// marked sent and the error is returned; the rest stay pending for the next pass.
    pub async fn relay_once(&self) -> Result<usize> {
        let pending = self.outbox.pending(self.batch_size).await?;
        let mut published: Vec<EventId> = Vec::with_capacity(pending.len());
        let mut failure = None;
        for run in pending.chunk_by(|a, b| a.topic == b.topic) {
            let Some(first) = run.first() else { continue };
            let keys: Vec<String> = run
                .iter()
                .map(|entry| entry.event.tenant_id().to_string())
                .collect();
            let batch: Vec<(&str, &Event)> = keys
                .iter()
                .map(String::as_str)
                .zip(run.iter().map(|entry| &entry.event))
                .collect();
            match self.bus.publish_batch(&first.topic, &batch).await {
                Ok(()) => published.extend(run.iter().map(|entry| entry.event.id())),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !published.is_empty() {
            self.outbox.mark_sent(&published, self.clock.now()).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(published.len()),
        }
    }

    /// Relays until `shutdown` completes: passes follow each other while batches come
    /// back full, and otherwise (or after an error, which is logged) wait `idle`.
    pub async fn run(&self, idle: Duration, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let wait = match self.relay_once().await {
                Ok(n) if u32::try_from(n).is_ok_and(|n| n >= self.batch_size) => Duration::ZERO,
                Ok(_) => idle,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay pass failed");
                    idle
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
