//! An auth gateway on an ephemeral port (memory stores, a manual clock), a scripted
//! browser that keeps cookies and never follows redirects, and seeding helpers.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use sha2::{Digest, Sha256};
use tenancy_core::clock::ManualClock;
use tenancy_core::clock::SystemClock;
use tenancy_core::identity::{Identity, NewTenant, NewUser, Tenant, User};
use tenancy_core::memory::MemoryStore;
use tenancy_core::oauth::{
    Client, ClientRegistration, GrantType, MemoryRateLimiter, Provider, ProviderConfig,
    ProviderParts,
};
use tenancy_core::token::{
    CachedJwks, HttpJwks, KeyManager, MasterKey, RotationPolicy, Verifier, VerifierConfig,
};
use tenancy_servers::AdminAuth;
use tenancy_servers::gateway::GatewayState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::support::ADMIN_TOKEN;

pub const PASSWORD: &str = "correct horse battery staple";

/// A running gateway.
pub struct Gateway {
    pub base: String,
    pub provider: Arc<Provider>,
    pub identity: Identity,
    pub clock: Arc<ManualClock>,
    stop: watch::Sender<bool>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Gateway {
    pub async fn start() -> Self {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let store = Arc::new(MemoryStore::new());
        let identity = Identity::new(store.clone()).with_clock(clock.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let master = MasterKey::generate().unwrap();
        let keys = Arc::new(
            KeyManager::new(
                store.clone(),
                master.clone(),
                RotationPolicy::default(),
                clock.clone(),
            )
            .unwrap(),
        );
        keys.refresh().await.unwrap();
        let provider = Arc::new(
            Provider::new(ProviderParts {
                config: ProviderConfig::new(base.clone()),
                identity: identity.clone(),
                store: store.clone(),
                sessions: store.clone(),
                keys,
                limiter: Arc::new(MemoryRateLimiter::new()),
                master_key: master,
                clock: Some(clock.clone()),
            })
            .unwrap(),
        );
        let state = GatewayState {
            provider: provider.clone(),
            admin: AdminAuth::new(ADMIN_TOKEN).unwrap(),
            secure_cookies: false,
        };
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(tenancy_servers::run_gateway(listener, state, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Self {
            base,
            provider,
            identity,
            clock,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn tenant(&self, slug: &str) -> Tenant {
        self.identity
            .create_tenant(NewTenant {
                slug: slug.into(),
                display_name: format!("Org {slug}"),
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap()
    }

    /// A user with [`PASSWORD`], member of `tenants` with role `admin`.
    pub async fn user(&self, email: &str, tenants: &[&Tenant]) -> User {
        let user = self
            .identity
            .create_user(NewUser {
                email: email.into(),
                display_name: "Ada Lovelace".into(),
                attributes: serde_json::Value::Null,
                password: Some(PASSWORD.into()),
            })
            .await
            .unwrap();
        for t in tenants {
            self.identity
                .add_member(t.id, user.id, &["admin"])
                .await
                .unwrap();
        }
        user
    }

    /// A confidential global client (basic auth) for the code flow, with its secret.
    pub async fn web_client(&self, redirect: &str) -> (Client, String) {
        self.client(ClientRegistration {
            name: "Web App".into(),
            redirect_uris: vec![redirect.into()],
            post_logout_redirect_uris: vec!["https://app.example/signed-out".into()],
            scope: Some("openid profile email offline_access".into()),
            ..ClientRegistration::default()
        })
        .await
    }

    /// A public client (PKCE, no secret).
    pub async fn public_client(&self, redirect: &str) -> Client {
        self.client(ClientRegistration {
            name: "Native App".into(),
            public: true,
            redirect_uris: vec![redirect.into()],
            ..ClientRegistration::default()
        })
        .await
        .0
    }

    /// A tenant's machine client (client credentials).
    pub async fn machine_client(&self, tenant: &Tenant) -> (Client, String) {
        self.client(ClientRegistration {
            tenant_id: Some(tenant.id),
            name: "Backend".into(),
            grant_types: vec![GrantType::ClientCredentials],
            scope: Some("reports:read reports:write".into()),
            ..ClientRegistration::default()
        })
        .await
    }

    pub async fn client(&self, registration: ClientRegistration) -> (Client, String) {
        let (client, secret) = self.provider.register_client(registration).await.unwrap();
        (
            client,
            secret.map(|s| s.expose().to_owned()).unwrap_or_default(),
        )
    }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("v{}", uuid::Uuid::now_v7().simple()).repeat(2);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// What came back from one request.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The `value` of the hidden input `name` of the page.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no `{name}` in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        unescape(&self.body[start..end])
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A query parameter of a URL.
pub fn param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A scripted browser: keeps cookies, never follows redirects.
#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn absorb(&mut self, response: reqwest::Response) -> Reply {
        for c in response.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(response).await
    }

    pub async fn post(&mut self, url: &str, fields: &[(&str, &str)]) -> Reply {
        let body = form(fields);
        let response = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.absorb(response).await
    }

    /// Submits the form of `page` (its `request` and `csrf`) to `action` with `fields`.
    pub async fn submit(
        &mut self,
        gateway: &Gateway,
        page: &Reply,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let request = page.hidden("request");
        let csrf = page.hidden("csrf");
        let mut all: Vec<(&str, &str)> = vec![("request", &request), ("csrf", &csrf)];
        all.extend_from_slice(fields);
        self.post(&gateway.url(action), &all).await
    }

    /// Runs the browser part of an authorization: login (if asked), organization
    /// (`tenant_slug` if asked), consent (allow, if asked). Returns the final redirect.
    pub async fn authorize(
        &mut self,
        gateway: &Gateway,
        authorize_url: &str,
        email: &str,
        tenant: Option<&Tenant>,
    ) -> String {
        let mut page = self.get(authorize_url).await;
        for _ in 0..4 {
            if page.status == StatusCode::SEE_OTHER {
                return page.location().unwrap();
            }
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            page = if page.body.contains("action=\"/login\"") {
                self.submit(
                    gateway,
                    &page,
                    "/login",
                    &[("email", email), ("password", PASSWORD)],
                )
                .await
            } else if page.body.contains("action=\"/authorize/organization\"") {
                let id = tenant.expect("a tenant to choose").id.to_string();
                self.submit(
                    gateway,
                    &page,
                    "/authorize/organization",
                    &[("tenant_id", &id)],
                )
                .await
            } else if page.body.contains("action=\"/consent\"") {
                self.submit(gateway, &page, "/consent", &[("decision", "allow")])
                    .await
            } else {
                panic!("unexpected page: {}", page.body);
            };
        }
        panic!("the flow did not end: {}", page.body);
    }
}

pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// An authorization URL for `client`.
pub fn authorize_url(
    gateway: &Gateway,
    client: &Client,
    redirect: &str,
    scope: &str,
    challenge: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let id = client.id.to_string();
    let mut fields: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &id),
        ("redirect_uri", redirect),
        ("scope", scope),
        ("state", "st4te"),
        ("nonce", "n0nce"),
    ];
    if let Some(c) = challenge {
        fields.push(("code_challenge", c));
        fields.push(("code_challenge_method", "S256"));
    }
    fields.extend_from_slice(extra);
    format!("{}?{}", gateway.url("/authorize"), form(&fields))
}

/// A token-endpoint call with HTTP Basic client authentication.
pub async fn token_basic(
    gateway: &Gateway,
    client: &Client,
    secret: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let response = reqwest::Client::new()
        .post(gateway.url("/token"))
        .basic_auth(client.id.to_string(), Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .unwrap();
    Browser::new().absorb(response).await
}

/// A POST of a form without client authentication headers.
pub async fn post_form(gateway: &Gateway, path: &str, fields: &[(&str, &str)]) -> Reply {
    Browser::new().post(&gateway.url(path), fields).await
}

/// Logs `email` in through the code flow of a confidential client and redeems the code.
pub async fn code_flow_tokens(
    gateway: &Gateway,
    client: &Client,
    secret: &str,
    redirect: &str,
    email: &str,
    tenant: Option<&Tenant>,
) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        gateway,
        client,
        redirect,
        "openid email offline_access",
        Some(&challenge),
        &[],
    );
    let back = Browser::new().authorize(gateway, &url, email, tenant).await;
    let code = param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let reply = token_basic(
        gateway,
        client,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()
}

/// A resource server's verifier of the gateway's access tokens for `audience`, fetching
/// the JWKS over HTTP.
pub fn http_verifier(gateway: &Gateway, audience: &str) -> Verifier {
    let source = Arc::new(HttpJwks::new(&gateway.url("/jwks.json")).unwrap());
    Verifier::new(
        VerifierConfig::new(gateway.base.clone(), [audience.to_owned()]),
        CachedJwks::new(source, Arc::new(SystemClock)),
    )
    .unwrap()
}
