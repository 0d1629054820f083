//! The billing service's router, in memory (`tower::ServiceExt::oneshot`): the whole
//! API end to end, bad input as JSON errors that change nothing, `Idempotency-Key`
//! under concurrency, and the OpenAPI document against the router; on memory, SQLite
//! and PostgreSQL (as the non-owner application role).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tenancy_billing::webhooks::{MemoryWebhookStore, WebhookConfig, WebhookStore};
use tenancy_billing::{
    Billing, BillingConfig, BillingStore, MemoryBillingStore, MeteringUsage, Webhooks,
};
use tenancy_core::TenantId;
use tenancy_core::identity::{Identity, NewTenant};
use tenancy_core::memory::MemoryStore;
use tenancy_metering::memory::MemoryMeteringStore;
use tenancy_metering::{Metering, MeteringStore, TenantDirectory};
use tenancy_servers::AdminAuth;
use tenancy_servers::billing::{BillingState, MAX_BODY_BYTES, openapi, router};
use tower::ServiceExt as _;

use super::support::ADMIN_TOKEN;
use super::usage::Answer;

/// The Stripe webhook signing secret of the routers under test.
const STRIPE_SECRET: &str = "whsec_test_secret";

/// The billing router over one set of stores, called in memory.
pub struct BillingApi {
    router: axum::Router,
    identity: Identity,
}

impl BillingApi {
    /// The router over `identity` (the tenant directory), a billing store and a
    /// metering store (usage priced from it), with `config`.
    fn with_config(
        identity: Identity,
        billing: Arc<dyn BillingStore>,
        metering: Arc<dyn MeteringStore>,
        config: BillingConfig,
    ) -> Self {
        Self::with_webhooks(
            identity,
            billing,
            metering,
            Arc::new(MemoryWebhookStore::new()),
            config,
        )
    }

    /// [`BillingApi::with_config`] with the webhook endpoints in `webhooks`.
    fn with_webhooks(
        identity: Identity,
        billing: Arc<dyn BillingStore>,
        metering: Arc<dyn MeteringStore>,
        webhooks: Arc<dyn WebhookStore>,
        config: BillingConfig,
    ) -> Self {
        let metering = Metering::new(metering)
            .with_tenants(Arc::new(identity.clone()) as Arc<dyn TenantDirectory>);
        let usage = Arc::new(MeteringUsage::new(Arc::new(metering)));
        let state = BillingState {
            billing: Arc::new(Billing::new(billing, usage).with_config(config)),
            admin: AdminAuth::new(ADMIN_TOKEN).unwrap(),
            tenants: Arc::new(identity.clone()),
            stripe_webhook_secret: Some(Arc::from(STRIPE_SECRET)),
            webhooks: Arc::new(Webhooks::new(webhooks).with_config(WebhookConfig {
                allow_private_destinations: true,
                ..WebhookConfig::default()
            })),
        };
        Self {
            router: router(state),
            identity,
        }
    }

    fn new(
        identity: Identity,
        billing: Arc<dyn BillingStore>,
        metering: Arc<dyn MeteringStore>,
    ) -> Self {
        Self::with_config(identity, billing, metering, BillingConfig::default())
    }

    fn memory() -> Self {
        Self::new(
            Identity::new(Arc::new(MemoryStore::new())),
            Arc::new(MemoryBillingStore::new()),
            Arc::new(MemoryMeteringStore::new()),
        )
    }

    /// A tenant the identity store knows.
    async fn tenant(&self) -> TenantId {
        self.identity
            .create_tenant(NewTenant {
                slug: format!("t-{}", uuid::Uuid::now_v7().simple()),
                display_name: "billing tenant".into(),
                metadata: Value::Null,
            })
            .await
            .unwrap()
            .id
    }

