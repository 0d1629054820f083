//! The billing handlers: each parses its input, calls one [`Billing`] method and maps
//! the result (errors through [`crate::http`]).
//!
//! [`Billing`]: tenancy_billing::Billing

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenancy_billing::{
    Cancel, CustomerInput, Idempotency, InvoiceFilter, InvoiceId, InvoiceStatus, NewCreditNote,
    NewPlan, NewProduct, NewSubscription, PlanChange, PlanId, PriceId, ProductId, SubscriptionId,
};
use tenancy_core::{Error, ErrorKind, TenantId};

use super::{BillingState, IDEMPOTENCY_HEADER};
use crate::http::{
    Admin, ApiResult, Body, TENANT_HEADER, Tenant, api_error, expected_version, json_body,
    parse_query, to_json_response,
};

// ----- request context -----

/// The tenant of the request ([`Tenant`]), checked against the identity service: a
/// tenant that does not exist (or was deleted) is a 400 naming the header.
#[derive(Debug, Clone, Copy)]
pub(super) struct KnownTenant(pub TenantId);

impl FromRequestParts<BillingState> for KnownTenant {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &BillingState,
    ) -> Result<Self, Response> {
        let Tenant(tenant) = Tenant::from_request_parts(parts, state).await?;
        match state.tenants.is_known(tenant).await {
            Ok(true) => Ok(Self(tenant)),
            Ok(false) => Err(api_error(&Error::invalid(
                TENANT_HEADER,
                format!("tenant `{tenant}` does not exist"),
            ))),
            Err(e) => Err(api_error(&e)),
        }
    }
}

/// The body of a mutating tenant call and its idempotency key: the `Idempotency-Key`
/// header (optional; 400 when malformed) with the fingerprint of the request, the hex
/// SHA-256 of its method, path and body, so the same key with another request is
/// refused.
#[derive(Debug, Clone)]
pub(super) struct Idempotent {
    /// The raw body.
    pub body: axum::body::Bytes,
    /// The key, when the request carries one.
    pub key: Option<Idempotency>,
    /// Whether the tenant already used the key for this same request: the answer is
    /// then the saved one, marked `Idempotent-Replayed: true` (as Stripe does).
    pub replayed: bool,
}

impl Idempotent {
    /// The JSON answer `value` with `status`, marked as a replay when it is one.
    pub fn respond<T: Serialize>(&self, status: StatusCode, value: &T) -> Response {
        let mut response = to_json_response(status, value);
        if self.replayed {
            response.headers_mut().insert(
                REPLAYED_HEADER,
                axum::http::HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// The header marking a replayed answer.
pub(super) const REPLAYED_HEADER: &str = "idempotent-replayed";

impl FromRequest<BillingState> for Idempotent {
    type Rejection = Response;

    async fn from_request(request: Request, state: &BillingState) -> Result<Self, Response> {
        let header = match request.headers().get(IDEMPOTENCY_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
                api_error(&Error::invalid(
                    "Idempotency-Key",
                    "must be 1–255 printable ASCII characters without spaces",
                ))
            })?),
        };
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let tenant = request
            .headers()
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TenantId::parse_field(TENANT_HEADER, v).ok());
        let Body(body) = Body::from_request(request, state).await?;
        let key = header
            .map(|key| Idempotency::new(&key, fingerprint(method.as_str(), &path, &body)))
            .transpose()
            .map_err(|e| api_error(&e))?;
        // Known before the call; a request racing the first one with the same key gets
        // the saved answer too, without the mark.
        let replayed = match (&key, tenant) {
            (Some(key), Some(tenant)) => state
                .billing
                .store()
                .get_idempotency(tenant, &key.key)
                .await
                .map_err(|e| api_error(&e))?
                .is_some_and(|saved| saved.fingerprint == key.fingerprint),
            _ => false,
        };
        Ok(Self {
            body,
            key,
            replayed,
        })
    }
}

/// The hex SHA-256 of `method`, `path` and `body`, separated so no two requests share
/// it.
fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

// ----- parsing -----

/// A JSON object body as `T`, refusing members `T` does not know (a misspelled
/// `at_period_end` must not cancel a subscription now): `InvalidInput` naming the
/// unknown member, or on `body` when it is not a valid `what`.
fn strict_body<T: DeserializeOwned + Serialize>(body: &[u8], what: &str) -> Result<T, Error> {
    let value: Value = json_body(body, what)?;
    strict_value(value, what)
}

