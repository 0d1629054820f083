//! The billing service (HTTP, default 127.0.0.1:3001): [`tenancy_billing`] as a REST
//! API, plus the scheduler that closes ended billing periods ([`run_scheduler`]).
//!
//! Every `/v1` call needs the admin token (`Authorization: Bearer <token>`). The
//! catalog (products and plans) is shared by every tenant; every other call names its
//! tenant in the `X-Tenant-Id` header, and the tenant must exist (and not be deleted)
//! in the identity service. A tenant is a billing customer: one billing profile per
//! tenant.
//!
//! | method and path | what |
//! |---|---|
//! | `POST`, `GET /v1/products`, `GET /v1/products/{id}` | create, list, read products |
//! | `POST`, `GET /v1/plans`, `GET /v1/plans/{id}` | create, list, read plans |
//! | `PATCH /v1/plans/{id}?expected_version=` | archive or reactivate a plan |
//! | `PUT`, `GET /v1/customer` | the tenant's billing profile |
//! | `POST`, `GET /v1/subscriptions`, `GET /v1/subscriptions/{id}` | subscribe, list, read |
//! | `POST /v1/subscriptions/{id}/preview` | the proration a plan change would invoice now |
//! | `POST /v1/subscriptions/{id}/{change,cancel,reactivate,pause,resume}` | change it |
//! | `GET /v1/invoices?status=&subscription=&limit=`, `GET /v1/invoices/{id}` | invoices |
//! | `POST /v1/invoices/{id}/{finalize,void,pay}` | finalize, void, mark paid |
//! | `POST`, `GET /v1/invoices/{id}/credit_notes` | credit an invoice, list its notes |
//! | `POST`, `GET /v1/webhook_endpoints`, `GET`, `PATCH`, `DELETE /v1/webhook_endpoints/{id}` | the tenant's webhook endpoints |
//! | `POST /v1/webhook_endpoints/{id}/roll_secret` | a new signing secret |
//! | `GET /v1/webhook_endpoints/{id}/deliveries`, `GET /v1/webhook_deliveries/{id}` | delivery records |
//! | `POST /webhooks/stripe` | Stripe's events (signed; no admin token) |
//! | `GET /api/openapi.json`, `GET /api/docs` | the OpenAPI document, its HTML rendering |
//! | `GET /healthz`, `GET /readyz` | health |
//!
//! Every mutating tenant call takes an optional `Idempotency-Key` header with Stripe's
//! semantics: the first request with a key saves its response in the same
//! transaction as its effect; the same key with the same request (method, path and
//! body) replays that response, marked `Idempotent-Replayed: true`; the same key with
//! another request is 409 `conflict`. Keys are scoped by tenant.
//!
//! Errors are JSON with a machine-readable `code` and a `message` ([`crate::http`]).
//! Bodies above [`MAX_BODY_BYTES`] are refused with 413.

mod handlers;
pub mod openapi;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use tenancy_billing::{Billing, Webhooks};
use tenancy_metering::TenantDirectory;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

use crate::{AdminAuth, Error, http};

/// Request bodies larger than this are refused (413): a plan of 20 tiered prices is a
/// few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The header carrying a request's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// What every billing handler shares.
#[derive(Clone)]
pub struct BillingState {
    /// The billing engine.
    pub billing: Arc<Billing>,
    /// Guards the API.
    pub admin: AdminAuth,
    /// Which tenants exist (the identity service): calls for any other are refused.
    pub tenants: Arc<dyn TenantDirectory>,
    /// The signing secret of Stripe's webhooks, when configured.
    pub stripe_webhook_secret: Option<Arc<str>>,
    /// The tenants' outgoing webhook endpoints.
    pub webhooks: Arc<Webhooks>,
}

impl FromRef<BillingState> for AdminAuth {
    fn from_ref(state: &BillingState) -> Self {
        state.admin.clone()
    }
}

