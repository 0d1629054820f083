//! The `tenancy` binary as an operator runs it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tenancy_servers::config::FileConfig;
use tenancy_servers::proto::identity::v1 as pb;
use tenancy_servers::proto::identity::v1::get_tenant_request::Lookup;
use tenancy_servers::proto::policy::v1 as policy_pb;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    IDENTITY_SERVICE, POLICY_SERVICE, connect, create_tenant, health, identity_client,
    policy_client,
};

const TOKEN: &str = "t";
/// The master key of the binaries the tests start (base64 of 32 bytes).
const MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LW9mLTMyLWJ5dGVzLWxvbmc=";

/// `tenancy` with an empty environment, so settings come only from what a test gives.
fn tenancy() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    command.env_clear().stdin(Stdio::null());
    command
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A running `tenancy serve`; killed on drop if still running.
struct Running {
    child: Child,
    /// Where the identity service listens (if it runs).
    addr: SocketAddr,
    /// Where the policy service listens (if it runs).
    policy_addr: SocketAddr,
    /// Where the auth gateway listens (if it runs).
    gateway_addr: SocketAddr,
    /// Where the usage service listens (if it runs).
    usage_addr: SocketAddr,
    /// Where the billing service listens (if it runs).
    billing_addr: SocketAddr,
    log: PathBuf,
}

impl Running {
    /// `tenancy serve` with every service.
    fn spawn(database_url: &str, log: &Path) -> Self {
        Self::spawn_services(database_url, log, &[])
    }

    /// `tenancy serve SERVICES...`.
    fn spawn_services(database_url: &str, log: &Path, services: &[&str]) -> Self {
        Self::spawn_with(database_url, log, services, &[])
    }

