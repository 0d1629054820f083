//! The one place where gateway outcomes become HTTP responses: protocol errors (JSON
//! bodies, `WWW-Authenticate`, `Retry-After`), pages with their security headers, and
//! redirects. Library errors of the admin API map as in every HTTP service
//! ([`crate::http`]).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tenancy_core::oauth::OAuthError;
use tenancy_core::{Error, ErrorKind};

pub use crate::http::{api_error, code_of, no_store, status_of};

/// A protocol error of the token, introspection or revocation endpoint (RFC 6749
/// §5.2): JSON, `no-store`, `WWW-Authenticate: Basic` on 401, `Retry-After` on 429.
#[must_use]
pub fn oauth_error(error: &OAuthError) -> Response {
    if error.status() >= 500 {
        tracing::error!(%error, "token endpoint failure");
    }
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"error": error.code.as_str(), "error_description": error.description});
    let mut response = (status, no_store(), axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tenancy\""),
        );
    }
    if let Some(after) = error.retry_after
        && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        headers.insert(header::RETRY_AFTER, v);
    }
    response
}

/// A bearer-token error (RFC 6750 §3): 401 with `WWW-Authenticate: Bearer error=...`.
#[must_use]
pub fn bearer_error(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let challenge = format!(
        "Bearer realm=\"tenancy\", error=\"{}\", error_description=\"{}\"",
        error.code.as_str(),
        error.description.replace(['"', '\\'], "'")
    );
    let mut response = (
        status,
        no_store(),
        axum::Json(json!({"error": error.code.as_str(), "error_description": error.description})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The headers of every page: no caching, no framing, no sniffing, no referrer, and a
/// content security policy that allows nothing but the inline style.
#[must_use]
pub fn page_headers() -> HeaderMap {
    let mut headers = no_store();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
}

/// An HTML page.
#[must_use]
pub fn html(status: StatusCode, body: String) -> Response {
    (status, page_headers(), body).into_response()
}

/// The error page for a library error during the browser flow.
#[must_use]
pub fn page_error(error: &Error) -> Response {
    let message = match error.kind() {
        ErrorKind::Internal | ErrorKind::Unavailable => {
            tracing::error!(%error, "authorization flow failure");
            "the server cannot answer right now; try again later".to_owned()
        }
        _ => error.to_string(),
    };
    html(status_of(error.kind()), super::pages::error(&message))
}

/// A `303 See Other` to `location`, not cached, without a referrer.
#[must_use]
pub fn redirect(location: &str) -> Response {
    let mut headers = no_store();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
            (StatusCode::SEE_OTHER, headers).into_response()
        }
        Err(_) => html(
            StatusCode::BAD_REQUEST,
            super::pages::error("the redirect address is invalid"),
        ),
    }
}
