//! What every HTTP service of the binary shares: the one map from library error kinds
//! to HTTP statuses and JSON error bodies, the admin-token extractor, query and JSON
//! body parsing that fail as JSON errors, health endpoints, and the fallback for
//! unknown routes.
//!
//! | library error kind | HTTP status | `code` |
//! |---|---|---|
//! | `InvalidInput` | 400 | `invalid_input` |
//! | `Unauthenticated` | 401 | `unauthenticated` |
//! | `PermissionDenied` | 403 | `permission_denied` |
//! | `NotFound` | 404 | `not_found` |
//! | `AlreadyExists` | 409 | `already_exists` |
//! | `Conflict` | 409 | `conflict` |
//! | `QuotaExceeded` | 429 | `quota_exceeded` |
//! | `Unavailable` | 503 | `unavailable` |
//! | `Internal` | 500 | `internal` |
//!
//! Error bodies are `{"error": {"code": "...", "message": "...", "field": "..."}}`:
//! `code` is for programs, `message` for people, `field` (when known) names the
//! offending input.

use std::collections::HashMap;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tenancy_core::{Error, ErrorKind};

use crate::AdminAuth;

/// The HTTP status of a library error kind.
#[must_use]
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The machine-readable code of a library error kind.
#[must_use]
pub const fn code_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Unauthenticated => "unauthenticated",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::NotFound => "not_found",
        ErrorKind::AlreadyExists => "already_exists",
        ErrorKind::Conflict => "conflict",
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::Unavailable => "unavailable",
        _ => "internal",
    }
}

/// The JSON error body of `error`, with `extra` members merged into the `error`
/// object. Internal and unavailable errors are logged and described generically.
#[must_use]
pub fn error_body(error: &Error, extra: Option<Value>) -> Value {
    let kind = error.kind();
    let message = match kind {
        ErrorKind::Internal => {
            tracing::error!(%error, "internal error");
            "internal error".to_owned()
        }
        ErrorKind::Unavailable => {
            tracing::warn!(%error, "backend unavailable");
            "a backend is temporarily unavailable, retry later".to_owned()
        }
        _ => error.to_string(),
    };
    let mut body = json!({"code": code_of(kind), "message": message, "field": error.field()});
    if let (Some(Value::Object(extra)), Some(map)) = (extra, body.as_object_mut()) {
        map.extend(extra);
    }
    json!({ "error": body })
}

/// A library error as a JSON response (see the module docs), `no-store`, with
/// `WWW-Authenticate: Bearer` on 401.
#[must_use]
pub fn api_error(error: &Error) -> Response {
    error_response(error, None)
}

/// [`api_error`] with more members in the `error` object (e.g. per-item rejections).
#[must_use]
pub fn error_response(error: &Error, extra: Option<Value>) -> Response {
    let kind = error.kind();
    let mut response = (
        status_of(kind),
        no_store(),
        axum::Json(error_body(error, extra)),
    )
        .into_response();
    if kind == ErrorKind::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tenancy-admin\""),
        );
    }
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
#[must_use]
pub fn no_store() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers
}

/// A JSON answer with `status`, not cached.
#[must_use]
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, no_store(), axum::Json(body)).into_response()
}

/// `value` as a JSON answer with `status`; a value that cannot be serialized is an
/// internal error.
#[must_use]
pub fn to_json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(body) => json_response(status, body),
        Err(e) => api_error(&Error::Internal(format!(
            "cannot serialize the answer: {e}"
        ))),
    }
}

/// A library error as a handler's `Err`: answered by [`api_error`] (axum's
/// error-handling pattern: `?` on any library call, one `IntoResponse`).
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(&self.0)
    }
}

/// What a JSON API handler returns.
pub type ApiResult = Result<Response, ApiError>;

/// Parses `application/x-www-form-urlencoded` text (a query string or a form body);
/// a repeated parameter is an error (RFC 6749 §3.1, §3.2).
pub fn parse_form(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` is repeated"));
        }
    }
    Ok(map)
}

/// The parameters of a query string (`InvalidInput` on `query` for a repeated one).
pub fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, Error> {
    parse_form(raw.unwrap_or_default().as_bytes()).map_err(|e| Error::invalid("query", e))
}

/// The required integer parameter `expected_version` of a query: the version the
/// caller read, for optimistic concurrency.
pub fn expected_version(query: &HashMap<String, String>) -> Result<i64, Error> {
    query
        .get("expected_version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::invalid("expected_version", "is required: the version you read"))
}

/// A JSON request body as `T`; `InvalidInput` on `body` naming what is wrong (`what`
/// says what the body should be, e.g. "a meter").
pub fn json_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid("body", format!("not a valid {what}: {e}")))
}

/// Proof that the request carries the admin token (`Authorization: Bearer <token>`):
/// every admin handler takes it, so none can forget the check. Works in any router
/// whose state holds an [`AdminAuth`].
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    AdminAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        AdminAuth::from_ref(state)
            .check_authorization(value)
            .map(|()| Admin)
            .map_err(|e| api_error(&e))
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the
/// requests in flight: the HTTP services' `run_*` functions.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| crate::Error::Http(source.to_string()))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The answer for a path no route serves: a JSON `not_found`.
pub async fn no_route(uri: axum::http::Uri) -> Response {
    api_error(&Error::NotFound(format!("no route for `{}`", uri.path())))
}

/// The header naming the tenant a request acts for (until JWT layers carry it in the
/// token): `X-Tenant-Id: <tenant id>`.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The tenant of the request, from [`TENANT_HEADER`]; a missing or malformed header
/// is a 400 naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant(pub tenancy_core::TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(TENANT_HEADER)
            .ok_or_else(|| Error::invalid(TENANT_HEADER, "is required: the tenant id"))
            .and_then(|v| {
                v.to_str()
                    .map_err(|_| Error::invalid(TENANT_HEADER, "is not a tenant id"))
            })
            .and_then(|v| tenancy_core::TenantId::parse_field(TENANT_HEADER, v.trim()));
        value.map(Tenant).map_err(|e| api_error(&e))
    }
}

/// The raw request body, with axum's rejections (a body above the router's limit, a
/// broken stream) answered as JSON errors: 413 `payload_too_large`, 400
/// `invalid_input`.
#[derive(Debug, Clone)]
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "invalid_input"
                };
                json_response(
                    status,
                    json!({"error": {"code": code, "message": rejection.body_text(), "field": "body"}}),
                )
            })
    }
}
