//! The auth gateway over real HTTP: discovery and JWKS, the pages and their headers,
//! and the RFC 9700 negative cases.

use std::sync::Arc;

use reqwest::StatusCode;
use tenancy_core::oauth::{AuthMethod, ClientRegistration, GrantType};

use super::gateway_support::{
    Browser, Gateway, authorize_url, code_flow_tokens, form, http_verifier, param, pkce, post_form,
    token_basic,
};
use super::support::ADMIN_TOKEN;

const REDIRECT: &str = "https://app.example/callback";

#[tokio::test]
async fn discovery_jwks_and_login_page_headers() {
    let gateway = Gateway::start().await;
    let mut browser = Browser::new();
    let doc = browser
        .get(&gateway.url("/.well-known/openid-configuration"))
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert_eq!(doc["issuer"], gateway.base);
    assert_eq!(doc["token_endpoint"], gateway.url("/token"));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(
        !doc["grant_types_supported"]
            .to_string()
            .contains("password")
    );
    let jwks = browser.get(&gateway.url("/jwks.json")).await.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "private material in the JWKS"
    );
    assert!(keys.iter().any(|k| k["alg"] == "ES256"));

    let (client, _) = gateway.web_client(REDIRECT).await;
    let (_, challenge) = pkce();
    let page = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            Some(&challenge),
            &[],
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action=\"/login\""));
    assert!(!page.body.contains("<script"));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    let csrf_cookie = page.header("set-cookie").unwrap();
    assert!(
        csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"),
        "{csrf_cookie}"
    );
}

#[tokio::test]
async fn unregistered_and_near_miss_redirect_uris_never_redirect() {
    let gateway = Gateway::start().await;
    let (client, _) = gateway.web_client(REDIRECT).await;
    let (_, challenge) = pkce();
    for bad in [
        "https://app.example/callback/",
        "https://APP.example/callback",
        "https://app.example/Callback",
        "https://app.example/callback?x=1",
        "https://app.example/callback#frag",
        "https://app.example:8443/callback",
        "https://user@app.example/callback",
        "https://evil.example/callback",
        "http://app.example/callback",
    ] {
        let page = Browser::new()
            .get(&authorize_url(
                &gateway,
                &client,
                bad,
                "openid",
                Some(&challenge),
                &[],
            ))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.location().is_none(), "{bad} redirected");
        assert!(page.body.contains("not registered"), "{bad}: {}", page.body);
    }
    // Unknown client: an error page too.
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={REDIRECT}",
        gateway.url("/authorize"),
        uuid::Uuid::now_v7()
    );
    let page = Browser::new().get(&url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location().is_none());
}

