//! API documentation that works offline: an OpenAPI 3.1 document rendered as one
//! self-contained HTML page (no script, no external asset), for every HTTP service's
//! `/api/docs`.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::gateway::pages::escape;

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A schema in one line: `Meter`, `array of UsageRow`, `string (date-time)`.
fn schema_name(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        return options
            .iter()
            .map(schema_name)
            .collect::<Vec<_>>()
            .join(" or ");
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    if kind == "array"
        && let Some(items) = schema.get("items")
    {
        return format!("array of {}", schema_name(items));
    }
    let mut out = escape(&kind);
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(out, " ({})", escape(format));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", escape(&v.to_string())))
            .collect();
        let _ = write!(out, ": {}", values.join(", "));
    }
    out
}

fn render_operation(out: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        out,
        "<section class=\"op\"><h3><span class=\"m {0}\">{1}</span> <code>{2}</code></h3><p>{3}</p>",
        escape(method),
        escape(&method.to_uppercase()),
        escape(path),
        escape(text(op, "summary")),
    );
    let description = text(op, "description");
    if !description.is_empty() {
        let _ = write!(out, "<p class=\"d\">{}</p>", escape(description));
    }
    if let Some(params) = op.get("parameters").and_then(Value::as_array)
        && !params.is_empty()
    {
        out.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>",
        );
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(text(p, "name")),
                escape(text(p, "in")),
                p.get("schema").map(schema_name).unwrap_or_default(),
                if p.get("required").and_then(Value::as_bool) == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                escape(text(p, "description")),
            );
        }
        out.push_str("</table>");
    }
    if let Some(body) = op.get("requestBody")
        && let Some(content) = body.get("content").and_then(Value::as_object)
    {
        for (media, media_type) in content {
            let _ = write!(
                out,
                "<p>Body <code>{}</code>: {}</p>",
                escape(media),
                media_type
                    .get("schema")
                    .map(schema_name)
                    .unwrap_or_default()
            );
        }
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
        for (status, response) in responses {
            let body = response
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().next())
                .and_then(|m| m.get("schema"))
                .map(schema_name)
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(text(response, "description")),
                body
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn render_schema(out: &mut String, name: &str, schema: &Value) {
    let _ = write!(
        out,
        "<section class=\"schema\" id=\"schema-{0}\"><h3>{0}</h3><p>{1}</p>",
        escape(name),
        escape(text(schema, "description"))
    );
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        out.push_str(
            "<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>",
        );
        for (field, property) in properties {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(field),
                schema_name(property),
                if required.contains(&field.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                escape(text(property, "description")),
            );
        }
        out.push_str("</table>");
    } else {
        let _ = write!(out, "<p>{}</p>", schema_name(schema));
    }
    out.push_str("</section>");
}

/// The HTML page of an OpenAPI document: every operation (parameters, body,
/// responses) and every component schema, linked, in one page without scripts.
#[must_use]
pub fn render(document: &Value) -> String {
    let info = document.get("info").cloned().unwrap_or(Value::Null);
    let title = text(&info, "title");
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{0}</title><style>{1}</style></head><body><main><h1>{0} <small>{2}</small></h1>\
         <p>{3}</p><p>Machine-readable: <a href=\"openapi.json\">openapi.json</a> (OpenAPI {4}).</p>",
        escape(title),
        STYLE,
        escape(text(&info, "version")),
        escape(text(&info, "description")),
        escape(text(document, "openapi")),
    );
    out.push_str("<h2>Operations</h2>");
    if let Some(paths) = document.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                if let Some(op) = item.get(method) {
                    render_operation(&mut out, method, path, op);
                }
            }
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            render_schema(&mut out, name, schema);
        }
    }
    out.push_str("</main></body></html>");
    out
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}\
main{max-width:980px;margin:0 auto;padding:1.5rem}h1 small{font-size:.5em;color:#777}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:.75rem 0}\
h3{margin:.4rem 0;font-size:1rem}.m{display:inline-block;min-width:4.5em;text-align:center;\
border-radius:4px;color:#fff;font-size:.8rem;padding:.1rem .3rem}.get{background:#2b6cb0}\
.post{background:#2f855a}.put{background:#b7791f}.patch{background:#6b46c1}.delete{background:#c53030}\
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}\
th,td{border-bottom:1px solid #eee;text-align:left;padding:.25rem .4rem;vertical-align:top}\
.d{color:#444}code{font-size:.9em}";

/// `document` as the answer of `GET /api/openapi.json`.
#[must_use]
pub fn document_response(document: &Value) -> Response {
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The rendered `document` as the answer of `GET /api/docs`: HTML with a content
/// security policy that allows nothing but the inline style.
#[must_use]
pub fn docs_response(document: &Value) -> Response {
    let mut response = (StatusCode::OK, render(document)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

// ----- building documents -----

/// A reference to the component schema `name`.
#[must_use]
pub fn schema_ref(name: &str) -> Value {
    serde_json::json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// JSON content of `schema` (a request body's or a response's `content`).
#[must_use]
pub fn json_content(schema: Value) -> Value {
    serde_json::json!({ "application/json": { "schema": schema } })
}

/// A JSON response of `schema`.
#[must_use]
pub fn ok(description: &str, schema: Value) -> Value {
    serde_json::json!({ "description": description, "content": json_content(schema) })
}

/// An error response (the `Error` schema every service documents).
#[must_use]
pub fn error(description: &str) -> Value {
    ok(description, schema_ref("Error"))
}

/// A parameter `name` in `location` (`path`, `query`, `header`).
#[must_use]
pub fn parameter(
    name: &str,
    location: &str,
    required: bool,
    schema: Value,
    description: &str,
) -> Value {
    serde_json::json!({
        "name": name, "in": location, "required": required,
        "schema": schema, "description": description,
    })
}
