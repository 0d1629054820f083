//! The protocol and page handlers. Each parses its input, calls the provider and maps
//! the result through [`super::errors`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenancy_core::ErrorKind;
use tenancy_core::oauth::{
    AuthorizationPageError, AuthorizationParams, AuthorizationStep, ClientAuthentication,
    LogoutOutcome, OAuthError, PendingAuthorization, StepInput, TokenRequest,
};

use super::errors::{bearer_error, html, no_store, oauth_error, page_error, redirect};
use super::{GatewayState, RemoteIp, pages};
use crate::http::parse_form;

// ----- small HTTP helpers -----

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The form body of a POST, or the protocol error to answer.
fn form_body(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the body must be `application/x-www-form-urlencoded`",
        ));
    }
    parse_form(body).map_err(OAuthError::invalid_request)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of cookie `name`.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl GatewayState {
    fn session_cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-tenancy_session"
        } else {
            "tenancy_session"
        }
    }

    fn csrf_cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-tenancy_csrf"
        } else {
            "tenancy_csrf"
        }
    }

    /// A `Set-Cookie` value: host-only, path `/`, `HttpOnly`, `Secure` unless in
    /// development mode; `max_age` 0 deletes it.
    fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: u64,
        same_site: &str,
    ) -> Option<HeaderValue> {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
        ))
        .ok()
    }

    fn session_of<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie(headers, self.session_cookie_name())
    }
}

