//! Payment providers: `ManualProvider`, and `StripeProvider` against a stub of
//! Stripe's API on 127.0.0.1 that records every request and answers the way Stripe
//! does (test payment methods pick the outcome, as Stripe's test cards do).

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tenancy_billing::payment::MAX_IDEMPOTENCY_KEY_LEN;
use tenancy_billing::{
    ChargeOutcome, ChargeRequest, Currency, CustomerRequest, InvoiceId, ManualProvider, Money,
    PaymentProvider, ProviderCustomerId, RefundOutcome, RefundRequest, StripeProvider,
};
use tenancy_core::identity::Email;
use tenancy_core::{ErrorKind, TenantId};

type TestResult = Result<(), Box<dyn Error>>;

const API_KEY: &str = "sk_test_stub_4eC39HqLyjWDarjtT1zdp7dc";

fn usd(minor: i64) -> Result<Money, Box<dyn Error>> {
    Ok(Money::new(minor, Currency::parse("USD")?))
}

fn customer_request() -> Result<CustomerRequest, Box<dyn Error>> {
    Ok(CustomerRequest {
        name: "Acme Corp".into(),
        email: Some(Email::parse("billing@acme.test")?),
    })
}

fn charge_request(
    tenant: TenantId,
    customer: &ProviderCustomerId,
    key: &str,
) -> Result<ChargeRequest, Box<dyn Error>> {
    Ok(ChargeRequest {
        tenant,
        invoice: InvoiceId::new(),
        customer: customer.clone(),
        amount: usd(1_999)?,
        description: "Invoice 2026-001".into(),
        idempotency_key: key.into(),
    })
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: tenancy_core::Result<T>, kind: ErrorKind) {
    assert!(
        matches!(&result, Err(e) if e.kind() == kind),
        "expected {kind:?}, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------
// ManualProvider

#[tokio::test]
async fn manual_customers_are_stable_per_tenant() -> TestResult {
    let provider: Arc<dyn PaymentProvider> = Arc::new(ManualProvider::new());
    assert_eq!(provider.name(), "manual");
    let tenant = TenantId::new();
    let customer = provider
        .create_customer(tenant, &customer_request()?)
        .await?;
    assert_eq!(customer.as_str(), format!("manual_{tenant}"));
    assert_eq!(customer, ManualProvider::customer_id(tenant));
    assert_eq!(
        provider
            .create_customer(tenant, &customer_request()?)
            .await?,
        customer
    );
    let other = provider
        .create_customer(TenantId::new(), &customer_request()?)
        .await?;
    assert_ne!(other, customer);
    assert_eq!(
        serde_json::to_value(&customer)?,
        json!(format!("manual_{tenant}"))
    );

    let blank = CustomerRequest {
        name: "  ".into(),
        email: None,
    };
    assert_kind(
        provider.create_customer(tenant, &blank).await,
        ErrorKind::InvalidInput,
    );
    let long = CustomerRequest {
        name: "x".repeat(257),
        email: None,
    };
    assert_kind(
        provider.create_customer(tenant, &long).await,
        ErrorKind::InvalidInput,
    );
    Ok(())
}

#[tokio::test]
async fn manual_payment_methods_are_remembered() -> TestResult {
    let provider = ManualProvider::new();
    let customer = ManualProvider::customer_id(TenantId::new());
    assert_eq!(provider.default_payment_method(&customer)?, None);
    provider
        .attach_payment_method(&customer, "bank_transfer")
        .await?;
    provider.attach_payment_method(&customer, "cheque").await?;
    assert_eq!(
        provider.default_payment_method(&customer)?.as_deref(),
        Some("cheque")
    );
    let stranger = ProviderCustomerId::new("cus_123");
    assert_kind(
        provider.attach_payment_method(&stranger, "cheque").await,
        ErrorKind::NotFound,
    );
    assert_kind(
        provider.attach_payment_method(&customer, "").await,
        ErrorKind::InvalidInput,
    );
    Ok(())
}

#[tokio::test]
async fn manual_charges_wait_for_an_operator() -> TestResult {
    let provider = ManualProvider::new();
    let tenant = TenantId::new();
    let customer = ManualProvider::customer_id(tenant);
    let request = charge_request(tenant, &customer, "attempt-1")?;
    let outcome = provider.charge(&request).await?;
    let expected = format!("manual_{}", request.invoice);
    assert_eq!(
        outcome,
        ChargeOutcome::Pending {
            provider_payment_id: expected.clone()
        }
    );
    assert_eq!(outcome.provider_payment_id(), Some(expected.as_str()));
    assert_eq!(
        serde_json::to_value(&outcome)?,
        json!({ "status": "pending", "provider_payment_id": expected })
    );
    // A retry with the same key returns the same outcome; the same key with another
    // request is a conflict.
    assert_eq!(provider.charge(&request).await?, outcome);
    let changed = ChargeRequest {
        amount: usd(2_000)?,
        ..request.clone()
    };
    assert_kind(provider.charge(&changed).await, ErrorKind::Conflict);

    // The customer of another tenant, or not a manual customer.
    let foreign = charge_request(TenantId::new(), &customer, "attempt-2")?;
    assert_kind(provider.charge(&foreign).await, ErrorKind::InvalidInput);
    let stripe_customer = charge_request(tenant, &ProviderCustomerId::new("cus_1"), "attempt-3")?;
    assert_kind(provider.charge(&stripe_customer).await, ErrorKind::NotFound);

    // Bad input changes nothing.
    for (amount, key) in [
        (0, "k"),
        (-5, "k"),
        (100, ""),
        (100, "has space"),
        (100, "ключ"),
    ] {
        let bad = ChargeRequest {
            amount: usd(amount)?,
            idempotency_key: key.into(),
            ..request.clone()
        };
        assert_kind(provider.charge(&bad).await, ErrorKind::InvalidInput);
    }
    let long_key = ChargeRequest {
        idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
        ..request.clone()
    };
    assert_kind(provider.charge(&long_key).await, ErrorKind::InvalidInput);
    let max_key = ChargeRequest {
        idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_LEN),
        ..request.clone()
    };
    assert_eq!(provider.charge(&max_key).await?, outcome);
    Ok(())
}

#[tokio::test]
async fn manual_refunds_succeed_at_once() -> TestResult {
    let provider = ManualProvider::new();
    let tenant = TenantId::new();
    let customer = ManualProvider::customer_id(tenant);
    let charged = provider
        .charge(&charge_request(tenant, &customer, "c-1")?)
        .await?;
    let request = RefundRequest {
        tenant,
        provider_payment_id: charged
            .provider_payment_id()
            .ok_or("no payment id")?
            .to_owned(),
        amount: usd(500)?,
        idempotency_key: "r-1".into(),
    };
    let outcome = provider.refund(&request).await?;
    let RefundOutcome::Succeeded { provider_refund_id } = &outcome else {
        return Err(format!("expected a refund that succeeded, got {outcome:?}").into());
    };
    assert!(
        provider_refund_id.starts_with("manual_refund_"),
        "{provider_refund_id}"
    );
    assert_eq!(provider.refund(&request).await?, outcome);
    let second = RefundRequest {
        idempotency_key: "r-2".into(),
        ..request.clone()
    };
    assert_ne!(provider.refund(&second).await?, outcome);
    let changed = RefundRequest {
        amount: usd(1)?,
        ..request.clone()
    };
    assert_kind(provider.refund(&changed).await, ErrorKind::Conflict);
    let foreign = RefundRequest {
        provider_payment_id: "pi_123".into(),
        idempotency_key: "r-3".into(),
        ..request.clone()
    };
    assert_kind(provider.refund(&foreign).await, ErrorKind::NotFound);
    let zero = RefundRequest {
        amount: usd(0)?,
        idempotency_key: "r-4".into(),
        ..request
    };
    assert_kind(provider.refund(&zero).await, ErrorKind::InvalidInput);
    Ok(())
}

// ---------------------------------------------------------------------------------
// A stub of Stripe's API

/// One request the stub received.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    authorization: Option<String>,
    stripe_version: Option<String>,
    idempotency_key: Option<String>,
    form: Vec<(String, String)>,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Default)]
