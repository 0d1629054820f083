//! The token endpoint: the `authorization_code` (with PKCE), `client_credentials` and
//! `refresh_token` grants. The password grant is refused (RFC 9700 §2.4).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::authorize::to_chrono;
use super::clients::ClientAuthentication;
use super::error::{OAuthError, OAuthErrorCode, OAuthResult};
use super::model::{
    Client, ClientKind, CodeRedemption, Grant, GrantType, RefreshRotation, RefreshToken, Scopes,
};
use super::provider::{Provider, new_handle, parse_handle};
use crate::error::ErrorKind;
use crate::ids::{GrantId, TenantId, UserId};
use crate::token::{AccessClaims, IdTokenClaims, TYP_ACCESS_TOKEN, TYP_ID_TOKEN, at_hash};

/// The body of a token request (besides client authentication).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenRequest {
    /// The grant type.
    pub grant_type: Option<String>,
    /// `authorization_code`: the code.
    pub code: Option<String>,
    /// `authorization_code`: the redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier.
    pub code_verifier: Option<String>,
    /// `refresh_token`: the refresh token.
    pub refresh_token: Option<String>,
    /// `client_credentials` and `refresh_token`: the scopes wanted (may only narrow).
    pub scope: Option<String>,
}

/// A successful token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (a JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token, if the client may refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scopes.
    pub scope: String,
    /// The ID token, when `openid` was granted to a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Who the tokens are for.
struct Issue<'a> {
    client: &'a Client,
    tenant: TenantId,
    user: Option<UserId>,
    scope: Scopes,
    grant: Option<GrantId>,
    auth_time: Option<DateTime<Utc>>,
    nonce: Option<String>,
}

