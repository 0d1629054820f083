//! [`Metering`]: the metering API. It validates meters, events, queries and quotas,
//! turns events into rollup contributions and calls the store; the store makes
//! ingestion atomic and idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tenancy_core::clock::{Clock, SystemClock};
use tenancy_core::identity::{Identity, TenantStatus};
use tenancy_core::{Error, ErrorKind, Result, TenantId};

use crate::model::{
    Aggregation, DEFAULT_UNIQUE_BOUND, GroupTotal, IngestReport, MAX_BATCH, MAX_DATA_BYTES,
    MAX_DIMENSION_VALUE_CHARS, MAX_METERS, MAX_QUERY_WINDOWS, MAX_UNITS, Meter, MeterChanges,
    MeterKey, MeterTotal, NewMeter, PropertyPath, Quota, QuotaBalance, QuotaDecision, QuotaLimit,
    QuotaMode, Rejection, UsageEvent, UsageQuery, UsageRow, Window, from_units, quota_units,
    time_of, validate_description, validate_group_by, validate_windows,
};
use crate::rollup::{Accumulator, CellKey, Contribution, IngestBatch, PreparedEvent, RollupRow};
use crate::store::{MeteringStore, QuotaCounter};

/// Tells whether a tenant may record usage. Ingestion rejects every event of a tenant
/// it does not know.
#[async_trait]
pub trait TenantDirectory: Send + Sync {
    /// Whether `tenant` exists and is not deleted.
    async fn is_known(&self, tenant: TenantId) -> Result<bool>;
}

/// The identity service is a tenant directory: a tenant is known while it exists and
/// is not deleted (a suspended tenant's usage is still recorded).
#[async_trait]
impl TenantDirectory for Identity {
    async fn is_known(&self, tenant: TenantId) -> Result<bool> {
        match self.tenant(tenant).await {
            Ok(t) => Ok(t.status != TenantStatus::Deleted),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Tuning of a [`Metering`].
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    /// How late an event may arrive: an event whose time is further in the past is
    /// rejected. Default 7 days.
    pub lateness: Duration,
    /// How far ahead of the clock an event's time may be. Default 5 minutes.
    pub max_future: Duration,
    /// The most distinct values a unique-count meter keeps per (window, group).
    /// Beyond it the count saturates: further new values are not stored or counted,
    /// events are still accepted, and rows and totals say `saturated`. Default
    /// 100,000.
    pub unique_bound: u64,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            lateness: Duration::days(7),
            max_future: Duration::minutes(5),
            unique_bound: DEFAULT_UNIQUE_BOUND,
        }
    }
}

/// Meters, ingestion, queries and quotas for every tenant.
#[derive(Clone)]
pub struct Metering {
    store: Arc<dyn MeteringStore>,
    counter: Arc<dyn QuotaCounter>,
    tenants: Option<Arc<dyn TenantDirectory>>,
    clock: Arc<dyn Clock>,
    config: MeteringConfig,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Refusal = (String, String);

/// An ingest call's validation: what [`Metering::plan`] found and what is left to
/// store.
struct Plan<'a> {
    tenant: TenantId,
    report: IngestReport,
    batch: Option<IngestBatch<'a>>,
    /// The index in the call of each event of `batch`.
    indexes: Vec<usize>,
}

impl Plan<'_> {
    /// The report, given per event of the batch whether the store found it new.
    fn settle(mut self, inserted: &[bool]) -> Result<IngestReport> {
        if inserted.len() != self.indexes.len() {
            return Err(Error::Internal(format!(
                "the store answered for {} of {} events",
                inserted.len(),
                self.indexes.len()
            )));
        }
        for (index, new) in self.indexes.into_iter().zip(inserted) {
            if *new {
                self.report.accepted.push(index);
            } else {
                self.report.duplicates.push(index);
            }
        }
        self.report.duplicates.sort_unstable();
        Ok(self.report)
    }
}

