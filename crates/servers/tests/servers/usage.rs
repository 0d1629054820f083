//! The usage service over real HTTP: ingestion of CloudEvents (single, batch, partial
//! rejection, duplicates), meters, queries, totals and quotas, bad input as JSON
//! errors that change nothing, the OpenAPI document against the router, and the
//! duplicate storm on every backend.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tenancy_core::TenantId;
use tenancy_core::identity::{Identity, NewTenant};
use tenancy_core::memory::MemoryStore;
use tenancy_metering::memory::MemoryMeteringStore;
use tenancy_metering::{Metering, MeteringStore, TenantDirectory};
use tenancy_servers::AdminAuth;
use tenancy_servers::usage::{UsageState, openapi, run_usage};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::support::ADMIN_TOKEN;

/// A usage server on an ephemeral port; dropping it stops the server.
pub struct UsageServer {
    pub base: String,
    pub identity: Identity,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
}

impl Drop for UsageServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// An HTTP answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The machine-readable error code.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl UsageServer {
    /// A server over `identity` (the tenant directory) and `metering`.
    pub async fn start_with(identity: Identity, store: Arc<dyn MeteringStore>) -> Self {
        let metering = Metering::new(store)
            .with_tenants(Arc::new(identity.clone()) as Arc<dyn TenantDirectory>);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let state = UsageState {
            metering,
            admin: AdminAuth::new(ADMIN_TOKEN).unwrap(),
        };
        tokio::spawn(run_usage(listener, state, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Self {
            base,
            identity,
            http: reqwest::Client::new(),
            stop,
        }
    }

    /// A server on memory stores.
    pub async fn start() -> Self {
        Self::start_with(
            Identity::new(Arc::new(MemoryStore::new())),
            Arc::new(MemoryMeteringStore::new()),
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A tenant the identity store knows.
    pub async fn tenant(&self) -> TenantId {
        let slug = format!("t-{}", uuid::Uuid::now_v7().simple());
        self.identity
            .create_tenant(NewTenant {
                slug,
                display_name: "usage tenant".into(),
                metadata: Value::Null,
            })
            .await
            .unwrap()
            .id
    }

    /// Sends `method path` for `tenant` with the admin token and an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        tenant: Option<TenantId>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(tenant) = tenant {
            request = request.header("x-tenant-id", tenant.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, tenant: TenantId, body: &Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(tenant), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, tenant: TenantId) -> Answer {
        self.call(reqwest::Method::GET, path, Some(tenant), None)
            .await
    }

    /// Creates the meters of these tests: `calls` (count by route, hour and day) and
    /// `tokens` (sum of `data.tokens`, day).
    pub async fn meters(&self, tenant: TenantId) {
        for meter in [
            json!({"key": "calls", "event_type": "api.call", "aggregation": "count",
                   "group_by": ["route"], "windows": ["hour", "day"]}),
            json!({"key": "tokens", "event_type": "api.call", "aggregation": "sum",
                   "value_property": "tokens", "windows": ["day"]}),
        ] {
            let answer = self.post("/v1/meters", tenant, &meter).await;
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        }
    }

    /// The `calls` and `tokens` totals of `tenant` over the day holding `day`.
    pub async fn day_totals(&self, tenant: TenantId, day: DateTime<Utc>) -> (u64, String) {
        let from = day.duration_trunc(Duration::days(1)).unwrap();
        let path = format!(
            "/v1/totals?from={}&to={}",
            encode(&from.to_rfc3339()),
            encode(&(from + Duration::days(1)).to_rfc3339())
        );
        let answer = self.get(&path, tenant).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let meters = answer.body["meters"].as_array().unwrap();
        let calls = meters.iter().find(|m| m["meter"] == "calls").unwrap();
        let tokens = meters.iter().find(|m| m["meter"] == "tokens").unwrap();
        (
            calls["events"].as_u64().unwrap(),
            tokens["value"].as_str().unwrap().to_owned(),
        )
    }
}

async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        text,
        headers,
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A CloudEvent of `api.call` on `route` using `tokens`, at `time`.
pub fn call_event(id: uuid::Uuid, route: &str, tokens: u64, time: DateTime<Utc>) -> Value {
    json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "type": "api.call",
        "source": "/tests",
        "time": time.to_rfc3339(),
        "data": {"route": route, "tokens": tokens},
    })
}

#[tokio::test]
async fn events_meters_queries_and_quotas_over_http() {
    let server = UsageServer::start().await;
    let tenant = server.tenant().await;
    server.meters(tenant).await;
    let now = Utc::now();

    // One event, then a batch with a duplicate of it, a bad one and two new ones.
    let first = uuid::Uuid::now_v7();
    let answer = server
        .post("/v1/events", tenant, &call_event(first, "/a", 5, now))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["accepted"], json!([0]));
    let batch = json!([
        call_event(first, "/a", 5, now),
        call_event(uuid::Uuid::now_v7(), "/b", 7, now),
        {"id": uuid::Uuid::now_v7().to_string(), "type": "api.call", "data": {"tokens": "many"}},
        call_event(uuid::Uuid::now_v7(), "/a", 1, now),
    ]);
    let answer = server.post("/v1/events", tenant, &batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["accepted"], json!([1, 3]));
    assert_eq!(answer.body["duplicates"], json!([0]));
    assert_eq!(answer.body["rejected"][0]["index"], 2);
    assert_eq!(answer.body["rejected"][0]["field"], "data.tokens");
    assert_eq!(server.day_totals(tenant, now).await, (3, "13".to_owned()));

    // The meter, listed and read.
    let answer = server.get("/v1/meters", tenant).await;
    let keys: Vec<&str> = answer.body["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["calls", "tokens"]);
    let meter = server.get("/v1/meters/calls", tenant).await;
    assert_eq!(meter.body["version"], 1);

    // A query by hour grouped by route, and one filtered on it.
    let hour = now.duration_trunc(Duration::hours(1)).unwrap();
    let range = format!(
        "from={}&to={}&window=hour",
        encode(&hour.to_rfc3339()),
        encode(&(hour + Duration::hours(1)).to_rfc3339())
    );
    let answer = server
        .get(
            &format!("/v1/meters/calls/query?{range}&group_by=route"),
            tenant,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let rows = answer.body["rows"].as_array().unwrap();
    let by_route: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["group"]["route"].as_str().unwrap().to_owned(),
                r["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_route,
        [
            ("/a".to_owned(), "2".to_owned()),
            ("/b".to_owned(), "1".to_owned())
        ]
    );
    let answer = server
        .get(
            &format!("/v1/meters/calls/query?{range}&filter%5Broute%5D=%2Fb"),
            tenant,
        )
        .await;
    assert_eq!(answer.body["rows"][0]["value"], "1", "{}", answer.text);
    let answer = server
        .get(
            &format!("/v1/meters/calls/query?{range}&colour=red"),
            tenant,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "colour");

    // Quotas: set, check until the hard limit refuses, balance, delete.
    let answer = server
        .call(
            reqwest::Method::PUT,
            "/v1/meters/tokens/quota",
            Some(tenant),
            Some(&json!({"period": "day", "limit": "10", "mode": "hard"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let check = json!({"amount": "4"});
    for used in ["4", "8"] {
        let answer = server
            .post("/v1/meters/tokens/quota/check", tenant, &check)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["allowed"], true);
        assert_eq!(answer.body["used"], used);
    }
    let answer = server
        .post("/v1/meters/tokens/quota/check", tenant, &check)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text
    );
    assert_eq!(answer.code(), "quota_exceeded");
    assert_eq!(answer.body["error"]["decision"]["allowed"], false);
    let balance = server.get("/v1/meters/tokens/quota", tenant).await;
    assert_eq!(balance.body["used"], "8", "{}", balance.text);
    assert_eq!(balance.body["remaining"], "2");
    let answer = server
        .call(
            reqwest::Method::DELETE,
            "/v1/meters/tokens/quota",
            Some(tenant),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/v1/meters/tokens/quota", tenant).await.status,
        StatusCode::NOT_FOUND
    );

    // Updates and deletes carry the version read.
    let stale = server
        .call(
            reqwest::Method::PATCH,
            "/v1/meters/calls?expected_version=7",
            Some(tenant),
            Some(&json!({"description": "calls per route"})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.code(), "conflict");
    let changed = server
        .call(
            reqwest::Method::PATCH,
            "/v1/meters/calls?expected_version=1",
            Some(tenant),
            Some(&json!({"description": "calls per route"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["version"], 2);
    let deleted = server
        .call(
            reqwest::Method::DELETE,
            "/v1/meters/calls?expected_version=2",
            Some(tenant),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/v1/meters/calls", tenant).await.status,
        StatusCode::NOT_FOUND
    );

    // Another tenant sees none of it.
    let other = server.tenant().await;
    let answer = server.get("/v1/meters", other).await;
    assert_eq!(answer.body["meters"], json!([]));
    assert_eq!(
        server.get("/v1/meters/tokens", other).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_is_a_json_error_and_changes_nothing() {
    let server = UsageServer::start().await;
    let tenant = server.tenant().await;
    server.meters(tenant).await;
    let now = Utc::now();
    let event = call_event(uuid::Uuid::now_v7(), "/a", 1, now);

    // No token, a wrong one: 401 with a challenge.
    let response = reqwest::Client::new()
        .post(server.url("/v1/events"))
        .header("x-tenant-id", tenant.to_string())
        .json(&event)
        .send()
        .await
        .unwrap();
    let answer = read(response).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "unauthenticated");
    assert!(answer.headers.contains_key("www-authenticate"));

    // No tenant, a malformed one.
    let answer = server
        .call(reqwest::Method::POST, "/v1/events", None, Some(&event))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "x-tenant-id");
    let response = reqwest::Client::new()
        .get(server.url("/v1/meters"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-tenant-id", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.status, StatusCode::BAD_REQUEST);

    let raw = |body: Vec<u8>, content_type: &'static str| {
        let request = reqwest::Client::new()
            .post(server.url("/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-tenant-id", tenant.to_string())
            .header("content-type", content_type)
            .body(body);
        async move { read(request.send().await.unwrap()).await }
    };
    // Not JSON, not an event, empty, too many, too large, the wrong media type.
    let answer = raw(b"{\"id\": ".to_vec(), "application/json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "invalid_input");
    assert_eq!(answer.body["error"]["field"], "body");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CloudEvent")
    );
    let answer = raw(b"42".to_vec(), "application/json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = raw(b"[]".to_vec(), "application/cloudevents-batch+json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let many: Vec<Value> = (0..1001)
        .map(|_| call_event(uuid::Uuid::now_v7(), "/a", 1, now))
        .collect();
    let answer = server.post("/v1/events", tenant, &json!(many)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "events");
    let huge = vec![b' '; tenancy_servers::usage::MAX_BODY_BYTES + 1];
    let answer = raw(huge, "application/json").await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    let answer = raw(serde_json::to_vec(&event).unwrap(), "text/plain").await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_media_type");

    // Events refused one by one: every one refused is a 400 listing them all.
    let other = TenantId::new();
    let bad = json!([
        {"id": "not-a-uuid", "type": "api.call"},
        {"id": uuid::Uuid::now_v7().to_string()},
        {"id": uuid::Uuid::now_v7().to_string(), "type": "api.call", "specversion": "0.3"},
        {"id": uuid::Uuid::now_v7().to_string(), "type": "api.call", "time": "yesterday"},
        {"id": uuid::Uuid::now_v7().to_string(), "type": "api.call", "tenant_id": other.to_string()},
        {"id": uuid::Uuid::now_v7().to_string(), "type": "api.call", "data_base64": "AA=="},
        call_event(uuid::Uuid::now_v7(), "/a", 1, now - Duration::days(30)),
        "an event",
    ]);
    let answer = server.post("/v1/events", tenant, &bad).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    let fields: Vec<&str> = answer.body["error"]["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "id",
            "type",
            "specversion",
            "time",
            "tenant_id",
            "data_base64",
            "time",
            "event"
        ]
    );

    // A tenant the identity service does not know records nothing.
    let answer = server.post("/v1/events", other, &event).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(answer.body["error"]["field"], "tenant_id");

    // Bad meters, queries and quotas name the field.
    let answer = server
        .post(
            "/v1/meters",
            tenant,
            &json!({"key": "x", "event_type": "e", "aggregation": "avg", "windows": ["day"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "body");
    let answer = server
        .post(
            "/v1/meters",
            tenant,
            &json!({"key": "calls", "event_type": "api.call", "windows": ["day"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "already_exists");
    let answer = server
        .get("/v1/meters/calls/query?window=day", tenant)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "from");
    let answer = server
        .post(
            "/v1/meters/tokens/quota/check",
            tenant,
            &json!({"amount": "-1"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["field"], "amount");
    let answer = server
        .call(
            reqwest::Method::DELETE,
            "/v1/meters/calls",
            Some(tenant),
            None,
        )
        .await;
    assert_eq!(answer.body["error"]["field"], "expected_version");
    let answer = server.get("/v1/nothing", tenant).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "not_found");

    // Nothing of it was counted.
    assert_eq!(server.day_totals(tenant, now).await, (0, "0".to_owned()));
}

#[tokio::test]
async fn openapi_document_matches_the_router_and_renders_offline() {
    let server = UsageServer::start().await;
    let tenant = server.tenant().await;
    let document = server.get("/api/openapi.json", tenant).await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(&document.body, openapi::document());
    assert!(
        document.body["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.1")
    );
    let paths = document.body["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{key}", "calls");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Without the token every documented operation exists and refuses (401);
            // an undocumented route would answer the fallback's 404 or a 405.
            let response = reqwest::Client::new()
                .request(method.clone(), server.url(&concrete))
                .send()
                .await
                .unwrap();
            let answer = read(response).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                answer.text
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 12);

    let docs = reqwest::get(server.url("/api/docs")).await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = docs.text().await.unwrap();
    assert!(!html.contains("<script"), "the docs page needs no script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );
    for path in paths.keys() {
        assert!(
            html.contains(&format!("<code>{path}</code>")),
            "{path} missing"
        );
    }
    assert!(html.contains("id=\"schema-CloudEvent\""));
}

/// The same 10,000 events sent three times, concurrently, in batches of 1,000: the
/// totals equal one copy.
async fn duplicate_storm(server: &UsageServer) {
    let tenant = server.tenant().await;
    server.meters(tenant).await;
    let now = Utc::now();
    let events: Vec<Value> = (0..10_000u64)
        .map(|i| call_event(uuid::Uuid::now_v7(), &format!("/r{}", i % 10), i % 7, now))
        .collect();
    let expected_tokens: u64 = (0..10_000u64).map(|i| i % 7).sum();
    let batches: Arc<Vec<Value>> = Arc::new(events.chunks(1_000).map(|c| json!(c)).collect());
    let target = Arc::new((server.base.clone(), tenant));
    let mut senders = tokio::task::JoinSet::new();
    for copy in 0..3usize {
        let (batches, server) = (batches.clone(), target.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let (mut accepted, mut duplicates) = (0usize, 0usize);
            // Each copy walks the batches from a different starting point, so copies
            // collide on the same events at the same time.
            for k in 0..batches.len() {
                let batch = &batches[(k + copy * 3) % batches.len()];
                let response = client
                    .post(format!("{}/v1/events", server.0))
                    .bearer_auth(ADMIN_TOKEN)
                    .header("x-tenant-id", server.1.to_string())
                    .json(batch)
                    .send()
                    .await
                    .unwrap();
                let answer = read(response).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
                assert_eq!(answer.body["rejected"], json!([]));
                accepted += answer.body["accepted"].as_array().unwrap().len();
                duplicates += answer.body["duplicates"].as_array().unwrap().len();
            }
            (accepted, duplicates)
        });
    }
    let (mut accepted, mut duplicates) = (0, 0);
    while let Some(result) = senders.join_next().await {
        let (a, d) = result.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted, 10_000, "each event accepted exactly once");
    assert_eq!(duplicates, 20_000);
    assert_eq!(
        server.day_totals(tenant, now).await,
        (10_000, expected_tokens.to_string())
    );
}

#[tokio::test]
async fn duplicate_storm_over_http_on_memory() {
    duplicate_storm(&UsageServer::start().await).await;
}

#[tokio::test]
async fn duplicate_storm_over_http_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let server = UsageServer::start_with(
        Identity::new(stores.identity.clone()),
        stores.metering.clone(),
    )
    .await;
    duplicate_storm(&server).await;
}

#[tokio::test]
async fn duplicate_storm_over_http_on_postgres_as_app_role() {
    use tenancy_core::conformance::PgTestDatabase;
    let Some(db) = PgTestDatabase::create().await else {
        return;
    };
    let store = Arc::new(
        db.app_store(async |s| tenancy_metering::sql::migrate_postgres(s).await)
            .await,
    );
    let server = UsageServer::start_with(Identity::new(store.clone()), store).await;
    duplicate_storm(&server).await;
    drop(server);
    db.drop_database().await;
}