/// [`strict_body`] of an already parsed body.
fn strict_value<T: DeserializeOwned + Serialize>(value: Value, what: &str) -> Result<T, Error> {
    let Value::Object(given) = &value else {
        return Err(Error::invalid(
            "body",
            format!("not a valid {what}: expected a JSON object"),
        ));
    };
    let names: Vec<String> = given.keys().cloned().collect();
    let parsed: T = serde_json::from_value(value)
        .map_err(|e| Error::invalid("body", format!("not a valid {what}: {e}")))?;
    let known = serde_json::to_value(&parsed)
        .map_err(|e| Error::Internal(format!("cannot encode a {what}: {e}")))?;
    if let Some(unknown) = names.iter().find(|n| known.get(n.as_str()).is_none()) {
        return Err(Error::invalid(
            unknown,
            format!("is not a member of a {what}"),
        ));
    }
    Ok(parsed)
}

/// A body that may be empty (then `T::default()`), else [`strict_body`].
fn optional_body<T>(body: &[u8], what: &str) -> Result<T, Error>
where
    T: DeserializeOwned + Serialize + Default,
{
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        strict_body(body, what)
    }
}

/// The body of calls without parameters: nothing, or `{}` ([`strict_body`] names any
/// member given).
#[derive(Debug, Default, Serialize, Deserialize)]
struct NoParameters {}

fn no_parameters(body: &[u8]) -> Result<(), Error> {
    optional_body::<NoParameters>(body, "request without parameters").map(|_| ())
}

fn product_id(id: &str) -> Result<ProductId, Error> {
    ProductId::parse_field("id", id)
}

fn plan_id(id: &str) -> Result<PlanId, Error> {
    PlanId::parse_field("id", id)
}

fn subscription_id(id: &str) -> Result<SubscriptionId, Error> {
    SubscriptionId::parse_field("id", id)
}

fn invoice_id(id: &str) -> Result<InvoiceId, Error> {
    InvoiceId::parse_field("id", id)
}

// ----- catalog -----

pub(super) async fn create_product(
    State(state): State<BillingState>,
    _: Admin,
    Body(body): Body,
) -> ApiResult {
    let input: NewProduct = strict_body(&body, "product")?;
    let product = state.billing.create_product(input).await?;
    Ok(to_json_response(StatusCode::CREATED, &product))
}

pub(super) async fn list_products(State(state): State<BillingState>, _: Admin) -> ApiResult {
    let products = state.billing.store().list_products().await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "products": products }),
    ))
}

pub(super) async fn product(
    State(state): State<BillingState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult {
    let product = state.billing.store().get_product(product_id(&id)?).await?;
    Ok(to_json_response(StatusCode::OK, &product))
}

/// `POST /v1/plans`: a [`NewPlan`] whose prices may omit their `id` (one is made).
pub(super) async fn create_plan(
    State(state): State<BillingState>,
    _: Admin,
    Body(body): Body,
) -> ApiResult {
    let mut value: Value = json_body(&body, "plan")?;
    if let Some(prices) = value.get_mut("prices").and_then(Value::as_array_mut) {
        for price in prices.iter_mut().filter_map(Value::as_object_mut) {
            price.entry("id").or_insert_with(|| json!(PriceId::new()));
        }
    }
    let input: NewPlan = strict_value(value, "plan")?;
    let plan = state.billing.create_plan(input).await?;
    Ok(to_json_response(StatusCode::CREATED, &plan))
}

pub(super) async fn list_plans(State(state): State<BillingState>, _: Admin) -> ApiResult {
    let plans = state.billing.store().list_plans().await?;
    Ok(to_json_response(StatusCode::OK, &json!({ "plans": plans })))
}

pub(super) async fn plan(
    State(state): State<BillingState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult {
    let plan = state.billing.store().get_plan(plan_id(&id)?).await?;
    Ok(to_json_response(StatusCode::OK, &plan))
}

/// The body of `PATCH /v1/plans/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanUpdate {
    /// `false` archives the plan (no new subscriptions), `true` reactivates it.
    active: bool,
}

pub(super) async fn update_plan(
    State(state): State<BillingState>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    Body(body): Body,
) -> ApiResult {
    let id = plan_id(&id)?;
    let version = u64::try_from(expected_version(&parse_query(raw.as_deref())?)?)
        .map_err(|_| Error::invalid("expected_version", "must not be negative"))?;
    let update: PlanUpdate = json_body(&body, "plan change")?;
    let plan = state
        .billing
        .set_plan_active(id, update.active, Some(version))
        .await?;
    Ok(to_json_response(StatusCode::OK, &plan))
}

// ----- customer -----

pub(super) async fn put_customer(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    request: Idempotent,
) -> ApiResult {
    let input: CustomerInput = strict_body(&request.body, "customer")?;
    let customer = state
        .billing
        .put_customer(tenant, input, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &customer))
}

