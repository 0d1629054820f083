//! The metering vocabulary: usage events, meters (what to aggregate, how, per which
//! windows and dimensions), query rows, period totals and quotas.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result, TenantId};
use uuid::Uuid;

/// Most events in one ingest call.
pub const MAX_BATCH: usize = 1_000;
/// Most meters one tenant may define.
pub const MAX_METERS: usize = 200;
/// Most group-by dimensions of one meter.
pub const MAX_GROUP_BY: usize = 8;
/// Most windows one query may span (`(to - from) / window`).
pub const MAX_QUERY_WINDOWS: i64 = 50_000;
/// Default bound of distinct values a unique-count meter keeps per (window, group);
/// see [`crate::MeteringConfig::unique_bound`].
pub const DEFAULT_UNIQUE_BOUND: u64 = 100_000;
/// Most bytes of an event's `data` (as JSON).
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Most characters of a group-by or unique-count value.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 256;
/// Fractional digits a quota amount or limit may have (quota counters are exact
/// integers of 1/10,000 on every backend, Redis included).
pub const QUOTA_SCALE: u32 = 4;
/// The largest quota limit or amount, and the most a quota counter holds in one
/// period (soft quotas included): 100 billion.
pub const MAX_QUOTA_VALUE: i64 = 100_000_000_000;

fn check_chars(field: &str, value: &str, max: usize, what: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, format!("{what} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("{what} must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{what} must not contain control characters"),
        ));
    }
    Ok(())
}

/// The key of a meter, unique per tenant: 1–64 of `a-z`, `0-9`, `_`, `-`, starting
/// with a letter or digit (`api_calls`, `llm-tokens`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeterKey(String);

impl MeterKey {
    /// Parses a meter key, naming `field` in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                format!(
                    "`{value}` must be 1 to 64 of `a-z`, `0-9`, `_` and `-`, starting with a letter or digit"
                ),
            ))
        }
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MeterKey {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse("key", &value)
    }
}

impl From<MeterKey> for String {
    fn from(key: MeterKey) -> Self {
        key.0
    }
}

/// A dotted path to a property of an event's `data` (`tokens`, `usage.input_tokens`):
/// 1–8 segments of 1–64 of `A-Z`, `a-z`, `0-9`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PropertyPath(String);

impl PropertyPath {
    /// Parses a property path, naming `field` in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let segments: Vec<&str> = value.split('.').collect();
        let valid = segments.len() <= 8
            && segments.iter().all(|s| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                format!(
                    "`{value}` is not a property path: 1 to 8 dot-separated names of `A-Z`, `a-z`, `0-9`, `_` and `-`"
                ),
            ))
        }
    }

    /// The path as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value at this path in `data`, if any (`null` counts as absent).
    #[must_use]
    pub fn lookup<'a>(&self, data: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut current = data;
        for segment in self.0.split('.') {
            current = current.as_object()?.get(segment)?;
        }
        (!current.is_null()).then_some(current)
    }
}

impl fmt::Display for PropertyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PropertyPath {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse("property", &value)
    }
}

impl From<PropertyPath> for String {
    fn from(path: PropertyPath) -> Self {
        path.0
    }
}

/// How a meter aggregates the events of one window. There is no `avg`: it does not
/// roll up; divide a `sum` meter's value by its event count instead.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The number of events (no value property).
    #[default]
    Count,
    /// The sum of the value property.
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The number of distinct values of the value property (exact, up to a bound per
    /// window and group: see [`crate::MeteringConfig::unique_bound`]).
    UniqueCount,
    /// The value of the event with the latest `time` (ties: the greatest event id).
    Latest,
}

impl Aggregation {
    /// The stable text form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::UniqueCount => "unique_count",
            Self::Latest => "latest",
        }
    }

    /// Every aggregation.
    pub const ALL: [Self; 6] = [
        Self::Count,
        Self::Sum,
        Self::Min,
        Self::Max,
        Self::UniqueCount,
        Self::Latest,
    ];
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rollup window, aligned to UTC (minutes and hours on the epoch, days at
/// midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
}

impl Window {
    /// The stable text form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The window's length in seconds.
    #[must_use]
    pub const fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The start (Unix seconds) of the window holding Unix second `t`.
    #[must_use]
    pub const fn start_of(self, t: i64) -> i64 {
        t.div_euclid(self.seconds()) * self.seconds()
    }

    /// Whether `t` is the start of a window.
    #[must_use]
    pub fn is_aligned(self, t: DateTime<Utc>) -> bool {
        t.timestamp_subsec_nanos() == 0 && t.timestamp().rem_euclid(self.seconds()) == 0
    }