struct StubState {
    requests: Vec<Recorded>,
    /// Customer id → default payment method for invoices.
    customers: HashMap<String, Option<String>>,
    /// Idempotency key → the status and body first answered (Stripe replays them).
    answered: HashMap<String, (StatusCode, Value)>,
    intents_created: usize,
}

#[derive(Clone, Default)]
struct Stub(Arc<Mutex<StubState>>);

impl Stub {
    fn state(&self) -> MutexGuard<'_, StubState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    fn last(&self) -> Result<Recorded, Box<dyn Error>> {
        Ok(self
            .requests()
            .last()
            .cloned()
            .ok_or("the stub received nothing")?)
    }

    /// Records the request; answers the refusal Stripe would send without the right
    /// key.
    fn receive(
        &self,
        method: Method,
        path: String,
        headers: &HeaderMap,
        form: Vec<(String, String)>,
    ) -> Option<Response> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let recorded = Recorded {
            method,
            path,
            authorization: header("authorization"),
            stripe_version: header("stripe-version"),
            idempotency_key: header("idempotency-key"),
            form,
        };
        let authorized = recorded.authorization.as_deref() == Some(&format!("Bearer {API_KEY}"));
        self.state().requests.push(recorded);
        if authorized {
            None
        } else {
            Some(stripe_error(
                StatusCode::UNAUTHORIZED,
                json!({ "type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****" }),
            ))
        }
    }
}

