//! The admin API of the gateway (`Authorization: Bearer <admin token>`): client
//! registration and signing-key rotation.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /admin/clients` | register (the secret is in the answer, once) |
//! | `GET /admin/clients?tenant_id=&page_token=&limit=` | list a tenant's (or the global) clients |
//! | `GET /admin/clients/{id}?tenant_id=` | one client |
//! | `PUT /admin/clients/{id}?tenant_id=&expected_version=` | replace its settings |
//! | `DELETE /admin/clients/{id}?tenant_id=` | delete it and all it was issued |
//! | `POST /admin/clients/{id}/secret?tenant_id=&expected_version=` | new secret |
//! | `POST /admin/keys/rotate` | rotate the signing key now |
//!
//! The input helpers return the error response itself, answered at once, as axum
//! handlers do.
#![expect(
    clippy::result_large_err,
    reason = "the input helpers' error is the response to answer with"
)]

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tenancy_core::oauth::{Client, ClientRegistration, ClientScope};
use tenancy_core::page::PageRequest;
use tenancy_core::{ClientId, Error, TenantId};

use super::GatewayState;
use super::errors::{api_error, no_store};
use super::handlers::parse_form;

pub(super) fn router() -> Router<GatewayState> {
    Router::new()
        .route("/clients", post(create).get(list))
        .route("/clients/{id}", get(read).put(update).delete(delete))
        .route("/clients/{id}/secret", post(rotate_secret))
        .route("/keys/rotate", post(rotate_keys))
}

/// A client as the API shows it: everything but the secret digest.
fn view(client: &Client) -> Value {
    json!({
        "id": client.id,
        "tenant_id": client.tenant_id,
        "name": client.name,
        "kind": client.kind,
        "auth_method": client.auth_method,
        "jwks": client.jwks,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "scope": client.scopes,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
        "version": client.version,
    })
}

fn authorize(state: &GatewayState, headers: &HeaderMap) -> Result<(), Response> {
    state
        .admin
        .check_authorization(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .map_err(|e| api_error(&e))
}

fn query(raw: Option<String>) -> Result<HashMap<String, String>, Response> {
    parse_form(raw.unwrap_or_default().as_bytes())
        .map_err(|e| api_error(&Error::invalid("query", e)))
}

fn scope_of(q: &HashMap<String, String>) -> Result<ClientScope, Response> {
    match q.get("tenant_id") {
        None => Ok(ClientScope::Global),
        Some(t) => TenantId::parse_field("tenant_id", t)
            .map(ClientScope::Tenant)
            .map_err(|e| api_error(&e)),
    }
}

fn version_of(q: &HashMap<String, String>) -> Result<i64, Response> {
    q.get("expected_version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            api_error(&Error::invalid(
                "expected_version",
                "is required: the version you read",
            ))
        })
}

fn client_id(id: &str) -> Result<ClientId, Response> {
    ClientId::parse_field("id", id).map_err(|e| api_error(&e))
}

fn registration(body: &[u8]) -> Result<ClientRegistration, Response> {
    serde_json::from_slice(body).map_err(|e| {
        api_error(&Error::invalid(
            "body",
            format!("not a valid client registration: {e}"),
        ))
    })
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, no_store(), axum::Json(body)).into_response()
}

async fn create(State(state): State<GatewayState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    let registration = match registration(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match state.provider.register_client(registration).await {
        Ok((client, secret)) => {
            let mut body = view(&client);
            if let (Some(secret), Some(map)) = (secret, body.as_object_mut()) {
                map.insert("client_secret".into(), json!(secret.expose()));
            }
            ok(StatusCode::CREATED, body)
        }
        Err(e) => api_error(&e),
    }
}

async fn list(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        authorize(&state, &headers)?;
        let q = query(raw)?;
        let scope = scope_of(&q)?;
        let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let page = PageRequest::from_token(q.get("page_token").map_or("", String::as_str), limit)
            .map_err(|e| api_error(&e))?;
        let page = state
            .provider
            .list_clients(scope, &page)
            .await
            .map_err(|e| api_error(&e))?;
        Ok::<_, Response>(ok(
            StatusCode::OK,
            json!({
                "clients": page.items.iter().map(view).collect::<Vec<_>>(),
                "next_page_token": page.next.map(|c| c.encode()),
            }),
        ))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn read(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        authorize(&state, &headers)?;
        let scope = scope_of(&query(raw)?)?;
        let client = state
            .provider
            .client_in(scope, client_id(&id)?)
            .await
            .map_err(|e| api_error(&e))?;
        Ok::<_, Response>(ok(StatusCode::OK, view(&client)))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn update(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let result = async {
        authorize(&state, &headers)?;
        let q = query(raw)?;
        let (scope, version, id) = (scope_of(&q)?, version_of(&q)?, client_id(&id)?);
        let registration = registration(&body)?;
        let client = state
            .provider
            .update_client(scope, id, version, registration)
            .await
            .map_err(|e| api_error(&e))?;
        Ok::<_, Response>(ok(StatusCode::OK, view(&client)))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn delete(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        authorize(&state, &headers)?;
        let scope = scope_of(&query(raw)?)?;
        state
            .provider
            .delete_client(scope, client_id(&id)?)
            .await
            .map_err(|e| api_error(&e))?;
        Ok::<_, Response>((StatusCode::NO_CONTENT, no_store()).into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn rotate_secret(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        authorize(&state, &headers)?;
        let q = query(raw)?;
        let (scope, version, id) = (scope_of(&q)?, version_of(&q)?, client_id(&id)?);
        let (client, secret) = state
            .provider
            .rotate_client_secret(scope, id, version)
            .await
            .map_err(|e| api_error(&e))?;
        let mut body = view(&client);
        if let Some(map) = body.as_object_mut() {
            map.insert("client_secret".into(), json!(secret.expose()));
        }
        Ok::<_, Response>(ok(StatusCode::OK, body))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn rotate_keys(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    match state.provider.keys().rotate_now().await {
        Ok(()) => ok(
            StatusCode::OK,
            serde_json::to_value(state.provider.keys().jwks()).unwrap_or(Value::Null),
        ),
        Err(e) => api_error(&e),
    }
}
