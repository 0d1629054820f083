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

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tenancy_core::oauth::{Client, ClientRegistration, ClientScope};
use tenancy_core::page::PageRequest;
use tenancy_core::{ClientId, Error, TenantId};

use super::GatewayState;
use crate::http::{
    Admin, ApiResult, expected_version, json_body, json_response, no_store, parse_query,
};

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

fn query(raw: Option<String>) -> Result<HashMap<String, String>, Error> {
    parse_query(raw.as_deref())
}

fn scope_of(q: &HashMap<String, String>) -> Result<ClientScope, Error> {
    match q.get("tenant_id") {
        None => Ok(ClientScope::Global),
        Some(t) => TenantId::parse_field("tenant_id", t).map(ClientScope::Tenant),
    }
}

fn client_id(id: &str) -> Result<ClientId, Error> {
    ClientId::parse_field("id", id)
}

fn registration(body: &[u8]) -> Result<ClientRegistration, Error> {
    json_body(body, "client registration")
}

fn ok(status: StatusCode, body: Value) -> Response {
    json_response(status, body)
}

async fn create(State(state): State<GatewayState>, _: Admin, body: Bytes) -> ApiResult {
    let (client, secret) = state.provider.register_client(registration(&body)?).await?;
    let mut body = view(&client);
    if let (Some(secret), Some(map)) = (secret, body.as_object_mut()) {
        map.insert("client_secret".into(), json!(secret.expose()));
    }
    Ok(ok(StatusCode::CREATED, body))
}

async fn list(State(state): State<GatewayState>, _: Admin, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(raw)?;
    let scope = scope_of(&q)?;
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let page = PageRequest::from_token(q.get("page_token").map_or("", String::as_str), limit)?;
    let page = state.provider.list_clients(scope, &page).await?;
    Ok(ok(
        StatusCode::OK,
        json!({
            "clients": page.items.iter().map(view).collect::<Vec<_>>(),
            "next_page_token": page.next.map(|c| c.encode()),
        }),
    ))
}

async fn read(
    State(state): State<GatewayState>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let scope = scope_of(&query(raw)?)?;
    let client = state.provider.client_in(scope, client_id(&id)?).await?;
    Ok(ok(StatusCode::OK, view(&client)))
}

async fn update(
    State(state): State<GatewayState>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = query(raw)?;
    let (scope, version, id) = (scope_of(&q)?, expected_version(&q)?, client_id(&id)?);
    let registration = registration(&body)?;
    let client = state
        .provider
        .update_client(scope, id, version, registration)
        .await?;
    Ok(ok(StatusCode::OK, view(&client)))
}

async fn delete(
    State(state): State<GatewayState>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let scope = scope_of(&query(raw)?)?;
    state.provider.delete_client(scope, client_id(&id)?).await?;
    Ok((StatusCode::NO_CONTENT, no_store()).into_response())
}

async fn rotate_secret(
    State(state): State<GatewayState>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = query(raw)?;
    let (scope, version, id) = (scope_of(&q)?, expected_version(&q)?, client_id(&id)?);
    let (client, secret) = state
        .provider
        .rotate_client_secret(scope, id, version)
        .await?;
    let mut body = view(&client);
    if let Some(map) = body.as_object_mut() {
        map.insert("client_secret".into(), json!(secret.expose()));
    }
    Ok(ok(StatusCode::OK, body))
}

async fn rotate_keys(State(state): State<GatewayState>, _: Admin) -> ApiResult {
    state.provider.keys().rotate_now().await?;
    let jwks = serde_json::to_value(state.provider.keys().jwks()).unwrap_or(Value::Null);
    Ok(ok(StatusCode::OK, jwks))
}