fn stripe_error(status: StatusCode, error: Value) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

async fn create_customer(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = stub.receive(Method::POST, "/v1/customers".into(), &headers, form) {
        return refused;
    }
    let mut state = stub.state();
    let key = stub_key(&state);
    if let Some((status, body)) = key.as_ref().and_then(|k| state.answered.get(k)) {
        return (*status, axum::Json(body.clone())).into_response();
    }
    let id = format!("cus_{}", state.customers.len() + 1);
    state.customers.insert(id.clone(), None);
    let body = json!({ "id": id, "object": "customer" });
    if let Some(key) = key {
        state.answered.insert(key, (StatusCode::OK, body.clone()));
    }
    axum::Json(body).into_response()
}

/// The idempotency key of the request just recorded.
fn stub_key(state: &StubState) -> Option<String> {
    state
        .requests
        .last()
        .and_then(|r| r.idempotency_key.clone())
}

async fn attach(
    State(stub): State<Stub>,
    Path(payment_method): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let path = format!("/v1/payment_methods/{payment_method}/attach");
    let customer = field(&form, "customer").map(str::to_owned);
    if let Some(refused) = stub.receive(Method::POST, path, &headers, form) {
        return refused;
    }
    let known = customer
        .as_ref()
        .is_some_and(|c| stub.state().customers.contains_key(c));
    if !known {
        return stripe_error(
            StatusCode::NOT_FOUND,
            json!({ "type": "invalid_request_error", "code": "resource_missing", "message": "No such customer", "param": "customer" }),
        );
    }
    axum::Json(json!({ "id": payment_method, "object": "payment_method", "customer": customer }))
        .into_response()
}

async fn update_customer(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let default = field(&form, "invoice_settings[default_payment_method]").map(str::to_owned);
    if let Some(refused) = stub.receive(Method::POST, format!("/v1/customers/{id}"), &headers, form)
    {
        return refused;
    }
    let mut state = stub.state();
    let Some(slot) = state.customers.get_mut(&id) else {
        return no_such_customer(&id);
    };
    if default.is_some() {
        *slot = default;
    }
    axum::Json(json!({ "id": id, "object": "customer" })).into_response()
}

fn no_such_customer(id: &str) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        json!({ "type": "invalid_request_error", "code": "resource_missing", "message": format!("No such customer: '{id}'"), "param": "id" }),
    )
}

