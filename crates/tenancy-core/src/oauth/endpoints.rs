//! Introspection (RFC 7662), revocation (RFC 7009), userinfo, discovery (OpenID Connect
//! Discovery, RFC 8414) and RP-initiated logout.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::authorize::with_query;
use super::clients::ClientAuthentication;
use super::error::{OAuthError, OAuthResult};
use super::model::Client;
use super::provider::{Provider, parse_handle};
use crate::error::{ErrorKind, Result};
use crate::ids::{ClientId, TenantId, UserId};
use crate::token::{AccessClaims, IdTokenClaims};

/// An introspection answer: `{"active": false}` alone, or the token's claims.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Introspection {
    /// Whether the token is active.
    pub active: bool,
    /// The claims of an active token.
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

impl Introspection {
    fn inactive() -> Self {
        Self {
            active: false,
            claims: Map::new(),
        }
    }
}

/// Where to send the browser after logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// To the client's registered post-logout redirect URI.
    Redirect(String),
    /// Show a "signed out" page.
    Done,
}

impl Provider {
    /// Verifies one of our own access tokens: signature, issuer, expiry, and that neither
    /// it nor its grant was revoked.
    pub async fn verify_access_token(&self, token: &str) -> OAuthResult<AccessClaims> {
        let claims: AccessClaims = self
            .verify_own(token, true)
            .await
            .map_err(|_| OAuthError::invalid_token("the access token is invalid or expired"))?;
        if claims.iss != self.config.issuer {
            return Err(OAuthError::invalid_token(
                "the access token is invalid or expired",
            ));
        }
        if self
            .store
            .is_access_token_revoked(claims.tenant_id, &claims.jti)
            .await?
        {
            return Err(OAuthError::invalid_token("the access token was revoked"));
        }
        if let Some(gid) = claims.gid
            && self.live_grant(claims.tenant_id, gid).await?.is_none()
        {
            return Err(OAuthError::invalid_token("the access token was revoked"));
        }
        Ok(claims)
    }

    /// Introspects a token for an authenticated client. Inactive, expired, revoked,
    /// unknown tokens and tokens of a tenant the client does not serve are all just
    /// `{"active": false}`.
    pub async fn introspect(
        &self,
        auth: &ClientAuthentication,
        token: &str,
    ) -> OAuthResult<Introspection> {
        let client = self.authenticate_client(auth).await?;
        if client.kind == super::model::ClientKind::Public {
            return Err(OAuthError::invalid_client(
                "public clients cannot introspect",
            ));
        }
        if let Some((tenant, hash)) = parse_handle(token) {
            if !serves(&client, tenant) {
                return Ok(Introspection::inactive());
            }
            return self.introspect_refresh(tenant, &hash).await;
        }
        let Ok(claims) = self.verify_access_token(token).await else {
            return Ok(Introspection::inactive());
        };
        if !serves(&client, claims.tenant_id) {
            return Ok(Introspection::inactive());
        }
        let mut out = match serde_json::to_value(&claims) {
            Ok(Value::Object(map)) => map,
            _ => return Ok(Introspection::inactive()),
        };
        out.insert("token_type".into(), json!("Bearer"));
        Ok(Introspection {
            active: true,
            claims: out,
        })
    }

