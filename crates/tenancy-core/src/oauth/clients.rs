//! Client registration (the admin API) and client authentication at the token,
//! introspection and revocation endpoints.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::{OAuthError, OAuthResult};
use super::model::{
    AuthMethod, Client, ClientKind, GrantType, MAX_REDIRECT_URIS, RedirectUri, Scopes, SecretDigest,
};
use super::provider::Provider;
use super::store::ClientScope;
use crate::error::{Error, ErrorKind, Result};
use crate::identity::SecretToken;
use crate::ids::{ClientId, TenantId};
use crate::page::{Page, PageRequest};

/// The assertion type of `private_key_jwt` (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client secret, shown once at registration or rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

impl ClientSecret {
    /// The secret, to hand to the client's owner.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a client registration asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistration {
    /// The owning tenant; `None` registers a global client.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// A name shown on the consent page (1 to 200 characters).
    pub name: String,
    /// Confidential (default) or public.
    #[serde(default)]
    pub public: bool,
    /// How it authenticates: `client_secret_basic` (default for confidential clients),
    /// `client_secret_post`, `private_key_jwt`; public clients use `none`.
    #[serde(default)]
    pub auth_method: Option<AuthMethod>,
    /// Its public keys (`private_key_jwt`), as a JWK Set.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Redirect URIs (required for the authorization-code grant).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants; default `authorization_code` and `refresh_token`.
    #[serde(default)]
    pub grant_types: Vec<GrantType>,
    /// Scopes it may ask for, space-delimited; default `openid profile email`.
    #[serde(default)]
    pub scope: Option<String>,
}

/// What presented itself as a client at a token-endpoint-like call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuthentication {
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// `client_id` from the body.
    pub client_id: Option<String>,
    /// `client_secret` from the body.
    pub client_secret: Option<String>,
    /// `client_assertion_type` from the body.
    pub client_assertion_type: Option<String>,
    /// `client_assertion` from the body.
    pub client_assertion: Option<String>,
    /// The caller's address, for rate limiting failures.
    pub remote_ip: Option<IpAddr>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

impl Provider {
    /// Registers a client. Confidential clients using a secret get one, returned here
    /// only. `InvalidInput` naming the field for any inconsistency; nothing is stored then.
    pub async fn register_client(
        &self,
        registration: ClientRegistration,
    ) -> Result<(Client, Option<ClientSecret>)> {
        if let Some(tenant) = registration.tenant_id {
            self.identity.tenant(tenant).await?;
        }
        let now = self.now();
        let mut client = self.build_client(ClientId::new(), registration)?;
        let secret = self.fresh_secret_for(&mut client)?;
        client.created_at = now;
        client.updated_at = now;
        self.store.insert_client(&client).await?;
        Ok((client, secret))
    }