async fn retrieve_customer(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = stub.receive(
        Method::GET,
        format!("/v1/customers/{id}"),
        &headers,
        Vec::new(),
    ) {
        return refused;
    }
    let state = stub.state();
    match state.customers.get(&id) {
        Some(default) => axum::Json(json!({
            "id": id,
            "object": "customer",
            "invoice_settings": { "default_payment_method": default },
        }))
        .into_response(),
        None => no_such_customer(&id),
    }
}

async fn create_payment_intent(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let payment_method = field(&form, "payment_method")
        .unwrap_or_default()
        .to_owned();
    if let Some(refused) = stub.receive(Method::POST, "/v1/payment_intents".into(), &headers, form)
    {
        return refused;
    }
    if payment_method == "pm_stub_slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut state = stub.state();
    let Some(key) = stub_key(&state) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            json!({ "type": "invalid_request_error", "message": "the stub wants an Idempotency-Key" }),
        );
    };
    if let Some((status, body)) = state.answered.get(&key) {
        return (*status, axum::Json(body.clone())).into_response();
    }
    if payment_method == "pm_stub_server_error" {
        // Stripe does not save a 500 under the key: a retry runs again.
        return stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "type": "api_error", "message": "An unknown error occurred" }),
        );
    }
    state.intents_created += 1;
    let id = format!("pi_{}", state.intents_created);
    let intent = |status: &str| json!({ "id": id, "object": "payment_intent", "status": status });
    let (status, body) = match payment_method.as_str() {
        "pm_card_visa" => (StatusCode::OK, intent("succeeded")),
        "pm_card_authenticationRequired" => (StatusCode::OK, intent("requires_action")),
        "pm_card_chargeDeclinedInsufficientFunds" => (
            StatusCode::PAYMENT_REQUIRED,
            json!({ "error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "payment_intent": intent("requires_payment_method"),
            }}),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            json!({ "error": { "type": "invalid_request_error", "message": "No such PaymentMethod", "param": "payment_method" }}),
        ),
    };
    state.answered.insert(key, (status, body.clone()));
    (status, axum::Json(body)).into_response()
}

async fn create_refund(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = stub.receive(Method::POST, "/v1/refunds".into(), &headers, form) {
        return refused;
    }
    axum::Json(json!({ "id": "re_1", "object": "refund", "status": "succeeded" })).into_response()
}

/// Starts the stub on 127.0.0.1 and returns it with its base URL.
async fn start_stub() -> Result<(Stub, String), Box<dyn Error>> {
    let stub = Stub::default();
    let app = Router::new()
        .route("/v1/customers", post(create_customer))
        .route(
            "/v1/customers/{id}",
            get(retrieve_customer).post(update_customer),
        )
        .route("/v1/payment_methods/{pm}/attach", post(attach))
        .route("/v1/payment_intents", post(create_payment_intent))
        .route("/v1/refunds", post(create_refund))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((stub, url))
}

/// A stub, a provider on it, and a customer of a new tenant with `payment_method`
/// as its default.
async fn stripe_customer(
    payment_method: Option<&str>,
) -> Result<(Stub, StripeProvider, TenantId, ProviderCustomerId), Box<dyn Error>> {
    let (stub, url) = start_stub().await?;
    let provider = StripeProvider::new(API_KEY, &url)?;
    let tenant = TenantId::new();
    let customer = provider
        .create_customer(tenant, &customer_request()?)
        .await?;
    if let Some(pm) = payment_method {
        provider.attach_payment_method(&customer, pm).await?;
    }
    Ok((stub, provider, tenant, customer))
}

#[track_caller]
fn assert_stripe_headers(request: &Recorded, idempotency_key: Option<&str>) {
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(
        request.stripe_version.as_deref(),
        Some(StripeProvider::API_VERSION)
    );
    assert_eq!(
        request.idempotency_key.as_deref(),
        idempotency_key,
        "{request:?}"
    );
}

// ---------------------------------------------------------------------------------
// StripeProvider

