//! The OpenAPI 3.1 document of the usage API, served at `/api/openapi.json` and
//! rendered (offline, no script) at `/api/docs`. A test walks every operation of the
//! document against the router, so the two cannot drift apart.

use std::sync::LazyLock;

use axum::response::Response;
use serde_json::{Value, json};

use crate::api_docs::{self, error, json_content, ok, parameter, schema_ref};

fn tenant_header() -> Value {
    parameter(
        "X-Tenant-Id",
        "header",
        true,
        json!({"type": "string", "format": "uuid"}),
        "the tenant the call acts for",
    )
}

fn meter_key() -> Value {
    parameter(
        "key",
        "path",
        true,
        json!({"type": "string"}),
        "the meter's key",
    )
}

fn expected_version() -> Value {
    parameter(
        "expected_version",
        "query",
        true,
        json!({"type": "integer"}),
        "the version read (optimistic concurrency: a stale one is 409 `conflict`)",
    )
}

/// An operation with the tenant header and the common error answers.
fn operation(
    summary: &str,
    description: &str,
    mut parameters: Vec<Value>,
    body: Option<Value>,
    mut responses: Value,
) -> Value {
    parameters.insert(0, tenant_header());
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "400".into(),
            error("bad input (`invalid_input`, naming the field)"),
        );
        map.insert("401".into(), error("missing or wrong admin token"));
        map.insert("503".into(), error("a backend is unavailable; retry"));
    }
    let mut op = json!({
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
        "security": [{ "adminToken": [] }],
    });
    if let (Some(schema), Some(map)) = (body, op.as_object_mut()) {
        map.insert(
            "requestBody".into(),
            json!({ "required": true, "content": json_content(schema) }),
        );
    }
    op
}

fn decimal(description: &str) -> Value {
    json!({"type": "string", "description": description, "examples": ["12.5"]})
}