impl Provider {
    /// Answers a token request.
    pub async fn token(
        &self,
        auth: &ClientAuthentication,
        request: &TokenRequest,
    ) -> OAuthResult<TokenResponse> {
        let grant_type = request
            .grant_type
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("`grant_type` is required"))?;
        let grant = match grant_type {
            "authorization_code" => GrantType::AuthorizationCode,
            "client_credentials" => GrantType::ClientCredentials,
            "refresh_token" => GrantType::RefreshToken,
            "password" => {
                return Err(OAuthError::new(
                    OAuthErrorCode::UnsupportedGrantType,
                    "the password grant is not supported (RFC 9700)",
                ));
            }
            other => {
                return Err(OAuthError::new(
                    OAuthErrorCode::UnsupportedGrantType,
                    format!("grant type `{}` is not supported", other.escape_default()),
                ));
            }
        };
        let client = self.authenticate_client(auth).await?;
        if !client.grant_types.contains(&grant) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                format!("this client may not use `{}`", grant.as_str()),
            ));
        }
        match grant {
            GrantType::AuthorizationCode => self.redeem_code(&client, request).await,
            GrantType::ClientCredentials => self.client_credentials(&client, request).await,
            GrantType::RefreshToken => self.refresh(&client, request).await,
        }
    }

    async fn redeem_code(
        &self,
        client: &Client,
        request: &TokenRequest,
    ) -> OAuthResult<TokenResponse> {
        let code = request
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("`code` is required"))?;
        let redirect_uri = request
            .redirect_uri
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("`redirect_uri` is required"))?;
        let invalid = || OAuthError::invalid_grant("the code is invalid, expired or already used");
        let (tenant, hash) = parse_handle(code).ok_or_else(invalid)?;
        let record = match self.store.redeem_code(tenant, &hash).await? {
            CodeRedemption::Redeemed(record) => record,
            CodeRedemption::AlreadyRedeemed(record) => {
                // RFC 6749 §4.1.2: a reused code revokes what it issued.
                self.revoke_grant_if_any(tenant, record.grant_id).await?;
                return Err(OAuthError::invalid_grant(
                    "the code was already used: the tokens issued for it are revoked",
                ));
            }
            CodeRedemption::Unknown => return Err(invalid()),
        };
        if record.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if record.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "`redirect_uri` differs from the authorization request",
            ));
        }
        if record.expires_at <= self.now() {
            return Err(OAuthError::invalid_grant("the code expired"));
        }
        match (&record.code_challenge, request.code_verifier.as_deref()) {
            (Some(challenge), Some(verifier)) => {
                if !valid_verifier(verifier) {
                    return Err(OAuthError::invalid_grant(
                        "`code_verifier` must be 43 to 128 unreserved characters",
                    ));
                }
                let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                    return Err(OAuthError::invalid_grant(
                        "`code_verifier` does not match the challenge",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("`code_verifier` is required"));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "`code_verifier` sent but the authorization request had no challenge",
                ));
            }
            (None, None) if client.kind == ClientKind::Public => {
                return Err(OAuthError::invalid_grant("public clients must use PKCE"));
            }
            (None, None) => {}
        }
        let grant = Grant {
            id: record.grant_id,
            tenant_id: tenant,
            client_id: client.id,
            user_id: Some(record.user_id),
            scope: record.scope.clone(),
            auth_time: Some(record.auth_time),
            created_at: self.now(),
            revoked_at: None,
        };
        self.store.insert_grant(tenant, &grant).await?;
        self.issue(
            Issue {
                client,
                tenant,
                user: Some(record.user_id),
                scope: record.scope,
                grant: Some(record.grant_id),
                auth_time: Some(record.auth_time),
                nonce: record.nonce,
            },
            true,
        )
        .await
    }

    async fn client_credentials(
        &self,
        client: &Client,
        request: &TokenRequest,
    ) -> OAuthResult<TokenResponse> {
        let tenant = client.tenant_id.ok_or_else(|| {
            OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "a global client cannot act for itself",
            )
        })?;
        let scope = match request.scope.as_deref() {
            Some(s) => {
                let asked =
                    Scopes::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                if !asked.is_subset(&client.scopes) {
                    return Err(OAuthError::invalid_scope(
                        "a requested scope is not allowed for this client",
                    ));
                }
                asked
            }
            None => client.scopes.clone(),
        };
        self.issue(
            Issue {
                client,
                tenant,
                user: None,
                scope,
                grant: None,
                auth_time: None,
                nonce: None,
            },
            false,
        )
        .await
    }

    async fn refresh(&self, client: &Client, request: &TokenRequest) -> OAuthResult<TokenResponse> {
        let presented = request
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("`refresh_token` is required"))?;
        let invalid =
            || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let (tenant, hash) = parse_handle(presented).ok_or_else(invalid)?;
        let current = match self.store.refresh_token(tenant, &hash).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(invalid()),
            Err(e) => return Err(e.into()),
        };
        if current.client_id != client.id {
            return Err(invalid());
        }
        let now = self.now();
        if current.expires_at <= now {
            return Err(invalid());
        }
        let grant = self
            .live_grant(tenant, current.grant_id)
            .await?
            .ok_or_else(invalid)?;
        let scope = match request.scope.as_deref() {
            Some(s) => {
                let asked =
                    Scopes::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                if !asked.is_subset(&current.scope) {
                    return Err(OAuthError::invalid_scope(
                        "a refresh can only narrow the granted scopes",
                    ));
                }
                asked
            }
            None => current.scope.clone(),
        };
        let (handle, new_hash) = new_handle(tenant)?;
        let next = RefreshToken {
            token_hash: new_hash,
            tenant_id: tenant,
            grant_id: grant.id,
            client_id: client.id,
            scope: current.scope.clone(),
            issued_at: now,
            expires_at: now + to_chrono(self.config.refresh_token_ttl),
            used_at: None,
        };
        match self
            .store
            .rotate_refresh_token(tenant, &hash, &next, now)
            .await?
        {
            RefreshRotation::Rotated(_) => {}
            RefreshRotation::Replayed(old) => {
                // RFC 9700 §4.14.2: a replayed refresh token revokes the whole family.
                self.store.revoke_grant(tenant, old.grant_id, now).await?;
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used: the grant is revoked",
                ));
            }
            RefreshRotation::Unknown => return Err(invalid()),
        }
        let mut response = self
            .issue(
                Issue {
                    client,
                    tenant,
                    user: grant.user_id,
                    scope,
                    grant: Some(grant.id),
                    auth_time: grant.auth_time,
                    nonce: None,
                },
                false,
            )
            .await?;
        response.refresh_token = Some(handle);
        Ok(response)
    }

    /// Signs the access token (and ID token), and stores a first refresh token when
    /// `with_refresh` and the client may refresh.
    async fn issue(&self, issue: Issue<'_>, with_refresh: bool) -> OAuthResult<TokenResponse> {
        let now = self.now();
        let roles = match issue.user {
            Some(user) => match self.identity.membership(issue.tenant, user).await {
                Ok(m) => m.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(OAuthError::invalid_grant(
                        "the user is no longer a member of the organization",
                    ));
                }
                Err(e) => return Err(e.into()),
            },
            None => Vec::new(),
        };
        let subject = issue
            .user
            .map_or_else(|| issue.client.id.to_string(), |u| u.to_string());
        let mut audience = vec![issue.client.id.to_string()];
        audience.extend(self.config.access_token_audiences.iter().cloned());
        let ttl = self.config.access_token_ttl;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: subject.clone(),
            aud: audience.into(),
            exp: (now + to_chrono(ttl)).timestamp(),
            iat: now.timestamp(),
            nbf: None,
            jti: uuid::Uuid::now_v7().to_string(),
            scope: issue.scope.to_string(),
            client_id: issue.client.id,
            tenant_id: issue.tenant,
            roles,
            gid: issue.grant,
        };
        let access_token = self.keys.sign(TYP_ACCESS_TOKEN, &claims)?;
        let id_token = match (issue.user, issue.scope.contains("openid")) {
            (Some(user), true) => Some(self.id_token(&issue, user, &access_token, now).await?),
            _ => None,
        };
        let mut refresh_token = None;
        if with_refresh
            && issue.client.grant_types.contains(&GrantType::RefreshToken)
            && let Some(grant) = issue.grant
        {
            let (handle, hash) = new_handle(issue.tenant)?;
            let token = RefreshToken {
                token_hash: hash,
                tenant_id: issue.tenant,
                grant_id: grant,
                client_id: issue.client.id,
                scope: issue.scope.clone(),
                issued_at: now,
                expires_at: now + to_chrono(self.config.refresh_token_ttl),
                used_at: None,
            };
            self.store
                .insert_refresh_token(issue.tenant, &token)
                .await?;
            refresh_token = Some(handle);
        }
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: ttl.as_secs(),
            refresh_token,
            scope: issue.scope.to_string(),
            id_token,
        })
    }

    async fn id_token(
        &self,
        issue: &Issue<'_>,
        user: UserId,
        access_token: &str,
        now: DateTime<Utc>,
    ) -> OAuthResult<String> {
        let profile = self.identity.user(user).await?;
        let email = issue.scope.contains("email");
        let claims = IdTokenClaims {
            iss: self.config.issuer.clone(),
            sub: user.to_string(),
            aud: issue.client.id.to_string().into(),
            exp: (now + to_chrono(self.config.id_token_ttl)).timestamp(),
            iat: now.timestamp(),
            auth_time: issue.auth_time.unwrap_or(now).timestamp(),
            nonce: issue.nonce.clone(),
            at_hash: Some(at_hash(access_token, self.keys.policy().algorithm)),
            azp: Some(issue.client.id.to_string()),
            sid: None,
            email: email.then(|| profile.email.as_str().to_owned()),
            email_verified: email.then_some(profile.email_verified),
            name: issue
                .scope
                .contains("profile")
                .then(|| profile.display_name.as_str().to_owned()),
            tenant_id: Some(issue.tenant),
        };
        Ok(self.keys.sign(TYP_ID_TOKEN, &claims)?)
    }
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}