/// Adds `Set-Cookie` headers to a response.
fn with_cookies(mut response: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

// ----- the browser flow -----

/// Renders a step of the authorization flow: a page (with the CSRF cookie its form
/// needs) or a redirect.
fn render(
    state: &GatewayState,
    headers: &HeaderMap,
    step: AuthorizationStep,
    status: StatusCode,
    mut cookies: Vec<HeaderValue>,
) -> Response {
    let provider = &state.provider;
    let csrf_cookie = match cookie(headers, state.csrf_cookie_name()) {
        Some(existing) if existing.len() >= 32 => existing.to_owned(),
        _ => match provider.new_csrf_cookie() {
            Ok(fresh) => {
                if let Some(c) = state.set_cookie(state.csrf_cookie_name(), &fresh, 3600, "Strict")
                {
                    cookies.push(c);
                }
                fresh
            }
            Err(e) => return page_error(&e),
        },
    };
    let csrf = provider.csrf_token(&csrf_cookie);
    let response = match step {
        AuthorizationStep::Redirect(to) => redirect(&to),
        AuthorizationStep::Login {
            request,
            client_name,
            login_hint,
            error,
        } => html(
            status,
            pages::login(
                &client_name,
                &request,
                &csrf,
                login_hint.as_deref(),
                error.as_deref(),
            ),
        ),
        AuthorizationStep::ChooseTenant {
            request,
            client_name,
            tenants,
        } => html(
            status,
            pages::choose_tenant(&client_name, &request, &csrf, &tenants),
        ),
        AuthorizationStep::Consent {
            request,
            client_name,
            tenant,
            scopes,
        } => html(
            status,
            pages::consent(&client_name, &tenant, &scopes, &request, &csrf),
        ),
    };
    with_cookies(response, cookies)
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut q = match parse_form(query.unwrap_or_default().as_bytes()) {
        Ok(q) => q,
        Err(e) => return html(StatusCode::BAD_REQUEST, pages::error(&e)),
    };
    let params = AuthorizationParams {
        response_type: q.remove("response_type"),
        client_id: q.remove("client_id"),
        redirect_uri: q.remove("redirect_uri"),
        scope: q.remove("scope"),
        state: q.remove("state"),
        nonce: q.remove("nonce"),
        code_challenge: q.remove("code_challenge"),
        code_challenge_method: q.remove("code_challenge_method"),
        prompt: q.remove("prompt"),
        max_age: q.remove("max_age"),
        login_hint: q.remove("login_hint"),
        response_mode: q.remove("response_mode"),
    };
    let provider = &state.provider;
    let pending = match provider.start_authorization(&params).await {
        Err(AuthorizationPageError(message)) => {
            return html(StatusCode::BAD_REQUEST, pages::error(&message));
        }
        Ok(Err(to)) => return redirect(&to),
        Ok(Ok(pending)) => pending,
    };
    continue_flow(&state, &headers, pending, StepInput::None, Vec::new()).await
}

async fn continue_flow(
    state: &GatewayState,
    headers: &HeaderMap,
    pending: PendingAuthorization,
    input: StepInput,
    cookies: Vec<HeaderValue>,
) -> Response {
    let provider = &state.provider;
    let session = match provider.session(state.session_of(headers)).await {
        Ok(s) => s,
        Err(e) => return page_error(&e),
    };
    match provider
        .continue_authorization(pending, session.as_ref(), input)
        .await
    {
        Ok(step) => render(state, headers, step, StatusCode::OK, cookies),
        Err(e) => page_error(&e),
    }
}

/// Checks the CSRF token and opens the sealed request of a page's form.
fn open_form(
    state: &GatewayState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, PendingAuthorization), Box<Response>> {
    let form = form_body(headers, body)
        .map_err(|e| Box::new(html(StatusCode::BAD_REQUEST, pages::error(&e.description))))?;
    let provider = &state.provider;
    if !provider.check_csrf(
        cookie(headers, state.csrf_cookie_name()),
        form.get("csrf").map(String::as_str),
    ) {
        return Err(Box::new(html(
            StatusCode::FORBIDDEN,
            pages::error("the form expired or was not sent from this site: go back and try again"),
        )));
    }
    let sealed = form.get("request").map_or("", String::as_str);
    let pending = provider
        .open_pending(sealed)
        .map_err(|e| Box::new(page_error(&e)))?;
    Ok((form, pending))
}

/// `POST /login`.
pub async fn login(
    State(state): State<GatewayState>,
    RemoteIp(ip): RemoteIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending) = match open_form(&state, &headers, &body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let provider = &state.provider;
    let email = form.get("email").map_or("", String::as_str);
    let password = form.get("password").map_or("", String::as_str);
    match provider.login(email, password, ip).await {
        Ok(new) => {
            // A fresh session replaces whatever session the browser had.
            if let Err(e) = provider.end_session(state.session_of(&headers)).await {
                return page_error(&e);
            }
            let ttl = provider.config().session_ttl.as_secs();
            let cookies: Vec<HeaderValue> = state
                .set_cookie(state.session_cookie_name(), new.cookie.expose(), ttl, "Lax")
                .into_iter()
                .collect();
            match provider
                .continue_authorization(pending, Some(&new.session), StepInput::LoggedIn)
                .await
            {
                Ok(step) => render(&state, &headers, step, StatusCode::OK, cookies),
                Err(e) => page_error(&e),
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Unauthenticated | ErrorKind::QuotaExceeded | ErrorKind::InvalidInput
            ) =>
        {
            let status = if e.kind() == ErrorKind::QuotaExceeded {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut pending = pending;
            pending.login_hint = Some(email.chars().take(320).collect());
            match provider.login_again(&pending, e.to_string()) {
                Ok(step) => render(&state, &headers, step, status, Vec::new()),
                Err(e) => page_error(&e),
            }
        }
        Err(e) => page_error(&e),
    }
}

/// `POST /authorize/organization`.
pub async fn choose_tenant(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending) = match open_form(&state, &headers, &body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let tenant = match form.get("tenant_id").map(|t| t.parse()) {
        Some(Ok(t)) => t,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("choose an organization"),
            );
        }
    };
    continue_flow(
        &state,
        &headers,
        pending,
        StepInput::Tenant(tenant),
        Vec::new(),
    )
    .await
}

/// `POST /consent`.
pub async fn consent(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending) = match open_form(&state, &headers, &body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let decision = match form.get("decision").map(String::as_str) {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("`decision` must be `allow` or `deny`"),
            );
        }
    };
    continue_flow(
        &state,
        &headers,
        pending,
        StepInput::Consent(decision),
        Vec::new(),
    )
    .await
}

// ----- the back channel -----

fn client_auth(
    headers: &HeaderMap,
    form: &mut HashMap<String, String>,
    ip: Option<std::net::IpAddr>,
) -> ClientAuthentication {
    ClientAuthentication {
        authorization: header_text(headers, header::AUTHORIZATION).map(str::to_owned),
        client_id: form.remove("client_id"),
        client_secret: form.remove("client_secret"),
        client_assertion_type: form.remove("client_assertion_type"),
        client_assertion: form.remove("client_assertion"),
        remote_ip: ip,
    }
}

