//! The provider stores in memory: [`OAuthStore`], [`SessionStore`] and [`KeyStore`] for
//! [`MemoryStore`], and [`MemoryRateLimiter`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, check_version, page_of};
use crate::error::{Error, Result};
use crate::identity::TokenHash;
use crate::ids::{ClientId, GrantId, TenantId, UserId};
use crate::oauth::gcra::Gcra;
use crate::oauth::rules::{check_client_scope, check_same_family};
use crate::oauth::{
    AuthorizationCode, Client, ClientScope, CodeRedemption, Consent, Grant, LoginSession,
    OAuthStore, Quota, RateDecision, RateLimiter, RefreshRotation, RefreshToken, SessionStore,
};
use crate::page::{Page, PageRequest};
use crate::token::{KeyRecord, KeyStore};

/// One tenant's provider rows: a lookup through tenant A cannot reach tenant B's.
#[derive(Default)]
struct Partition {
    /// Codes by hash, with whether they were redeemed.
    codes: HashMap<TokenHash, (AuthorizationCode, bool)>,
    grants: HashMap<GrantId, Grant>,
    refresh_tokens: HashMap<TokenHash, RefreshToken>,
    consents: HashMap<(UserId, ClientId), Consent>,
    /// Revoked access-token ids and when they would have expired.
    revoked: HashMap<String, DateTime<Utc>>,
}

/// The provider's state inside [`MemoryStore`].
#[derive(Default)]
pub(super) struct OAuthState {
    clients: BTreeMap<ClientId, Client>,
    partitions: HashMap<TenantId, Partition>,
    assertions: HashMap<(ClientId, String), DateTime<Utc>>,
    sessions: HashMap<TokenHash, LoginSession>,
    keys: Vec<KeyRecord>,
}

impl OAuthState {
    fn require_client(&self, id: ClientId) -> Result<()> {
        if self.clients.contains_key(&id) {
            Ok(())
        } else {
            Err(Error::not_found("client", id))
        }
    }

    /// The client `id` if it belongs to `scope`.
    fn scoped_client(&mut self, scope: ClientScope, id: ClientId) -> Result<&mut Client> {
        self.clients
            .get_mut(&id)
            .filter(|c| c.tenant_id == scope.tenant())
            .ok_or_else(|| Error::not_found("client", id))
    }
}

#[async_trait]
impl OAuthStore for MemoryStore {
    async fn insert_client(&self, client: &Client) -> Result<()> {
        let mut s = self.state.write().await;
        if s.oauth.clients.contains_key(&client.id) {
            return Err(Error::AlreadyExists(format!(
                "client `{}` already exists",
                client.id
            )));
        }
        s.oauth.clients.insert(client.id, client.clone());
        Ok(())
    }