#[tokio::test]
async fn loopback_redirect_uris_may_vary_the_port_only() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let client = gateway.public_client("http://127.0.0.1/cb").await;
    let (_, challenge) = pkce();
    let url = authorize_url(
        &gateway,
        &client,
        "http://127.0.0.1:51234/cb",
        "openid",
        Some(&challenge),
        &[],
    );
    let back = Browser::new()
        .authorize(&gateway, &url, "ada@example.com", None)
        .await;
    assert!(
        back.starts_with("http://127.0.0.1:51234/cb?code="),
        "{back}"
    );
    for bad in [
        "http://127.0.0.1:51234/other",
        "http://localhost:51234/cb",
        "http://127.0.0.1:80@evil.example/cb",
    ] {
        let page = Browser::new()
            .get(&authorize_url(
                &gateway,
                &client,
                bad,
                "openid",
                Some(&challenge),
                &[],
            ))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn pkce_is_required_for_public_clients_and_checked() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let redirect = "http://127.0.0.1/cb";
    let client = gateway.public_client(redirect).await;
    // No challenge, or `plain`: an error back to the client.
    let back = Browser::new()
        .get(&authorize_url(
            &gateway,
            &client,
            redirect,
            "openid",
            None,
            &[],
        ))
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    assert_eq!(
        param(&back.location().unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    let plain = authorize_url(
        &gateway,
        &client,
        redirect,
        "openid",
        None,
        &[
            ("code_challenge", "abc"),
            ("code_challenge_method", "plain"),
        ],
    );
    let back = Browser::new().get(&plain).await;
    assert_eq!(
        param(&back.location().unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(
        param(&back.location().unwrap(), "state").as_deref(),
        Some("st4te")
    );

    let id = client.id.to_string();
    let code_for = async |verifier_challenge: &str| {
        let url = authorize_url(
            &gateway,
            &client,
            redirect,
            "openid",
            Some(verifier_challenge),
            &[],
        );
        let back = Browser::new()
            .authorize(&gateway, &url, "ada@example.com", None)
            .await;
        param(&back, "code").unwrap()
    };
    let (verifier, challenge) = pkce();
    // Missing verifier.
    let code = code_for(&challenge).await;
    let reply = post_form(
        &gateway,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("redirect_uri", redirect),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_grant");
    // Wrong verifier.
    let code = code_for(&challenge).await;
    let (other_verifier, _) = pkce();
    let reply = post_form(
        &gateway,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &other_verifier),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    // Right verifier.
    let code = code_for(&challenge).await;
    let reply = post_form(
        &gateway,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test]
async fn a_verifier_without_a_challenge_is_refused() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let url = authorize_url(&gateway, &client, REDIRECT, "openid", None, &[]);
    let back = Browser::new()
        .authorize(&gateway, &url, "ada@example.com", None)
        .await;
    let code = param(&back, "code").unwrap();
    let (verifier, _) = pkce();
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_reused_code_fails_and_revokes_what_it_issued() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &gateway,
        &client,
        REDIRECT,
        "openid offline_access",
        Some(&challenge),
        &[],
    );
    let back = Browser::new()
        .authorize(&gateway, &url, "ada@example.com", None)
        .await;
    let code = param(&back, "code").unwrap();
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let first = token_basic(&gateway, &client, &secret, &fields)
        .await
        .json();
    let access = first["access_token"].as_str().unwrap().to_owned();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let active = token_basic_path(
        &gateway,
        "/introspect",
        &client,
        &secret,
        &[("token", &access)],
    )
    .await;
    assert_eq!(active["active"], true);

    let second = token_basic(&gateway, &client, &secret, &fields).await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert_eq!(second.json()["error"], "invalid_grant");
    let after = token_basic_path(
        &gateway,
        "/introspect",
        &client,
        &secret,
        &[("token", &access)],
    )
    .await;
    assert_eq!(after, serde_json::json!({"active": false}));
    let refreshed = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(refreshed.json()["error"], "invalid_grant");
}

async fn token_basic_path(
    gateway: &Gateway,
    path: &str,
    client: &tenancy_core::oauth::Client,
    secret: &str,
    fields: &[(&str, &str)],
) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(gateway.url(path))
        .basic_auth(client.id.to_string(), Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn codes_are_bound_to_client_and_redirect_uri_and_expire() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let (other, other_secret) = gateway.web_client(REDIRECT).await;
    let new_code = async || {
        let url = authorize_url(&gateway, &client, REDIRECT, "openid", None, &[]);
        param(
            &Browser::new()
                .authorize(&gateway, &url, "ada@example.com", None)
                .await,
            "code",
        )
        .unwrap()
    };
    let code = new_code().await;
    let reply = token_basic(
        &gateway,
        &other,
        &other_secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    let code = new_code().await;
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example/other"),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    let code = new_code().await;
    gateway.clock.advance(chrono::Duration::seconds(61));
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn client_authentication_failures_are_401_with_a_challenge() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let (client, secret) = gateway.machine_client(&acme).await;
    let reply = token_basic(
        &gateway,
        &client,
        "wrong-secret",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"], "invalid_client");
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    // Right secret, wrong method (the client registered client_secret_basic).
    let id = client.id.to_string();
    let reply = post_form(
        &gateway,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The password grant is refused whatever the client.
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "password"),
            ("username", "a"),
            ("password", "b"),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    // Scope escalation.
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports:read admin"),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_scope");
    // Repeated parameters are refused.
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_request");
}

#[tokio::test]
async fn client_credentials_tokens_carry_the_tenant_and_no_refresh_token() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let (client, secret) = gateway.machine_client(&acme).await;
    let reply = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports:read"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let body = reply.json();
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "reports:read");
    let verifier = http_verifier(&gateway, &client.id.to_string());
    let verified = verifier
        .verify_for_tenant(body["access_token"].as_str().unwrap(), acme.id)
        .await
        .unwrap();
    assert_eq!(verified.context.tenant_id, acme.id);
    assert_eq!(verified.claims.client_id, client.id);
    // A token of tenant A presented for tenant B is refused.
    let beta = gateway.tenant("beta").await;
    assert!(
        verifier
            .verify_for_tenant(body["access_token"].as_str().unwrap(), beta.id)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_revokes_the_family() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let first = code_flow_tokens(
        &gateway,
        &client,
        &secret,
        REDIRECT,
        "ada@example.com",
        None,
    )
    .await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    // Narrowing is fine; widening is not.
    let widened = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("scope", "openid email profile"),
        ],
    )
    .await;
    assert_eq!(widened.json()["error"], "invalid_scope");
    let second = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("scope", "openid"),
        ],
    )
    .await
    .json();
    assert_eq!(second["scope"], "openid");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    // Replaying r1 fails and revokes the family: r2 and its access token die too.
    let replay = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(replay.json()["error"], "invalid_grant");
    let after = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
    )
    .await;
    assert_eq!(after.json()["error"], "invalid_grant");
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(
        token_basic_path(
            &gateway,
            "/introspect",
            &client,
            &secret,
            &[("token", access)]
        )
        .await["active"],
        false
    );
}