/// `POST /token`.
pub async fn token(
    State(state): State<GatewayState>,
    RemoteIp(ip): RemoteIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut form = match form_body(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let auth = client_auth(&headers, &mut form, ip);
    let request = TokenRequest {
        grant_type: form.remove("grant_type"),
        code: form.remove("code"),
        redirect_uri: form.remove("redirect_uri"),
        code_verifier: form.remove("code_verifier"),
        refresh_token: form.remove("refresh_token"),
        scope: form.remove("scope"),
    };
    match state.provider.token(&auth, &request).await {
        Ok(response) => (StatusCode::OK, no_store(), axum::Json(response)).into_response(),
        Err(e) => oauth_error(&e),
    }
}

/// The body of an introspection or revocation request: the client's credentials and
/// the `token` parameter.
fn token_form(
    headers: &HeaderMap,
    body: &[u8],
    ip: Option<std::net::IpAddr>,
) -> Result<(ClientAuthentication, String), OAuthError> {
    let mut form = form_body(headers, body)?;
    let auth = client_auth(headers, &mut form, ip);
    let token = form
        .remove("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    Ok((auth, token))
}

/// `POST /introspect`.
pub async fn introspect(
    State(state): State<GatewayState>,
    RemoteIp(ip): RemoteIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match token_form(&headers, &body, ip) {
        Ok((auth, token)) => state.provider.introspect(&auth, &token).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(answer) => (StatusCode::OK, no_store(), axum::Json(answer)).into_response(),
        Err(e) => oauth_error(&e),
    }
}

/// `POST /revoke`.
pub async fn revoke(
    State(state): State<GatewayState>,
    RemoteIp(ip): RemoteIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let done = match token_form(&headers, &body, ip) {
        Ok((auth, token)) => state.provider.revoke(&auth, &token).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => (StatusCode::OK, no_store()).into_response(),
        Err(e) => oauth_error(&e),
    }
}

/// `GET` or `POST /userinfo` with `Authorization: Bearer`.
pub async fn userinfo(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let bearer = header_text(&headers, header::AUTHORIZATION)
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = bearer else {
        let mut response = (StatusCode::UNAUTHORIZED, no_store()).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tenancy\""),
        );
        return response;
    };
    match state.provider.userinfo(token).await {
        Ok(claims) => (StatusCode::OK, no_store(), axum::Json(claims)).into_response(),
        Err(e) => bearer_error(&e),
    }
}

/// `GET /logout`.
pub async fn logout_get(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match parse_form(query.unwrap_or_default().as_bytes()) {
        Ok(params) => logout(&state, &headers, &params).await,
        Err(e) => html(StatusCode::BAD_REQUEST, pages::error(&e)),
    }
}

/// `POST /logout`.
pub async fn logout_post(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match form_body(&headers, &body) {
        Ok(params) => logout(&state, &headers, &params).await,
        Err(e) => html(StatusCode::BAD_REQUEST, pages::error(&e.description)),
    }
}

async fn logout(
    state: &GatewayState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Response {
    let get = |k: &str| params.get(k).map(String::as_str);
    let outcome = state
        .provider
        .logout(
            state.session_of(headers),
            get("id_token_hint"),
            get("post_logout_redirect_uri"),
            get("state"),
        )
        .await;
    let clear: Vec<HeaderValue> = state
        .set_cookie(state.session_cookie_name(), "", 0, "Lax")
        .into_iter()
        .collect();
    match outcome {
        Ok(LogoutOutcome::Redirect(to)) => with_cookies(redirect(&to), clear),
        Ok(LogoutOutcome::Done) => with_cookies(html(StatusCode::OK, pages::signed_out()), clear),
        Err(e) => page_error(&e),
    }
}

// ----- metadata -----

/// `GET /.well-known/openid-configuration` (and the RFC 8414 alias).
pub async fn discovery(State(state): State<GatewayState>) -> Response {
    public_json(state.provider.discovery())
}

/// `GET /jwks.json`.
pub async fn jwks(State(state): State<GatewayState>) -> Response {
    match serde_json::to_value(state.provider.keys().jwks()) {
        Ok(v) => public_json(v),
        Err(_) => oauth_error(&OAuthError::new(
            tenancy_core::oauth::OAuthErrorCode::ServerError,
            "cannot encode the key set",
        )),
    }
}

fn public_json(value: serde_json::Value) -> Response {
    let mut response = axum::Json(value).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `GET /readyz`: the gateway can sign tokens.
pub async fn readyz(State(state): State<GatewayState>) -> Response {
    if state.provider.keys().jwks().keys.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no signing key").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}
