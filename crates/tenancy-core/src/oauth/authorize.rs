//! The authorization endpoint and the login, organization and consent steps between
//! the request and the redirect back with a code.
//!
//! The request is validated once ([`Provider::start_authorization`]) and then travels
//! through the pages as a sealed, tamper-proof [`PendingAuthorization`]; each page
//! posts it back and [`Provider::continue_authorization`] decides the next step.

use std::net::IpAddr;

use chrono::Duration as ChronoDuration;
use serde::{Deserialize, Serialize};

use super::error::{OAuthError, OAuthErrorCode};
use super::model::{AuthorizationCode, ClientKind, Consent, GrantType, LoginSession, Scopes};
use super::provider::{Provider, new_handle};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::{SecretToken, Tenant, TenantStatus, User};
use crate::ids::{ClientId, GrantId, TenantId, UserId};
use crate::page::PageRequest;

/// The query parameters of an authorization request, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthorizationParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// Where to send the answer; must be registered.
    pub redirect_uri: Option<String>,
    /// Requested scopes.
    pub scope: Option<String>,
    /// Opaque value echoed back.
    pub state: Option<String>,
    /// OpenID Connect nonce, echoed in the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// PKCE method: only `S256`.
    pub code_challenge_method: Option<String>,
    /// `none`, `login`, `consent` or `select_account`, space-delimited.
    pub prompt: Option<String>,
    /// Maximum authentication age in seconds.
    pub max_age: Option<String>,
    /// Email to prefill on the login page.
    pub login_hint: Option<String>,
    /// Only `query` is supported.
    pub response_mode: Option<String>,
}

/// A validated authorization request, carried sealed through the pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    /// The client.
    pub client_id: ClientId,
    /// The client's name, for the pages.
    pub client_name: String,
    /// The redirect URI exactly as presented.
    pub redirect_uri: String,
    /// Requested scopes.
    pub scope: Scopes,
    /// Echoed back.
    pub state: Option<String>,
    /// ID-token nonce.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// `prompt=none`.
    pub prompt_none: bool,
    /// `prompt=login`.
    pub prompt_login: bool,
    /// `prompt=consent`.
    pub prompt_consent: bool,
    /// `prompt=select_account`.
    pub prompt_select_account: bool,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// Email to prefill.
    pub login_hint: Option<String>,
    /// The organization chosen so far.
    pub tenant_id: Option<TenantId>,
    /// When the request arrived (unix seconds).
    pub started_at: i64,
}

/// An authorization request that cannot be answered by redirect: the client or the
/// redirect URI is unknown, so the user sees an error page and is never redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPageError(pub String);

/// What the user sees next.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthorizationStep {
    /// The login form. `error` explains a failed attempt.
    Login {
        /// The sealed request for the form.
        request: String,
        /// The client's name.
        client_name: String,
        /// Email to prefill.
        login_hint: Option<String>,
        /// Why the previous attempt failed.
        error: Option<String>,
    },
    /// The organization picker.
    ChooseTenant {
        /// The sealed request for the form.
        request: String,
        /// The client's name.
        client_name: String,
        /// The user's organizations.
        tenants: Vec<Tenant>,
    },
    /// The consent form.
    Consent {
        /// The sealed request for the form.
        request: String,
        /// The client's name.
        client_name: String,
        /// The chosen organization.
        tenant: Tenant,
        /// The scopes asked for.
        scopes: Scopes,
    },
    /// Send the browser here (success with a code, or an error for the client).
    Redirect(String),
}

/// What a page posted back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepInput {
    /// Nothing (the first visit).
    None,
    /// The user has just signed in within this flow (satisfies `prompt=login`).
    LoggedIn,
    /// The organization picked.
    Tenant(TenantId),
    /// The consent decision.
    Consent(bool),
}

/// A new login session: the cookie value to set, once.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value.
    pub cookie: SecretToken,
    /// The stored session.
    pub session: LoginSession,
}

const MAX_STATE_BYTES: usize = 1024;