#[tokio::test]
async fn stripe_creates_customers_idempotently_and_sets_their_payment_method() -> TestResult {
    let (stub, url) = start_stub().await?;
    let provider: Arc<dyn PaymentProvider> = Arc::new(StripeProvider::new(API_KEY, &url)?);
    assert_eq!(provider.name(), "stripe");
    let tenant = TenantId::new();
    let customer = provider
        .create_customer(tenant, &customer_request()?)
        .await?;
    assert_eq!(customer.as_str(), "cus_1");
    let created = stub.last()?;
    assert_eq!(
        (&created.method, created.path.as_str()),
        (&Method::POST, "/v1/customers")
    );
    let key = format!("tenancy-customer-{tenant}");
    assert_stripe_headers(&created, Some(&key));
    assert_eq!(created.field("name"), Some("Acme Corp"));
    assert_eq!(created.field("email"), Some("billing@acme.test"));
    assert_eq!(
        created.field("metadata[tenant_id]"),
        Some(tenant.to_string().as_str())
    );

    // A retry (same tenant, same key) is the same customer; another tenant is not.
    assert_eq!(
        provider
            .create_customer(tenant, &customer_request()?)
            .await?,
        customer
    );
    let other = provider
        .create_customer(TenantId::new(), &customer_request()?)
        .await?;
    assert_eq!(other.as_str(), "cus_2");

    provider
        .attach_payment_method(&customer, "pm_card_visa")
        .await?;
    let requests = stub.requests();
    let [.., attach, update] = requests.as_slice() else {
        return Err("expected two requests for the attachment".into());
    };
    assert_eq!(attach.method, Method::POST);
    assert_eq!(attach.path, "/v1/payment_methods/pm_card_visa/attach");
    assert_stripe_headers(attach, None);
    assert_eq!(attach.field("customer"), Some("cus_1"));
    assert_eq!(update.path, "/v1/customers/cus_1");
    assert_stripe_headers(update, None);
    assert_eq!(
        update.field("invoice_settings[default_payment_method]"),
        Some("pm_card_visa")
    );

    // Unknown customers, ids unsafe in a path.
    let unknown = ProviderCustomerId::new("cus_404");
    assert_kind(
        provider
            .attach_payment_method(&unknown, "pm_card_visa")
            .await,
        ErrorKind::NotFound,
    );
    let count = stub.requests().len();
    let unsafe_id = ProviderCustomerId::new("cus_1/../../v1/refunds");
    assert_kind(
        provider
            .attach_payment_method(&unsafe_id, "pm_card_visa")
            .await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        provider.attach_payment_method(&customer, "pm?x=1").await,
        ErrorKind::InvalidInput,
    );
    assert_eq!(
        stub.requests().len(),
        count,
        "nothing is sent for bad input"
    );
    Ok(())
}

