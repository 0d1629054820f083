//! The usage service (HTTP, default 127.0.0.1:8080): [`tenancy_metering`] as a REST
//! API, plus (with Kafka configured) a consumer of `usage.events` that writes through
//! the same ingestion path.
//!
//! Every `/v1` call needs the admin token (`Authorization: Bearer <token>`) and names
//! its tenant in the `X-Tenant-Id` header.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/events` | ingest one CloudEvent or a batch (JSON array, ≤ 1,000) |
//! | `POST /v1/meters`, `GET /v1/meters` | create, list meters |
//! | `GET`, `PATCH`, `DELETE /v1/meters/{key}` | one meter (`PATCH`/`DELETE` take `?expected_version=`) |
//! | `GET /v1/meters/{key}/query` | the meter over `[from, to)` by window, grouped and filtered |
//! | `GET /v1/totals?from=&to=` | every meter's totals over a billing period |
//! | `PUT`, `GET`, `DELETE /v1/meters/{key}/quota` | the meter's quota (`GET`: with its balance) |
//! | `POST /v1/meters/{key}/quota/check` | atomically check and consume an amount |
//! | `GET /api/openapi.json`, `GET /api/docs` | the OpenAPI document, its HTML rendering |
//! | `GET /healthz`, `GET /readyz` | health |
//!
//! Errors are JSON with a machine-readable `code` and a `message` ([`crate::http`]).
//! Bodies above [`MAX_BODY_BYTES`] are refused with 413.

mod handlers;
pub mod openapi;

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use tenancy_metering::Metering;
use tokio::net::TcpListener;

use crate::{AdminAuth, Error, http};

/// Request bodies larger than this are refused (413): a full batch of 1,000 events of
/// about 4 KiB each.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every usage handler shares.
#[derive(Clone)]
pub struct UsageState {
    /// The metering service.
    pub metering: Metering,
    /// Guards the API.
    pub admin: AdminAuth,
}

impl FromRef<UsageState> for AdminAuth {
    fn from_ref(state: &UsageState) -> Self {
        state.admin.clone()
    }
}

impl std::fmt::Debug for UsageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageState")
            .field("metering", &self.metering)
            .field("admin", &self.admin)
            .finish()
    }
}

/// The usage service's routes.
pub fn router(state: UsageState) -> Router {
    Router::new()
        .route("/v1/events", post(handlers::ingest))
        .route(
            "/v1/meters",
            post(handlers::create_meter).get(handlers::list_meters),
        )
        .route(
            "/v1/meters/{key}",
            get(handlers::meter)
                .patch(handlers::update_meter)
                .delete(handlers::delete_meter),
        )
        .route("/v1/meters/{key}/query", get(handlers::query))
        .route(
            "/v1/meters/{key}/quota",
            get(handlers::quota)
                .put(handlers::set_quota)
                .delete(handlers::delete_quota),
        )
        .route("/v1/meters/{key}/quota/check", post(handlers::check_quota))
        .route("/v1/totals", get(handlers::totals))
        .route("/api/openapi.json", get(openapi::document_handler))
        .route("/api/docs", get(openapi::docs_handler))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(http::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the usage API on `listener` until `shutdown` completes, then waits for the
/// requests in flight.
pub async fn run_usage(
    listener: TcpListener,
    state: UsageState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    http::serve(listener, router(state), shutdown).await
}