pub(super) async fn customer(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
) -> ApiResult {
    let customer = state.billing.customer(tenant).await?;
    Ok(to_json_response(StatusCode::OK, &customer))
}

// ----- subscriptions -----

pub(super) async fn create_subscription(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    request: Idempotent,
) -> ApiResult {
    let input: NewSubscription = strict_body(&request.body, "subscription")?;
    let created = state
        .billing
        .create_subscription(tenant, input, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::CREATED, &created))
}

pub(super) async fn list_subscriptions(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
) -> ApiResult {
    let subscriptions = state.billing.subscriptions(tenant).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "subscriptions": subscriptions }),
    ))
}

pub(super) async fn subscription(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    let subscription = state
        .billing
        .subscription(tenant, subscription_id(&id)?)
        .await?;
    Ok(to_json_response(StatusCode::OK, &subscription))
}

/// `POST /v1/subscriptions/{id}/preview`: the proration lines the change would invoice
/// if made now; nothing is written (an `Idempotency-Key` is not needed, and ignored).
pub(super) async fn preview_change(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let id = subscription_id(&id)?;
    let change: PlanChange = strict_body(&body, "plan change")?;
    let lines = state.billing.preview_change(tenant, id, &change).await?;
    Ok(to_json_response(StatusCode::OK, &json!({ "lines": lines })))
}

pub(super) async fn change_plan(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = subscription_id(&id)?;
    let change: PlanChange = strict_body(&request.body, "plan change")?;
    let changed = state
        .billing
        .change_plan(tenant, id, change, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &changed))
}

/// `POST /v1/subscriptions/{id}/cancel`: an empty body cancels now, without credit.
pub(super) async fn cancel(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = subscription_id(&id)?;
    let how: Cancel = optional_body(&request.body, "cancellation")?;
    let canceled = state
        .billing
        .cancel(tenant, id, how, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &canceled))
}

pub(super) async fn reactivate(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = subscription_id(&id)?;
    no_parameters(&request.body)?;
    let subscription = state
        .billing
        .reactivate(tenant, id, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &subscription))
}

pub(super) async fn pause(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = subscription_id(&id)?;
    no_parameters(&request.body)?;
    let subscription = state
        .billing
        .pause(tenant, id, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &subscription))
}

pub(super) async fn resume(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = subscription_id(&id)?;
    no_parameters(&request.body)?;
    let subscription = state
        .billing
        .resume(tenant, id, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &subscription))
}

// ----- invoices -----

/// How many invoices a list returns unless `limit` says otherwise.
const DEFAULT_INVOICE_LIMIT: u32 = 100;

/// The query of `GET /v1/invoices`: `status`, `subscription` and `limit` (1–1000).
fn invoice_query(query: &HashMap<String, String>) -> Result<(InvoiceFilter, u32), Error> {
    let mut filter = InvoiceFilter::default();
    let mut limit = DEFAULT_INVOICE_LIMIT;
    for (name, value) in query {
        match name.as_str() {
            "status" => filter.status = Some(value.parse::<InvoiceStatus>()?),
            "subscription" => {
                filter.subscription = Some(SubscriptionId::parse_field("subscription", value)?);
            }
            "limit" => {
                limit = value
                    .parse()
                    .map_err(|_| Error::invalid("limit", format!("`{value}` is not 1–1000")))?;
            }
            other => {
                return Err(Error::invalid(
                    other,
                    "is not a parameter of this list: use `status`, `subscription` and `limit`",
                ));
            }
        }
    }
    Ok((filter, limit))
}

pub(super) async fn list_invoices(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let (filter, limit) = invoice_query(&parse_query(raw.as_deref())?)?;
    let invoices = state.billing.invoices(tenant, &filter, limit).await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "invoices": invoices }),
    ))
}

