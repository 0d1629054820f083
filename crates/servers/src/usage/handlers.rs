//! The usage handlers: each parses its input, calls one [`Metering`] method and maps
//! the result (errors through [`crate::http`]).
//!
//! [`Metering`]: tenancy_metering::Metering

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tenancy_core::{Error, TenantId};
use tenancy_metering::{
    IngestReport, MAX_BATCH, MeterChanges, NewMeter, QuotaLimit, Rejection, UsageEvent, UsageQuery,
    Window,
};
use uuid::Uuid;

use super::UsageState;
use crate::http::{
    Admin, ApiResult, Body, Tenant, error_response, expected_version, json_body, json_response,
    parse_query, to_json_response,
};

// ----- events -----

/// Why one CloudEvent of a request cannot become a usage event: (field, reason).
type Refusal = (String, String);

fn refuse(field: &str, reason: impl Into<String>) -> Refusal {
    (field.to_owned(), reason.into())
}

/// An optional string attribute; `Err` if present with another JSON type.
fn text_attribute(event: &Map<String, Value>, name: &str) -> Result<Option<String>, Refusal> {
    match event.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refuse(name, "must be a string")),
    }
}

/// A CloudEvents 1.0 JSON event (structured mode) as a usage event of `tenant`.
///
/// `id` (a UUID, the idempotency key) and `type` are required; `specversion`, when
/// given, must be `1.0`; `time` (RFC 3339) defaults to `now`; `tenant_id` may be
/// omitted but must name `tenant` when given; `data` must be JSON (no
/// `data_base64`).
fn usage_event(tenant: TenantId, item: Value, now: DateTime<Utc>) -> Result<UsageEvent, Refusal> {
    let Value::Object(mut event) = item else {
        return Err(refuse("event", "must be a JSON object (a CloudEvent)"));
    };
    if let Some(version) = text_attribute(&event, "specversion")?
        && version != tenancy_core::events::SPEC_VERSION
    {
        return Err(refuse(
            "specversion",
            format!("`{version}` is not supported: use `1.0`"),
        ));
    }
    let id = text_attribute(&event, "id")?.ok_or_else(|| refuse("id", "is required"))?;
    let id = Uuid::parse_str(&id).map_err(|_| {
        refuse(
            "id",
            format!("`{id}` is not a UUID (the idempotency key; UUID v7 recommended)"),
        )
    })?;
    let event_type =
        text_attribute(&event, "type")?.ok_or_else(|| refuse("type", "is required"))?;
    let time = match text_attribute(&event, "time")? {
        None => now,
        Some(t) => DateTime::parse_from_rfc3339(&t)
            .map_err(|_| refuse("time", format!("`{t}` is not an RFC 3339 time")))?
            .with_timezone(&Utc),
    };
    if let Some(named) = text_attribute(&event, "tenant_id")? {
        let named = TenantId::parse_field("tenant_id", &named)
            .map_err(|e| refuse("tenant_id", e.to_string()))?;
        if named != tenant {
            return Err(refuse(
                "tenant_id",
                format!("the event names tenant `{named}`, the request tenant `{tenant}`"),
            ));
        }
    }
    if let Some(content_type) = text_attribute(&event, "datacontenttype")?
        && !content_type.contains("json")
    {
        return Err(refuse(
            "datacontenttype",
            format!("`{content_type}` is not supported: `data` must be JSON"),
        ));
    }
    if event.contains_key("data_base64") {
        return Err(refuse("data_base64", "is not supported: send JSON `data`"));
    }
    Ok(UsageEvent {
        id,
        tenant_id: tenant,
        event_type,
        source: text_attribute(&event, "source")?.unwrap_or_default(),
        subject: text_attribute(&event, "subject")?.unwrap_or_default(),
        time,
        data: event.remove("data").unwrap_or(Value::Null),
    })
}

/// Whether a request's `Content-Type` is JSON (`application/json`,
/// `application/cloudevents+json`, `application/cloudevents-batch+json`); an absent
/// one is taken as JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_none_or(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}