fn time(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn windows() -> Value {
    json!({"type": "string", "enum": ["minute", "hour", "day"]})
}

fn schemas() -> Value {
    json!({
        "Error": {
            "description": "every error answer",
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "description": "`code` (machine-readable: `invalid_input`, `unauthenticated`, `not_found`, `already_exists`, `conflict`, `quota_exceeded`, `payload_too_large`, `unsupported_media_type`, `unavailable`, `internal`), `message` (for people), `field` (the offending input, when known); ingestion adds `rejected`, quota checks add `decision`",
                },
            },
        },
        "CloudEvent": {
            "description": "a usage event, CloudEvents 1.0 JSON (structured mode)",
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "specversion": {"type": "string", "enum": ["1.0"], "description": "optional; `1.0` when given"},
                "id": {"type": "string", "format": "uuid", "description": "the idempotency key: accepted once per tenant, forever (UUID v7 recommended)"},
                "type": string("the event type; meters of this type count it"),
                "source": string("who emitted it"),
                "subject": string("what the usage is about (a user, an API key)"),
                "time": time("when the usage happened (default: when received); at most the configured lateness (7 days) in the past"),
                "tenant_id": {"type": "string", "format": "uuid", "description": "optional; must equal `X-Tenant-Id` when given"},
                "datacontenttype": string("optional; JSON"),
                "data": {"type": "object", "description": "the properties meters read (value and group-by paths)"},
            },
        },
        "Rejection": {
            "type": "object",
            "description": "why one event of a request was refused",
            "properties": {
                "index": {"type": "integer", "description": "its position in the request (from 0)"},
                "field": string("the offending field"),
                "reason": string("what is wrong"),
            },
        },
        "IngestReport": {
            "type": "object",
            "description": "every index of the request is in exactly one list",
            "properties": {
                "accepted": {"type": "array", "items": {"type": "integer"}, "description": "stored and counted now"},
                "duplicates": {"type": "array", "items": {"type": "integer"}, "description": "ids already accepted: not counted again"},
                "rejected": {"type": "array", "items": schema_ref("Rejection")},
            },
        },
        "NewMeter": {
            "type": "object",
            "required": ["key", "event_type", "aggregation", "windows"],
            "properties": {
                "key": string("unique per tenant: 1-64 of `a-z 0-9 _ - .`"),
                "event_type": string("the CloudEvent `type` it reads"),
                "aggregation": {"type": "string", "enum": ["count", "sum", "min", "max", "unique_count", "latest"]},
                "value_property": string("dotted path into `data` (all but `count`)"),
                "group_by": {"type": "array", "items": {"type": "string"}, "description": "dotted paths into `data`"},
                "windows": {"type": "array", "items": windows()},
                "description": string("free text"),
            },
        },
        "MeterChanges": {
            "type": "object",
            "description": "what may change; the key, event type, aggregation and value are fixed",
            "properties": {
                "description": string("a new description"),
                "group_by": {"type": "array", "items": {"type": "string"}},
                "windows": {"type": "array", "items": windows()},
            },
        },
        "Meter": {
            "type": "object",
            "properties": {
                "tenant_id": {"type": "string", "format": "uuid"},
                "key": {"type": "string"},
                "event_type": {"type": "string"},
                "aggregation": {"type": "string"},
                "value_property": {"type": ["string", "null"]},
                "group_by": {"type": "array", "items": {"type": "string"}},
                "windows": {"type": "array", "items": windows()},
                "description": {"type": "string"},
                "version": {"type": "integer", "description": "1 at creation, +1 per update"},
                "created_at": time("when it was created"),
                "updated_at": time("when it last changed"),
            },
        },
        "MeterList": {
            "type": "object",
            "properties": {"meters": {"type": "array", "items": schema_ref("Meter")}},
        },
        "UsageRow": {
            "type": "object",
            "properties": {
                "window_start": time("the window's start"),
                "window_end": time("the window's end (exclusive)"),
                "group": {"type": "object", "description": "dimension values (empty when not grouped)"},
                "value": decimal("the aggregate"),
                "events": {"type": "integer"},
                "saturated": {"type": "boolean", "description": "a unique count past its bound: `value` is a lower bound"},
            },
        },
        "QueryResult": {
            "type": "object",
            "properties": {
                "meter": {"type": "string"},
                "window": windows(),
                "from": time("range start"),
                "to": time("range end (exclusive)"),
                "rows": {"type": "array", "items": schema_ref("UsageRow")},
            },
        },
        "MeterTotal": {
            "type": "object",
            "properties": {
                "meter": {"type": "string"},
                "aggregation": {"type": "string"},
                "window": windows(),
                "value": {"type": ["string", "null"], "description": "decimal; null for min/max/latest without events"},
                "events": {"type": "integer"},
                "saturated": {"type": "boolean"},
                "groups": {"type": "array", "items": {"type": "object"}, "description": "per group: `group`, `value`, `events`, `saturated`"},
            },
        },
        "Totals": {
            "type": "object",
            "properties": {
                "from": time("period start"),
                "to": time("period end (exclusive)"),
                "meters": {"type": "array", "items": schema_ref("MeterTotal")},
            },
        },
        "QuotaLimit": {
            "type": "object",
            "required": ["period", "limit", "mode"],
            "properties": {
                "period": {"type": "string", "enum": ["minute", "hour", "day", "month"]},
                "limit": decimal("the most per period (at most 4 fractional digits)"),
                "mode": {"type": "string", "enum": ["soft", "hard"], "description": "soft reports, hard refuses"},
            },
        },
        "Quota": {
            "type": "object",
            "properties": {
                "tenant_id": {"type": "string", "format": "uuid"},
                "meter": {"type": "string"},
                "period": {"type": "string"},
                "limit": decimal("the most per period"),
                "mode": {"type": "string"},
                "updated_at": time("when it was set"),
            },
        },
        "QuotaBalance": {
            "type": "object",
            "properties": {
                "quota": schema_ref("Quota"),
                "used": decimal("consumed in the current period"),
                "remaining": decimal("limit - used, at least 0"),
                "period_start": time("current period start"),
                "period_end": time("current period end"),
            },
        },
        "QuotaCheck": {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": decimal("how much to consume (> 0)")},
        },
        "QuotaDecision": {
            "type": "object",
            "properties": {
                "allowed": {"type": "boolean", "description": "whether it was allowed and counted"},
                "exceeded": {"type": "boolean", "description": "whether the counter is above the limit"},
                "limit": {"type": ["string", "null"]},
                "used": decimal("consumed in the current period"),
                "remaining": {"type": ["string", "null"]},
                "period_start": {"type": ["string", "null"], "format": "date-time"},
                "period_end": {"type": ["string", "null"], "format": "date-time"},
            },
        },
    })
}

