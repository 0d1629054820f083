//! Webhooks of the billing service: Stripe's incoming events (`POST /webhooks/stripe`,
//! verified on the raw body, applied once) and the tenant's outgoing webhook
//! endpoints (`/v1/webhook_endpoints`, deliveries signed and retried by the
//! [`tenancy_billing::WebhookDispatcher`]).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::json;
use tenancy_billing::provider_events::verify_stripe_event;
use tenancy_billing::signature::{DEFAULT_TOLERANCE, HEADER};
use tenancy_billing::webhooks::{NewWebhookEndpoint, WebhookEndpointChange};
use tenancy_billing::{WebhookDeliveryId, WebhookEndpointId};
use tenancy_core::Error;

use super::BillingState;
use super::handlers::KnownTenant;
use crate::http::{Admin, ApiResult, Body, json_body, parse_query, to_json_response};

/// `POST /webhooks/stripe`: Stripe's events. The `Stripe-Signature` header is checked
/// against the configured secret over the raw body (401 when it does not verify,
/// 503 when no secret is configured); a verified event is applied once — a
/// redelivery answers 200 with outcome `duplicate`, an event billing does not act
/// on 200 with `ignored`, so Stripe stops sending it. Store failures answer 5xx and
/// Stripe retries.
pub(super) async fn stripe(
    State(state): State<BillingState>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult {
    let Some(secret) = state.stripe_webhook_secret.as_deref() else {
        return Err(Error::Unavailable(
            "Stripe webhooks are not configured (`stripe_webhook_secret`)".into(),
        )
        .into());
    };
    let header = headers.get(HEADER).and_then(|v| v.to_str().ok());
    let now = state.billing.now().timestamp();
    let event = verify_stripe_event(header, &body, &[secret], now, DEFAULT_TOLERANCE)?;
    let outcome = state.billing.apply_payment_event(&event).await?;
    tracing::info!(event = %event.event_id, kind = %event.event_type, ?outcome, "stripe webhook");
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "received": true, "outcome": outcome }),
    ))
}

fn endpoint_id(id: &str) -> Result<WebhookEndpointId, Error> {
    WebhookEndpointId::parse_field("id", id)
        .map_err(|_| Error::NotFound(format!("webhook endpoint `{id}` not found")))
}

/// `POST /v1/webhook_endpoints`: 201 with the endpoint and its signing secret (shown
/// this once).
pub(super) async fn create_endpoint(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Body(body): Body,
) -> ApiResult {
    let input: NewWebhookEndpoint = json_body(&body, "webhook endpoint")?;
    let endpoint = state.webhooks.create_endpoint(tenant, input).await?;
    Ok(to_json_response(StatusCode::CREATED, &endpoint))
}

/// `GET /v1/webhook_endpoints`.
pub(super) async fn list_endpoints(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
) -> ApiResult {
    let endpoints = state.webhooks.list_endpoints(tenant).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "webhook_endpoints": endpoints }),
    ))
}

/// `GET /v1/webhook_endpoints/{id}`.
pub(super) async fn endpoint(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    let endpoint = state
        .webhooks
        .get_endpoint(tenant, endpoint_id(&id)?)
        .await?;
    Ok(to_json_response(StatusCode::OK, &endpoint))
}

/// `PATCH /v1/webhook_endpoints/{id}`: the body carries the `version` it was read at.
pub(super) async fn update_endpoint(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let change: WebhookEndpointChange = json_body(&body, "webhook endpoint change")?;
    let endpoint = state
        .webhooks
        .update_endpoint(tenant, endpoint_id(&id)?, change)
        .await?;
    Ok(to_json_response(StatusCode::OK, &endpoint))
}

/// `DELETE /v1/webhook_endpoints/{id}`: 204.
pub(super) async fn delete_endpoint(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    state
        .webhooks
        .delete_endpoint(tenant, endpoint_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct RollSecret {
    version: u64,
    #[serde(default)]
    overlap_seconds: i64,
}

/// `POST /v1/webhook_endpoints/{id}/roll_secret`: a new secret (shown this once); the
/// old one keeps signing for `overlap_seconds`.
pub(super) async fn roll_secret(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let roll: RollSecret = json_body(&body, "secret roll")?;
    let overlap = chrono::Duration::try_seconds(roll.overlap_seconds)
        .ok_or_else(|| Error::invalid("overlap_seconds", "is out of range"))?;
    let endpoint = state
        .webhooks
        .roll_secret(tenant, endpoint_id(&id)?, roll.version, overlap)
        .await?;
    Ok(to_json_response(StatusCode::OK, &endpoint))
}

/// `GET /v1/webhook_endpoints/{id}/deliveries?before=&limit=`: newest first.
pub(super) async fn list_deliveries(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let query = parse_query(query.as_deref())?;
    let before = query
        .get("before")
        .map(|b| WebhookDeliveryId::parse_field("before", b))
        .transpose()?;
    let limit = match query.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| Error::invalid("limit", format!("`{l}` is not a number")))?,
        None => 50,
    };
    let deliveries = state
        .webhooks
        .list_deliveries(tenant, endpoint_id(&id)?, before, limit)
        .await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "deliveries": deliveries }),
    ))
}

/// `GET /v1/webhook_deliveries/{id}`.
pub(super) async fn delivery(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    let id = WebhookDeliveryId::parse_field("id", &id)
        .map_err(|_| Error::NotFound(format!("webhook delivery `{id}` not found")))?;
    let delivery = state.webhooks.get_delivery(tenant, id).await?;
    Ok(to_json_response(StatusCode::OK, &delivery))
}