fn refusal(e: Error) -> Refusal {
    match e {
        Error::InvalidInput { field, reason } => (field, reason),
        other => ("event".into(), other.to_string()),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn decimal_of(n: &serde_json::Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Decimal::from(u));
    }
    let text = n.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

/// A dimension or unique value as text: strings as they are, numbers and booleans
/// in their JSON form.
fn dimension_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The canonical group key of dimension values.
pub(crate) fn group_key(group: &BTreeMap<String, String>) -> String {
    serde_json::to_string(group).unwrap_or_else(|_| "{}".into())
}

fn parse_group(key: &str) -> BTreeMap<String, String> {
    serde_json::from_str(key).unwrap_or_default()
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        if self.0 > MAX_DATA_BYTES {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_text(field: &str, value: &str, what: &str) -> Result<(), Refusal> {
    if value.chars().count() > 256 {
        return Err((
            field.into(),
            format!("{what} must be at most 256 characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err((
            field.into(),
            format!("{what} must not contain control characters"),
        ));
    }
    Ok(())
}

fn human(d: Duration) -> String {
    if d.num_seconds() % 86_400 == 0 && d.num_days() != 0 {
        format!("{} days", d.num_days())
    } else if d.num_seconds() % 3_600 == 0 && d.num_hours() != 0 {
        format!("{} hours", d.num_hours())
    } else if d.num_seconds() % 60 == 0 && d.num_minutes() != 0 {
        format!("{} minutes", d.num_minutes())
    } else {
        format!("{} seconds", d.num_seconds())
    }
}

impl Metering {
    /// Metering over `store`, which also counts quotas, with the default
    /// configuration, the system clock and no tenant directory (every tenant is
    /// accepted: add one with [`Metering::with_tenants`]).
    #[must_use]
    pub fn new(store: Arc<dyn MeteringStore>) -> Self {
        let counter: Arc<dyn QuotaCounter> = store.clone();
        Self {
            store,
            counter,
            tenants: None,
            clock: Arc::new(SystemClock),
            config: MeteringConfig::default(),
        }
    }

    /// Uses `config`.
    #[must_use]
    pub fn with_config(mut self, config: MeteringConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses `clock` (for lateness and quota periods).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Rejects events of tenants `tenants` does not know.
    #[must_use]
    pub fn with_tenants(mut self, tenants: Arc<dyn TenantDirectory>) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// Counts quotas in `counter` (e.g. Redis) instead of the store.
    #[must_use]
    pub fn with_quota_counter(mut self, counter: Arc<dyn QuotaCounter>) -> Self {
        self.counter = counter;
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn MeteringStore> {
        &self.store
    }

    // ----- meters -----

    /// Creates a meter; `InvalidInput` naming the field for a bad definition,
    /// `AlreadyExists` if the key is taken.
    pub async fn create_meter(&self, tenant: TenantId, new: NewMeter) -> Result<Meter> {
        let meter = Meter::from_new(tenant, &new, self.clock.now())?;
        if self.store.list_meters(tenant).await?.len() >= MAX_METERS {
            return Err(Error::invalid(
                "key",
                format!("a tenant has at most {MAX_METERS} meters"),
            ));
        }
        self.store.insert_meter(tenant, &meter).await?;
        Ok(meter)
    }

    /// The meter `key`; `NotFound` if none.
    pub async fn meter(&self, tenant: TenantId, key: &str) -> Result<Meter> {
        self.store
            .meter(tenant, &MeterKey::parse("meter", key)?)
            .await
    }

    /// Every meter of `tenant`, sorted by key.
    pub async fn list_meters(&self, tenant: TenantId) -> Result<Vec<Meter>> {
        self.store.list_meters(tenant).await
    }

    /// Changes meter `key` at `version` (the version read); `Conflict` if stale.
    pub async fn update_meter(
        &self,
        tenant: TenantId,
        key: &str,
        version: i64,
        changes: MeterChanges,
    ) -> Result<Meter> {
        let key = MeterKey::parse("meter", key)?;
        let mut meter = self.store.meter(tenant, &key).await?;
        if meter.version != version {
            return Err(Error::stale("meter", &key, version));
        }
        if let Some(description) = changes.description {
            validate_description(&description)?;
            meter.description = description;
        }
        if let Some(group_by) = changes.group_by {
            meter.group_by = validate_group_by(&group_by)?;
        }
        if let Some(windows) = changes.windows {
            meter.windows = validate_windows(&windows)?;
        }
        meter.version += 1;
        meter.updated_at = self.clock.now();
        self.store.update_meter(tenant, &meter).await?;
        Ok(meter)
    }

    /// Deletes meter `key` at `version` with its rollups and quota (stored events
    /// stay); `Conflict` if stale.
    pub async fn delete_meter(&self, tenant: TenantId, key: &str, version: i64) -> Result<()> {
        let key = MeterKey::parse("meter", key)?;
        self.store.delete_meter(tenant, &key, version).await
    }

    // ----- ingestion -----

    /// Ingests one event: `Ok(true)` if it was new, `Ok(false)` for a duplicate,
    /// `InvalidInput` naming the field if it is refused.
    pub async fn ingest_event(&self, tenant: TenantId, event: &UsageEvent) -> Result<bool> {
        let report = self.ingest(tenant, std::slice::from_ref(event)).await?;
        if let Some(r) = report.rejected.into_iter().next() {
            return Err(Error::invalid(r.field, r.reason));
        }
        Ok(!report.accepted.is_empty())
    }

    /// Ingests up to [`MAX_BATCH`] events of `tenant` (`InvalidInput` on field
    /// `events` for more). Each event is validated against the tenant's meters of its
    /// type; refused events are reported with their index and reason and the valid
    /// rest is stored and counted atomically. An event id the tenant sent before
    /// (ever, or earlier in the batch) is a duplicate: reported, not counted.
    pub async fn ingest(&self, tenant: TenantId, events: &[UsageEvent]) -> Result<IngestReport> {
        self.ingest_many(&[(tenant, events)])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("no report for the batch".into()))
    }

    /// [`Metering::ingest`] of several tenants' batches in one store call: the SQL
    /// stores write them all in one transaction, so a consumer pays one commit for a
    /// batch of many tenants. The reports are in the order of `batches`. Every batch
    /// is validated first (a batch over [`MAX_BATCH`] fails the call, nothing
    /// stored); on a store error some batches may be stored and others not, and
    /// ingesting them again is harmless (duplicates are never counted twice).
    pub async fn ingest_many(
        &self,
        batches: &[(TenantId, &[UsageEvent])],
    ) -> Result<Vec<IngestReport>> {
        let mut plans = Vec::with_capacity(batches.len());
        for (tenant, events) in batches {
            plans.push(self.plan(*tenant, events).await?);
        }
        let writes: Vec<(TenantId, &IngestBatch<'_>)> = plans
            .iter()
            .filter_map(|p| Some((p.tenant, p.batch.as_ref()?)))
            .collect();
        let mut inserted = if writes.is_empty() {
            Vec::new()
        } else {
            self.store.ingest_many(&writes).await?
        }
        .into_iter();
        plans
            .into_iter()
            .map(|plan| match plan.batch {
                Some(_) => {
                    let stored = inserted.next().ok_or_else(|| {
                        Error::Internal("the store answered for fewer batches".into())
                    })?;
                    plan.settle(&stored)
                }
                None => plan.settle(&[]),
            })
            .collect()
    }

    /// Validates `events` of `tenant` against its meters: the refusals and in-batch
    /// duplicates found, and the batch to store (none when nothing is left).
    async fn plan<'a>(&self, tenant: TenantId, events: &'a [UsageEvent]) -> Result<Plan<'a>> {
        if events.len() > MAX_BATCH {
            return Err(Error::invalid(
                "events",
                format!(
                    "a batch holds at most {MAX_BATCH} events, got {}",
                    events.len()
                ),
            ));
        }
        let mut plan = Plan {
            tenant,
            report: IngestReport::default(),
            batch: None,
            indexes: Vec::new(),
        };
        if events.is_empty() {
            return Ok(plan);
        }
        if let Some(tenants) = &self.tenants
            && !tenants.is_known(tenant).await?
        {
            plan.report.rejected = (0..events.len())
                .map(|index| Rejection {
                    index,
                    field: "tenant_id".into(),
                    reason: format!("unknown tenant `{tenant}`"),
                })
                .collect();
            return Ok(plan);
        }
        let meters = self.store.list_meters(tenant).await?;
        let mut by_type: HashMap<&str, Vec<&Meter>> = HashMap::new();
        for m in &meters {
            by_type.entry(m.event_type.as_str()).or_default().push(m);
        }
        let now = self.clock.now();
        let mut seen = HashSet::with_capacity(events.len());
        let mut batch = IngestBatch {
            events: Vec::with_capacity(events.len()),
            unique_bound: self.config.unique_bound,
        };
        for (index, event) in events.iter().enumerate() {
            match self.prepare(tenant, &by_type, event, now) {
                Err((field, reason)) => plan.report.rejected.push(Rejection {
                    index,
                    field,
                    reason,
                }),
                Ok(prepared) => {
                    if seen.insert(event.id) {
                        batch.events.push(prepared);
                        plan.indexes.push(index);
                    } else {
                        plan.report.duplicates.push(index);
                    }
                }
            }
        }
        if !batch.events.is_empty() {
            plan.batch = Some(batch);
        }
        Ok(plan)
    }

    fn prepare<'a>(
        &self,
        tenant: TenantId,
        by_type: &HashMap<&str, Vec<&Meter>>,
        event: &'a UsageEvent,
        now: DateTime<Utc>,
    ) -> Result<PreparedEvent<'a>, Refusal> {
        if event.id.is_nil() {
            return Err(("id".into(), "must not be the nil UUID".into()));
        }
        tenant.check_scope(event.tenant_id).map_err(refusal)?;
        crate::model::validate_event_type("type", &event.event_type).map_err(refusal)?;
        check_text("source", &event.source, "a source")?;
        check_text("subject", &event.subject, "a subject")?;
        if event.time < now - self.config.lateness {
            return Err((
                "time".into(),
                format!(
                    "`{}` is older than the allowed lateness of {}",
                    event.time.to_rfc3339(),
                    human(self.config.lateness)
                ),
            ));
        }
        if event.time > now + self.config.max_future {
            return Err((
                "time".into(),
                format!(
                    "`{}` is more than {} ahead of the clock",
                    event.time.to_rfc3339(),
                    human(self.config.max_future)
                ),
            ));
        }
        if !(event.data.is_object() || event.data.is_null()) {
            return Err((
                "data".into(),
                format!("must be a JSON object, got {}", json_kind(&event.data)),
            ));
        }
        if serde_json::to_writer(ByteCounter(0), &event.data).is_err() {
            return Err((
                "data".into(),
                format!("must be at most {MAX_DATA_BYTES} bytes of JSON"),
            ));
        }
        let mut contributions = Vec::new();
        let t = event.time.timestamp();
        for meter in by_type.get(event.event_type.as_str()).into_iter().flatten() {
            let (value, unique_value) = meter_value(meter, &event.data)?;
            let mut group = BTreeMap::new();
            for path in &meter.group_by {
                if let Some(v) = path.lookup(&event.data) {
                    let text = dimension_text(v).ok_or_else(|| {
                        (
                            format!("data.{path}"),
                            format!(
                                "group-by property `{path}` of meter `{}` must be a string, number or boolean, got {}",
                                meter.key,
                                json_kind(v)
                            ),
                        )
                    })?;
                    if text.chars().count() > MAX_DIMENSION_VALUE_CHARS {
                        return Err((
                            format!("data.{path}"),
                            format!("must be at most {MAX_DIMENSION_VALUE_CHARS} characters"),
                        ));
                    }
                    group.insert(path.as_str().to_owned(), text);
                }
            }
            let key = group_key(&group);
            for &window in &meter.windows {
                contributions.push(Contribution {
                    cell: CellKey {
                        meter: meter.key.clone(),
                        window,
                        window_start: window.start_of(t),
                        group_key: key.clone(),
                    },
                    aggregation: meter.aggregation,
                    value,
                    unique_value: unique_value.clone(),
                });
            }
        }
        Ok(PreparedEvent {
            event,
            contributions,
        })
    }

    // ----- queries -----

    /// One meter over `[from, to)` by `window`, grouped by and filtered on the
    /// meter's dimensions. Reads rollup rows (and, for a unique count merged across
    /// groups, the stored sets), never raw events. Only windows with events have
    /// rows; rows are sorted by window start, then group.
    pub async fn query(&self, tenant: TenantId, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        let key = MeterKey::parse("meter", &query.meter)?;
        let meter = self.store.meter(tenant, &key).await?;
        let window = query.window;
        if !meter.windows.contains(&window) {
            return Err(Error::invalid(
                "window",
                format!(
                    "meter `{key}` keeps no `{window}` rollups; it keeps {}",
                    window_list(&meter.windows)
                ),
            ));
        }
        let (from, to) = range(window, query.from, query.to)?;
        let keep = dimensions(&meter, "group_by", &query.group_by)?;
        let filter_keys: Vec<String> = query.filter.keys().cloned().collect();
        dimensions(&meter, "filter", &filter_keys)?;

        let rows = self.store.rollups(tenant, &key, window, from, to).await?;
        let project = |group_key: &str| -> Option<BTreeMap<String, String>> {
            let group = parse_group(group_key);
            let matches = query
                .filter
                .iter()
                .all(|(k, v)| group.get(k).is_some_and(|g| g == v));
            matches.then(|| {
                group
                    .into_iter()
                    .filter(|(k, _)| keep.iter().any(|d| d.as_str() == k))
                    .collect()
            })
        };
        let mut merged: BTreeMap<(i64, BTreeMap<String, String>), Accumulator> = BTreeMap::new();
        let mut parts: HashMap<(i64, BTreeMap<String, String>), usize> = HashMap::new();
        for row in &rows {
            let Some(group) = project(&row.group_key) else {
                continue;
            };
            let k = (row.window_start, group);
            *parts.entry(k.clone()).or_default() += 1;
            merged
                .entry(k)
                .or_insert_with(|| Accumulator::new(meter.aggregation))
                .add(row);
        }
        let mut distinct: HashMap<(i64, BTreeMap<String, String>), usize> = HashMap::new();
        if meter.aggregation == Aggregation::UniqueCount && parts.values().any(|&n| n > 1) {
            let mut sets: HashMap<(i64, BTreeMap<String, String>), HashSet<String>> =
                HashMap::new();
            for v in self
                .store
                .unique_values(tenant, &key, window, from, to)
                .await?
            {
                if let Some(group) = project(&v.group_key) {
                    sets.entry((v.window_start, group))
                        .or_default()
                        .insert(v.value);
                }
            }
            distinct = sets.into_iter().map(|(k, s)| (k, s.len())).collect();
        }
        Ok(merged
            .into_iter()
            .map(|((start, group), acc)| {
                let value = match distinct.get(&(start, group.clone())) {
                    Some(&n) => Decimal::from(n),
                    None => acc.total().unwrap_or_default(),
                };
                UsageRow {
                    window_start: time_of(start),
                    window_end: time_of(start + window.seconds()),
                    group,
                    value: value.normalize(),
                    events: u64::try_from(acc.events).unwrap_or(0),
                    saturated: acc.saturated,
                }
            })
            .collect())
    }

    /// Every meter's totals over the billing period `[from, to)`, overall and per
    /// group: read from the coarsest window each meter keeps that `from` and `to`
    /// align to (`InvalidInput` on `from` if none does). Sorted by meter key.
    pub async fn period_totals(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeterTotal>> {
        if from >= to {
            return Err(Error::invalid("to", "must be after `from`"));
        }
        self.totals_of(tenant, None, from, to).await
    }

    /// [`Metering::period_totals`] of the meters named in `keys` only (a billing plan's
    /// meters): the tenant's other meters need not align to the period. Meters that
    /// do not exist are left out.
    pub async fn period_totals_of(
        &self,
        tenant: TenantId,
        keys: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeterTotal>> {
        if from >= to {
            return Err(Error::invalid("to", "must be after `from`"));
        }
        self.totals_of(tenant, Some(keys), from, to).await
    }

    async fn totals_of(
        &self,
        tenant: TenantId,
        keys: Option<&[&str]>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeterTotal>> {
        let meters = self.store.list_meters(tenant).await?;
        let mut chosen = Vec::with_capacity(meters.len());
        for meter in meters {
            if keys.is_some_and(|keys| !keys.contains(&meter.key.as_str())) {
                continue;
            }
            let Some(window) = Window::COARSEST_FIRST
                .into_iter()
                .find(|w| meter.windows.contains(w) && w.is_aligned(from) && w.is_aligned(to))
            else {
                return Err(Error::invalid(
                    "from",
                    format!(
                        "the period is not aligned to any window meter `{}` keeps ({})",
                        meter.key,
                        window_list(&meter.windows)
                    ),
                ));
            };
            chosen.push((meter, window));
        }
        let wanted: Vec<(MeterKey, Window)> =
            chosen.iter().map(|(m, w)| (m.key.clone(), *w)).collect();
        let rows = self
            .store
            .rollups_of(tenant, &wanted, from.timestamp(), to.timestamp())
            .await?;
        let mut out = Vec::with_capacity(chosen.len());
        for ((meter, window), rows) in chosen.iter().zip(rows) {
            out.push(
                self.meter_total(tenant, meter, *window, from, to, rows)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn meter_total(
        &self,
        tenant: TenantId,
        meter: &Meter,
        window: Window,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows: Vec<RollupRow>,
    ) -> Result<MeterTotal> {
        let (from, to) = (from.timestamp(), to.timestamp());
        let mut total = Accumulator::new(meter.aggregation);
        let mut groups: BTreeMap<String, Accumulator> = BTreeMap::new();
        for row in &rows {
            total.add(row);
            groups
                .entry(row.group_key.clone())
                .or_insert_with(|| Accumulator::new(meter.aggregation))
                .add(row);
        }
        let mut distinct: Option<(usize, HashMap<String, usize>)> = None;
        if meter.aggregation == Aggregation::UniqueCount && !rows.is_empty() {
            let mut all = HashSet::new();
            let mut per_group: HashMap<String, HashSet<String>> = HashMap::new();
            for v in self
                .store
                .unique_values(tenant, &meter.key, window, from, to)
                .await?
            {
                all.insert(v.value.clone());
                per_group.entry(v.group_key).or_default().insert(v.value);
            }
            distinct = Some((
                all.len(),
                per_group.into_iter().map(|(k, s)| (k, s.len())).collect(),
            ));
        }
        let groups = groups
            .into_iter()
            .map(|(key, acc)| {
                let value = match &distinct {
                    Some((_, per_group)) => {
                        Decimal::from(per_group.get(&key).copied().unwrap_or(0))
                    }
                    None => acc.total().unwrap_or_default(),
                };
                GroupTotal {
                    group: parse_group(&key),
                    value,
                    events: u64::try_from(acc.events).unwrap_or(0),
                    saturated: acc.saturated,
                }
            })
            .collect();
        Ok(MeterTotal {
            meter: meter.key.clone(),
            aggregation: meter.aggregation,
            window,
            value: match &distinct {
                Some((all, _)) => Some(Decimal::from(*all)),
                None => total.total(),
            },
            events: u64::try_from(total.events).unwrap_or(0),
            saturated: total.saturated,
            groups,
        })
    }

    // ----- quotas -----

    /// Sets the quota of meter `meter`; `NotFound` if there is no such meter.
    pub async fn set_quota(
        &self,
        tenant: TenantId,
        meter: &str,
        limit: QuotaLimit,
    ) -> Result<Quota> {
        let key = MeterKey::parse("meter", meter)?;
        quota_units("limit", limit.limit)?;
        self.store.meter(tenant, &key).await?;
        let quota = Quota {
            tenant_id: tenant,
            meter: key,
            period: limit.period,
            limit: limit.limit.normalize(),
            mode: limit.mode,
            updated_at: self.clock.now(),
        };
        self.store.set_quota(tenant, &quota).await?;
        Ok(quota)
    }

    /// The quota of meter `meter`, if any.
    pub async fn quota(&self, tenant: TenantId, meter: &str) -> Result<Option<Quota>> {
        self.store
            .quota(tenant, &MeterKey::parse("meter", meter)?)
            .await
    }

    /// Deletes the quota of meter `meter`; whether there was one.
    pub async fn delete_quota(&self, tenant: TenantId, meter: &str) -> Result<bool> {
        self.store
            .delete_quota(tenant, &MeterKey::parse("meter", meter)?)
            .await
    }

    /// Atomically checks `amount` (> 0) against the meter's quota in the current
    /// period and consumes it if allowed: a hard quota refuses a consumption that
    /// would pass its limit (nothing is counted); a soft one counts it and reports
    /// `exceeded`. Concurrent callers never overspend a hard quota. Every counter
    /// stops at [`crate::MAX_QUOTA_VALUE`] per period, soft ones too. A meter
    /// without a quota allows everything and counts nothing.
    pub async fn check_and_consume(
        &self,
        tenant: TenantId,
        meter: &str,
        amount: Decimal,
    ) -> Result<QuotaDecision> {
        let key = MeterKey::parse("meter", meter)?;
        let units = quota_units("amount", amount)?;
        if units == 0 {
            return Err(Error::invalid("amount", "must be positive"));
        }
        let Some(quota) = self.store.quota(tenant, &key).await? else {
            self.store.meter(tenant, &key).await?;
            return Ok(QuotaDecision {
                allowed: true,
                exceeded: false,
                limit: None,
                used: Decimal::ZERO,
                remaining: None,
                period_start: None,
                period_end: None,
            });
        };
        let limit = quota_units("limit", quota.limit)?;
        let (start, end) = quota.period.bounds(self.clock.now());
        let ceiling = match quota.mode {
            QuotaMode::Hard => limit,
            QuotaMode::Soft => MAX_UNITS,
        };
        let c = self
            .counter
            .consume(
                tenant,
                &key,
                start.timestamp(),
                end.timestamp(),
                units,
                ceiling,
            )
            .await?;
        Ok(QuotaDecision {
            allowed: c.consumed,
            exceeded: c.used > limit,
            limit: Some(quota.limit),
            used: from_units(c.used),
            remaining: Some(from_units((limit - c.used).max(0))),
            period_start: Some(start),
            period_end: Some(end),
        })
    }

    /// The quota of meter `meter` and its counter in the current period; `NotFound`
    /// if the meter has no quota.
    pub async fn balance(&self, tenant: TenantId, meter: &str) -> Result<QuotaBalance> {
        let key = MeterKey::parse("meter", meter)?;
        let quota = self
            .store
            .quota(tenant, &key)
            .await?
            .ok_or_else(|| Error::NotFound(format!("meter `{key}` has no quota")))?;
        let limit = quota_units("limit", quota.limit)?;
        let (start, end) = quota.period.bounds(self.clock.now());
        let used = self.counter.used(tenant, &key, start.timestamp()).await?;
        Ok(QuotaBalance {
            quota,
            used: from_units(used),
            remaining: from_units((limit - used).max(0)),
            period_start: start,
            period_end: end,
        })
    }
}

/// The value (and unique value) an event gives `meter`, or why it cannot.
fn meter_value(
    meter: &Meter,
    data: &serde_json::Value,
) -> Result<(Decimal, Option<String>), Refusal> {
    let Some(path) = &meter.value_property else {
        return Ok((Decimal::ONE, None));
    };
    let field = format!("data.{path}");
    let v = path.lookup(data).ok_or_else(|| {
        (
            field.clone(),
            format!("missing value property `{path}` of meter `{}`", meter.key),
        )
    })?;
    if meter.aggregation == Aggregation::UniqueCount {
        let text = dimension_text(v).ok_or_else(|| {
            (
                field.clone(),
                format!(
                    "value property `{path}` of meter `{}` must be a string, number or boolean, got {}",
                    meter.key,
                    json_kind(v)
                ),
            )
        })?;
        if text.chars().count() > MAX_DIMENSION_VALUE_CHARS {
            return Err((
                field,
                format!("must be at most {MAX_DIMENSION_VALUE_CHARS} characters"),
            ));
        }
        return Ok((Decimal::ZERO, Some(text)));
    }
    let number = match v {
        serde_json::Value::Number(n) => decimal_of(n),
        serde_json::Value::String(s) => Decimal::from_str(s).ok(),
        _ => {
            return Err((
                field,
                format!(
                    "value property `{path}` of meter `{}` must be a number or a numeric string, got {}",
                    meter.key,
                    json_kind(v)
                ),
            ));
        }
    };
    number.map(|d| (d, None)).ok_or_else(|| {
        (
            field,
            format!(
                "value property `{path}` of meter `{}` must be a decimal number in range, got `{v}`",
                meter.key
            ),
        )
    })
}

fn window_list(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The range `[from, to)` in Unix seconds, checked to be aligned and not too long.
fn range(window: Window, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(i64, i64)> {
    for (field, t) in [("from", from), ("to", to)] {
        if !window.is_aligned(t) {
            return Err(Error::invalid(
                field,
                format!(
                    "`{}` is not the start of a {window} window (UTC)",
                    t.to_rfc3339()
                ),
            ));
        }
    }
    if from >= to {
        return Err(Error::invalid("to", "must be after `from`"));
    }
    let (from, to) = (from.timestamp(), to.timestamp());
    if (to - from) / window.seconds() > MAX_QUERY_WINDOWS {
        return Err(Error::invalid(
            "to",
            format!("a query spans at most {MAX_QUERY_WINDOWS} windows"),
        ));
    }
    Ok((from, to))
}

/// `names` checked to be dimensions of `meter`.
fn dimensions(meter: &Meter, field: &str, names: &[String]) -> Result<Vec<PropertyPath>> {
    let mut out = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let Some(path) = meter.group_by.iter().find(|p| p.as_str() == name) else {
            let field = if field == "filter" {
                format!("filter.{name}")
            } else {
                format!("{field}[{i}]")
            };
            return Err(Error::invalid(
                field,
                format!("meter `{}` does not group by `{name}`", meter.key),
            ));
        };
        out.insert(path.clone());
    }
    Ok(out.into_iter().collect())
}