    /// Sends `request` to the router and reads the answer whole.
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            text,
            headers,
        }
    }

    /// `method path` with the admin token, for `tenant`, with an optional
    /// `Idempotency-Key` and raw body.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        tenant: Option<TenantId>,
        key: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(tenant) = tenant {
            request = request.header("x-tenant-id", tenant.to_string());
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: Option<TenantId>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        self.raw(method, path, tenant, key, body).await
    }

    /// A catalog call (no tenant) that must answer `expected`.
    async fn catalog(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Value {
        let answer = self.call(method.clone(), path, None, None, body).await;
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.text);
        answer.body
    }

    /// A tenant call that must answer `expected`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        tenant: TenantId,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Value {
        let answer = self
            .call(method.clone(), path, Some(tenant), None, body)
            .await;
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.text);
        answer.body
    }

    async fn get(&self, path: &str, tenant: TenantId) -> Value {
        self.expect(Method::GET, path, tenant, None, StatusCode::OK)
            .await
    }

    async fn post(&self, path: &str, tenant: TenantId, body: &Value) -> Value {
        self.expect(Method::POST, path, tenant, Some(body), StatusCode::OK)
            .await
    }

    /// A tenant call that must fail with `status` and `code`; returns the error.
    async fn refused(
        &self,
        method: Method,
        path: &str,
        tenant: Option<TenantId>,
        body: Option<&Value>,
        (status, code): (StatusCode, &str),
    ) -> Value {
        let answer = self.call(method.clone(), path, tenant, None, body).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.text);
        assert_eq!(answer.code(), code, "{method} {path}: {}", answer.text);
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            answer.text
        );
        answer.body["error"].clone()
    }

    /// A product and a monthly USD plan of it: a flat fee of `fee` and `0.01` per
    /// `calls` event. Returns (product id, plan id).
    async fn product_and_plan(&self, name: &str, fee: &str) -> (String, String) {
        let product = self
            .catalog(
                Method::POST,
                "/v1/products",
                Some(&json!({"name": name, "description": "the API"})),
                StatusCode::CREATED,
            )
            .await;
        let product_id = product["id"].as_str().unwrap().to_owned();
        let plan = self
            .catalog(
                Method::POST,
                "/v1/plans",
                Some(&plan_body(&product_id, name, fee)),
                StatusCode::CREATED,
            )
            .await;
        assert_eq!(plan["version"], 1);
        assert_eq!(plan["active"], true);
        assert_eq!(plan["prices"].as_array().unwrap().len(), 2);
        (product_id, plan["id"].as_str().unwrap().to_owned())
    }

    /// `tenant`'s billing profile, in USD with `tax_rate` percent and `prefix`.
    async fn customer(&self, tenant: TenantId, tax_rate: &str, prefix: &str) -> Value {
        self.expect(
            Method::PUT,
            "/v1/customer",
            tenant,
            Some(&json!({
                "name": "Acme Inc.", "email": "billing@acme.example", "currency": "USD",
                "tax_rate": tax_rate, "invoice_prefix": prefix,
                "address": {"line1": "1 Main St", "city": "Springfield", "country": "US"},
            })),
            StatusCode::OK,
        )
        .await
    }
}