    /// Coarsest first.
    pub const COARSEST_FIRST: [Self; 3] = [Self::Day, Self::Hour, Self::Minute];
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Window {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minute" => Ok(Self::Minute),
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            other => Err(Error::invalid(
                "window",
                format!("`{other}` is not a window: use `minute`, `hour` or `day`"),
            )),
        }
    }
}

/// Unix seconds as a time (out-of-range values clamp to the epoch).
#[must_use]
pub fn time_of(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// A usage event, CloudEvents-shaped: `id` (UUID v7 recommended) is the idempotency
/// key, unique per tenant forever; `type` selects the meters it feeds; `data` holds the
/// properties meters read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The idempotency key: an event id seen before for the tenant is a duplicate.
    pub id: Uuid,
    /// The tenant the usage belongs to.
    pub tenant_id: TenantId,
    /// The event type (CloudEvents `type`), e.g. `api.request`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who emitted the event (CloudEvents `source`); may be empty.
    #[serde(default)]
    pub source: String,
    /// What the usage is about, e.g. a user or API key id; may be empty.
    #[serde(default)]
    pub subject: String,
    /// When the usage happened; it lands in the windows holding this time.
    pub time: DateTime<Utc>,
    /// The event's properties (a JSON object, or `null`).
    #[serde(default)]
    pub data: serde_json::Value,
}

impl From<tenancy_core::events::Event> for UsageEvent {
    /// The usage carried by a bus event (e.g. one consumed from `usage.events`): the
    /// envelope's id stays the idempotency key.
    fn from(event: tenancy_core::events::Event) -> Self {
        Self {
            id: event.id().as_uuid(),
            tenant_id: event.tenant_id(),
            event_type: event.event_type().to_owned(),
            source: event.source().to_owned(),
            subject: event.subject().to_owned(),
            time: event.time(),
            data: event.into_data(),
        }
    }
}

/// A meter to create: which events it reads, how it aggregates them and which rollups
/// it keeps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewMeter {
    /// The meter's key (see [`MeterKey`]).
    pub key: String,
    /// The event type it reads.
    pub event_type: String,
    /// How it aggregates (`count` when absent).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The property holding the value (absent for `count`, required otherwise).
    #[serde(default)]
    pub value_property: Option<String>,
    /// Properties to group by (at most [`MAX_GROUP_BY`]).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The windows to keep rollups for (at least one).
    pub windows: Vec<Window>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Changes to a meter; absent fields stay. The event type, aggregation and value
/// property are fixed at creation (they would make the existing rollups mean
/// something else): create a new meter instead. Changed group-by dimensions and
/// windows apply to events ingested after the change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MeterChanges {
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// New group-by dimensions.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// New windows.
    #[serde(default)]
    pub windows: Option<Vec<Window>>,
}

/// A meter of one tenant, as stored. Writes carry the version they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// Unique per tenant.
    pub key: MeterKey,
    /// The event type it reads.
    pub event_type: String,
    /// How it aggregates.
    pub aggregation: Aggregation,
    /// The property holding the value (`None` for `count`).
    pub value_property: Option<PropertyPath>,
    /// The group-by dimensions.
    pub group_by: Vec<PropertyPath>,
    /// The windows it keeps, finest first.
    pub windows: Vec<Window>,
    /// Free text.
    pub description: String,
    /// 1 at creation, +1 per update.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn validate_event_type(field: &str, value: &str) -> Result<()> {
    check_chars(field, value, 256, "an event type")
}

pub(crate) fn validate_group_by(values: &[String]) -> Result<Vec<PropertyPath>> {
    if values.len() > MAX_GROUP_BY {
        return Err(Error::invalid(
            "group_by",
            format!("a meter groups by at most {MAX_GROUP_BY} properties"),
        ));
    }
    let mut out: Vec<PropertyPath> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let path = PropertyPath::parse(&format!("group_by[{i}]"), v)?;
        if out.contains(&path) {
            return Err(Error::invalid(
                format!("group_by[{i}]"),
                format!("`{v}` is listed twice"),
            ));
        }
        out.push(path);
    }
    Ok(out)
}

pub(crate) fn validate_windows(values: &[Window]) -> Result<Vec<Window>> {
    if values.is_empty() {
        return Err(Error::invalid(
            "windows",
            "a meter keeps at least one window (`minute`, `hour` or `day`)",
        ));
    }
    let mut out = values.to_vec();
    out.sort();
    out.dedup();
    if out.len() != values.len() {
        return Err(Error::invalid("windows", "a window is listed twice"));
    }
    Ok(out)
}