#[tokio::test]
async fn concurrent_redemptions_yield_at_most_one_success() {
    let gateway = Arc::new(Gateway::start().await);
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let url = authorize_url(
        &gateway,
        &client,
        REDIRECT,
        "openid offline_access",
        None,
        &[],
    );
    let code = param(
        &Browser::new()
            .authorize(&gateway, &url, "ada@example.com", None)
            .await,
        "code",
    )
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (gateway, client, secret, code) = (
            gateway.clone(),
            client.clone(),
            secret.clone(),
            code.clone(),
        );
        tasks.push(tokio::spawn(async move {
            token_basic(
                &gateway,
                &client,
                &secret,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                ],
            )
            .await
        }));
    }
    let mut refresh = None;
    let mut ok = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        if reply.status == StatusCode::OK {
            ok += 1;
            refresh = reply.json()["refresh_token"].as_str().map(str::to_owned);
        }
    }
    assert_eq!(ok, 1, "exactly one redemption of a code succeeds");
    let refresh = refresh.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (gateway, client, secret, refresh) = (
            gateway.clone(),
            client.clone(),
            secret.clone(),
            refresh.clone(),
        );
        tasks.push(tokio::spawn(async move {
            token_basic(
                &gateway,
                &client,
                &secret,
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            )
            .await
            .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok <= 1, "{ok} concurrent refreshes of one token succeeded");
}

#[tokio::test]
async fn introspection_hides_other_tenants_tokens_and_revocation_works() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let beta = gateway.tenant("beta").await;
    let (acme_client, acme_secret) = gateway.machine_client(&acme).await;
    let (beta_client, beta_secret) = gateway.machine_client(&beta).await;
    let token = token_basic(
        &gateway,
        &acme_client,
        &acme_secret,
        &[("grant_type", "client_credentials")],
    )
    .await
    .json();
    let access = token["access_token"].as_str().unwrap();
    let own = token_basic_path(
        &gateway,
        "/introspect",
        &acme_client,
        &acme_secret,
        &[("token", access)],
    )
    .await;
    assert_eq!(own["active"], true);
    assert_eq!(own["tenant_id"], acme.id.to_string());
    let other = token_basic_path(
        &gateway,
        "/introspect",
        &beta_client,
        &beta_secret,
        &[("token", access)],
    )
    .await;
    assert_eq!(other, serde_json::json!({"active": false}));
    let junk = token_basic_path(
        &gateway,
        "/introspect",
        &acme_client,
        &acme_secret,
        &[("token", "not-a-token")],
    )
    .await;
    assert_eq!(junk, serde_json::json!({"active": false}));
    // Another client's revocation is ignored; the owner's works.
    let response = reqwest::Client::new()
        .post(gateway.url("/revoke"))
        .basic_auth(beta_client.id.to_string(), Some(&beta_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", access)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        token_basic_path(
            &gateway,
            "/introspect",
            &acme_client,
            &acme_secret,
            &[("token", access)]
        )
        .await["active"],
        true
    );
    let response = reqwest::Client::new()
        .post(gateway.url("/revoke"))
        .basic_auth(acme_client.id.to_string(), Some(&acme_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", access)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        token_basic_path(
            &gateway,
            "/introspect",
            &acme_client,
            &acme_secret,
            &[("token", access)]
        )
        .await["active"],
        false
    );
    // Expired tokens are inactive.
    let fresh = token_basic(
        &gateway,
        &acme_client,
        &acme_secret,
        &[("grant_type", "client_credentials")],
    )
    .await
    .json();
    gateway.clock.advance(chrono::Duration::minutes(16));
    let expired = token_basic_path(
        &gateway,
        "/introspect",
        &acme_client,
        &acme_secret,
        &[("token", fresh["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(expired["active"], false);
}

#[tokio::test]
async fn users_of_several_tenants_choose_one_and_consent_is_remembered() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let beta = gateway.tenant("beta").await;
    gateway.user("ada@example.com", &[&acme, &beta]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let mut browser = Browser::new();
    let url = authorize_url(&gateway, &client, REDIRECT, "openid", None, &[]);
    let page = browser.get(&url).await;
    let page = browser
        .submit(
            &gateway,
            &page,
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", super::gateway_support::PASSWORD),
            ],
        )
        .await;
    assert!(
        page.body.contains("Choose an organization"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Org acme") && page.body.contains("Org beta"));
    let beta_id = beta.id.to_string();
    let page = browser
        .submit(
            &gateway,
            &page,
            "/authorize/organization",
            &[("tenant_id", &beta_id)],
        )
        .await;
    assert!(page.body.contains("action=\"/consent\""), "{}", page.body);
    let back = browser
        .submit(&gateway, &page, "/consent", &[("decision", "allow")])
        .await;
    let code = param(&back.location().unwrap(), "code").unwrap();
    let tokens = token_basic(
        &gateway,
        &client,
        &secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await
    .json();
    let info = token_basic_path(
        &gateway,
        "/introspect",
        &client,
        &secret,
        &[("token", tokens["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(info["tenant_id"], beta.id.to_string());
    assert_eq!(info["roles"], serde_json::json!(["admin"]));
    // Same browser again, same tenant chosen: no consent page this time.
    let page = browser.get(&url).await;
    let back = browser
        .submit(
            &gateway,
            &page,
            "/authorize/organization",
            &[("tenant_id", &beta_id)],
        )
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert!(param(&back.location().unwrap(), "code").is_some());
    // A tenant the user is not in is refused.
    let stranger = gateway.tenant("stranger").await.id.to_string();
    let page = browser.get(&url).await;
    let back = browser
        .submit(
            &gateway,
            &page,
            "/authorize/organization",
            &[("tenant_id", &stranger)],
        )
        .await;
    assert_eq!(
        param(&back.location().unwrap(), "error").as_deref(),
        Some("access_denied")
    );
}

#[tokio::test]
async fn login_failures_csrf_and_rate_limits() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, _) = gateway.web_client(REDIRECT).await;
    let mut browser = Browser::new();
    let page = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[],
        ))
        .await;
    let wrong = browser
        .submit(
            &gateway,
            &page,
            "/login",
            &[("email", "ada@example.com"), ("password", "nope")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("invalid email or password"));
    // A forged form (no CSRF cookie) is refused.
    let request = page.hidden("request");
    let forged = Browser::new()
        .post(
            &gateway.url("/login"),
            &[
                ("request", &request),
                ("csrf", "x"),
                ("email", "ada@example.com"),
                ("password", super::gateway_support::PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // An altered request is refused.
    let csrf = page.hidden("csrf");
    let altered = browser
        .post(
            &gateway.url("/login"),
            &[
                ("request", &format!("x{request}")),
                ("csrf", &csrf),
                ("email", "ada@example.com"),
                ("password", super::gateway_support::PASSWORD),
            ],
        )
        .await;
    assert_eq!(altered.status, StatusCode::BAD_REQUEST);
    // Past the per-account quota even the right password is refused for a while.
    let mut last = wrong;
    for _ in 0..6 {
        last = browser
            .submit(
                &gateway,
                &last,
                "/login",
                &[("email", "ada@example.com"), ("password", "nope")],
            )
            .await;
    }
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS, "{}", last.body);
    let right = browser
        .submit(
            &gateway,
            &last,
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", super::gateway_support::PASSWORD),
            ],
        )
        .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    gateway.clock.advance(chrono::Duration::minutes(6));
    let right = browser
        .submit(
            &gateway,
            &right,
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", super::gateway_support::PASSWORD),
            ],
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
}

#[tokio::test]
async fn prompt_none_without_a_session_answers_login_required() {
    let gateway = Gateway::start().await;
    let (client, _) = gateway.web_client(REDIRECT).await;
    let back = Browser::new()
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    let location = back.location().unwrap();
    assert_eq!(param(&location, "error").as_deref(), Some("login_required"));
    assert_eq!(param(&location, "state").as_deref(), Some("st4te"));
}

#[tokio::test]
async fn logout_redirects_only_to_registered_uris_with_a_valid_hint() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, secret) = gateway.web_client(REDIRECT).await;
    let tokens = code_flow_tokens(
        &gateway,
        &client,
        &secret,
        REDIRECT,
        "ada@example.com",
        None,
    )
    .await;
    let hint = tokens["id_token"].as_str().unwrap();
    let mut browser = Browser::new();
    let ok = browser
        .get(&format!(
            "{}?{}",
            gateway.url("/logout"),
            form(&[
                ("id_token_hint", hint),
                ("post_logout_redirect_uri", "https://app.example/signed-out"),
                ("state", "bye")
            ])
        ))
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(
        ok.location().as_deref(),
        Some("https://app.example/signed-out?state=bye")
    );
    let bad = browser
        .get(&format!(
            "{}?{}",
            gateway.url("/logout"),
            form(&[
                ("id_token_hint", hint),
                ("post_logout_redirect_uri", "https://evil.example/")
            ])
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.location().is_none());
    let no_hint = browser
        .get(&format!(
            "{}?{}",
            gateway.url("/logout"),
            form(&[("post_logout_redirect_uri", "https://app.example/signed-out")])
        ))
        .await;
    assert_eq!(no_hint.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_before_signing() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let (client, secret) = gateway.machine_client(&acme).await;
    let before = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await
    .json();
    let before = before["access_token"].as_str().unwrap().to_owned();
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let jwks_before = Browser::new().get(&gateway.url("/jwks.json")).await.json();
    let published: Vec<String> = jwks_before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        published.len() >= 2,
        "a next key is published ahead: {published:?}"
    );

    let rotated = reqwest::Client::new()
        .post(gateway.url("/admin/keys/rotate"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    let after = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await
    .json();
    let new_kid = jsonwebtoken::decode_header(after["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(
        published.contains(&new_kid),
        "the new signing key was in the JWKS before it signed"
    );
    let verifier = http_verifier(&gateway, &client.id.to_string());
    verifier
        .verify(&before)
        .await
        .expect("a token signed before the rotation still verifies");
    verifier
        .verify(after["access_token"].as_str().unwrap())
        .await
        .unwrap();
    // Without the admin token, no rotation.
    let refused = reqwest::Client::new()
        .post(gateway.url("/admin/keys/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn private_key_jwt_clients_authenticate_with_single_use_assertions() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let keypair = josekit::jws::ES256.generate_key_pair().unwrap();
    let mut jwk = keypair.to_jwk_public_key();
    jwk.set_key_id("k1");
    jwk.set_algorithm("ES256");
    let jwks = serde_json::json!({"keys": [serde_json::to_value(jwk.as_ref()).unwrap()]});
    let (client, _) = gateway
        .client(ClientRegistration {
            tenant_id: Some(acme.id),
            name: "Signed".into(),
            auth_method: Some(AuthMethod::PrivateKeyJwt),
            jwks: Some(jwks),
            grant_types: vec![GrantType::ClientCredentials],
            scope: Some("reports:read".into()),
            ..ClientRegistration::default()
        })
        .await;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"iss": client.id, "sub": client.id, "aud": gateway.url("/token"), "exp": now + 60, "iat": now, "jti": "assertion-1"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&keypair.to_pem_private_key()).unwrap();
    let assertion = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let fields = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let ok = post_form(&gateway, "/token", &fields).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let replay = post_form(&gateway, "/token", &fields).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.json()["error"], "invalid_client");
}

#[tokio::test]
async fn the_admin_api_registers_clients_and_refuses_bad_input() {
    let gateway = Gateway::start().await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({"name": "App", "redirect_uris": [REDIRECT]});
    let anonymous = http
        .post(gateway.url("/admin/clients"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let created = http
        .post(gateway.url("/admin/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.unwrap();
    assert!(created["client_secret"].as_str().unwrap().len() >= 40);
    assert!(created.get("secret_digest").is_none());
    let id = created["id"].as_str().unwrap();
    let read: serde_json::Value = http
        .get(gateway.url(&format!("/admin/clients/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "App");
    assert!(read.get("client_secret").is_none());
    for (bad, field) in [
        (
            serde_json::json!({"name": "App", "redirect_uris": ["http://evil.example/cb"]}),
            "redirect_uri",
        ),
        (
            serde_json::json!({"name": "", "redirect_uris": [REDIRECT]}),
            "name",
        ),
        (
            serde_json::json!({"name": "App", "public": true, "grant_types": ["client_credentials"], "redirect_uris": [REDIRECT]}),
            "grant_types",
        ),
        (
            serde_json::json!({"name": "App", "grant_types": ["client_credentials"]}),
            "grant_types",
        ),
        (
            serde_json::json!({"name": "App", "redirect_uris": [REDIRECT], "scope": "a\"b"}),
            "scope",
        ),
    ] {
        let reply = http
            .post(gateway.url("/admin/clients"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{bad}");
        let reply: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    let listed: serde_json::Value = http
        .get(gateway.url("/admin/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["clients"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn token_endpoint_authentication_failures_are_rate_limited() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let (client, secret) = gateway.machine_client(&acme).await;
    let mut last = None;
    for _ in 0..11 {
        last = Some(
            token_basic(
                &gateway,
                &client,
                "guess",
                &[("grant_type", "client_credentials")],
            )
            .await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS, "{}", last.body);
    assert!(last.header("retry-after").is_some());
    // While limited, even the right secret is refused: guessing cannot continue.
    let right = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    gateway.clock.advance(chrono::Duration::minutes(2));
    let right = token_basic(
        &gateway,
        &client,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
}

#[tokio::test]
async fn prompt_login_max_age_and_login_hint() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    gateway.user("ada@example.com", &[&acme]).await;
    let (client, _) = gateway.web_client(REDIRECT).await;
    let mut browser = Browser::new();
    let url = authorize_url(
        &gateway,
        &client,
        REDIRECT,
        "openid",
        None,
        &[("login_hint", "ada@example.com")],
    );
    let page = browser.get(&url).await;
    assert!(
        page.body.contains("value=\"ada@example.com\""),
        "the hint prefills the form"
    );
    let back = browser
        .authorize(&gateway, &url, "ada@example.com", None)
        .await;
    assert!(param(&back, "code").is_some());
    // Signed in and consented: a plain request goes straight back.
    let again = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[],
        ))
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    // prompt=login asks again; so does a max_age the session is older than.
    let forced = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[("prompt", "login")],
        ))
        .await;
    assert!(forced.body.contains("action=\"/login\""), "{}", forced.body);
    gateway.clock.advance(chrono::Duration::seconds(120));
    let stale = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[("max_age", "60")],
        ))
        .await;
    assert!(stale.body.contains("action=\"/login\""), "{}", stale.body);
    let fresh = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[("max_age", "600")],
        ))
        .await;
    assert_eq!(fresh.status, StatusCode::SEE_OTHER);
    // Unknown prompt values are an error for the client.
    let bad = browser
        .get(&authorize_url(
            &gateway,
            &client,
            REDIRECT,
            "openid",
            None,
            &[("prompt", "sideways")],
        ))
        .await;
    assert_eq!(
        param(&bad.location().unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
}