/// A monthly USD plan of `product`: a flat fee and a metered price on `calls`.
fn plan_body(product: &str, name: &str, fee: &str) -> Value {
    json!({
        "product_id": product, "name": name, "currency": "USD", "interval": "month",
        "prices": [
            {"description": format!("{name} seat"), "type": "fee", "pricing": {"model": "per_unit", "unit_amount": fee}},
            {"description": "API calls", "type": "metered", "meter": "calls",
             "pricing": {"model": "per_unit", "unit_amount": "0.01"}, "included_units": "100"},
        ],
    })
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

/// The whole API, in the order a customer lives it.
async fn end_to_end(api: &BillingApi) {
    let tenant = api.tenant().await;

    // The catalog: two plans of one product each, listed and read.
    let (product, pro) = api.product_and_plan("Pro", "49").await;
    let (_, team) = api.product_and_plan("Team", "99").await;
    let read = api
        .catalog(
            Method::GET,
            &format!("/v1/products/{product}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(read["name"], "Pro");
    let products = api
        .catalog(Method::GET, "/v1/products", None, StatusCode::OK)
        .await;
    assert_eq!(products["products"].as_array().unwrap().len(), 2);
    let plans = api
        .catalog(Method::GET, "/v1/plans", None, StatusCode::OK)
        .await;
    assert_eq!(ids(&plans["plans"]), [pro.as_str(), team.as_str()]);
    let plan = api
        .catalog(
            Method::GET,
            &format!("/v1/plans/{pro}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(plan["prices"][1]["meter"], "calls");
    assert_eq!(plan["prices"][1]["pricing"]["unit_amount"], "0.01");

    // Archiving takes the version read; archived plans take no subscriber.
    let archived_plan = api.product_and_plan("Legacy", "5").await.1;
    let archived = api
        .catalog(
            Method::PATCH,
            &format!("/v1/plans/{archived_plan}?expected_version=1"),
            Some(&json!({"active": false})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (archived["active"].clone(), archived["version"].clone()),
        (json!(false), json!(2))
    );

    // The tenant's billing profile.
    let customer = api.customer(tenant, "10", "ACME").await;
    assert_eq!(customer["tenant_id"], tenant.to_string());
    assert_eq!(customer["currency"], "USD");
    assert_eq!(api.get("/v1/customer", tenant).await, customer);

    // Subscribing invoices the first period's fee: finalized, numbered, taxed.
    let created = api
        .expect(
            Method::POST,
            "/v1/subscriptions",
            tenant,
            Some(&json!({"plan_id": pro, "quantity": 2})),
            StatusCode::CREATED,
        )
        .await;
    let subscription = created["subscription"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["subscription"]["status"], "active");
    let first = &created["invoice"];
    assert_eq!(first["status"], "open");
    assert_eq!(first["number"], "ACME-0001");
    assert_eq!(first["billing_reason"], "subscription_create");
    assert_eq!(
        (
            first["subtotal"].clone(),
            first["tax"].clone(),
            first["total"].clone()
        ),
        (json!(9_800), json!(980), json!(10_780))
    );
    assert_eq!(created["subscription"]["latest_invoice_id"], first["id"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let path = |tail: &str| format!("/v1/subscriptions/{subscription}{tail}");
    assert_eq!(api.get(&path(""), tenant).await, created["subscription"]);
    let listed = api.get("/v1/subscriptions", tenant).await;
    assert_eq!(ids(&listed["subscriptions"]), [subscription.as_str()]);

    // The preview prices the upgrade without changing anything.
    let preview = api
        .post(&path("/preview"), tenant, &json!({"plan_id": team}))
        .await;
    let lines = preview["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{preview}");
    assert_eq!(lines[0]["kind"], "proration_credit");
    assert!(lines[0]["amount"].as_i64().unwrap() < 0);
    assert_eq!(lines[1]["kind"], "proration_charge");
    assert!(lines[1]["amount"].as_i64().unwrap() > 0);
    assert_eq!(api.get(&path(""), tenant).await["plan_id"], pro.as_str());
    let invoices = api.get("/v1/invoices", tenant).await;
    assert_eq!(ids(&invoices["invoices"]), [first_id.as_str()]);

    // The upgrade itself: prorated on an invoice of its own, numbered next.
    let changed = api
        .post(&path("/change"), tenant, &json!({"plan_id": team}))
        .await;
    assert_eq!(changed["subscription"]["plan_id"], team.as_str());
    let second = &changed["invoice"];
    assert_eq!(second["billing_reason"], "subscription_update");
    assert_eq!(second["number"], "ACME-0002");
    let kinds: Vec<&str> = second["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["proration_credit", "proration_charge"]);
    let second_id = second["id"].as_str().unwrap().to_owned();

    // Cancel at period end, reactivate, pause, resume.
    let canceling = api
        .post(&path("/cancel"), tenant, &json!({"at_period_end": true}))
        .await;
    assert_eq!(canceling["subscription"]["cancel_at_period_end"], true);
    assert_eq!(canceling["subscription"]["status"], "active");
    assert!(canceling.get("invoice").is_none());
    let reactivated = api.post(&path("/reactivate"), tenant, &json!({})).await;
    assert_eq!(reactivated["cancel_at_period_end"], false);
    let paused = api
        .expect(Method::POST, &path("/pause"), tenant, None, StatusCode::OK)
        .await;
    assert_eq!(paused["status"], "paused");
    api.refused(
        Method::POST,
        &path("/pause"),
        Some(tenant),
        None,
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    let resumed = api.post(&path("/resume"), tenant, &json!({})).await;
    assert_eq!(resumed["status"], "active");
    assert_eq!(resumed["version"], 6);

    // Invoices: listed with filters, read, voided, paid, credited.
    let all = api.get("/v1/invoices", tenant).await;
    assert_eq!(
        ids(&all["invoices"]),
        [first_id.as_str(), second_id.as_str()]
    );
    let one = api
        .get(
            &format!("/v1/invoices?subscription={subscription}&limit=1&status=open"),
            tenant,
        )
        .await;
    assert_eq!(ids(&one["invoices"]), [first_id.as_str()]);
    assert_eq!(
        api.get("/v1/invoices?status=paid", tenant).await["invoices"],
        json!([])
    );
    let invoice = |id: &str, tail: &str| format!("/v1/invoices/{id}{tail}");
    assert_eq!(api.get(&invoice(&first_id, ""), tenant).await, *first);
    let voided = api
        .post(&invoice(&second_id, "/void"), tenant, &json!({}))
        .await;
    assert_eq!(voided["status"], "void");
    api.refused(
        Method::POST,
        &invoice(&second_id, "/void"),
        Some(tenant),
        None,
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    // Open invoices are final already.
    api.refused(
        Method::POST,
        &invoice(&first_id, "/finalize"),
        Some(tenant),
        None,
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    let paid = api
        .post(
            &invoice(&first_id, "/pay"),
            tenant,
            &json!({"provider_payment_id": "wire-42"}),
        )
        .await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_paid"], 10_780);
    assert_eq!(paid["provider_payment_id"], "wire-42");
    // Paying again changes nothing.
    let again = api
        .expect(
            Method::POST,
            &invoice(&first_id, "/pay"),
            tenant,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(again, paid);

    // A credit note on the paid invoice credits the balance.
    let note = api
        .expect(
            Method::POST,
            &invoice(&first_id, "/credit_notes"),
            tenant,
            Some(
                &json!({"reason": "goodwill", "lines": [{"description": "outage", "amount": 500}]}),
            ),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(note["number"], "ACME-0001-CN1");
    assert_eq!(note["outcome"], "customer_balance");
    assert_eq!(note["total"], 500);
    let notes = api.get(&invoice(&first_id, "/credit_notes"), tenant).await;
    assert_eq!(notes["credit_notes"], json!([note]));
    assert_eq!(api.get("/v1/customer", tenant).await["balance"], 500);
    // More than is left to credit, or a voided invoice: refused.
    api.refused(
        Method::POST,
        &invoice(&first_id, "/credit_notes"),
        Some(tenant),
        Some(&json!({"reason": "too much", "lines": [{"description": "all", "amount": 10_281}]})),
        (StatusCode::BAD_REQUEST, "invalid_input"),
    )
    .await;
    api.refused(
        Method::POST,
        &invoice(&second_id, "/credit_notes"),
        Some(tenant),
        Some(&json!({"reason": "void", "lines": [{"description": "x", "amount": 1}]})),
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;

    // Canceling now with proration credits the unused time; it cannot come back.
    let canceled = api
        .post(&path("/cancel"), tenant, &json!({"prorate": true}))
        .await;
    assert_eq!(canceled["subscription"]["status"], "canceled");
    assert_eq!(canceled["invoice"]["billing_reason"], "subscription_update");
    assert!(canceled["invoice"]["subtotal"].as_i64().unwrap() < 0);
    api.refused(
        Method::POST,
        &path("/reactivate"),
        Some(tenant),
        None,
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    api.refused(
        Method::POST,
        &path("/change"),
        Some(tenant),
        Some(&json!({"quantity": 3})),
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;

    // Another tenant sees none of it.
    let another = api.tenant().await;
    api.customer(another, "0", "BETA").await;
    assert_eq!(
        api.get("/v1/invoices", another).await["invoices"],
        json!([])
    );
    assert_eq!(
        api.get("/v1/subscriptions", another).await["subscriptions"],
        json!([])
    );
    api.refused(
        Method::GET,
        &invoice(&first_id, ""),
        Some(another),
        None,
        (StatusCode::NOT_FOUND, "not_found"),
    )
    .await;
    api.refused(
        Method::GET,
        &path(""),
        Some(another),
        None,
        (StatusCode::NOT_FOUND, "not_found"),
    )
    .await;
}

/// Drafts: with auto-finalization off, invoices are numbered when finalized.
async fn drafts(api: &BillingApi) {
    let tenant = api.tenant().await;
    let (_, plan) = api.product_and_plan("Drafted", "20").await;
    api.customer(tenant, "0", "DRAFT").await;
    let created = api
        .expect(
            Method::POST,
            "/v1/subscriptions",
            tenant,
            Some(&json!({"plan_id": plan})),
            StatusCode::CREATED,
        )
        .await;
    let draft = &created["invoice"];
    assert_eq!(draft["status"], "draft");
    assert!(draft.get("number").is_none(), "{draft}");
    let id = draft["id"].as_str().unwrap();
    let drafts = api.get("/v1/invoices?status=draft", tenant).await;
    assert_eq!(ids(&drafts["invoices"]), [id]);
    // A draft is not paid, nor credited.
    api.refused(
        Method::POST,
        &format!("/v1/invoices/{id}/pay"),
        Some(tenant),
        None,
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    let finalized = api
        .post(&format!("/v1/invoices/{id}/finalize"), tenant, &json!({}))
        .await;
    assert_eq!(finalized["status"], "open");
    assert_eq!(finalized["number"], "DRAFT-0001");
    assert_eq!(finalized["amount_due"], 2_000);
    // An open invoice credited in full is paid.
    let note = api
        .expect(
            Method::POST,
            &format!("/v1/invoices/{id}/credit_notes"),
            tenant,
            Some(&json!({"reason": "trial", "lines": [{"description": "free month", "amount": 2_000}]})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(note["outcome"], "reduced_amount_due");
    let invoice = api.get(&format!("/v1/invoices/{id}"), tenant).await;
    assert_eq!(
        (invoice["status"].clone(), invoice["amount_due"].clone()),
        (json!("paid"), json!(0))
    );
}

fn no_auto_finalize() -> BillingConfig {
    BillingConfig {
        auto_finalize: false,
        ..BillingConfig::default()
    }
}

#[tokio::test]
async fn billing_api_end_to_end_on_memory() {
    let identity = Identity::new(Arc::new(MemoryStore::new()));
    let billing: Arc<dyn BillingStore> = Arc::new(MemoryBillingStore::new());
    let metering: Arc<dyn MeteringStore> = Arc::new(MemoryMeteringStore::new());
    end_to_end(&BillingApi::new(
        identity.clone(),
        billing.clone(),
        metering.clone(),
    ))
    .await;
    drafts(&BillingApi::with_config(
        identity,
        billing,
        metering,
        no_auto_finalize(),
    ))
    .await;
}

#[tokio::test]
async fn billing_api_end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("billing.db").display());
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let identity = Identity::new(stores.identity.clone());
    end_to_end(&BillingApi::new(
        identity.clone(),
        stores.billing.clone(),
        stores.metering.clone(),
    ))
    .await;
    drafts(&BillingApi::with_config(
        identity,
        stores.billing,
        stores.metering,
        no_auto_finalize(),
    ))
    .await;
}

/// A PostgreSQL database migrated by its owner, and the stores of the application
/// role; `None` when PostgreSQL is not configured.
async fn postgres() -> Option<(
    tenancy_core::conformance::PgTestDatabase,
    Arc<tenancy_core::postgres::PgStore>,
)> {
    let db = tenancy_core::conformance::PgTestDatabase::create().await?;
    let store = db
        .app_store(async |s| {
            tenancy_metering::sql::migrate_postgres(s).await?;
            tenancy_billing::sql::migrate_postgres(s).await
        })
        .await;
    Some((db, Arc::new(store)))
}

#[tokio::test]
async fn billing_api_end_to_end_on_postgres_as_app_role() {
    let Some((db, store)) = postgres().await else {
        return;
    };
    let identity = Identity::new(store.clone());
    end_to_end(&BillingApi::new(
        identity.clone(),
        store.clone(),
        store.clone(),
    ))
    .await;
    drafts(&BillingApi::with_config(
        identity,
        store.clone(),
        store,
        no_auto_finalize(),
    ))
    .await;
    db.drop_database().await;
}

#[tokio::test]
async fn billing_bad_input_is_a_json_error_and_changes_nothing() {
    let api = BillingApi::memory();
    let tenant = api.tenant().await;
    let (product, plan) = api.product_and_plan("Pro", "49").await;
    let bad = (StatusCode::BAD_REQUEST, "invalid_input");

    // No token, a wrong one: 401 with a challenge, on the catalog and on tenant data.
    for token in [None, Some("Bearer wrong-token"), Some("Basic eDp5")] {
        for (method, path) in [(Method::GET, "/v1/products"), (Method::GET, "/v1/customer")] {
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("x-tenant-id", tenant.to_string());
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, token);
            }
            let answer = api.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
            assert_eq!(answer.code(), "unauthenticated");
            assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }

    // The tenant: missing, malformed, unknown to the identity service.
    let error = api
        .refused(Method::GET, "/v1/customer", None, None, bad)
        .await;
    assert_eq!(error["field"], "x-tenant-id");
    let answer = api
        .send(
            Request::get("/v1/customer")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .header("x-tenant-id", "acme")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "x-tenant-id");
    let stranger = TenantId::new();
    let customer = json!({"name": "Acme", "email": "a@acme.example", "currency": "USD"});
    let error = api
        .refused(
            Method::PUT,
            "/v1/customer",
            Some(stranger),
            Some(&customer),
            bad,
        )
        .await;
    assert_eq!(error["field"], "x-tenant-id");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("`{stranger}`"))
    );

    // Malformed JSON, the wrong shape, unknown members.
    let answer = api
        .raw(
            Method::POST,
            "/v1/products",
            None,
            None,
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    assert_eq!(answer.body["error"]["field"], "body");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("product")
    );
    let answer = api
        .raw(
            Method::PUT,
            "/v1/customer",
            Some(tenant),
            None,
            b"[1, 2]".to_vec(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    let error = api
        .refused(
            Method::POST,
            "/v1/products",
            None,
            Some(&json!({"name": ""})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "name");
    let error = api
        .refused(
            Method::POST,
            "/v1/products",
            None,
            Some(&json!({"name": "x", "colour": "red"})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "colour");

    // Plans: a bad currency, negative amounts, no prices, an unknown product.
    let mut bad_currency = plan_body(&product, "Bad", "1");
    bad_currency["currency"] = json!("DOLLARS");
    api.refused(Method::POST, "/v1/plans", None, Some(&bad_currency), bad)
        .await;
    let error = api
        .refused(
            Method::POST,
            "/v1/plans",
            None,
            Some(&plan_body(&product, "Negative", "-5")),
            bad,
        )
        .await;
    assert_eq!(error["field"], "prices");
    let mut negative_unit = plan_body(&product, "Negative unit", "5");
    negative_unit["prices"][1]["pricing"]["unit_amount"] = json!("-0.01");
    api.refused(Method::POST, "/v1/plans", None, Some(&negative_unit), bad)
        .await;
    let mut no_prices = plan_body(&product, "Empty", "5");
    no_prices["prices"] = json!([]);
    api.refused(Method::POST, "/v1/plans", None, Some(&no_prices), bad)
        .await;
    let error = api
        .refused(
            Method::POST,
            "/v1/plans",
            None,
            Some(&plan_body(&uuid::Uuid::now_v7().to_string(), "Orphan", "5")),
            bad,
        )
        .await;
    assert_eq!(error["field"], "product_id");
    // Archiving needs the version read.
    let error = api
        .refused(
            Method::PATCH,
            &format!("/v1/plans/{plan}"),
            None,
            Some(&json!({"active": false})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "expected_version");
    api.refused(
        Method::PATCH,
        &format!("/v1/plans/{plan}?expected_version=7"),
        None,
        Some(&json!({"active": false})),
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;

    // Customers: a bad currency, a negative tax rate, a bad email.
    for (member, value) in [
        ("currency", json!("usd!")),
        ("tax_rate", json!("-1")),
        ("email", json!("nobody")),
    ] {
        let mut body = customer.clone();
        body[member] = value;
        api.refused(Method::PUT, "/v1/customer", Some(tenant), Some(&body), bad)
            .await;
    }

    // Subscriptions: no billing profile yet, then an unknown plan, a zero quantity.
    let error = api
        .refused(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some(&json!({"plan_id": plan})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "tenant");
    api.customer(tenant, "0", "BAD").await;
    let unknown_plan = json!({"plan_id": uuid::Uuid::now_v7().to_string()});
    let error = api
        .refused(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some(&unknown_plan),
            bad,
        )
        .await;
    assert_eq!(error["field"], "plan_id");
    let error = api
        .refused(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some(&json!({"plan_id": plan, "quantity": 0})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "quantity");
    api.refused(
        Method::POST,
        "/v1/subscriptions",
        Some(tenant),
        Some(&json!({"plan_id": plan, "quantity": -1})),
        bad,
    )
    .await;
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let error = api
        .refused(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some(&json!({"plan_id": plan, "backdate_start_date": future})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "backdate_start_date");

    // Ids: malformed is 400 naming `id`, unknown is 404.
    let unknown = uuid::Uuid::now_v7();
    for path in ["/v1/products/x", "/v1/plans/x"] {
        let error = api.refused(Method::GET, path, None, None, bad).await;
        assert_eq!(error["field"], "id");
    }
    for path in [
        "/v1/subscriptions/x",
        "/v1/invoices/x",
        "/v1/invoices/x/credit_notes",
    ] {
        let error = api
            .refused(Method::GET, path, Some(tenant), None, bad)
            .await;
        assert_eq!(error["field"], "id");
    }
    let not_found = (StatusCode::NOT_FOUND, "not_found");
    for path in [
        format!("/v1/products/{unknown}"),
        format!("/v1/plans/{unknown}"),
    ] {
        api.refused(Method::GET, &path, None, None, not_found).await;
    }
    for path in [
        format!("/v1/subscriptions/{unknown}"),
        format!("/v1/invoices/{unknown}"),
        format!("/v1/invoices/{unknown}/credit_notes"),
    ] {
        api.refused(Method::GET, &path, Some(tenant), None, not_found)
            .await;
    }
    for tail in ["pause", "resume", "reactivate", "cancel"] {
        api.refused(
            Method::POST,
            &format!("/v1/subscriptions/{unknown}/{tail}"),
            Some(tenant),
            None,
            not_found,
        )
        .await;
    }
    for tail in ["finalize", "void", "pay"] {
        api.refused(
            Method::POST,
            &format!("/v1/invoices/{unknown}/{tail}"),
            Some(tenant),
            None,
            not_found,
        )
        .await;
    }
    api.refused(
        Method::POST,
        &format!("/v1/subscriptions/{unknown}/preview"),
        Some(tenant),
        Some(&json!({})),
        not_found,
    )
    .await;

    // Queries and bodies of calls without parameters.
    for query in [
        "status=late",
        "limit=0",
        "limit=many",
        "subscription=x",
        "colour=red",
    ] {
        api.refused(
            Method::GET,
            &format!("/v1/invoices?{query}"),
            Some(tenant),
            None,
            bad,
        )
        .await;
    }
    let error = api
        .refused(
            Method::POST,
            &format!("/v1/invoices/{unknown}/void"),
            Some(tenant),
            Some(&json!({"force": true})),
            bad,
        )
        .await;
    assert_eq!(error["field"], "force");

    // An invalid idempotency key, a body too large, an unknown route.
    for key in ["has space", &"k".repeat(256), "tab\tkey"] {
        let answer = api
            .raw(
                Method::PUT,
                "/v1/customer",
                Some(tenant),
                Some(key),
                serde_json::to_vec(&customer).unwrap(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{key}: {}",
            answer.text
        );
        assert_eq!(answer.body["error"]["field"], "Idempotency-Key");
    }
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let answer = api
        .raw(Method::POST, "/v1/products", None, None, huge)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    api.refused(Method::GET, "/v1/nothing", Some(tenant), None, not_found)
        .await;

    // Nothing of it was stored: one product, one plan (still version 1), no
    // subscription, no invoice, the profile as first set.
    let products = api
        .catalog(Method::GET, "/v1/products", None, StatusCode::OK)
        .await;
    assert_eq!(ids(&products["products"]), [product.as_str()]);
    let plans = api
        .catalog(Method::GET, "/v1/plans", None, StatusCode::OK)
        .await;
    assert_eq!(ids(&plans["plans"]), [plan.as_str()]);
    assert_eq!(plans["plans"][0]["version"], 1);
    assert_eq!(
        api.get("/v1/subscriptions", tenant).await["subscriptions"],
        json!([])
    );
    assert_eq!(api.get("/v1/invoices", tenant).await["invoices"], json!([]));
    let profile = api.get("/v1/customer", tenant).await;
    assert_eq!(
        (profile["version"].clone(), profile["currency"].clone()),
        (json!(1), json!("USD"))
    );
    api.refused(
        Method::GET,
        "/v1/customer",
        Some(api.tenant().await),
        None,
        not_found,
    )
    .await;
}

/// 20 concurrent `POST /v1/subscriptions` with one key: one subscription, one
/// invoice, 20 identical answers; the key with another body is a conflict; keys are
/// per tenant.
async fn idempotency(api: &BillingApi) {
    let (tenant, other) = (api.tenant().await, api.tenant().await);
    let (_, plan) = api.product_and_plan("Pro", "49").await;
    api.customer(tenant, "0", "IDEM").await;
    api.customer(other, "0", "OTHER").await;
    let body = serde_json::to_vec(&json!({"plan_id": plan, "quantity": 3})).unwrap();
    let api = Arc::new(BillingApi {
        router: api.router.clone(),
        identity: api.identity.clone(),
    });
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (api, body) = (api.clone(), body.clone());
        calls.spawn(async move {
            api.raw(
                Method::POST,
                "/v1/subscriptions",
                Some(tenant),
                Some("create-sub-1"),
                body,
            )
            .await
        });
    }
    let mut answers = Vec::new();
    let mut first_answers = 0;
    while let Some(answer) = calls.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        first_answers += usize::from(!answer.headers.contains_key("idempotent-replayed"));
        answers.push(answer.body);
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "answers differ");
    // At least the first request was answered fresh (racing ones may be too, unmarked).
    assert!(first_answers >= 1);
    let subscription = answers[0]["subscription"]["id"].as_str().unwrap();
    let listed = api.get("/v1/subscriptions", tenant).await;
    assert_eq!(ids(&listed["subscriptions"]), [subscription]);
    let invoices = api.get("/v1/invoices", tenant).await;
    assert_eq!(
        ids(&invoices["invoices"]),
        [answers[0]["invoice"]["id"].as_str().unwrap()]
    );
    assert_eq!(invoices["invoices"][0]["number"], "IDEM-0001");

    // Later, the same request replays; another body with the key is a conflict.
    let replay = api
        .raw(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some("create-sub-1"),
            body.clone(),
        )
        .await;
    assert_eq!(
        (replay.status, &replay.body),
        (StatusCode::CREATED, &answers[0])
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let changed = serde_json::to_vec(&json!({"plan_id": plan, "quantity": 4})).unwrap();
    let conflict = api
        .raw(
            Method::POST,
            "/v1/subscriptions",
            Some(tenant),
            Some("create-sub-1"),
            changed,
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.text);
    assert_eq!(conflict.code(), "conflict");
    assert!(
        conflict.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`create-sub-1`")
    );
    // The same key on another path is another request too.
    let path = format!("/v1/subscriptions/{subscription}/pause");
    let conflict = api
        .raw(
            Method::POST,
            &path,
            Some(tenant),
            Some("create-sub-1"),
            Vec::new(),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.text);
    assert_eq!(
        api.get("/v1/subscriptions", tenant).await["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get(&format!("/v1/subscriptions/{subscription}"), tenant)
            .await["status"],
        "active"
    );

    // Another tenant's key of the same name is its own.
    let theirs = api
        .raw(
            Method::POST,
            "/v1/subscriptions",
            Some(other),
            Some("create-sub-1"),
            body.clone(),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.text);
    assert_ne!(
        theirs.body["subscription"]["id"],
        answers[0]["subscription"]["id"]
    );
    assert_eq!(theirs.body["invoice"]["number"], "OTHER-0001");

    // Every mutation replays: pausing twice with one key answers the first result.
    let pause = |key: &'static str| {
        let (api, path) = (api.clone(), path.clone());
        async move {
            api.raw(Method::POST, &path, Some(tenant), Some(key), Vec::new())
                .await
        }
    };
    let first = pause("pause-1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = pause("pause-1").await;
    assert_eq!((second.status, &second.body), (StatusCode::OK, &first.body));
    let third = pause("pause-2").await;
    assert_eq!(
        third.status,
        StatusCode::CONFLICT,
        "paused already: {}",
        third.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_idempotency_keys_on_memory() {
    idempotency(&BillingApi::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_idempotency_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("billing.db").display());
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let api = BillingApi::new(
        Identity::new(stores.identity.clone()),
        stores.billing,
        stores.metering,
    );
    idempotency(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_idempotency_keys_on_postgres_as_app_role() {
    let Some((db, store)) = postgres().await else {
        return;
    };
    idempotency(&BillingApi::new(
        Identity::new(store.clone()),
        store.clone(),
        store,
    ))
    .await;
    db.drop_database().await;
}

#[tokio::test]
async fn billing_openapi_document_matches_the_router_and_renders_offline() {
    let api = BillingApi::memory();
    let document = api
        .catalog(Method::GET, "/api/openapi.json", None, StatusCode::OK)
        .await;
    assert_eq!(&document, openapi::document());
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Without the token every documented operation exists and refuses (401);
            // an undocumented route would answer the fallback's 404 or a 405.
            let answer = api
                .send(
                    Request::builder()
                        .method(method.clone())
                        .uri(&concrete)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                answer.text
            );
            // Every change of tenant data documents the idempotency key.
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let tenant_change = method != Method::GET
                && names.contains(&"X-Tenant-Id")
                && !path.ends_with("/preview")
                && !path.starts_with("/v1/webhook_endpoints");
            assert_eq!(
                names.contains(&"Idempotency-Key"),
                tenant_change,
                "{method} {path}"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 34);

    let docs = api
        .send(Request::get("/api/docs").body(Body::empty()).unwrap())
        .await;
    assert_eq!(docs.status, StatusCode::OK);
    let csp = docs.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !docs.text.contains("<script"),
        "the docs page needs no script"
    );
    assert!(
        !docs.text.contains("http://") && !docs.text.contains("https://"),
        "no external asset"
    );
    for path in paths.keys() {
        assert!(
            docs.text.contains(&format!("<code>{path}</code>")),
            "{path} missing"
        );
    }
    assert!(docs.text.contains("id=\"schema-Invoice\""));

    // Health needs no token.
    for path in ["/healthz", "/readyz"] {
        let answer = api
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
}

/// `POST /webhooks/stripe` with `body` signed by `secret` at `at` (Unix seconds);
/// `None` sends no signature.
async fn stripe_event(api: &BillingApi, body: &[u8], signature: Option<String>) -> Answer {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    api.send(request.body(Body::from(body.to_vec())).unwrap())
        .await
}

/// Stripe's events pay an invoice once (signature checked on the raw body, replays
/// answered `duplicate`, foreign events `ignored`), and the tenant's webhook
/// endpoints are managed over REST (the secret shown on create and roll only).
async fn webhooks_flow(api: &BillingApi) {
    let tenant = api.tenant().await;
    let (_, plan) = api.product_and_plan("Webhooks", "25").await;
    api.customer(tenant, "0", "HOOK").await;
    let created = api
        .expect(
            Method::POST,
            "/v1/subscriptions",
            tenant,
            Some(&json!({"plan_id": plan})),
            StatusCode::CREATED,
        )
        .await;
    let invoice = created["invoice"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["invoice"]["status"], "open");

    let event = |id: &str, kind: &str| {
        serde_json::to_vec(&json!({
            "id": id, "object": "event", "type": kind,
            "data": {"object": {"id": "pi_123", "object": "payment_intent",
                "metadata": {"tenant_id": tenant.to_string(), "invoice_id": invoice}}},
        }))
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let paid = event("evt_paid", "payment_intent.succeeded");
    let sign = |body: &[u8], at: i64, secret: &str| {
        Some(tenancy_billing::signature::sign(secret, at, body))
    };
    // Refused: no signature, the wrong secret, a tampered body, a stale timestamp.
    for (body, signature) in [
        (paid.clone(), None),
        (paid.clone(), sign(&paid, now, "whsec_wrong")),
        (
            event("evt_paid", "invoice.paid"),
            sign(&paid, now, STRIPE_SECRET),
        ),
        (paid.clone(), sign(&paid, now - 301, STRIPE_SECRET)),
    ] {
        let answer = stripe_event(api, &body, signature).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        assert_eq!(answer.code(), "unauthenticated");
    }
    let still_open = api.get(&format!("/v1/invoices/{invoice}"), tenant).await;
    assert_eq!(still_open["status"], "open");
    // A verified body that is not an event is bad input.
    let answer = stripe_event(api, b"[]", sign(b"[]", now, STRIPE_SECRET)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);

    let answer = stripe_event(api, &paid, sign(&paid, now, STRIPE_SECRET)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body, json!({"received": true, "outcome": "applied"}));
    let invoice_now = api.get(&format!("/v1/invoices/{invoice}"), tenant).await;
    assert_eq!(invoice_now["status"], "paid");
    assert_eq!(invoice_now["provider_payment_id"], "pi_123");
    let again = stripe_event(api, &paid, sign(&paid, now, STRIPE_SECRET)).await;
    assert_eq!(again.body["outcome"], "duplicate", "{}", again.text);
    let late = event("evt_late_failure", "payment_intent.payment_failed");
    let answer = stripe_event(api, &late, sign(&late, now, STRIPE_SECRET)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("/v1/invoices/{invoice}"), tenant).await["status"],
        "paid"
    );
    let other = event("evt_other", "customer.created");
    let answer = stripe_event(api, &other, sign(&other, now, STRIPE_SECRET)).await;
    assert_eq!(answer.body["outcome"], "ignored");

    // Webhook endpoints.
    let endpoint = api
        .expect(
            Method::POST,
            "/v1/webhook_endpoints",
            tenant,
            Some(&json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["tenancy.billing.invoice.paid"]})),
            StatusCode::CREATED,
        )
        .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
    let path = format!("/v1/webhook_endpoints/{id}");
    let read = api.get(&path, tenant).await;
    assert!(read["secret"].is_null(), "{read}");
    let listed = api.get("/v1/webhook_endpoints", tenant).await;
    assert_eq!(ids(&listed["webhook_endpoints"]), [id.as_str()]);
    let other_tenant = api.tenant().await;
    api.refused(
        Method::GET,
        &path,
        Some(other_tenant),
        None,
        (StatusCode::NOT_FOUND, "not_found"),
    )
    .await;
    api.refused(
        Method::POST,
        "/v1/webhook_endpoints",
        Some(tenant),
        Some(&json!({"url": "ftp://example.com/x"})),
        (StatusCode::BAD_REQUEST, "invalid_input"),
    )
    .await;
    let changed = api
        .expect(
            Method::PATCH,
            &path,
            tenant,
            Some(&json!({"version": 1, "enabled": false})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(changed["enabled"], false);
    api.refused(
        Method::PATCH,
        &path,
        Some(tenant),
        Some(&json!({"version": 1, "enabled": true})),
        (StatusCode::CONFLICT, "conflict"),
    )
    .await;
    let rolled = api
        .post(
            &format!("{path}/roll_secret"),
            tenant,
            &json!({"version": 2}),
        )
        .await;
    assert_ne!(rolled["secret"], endpoint["secret"]);
    let deliveries = api.get(&format!("{path}/deliveries"), tenant).await;
    assert_eq!(deliveries["deliveries"], json!([]));
    api.refused(
        Method::GET,
        &format!("/v1/webhook_deliveries/{}", uuid::Uuid::now_v7()),
        Some(tenant),
        None,
        (StatusCode::NOT_FOUND, "not_found"),
    )
    .await;
    api.expect(Method::DELETE, &path, tenant, None, StatusCode::NO_CONTENT)
        .await;
    api.refused(
        Method::GET,
        &path,
        Some(tenant),
        None,
        (StatusCode::NOT_FOUND, "not_found"),
    )
    .await;
}

#[tokio::test]
async fn billing_webhooks_on_memory() {
    webhooks_flow(&BillingApi::memory()).await;
}

#[tokio::test]
async fn billing_webhooks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("billing.db").display());
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let identity = Identity::new(stores.identity.clone());
    webhooks_flow(&BillingApi::with_webhooks(
        identity,
        stores.billing,
        stores.metering,
        stores.webhooks,
        BillingConfig::default(),
    ))
    .await;
}

#[tokio::test]
async fn billing_webhooks_on_postgres_as_app_role() {
    let Some((db, store)) = postgres().await else {
        return;
    };
    webhooks_flow(&BillingApi::with_webhooks(
        Identity::new(store.clone()),
        store.clone(),
        store.clone(),
        store,
        BillingConfig::default(),
    ))
    .await;
    db.drop_database().await;
}