impl std::fmt::Debug for BillingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingState")
            .field("admin", &self.admin)
            .field(
                "stripe_webhook_secret",
                &self.stripe_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The billing service's routes.
pub fn router(state: BillingState) -> Router {
    Router::new()
        .route(
            "/v1/products",
            post(handlers::create_product).get(handlers::list_products),
        )
        .route("/v1/products/{id}", get(handlers::product))
        .route(
            "/v1/plans",
            post(handlers::create_plan).get(handlers::list_plans),
        )
        .route(
            "/v1/plans/{id}",
            get(handlers::plan).patch(handlers::update_plan),
        )
        .route(
            "/v1/customer",
            get(handlers::customer).put(handlers::put_customer),
        )
        .route(
            "/v1/subscriptions",
            post(handlers::create_subscription).get(handlers::list_subscriptions),
        )
        .route("/v1/subscriptions/{id}", get(handlers::subscription))
        .route(
            "/v1/subscriptions/{id}/preview",
            post(handlers::preview_change),
        )
        .route("/v1/subscriptions/{id}/change", post(handlers::change_plan))
        .route("/v1/subscriptions/{id}/cancel", post(handlers::cancel))
        .route(
            "/v1/subscriptions/{id}/reactivate",
            post(handlers::reactivate),
        )
        .route("/v1/subscriptions/{id}/pause", post(handlers::pause))
        .route("/v1/subscriptions/{id}/resume", post(handlers::resume))
        .route("/v1/invoices", get(handlers::list_invoices))
        .route("/v1/invoices/{id}", get(handlers::invoice))
        .route(
            "/v1/invoices/{id}/finalize",
            post(handlers::finalize_invoice),
        )
        .route("/v1/invoices/{id}/void", post(handlers::void_invoice))
        .route("/v1/invoices/{id}/pay", post(handlers::mark_paid))
        .route(
            "/v1/invoices/{id}/credit_notes",
            post(handlers::create_credit_note).get(handlers::list_credit_notes),
        )
        .route(
            "/v1/webhook_endpoints",
            post(webhooks::create_endpoint).get(webhooks::list_endpoints),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhooks::endpoint)
                .patch(webhooks::update_endpoint)
                .delete(webhooks::delete_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/roll_secret",
            post(webhooks::roll_secret),
        )
        .route(
            "/v1/webhook_endpoints/{id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route("/v1/webhook_deliveries/{id}", get(webhooks::delivery))
        .route("/webhooks/stripe", post(webhooks::stripe))
        .route("/api/openapi.json", get(openapi::document_handler))
        .route("/api/docs", get(openapi::docs_handler))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(http::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the billing API on `listener` until `shutdown` completes, then waits for the
/// requests in flight.
pub async fn run_billing(
    listener: TcpListener,
    state: BillingState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    http::serve(listener, router(state), shutdown).await
}

/// How many due billing periods one scheduler query fetches.
const SCHEDULER_BATCH: u32 = 100;

/// How long idempotency keys are kept (Stripe: 24 hours).
const IDEMPOTENCY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// How often keys older than [`IDEMPOTENCY_RETENTION`] are purged.
const PURGE_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Runs the billing scheduler until `shutdown` completes: every `every`, it closes the
/// billing periods that have ended ([`Billing::run_due`], batch after batch while
/// batches come back full) and, once an hour, forgets idempotency keys older than a
/// day. A pass in progress finishes before it stops. Failures are logged and the
/// periods stay due, so several schedulers (one per billing process) may run: each
/// period is invoiced once.
pub async fn run_scheduler(
    billing: Arc<Billing>,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_purge: Option<chrono::DateTime<chrono::Utc>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("billing scheduler stopping");
                return Ok(());
            }
            _ = ticks.tick() => {
                close_due_periods(&billing).await;
                collect_due_payments(&billing).await;
                let now = billing.now();
                if last_purge.is_none_or(|at| now - at >= PURGE_EVERY) {
                    last_purge = Some(now);
                    purge_idempotency_keys(&billing, now).await;
                }
            }
        }
    }
}

/// One scheduler pass: batches of due periods until one comes back short.
async fn close_due_periods(billing: &Billing) {
    loop {
        match billing.run_due(SCHEDULER_BATCH).await {
            Ok(report) => {
                if report.closed + report.failed > 0 {
                    tracing::info!(
                        closed = report.closed,
                        invoiced = report.invoiced,
                        skipped = report.skipped,
                        failed = report.failed,
                        "billing periods closed"
                    );
                }
                // Periods that failed stay due: only a full batch of progress means
                // more may be waiting.
                let progress = u32::try_from(report.closed + report.skipped).unwrap_or(u32::MAX);
                if progress < SCHEDULER_BATCH {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "billing scheduler pass failed");
                return;
            }
        }
    }
}

/// Charges the invoices whose payment attempt is due (first attempts and dunning
/// retries) through the payment provider.
async fn collect_due_payments(billing: &Billing) {
    loop {
        match billing.collect_due(SCHEDULER_BATCH).await {
            Ok(report) => {
                let done = report.succeeded + report.pending + report.failed + report.errors;
                if done > 0 {
                    tracing::info!(
                        succeeded = report.succeeded,
                        pending = report.pending,
                        failed = report.failed,
                        errors = report.errors,
                        "invoices collected"
                    );
                }
                let progress = u32::try_from(done - report.errors).unwrap_or(u32::MAX);
                if progress < SCHEDULER_BATCH {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "collecting payments failed");
                return;
            }
        }
    }
}

async fn purge_idempotency_keys(billing: &Billing, now: chrono::DateTime<chrono::Utc>) {
    match billing
        .store()
        .purge_idempotency(now - IDEMPOTENCY_RETENTION)
        .await
    {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
        Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
    }
}