pub(super) async fn invoice(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    let invoice = state.billing.invoice(tenant, invoice_id(&id)?).await?;
    Ok(to_json_response(StatusCode::OK, &invoice))
}

pub(super) async fn finalize_invoice(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = invoice_id(&id)?;
    no_parameters(&request.body)?;
    let invoice = state
        .billing
        .finalize_invoice(tenant, id, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &invoice))
}

pub(super) async fn void_invoice(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = invoice_id(&id)?;
    no_parameters(&request.body)?;
    let invoice = state
        .billing
        .void_invoice(tenant, id, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::OK, &invoice))
}

/// The body of `POST /v1/invoices/{id}/pay` (optional; [`strict_body`] names unknown
/// members).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payment {
    /// The reference of the payment (a bank transfer, a provider's payment id).
    #[serde(default)]
    provider_payment_id: Option<String>,
}

/// `POST /v1/invoices/{id}/pay`: an operator records that an open invoice was paid.
pub(super) async fn mark_paid(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = invoice_id(&id)?;
    let payment: Payment = optional_body(&request.body, "payment")?;
    let invoice = state
        .billing
        .mark_paid(
            tenant,
            id,
            payment.provider_payment_id,
            request.key.as_ref(),
        )
        .await?;
    Ok(request.respond(StatusCode::OK, &invoice))
}

pub(super) async fn create_credit_note(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
    request: Idempotent,
) -> ApiResult {
    let id = invoice_id(&id)?;
    let input: NewCreditNote = strict_body(&request.body, "credit note")?;
    let note = state
        .billing
        .create_credit_note(tenant, id, input, request.key.as_ref())
        .await?;
    Ok(request.respond(StatusCode::CREATED, &note))
}

/// `GET /v1/invoices/{id}/credit_notes`: 404 for an unknown invoice, so the invoice is
/// read first.
pub(super) async fn list_credit_notes(
    State(state): State<BillingState>,
    _: Admin,
    KnownTenant(tenant): KnownTenant,
    Path(id): Path<String>,
) -> ApiResult {
    let id = invoice_id(&id)?;
    let invoice = state.billing.invoice(tenant, id).await?;
    let notes = state
        .billing
        .store()
        .list_credit_notes(tenant, invoice.id)
        .await?;
    Ok(to_json_response(
        StatusCode::OK,
        &json!({ "credit_notes": notes }),
    ))
}

// ----- health -----

/// `GET /readyz`: the billing store answers.
pub(super) async fn readyz(State(state): State<BillingState>) -> Response {
    match state.billing.customer(TenantId::new()).await {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            tracing::warn!(error = %e, "billing store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
        _ => (StatusCode::OK, "ready").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn fingerprints_tell_method_path_and_body_apart() {
        let base = fingerprint("POST", "/v1/subscriptions", b"{}");
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base, fingerprint("POST", "/v1/subscriptions", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/v1/subscriptions", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v1/subscriptions/", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v1/subscriptions", b"{ }"));
    }

    #[test]
    fn strict_bodies_name_unknown_members() {
        let cancel: Cancel = strict_body(br#"{"at_period_end": true}"#, "cancellation").unwrap();
        assert!(cancel.at_period_end);
        let err = strict_body::<Cancel>(br#"{"at_period_nd": true}"#, "cancellation").unwrap_err();
        assert_eq!(err.field(), Some("at_period_nd"));
        let err = strict_body::<Cancel>(b"[]", "cancellation").unwrap_err();
        assert_eq!(err.field(), Some("body"));
        let none: Cancel = optional_body(b"  ", "cancellation").unwrap();
        assert_eq!(none, Cancel::default());
        assert!(no_parameters(b"{}").is_ok());
        assert!(no_parameters(br#"{"x": 1}"#).is_err());
    }

    #[test]
    fn invoice_queries_parse_and_refuse_unknown_parameters() {
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let (filter, limit) = invoice_query(&query(&[("status", "open"), ("limit", "5")])).unwrap();
        assert_eq!(filter.status, Some(InvoiceStatus::Open));
        assert_eq!(limit, 5);
        for (name, value) in [
            ("status", "late"),
            ("limit", "-1"),
            ("subscription", "x"),
            ("colour", "red"),
        ] {
            let err = invoice_query(&query(&[(name, value)])).unwrap_err();
            assert_eq!(err.field(), Some(name), "{err}");
        }
    }
}