/// `POST /v1/events`: one CloudEvent (a JSON object) or a batch (a JSON array of at
/// most [`MAX_BATCH`]).
///
/// Answers 200 with `{"accepted": [i...], "duplicates": [i...], "rejected": [{"index",
/// "field", "reason"}...]}` (indexes into the request) when at least one event was
/// accepted or was a duplicate; 400 `invalid_input` with the same `rejected` list when
/// every event was refused (nothing changed).
pub(super) async fn ingest(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult {
    if !is_json(&headers) {
        return Ok(json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": {
                "code": "unsupported_media_type",
                "message": "send `application/cloudevents+json`, `application/cloudevents-batch+json` or `application/json`",
                "field": "content-type",
            }}),
        ));
    }
    let items = match json_body::<Value>(&body, "CloudEvent or batch of CloudEvents")? {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(Error::invalid(
                "body",
                "must be a CloudEvent (a JSON object) or a batch (a JSON array)",
            )
            .into());
        }
    };
    if items.is_empty() {
        return Err(Error::invalid("body", "the batch is empty").into());
    }
    if items.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!(
                "a batch holds at most {MAX_BATCH} events, this one {}",
                items.len()
            ),
        )
        .into());
    }
    let now = Utc::now();
    let mut refused = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    // For each parsed event, its index in the request.
    let mut positions = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match usage_event(tenant, item, now) {
            Ok(event) => {
                positions.push(index);
                events.push(event);
            }
            Err((field, reason)) => refused.push(Rejection {
                index,
                field,
                reason,
            }),
        }
    }
    let report = if events.is_empty() {
        IngestReport::default()
    } else {
        state.metering.ingest(tenant, &events).await?
    };
    Ok(answer(request_report(report, &positions, refused)))
}

/// `report` (indexes into the parsed events) with indexes into the request, merged
/// with the events refused before ingestion.
fn request_report(
    report: IngestReport,
    positions: &[usize],
    mut refused: Vec<Rejection>,
) -> IngestReport {
    let at = |i: usize| positions.get(i).copied().unwrap_or(i);
    refused.extend(report.rejected.into_iter().map(|r| Rejection {
        index: at(r.index),
        ..r
    }));
    refused.sort_by_key(|r| r.index);
    IngestReport {
        accepted: report.accepted.into_iter().map(at).collect(),
        duplicates: report.duplicates.into_iter().map(at).collect(),
        rejected: refused,
    }
}

fn answer(report: IngestReport) -> Response {
    if report.accepted.is_empty() && report.duplicates.is_empty() {
        let (field, reason) = report
            .rejected
            .first()
            .map_or(("events", "no event was accepted"), |r| {
                (r.field.as_str(), r.reason.as_str())
            });
        let error = Error::invalid(field, format!("every event was refused: {reason}"));
        return error_response(&error, Some(json!({ "rejected": report.rejected })));
    }
    to_json_response(StatusCode::OK, &report)
}

// ----- meters -----

pub(super) async fn create_meter(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Body(body): Body,
) -> ApiResult {
    let new: NewMeter = json_body(&body, "meter")?;
    let meter = state.metering.create_meter(tenant, new).await?;
    Ok(to_json_response(StatusCode::CREATED, &meter))
}

pub(super) async fn list_meters(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
) -> ApiResult {
    let meters = state.metering.list_meters(tenant).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "meters": meters }),
    ))
}

pub(super) async fn meter(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
) -> ApiResult {
    let meter = state.metering.meter(tenant, &key).await?;
    Ok(to_json_response(StatusCode::OK, &meter))
}

pub(super) async fn update_meter(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    Body(body): Body,
) -> ApiResult {
    let version = expected_version(&parse_query(raw.as_deref())?)?;
    let changes: MeterChanges = json_body(&body, "meter change")?;
    let meter = state
        .metering
        .update_meter(tenant, &key, version, changes)
        .await?;
    Ok(to_json_response(StatusCode::OK, &meter))
}