pub(crate) fn validate_description(value: &str) -> Result<()> {
    if value.chars().count() > 1024 {
        return Err(Error::invalid(
            "description",
            "must be at most 1024 characters",
        ));
    }
    Ok(())
}

impl Meter {
    /// Validates `new` into a meter of `tenant` at version 1.
    pub fn from_new(tenant: TenantId, new: &NewMeter, now: DateTime<Utc>) -> Result<Self> {
        let key = MeterKey::parse("key", &new.key)?;
        validate_event_type("event_type", &new.event_type)?;
        let value_property = match (new.aggregation, &new.value_property) {
            (Aggregation::Count, None) => None,
            (Aggregation::Count, Some(_)) => {
                return Err(Error::invalid(
                    "value_property",
                    "a `count` meter counts events and takes no value property",
                ));
            }
            (aggregation, None) => {
                return Err(Error::invalid(
                    "value_property",
                    format!("a `{aggregation}` meter needs a value property"),
                ));
            }
            (_, Some(path)) => Some(PropertyPath::parse("value_property", path)?),
        };
        let group_by = validate_group_by(&new.group_by)?;
        let windows = validate_windows(&new.windows)?;
        validate_description(&new.description)?;
        Ok(Self {
            tenant_id: tenant,
            key,
            event_type: new.event_type.clone(),
            aggregation: new.aggregation,
            value_property,
            group_by,
            windows,
            description: new.description.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The event's position in the batch (from 0).
    pub index: usize,
    /// The offending field (`time`, `data.tokens`, `tenant_id`, ...).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The outcome of an ingest call: every event index is in exactly one list, each
/// sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IngestReport {
    /// Events stored and counted now.
    pub accepted: Vec<usize>,
    /// Events whose id the tenant had sent before (or earlier in this batch): accepted
    /// once already, not counted again.
    pub duplicates: Vec<usize>,
    /// Events refused, with the reason; they change nothing.
    pub rejected: Vec<Rejection>,
}

/// A query of one meter over a time range, by window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// The meter's key.
    pub meter: String,
    /// The range's start (inclusive), aligned to `window`.
    pub from: DateTime<Utc>,
    /// The range's end (exclusive), aligned to `window`.
    pub to: DateTime<Utc>,
    /// The window size of the rows: one the meter keeps.
    pub window: Window,
    /// The dimensions to keep in the rows (a subset of the meter's group-by); the
    /// others are merged. Empty: one row per window.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Only events whose dimensions have these values (a dimension the meter groups
    /// by, to its value as text).
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
}

/// One row of a query: a window (and a group, when grouped) with its aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The window's start.
    pub window_start: DateTime<Utc>,
    /// The window's end (exclusive).
    pub window_end: DateTime<Utc>,
    /// The group's dimension values (empty when not grouped; a dimension an event
    /// lacked is absent).
    pub group: BTreeMap<String, String>,
    /// The aggregate.
    pub value: Decimal,
    /// How many events it covers.
    pub events: u64,
    /// A unique count that reached its bound: `value` is a lower bound.
    pub saturated: bool,
}

/// One group's total over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTotal {
    /// The group's dimension values.
    pub group: BTreeMap<String, String>,
    /// The aggregate over the period.
    pub value: Decimal,
    /// How many events it covers.
    pub events: u64,
    /// See [`UsageRow::saturated`].
    pub saturated: bool,
}

/// One meter's total over a billing period, overall and per group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterTotal {
    /// The meter's key.
    pub meter: MeterKey,
    /// Its aggregation.
    pub aggregation: Aggregation,
    /// The window the total was read from (the coarsest kept window the period
    /// aligns to).
    pub window: Window,
    /// The aggregate over the period: 0 for counts and sums without events, `None`
    /// for `min`, `max` and `latest` without events.
    pub value: Option<Decimal>,
    /// How many events it covers.
    pub events: u64,
    /// See [`UsageRow::saturated`].
    pub saturated: bool,
    /// Per group (all of the meter's dimensions), sorted by group.
    pub groups: Vec<GroupTotal>,
}

/// The period a quota counts in, aligned to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// A UTC minute.
    Minute,
    /// A UTC hour.
    Hour,
    /// A UTC day.
    Day,
    /// A calendar month in UTC.
    Month,
}