    /// Replaces a client's settings (not its id, tenant or secret) if `expected_version`
    /// is current.
    pub async fn update_client(
        &self,
        scope: ClientScope,
        id: ClientId,
        expected_version: i64,
        registration: ClientRegistration,
    ) -> Result<Client> {
        let current = self.client_at(scope, id, expected_version).await?;
        if registration.tenant_id != current.tenant_id {
            return Err(Error::invalid(
                "tenant_id",
                "a client cannot move between tenants",
            ));
        }
        let mut client = self.build_client(id, registration)?;
        client.secret_digest = match client.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => current.secret_digest,
            _ => None,
        };
        if matches!(
            client.auth_method,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        ) && client.secret_digest.is_none()
        {
            return Err(Error::invalid(
                "auth_method",
                "switching to a secret method needs a secret: rotate it after the update",
            ));
        }
        client.created_at = current.created_at;
        client.updated_at = self.now();
        client.version = current.version;
        let updated = self.store.update_client(scope, &client).await?;
        self.forget_client(id);
        Ok(updated)
    }

    /// Gives a confidential client a new secret, returned only here; the old one stops
    /// working at once.
    pub async fn rotate_client_secret(
        &self,
        scope: ClientScope,
        id: ClientId,
        expected_version: i64,
    ) -> Result<(Client, ClientSecret)> {
        let mut client = self.client_at(scope, id, expected_version).await?;
        if client.kind == ClientKind::Public || client.auth_method == AuthMethod::PrivateKeyJwt {
            return Err(Error::invalid(
                "auth_method",
                "this client does not use a secret",
            ));
        }
        let secret = self
            .fresh_secret_for(&mut client)?
            .ok_or_else(|| Error::Internal("secret method without a secret".into()))?;
        client.updated_at = self.now();
        let updated = self.store.update_client(scope, &client).await?;
        self.forget_client(id);
        Ok((updated, secret))
    }

    /// Deletes a client with everything issued to it.
    pub async fn delete_client(&self, scope: ClientScope, id: ClientId) -> Result<()> {
        self.store.delete_client(scope, id).await?;
        self.forget_client(id);
        Ok(())
    }

    /// The client, if it is in `scope`.
    pub async fn client_in(&self, scope: ClientScope, id: ClientId) -> Result<Client> {
        let client = self.store.client(id).await?;
        if client.tenant_id != scope.tenant() {
            return Err(Error::not_found("client", id));
        }
        Ok(client)
    }

    /// The client of `scope`, if `expected_version` is still its version (`Conflict`
    /// otherwise).
    async fn client_at(
        &self,
        scope: ClientScope,
        id: ClientId,
        expected_version: i64,
    ) -> Result<Client> {
        let client = self.client_in(scope, id).await?;
        if client.version != expected_version {
            return Err(Error::stale("client", id, expected_version));
        }
        Ok(client)
    }

    /// A page of the clients of `scope`.
    pub async fn list_clients(
        &self,
        scope: ClientScope,
        page: &PageRequest,
    ) -> Result<Page<Client>> {
        self.store.list_clients(scope, page).await
    }

    fn build_client(&self, id: ClientId, r: ClientRegistration) -> Result<Client> {
        let name = r.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let kind = if r.public {
            ClientKind::Public
        } else {
            ClientKind::Confidential
        };
        let auth_method = match (kind, r.auth_method) {
            (ClientKind::Public, None | Some(AuthMethod::None)) => AuthMethod::None,
            (ClientKind::Public, Some(m)) => {
                return Err(Error::invalid(
                    "auth_method",
                    format!("a public client cannot use `{}`", m.as_str()),
                ));
            }
            (ClientKind::Confidential, None) => AuthMethod::ClientSecretBasic,
            (ClientKind::Confidential, Some(AuthMethod::None)) => {
                return Err(Error::invalid(
                    "auth_method",
                    "a confidential client must authenticate",
                ));
            }
            (ClientKind::Confidential, Some(m)) => m,
        };
        let jwks = match (auth_method, r.jwks) {
            (AuthMethod::PrivateKeyJwt, Some(jwks)) => {
                check_client_jwks(&jwks)?;
                Some(jwks)
            }
            (AuthMethod::PrivateKeyJwt, None) => {
                return Err(Error::invalid(
                    "jwks",
                    "`private_key_jwt` needs the client's public keys",
                ));
            }
            (_, Some(_)) => {
                return Err(Error::invalid(
                    "jwks",
                    "only `private_key_jwt` clients register keys",
                ));
            }
            (_, None) => None,
        };
        let mut grant_types = if r.grant_types.is_empty() {
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
        } else {
            r.grant_types
        };
        grant_types.sort();
        grant_types.dedup();
        if grant_types.contains(&GrantType::ClientCredentials) {
            if kind == ClientKind::Public {
                return Err(Error::invalid(
                    "grant_types",
                    "a public client cannot use `client_credentials`",
                ));
            }
            if r.tenant_id.is_none() {
                return Err(Error::invalid(
                    "grant_types",
                    "`client_credentials` needs a tenant client: its tokens act in the client's tenant",
                ));
            }
        }
        if r.redirect_uris.len() > MAX_REDIRECT_URIS
            || r.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS
        {
            return Err(Error::invalid(
                "redirect_uris",
                format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
            ));
        }
        let redirect_uris = r
            .redirect_uris
            .iter()
            .map(|u| RedirectUri::parse(u))
            .collect::<Result<Vec<_>>>()?;
        let post_logout_redirect_uris = r
            .post_logout_redirect_uris
            .iter()
            .map(|u| {
                RedirectUri::parse(u)
                    .map_err(|e| Error::invalid("post_logout_redirect_uris", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            return Err(Error::invalid(
                "redirect_uris",
                "the `authorization_code` grant needs at least one redirect URI",
            ));
        }
        let scopes = Scopes::parse(r.scope.as_deref().unwrap_or("openid profile email"))?;
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        Ok(Client {
            id,
            tenant_id: r.tenant_id,
            name: name.to_owned(),
            kind,
            auth_method,
            secret_digest: None,
            jwks,
            redirect_uris,
            post_logout_redirect_uris,
            grant_types,
            scopes,
            created_at: epoch,
            updated_at: epoch,
            version: 1,
        })
    }

    fn fresh_secret_for(&self, client: &mut Client) -> Result<Option<ClientSecret>> {
        match client.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
                let secret = SecretToken::generate()?.expose().to_owned();
                client.secret_digest = Some(SecretDigest(self.secret_digest(&secret)));
                Ok(Some(ClientSecret(secret)))
            }
            AuthMethod::PrivateKeyJwt | AuthMethod::None => Ok(None),
        }
    }

    /// Authenticates the client of a token, introspection or revocation request.
    /// Failures are `invalid_client` (the server answers 401 with `WWW-Authenticate`);
    /// repeated failures per client id and per IP are refused with `slow_down`.
    pub async fn authenticate_client(
        &self,
        auth: &ClientAuthentication,
    ) -> OAuthResult<Arc<Client>> {
        let presented = presented_client(auth)?;
        let quota = self.config.client_auth_quota;
        let id_key = format!("client-auth:id:{}", presented.id_text);
        let ip_key = auth.remote_ip.map(|ip| format!("client-auth:ip:{ip}"));
        self.blocked(&id_key, quota).await?;
        if let Some(ip_key) = &ip_key {
            self.blocked(ip_key, quota).await?;
        }
        match self.check_client(&presented).await {
            Ok(client) => Ok(client),
            Err(e) => {
                if e.code == super::error::OAuthErrorCode::InvalidClient {
                    self.count_failure(&id_key, quota).await?;
                    if let Some(ip_key) = &ip_key {
                        self.count_failure(ip_key, quota).await?;
                    }
                }
                Err(e)
            }
        }
    }

    async fn check_client(&self, presented: &Presented) -> OAuthResult<Arc<Client>> {
        let fail = || OAuthError::invalid_client("client authentication failed");
        let id = presented.id_text.parse::<ClientId>().map_err(|_| fail())?;
        let client = match self.cached_client(id).await {
            Ok(client) => client,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(fail()),
            Err(e) => return Err(e.into()),
        };
        if client.auth_method != presented.method {
            return Err(OAuthError::invalid_client(format!(
                "this client authenticates with `{}`",
                client.auth_method.as_str()
            )));
        }
        match &presented.credential {
            Credential::None => Ok(client),
            Credential::Secret(secret) => {
                let digest = self.secret_digest(secret);
                let ok = client
                    .secret_digest
                    .is_some_and(|stored| bool::from(stored.0.ct_eq(&digest)));
                if ok { Ok(client) } else { Err(fail()) }
            }
            Credential::Assertion(assertion) => {
                self.check_assertion(&client, assertion).await?;
                Ok(client)
            }
        }
    }

    async fn check_assertion(&self, client: &Client, assertion: &str) -> OAuthResult<()> {
        let fail =
            |why: &str| OAuthError::invalid_client(format!("client assertion refused: {why}"));
        let jwks = client
            .jwks
            .as_ref()
            .ok_or_else(|| fail("no registered keys"))?;
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| fail("malformed"))?;
        let jwk = select_jwk(jwks, header.kid.as_deref()).ok_or_else(|| fail("unknown key"))?;
        if !matches!(
            header.alg,
            jsonwebtoken::Algorithm::ES256
                | jsonwebtoken::Algorithm::RS256
                | jsonwebtoken::Algorithm::EdDSA
        ) {
            return Err(fail("algorithm not allowed"));
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| fail("unusable key"))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[self.config.endpoint("/token"), self.config.issuer.clone()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
            .map_err(|e| fail(&format!("{e}")))?;
        let claims = data.claims;
        let id = client.id.to_string();
        if claims.iss != id || claims.sub != id {
            return Err(fail("`iss` and `sub` must be the client id"));
        }
        let now = self.now();
        let expires =
            chrono::DateTime::from_timestamp(claims.exp, 0).ok_or_else(|| fail("bad `exp`"))?;
        if expires - now > chrono::Duration::minutes(10) {
            return Err(fail("lives longer than 10 minutes"));
        }
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(fail("needs a `jti`"));
        }
        if !self
            .store
            .record_assertion(client.id, &claims.jti, expires)
            .await?
        {
            return Err(fail("`jti` was used before"));
        }
        Ok(())
    }
}

