//! The in-memory backend: every store trait over maps behind one lock (with feature
//! `oauth`, the provider stores too, and `MemoryRateLimiter`), and an event outbox. Complete and
//! conformant (it passes the same suite as the SQL backends); nothing survives the
//! process. For tests, demos and embedding.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::events::{Event, MemoryOutbox, OutboxEntry, OutboxStore};
use crate::identity::{
    Email, EmailVerification, Invitation, InvitationStore, Membership, MembershipStore, Slug,
    Tenant, TenantStore, TokenHash, User, UserStore, VerificationStore, check_usable,
};
use crate::ids::{EventId, InvitationId, MembershipId, TenantId, UserId};
use crate::page::{Page, PageRequest};

#[cfg(feature = "oauth")]
mod oauth;
#[cfg(feature = "oauth")]
pub use oauth::MemoryRateLimiter;

/// Tenant-scoped rows live in one partition per tenant, so a lookup through tenant A
/// cannot reach tenant B's rows.
#[derive(Default)]
struct Partition {
    memberships: BTreeMap<MembershipId, Membership>,
    member_index: HashMap<UserId, MembershipId>,
    invitations: BTreeMap<InvitationId, Invitation>,
    invitation_tokens: HashMap<TokenHash, InvitationId>,
}

#[derive(Default)]
struct State {
    tenants: BTreeMap<TenantId, Tenant>,
    slugs: HashMap<String, TenantId>,
    users: BTreeMap<UserId, User>,
    emails: HashMap<String, UserId>,
    partitions: HashMap<TenantId, Partition>,
    verifications: HashMap<TokenHash, EmailVerification>,
    outbox: MemoryOutbox,
    #[cfg(feature = "oauth")]
    oauth: oauth::OAuthState,
}

/// All identity stores in memory (and, with feature `oauth`, the provider stores).
#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

fn page_of<'a, K: Ord + Copy + 'a, T: Clone + 'a>(
    rows: impl Iterator<Item = (&'a K, &'a T)>,
    page: &PageRequest,
    key: impl Fn(&K) -> Uuid,
    id: impl Fn(&T) -> Uuid,
) -> Page<T> {
    let after = page.after_id();
    let take = page.effective_limit() as usize + 1;
    let items = rows
        .filter(|(k, _)| after.is_none_or(|a| key(k) > a))
        .take(take)
        .map(|(_, v)| v.clone())
        .collect();
    Page::from_overfetch(items, page, id)
}