#[tokio::test]
async fn stripe_charges_the_default_payment_method() -> TestResult {
    let (stub, provider, tenant, customer) = stripe_customer(Some("pm_card_visa")).await?;
    let request = charge_request(tenant, &customer, "payment-attempt-1")?;
    let outcome = provider.charge(&request).await?;
    assert_eq!(
        outcome,
        ChargeOutcome::Succeeded {
            provider_payment_id: "pi_1".into()
        }
    );
    let requests = stub.requests();
    let [.., lookup, intent] = requests.as_slice() else {
        return Err("expected two requests for the charge".into());
    };
    assert_eq!(
        (&lookup.method, lookup.path.as_str()),
        (&Method::GET, "/v1/customers/cus_1")
    );
    assert_stripe_headers(lookup, None);
    assert_eq!(
        (&intent.method, intent.path.as_str()),
        (&Method::POST, "/v1/payment_intents")
    );
    assert_stripe_headers(intent, Some("payment-attempt-1"));
    let tenant_id = tenant.to_string();
    let invoice_id = request.invoice.to_string();
    for (name, value) in [
        ("amount", "1999"),
        ("currency", "usd"),
        ("customer", "cus_1"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
        ("off_session", "true"),
        ("description", "Invoice 2026-001"),
        ("metadata[tenant_id]", tenant_id.as_str()),
        ("metadata[invoice_id]", invoice_id.as_str()),
    ] {
        assert_eq!(intent.field(name), Some(value), "form field {name}");
    }

    // The same key again: the stub replays the same intent, and the outcome is the
    // same; nothing new was created.
    assert_eq!(provider.charge(&request).await?, outcome);
    let last = stub.last()?;
    assert_eq!(last.idempotency_key.as_deref(), Some("payment-attempt-1"));
    assert_eq!(stub.state().intents_created, 1);

    // A new attempt is a new intent.
    let next = charge_request(tenant, &customer, "payment-attempt-2")?;
    assert_eq!(
        provider.charge(&next).await?,
        ChargeOutcome::Succeeded {
            provider_payment_id: "pi_2".into()
        }
    );

    // Three-decimal and zero-decimal currencies go in their minor units.
    let kwd = ChargeRequest {
        amount: Money::new(12_340, Currency::parse("KWD")?),
        idempotency_key: "payment-attempt-3".into(),
        ..request.clone()
    };
    provider.charge(&kwd).await?;
    let sent = stub.last()?;
    assert_eq!(
        (sent.field("amount"), sent.field("currency")),
        (Some("12340"), Some("kwd"))
    );
    Ok(())
}

#[tokio::test]
async fn stripe_declines_are_outcomes() -> TestResult {
    let (stub, provider, tenant, customer) =
        stripe_customer(Some("pm_card_chargeDeclinedInsufficientFunds")).await?;
    let request = charge_request(tenant, &customer, "declined-1")?;
    let outcome = provider.charge(&request).await?;
    assert_eq!(
        outcome,
        ChargeOutcome::Failed {
            provider_payment_id: Some("pi_1".into()),
            reason: "Your card has insufficient funds.".into(),
            code: Some("insufficient_funds".into()),
        }
    );
    // Stripe replays the decline for the same key.
    assert_eq!(provider.charge(&request).await?, outcome);
    assert_eq!(stub.state().intents_created, 1);
    Ok(())
}

#[tokio::test]
async fn stripe_authentication_is_pending() -> TestResult {
    let (_stub, provider, tenant, customer) =
        stripe_customer(Some("pm_card_authenticationRequired")).await?;
    let outcome = provider
        .charge(&charge_request(tenant, &customer, "sca-1")?)
        .await?;
    assert_eq!(
        outcome,
        ChargeOutcome::Pending {
            provider_payment_id: "pi_1".into()
        }
    );
    Ok(())
}

#[tokio::test]
async fn stripe_without_a_default_payment_method_fails() -> TestResult {
    let (stub, provider, tenant, customer) = stripe_customer(None).await?;
    let outcome = provider
        .charge(&charge_request(tenant, &customer, "no-pm-1")?)
        .await?;
    let ChargeOutcome::Failed {
        provider_payment_id: None,
        code: Some(code),
        ..
    } = outcome
    else {
        return Err(format!("expected a failure without a payment, got {outcome:?}").into());
    };
    assert_eq!(code, tenancy_billing::stripe::NO_DEFAULT_PAYMENT_METHOD);
    assert_eq!(stub.last()?.method, Method::GET, "no intent was created");
    Ok(())
}

#[tokio::test]
async fn stripe_server_errors_and_timeouts_are_unavailable() -> TestResult {
    let (stub, provider, tenant, customer) = stripe_customer(Some("pm_stub_server_error")).await?;
    let request = charge_request(tenant, &customer, "boom-1")?;
    let err = provider
        .charge(&request)
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("An unknown error occurred"),
        "{err}"
    );
    assert_eq!(stub.state().intents_created, 0);

    let (_stub, provider, tenant, customer) = stripe_customer(Some("pm_stub_slow")).await?;
    let provider = provider.with_timeout(Duration::from_millis(300));
    let request = charge_request(tenant, &customer, "slow-1")?;
    assert_kind(provider.charge(&request).await, ErrorKind::Unavailable);

    // Nothing listens: connection refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let provider = StripeProvider::new(API_KEY, &url)?;
    assert_kind(provider.charge(&request).await, ErrorKind::Unavailable);
    Ok(())
}

