//! Rollups: what one event adds to which (meter, window, group) cell, how a batch's
//! new events add up into one delta per cell, and how deltas and stored rows merge.
//! Every backend applies the same arithmetic (PostgreSQL in SQL, the others here).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tenancy_core::{Error, Result};
use uuid::Uuid;

use crate::model::{Aggregation, MeterKey, UsageEvent, Window};

/// A rollup cell of one tenant: the aggregate of a meter over one window and group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellKey {
    /// The meter.
    pub meter: MeterKey,
    /// The window size.
    pub window: Window,
    /// The window's start (Unix seconds).
    pub window_start: i64,
    /// The group: canonical JSON of the dimension values (`{}` when ungrouped).
    pub group_key: String,
}

/// What one event adds to one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The cell.
    pub cell: CellKey,
    /// The meter's aggregation.
    pub aggregation: Aggregation,
    /// The event's value (1 for `count`, 0 for `unique_count`).
    pub value: Decimal,
    /// The distinct value a `unique_count` meter counts.
    pub unique_value: Option<String>,
}

/// A validated event with its contributions to the tenant's meters.
#[derive(Debug, Clone)]
pub struct PreparedEvent<'a> {
    /// The event, to store.
    pub event: &'a UsageEvent,
    /// What it adds if it is new.
    pub contributions: Vec<Contribution>,
}

/// What [`crate::MeteringStore::ingest`] writes: validated events with distinct ids.
#[derive(Debug, Clone)]
pub struct IngestBatch<'a> {
    /// The events, with distinct ids.
    pub events: Vec<PreparedEvent<'a>>,
    /// The most distinct values a unique-count cell keeps.
    pub unique_bound: u64,
}

/// What a batch's new events add to one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellDelta {
    /// The meter's aggregation.
    pub aggregation: Aggregation,
    /// New events in the cell.
    pub events: i64,
    /// Their aggregate (for `unique_count`: how many new distinct values were stored,
    /// set by the backend once it knows).
    pub value: Decimal,
    /// For `latest`: the time of the latest event.
    pub latest_time: Option<DateTime<Utc>>,
    /// For `latest`: the id of the latest event.
    pub latest_id: Option<Uuid>,
    /// For `unique_count`: the distinct values of the new events.
    pub unique_values: BTreeSet<String>,
    /// For `unique_count`: the cell reached its bound.
    pub saturated: bool,
}

/// A stored rollup row of one meter and window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// The window's start (Unix seconds).
    pub window_start: i64,
    /// The group (canonical JSON).
    pub group_key: String,
    /// Events counted.
    pub events: i64,
    /// The aggregate (for `unique_count`: the stored distinct values).
    pub value: Decimal,
    /// For `latest`: the time of the latest event.
    pub latest_time: Option<DateTime<Utc>>,
    /// For `latest`: its id.
    pub latest_id: Option<Uuid>,
    /// For `unique_count`: the cell reached its bound.
    pub saturated: bool,
}

/// A stored distinct value of a unique-count cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UniqueValue {
    /// The window's start (Unix seconds).
    pub window_start: i64,
    /// The group (canonical JSON).
    pub group_key: String,
    /// The value.
    pub value: String,
}

fn overflow(cell: &CellKey) -> Error {
    Error::invalid(
        "events",
        format!(
            "the aggregate of meter `{}` in the {} window starting {} overflows",
            cell.meter,
            cell.window,
            crate::model::time_of(cell.window_start)
        ),
    )
}

fn later(a: (DateTime<Utc>, Uuid), b: Option<(DateTime<Utc>, Uuid)>) -> bool {
    b.is_none_or(|b| a > b)
}

impl CellDelta {
    fn new(aggregation: Aggregation) -> Self {
        Self {
            aggregation,
            events: 0,
            value: Decimal::ZERO,
            latest_time: None,
            latest_id: None,
            unique_values: BTreeSet::new(),
            saturated: false,
        }
    }

    fn add(&mut self, cell: &CellKey, c: &Contribution, event: &UsageEvent) -> Result<()> {
        self.events += 1;
        match self.aggregation {
            Aggregation::Count | Aggregation::Sum => {
                self.value = self
                    .value
                    .checked_add(c.value)
                    .ok_or_else(|| overflow(cell))?;
            }
            Aggregation::Min => {
                self.value = if self.events == 1 {
                    c.value
                } else {
                    self.value.min(c.value)
                };
            }
            Aggregation::Max => {
                self.value = if self.events == 1 {
                    c.value
                } else {
                    self.value.max(c.value)
                };
            }
            Aggregation::Latest => {
                let current = self.latest_time.zip(self.latest_id);
                if later((event.time, event.id), current) {
                    self.value = c.value;
                    self.latest_time = Some(event.time);
                    self.latest_id = Some(event.id);
                }
            }
            Aggregation::UniqueCount => {
                if let Some(v) = &c.unique_value {
                    self.unique_values.insert(v.clone());
                }
            }
        }
        Ok(())
    }
}