fn check_version(what: &str, id: impl std::fmt::Display, stored: i64, given: i64) -> Result<()> {
    if stored == given {
        Ok(())
    } else {
        Err(Error::stale(what, id, given))
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut s = self.state.write().await;
        if s.tenants.contains_key(&tenant.id) {
            return Err(Error::AlreadyExists(format!(
                "tenant `{}` already exists",
                tenant.id
            )));
        }
        if s.slugs.contains_key(tenant.slug.as_str()) {
            return Err(Error::AlreadyExists(format!(
                "slug `{}` is taken",
                tenant.slug
            )));
        }
        s.slugs.insert(tenant.slug.as_str().to_owned(), tenant.id);
        s.tenants.insert(tenant.id, tenant.clone());
        Ok(())
    }

    async fn tenant(&self, id: TenantId) -> Result<Tenant> {
        let s = self.state.read().await;
        s.tenants
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Tenant> {
        let s = self.state.read().await;
        s.slugs
            .get(slug.as_str())
            .and_then(|id| s.tenants.get(id))
            .cloned()
            .ok_or_else(|| Error::not_found("tenant", slug))
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        let mut guard = self.state.write().await;
        let s = &mut *guard;
        let stored = s
            .tenants
            .get(&tenant.id)
            .ok_or_else(|| Error::not_found("tenant", tenant.id))?;
        check_version("tenant", tenant.id, stored.version, tenant.version)?;
        let old_slug = stored.slug.clone();
        if old_slug != tenant.slug {
            if s.slugs.contains_key(tenant.slug.as_str()) {
                return Err(Error::AlreadyExists(format!(
                    "slug `{}` is taken",
                    tenant.slug
                )));
            }
            s.slugs.remove(old_slug.as_str());
            s.slugs.insert(tenant.slug.as_str().to_owned(), tenant.id);
        }
        let mut updated = tenant.clone();
        updated.version += 1;
        s.tenants.insert(tenant.id, updated.clone());
        Ok(updated)
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let s = self.state.read().await;
        Ok(page_of(
            s.tenants.iter(),
            page,
            |k| k.as_uuid(),
            |t| t.id.as_uuid(),
        ))
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn insert_user(&self, user: &User) -> Result<()> {
        let mut s = self.state.write().await;
        if s.users.contains_key(&user.id) {
            return Err(Error::AlreadyExists(format!(
                "user `{}` already exists",
                user.id
            )));
        }
        let key = user.email.normalized();
        if s.emails.contains_key(&key) {
            return Err(Error::AlreadyExists(format!(
                "email `{}` is taken",
                user.email
            )));
        }
        s.emails.insert(key, user.id);
        s.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn user(&self, id: UserId) -> Result<User> {
        let s = self.state.read().await;
        s.users
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("user", id))
    }

    async fn user_by_email(&self, email: &Email) -> Result<User> {
        let s = self.state.read().await;
        s.emails
            .get(&email.normalized())
            .and_then(|id| s.users.get(id))
            .cloned()
            .ok_or_else(|| Error::not_found("user", email))
    }

    async fn update_user(&self, user: &User) -> Result<User> {
        let mut guard = self.state.write().await;
        let s = &mut *guard;
        let stored = s
            .users
            .get(&user.id)
            .ok_or_else(|| Error::not_found("user", user.id))?;
        check_version("user", user.id, stored.version, user.version)?;
        let (old, new) = (stored.email.normalized(), user.email.normalized());
        if old != new {
            if s.emails.contains_key(&new) {
                return Err(Error::AlreadyExists(format!(
                    "email `{}` is taken",
                    user.email
                )));
            }
            s.emails.remove(&old);
            s.emails.insert(new, user.id);
        }
        let mut updated = user.clone();
        updated.version += 1;
        s.users.insert(user.id, updated.clone());
        Ok(updated)
    }

    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        let s = self.state.read().await;
        Ok(page_of(
            s.users.iter(),
            page,
            |k| k.as_uuid(),
            |u| u.id.as_uuid(),
        ))
    }
}

#[async_trait]
impl MembershipStore for MemoryStore {
    async fn insert_membership(&self, tenant: TenantId, membership: &Membership) -> Result<()> {
        tenant.check_scope(membership.tenant_id)?;
        let mut guard = self.state.write().await;
        let s = &mut *guard;
        if !s.tenants.contains_key(&tenant) {
            return Err(Error::not_found("tenant", tenant));
        }
        if !s.users.contains_key(&membership.user_id) {
            return Err(Error::not_found("user", membership.user_id));
        }
        let part = s.partitions.entry(tenant).or_default();
        if part.member_index.contains_key(&membership.user_id)
            || part.memberships.contains_key(&membership.id)
        {
            return Err(Error::AlreadyExists(format!(
                "user `{}` is already a member of tenant `{tenant}`",
                membership.user_id
            )));
        }
        part.member_index.insert(membership.user_id, membership.id);
        part.memberships.insert(membership.id, membership.clone());
        Ok(())
    }

    async fn membership(&self, tenant: TenantId, user: UserId) -> Result<Membership> {
        let s = self.state.read().await;
        s.partitions
            .get(&tenant)
            .and_then(|p| {
                p.member_index
                    .get(&user)
                    .and_then(|id| p.memberships.get(id))
            })
            .cloned()
            .ok_or_else(|| Error::not_found("membership of user", user))
    }

    async fn update_membership(
        &self,
        tenant: TenantId,
        membership: &Membership,
    ) -> Result<Membership> {
        tenant.check_scope(membership.tenant_id)?;
        let mut s = self.state.write().await;
        let stored = s
            .partitions
            .get_mut(&tenant)
            .and_then(|p| p.memberships.get_mut(&membership.id))
            .filter(|m| m.user_id == membership.user_id)
            .ok_or_else(|| Error::not_found("membership", membership.id))?;
        check_version(
            "membership",
            membership.id,
            stored.version,
            membership.version,
        )?;
        let mut updated = membership.clone();
        updated.version += 1;
        *stored = updated.clone();
        Ok(updated)
    }

    async fn delete_membership(&self, tenant: TenantId, user: UserId) -> Result<()> {
        let mut s = self.state.write().await;
        let part = s
            .partitions
            .get_mut(&tenant)
            .ok_or_else(|| Error::not_found("membership of user", user))?;
        let id = part
            .member_index
            .remove(&user)
            .ok_or_else(|| Error::not_found("membership of user", user))?;
        part.memberships.remove(&id);
        Ok(())
    }

    async fn list_memberships(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Membership>> {
        let s = self.state.read().await;
        Ok(match s.partitions.get(&tenant) {
            Some(p) => page_of(
                p.memberships.iter(),
                page,
                |k| k.as_uuid(),
                |m| m.id.as_uuid(),
            ),
            None => Page {
                items: Vec::new(),
                next: None,
            },
        })
    }

    async fn list_user_memberships(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<Membership>> {
        let s = self.state.read().await;
        let mine: BTreeMap<MembershipId, &Membership> = s
            .partitions
            .values()
            .filter_map(|p| {
                p.member_index
                    .get(&user)
                    .and_then(|id| p.memberships.get(id))
            })
            .map(|m| (m.id, m))
            .collect();
        let page = page_of(mine.iter(), page, |k| k.as_uuid(), |m| m.id.as_uuid());
        Ok(page.map(|m| m.clone()))
    }
}

#[async_trait]
impl InvitationStore for MemoryStore {
    async fn insert_invitation(&self, tenant: TenantId, invitation: &Invitation) -> Result<()> {
        tenant.check_scope(invitation.tenant_id)?;
        let mut s = self.state.write().await;
        if !s.tenants.contains_key(&tenant) {
            return Err(Error::not_found("tenant", tenant));
        }
        let part = s.partitions.entry(tenant).or_default();
        if part.invitations.contains_key(&invitation.id)
            || part.invitation_tokens.contains_key(&invitation.token_hash)
        {
            return Err(Error::AlreadyExists(format!(
                "invitation `{}` already exists",
                invitation.id
            )));
        }
        part.invitation_tokens
            .insert(invitation.token_hash, invitation.id);
        part.invitations.insert(invitation.id, invitation.clone());
        Ok(())
    }

    async fn invitation(&self, tenant: TenantId, id: InvitationId) -> Result<Invitation> {
        let s = self.state.read().await;
        s.partitions
            .get(&tenant)
            .and_then(|p| p.invitations.get(&id))
            .cloned()
            .ok_or_else(|| Error::not_found("invitation", id))
    }

    async fn accept_invitation(
        &self,
        tenant: TenantId,
        token: &TokenHash,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Invitation> {
        let mut s = self.state.write().await;
        let invitation = s
            .partitions
            .get_mut(&tenant)
            .and_then(|p| {
                let id = p.invitation_tokens.get(token)?;
                p.invitations.get_mut(id)
            })
            .ok_or_else(|| Error::NotFound("invitation not found".into()))?;
        check_usable(
            "invitation",
            invitation.accepted_at,
            invitation.expires_at,
            now,
        )?;
        invitation.accepted_at = Some(now);
        invitation.accepted_by = Some(user);
        Ok(invitation.clone())
    }

    async fn list_invitations(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        let s = self.state.read().await;
        Ok(match s.partitions.get(&tenant) {
            Some(p) => page_of(
                p.invitations.iter(),
                page,
                |k| k.as_uuid(),
                |i| i.id.as_uuid(),
            ),
            None => Page {
                items: Vec::new(),
                next: None,
            },
        })
    }
}

#[async_trait]
impl VerificationStore for MemoryStore {
    async fn insert_verification(&self, verification: &EmailVerification) -> Result<()> {
        let mut s = self.state.write().await;
        if !s.users.contains_key(&verification.user_id) {
            return Err(Error::not_found("user", verification.user_id));
        }
        if s.verifications.contains_key(&verification.token_hash) {
            return Err(Error::AlreadyExists("verification already exists".into()));
        }
        s.verifications
            .insert(verification.token_hash, verification.clone());
        Ok(())
    }

    async fn consume_verification(
        &self,
        token: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<EmailVerification> {
        let mut s = self.state.write().await;
        let v = s
            .verifications
            .get_mut(token)
            .ok_or_else(|| Error::NotFound("email verification not found".into()))?;
        check_usable("email verification", v.consumed_at, v.expires_at, now)?;
        v.consumed_at = Some(now);
        Ok(v.clone())
    }
}

/// The outbox lives under the same lock as every other table.
#[async_trait]
impl OutboxStore for MemoryStore {
    async fn enqueue(&self, topic: &str, event: &Event) -> Result<()> {
        self.state.write().await.outbox.enqueue(topic, event)
    }

    async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        self.state.read().await.outbox.pending(limit)
    }

    async fn mark_sent(&self, ids: &[EventId], now: DateTime<Utc>) -> Result<u64> {
        Ok(self.state.write().await.outbox.mark_sent(ids, now))
    }

    async fn purge_sent(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(self.state.write().await.outbox.purge_sent(before))
    }
}
