//! Interoperability with an independent, off-the-shelf client: the `openidconnect`
//! crate discovers the gateway, runs the authorization-code + PKCE flow through the real
//! login form, validates the ID token against our JWKS (signature, issuer, audience,
//! nonce, `at_hash`), calls userinfo and refreshes.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope,
    TokenResponse,
};

use super::gateway_support::{Browser, Gateway, param};

/// The HTTP client the library calls: plain reqwest, no redirects.
async fn http(request: HttpRequest) -> Result<HttpResponse, std::io::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let (parts, body) = request.into_parts();
    let mut builder = client.request(parts.method, parts.uri.to_string());
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let response = builder
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut out = openidconnect::http::Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        out = out.header(name.as_str(), value.as_bytes());
    }
    let bytes = response.bytes().await.map_err(std::io::Error::other)?;
    out.body(bytes.to_vec()).map_err(std::io::Error::other)
}

#[tokio::test]
async fn openidconnect_crate_runs_the_full_code_flow() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let user = gateway.user("ada@example.com", &[&acme]).await;
    let redirect = "http://127.0.0.1:7777/callback";
    let (client, secret) = gateway.web_client(redirect).await;

    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(gateway.base.clone()).unwrap(), &http)
            .await
            .expect("discovery");
    let oidc = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client.id.to_string()),
        Some(ClientSecret::new(secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = oidc
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();

    let back = Browser::new()
        .authorize(&gateway, url.as_str(), "ada@example.com", None)
        .await;
    assert!(back.starts_with(redirect), "{back}");
    assert_eq!(
        param(&back, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    assert_eq!(param(&back, "iss").as_deref(), Some(gateway.base.as_str()));
    let code = param(&back, "code").expect("code");

    let tokens = oidc
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id token");
    let id_verifier = oidc
        .id_token_verifier()
        .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .expect("valid id token");
    assert_eq!(claims.subject().as_str(), user.id.to_string());
    assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@example.com"));
    assert!(claims.auth_time().is_some());
    let expected_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected_hash));

    let info: CoreUserInfoClaims = oidc
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.email().map(|e| e.as_str()), Some("ada@example.com"));

    let refresh = tokens.refresh_token().expect("refresh token");
    let refreshed = oidc
        .exchange_refresh_token(refresh)
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.access_token().secret(),
        tokens.access_token().secret()
    );
    let rotated = refreshed.refresh_token().expect("rotated refresh token");
    assert_ne!(rotated.secret(), refresh.secret());
    // The old refresh token is spent: replaying it fails (and revokes the family).
    assert!(
        oidc.exchange_refresh_token(refresh)
            .unwrap()
            .request_async(&http)
            .await
            .is_err()
    );
    assert!(
        oidc.exchange_refresh_token(rotated)
            .unwrap()
            .request_async(&http)
            .await
            .is_err()
    );
}