impl IngestBatch<'_> {
    /// The deltas of the events whose `inserted` flag is set, one per cell, in cell
    /// order (so concurrent writers lock cells in the same order).
    pub fn deltas(&self, inserted: &[bool]) -> Result<BTreeMap<CellKey, CellDelta>> {
        let mut out: BTreeMap<CellKey, CellDelta> = BTreeMap::new();
        for (prepared, &new) in self.events.iter().zip(inserted) {
            if !new {
                continue;
            }
            for c in &prepared.contributions {
                let delta = out
                    .entry(c.cell.clone())
                    .or_insert_with(|| CellDelta::new(c.aggregation));
                delta.add(&c.cell, c, prepared.event)?;
            }
        }
        Ok(out)
    }
}

/// For a unique-count cell holding `current` distinct values, to which `added` new
/// values were just stored: how many of them may stay under `bound`, and whether the
/// cell is now saturated (some had to go).
#[must_use]
pub fn unique_allowance(bound: u64, current: i64, added: usize) -> (usize, bool) {
    let current = u64::try_from(current).unwrap_or(0);
    let room = usize::try_from(bound.saturating_sub(current)).unwrap_or(usize::MAX);
    if added > room {
        (room, true)
    } else {
        (added, false)
    }
}

impl RollupRow {
    /// A new row holding `delta`.
    #[must_use]
    pub fn from_delta(cell: &CellKey, delta: &CellDelta) -> Self {
        Self {
            window_start: cell.window_start,
            group_key: cell.group_key.clone(),
            events: delta.events,
            value: delta.value,
            latest_time: delta.latest_time,
            latest_id: delta.latest_id,
            saturated: delta.saturated,
        }
    }

    /// Adds `delta` to this row.
    pub fn apply(&mut self, cell: &CellKey, delta: &CellDelta) -> Result<()> {
        self.events = self
            .events
            .checked_add(delta.events)
            .ok_or_else(|| overflow(cell))?;
        match delta.aggregation {
            Aggregation::Count | Aggregation::Sum | Aggregation::UniqueCount => {
                self.value = self
                    .value
                    .checked_add(delta.value)
                    .ok_or_else(|| overflow(cell))?;
            }
            Aggregation::Min => self.value = self.value.min(delta.value),
            Aggregation::Max => self.value = self.value.max(delta.value),
            Aggregation::Latest => {
                if let Some(new) = delta.latest_time.zip(delta.latest_id)
                    && later(new, self.latest_time.zip(self.latest_id))
                {
                    self.value = delta.value;
                    self.latest_time = delta.latest_time;
                    self.latest_id = delta.latest_id;
                }
            }
        }
        self.saturated |= delta.saturated;
        Ok(())
    }
}

/// Merges stored rows (of several windows or groups) into one aggregate. For
/// `unique_count` the merged value is only right for a single row: callers count
/// distinct values from the stored sets instead.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    aggregation: Aggregation,
    pub(crate) events: i64,
    pub(crate) value: Option<Decimal>,
    latest: Option<(DateTime<Utc>, Uuid)>,
    pub(crate) saturated: bool,
}

impl Accumulator {
    pub(crate) fn new(aggregation: Aggregation) -> Self {
        Self {
            aggregation,
            events: 0,
            value: None,
            latest: None,
            saturated: false,
        }
    }

    pub(crate) fn add(&mut self, row: &RollupRow) {
        self.events = self.events.saturating_add(row.events);
        self.saturated |= row.saturated;
        let merged = match (self.aggregation, self.value) {
            (_, None) => row.value,
            (Aggregation::Count | Aggregation::Sum | Aggregation::UniqueCount, Some(v)) => {
                v.saturating_add(row.value)
            }
            (Aggregation::Min, Some(v)) => v.min(row.value),
            (Aggregation::Max, Some(v)) => v.max(row.value),
            (Aggregation::Latest, Some(v)) => match row.latest_time.zip(row.latest_id) {
                Some(new) if later(new, self.latest) => row.value,
                _ => v,
            },
        };
        if self.aggregation == Aggregation::Latest
            && let Some(new) = row.latest_time.zip(row.latest_id)
            && later(new, self.latest)
        {
            self.latest = Some(new);
        }
        self.value = Some(merged);
    }

    /// The value with none merged: 0 for counts and sums, `None` otherwise.
    pub(crate) fn total(&self) -> Option<Decimal> {
        match (self.value, self.aggregation) {
            (Some(v), _) => Some(v.normalize()),
            (None, Aggregation::Count | Aggregation::Sum | Aggregation::UniqueCount) => {
                Some(Decimal::ZERO)
            }
            (None, _) => None,
        }
    }
}