pub(super) async fn delete_meter(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let version = expected_version(&parse_query(raw.as_deref())?)?;
    state.metering.delete_meter(tenant, &key, version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- queries -----

/// A required RFC 3339 time parameter.
fn time_param(query: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, Error> {
    let value = query
        .get(name)
        .ok_or_else(|| Error::invalid(name, "is required (an RFC 3339 time)"))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::invalid(name, format!("`{value}` is not an RFC 3339 time")))
}

/// The query of `GET /v1/meters/{key}/query`: `from`, `to` (RFC 3339), `window`
/// (`minute`, `hour`, `day`), optional `group_by` (comma-separated dimensions) and
/// `filter[<dimension>]=<value>` parameters.
fn usage_query(meter: String, query: &HashMap<String, String>) -> Result<UsageQuery, Error> {
    let window = query
        .get("window")
        .ok_or_else(|| Error::invalid("window", "is required: `minute`, `hour` or `day`"))
        .and_then(|w| Window::from_str(w))?;
    let group_by = query
        .get("group_by")
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut filter = BTreeMap::new();
    for (name, value) in query {
        if let Some(dimension) = name
            .strip_prefix("filter[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            filter.insert(dimension.to_owned(), value.clone());
        } else if !matches!(name.as_str(), "from" | "to" | "window" | "group_by") {
            return Err(Error::invalid(
                name,
                "is not a parameter of this query: use `from`, `to`, `window`, `group_by` and `filter[<dimension>]`",
            ));
        }
    }
    Ok(UsageQuery {
        meter,
        from: time_param(query, "from")?,
        to: time_param(query, "to")?,
        window,
        group_by,
        filter,
    })
}

pub(super) async fn query(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = usage_query(key, &parse_query(raw.as_deref())?)?;
    let rows = state.metering.query(tenant, &query).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({
            "meter": query.meter,
            "window": query.window,
            "from": query.from,
            "to": query.to,
            "rows": rows,
        }),
    ))
}

pub(super) async fn totals(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = parse_query(raw.as_deref())?;
    let (from, to) = (time_param(&query, "from")?, time_param(&query, "to")?);
    let totals = state.metering.period_totals(tenant, from, to).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "from": from, "to": to, "meters": totals }),
    ))
}

// ----- quotas -----

pub(super) async fn set_quota(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let limit: QuotaLimit = json_body(&body, "quota")?;
    let quota = state.metering.set_quota(tenant, &key, limit).await?;
    Ok(to_json_response(StatusCode::OK, &quota))
}

pub(super) async fn quota(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
) -> ApiResult {
    let balance = state.metering.balance(tenant, &key).await?;
    Ok(to_json_response(StatusCode::OK, &balance))
}

pub(super) async fn delete_quota(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
) -> ApiResult {
    if state.metering.delete_quota(tenant, &key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Error::NotFound(format!("meter `{key}` has no quota")).into())
    }
}

/// The body of `POST /v1/meters/{key}/quota/check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    /// How much to consume (a decimal, as a string or a number).
    amount: Decimal,
}

/// `POST /v1/meters/{key}/quota/check`: atomically checks and consumes `amount`.
/// Answers 200 with the decision when allowed; 429 `quota_exceeded` with the decision
/// when a hard quota refuses (nothing was consumed).
pub(super) async fn check_quota(
    State(state): State<UsageState>,
    _: Admin,
    Tenant(tenant): Tenant,
    Path(key): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let request: CheckRequest = json_body(&body, "quota check")?;
    let decision = state
        .metering
        .check_and_consume(tenant, &key, request.amount)
        .await?;
    if decision.allowed {
        return Ok(to_json_response(StatusCode::OK, &decision));
    }
    let error = Error::QuotaExceeded(format!("the quota of meter `{key}` is exhausted"));
    Ok(error_response(
        &error,
        Some(json!({ "decision": decision })),
    ))
}

// ----- health -----

/// `GET /readyz`: the metering store answers.
pub(super) async fn readyz(State(state): State<UsageState>) -> Response {
    match state.metering.list_meters(TenantId::new()).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "usage store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}