    /// `tenancy serve SERVICES... EXTRA...`.
    fn spawn_with(database_url: &str, log: &Path, services: &[&str], extra: &[&str]) -> Self {
        let (addr, policy_addr, gateway_addr) = (free_addr(), free_addr(), free_addr());
        let (usage_addr, billing_addr) = (free_addr(), free_addr());
        let child = tenancy()
            .arg("serve")
            .args(services)
            .args(["--database-url", database_url])
            .args(["--identity-addr", &addr.to_string()])
            .args(["--policy-addr", &policy_addr.to_string()])
            .args(["--gateway-addr", &gateway_addr.to_string()])
            .args(["--usage-addr", &usage_addr.to_string()])
            .args(["--billing-addr", &billing_addr.to_string()])
            .args(extra)
            .args(["--admin-token", TOKEN])
            .env("TENANCY_MASTER_KEY", MASTER_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            policy_addr,
            gateway_addr,
            usage_addr,
            billing_addr,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the identity service reports `SERVING`.
    async fn wait_until_serving(&mut self) -> tonic::transport::Channel {
        self.wait_for(self.addr, IDENTITY_SERVICE).await
    }

    /// Waits until the policy service reports `SERVING`.
    async fn wait_until_policy_serving(&mut self) -> tonic::transport::Channel {
        self.wait_for(self.policy_addr, POLICY_SERVICE).await
    }

    /// Waits until `service` at `addr` reports `SERVING`.
    async fn wait_for(&mut self, addr: SocketAddr, service: &str) -> tonic::transport::Channel {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tenancy exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(channel) = connect(addr).await
                && let Ok(ServingStatus::Serving) = health(channel.clone(), service).await
            {
                return channel;
            }
            assert!(
                Instant::now() < deadline,
                "not serving within 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the gateway answers `/readyz`; returns its base URL.
    async fn wait_until_gateway_ready(&mut self) -> String {
        self.wait_until_ready(self.gateway_addr).await
    }

    /// Waits until the usage service answers `/readyz`; returns its base URL.
    async fn wait_until_usage_ready(&mut self) -> String {
        self.wait_until_ready(self.usage_addr).await
    }

    /// Waits until the billing service answers `/readyz`; returns its base URL.
    async fn wait_until_billing_ready(&mut self) -> String {
        self.wait_until_ready(self.billing_addr).await
    }

    /// Waits until the HTTP service at `addr` answers `/readyz`; returns its base URL.
    async fn wait_until_ready(&mut self, addr: SocketAddr) -> String {
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tenancy exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status().is_success()
            {
                return base;
            }
            assert!(
                Instant::now() < deadline,
                "{base} not ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and checks that the server exits successfully.
    async fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}; log:\n{}", self.log());
                let log = self.log();
                assert!(log.contains("SIGTERM received"), "{log}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within 15 s of SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `database_url`, creates a tenant and reads it back, then stops
/// it with SIGTERM. Returns the tenant.
async fn serve_and_create(database_url: &str, log: &Path, slug: &str) -> (pb::Tenant, Vec<String>) {
    let mut server = Running::spawn(database_url, log);
    let channel = server.wait_until_serving().await;
    let mut client = identity_client(channel.clone(), Some(TOKEN));
    let created = create_tenant(&mut client, slug).await;
    let read = client
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(Lookup::TenantId(created.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(read, created);
    let unauthenticated = identity_client(channel, None)
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(Lookup::TenantId(created.id.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    // `tenancy serve` runs the policy service too.
    let policy = server.wait_until_policy_serving().await;
    assert_eq!(
        health(policy, POLICY_SERVICE).await.unwrap(),
        ServingStatus::Serving
    );
    // ... and the auth gateway: discovery, JWKS and a login page.
    let base = server.wait_until_gateway_ready().await;
    let kids = check_gateway(&base).await;
    // ... and the usage service.
    let base = server.wait_until_usage_ready().await;
    check_usage(&base, &created.id).await;
    // ... and the billing service.
    let base = server.wait_until_billing_ready().await;
    check_billing(&base, &created.id).await;
    server.terminate().await;
    (created, kids)
}

/// The usage service at `base` creates a meter for `tenant`, ingests an event and
/// counts it.
async fn check_usage(base: &str, tenant: &str) {
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header("x-tenant-id", tenant);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = send(
        reqwest::Method::POST,
        "/v1/meters",
        Some(serde_json::json!({"key": "calls", "event_type": "api.call", "windows": ["day"]})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let id = uuid::Uuid::now_v7().to_string();
    let event = serde_json::json!({"specversion": "1.0", "id": id, "type": "api.call", "source": "/binary"});
    for expected in ["accepted", "duplicates"] {
        let (status, body) = send(reqwest::Method::POST, "/v1/events", Some(event.clone())).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body[expected], serde_json::json!([0]), "{body}");
    }
    let day = chrono::Utc::now().date_naive();
    let path = format!(
        "/v1/totals?from={day}T00:00:00Z&to={}T00:00:00Z",
        day + chrono::Days::new(1)
    );
    let (status, body) = send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["meters"][0]["events"], 1, "{body}");
}

/// A JSON call to an HTTP service of the binary with the admin token, for `tenant`
/// (if any); returns the status and the JSON body.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    tenant: Option<&str>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The billing service at `base` stores and reads `tenant`'s billing profile, and
/// refuses an unknown tenant.
async fn check_billing(base: &str, tenant: &str) {
    let profile =
        serde_json::json!({"name": "Acme", "email": "billing@acme.example", "currency": "EUR"});
    let (status, body) = call(
        base,
        reqwest::Method::PUT,
        "/v1/customer",
        Some(tenant),
        Some(profile),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (status, read) = call(
        base,
        reqwest::Method::GET,
        "/v1/customer",
        Some(tenant),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{read}");
    assert_eq!(read, body);
    let stranger = uuid::Uuid::now_v7().to_string();
    let (status, body) = call(
        base,
        reqwest::Method::GET,
        "/v1/customer",
        Some(&stranger),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
}

/// The gateway at `base` serves discovery and its key set, registers a client through
/// the admin API and shows the login page for it. Returns the published key ids.
async fn check_gateway(base: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let discovery: serde_json::Value = http
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], base);
    assert_eq!(discovery["jwks_uri"], format!("{base}/jwks.json"));
    let jwks: serde_json::Value = http
        .get(format!("{base}/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(!kids.is_empty());
    let client: serde_json::Value = http
        .post(format!("{base}/admin/clients"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "Demo", "redirect_uris": ["https://app.example/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = http
        .get(format!(
            "{base}/authorize?response_type=code&scope=openid&client_id={}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb",
            client["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("action=\"/login\"") && body.contains("type=\"password\""),
        "{body}"
    );
    kids
}

/// A check of `principal` viewing `resource` in `tenant`, with no entities.
fn view_check(tenant: &str, principal: &str, resource: &str) -> policy_pb::CheckPermissionRequest {
    policy_pb::CheckPermissionRequest {
        tenant_id: tenant.to_owned(),
        principal: principal.to_owned(),
        action: "Action::\"view\"".into(),
        resource: resource.to_owned(),
        context_json: String::new(),
        entities_json: String::new(),
    }
}

#[tokio::test]
async fn binary_serves_policy_alone_and_answers_checks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let mut server = Running::spawn_services(&url, &dir.path().join("policy.log"), &["policy"]);
    let channel = server.wait_until_policy_serving().await;
    let mut client = policy_client(channel.clone(), Some(TOKEN));
    let tenant = tenancy_core::TenantId::new().to_string();
    let written = client
        .create_policy(policy_pb::CreatePolicyRequest {
            tenant_id: tenant.clone(),
            expected_version: 0,
            policy_id: "view-d1".into(),
            text: "permit(principal, action == Action::\"view\", resource == Document::\"d1\");"
                .into(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap();
    assert_eq!(written.version, 1);
    let allowed = client
        .check_permission(view_check(&tenant, "User::\"u\"", "Document::\"d1\""))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed.allowed);
    assert_eq!(allowed.determining_policies, ["view-d1"]);
    assert_eq!(allowed.policy_version, 1);
    let denied = client
        .check_permission(view_check(&tenant, "User::\"u\"", "Document::\"d2\""))
        .await
        .unwrap()
        .into_inner();
    assert!(!denied.allowed);
    let unauthenticated = policy_client(channel, None)
        .check_permission(view_check(&tenant, "User::\"u\"", "Document::\"d1\""))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    // Only the policy service runs.
    assert!(
        connect(server.addr).await.is_err(),
        "identity is not served"
    );
    server.terminate().await;

    // Policies persist in the database: a restarted server answers the same.
    let mut again = Running::spawn_services(&url, &dir.path().join("policy-2.log"), &["policy"]);
    let channel = again.wait_until_policy_serving().await;
    let after = policy_client(channel, Some(TOKEN))
        .check_permission(view_check(&tenant, "User::\"u\"", "Document::\"d1\""))
        .await
        .unwrap()
        .into_inner();
    assert!(after.allowed);
    assert_eq!(after.policy_version, 1);
    again.terminate().await;
}

#[tokio::test]
async fn binary_serves_identity_on_sqlite_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let (created, kids) = serve_and_create(&url, &dir.path().join("first.log"), "persisted").await;
    assert!(dir.path().join("t.db").is_file());

    // A second process on the same file sees the tenant, and unseals the same keys.
    let mut server = Running::spawn(&url, &dir.path().join("second.log"));
    let channel = server.wait_until_serving().await;
    let base = server.wait_until_gateway_ready().await;
    let jwks: serde_json::Value = reqwest::get(format!("{base}/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.iter().all(|k| published.contains(&k.as_str())),
        "{kids:?} not all in {published:?}"
    );
    let read = identity_client(channel, Some(TOKEN))
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(Lookup::Slug("persisted".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(read, created);
    server.terminate().await;
}

#[tokio::test]
async fn binary_serves_identity_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    serve_and_create("memory:", &dir.path().join("serve.log"), "ephemeral").await;
}

#[test]
fn binary_refuses_to_start_without_an_admin_token() {
    let output = tenancy()
        .args([
            "serve",
            "--database-url",
            "memory:",
            "--identity-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin token is required"), "{stderr}");
}

#[test]
fn binary_gateway_refuses_to_start_without_a_master_key() {
    let output = tenancy()
        .args([
            "serve",
            "gateway",
            "--database-url",
            "memory:",
            "--admin-token",
            TOKEN,
        ])
        .args(["--gateway-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a master key is required"), "{stderr}");
    let output = tenancy()
        .args([
            "serve",
            "gateway",
            "--database-url",
            "memory:",
            "--admin-token",
            TOKEN,
        ])
        .args(["--gateway-addr", "127.0.0.1:0", "--master-key", "c2hvcnQ="])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master_key"), "{stderr}");
}

#[tokio::test]
async fn binary_keys_rotate_publishes_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let list = |command: &str| {
        let output = tenancy()
            .args(["keys", command, "--database-url", &url])
            .env("TENANCY_MASTER_KEY", MASTER_KEY)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let jwks: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let before = list("list");
    assert_eq!(
        before.len(),
        2,
        "the signing key and the published next key"
    );
    let after = list("rotate");
    assert!(
        after.len() >= 3,
        "the retired key stays published: {after:?}"
    );
    assert!(before.iter().all(|k| after.contains(k)));
}

#[test]
fn binary_rejects_unknown_databases_and_services() {
    let output = tenancy()
        .args([
            "serve",
            "--database-url",
            "mysql://h/db",
            "--admin-token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unsupported database url `mysql://h/db`"),
        "{stderr}"
    );

    let output = tenancy().args(["serve", "nonsense"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nonsense"), "{stderr}");
}

#[test]
fn binary_settings_come_from_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenancy.toml");
    std::fs::write(
        &file,
        r#"
            database_url = "sqlite://from-file.db"
            identity_addr = "127.0.0.1:1111"
            policy_addr = "127.0.0.1:1112"
            admin_token = "file-token"
            log_format = "json"
        "#,
    )
    .unwrap();
    let output = tenancy()
        .env("TENANCY_CONFIG", &file)
        .env("TENANCY_DATABASE_URL", "sqlite://from-env.db")
        .env("TENANCY_IDENTITY_ADDR", "127.0.0.1:2222")
        .env("TENANCY_POLICY_ADDR", "127.0.0.1:2223")
        .args(["show-config", "--database-url", "memory:"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let shown = FileConfig::parse(Path::new("stdout"), &stdout).unwrap();
    // flag > env
    assert_eq!(shown.database_url.as_deref(), Some("memory:"));
    // env > file
    assert_eq!(shown.identity_addr, Some("127.0.0.1:2222".parse().unwrap()));
    assert_eq!(shown.policy_addr, Some("127.0.0.1:2223".parse().unwrap()));
    // file > default, and the token is never printed
    assert_eq!(shown.admin_token.as_deref(), Some("<redacted>"));
    assert!(!stdout.contains("file-token"), "{stdout}");
    assert_eq!(
        shown.log_format,
        Some(tenancy_servers::config::LogFormat::Json)
    );
    // default
    assert_eq!(shown.insecure_dev, Some(false));

    // An unreadable or invalid file is an error naming it.
    std::fs::write(&file, "admin_tokn = \"typo\"").unwrap();
    let output = tenancy()
        .env("TENANCY_CONFIG", &file)
        .arg("show-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tenancy.toml"), "{stderr}");
}

#[test]
fn binary_migrate_on_memory_succeeds_and_grant_to_needs_postgres() {
    let output = tenancy()
        .args(["migrate", "--database-url", "memory:"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = tenancy()
        .args(["migrate", "--database-url", "memory:", "--grant-to", "app"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("`--grant-to`"));
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap();
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` connecting as `user` (without a password) instead.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{user}@{rest}")
}

#[test]
fn postgres_url_rewriting() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
    assert_eq!(with_user("postgres://u:p@h/x", "app"), "postgres://app@h/x");
    assert_eq!(with_user("postgres://h/x", "app"), "postgres://app@h/x");
}

#[tokio::test]
async fn binary_migrates_and_serves_identity_on_postgres_as_app_role() {
    use tenancy_core::conformance::PgTestDatabase;

    let Some(db) = PgTestDatabase::create().await else {
        return;
    };
    // The owner migrates and grants; the server then runs as the application role.
    let owner_url = with_database(db.admin_url(), db.name());
    let output = tenancy()
        .args(["migrate", "--database-url", &owner_url])
        .args(["--grant-to", PgTestDatabase::APP_ROLE])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let app_url = with_user(&owner_url, PgTestDatabase::APP_ROLE);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Running::spawn(&app_url, &dir.path().join("pg.log"));
    let channel = server.wait_until_serving().await;
    let mut client = identity_client(channel, Some(TOKEN));
    let tenant = create_tenant(&mut client, "pg-tenant").await;
    let user = crate::support::create_user(&mut client, "pg@example.com").await;
    client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            roles: vec!["admin".into()],
        })
        .await
        .unwrap();
    let members = client
        .list_tenant_memberships(pb::ListTenantMembershipsRequest {
            tenant_id: tenant.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.memberships.len(), 1);
    assert_eq!(members.memberships[0].user_id, user.id);
    let mine = client
        .list_user_memberships(pb::ListUserMembershipsRequest {
            user_id: user.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.memberships, members.memberships);

    // The policy service of the same process loads the user and its roles from
    // PostgreSQL (as the application role, through row-level security).
    let mut policy = policy_client(server.wait_until_policy_serving().await, Some(TOKEN));
    policy
        .create_policy(policy_pb::CreatePolicyRequest {
            tenant_id: tenant.id.clone(),
            expected_version: 0,
            policy_id: "admins-view".into(),
            text: "permit(principal in Role::\"admin\", action == Action::\"view\", resource);"
                .into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let principal = format!("User::\"{}\"", user.id);
    let decision = policy
        .check_permission(view_check(&tenant.id, &principal, "Document::\"d1\""))
        .await
        .unwrap()
        .into_inner();
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.determining_policies, ["admins-view"]);
    // The usage service writes and reads metering tables as the application role.
    let base = server.wait_until_usage_ready().await;
    check_usage(&base, &tenant.id).await;
    // The billing service too, for billing tables.
    let base = server.wait_until_billing_ready().await;
    check_billing(&base, &tenant.id).await;
    server.terminate().await;
    db.drop_database().await;
}

/// The events of this test: `count` of them for `tenant`, each using `i % 7` tokens.
fn kafka_usage_events(
    tenant: tenancy_core::TenantId,
    count: u64,
) -> Vec<tenancy_core::events::Event> {
    let time = chrono::Utc::now();
    (0..count)
        .map(|i| {
            tenancy_core::events::Event::new(
                tenant,
                "api.call",
                "/binary-test",
                "api-calls",
                serde_json::json!({ "tokens": i % 7 }),
            )
            .unwrap()
            .with_time(time)
        })
        .collect()
}

/// The `calls` and `tokens` totals of `tenant` today, read from the database.
async fn usage_today(
    metering: &tenancy_metering::Metering,
    tenant: tenancy_core::TenantId,
) -> (u64, String) {
    let from = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let totals = metering
        .period_totals(tenant, from, from + chrono::Duration::days(1))
        .await
        .unwrap();
    let calls = totals.iter().find(|t| t.meter.as_str() == "calls").unwrap();
    let tokens = totals
        .iter()
        .find(|t| t.meter.as_str() == "tokens")
        .unwrap();
    (
        calls.events,
        tokens.value.map(|v| v.to_string()).unwrap_or_default(),
    )
}

/// `tenancy serve usage` consumes `usage.events` from Kafka; killed (SIGKILL) in the
/// middle of the stream and started again, it has counted every produced event
/// exactly once: what the first process committed but did not acknowledge comes again
/// and is absorbed as duplicates.
///
/// The events are produced one record per producer batch (`batch.num.messages=1`):
/// tansu, the test broker, skips the rest of a record batch when a group resumes from
/// an offset inside it (Apache Kafka does not), which would lose events here for a
/// reason that is not ours.
///
/// Ignored in CI: tansu does not evict a member that died without leaving its group,
/// so when the dead process still holds the partition after the restart, the new
/// process never receives it (seen in CI; 5 of 5 local runs passed). Apache Kafka
/// evicts it after `session.timeout.ms`. The consumer's crash semantics are covered
/// in process by the metering tests (`crash_after_commit`, `crash_in_flight` on
/// Kafka). Run it with `cargo test -p tenancy-servers -- --ignored` against a broker
/// that evicts dead members.
#[tokio::test]
#[ignore = "tansu keeps a SIGKILLed member's partitions: run with --ignored against Apache Kafka"]
async fn binary_usage_consumer_counts_every_kafka_event_once_across_a_kill() {
    use tenancy_core::events::kafka::{KafkaBus, KafkaConfig};
    use tenancy_core::events::{EventBus, USAGE_EVENTS};

    let Some(brokers) =
        tenancy_core::conformance::backend_url("TENANCY_TEST_KAFKA_BROKERS", "Kafka")
    else {
        return;
    };
    const EVENTS: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let identity = tenancy_core::identity::Identity::new(stores.identity.clone());
    let tenant = identity
        .create_tenant(tenancy_core::identity::NewTenant {
            slug: format!("kafka-{}", uuid::Uuid::now_v7().simple()),
            display_name: "kafka".into(),
            metadata: serde_json::Value::Null,
        })
        .await
        .unwrap()
        .id;
    let metering = tenancy_metering::Metering::new(stores.metering.clone());
    for (key, aggregation, value) in [
        ("calls", tenancy_metering::Aggregation::Count, None),
        (
            "tokens",
            tenancy_metering::Aggregation::Sum,
            Some("tokens".to_owned()),
        ),
    ] {
        metering
            .create_meter(
                tenant,
                tenancy_metering::NewMeter {
                    key: key.into(),
                    event_type: "api.call".into(),
                    aggregation,
                    value_property: value,
                    windows: vec![tenancy_metering::Window::Day],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    // Everything is produced before the consumer starts, one record per batch.
    let mut config = KafkaConfig::new(brokers.clone());
    config
        .properties
        .push(("batch.num.messages".into(), "1".into()));
    let bus = KafkaBus::connect(config).await.unwrap();
    let events = kafka_usage_events(tenant, EVENTS);
    let key = tenant.to_string();
    let batch: Vec<(&str, &tenancy_core::events::Event)> =
        events.iter().map(|e| (key.as_str(), e)).collect();
    bus.publish_batch(USAGE_EVENTS, &batch).await.unwrap();
    let expected_tokens: u64 = (0..EVENTS).map(|i| i % 7).sum();

    // A fresh group reads the topic from its start; this tenant's events are ours.
    let group = format!("tenancy-test-{}", uuid::Uuid::now_v7().simple());
    let extra = [
        "--kafka-brokers",
        brokers.as_str(),
        "--kafka-group",
        group.as_str(),
    ];
    let mut first = Running::spawn_with(&url, &dir.path().join("first.log"), &["usage"], &extra);
    let deadline = Instant::now() + Duration::from_secs(120);
    let counted_before_kill = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            panic!("tenancy exited early with {status}; log:\n{}", first.log());
        }
        let (calls, _) = usage_today(&metering, tenant).await;
        if calls > 0 {
            // Mid-stream: the next batch is being read or written right now.
            first.child.kill().unwrap();
            first.child.wait().unwrap();
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "nothing consumed; log:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (after_kill, _) = usage_today(&metering, tenant).await;
    assert!(
        after_kill < EVENTS,
        "the whole stream was consumed before the kill ({counted_before_kill} seen); the test needs more events"
    );

    let second = Running::spawn_with(&url, &dir.path().join("second.log"), &["usage"], &extra);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (calls, _) = usage_today(&metering, tenant).await;
        assert!(calls <= EVENTS, "counted {calls} of {EVENTS}: some twice");
        if calls == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{calls} of {EVENTS} counted; log:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more arrives later, and the sums agree.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        usage_today(&metering, tenant).await,
        (EVENTS, expected_tokens.to_string())
    );
    second.terminate().await;
}

/// `tenancy serve usage billing` closes a billing period on its own: a subscription
/// backdated so that its first period ended two minutes ago is invoiced by the
/// scheduler (every second here) for the usage posted into that period through the
/// usage API, and the invoice is then marked paid, all through REST.
#[tokio::test]
async fn binary_billing_scheduler_invoices_metered_usage_of_a_backdated_period() {
    use chrono::{DurationRound as _, Months, TimeDelta, Utc};
    use reqwest::Method;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("billing.db").display());
    // The tenant exists in identity (the identity service does not run here).
    let stores = tenancy_servers::store::open_stores(&url).await.unwrap();
    let tenant = tenancy_core::identity::Identity::new(stores.identity.clone())
        .create_tenant(tenancy_core::identity::NewTenant {
            slug: format!("billing-{}", uuid::Uuid::now_v7().simple()),
            display_name: "billing".into(),
            metadata: serde_json::Value::Null,
        })
        .await
        .unwrap()
        .id
        .to_string();
    drop(stores);
    let mut server = Running::spawn_with(
        &url,
        &dir.path().join("billing.log"),
        &["usage", "billing"],
        &[
            "--billing-interval",
            "1s",
            "--stripe-webhook-secret",
            STRIPE_SECRET,
            "--webhooks-allow-private",
        ],
    );
    let usage = server.wait_until_usage_ready().await;
    let billing = server.wait_until_billing_ready().await;

    // The first period: a month ending two minutes ago, on whole minutes.
    let start = (Utc::now().checked_sub_months(Months::new(1)).unwrap() - TimeDelta::minutes(2))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    let end = start.checked_add_months(Months::new(1)).unwrap();

    // Usage first (the scheduler closes the period as soon as the subscription
    // exists): 7 calls in the period's last day, one at its end (the next period's).
    let (status, body) = call(
        &usage,
        Method::POST,
        "/v1/meters",
        Some(&tenant),
        Some(json!({
            "key": "calls", "event_type": "api.call", "aggregation": "count", "windows": ["minute"],
        })),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let at = |time: chrono::DateTime<Utc>| {
        json!({
            "specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(), "type": "api.call",
            "source": "/binary", "time": time.to_rfc3339(),
        })
    };
    let mut events: Vec<serde_json::Value> = (0..5).map(|_| at(end - TimeDelta::days(1))).collect();
    events.push(at(end - TimeDelta::hours(1)));
    events.push(at(end - TimeDelta::seconds(1)));
    events.push(at(end));
    let (status, body) = call(
        &usage,
        Method::POST,
        "/v1/events",
        Some(&tenant),
        Some(json!(events)),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["accepted"].as_array().unwrap().len(), 8, "{body}");

    // The tenant's webhook endpoint: a local receiver of paid invoices.
    let (received, receiver) = webhook_receiver().await;
    let (status, endpoint) = call(
        &billing,
        Method::POST,
        "/v1/webhook_endpoints",
        Some(&tenant),
        Some(json!({"url": format!("http://{receiver}/hooks"), "event_types": ["tenancy.billing.invoice.paid"]})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{endpoint}");
    let endpoint_secret = endpoint["secret"].as_str().unwrap().to_owned();

    // The catalog, the profile and the backdated subscription.
    let (status, product) = call(
        &billing,
        Method::POST,
        "/v1/products",
        None,
        Some(json!({"name": "API"})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{product}");
    let (status, plan) = call(&billing, Method::POST, "/v1/plans", None, Some(json!({
        "product_id": product["id"], "name": "Metered", "currency": "USD", "interval": "month",
        "prices": [
            {"description": "Platform fee", "type": "fee", "pricing": {"model": "flat", "amount": "10"}},
            {"description": "API calls", "type": "metered", "meter": "calls",
             "pricing": {"model": "per_unit", "unit_amount": "0.5"}},
        ],
    }))).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{plan}");
    let (status, body) = call(&billing, Method::PUT, "/v1/customer", Some(&tenant), Some(json!({
        "name": "Acme", "email": "billing@acme.example", "currency": "USD", "invoice_prefix": "ACME",
    }))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (status, created) = call(
        &billing,
        Method::POST,
        "/v1/subscriptions",
        Some(&tenant),
        Some(json!({
            "plan_id": plan["id"], "backdate_start_date": start.to_rfc3339(),
        })),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    let period = &created["subscription"]["current_period"];
    assert_eq!(
        (
            period["start"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap(),
            period["end"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap()
        ),
        (start, end),
        "{created}"
    );
    assert_eq!(created["invoice"]["number"], "ACME-0001");
    let subscription = created["subscription"]["id"].as_str().unwrap().to_owned();

    // The scheduler closes the period: its usage in arrears, the next fee in advance.
    let path = format!("/v1/invoices?subscription={subscription}&status=open");
    let deadline = Instant::now() + Duration::from_secs(60);
    let cycle = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("tenancy exited early with {status}; log:\n{}", server.log());
        }
        let (status, body) = call(&billing, Method::GET, &path, Some(&tenant), None).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        if let Some(cycle) = body["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["billing_reason"] == "subscription_cycle")
        {
            break cycle.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no cycle invoice; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(cycle["number"], "ACME-0002", "{cycle}");
    let lines = cycle["lines"].as_array().unwrap();
    let usage_line = lines.iter().find(|l| l["kind"] == "usage").unwrap();
    assert_eq!(usage_line["meter"], "calls", "{cycle}");
    assert_eq!(usage_line["quantity"], "7", "{cycle}");
    assert_eq!(usage_line["amount"], 350, "{cycle}");
    assert_eq!(usage_line["period"]["start"], period["start"], "{cycle}");
    let fee = lines.iter().find(|l| l["kind"] == "fee").unwrap();
    assert_eq!(fee["amount"], 1_000, "{cycle}");
    assert_eq!(fee["period"]["start"], period["end"], "{cycle}");
    assert_eq!(cycle["total"], 1_350, "{cycle}");

    // Stripe reports the payment: a signed webhook pays the invoice.
    let id = cycle["id"].as_str().unwrap();
    let event = serde_json::to_vec(&json!({
        "id": "evt_binary_1", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_binary", "object": "payment_intent",
            "metadata": {"tenant_id": tenant, "invoice_id": id}}},
    }))
    .unwrap();
    let signature = tenancy_billing::signature::sign(STRIPE_SECRET, Utc::now().timestamp(), &event);
    let answer = reqwest::Client::new()
        .post(format!("{billing}/webhooks/stripe"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let ack: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(ack["outcome"], "applied", "{ack}");
    let (_, read) = call(
        &billing,
        Method::GET,
        &format!("/v1/invoices/{id}"),
        Some(&tenant),
        None,
    )
    .await;
    assert_eq!(read["status"], "paid");
    assert_eq!(read["amount_paid"], 1_350);
    assert_eq!(read["provider_payment_id"], "pi_binary");

    // The `invoice.paid` event went through the outbox and the bus to the tenant's
    // endpoint, signed with its secret over the exact body.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        if let Some(delivery) = received.lock().unwrap().iter().find(|(_, body)| {
            serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|e| e["data"]["id"] == id)
        }) {
            break delivery.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no webhook delivered; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "tenancy.billing.invoice.paid");
    assert_eq!(event["tenant_id"], tenant);
    let signature = headers.get("tenancy-signature").unwrap().to_str().unwrap();
    tenancy_billing::signature::verify(
        signature,
        &body,
        &[endpoint_secret.as_str()],
        Utc::now().timestamp(),
        tenancy_billing::signature::DEFAULT_TOLERANCE,
    )
    .unwrap();
    // The period was invoiced once, however many passes ran since.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, all) = call(
        &billing,
        Method::GET,
        &format!("/v1/invoices?subscription={subscription}"),
        Some(&tenant),
        None,
    )
    .await;
    assert_eq!(all["invoices"].as_array().unwrap().len(), 2, "{all}");
    server.terminate().await;
}

/// The Stripe webhook secret the billing binary test runs with.
const STRIPE_SECRET: &str = "whsec_binary_test";

/// Requests a webhook receiver got: headers and raw body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A local HTTP receiver of webhooks on 127.0.0.1 (answers 200), and its address.
async fn webhook_receiver() -> (Received, std::net::SocketAddr) {
    let received: Received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((headers, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (received, addr)
}