enum Credential {
    None,
    Secret(String),
    Assertion(String),
}

struct Presented {
    id_text: String,
    method: AuthMethod,
    credential: Credential,
}

fn presented_client(auth: &ClientAuthentication) -> OAuthResult<Presented> {
    let basic = match auth.authorization.as_deref() {
        Some(h) => Some(parse_basic(h)?),
        None => None,
    };
    let assertion = match (&auth.client_assertion_type, &auth.client_assertion) {
        (Some(t), Some(a)) if t == JWT_BEARER_ASSERTION => Some(a.clone()),
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_client(
                "unsupported `client_assertion_type`",
            ));
        }
        (None, None) => None,
        _ => {
            return Err(OAuthError::invalid_request(
                "`client_assertion` and `client_assertion_type` go together",
            ));
        }
    };
    let methods = usize::from(basic.is_some())
        + usize::from(auth.client_secret.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    if let Some((id, secret)) = basic {
        if auth
            .client_id
            .as_ref()
            .is_some_and(|body_id| *body_id != id)
        {
            return Err(OAuthError::invalid_request(
                "`client_id` differs from the authenticated client",
            ));
        }
        return Ok(Presented {
            id_text: id,
            method: AuthMethod::ClientSecretBasic,
            credential: Credential::Secret(secret),
        });
    }
    if let Some(assertion) = assertion {
        let id = match &auth.client_id {
            Some(id) => id.clone(),
            None => assertion_subject(&assertion)
                .ok_or_else(|| OAuthError::invalid_client("client assertion refused: malformed"))?,
        };
        return Ok(Presented {
            id_text: id,
            method: AuthMethod::PrivateKeyJwt,
            credential: Credential::Assertion(assertion),
        });
    }
    let id = auth
        .client_id
        .clone()
        .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
    match &auth.client_secret {
        Some(secret) => Ok(Presented {
            id_text: id,
            method: AuthMethod::ClientSecretPost,
            credential: Credential::Secret(secret.clone()),
        }),
        None => Ok(Presented {
            id_text: id,
            method: AuthMethod::None,
            credential: Credential::None,
        }),
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(header: &str) -> OAuthResult<(String, String)> {
    let bad = || OAuthError::invalid_client("malformed `Authorization` header");
    let (scheme, value) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = STANDARD.decode(value.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(bad)
    };
    Ok((unescape(id)?, unescape(secret)?))
}

fn assertion_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("sub")?.as_str().map(str::to_owned)
}

fn select_jwk(jwks: &serde_json::Value, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
    let keys = jwks.get("keys")?.as_array()?;
    let chosen = match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid))?,
        None if keys.len() == 1 => keys.first()?,
        None => return None,
    };
    serde_json::from_value(chosen.clone()).ok()
}

fn check_client_jwks(jwks: &serde_json::Value) -> Result<()> {
    let keys = jwks.get("keys").and_then(|k| k.as_array()).ok_or_else(|| {
        Error::invalid("jwks", "must be a JWK Set: an object with a `keys` array")
    })?;
    if keys.is_empty() || keys.len() > 16 {
        return Err(Error::invalid("jwks", "must hold 1 to 16 keys"));
    }
    for key in keys {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone())
            .map_err(|e| Error::invalid("jwks", format!("a key is not a valid JWK: {e}")))?;
        if jsonwebtoken::DecodingKey::from_jwk(&jwk).is_err() {
            return Err(Error::invalid("jwks", "a key cannot verify signatures"));
        }
        if key.get("d").is_some() {
            return Err(Error::invalid("jwks", "register public keys only"));
        }
    }
    Ok(())
}