    async fn client(&self, id: ClientId) -> Result<Client> {
        let s = self.state.read().await;
        s.oauth
            .clients
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("client", id))
    }

    async fn update_client(&self, scope: ClientScope, client: &Client) -> Result<Client> {
        check_client_scope(scope, client)?;
        let mut s = self.state.write().await;
        let stored = s.oauth.scoped_client(scope, client.id)?;
        check_version("client", client.id, stored.version, client.version)?;
        let mut updated = client.clone();
        updated.created_at = stored.created_at;
        updated.version += 1;
        *stored = updated.clone();
        Ok(updated)
    }

    async fn delete_client(&self, scope: ClientScope, id: ClientId) -> Result<()> {
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        s.scoped_client(scope, id)?;
        s.clients.remove(&id);
        for part in s.partitions.values_mut() {
            part.codes.retain(|_, (c, _)| c.client_id != id);
            part.grants.retain(|_, g| g.client_id != id);
            let grants = &part.grants;
            part.refresh_tokens
                .retain(|_, t| t.client_id != id && grants.contains_key(&t.grant_id));
            part.consents.retain(|(_, client), _| *client != id);
        }
        s.assertions.retain(|(client, _), _| *client != id);
        Ok(())
    }

    async fn list_clients(&self, scope: ClientScope, page: &PageRequest) -> Result<Page<Client>> {
        let s = self.state.read().await;
        let tenant = scope.tenant();
        Ok(page_of(
            s.oauth
                .clients
                .iter()
                .filter(|(_, c)| c.tenant_id == tenant),
            page,
            |k| k.as_uuid(),
            |c| c.id.as_uuid(),
        ))
    }

    async fn insert_code(&self, tenant: TenantId, code: &AuthorizationCode) -> Result<()> {
        tenant.check_scope(code.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        s.require_client(code.client_id)?;
        let part = s.partitions.entry(tenant).or_default();
        if part.codes.contains_key(&code.code_hash) {
            return Err(Error::AlreadyExists(
                "authorization code already exists".into(),
            ));
        }
        part.codes.insert(code.code_hash, (code.clone(), false));
        Ok(())
    }

    async fn redeem_code(&self, tenant: TenantId, code_hash: &TokenHash) -> Result<CodeRedemption> {
        let mut s = self.state.write().await;
        let Some((code, redeemed)) = s
            .oauth
            .partitions
            .get_mut(&tenant)
            .and_then(|p| p.codes.get_mut(code_hash))
        else {
            return Ok(CodeRedemption::Unknown);
        };
        if *redeemed {
            return Ok(CodeRedemption::AlreadyRedeemed(code.clone()));
        }
        *redeemed = true;
        Ok(CodeRedemption::Redeemed(code.clone()))
    }

    async fn insert_grant(&self, tenant: TenantId, grant: &Grant) -> Result<()> {
        tenant.check_scope(grant.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        s.require_client(grant.client_id)?;
        let part = s.partitions.entry(tenant).or_default();
        if part.grants.contains_key(&grant.id) {
            return Err(Error::AlreadyExists(format!(
                "grant `{}` already exists",
                grant.id
            )));
        }
        part.grants.insert(grant.id, grant.clone());
        Ok(())
    }

    async fn grant(&self, tenant: TenantId, id: GrantId) -> Result<Grant> {
        let s = self.state.read().await;
        s.oauth
            .partitions
            .get(&tenant)
            .and_then(|p| p.grants.get(&id))
            .cloned()
            .ok_or_else(|| Error::not_found("grant", id))
    }

    async fn revoke_grant(&self, tenant: TenantId, id: GrantId, at: DateTime<Utc>) -> Result<()> {
        let mut s = self.state.write().await;
        let part = s
            .oauth
            .partitions
            .get_mut(&tenant)
            .filter(|p| p.grants.contains_key(&id))
            .ok_or_else(|| Error::not_found("grant", id))?;
        if let Some(grant) = part.grants.get_mut(&id) {
            grant.revoked_at = Some(grant.revoked_at.map_or(at, |earlier| earlier.min(at)));
        }
        for token in part.refresh_tokens.values_mut() {
            if token.grant_id == id && token.used_at.is_none() {
                token.used_at = Some(at);
            }
        }
        Ok(())
    }

    async fn insert_refresh_token(&self, tenant: TenantId, token: &RefreshToken) -> Result<()> {
        tenant.check_scope(token.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        s.require_client(token.client_id)?;
        let part = s.partitions.entry(tenant).or_default();
        insert_refresh(part, token)
    }

    async fn refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &TokenHash,
    ) -> Result<RefreshToken> {
        let s = self.state.read().await;
        s.oauth
            .partitions
            .get(&tenant)
            .and_then(|p| p.refresh_tokens.get(token_hash))
            .cloned()
            .ok_or_else(|| Error::NotFound("refresh token not found".into()))
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &TokenHash,
        new: &RefreshToken,
        at: DateTime<Utc>,
    ) -> Result<RefreshRotation> {
        tenant.check_scope(new.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        let client_known = s.clients.contains_key(&new.client_id);
        let Some(part) = s.partitions.get_mut(&tenant) else {
            return Ok(RefreshRotation::Unknown);
        };
        let Some(current) = part.refresh_tokens.get(old).cloned() else {
            return Ok(RefreshRotation::Unknown);
        };
        check_same_family(&current, new)?;
        if current.used_at.is_some() {
            return Ok(RefreshRotation::Replayed(current));
        }
        if !client_known {
            return Err(Error::not_found("client", new.client_id));
        }
        insert_refresh(part, new)?;
        let mut spent = current;
        spent.used_at = Some(at);
        part.refresh_tokens.insert(*old, spent.clone());
        Ok(RefreshRotation::Rotated(spent))
    }

    async fn consent(
        &self,
        tenant: TenantId,
        user: UserId,
        client: ClientId,
    ) -> Result<Option<Consent>> {
        let s = self.state.read().await;
        Ok(s.oauth
            .partitions
            .get(&tenant)
            .and_then(|p| p.consents.get(&(user, client)))
            .cloned())
    }

    async fn put_consent(&self, tenant: TenantId, consent: &Consent) -> Result<()> {
        tenant.check_scope(consent.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        s.require_client(consent.client_id)?;
        s.partitions
            .entry(tenant)
            .or_default()
            .consents
            .insert((consent.user_id, consent.client_id), consent.clone());
        Ok(())
    }

    async fn delete_consent(&self, tenant: TenantId, user: UserId, client: ClientId) -> Result<()> {
        let mut s = self.state.write().await;
        if let Some(part) = s.oauth.partitions.get_mut(&tenant) {
            part.consents.remove(&(user, client));
        }
        Ok(())
    }

    async fn revoke_access_token(
        &self,
        tenant: TenantId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut s = self.state.write().await;
        let revoked = &mut s.oauth.partitions.entry(tenant).or_default().revoked;
        let until = revoked.entry(jti.to_owned()).or_insert(expires_at);
        *until = (*until).max(expires_at);
        Ok(())
    }

    async fn is_access_token_revoked(&self, tenant: TenantId, jti: &str) -> Result<bool> {
        let s = self.state.read().await;
        Ok(s.oauth
            .partitions
            .get(&tenant)
            .is_some_and(|p| p.revoked.contains_key(jti)))
    }

    async fn record_assertion(
        &self,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut s = self.state.write().await;
        let key = (client, jti.to_owned());
        if s.oauth.assertions.contains_key(&key) {
            return Ok(false);
        }
        s.oauth.assertions.insert(key, expires_at);
        Ok(true)
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut guard = self.state.write().await;
        let s = &mut guard.oauth;
        let mut gone = 0_usize;
        let mut retain = |before: usize, after: usize| gone += before - after;
        for part in s.partitions.values_mut() {
            let n = part.codes.len();
            part.codes.retain(|_, (c, _)| c.expires_at >= now);
            retain(n, part.codes.len());
            let n = part.refresh_tokens.len();
            part.refresh_tokens.retain(|_, t| t.expires_at >= now);
            retain(n, part.refresh_tokens.len());
            let n = part.revoked.len();
            part.revoked.retain(|_, expires_at| *expires_at >= now);
            retain(n, part.revoked.len());
        }
        let n = s.assertions.len();
        s.assertions.retain(|_, expires_at| *expires_at >= now);
        retain(n, s.assertions.len());
        let n = s.sessions.len();
        s.sessions.retain(|_, session| session.expires_at >= now);
        retain(n, s.sessions.len());
        Ok(u64::try_from(gone).unwrap_or(u64::MAX))
    }
}

fn insert_refresh(part: &mut Partition, token: &RefreshToken) -> Result<()> {
    if !part.grants.contains_key(&token.grant_id) {
        return Err(Error::not_found("grant", token.grant_id));
    }
    if part.refresh_tokens.contains_key(&token.token_hash) {
        return Err(Error::AlreadyExists("refresh token already exists".into()));
    }
    part.refresh_tokens.insert(token.token_hash, token.clone());
    Ok(())
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert_session(&self, session: &LoginSession) -> Result<()> {
        let mut s = self.state.write().await;
        if s.oauth.sessions.contains_key(&session.id_hash) {
            return Err(Error::AlreadyExists("session already exists".into()));
        }
        s.oauth.sessions.insert(session.id_hash, session.clone());
        Ok(())
    }

    async fn session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<LoginSession>> {
        let s = self.state.read().await;
        Ok(s.oauth
            .sessions
            .get(id_hash)
            .filter(|session| session.expires_at > now)
            .cloned())
    }

    async fn delete_session(&self, id_hash: &TokenHash) -> Result<()> {
        self.state.write().await.oauth.sessions.remove(id_hash);
        Ok(())
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
        let mut s = self.state.write().await;
        let before = s.oauth.sessions.len();
        s.oauth
            .sessions
            .retain(|_, session| session.user_id != user);
        Ok(u64::try_from(before - s.oauth.sessions.len()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let s = self.state.read().await;
        let mut keys = s.oauth.keys.clone();
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(keys)
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let mut s = self.state.write().await;
        if s.oauth.keys.iter().any(|k| k.kid == key.kid) {
            return Err(Error::AlreadyExists(format!(
                "key `{}` already exists",
                key.kid
            )));
        }
        s.oauth.keys.push(key.clone());
        Ok(())
    }

    async fn activate_key(&self, kid: &str, activates_at: DateTime<Utc>) -> Result<()> {
        let mut s = self.state.write().await;
        let key = s
            .oauth
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::not_found("key", kid))?;
        key.activates_at = activates_at;
        Ok(())
    }

    async fn retire_key(
        &self,
        kid: &str,
        retires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut s = self.state.write().await;
        let key = s
            .oauth
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::not_found("key", kid))?;
        key.retires_at = Some(retires_at);
        key.expires_at = Some(expires_at);
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut s = self.state.write().await;
        let before = s.oauth.keys.len();
        s.oauth
            .keys
            .retain(|k| k.expires_at.is_none_or(|expires_at| expires_at >= now));
        Ok(u64::try_from(before - s.oauth.keys.len()).unwrap_or(u64::MAX))
    }
}

/// A GCRA [`RateLimiter`] in memory: one theoretical arrival time per key, for one
/// process. Keys whose time has passed are forgotten as the map grows.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    state: Mutex<Limits>,
}

#[derive(Debug)]
struct Limits {
    tats: HashMap<String, i64>,
    /// Sweep keys whose `tat` has passed when the map reaches this size.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self {
            state: Mutex::new(Limits {
                tats: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }
}

impl MemoryRateLimiter {
    /// A limiter that knows no key yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision> {
        let gcra = Gcra::new(quota)?;
        let now = now.timestamp_micros();
        let mut limits = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (decision, next) = gcra.check(limits.tats.get(key).copied(), now);
        if let Some(tat) = next {
            if limits.tats.len() >= limits.sweep_at {
                limits.tats.retain(|_, tat| *tat > now);
                limits.sweep_at = (limits.tats.len() * 2).max(MIN_SWEEP);
            }
            limits.tats.insert(key.to_owned(), tat);
        }
        Ok(decision)
    }

    async fn peek(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Result<RateDecision> {
        let gcra = Gcra::new(quota)?;
        let limits = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(gcra
            .check(limits.tats.get(key).copied(), now.timestamp_micros())
            .0)
    }

    async fn reset(&self, key: &str) -> Result<()> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tats
            .remove(key);
        Ok(())
    }
}