    async fn introspect_refresh(
        &self,
        tenant: TenantId,
        hash: &crate::identity::TokenHash,
    ) -> OAuthResult<Introspection> {
        let token = match self.store.refresh_token(tenant, hash).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Introspection::inactive()),
            Err(e) => return Err(e.into()),
        };
        if token.used_at.is_some() || token.expires_at <= self.now() {
            return Ok(Introspection::inactive());
        }
        let Some(grant) = self.live_grant(tenant, token.grant_id).await? else {
            return Ok(Introspection::inactive());
        };
        let mut claims = Map::new();
        claims.insert("token_type".into(), json!("refresh_token"));
        claims.insert("scope".into(), json!(token.scope.to_string()));
        claims.insert("client_id".into(), json!(token.client_id.to_string()));
        if let Some(user) = grant.user_id {
            claims.insert("sub".into(), json!(user.to_string()));
        }
        claims.insert("tenant_id".into(), json!(tenant.to_string()));
        claims.insert("exp".into(), json!(token.expires_at.timestamp()));
        claims.insert("iat".into(), json!(token.issued_at.timestamp()));
        claims.insert("iss".into(), json!(self.config.issuer));
        Ok(Introspection {
            active: true,
            claims,
        })
    }

    /// Revokes a token of the authenticated client (RFC 7009): a refresh token revokes
    /// its whole grant; an access token is revoked until it expires (and its grant with
    /// it). Unknown tokens and tokens of other clients are ignored, as the RFC asks.
    pub async fn revoke(&self, auth: &ClientAuthentication, token: &str) -> OAuthResult<()> {
        let client = self.authenticate_client(auth).await?;
        let now = self.now();
        if let Some((tenant, hash)) = parse_handle(token) {
            match self.store.refresh_token(tenant, &hash).await {
                Ok(t) if t.client_id == client.id => {
                    self.store.revoke_grant(tenant, t.grant_id, now).await?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        let Ok(claims) = self.verify_own::<AccessClaims>(token, true).await else {
            return Ok(());
        };
        if claims.client_id != client.id {
            return Ok(());
        }
        let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
        self.store
            .revoke_access_token(claims.tenant_id, &claims.jti, expires)
            .await?;
        if let Some(gid) = claims.gid {
            self.revoke_grant_if_any(claims.tenant_id, gid).await?;
        }
        Ok(())
    }

    /// The userinfo claims for a bearer access token (OpenID Connect Core §5.3).
    pub async fn userinfo(&self, bearer: &str) -> OAuthResult<Map<String, Value>> {
        let claims = self.verify_access_token(bearer).await?;
        let scopes: Vec<&str> = claims.scope.split(' ').collect();
        if !scopes.contains(&"openid") {
            return Err(OAuthError::new(
                super::error::OAuthErrorCode::InvalidToken,
                "the token was not granted `openid`",
            ));
        }
        let user: UserId = claims
            .sub
            .parse()
            .map_err(|_| OAuthError::invalid_token("the token does not belong to a user"))?;
        let profile = match self.identity.user(user).await {
            Ok(u) => u,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(OAuthError::invalid_token("the user no longer exists"));
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Map::new();
        out.insert("sub".into(), json!(claims.sub));
        out.insert("tenant_id".into(), json!(claims.tenant_id.to_string()));
        out.insert("roles".into(), json!(claims.roles));
        if scopes.contains(&"email") {
            out.insert("email".into(), json!(profile.email.as_str()));
            out.insert("email_verified".into(), json!(profile.email_verified));
        }
        if scopes.contains(&"profile") {
            out.insert("name".into(), json!(profile.display_name.as_str()));
        }
        Ok(out)
    }

    /// RP-initiated logout: ends the session and, when the ID-token hint names a client
    /// and the post-logout redirect URI is registered for it, sends the browser there.
    /// A redirect URI without a valid hint, or not registered, is refused.
    pub async fn logout(
        &self,
        session_cookie: Option<&str>,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: Option<&str>,
        state: Option<&str>,
    ) -> Result<LogoutOutcome> {
        let hint = match id_token_hint {
            Some(h) => Some(
                self.verify_own::<IdTokenClaims>(h, false)
                    .await
                    .ok()
                    .filter(|c| c.iss == self.config.issuer)
                    .ok_or_else(|| {
                        crate::error::Error::invalid(
                            "id_token_hint",
                            "is not an ID token of this provider",
                        )
                    })?,
            ),
            None => None,
        };
        let target = match post_logout_redirect_uri {
            None => None,
            Some(uri) => {
                let hint = hint.as_ref().ok_or_else(|| {
                    crate::error::Error::invalid(
                        "id_token_hint",
                        "is required with `post_logout_redirect_uri`",
                    )
                })?;
                let client_id: ClientId =
                    hint.aud.iter().next().unwrap_or("").parse().map_err(|_| {
                        crate::error::Error::invalid("id_token_hint", "does not name a client")
                    })?;
                let client = self.cached_client(client_id).await?;
                if !client
                    .post_logout_redirect_uris
                    .iter()
                    .any(|r| r.as_str() == uri)
                {
                    return Err(crate::error::Error::invalid(
                        "post_logout_redirect_uri",
                        "is not registered for this client",
                    ));
                }
                Some(uri.to_owned())
            }
        };
        self.end_session(session_cookie).await?;
        Ok(match target {
            Some(uri) => {
                let params: Vec<(&str, String)> =
                    state.map(|s| ("state", s.to_owned())).into_iter().collect();
                LogoutOutcome::Redirect(if params.is_empty() {
                    uri
                } else {
                    with_query(&uri, &params)
                })
            }
            None => LogoutOutcome::Done,
        })
    }

    /// The OpenID Provider metadata (`/.well-known/openid-configuration`).
    #[must_use]
    pub fn discovery(&self) -> Value {
        let e = |p: &str| self.config.endpoint(p);
        let alg = self.keys.policy().algorithm.as_str();
        json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": e("/authorize"),
            "token_endpoint": e("/token"),
            "userinfo_endpoint": e("/userinfo"),
            "jwks_uri": e("/jwks.json"),
            "introspection_endpoint": e("/introspect"),
            "revocation_endpoint": e("/revoke"),
            "end_session_endpoint": e("/logout"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "email", "email_verified", "name", "tenant_id"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        })
    }
}

/// Whether a client may see tokens of `tenant`: its own tenant's, or any for a global client.
fn serves(client: &Client, tenant: TenantId) -> bool {
    client.tenant_id.is_none_or(|t| t == tenant)
}
