//! The auth gateway (HTTP, default 127.0.0.1:3000): the OAuth2 / OpenID Connect
//! provider of [`tenancy_core::oauth`] as an axum router, with its login, organization
//! and consent pages and the client admin API.
//!
//! | path | what |
//! |---|---|
//! | `GET /authorize` | authorization endpoint (code + PKCE) |
//! | `POST /login`, `POST /authorize/organization`, `POST /consent` | the pages' forms |
//! | `POST /token` | token endpoint |
//! | `POST /introspect`, `POST /revoke` | RFC 7662, RFC 7009 |
//! | `GET, POST /userinfo` | OpenID Connect userinfo |
//! | `GET, POST /logout` | RP-initiated logout |
//! | `GET /.well-known/openid-configuration`, `/.well-known/oauth-authorization-server` | discovery |
//! | `GET /jwks.json` | the signing keys |
//! | `/admin/clients...` | client registration (admin token) |
//! | `GET /healthz`, `GET /readyz` | health |
//!
//! Handlers parse, call one [`Provider`] method and map the result; protocol errors
//! become responses in [`errors`].

mod admin;
pub mod errors;
mod handlers;
pub mod pages;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tenancy_core::oauth::Provider;
use tokio::net::TcpListener;

use crate::{AdminAuth, Error};

/// Bodies larger than this are refused (413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every gateway handler shares.
#[derive(Clone)]
pub struct GatewayState {
    /// The provider engine.
    pub provider: Arc<Provider>,
    /// Guards the admin API.
    pub admin: AdminAuth,
    /// Whether cookies carry `Secure` (and the `__Host-` prefix). Off only in
    /// insecure development mode, for plain-http loopback testing.
    pub secure_cookies: bool,
}

impl axum::extract::FromRef<GatewayState> for AdminAuth {
    fn from_ref(state: &GatewayState) -> Self {
        state.admin.clone()
    }
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("provider", &self.provider)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/authorize", get(handlers::authorize))
        .route("/login", post(handlers::login))
        .route("/authorize/organization", post(handlers::choose_tenant))
        .route("/consent", post(handlers::consent))
        .route("/token", post(handlers::token))
        .route("/introspect", post(handlers::introspect))
        .route("/revoke", post(handlers::revoke))
        .route(
            "/userinfo",
            get(handlers::userinfo).post(handlers::userinfo),
        )
        .route(
            "/logout",
            get(handlers::logout_get).post(handlers::logout_post),
        )
        .route(
            "/.well-known/openid-configuration",
            get(handlers::discovery),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(handlers::discovery),
        )
        .route("/jwks.json", get(handlers::jwks))
        .route("/healthz", get(crate::http::healthz))
        .route("/readyz", get(handlers::readyz))
        .nest("/admin", admin::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` completes, refreshing the signing
/// keys (rotation) every minute meanwhile.
pub async fn run_gateway(
    listener: TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let keys = Arc::clone(state.provider.keys());
    let rotation = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = %e, "signing key refresh failed");
            }
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Http(source.to_string()));
    rotation.abort();
    result
}

/// The caller's IP address, when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteIp(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RemoteIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}