impl Provider {
    /// Validates an authorization request. An unknown client or an unregistered redirect
    /// URI is a page error (never a redirect); every later problem redirects to the
    /// client with an error.
    pub async fn start_authorization(
        &self,
        params: &AuthorizationParams,
    ) -> std::result::Result<
        std::result::Result<PendingAuthorization, String>,
        AuthorizationPageError,
    > {
        let page = |m: &str| AuthorizationPageError(m.to_owned());
        let client_id = params
            .client_id
            .as_deref()
            .ok_or_else(|| page("the request has no `client_id`"))?;
        let client_id = client_id
            .parse::<ClientId>()
            .map_err(|_| page("unknown client"))?;
        let client = match self.cached_client(client_id).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(page("unknown client")),
            Err(_) => return Err(page("the server cannot answer right now; try again later")),
        };
        let redirect_uri = params
            .redirect_uri
            .as_deref()
            .ok_or_else(|| page("the request has no `redirect_uri`"))?;
        if !client.redirect_uris.iter().any(|r| r.matches(redirect_uri)) {
            return Err(page("the `redirect_uri` is not registered for this client"));
        }
        let state = params.state.clone();
        let fail = |code: OAuthErrorCode, why: &str| {
            Ok(Err(self.error_redirect(
                redirect_uri,
                &OAuthError::new(code, why),
                state.as_deref(),
            )))
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return fail(OAuthErrorCode::InvalidRequest, "`state` is too long");
        }
        match params.response_type.as_deref() {
            Some("code") => {}
            None => {
                return fail(
                    OAuthErrorCode::InvalidRequest,
                    "`response_type` is required",
                );
            }
            Some(_) => {
                return fail(
                    OAuthErrorCode::UnsupportedResponseType,
                    "only `response_type=code` is supported",
                );
            }
        }
        if params
            .response_mode
            .as_deref()
            .is_some_and(|m| m != "query")
        {
            return fail(
                OAuthErrorCode::InvalidRequest,
                "only `response_mode=query` is supported",
            );
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return fail(
                OAuthErrorCode::UnauthorizedClient,
                "this client may not use the authorization code grant",
            );
        }
        let scope = match Scopes::parse(params.scope.as_deref().unwrap_or("")) {
            Ok(s) => s,
            Err(e) => return fail(OAuthErrorCode::InvalidScope, &e.to_string()),
        };
        if !scope.is_subset(&client.scopes) {
            return fail(
                OAuthErrorCode::InvalidScope,
                "a requested scope is not allowed for this client",
            );
        }
        let code_challenge = match (
            params.code_challenge.as_deref(),
            params.code_challenge_method.as_deref(),
        ) {
            (None, None) if client.kind == ClientKind::Public => {
                return fail(
                    OAuthErrorCode::InvalidRequest,
                    "public clients must use PKCE (`code_challenge` with `S256`)",
                );
            }
            (None, None) => None,
            (None, Some(_)) => {
                return fail(
                    OAuthErrorCode::InvalidRequest,
                    "`code_challenge_method` without `code_challenge`",
                );
            }
            (Some(_), None | Some("plain")) => {
                return fail(
                    OAuthErrorCode::InvalidRequest,
                    "`code_challenge_method` must be `S256`; `plain` is refused",
                );
            }
            (Some(c), Some("S256")) => {
                if c.len() != 43
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return fail(
                        OAuthErrorCode::InvalidRequest,
                        "`code_challenge` is not a base64url SHA-256",
                    );
                }
                Some(c.to_owned())
            }
            (Some(_), Some(_)) => {
                return fail(
                    OAuthErrorCode::InvalidRequest,
                    "`code_challenge_method` must be `S256`",
                );
            }
        };
        let mut pending = PendingAuthorization {
            client_id,
            client_name: client.name.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope,
            state: state.clone(),
            nonce: params.nonce.clone(),
            code_challenge,
            prompt_none: false,
            prompt_login: false,
            prompt_consent: false,
            prompt_select_account: false,
            max_age: None,
            login_hint: params.login_hint.clone().filter(|h| h.len() <= 320),
            tenant_id: None,
            started_at: self.now().timestamp(),
        };
        if pending
            .nonce
            .as_ref()
            .is_some_and(|n| n.len() > MAX_STATE_BYTES)
        {
            return fail(OAuthErrorCode::InvalidRequest, "`nonce` is too long");
        }
        for prompt in params
            .prompt
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|p| !p.is_empty())
        {
            match prompt {
                "none" => pending.prompt_none = true,
                "login" => pending.prompt_login = true,
                "consent" => pending.prompt_consent = true,
                "select_account" => pending.prompt_select_account = true,
                other => {
                    return fail(
                        OAuthErrorCode::InvalidRequest,
                        &format!("unknown prompt `{}`", other.escape_default()),
                    );
                }
            }
        }
        if pending.prompt_none
            && (pending.prompt_login || pending.prompt_consent || pending.prompt_select_account)
        {
            return fail(
                OAuthErrorCode::InvalidRequest,
                "`prompt=none` cannot be combined with other prompts",
            );
        }
        if let Some(max_age) = params.max_age.as_deref() {
            match max_age.parse::<i64>() {
                Ok(v) if v >= 0 => pending.max_age = Some(v),
                _ => {
                    return fail(
                        OAuthErrorCode::InvalidRequest,
                        "`max_age` must be a non-negative integer",
                    );
                }
            }
        }
        Ok(Ok(pending))
    }

    /// Seals a pending authorization for a hidden form field.
    pub fn seal_pending(&self, pending: &PendingAuthorization) -> Result<String> {
        self.seal_flow(pending)
    }

    /// Opens a sealed pending authorization posted back by a page; `InvalidInput` when it
    /// was altered or is older than the flow lifetime.
    pub fn open_pending(&self, sealed: &str) -> Result<PendingAuthorization> {
        let pending: PendingAuthorization = self.open_flow(sealed)?;
        let age = self.now().timestamp() - pending.started_at;
        let ttl = i64::try_from(self.config.flow_ttl.as_secs()).unwrap_or(i64::MAX);
        if age > ttl || age < -60 {
            return Err(Error::invalid(
                "request",
                "the authorization request expired: start again",
            ));
        }
        Ok(pending)
    }

    /// The login session of a session cookie, if it is valid.
    pub async fn session(&self, cookie: Option<&str>) -> Result<Option<LoginSession>> {
        let Some(cookie) = cookie else {
            return Ok(None);
        };
        let Ok(token) = SecretToken::from_presented("session", cookie) else {
            return Ok(None);
        };
        self.sessions.session(&token.hash(), self.now()).await
    }

    /// Checks an email and password (argon2id) and opens a session. Failures are
    /// counted per account and per client IP; past the quota the attempt is refused
    /// with `QuotaExceeded` before the password is even checked.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        remote_ip: Option<IpAddr>,
    ) -> Result<NewSession> {
        let account_key = format!("login:acct:{}", email.trim().to_lowercase());
        let ip_key = remote_ip.map(|ip| format!("login:ip:{ip}"));
        let too_many = |e: OAuthError| {
            Error::QuotaExceeded(format!(
                "too many failed sign-in attempts: try again in {} seconds",
                e.retry_after.map_or(60, |d| d.as_secs().max(1))
            ))
        };
        self.blocked(&account_key, self.config.login_account_quota)
            .await
            .map_err(too_many)?;
        if let Some(ip_key) = &ip_key {
            self.blocked(ip_key, self.config.login_ip_quota)
                .await
                .map_err(too_many)?;
        }
        let user = match self.identity.authenticate(email, password).await {
            Ok(user) => user,
            Err(e) => {
                if e.kind() == ErrorKind::Unauthenticated {
                    self.count_failure(&account_key, self.config.login_account_quota)
                        .await?;
                    if let Some(ip_key) = &ip_key {
                        self.count_failure(ip_key, self.config.login_ip_quota)
                            .await?;
                    }
                }
                return Err(e);
            }
        };
        self.limiter.reset(&account_key).await?;
        self.open_session(&user).await
    }

    async fn open_session(&self, user: &User) -> Result<NewSession> {
        let now = self.now();
        let cookie = SecretToken::generate()?;
        let session = LoginSession {
            id_hash: cookie.hash(),
            user_id: user.id,
            auth_time: now,
            expires_at: now + to_chrono(self.config.session_ttl),
        };
        self.sessions.insert_session(&session).await?;
        Ok(NewSession { cookie, session })
    }

    /// Ends the session of a cookie (no error if there is none).
    pub async fn end_session(&self, cookie: Option<&str>) -> Result<()> {
        if let Some(token) = cookie.and_then(|c| SecretToken::from_presented("session", c).ok()) {
            self.sessions.delete_session(&token.hash()).await?;
        }
        Ok(())
    }

    /// Decides the next step of an authorization: login, organization, consent, or the
    /// redirect back to the client (with a code or an error).
    pub async fn continue_authorization(
        &self,
        mut pending: PendingAuthorization,
        session: Option<&LoginSession>,
        input: StepInput,
    ) -> Result<AuthorizationStep> {
        let client = match self.cached_client(pending.client_id).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::AccessDenied,
                    "the client no longer exists",
                ));
            }
            Err(e) => return Err(e),
        };
        // 1. Authentication.
        if input == StepInput::LoggedIn {
            pending.prompt_login = false;
        }
        let fresh_enough = |s: &LoginSession| {
            let age_ok = pending
                .max_age
                .is_none_or(|max| (self.now() - s.auth_time).num_seconds() <= max);
            !pending.prompt_login && age_ok
        };
        let session = match session.filter(|s| fresh_enough(s)) {
            Some(s) => s,
            None if pending.prompt_none => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::LoginRequired,
                    "the user must sign in",
                ));
            }
            None => {
                return Ok(AuthorizationStep::Login {
                    request: self.seal_pending(&pending)?,
                    client_name: pending.client_name.clone(),
                    login_hint: pending.login_hint.clone(),
                    error: None,
                });
            }
        };
        let user = match self.identity.user(session.user_id).await {
            Ok(u) if u.status == crate::identity::UserStatus::Active => u,
            Ok(_) => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::AccessDenied,
                    "the account is disabled",
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::LoginRequired,
                    "the user no longer exists",
                ));
            }
            Err(e) => return Err(e),
        };
        // 2. Organization.
        if let StepInput::Tenant(t) = input {
            pending.tenant_id = Some(t);
        }
        let tenants = self.user_tenants(user.id, client.tenant_id).await?;
        let tenant = match pending.tenant_id {
            Some(chosen) => match tenants.iter().find(|t| t.id == chosen) {
                Some(t) => t.clone(),
                None => {
                    return Ok(self.redirect_error(
                        &pending,
                        OAuthErrorCode::AccessDenied,
                        "the user is not a member of that organization",
                    ));
                }
            },
            None => match tenants.as_slice() {
                [] => {
                    return Ok(self.redirect_error(
                        &pending,
                        OAuthErrorCode::AccessDenied,
                        "the user belongs to no organization this client serves",
                    ));
                }
                [only] if !pending.prompt_select_account => only.clone(),
                _ if pending.prompt_none => {
                    return Ok(self.redirect_error(
                        &pending,
                        OAuthErrorCode::AccountSelectionRequired,
                        "the user must choose an organization",
                    ));
                }
                _ => {
                    return Ok(AuthorizationStep::ChooseTenant {
                        request: self.seal_pending(&pending)?,
                        client_name: pending.client_name.clone(),
                        tenants,
                    });
                }
            },
        };
        pending.tenant_id = Some(tenant.id);
        // 3. Consent.
        let remembered = self.store.consent(tenant.id, user.id, client.id).await?;
        let covered = remembered
            .as_ref()
            .is_some_and(|c| pending.scope.is_subset(&c.scope));
        match input {
            StepInput::Consent(false) => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::AccessDenied,
                    "the user denied the request",
                ));
            }
            StepInput::Consent(true) => {
                let scope = remembered
                    .map_or_else(|| pending.scope.clone(), |c| c.scope.union(&pending.scope));
                let consent = Consent {
                    tenant_id: tenant.id,
                    user_id: user.id,
                    client_id: client.id,
                    scope,
                    granted_at: self.now(),
                };
                self.store.put_consent(tenant.id, &consent).await?;
            }
            StepInput::None | StepInput::LoggedIn | StepInput::Tenant(_)
                if covered && !pending.prompt_consent => {}
            StepInput::None | StepInput::LoggedIn | StepInput::Tenant(_) if pending.prompt_none => {
                return Ok(self.redirect_error(
                    &pending,
                    OAuthErrorCode::ConsentRequired,
                    "the user must consent",
                ));
            }
            StepInput::None | StepInput::LoggedIn | StepInput::Tenant(_) => {
                return Ok(AuthorizationStep::Consent {
                    request: self.seal_pending(&pending)?,
                    client_name: pending.client_name.clone(),
                    tenant,
                    scopes: pending.scope.clone(),
                });
            }
        }
        // 4. The code.
        let (code, code_hash) = new_handle(tenant.id)?;
        let now = self.now();
        let record = AuthorizationCode {
            code_hash,
            tenant_id: tenant.id,
            client_id: client.id,
            user_id: user.id,
            grant_id: GrantId::new(),
            redirect_uri: pending.redirect_uri.clone(),
            scope: pending.scope.clone(),
            nonce: pending.nonce.clone(),
            code_challenge: pending.code_challenge.clone(),
            auth_time: session.auth_time,
            issued_at: now,
            expires_at: now + to_chrono(self.config.code_ttl),
        };
        self.store.insert_code(tenant.id, &record).await?;
        let mut params = vec![("code", code)];
        if let Some(state) = &pending.state {
            params.push(("state", state.clone()));
        }
        params.push(("iss", self.config.issuer.clone()));
        Ok(AuthorizationStep::Redirect(with_query(
            &pending.redirect_uri,
            &params,
        )))
    }

    /// The login step again, with an error message (after a failed password).
    pub fn login_again(
        &self,
        pending: &PendingAuthorization,
        error: String,
    ) -> Result<AuthorizationStep> {
        Ok(AuthorizationStep::Login {
            request: self.seal_pending(pending)?,
            client_name: pending.client_name.clone(),
            login_hint: pending.login_hint.clone(),
            error: Some(error),
        })
    }

    /// The active organizations of a user, limited to `only` for a tenant's own client.
    async fn user_tenants(&self, user: UserId, only: Option<TenantId>) -> Result<Vec<Tenant>> {
        let mut tenants = Vec::new();
        let mut page = PageRequest::first(1000);
        loop {
            let memberships = self.identity.list_user_memberships(user, &page).await?;
            for m in &memberships.items {
                if only.is_some_and(|t| t != m.tenant_id) {
                    continue;
                }
                let tenant = self.identity.tenant(m.tenant_id).await?;
                if tenant.status == TenantStatus::Active {
                    tenants.push(tenant);
                }
            }
            match memberships.next {
                Some(next) => {
                    page = PageRequest {
                        after: Some(next),
                        limit: 1000,
                    }
                }
                None => break,
            }
        }
        Ok(tenants)
    }

    fn redirect_error(
        &self,
        pending: &PendingAuthorization,
        code: OAuthErrorCode,
        why: &str,
    ) -> AuthorizationStep {
        AuthorizationStep::Redirect(self.error_redirect(
            &pending.redirect_uri,
            &OAuthError::new(code, why),
            pending.state.as_deref(),
        ))
    }

    /// The redirect URL that reports `error` to the client (RFC 6749 §4.1.2.1, with the
    /// `iss` parameter of RFC 9207).
    #[must_use]
    pub fn error_redirect(
        &self,
        redirect_uri: &str,
        error: &OAuthError,
        state: Option<&str>,
    ) -> String {
        let mut params = vec![
            ("error", error.code.as_str().to_owned()),
            ("error_description", error.description.clone()),
        ];
        if let Some(state) = state {
            params.push(("state", state.to_owned()));
        }
        params.push(("iss", self.config.issuer.clone()));
        with_query(redirect_uri, &params)
    }
}

/// Appends query parameters to a URI that may already have a query.
pub(super) fn with_query(uri: &str, params: &[(&str, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    let query = serializer.finish();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

pub(super) fn to_chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}