#[tokio::test]
async fn stripe_refusals_map_to_error_kinds() -> TestResult {
    let (stub, provider, tenant, customer) = stripe_customer(Some("pm_card_visa")).await?;
    // A key Stripe refuses.
    let url = provider.base_url().to_owned();
    let wrong_key = StripeProvider::new("sk_test_wrong", &url)?;
    let err = wrong_key
        .create_customer(tenant, &customer_request()?)
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(
        err.to_string()
            .contains("`Invalid API Key provided: sk_test_****`"),
        "{err}"
    );
    // An unknown customer.
    let unknown = charge_request(tenant, &ProviderCustomerId::new("cus_404"), "unknown-1")?;
    assert_kind(provider.charge(&unknown).await, ErrorKind::NotFound);
    // A request Stripe finds malformed is our bug.
    provider
        .attach_payment_method(&customer, "pm_unknown")
        .await?;
    let err = provider
        .charge(&charge_request(tenant, &customer, "bad-1")?)
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("on `payment_method`"), "{err}");
    // Bad input is refused before anything is sent.
    let count = stub.requests().len();
    let zero = ChargeRequest {
        amount: usd(0)?,
        ..charge_request(tenant, &customer, "zero-1")?
    };
    assert_kind(provider.charge(&zero).await, ErrorKind::InvalidInput);
    let unsafe_customer = charge_request(tenant, &ProviderCustomerId::new("cus_1?expand=x"), "k")?;
    assert_kind(
        provider.charge(&unsafe_customer).await,
        ErrorKind::InvalidInput,
    );
    assert_eq!(stub.requests().len(), count);
    Ok(())
}

#[tokio::test]
async fn stripe_refunds() -> TestResult {
    let (stub, provider, tenant, _customer) = stripe_customer(None).await?;
    let request = RefundRequest {
        tenant,
        provider_payment_id: "pi_1".into(),
        amount: usd(500)?,
        idempotency_key: "refund-1".into(),
    };
    assert_eq!(
        provider.refund(&request).await?,
        RefundOutcome::Succeeded {
            provider_refund_id: "re_1".into()
        }
    );
    let sent = stub.last()?;
    assert_eq!(
        (&sent.method, sent.path.as_str()),
        (&Method::POST, "/v1/refunds")
    );
    assert_stripe_headers(&sent, Some("refund-1"));
    assert_eq!(sent.field("payment_intent"), Some("pi_1"));
    assert_eq!(sent.field("amount"), Some("500"));
    assert_eq!(
        sent.field("metadata[tenant_id]"),
        Some(tenant.to_string().as_str())
    );
    Ok(())
}

#[test]
fn stripe_configuration_is_checked() -> TestResult {
    let provider = StripeProvider::new(API_KEY, StripeProvider::DEFAULT_BASE_URL)?;
    assert_eq!(provider.base_url(), "https://api.stripe.com");
    assert!(!format!("{provider:?}").contains(API_KEY), "{provider:?}");
    let local = StripeProvider::new(API_KEY, "http://127.0.0.1:12111/")?;
    assert_eq!(local.base_url(), "http://127.0.0.1:12111");
    let proxied = StripeProvider::new(API_KEY, "https://proxy.example/stripe/")?;
    assert_eq!(proxied.base_url(), "https://proxy.example/stripe");
    StripeProvider::new(API_KEY, "http://localhost:12111")?;
    StripeProvider::new(API_KEY, "http://[::1]:12111")?;
    for bad in [
        "api.stripe.com",
        "http://api.stripe.com",
        "ftp://127.0.0.1",
        "https://api.stripe.com/?x=1",
        "https://api.stripe.com/#x",
    ] {
        let err = StripeProvider::new(API_KEY, bad).err().ok_or(bad)?;
        assert_eq!(err.field(), Some("base_url"), "{bad}: {err}");
    }
    for bad in ["", "sk test", "sk_test_\n"] {
        let err = StripeProvider::new(bad, StripeProvider::DEFAULT_BASE_URL)
            .err()
            .ok_or("expected an error")?;
        assert_eq!(err.field(), Some("api_key"), "{err}");
    }
    Ok(())
}