impl QuotaPeriod {
    /// The stable text form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The period holding `t`: `(start, end)`.
    #[must_use]
    pub fn bounds(self, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let window = match self {
            Self::Minute => Window::Minute,
            Self::Hour => Window::Hour,
            Self::Day => Window::Day,
            Self::Month => {
                let start = Utc
                    .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                    .single()
                    .unwrap_or(t);
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                let end = Utc
                    .with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(start + Duration::days(31));
                return (start, end);
            }
        };
        let start = window.start_of(t.timestamp());
        (time_of(start), time_of(start + window.seconds()))
    }
}

impl FromStr for QuotaPeriod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minute" => Ok(Self::Minute),
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            other => Err(Error::invalid(
                "period",
                format!("`{other}` is not a quota period: use `minute`, `hour`, `day` or `month`"),
            )),
        }
    }
}

/// What a quota does when a consumption would exceed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaMode {
    /// Report: the consumption is counted and the decision says the limit is exceeded.
    Soft,
    /// Refuse: the consumption is not counted and not allowed.
    Hard,
}

impl QuotaMode {
    /// The stable text form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hard => "hard",
        }
    }
}

impl FromStr for QuotaMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "soft" => Ok(Self::Soft),
            "hard" => Ok(Self::Hard),
            other => Err(Error::invalid(
                "mode",
                format!("`{other}` is not a quota mode: use `soft` or `hard`"),
            )),
        }
    }
}

/// A quota to set on a meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimit {
    /// The period it counts in.
    pub period: QuotaPeriod,
    /// The most that may be consumed per period (at most [`MAX_QUOTA_VALUE`], at most
    /// [`QUOTA_SCALE`] fractional digits).
    pub limit: Decimal,
    /// Soft (report) or hard (refuse).
    pub mode: QuotaMode,
}

/// A quota of one tenant on one of its meters (at most one per meter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The meter it limits.
    pub meter: MeterKey,
    /// The period it counts in.
    pub period: QuotaPeriod,
    /// The most per period.
    pub limit: Decimal,
    /// Soft or hard.
    pub mode: QuotaMode,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// The answer of [`crate::Metering::check_and_consume`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDecision {
    /// Whether the consumption was allowed (and counted).
    pub allowed: bool,
    /// Whether the counter is above the limit (after this consumption, if allowed).
    pub exceeded: bool,
    /// The quota's limit; `None` when the meter has no quota (always allowed, not
    /// counted).
    pub limit: Option<Decimal>,
    /// Consumed in the current period, after this call.
    pub used: Decimal,
    /// `limit - used`, at least 0; `None` without a quota.
    pub remaining: Option<Decimal>,
    /// The current period's start (`None` without a quota).
    pub period_start: Option<DateTime<Utc>>,
    /// The current period's end (`None` without a quota).
    pub period_end: Option<DateTime<Utc>>,
}

/// The state of a quota in the current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaBalance {
    /// The quota.
    pub quota: Quota,
    /// Consumed in the current period.
    pub used: Decimal,
    /// `limit - used`, at least 0.
    pub remaining: Decimal,
    /// The current period's start.
    pub period_start: DateTime<Utc>,
    /// The current period's end.
    pub period_end: DateTime<Utc>,
}

/// `value` in quota units (1/10,000), refusing more fractional digits than
/// [`QUOTA_SCALE`], negative values and values above [`MAX_QUOTA_VALUE`].
pub(crate) fn quota_units(field: &str, value: Decimal) -> Result<i64> {
    let normalized = value.normalize();
    if normalized.scale() > QUOTA_SCALE {
        return Err(Error::invalid(
            field,
            format!("`{value}` has more than {QUOTA_SCALE} fractional digits"),
        ));
    }
    if normalized.is_sign_negative() && !normalized.is_zero() {
        return Err(Error::invalid(field, format!("`{value}` is negative")));
    }
    if normalized > Decimal::from(MAX_QUOTA_VALUE) {
        return Err(Error::invalid(
            field,
            format!("`{value}` is above the largest quota value {MAX_QUOTA_VALUE}"),
        ));
    }
    let mut scaled = normalized;
    scaled.rescale(QUOTA_SCALE);
    i64::try_from(scaled.mantissa())
        .map_err(|_| Error::invalid(field, format!("`{value}` is out of range")))
}

/// Quota units back to a decimal.
pub(crate) fn from_units(units: i64) -> Decimal {
    Decimal::new(units, QUOTA_SCALE).normalize()
}

/// The ceiling of every quota counter, in units.
pub(crate) const MAX_UNITS: i64 = MAX_QUOTA_VALUE * 10_000;
