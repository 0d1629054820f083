//! The identity store traits. Each backend (memory, SQLite, PostgreSQL) implements all
//! of them and passes the conformance suite (`conformance` feature).
//!
//! Contract shared by every method:
//! - Records are written exactly as given: validation, ids, hashing and timestamps are
//!   the caller's job (see [`crate::identity::Identity`]); stores keep what they get.
//! - A tenant-scoped method takes the [`TenantId`] first and never reads or writes rows
//!   of another tenant: a row of tenant B is `NotFound` when asked through tenant A.
//! - `update_*` methods take the record with the `version` the caller read. The store
//!   writes it only if the stored version is still that one, and returns the stored
//!   record with `version + 1`; otherwise `NotFound` (no such row) or `Conflict` (stale).
//!   Each call is atomic.
//! - Lists are in ascending id order, paginated with [`PageRequest`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::model::{Email, EmailVerification, Invitation, Membership, Slug, Tenant, User};
use super::token::TokenHash;
use crate::error::Result;
use crate::ids::{InvitationId, TenantId, UserId};
use crate::page::{Page, PageRequest};

/// Tenants (organizations). Slugs are unique across all tenants.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Inserts a new tenant; `AlreadyExists` if its id or slug is taken.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()>;
    /// The tenant with this id; `NotFound` if none.
    async fn tenant(&self, id: TenantId) -> Result<Tenant>;
    /// The tenant with this slug; `NotFound` if none.
    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Tenant>;
    /// Replaces a tenant if its version is current (see the module docs); `AlreadyExists`
    /// if the new slug is taken.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<Tenant>;
    /// A page of all tenants.
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>>;
}

/// Users: global identities. Emails are unique case-insensitively.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a new user; `AlreadyExists` if its id or (normalized) email is taken.
    async fn insert_user(&self, user: &User) -> Result<()>;
    /// The user with this id; `NotFound` if none.
    async fn user(&self, id: UserId) -> Result<User>;
    /// The user with this email, compared case-insensitively; `NotFound` if none.
    async fn user_by_email(&self, email: &Email) -> Result<User>;
    /// Replaces a user if its version is current; `AlreadyExists` if the new email is
    /// taken.
    async fn update_user(&self, user: &User) -> Result<User>;
    /// A page of all users.
    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>>;
}

/// Memberships of users in tenants: at most one per (tenant, user).
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// Inserts a membership of `tenant`; `InvalidInput` if the record names another
    /// tenant, `AlreadyExists` if the user is already a member, `NotFound` if the tenant
    /// or user does not exist.
    async fn insert_membership(&self, tenant: TenantId, membership: &Membership) -> Result<()>;
    /// The membership of `user` in `tenant`; `NotFound` if none.
    async fn membership(&self, tenant: TenantId, user: UserId) -> Result<Membership>;
    /// Replaces a membership (its roles) if its version is current.
    async fn update_membership(
        &self,
        tenant: TenantId,
        membership: &Membership,
    ) -> Result<Membership>;
    /// Deletes the membership of `user` in `tenant` (and nothing else); `NotFound` if
    /// none.
    async fn delete_membership(&self, tenant: TenantId, user: UserId) -> Result<()>;
    /// A page of the memberships of `tenant`.
    async fn list_memberships(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Membership>>;
    /// A page of the memberships of `user`, across tenants.
    async fn list_user_memberships(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<Membership>>;
}

/// Invitations to join a tenant, found by the hash of their single-use token.
#[async_trait]
pub trait InvitationStore: Send + Sync {
    /// Inserts an invitation of `tenant`; `InvalidInput` if the record names another
    /// tenant, `NotFound` if the tenant does not exist.
    async fn insert_invitation(&self, tenant: TenantId, invitation: &Invitation) -> Result<()>;
    /// The invitation with this id in `tenant`; `NotFound` if none.
    async fn invitation(&self, tenant: TenantId, id: InvitationId) -> Result<Invitation>;
    /// Atomically marks the invitation whose token hashes to `token` as accepted by
    /// `user` at `now`, and returns it. Exactly one of any number of concurrent calls
    /// succeeds. `NotFound` if `tenant` has no such invitation, `Conflict` if it was
    /// accepted already, `PermissionDenied` if it expired (`expires_at <= now`).
    async fn accept_invitation(
        &self,
        tenant: TenantId,
        token: &TokenHash,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Invitation>;
    /// A page of the invitations of `tenant`.
    async fn list_invitations(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>>;
}

/// Email-verification requests, found by the hash of their single-use token.
#[async_trait]
pub trait VerificationStore: Send + Sync {
    /// Inserts a verification request; `NotFound` if the user does not exist.
    async fn insert_verification(&self, verification: &EmailVerification) -> Result<()>;
    /// Atomically marks the request whose token hashes to `token` as consumed at `now`
    /// and returns it. Exactly one of any number of concurrent calls succeeds.
    /// `NotFound` if there is no such request, `Conflict` if it was consumed already,
    /// `PermissionDenied` if it expired.
    async fn consume_verification(
        &self,
        token: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<EmailVerification>;
}

/// Everything the identity service needs, as one object-safe trait.
pub trait IdentityStore:
    TenantStore + UserStore + MembershipStore + InvitationStore + VerificationStore
{
}

impl<T> IdentityStore for T where
    T: TenantStore + UserStore + MembershipStore + InvitationStore + VerificationStore
{
}

/// Shared rule of the token methods: why a token that exists cannot be used.
pub(crate) fn check_usable(
    what: &str,
    used_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    if used_at.is_some() {
        return Err(crate::Error::Conflict(format!("{what} was already used")));
    }
    if expires_at <= now {
        return Err(crate::Error::PermissionDenied(format!(
            "{what} has expired"
        )));
    }
    Ok(())
}