fn build() -> Value {
    let events_body = json!({"oneOf": [schema_ref("CloudEvent"), {"type": "array", "items": schema_ref("CloudEvent"), "maxItems": tenancy_metering::MAX_BATCH}]});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tenancy usage API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Usage metering: idempotent CloudEvents ingestion, meters with rollups, queries, billing-period totals and quotas. Every `/v1` call needs `Authorization: Bearer <admin token>` and names its tenant in `X-Tenant-Id`.",
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": {
            "/v1/events": {
                "post": operation(
                    "ingest usage events",
                    "One CloudEvent (a JSON object) or a batch (a JSON array of at most 1,000). Each event is validated against the tenant's meters of its type; refused events are reported with their index and reason while the valid rest is stored and counted in one transaction. An id the tenant sent before is a duplicate, forever. Bodies above 4 MiB are refused (413).",
                    vec![],
                    Some(events_body),
                    json!({
                        "200": ok("at least one event accepted or already known", schema_ref("IngestReport")),
                        "413": error("body too large (`payload_too_large`)"),
                        "415": error("not JSON (`unsupported_media_type`)"),
                    }),
                ),
            },
            "/v1/meters": {
                "post": operation("create a meter", "", vec![], Some(schema_ref("NewMeter")), json!({
                    "201": ok("created", schema_ref("Meter")),
                    "409": error("the key is taken (`already_exists`)"),
                })),
                "get": operation("list the tenant's meters", "sorted by key", vec![], None, json!({
                    "200": ok("the meters", schema_ref("MeterList")),
                })),
            },
            "/v1/meters/{key}": {
                "get": operation("read a meter", "", vec![meter_key()], None, json!({
                    "200": ok("the meter", schema_ref("Meter")),
                    "404": error("no such meter"),
                })),
                "patch": operation("change a meter", "new group-by dimensions and windows apply to events ingested after the change", vec![meter_key(), expected_version()], Some(schema_ref("MeterChanges")), json!({
                    "200": ok("the changed meter", schema_ref("Meter")),
                    "404": error("no such meter"),
                    "409": error("stale `expected_version` (`conflict`)"),
                })),
                "delete": operation("delete a meter", "with its rollups and quota; stored events stay (their ids stay used)", vec![meter_key(), expected_version()], None, json!({
                    "204": {"description": "deleted"},
                    "404": error("no such meter"),
                    "409": error("stale `expected_version` (`conflict`)"),
                })),
            },
            "/v1/meters/{key}/query": {
                "get": operation("query a meter", "the meter over `[from, to)` by window, from rollups (never raw events)", vec![
                    meter_key(),
                    parameter("from", "query", true, json!({"type": "string", "format": "date-time"}), "range start, aligned to the window"),
                    parameter("to", "query", true, json!({"type": "string", "format": "date-time"}), "range end (exclusive), aligned to the window"),
                    parameter("window", "query", true, windows(), "row size: a window the meter keeps"),
                    parameter("group_by", "query", false, json!({"type": "string"}), "comma-separated dimensions to keep (a subset of the meter's group-by)"),
                    parameter("filter[<dimension>]", "query", false, json!({"type": "string"}), "only events with this dimension value"),
                ], None, json!({
                    "200": ok("the rows", schema_ref("QueryResult")),
                    "404": error("no such meter"),
                })),
            },
            "/v1/totals": {
                "get": operation("billing-period totals", "every meter's total over `[from, to)`, overall and per group", vec![
                    parameter("from", "query", true, json!({"type": "string", "format": "date-time"}), "period start"),
                    parameter("to", "query", true, json!({"type": "string", "format": "date-time"}), "period end (exclusive)"),
                ], None, json!({
                    "200": ok("the totals", schema_ref("Totals")),
                })),
            },
            "/v1/meters/{key}/quota": {
                "put": operation("set the meter's quota", "creates or replaces it", vec![meter_key()], Some(schema_ref("QuotaLimit")), json!({
                    "200": ok("the quota", schema_ref("Quota")),
                    "404": error("no such meter"),
                })),
                "get": operation("read the quota and its balance", "the counter of the current period", vec![meter_key()], None, json!({
                    "200": ok("the balance", schema_ref("QuotaBalance")),
                    "404": error("no such meter or no quota"),
                })),
                "delete": operation("delete the quota", "", vec![meter_key()], None, json!({
                    "204": {"description": "deleted"},
                    "404": error("no quota"),
                })),
            },
            "/v1/meters/{key}/quota/check": {
                "post": operation("check and consume", "atomically: concurrent callers never overspend a hard quota; a soft quota counts and reports `exceeded`; a meter without a quota allows everything", vec![meter_key()], Some(schema_ref("QuotaCheck")), json!({
                    "200": ok("allowed and counted", schema_ref("QuotaDecision")),
                    "404": error("no such meter"),
                    "429": error("refused by a hard quota (`quota_exceeded`, with `decision`); nothing was counted"),
                })),
            },
        },
    })
}

/// The usage API's OpenAPI document.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

/// `GET /api/openapi.json`.
pub(super) async fn document_handler() -> Response {
    api_docs::document_response(document())
}

/// `GET /api/docs`.
pub(super) async fn docs_handler() -> Response {
    api_docs::docs_response(document())
}
