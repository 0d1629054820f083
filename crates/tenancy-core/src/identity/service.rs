//! [`Identity`]: the identity API an application embeds. It validates input, assigns
//! ids and timestamps, hashes passwords and tokens, and calls one [`IdentityStore`].
//! Bad input is `InvalidInput` naming the field, and nothing is written.

use std::sync::Arc;

use chrono::Duration;

use super::model::{
    DisplayName, Email, EmailVerification, Invitation, Membership, RoleName, Slug, Tenant,
    TenantStatus, User, UserStatus, validate_json_object,
};
use super::password::{PasswordHash, verify_password};
use super::store::IdentityStore;
use super::token::SecretToken;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{InvitationId, MembershipId, TenantId, UserId, VerificationId};
use crate::page::{Page, PageRequest};

/// How long an invitation stays valid unless the caller says otherwise.
pub const DEFAULT_INVITATION_TTL: Duration = Duration::days(7);
/// How long an email-verification token stays valid unless the caller says otherwise.
pub const DEFAULT_VERIFICATION_TTL: Duration = Duration::hours(24);
/// The longest validity a single-use token may be given.
pub const MAX_TOKEN_TTL: Duration = Duration::days(30);

/// Input of [`Identity::create_tenant`].
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// Unique handle (see [`Slug`]).
    pub slug: String,
    /// Name shown to people.
    pub display_name: String,
    /// JSON object owned by the application (`Null` = empty).
    pub metadata: serde_json::Value,
}

/// Input of [`Identity::update_tenant`]: the fields to change.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    /// New slug.
    pub slug: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New metadata (replaces the old document).
    pub metadata: Option<serde_json::Value>,
}

/// Input of [`Identity::create_user`].
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Email address, unique case-insensitively.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// Profile attributes (JSON object; `Null` = empty).
    pub attributes: serde_json::Value,
    /// Optional initial password (hashed with argon2id, never stored in clear).
    pub password: Option<String>,
}

/// Input of [`Identity::update_user`]: the fields to change.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// New email; marks the address unverified.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New attributes (replaces the old document).
    pub attributes: Option<serde_json::Value>,
    /// New status.
    pub status: Option<UserStatus>,
}

/// The identity service over one store. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn IdentityStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The service over `store`, on the system clock.
    #[must_use]
    pub fn new(store: Arc<dyn IdentityStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock (tests, simulations).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn IdentityStore> {
        &self.store
    }

    // ----- tenants -----

    /// Creates an active tenant.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<Tenant> {
        let slug = Slug::parse(&new.slug)?;
        let display_name = DisplayName::parse(&new.display_name)?;
        let metadata = validate_json_object("metadata", new.metadata)?;
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug,
            display_name,
            status: TenantStatus::Active,
            metadata,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        self.store.insert_tenant(&tenant).await?;
        Ok(tenant)
    }

    /// The tenant with this id.
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant> {
        self.store.tenant(id).await
    }

    /// The tenant with this slug.
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant> {
        self.store.tenant_by_slug(&Slug::parse(slug)?).await
    }

    /// Changes a tenant, if `expected_version` is still current (else `Conflict`). A
    /// deleted tenant cannot be changed.
    pub async fn update_tenant(
        &self,
        id: TenantId,
        expected_version: i64,
        changes: TenantChanges,
    ) -> Result<Tenant> {
        let slug = changes.slug.as_deref().map(Slug::parse).transpose()?;
        let display_name = changes
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()?;
        let metadata = changes
            .metadata
            .map(|m| validate_json_object("metadata", m))
            .transpose()?;
        let mut tenant = self.tenant_at(id, expected_version).await?;
        if tenant.status == TenantStatus::Deleted {
            return Err(Error::Conflict(format!("tenant `{id}` is deleted")));
        }
        if let Some(slug) = slug {
            tenant.slug = slug;
        }
        if let Some(name) = display_name {
            tenant.display_name = name;
        }
        if let Some(metadata) = metadata {
            tenant.metadata = metadata;
        }
        tenant.updated_at = self.clock.now();
        self.store.update_tenant(&tenant).await
    }

    /// Moves a tenant to `status` (suspend, reactivate, soft-delete), if
    /// `expected_version` is still current. A deleted tenant stays deleted.
    pub async fn set_tenant_status(
        &self,
        id: TenantId,
        expected_version: i64,
        status: TenantStatus,
    ) -> Result<Tenant> {
        let mut tenant = self.tenant_at(id, expected_version).await?;
        if tenant.status == TenantStatus::Deleted && status != TenantStatus::Deleted {
            return Err(Error::Conflict(format!("tenant `{id}` is deleted")));
        }
        tenant.status = status;
        tenant.updated_at = self.clock.now();
        self.store.update_tenant(&tenant).await
    }

    /// A page of all tenants.
    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        self.store.list_tenants(page).await
    }

    async fn tenant_at(&self, id: TenantId, expected_version: i64) -> Result<Tenant> {
        let tenant = self.store.tenant(id).await?;
        if tenant.version != expected_version {
            return Err(Error::stale("tenant", id, expected_version));
        }
        Ok(tenant)
    }

    // ----- users -----

    /// Creates an active user with an unverified email.
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let email = Email::parse(&new.email)?;
        let display_name = DisplayName::parse(&new.display_name)?;
        let attributes = validate_json_object("attributes", new.attributes)?;
        let password_hash = new.password.as_deref().map(PasswordHash::new).transpose()?;
        let now = self.clock.now();
        let user = User {
            id: UserId::new(),
            email,
            email_verified: false,
            display_name,
            attributes,
            status: UserStatus::Active,
            password_hash,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        self.store.insert_user(&user).await?;
        Ok(user)
    }

    /// The user with this id.
    pub async fn user(&self, id: UserId) -> Result<User> {
        self.store.user(id).await
    }

    /// The user with this email (case-insensitive).
    pub async fn user_by_email(&self, email: &str) -> Result<User> {
        self.store.user_by_email(&Email::parse(email)?).await
    }

    /// Changes a user, if `expected_version` is still current. A new email is unverified.
    pub async fn update_user(
        &self,
        id: UserId,
        expected_version: i64,
        changes: UserChanges,
    ) -> Result<User> {
        let email = changes.email.as_deref().map(Email::parse).transpose()?;
        let display_name = changes
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()?;
        let attributes = changes
            .attributes
            .map(|a| validate_json_object("attributes", a))
            .transpose()?;
        let mut user = self.user_at(id, expected_version).await?;
        if let Some(email) = email {
            if email.normalized() != user.email.normalized() {
                user.email_verified = false;
            }
            user.email = email;
        }
        if let Some(name) = display_name {
            user.display_name = name;
        }
        if let Some(attributes) = attributes {
            user.attributes = attributes;
        }
        if let Some(status) = changes.status {
            user.status = status;
        }
        user.updated_at = self.clock.now();
        self.store.update_user(&user).await
    }

    /// Sets (or replaces) a user's password, if `expected_version` is still current.
    pub async fn set_password(
        &self,
        id: UserId,
        expected_version: i64,
        password: &str,
    ) -> Result<User> {
        let hash = PasswordHash::new(password)?;
        let mut user = self.user_at(id, expected_version).await?;
        user.password_hash = Some(hash);
        user.updated_at = self.clock.now();
        self.store.update_user(&user).await
    }

    /// Checks an email and password. Unknown email, missing password, wrong password and
    /// a disabled user all give the same `Unauthenticated` error after the same argon2id
    /// work, so the answer does not reveal which accounts exist.
    pub async fn authenticate(&self, email: &str, password: &str) -> Result<User> {
        let denied = || Error::Unauthenticated("invalid email or password".into());
        let user = match Email::parse(email) {
            Ok(email) => match self.store.user_by_email(&email).await {
                Ok(user) => Some(user),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        let ok = verify_password(
            user.as_ref().and_then(|u| u.password_hash.as_ref()),
            password,
        );
        match user {
            Some(user) if ok && user.status == UserStatus::Active => Ok(user),
            _ => Err(denied()),
        }
    }

    /// A page of all users.
    pub async fn list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        self.store.list_users(page).await
    }

    async fn user_at(&self, id: UserId, expected_version: i64) -> Result<User> {
        let user = self.store.user(id).await?;
        if user.version != expected_version {
            return Err(Error::stale("user", id, expected_version));
        }
        Ok(user)
    }

    // ----- memberships -----

    /// Makes `user` a member of `tenant` with `roles`. The tenant must exist and not be
    /// deleted; `AlreadyExists` if the user is a member already.
    pub async fn add_member<S: AsRef<str>>(
        &self,
        tenant: TenantId,
        user: UserId,
        roles: &[S],
    ) -> Result<Membership> {
        let roles = RoleName::parse_all(roles)?;
        self.usable_tenant(tenant).await?;
        self.store.user(user).await?;
        let now = self.clock.now();
        let membership = Membership {
            id: MembershipId::new(),
            tenant_id: tenant,
            user_id: user,
            roles,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        self.store.insert_membership(tenant, &membership).await?;
        Ok(membership)
    }

    /// The membership of `user` in `tenant`.
    pub async fn membership(&self, tenant: TenantId, user: UserId) -> Result<Membership> {
        self.store.membership(tenant, user).await
    }

    /// Replaces the roles of `user` in `tenant`, if `expected_version` is still current.
    pub async fn set_member_roles<S: AsRef<str>>(
        &self,
        tenant: TenantId,
        user: UserId,
        expected_version: i64,
        roles: &[S],
    ) -> Result<Membership> {
        let roles = RoleName::parse_all(roles)?;
        let mut membership = self.store.membership(tenant, user).await?;
        if membership.version != expected_version {
            return Err(Error::stale("membership", membership.id, expected_version));
        }
        membership.roles = roles;
        membership.updated_at = self.clock.now();
        self.store.update_membership(tenant, &membership).await
    }

    /// Removes `user` from `tenant` (only that membership; the user and their other
    /// memberships stay).
    pub async fn remove_member(&self, tenant: TenantId, user: UserId) -> Result<()> {
        self.store.delete_membership(tenant, user).await
    }

    /// A page of the members of `tenant`.
    pub async fn list_members(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Membership>> {
        self.store.list_memberships(tenant, page).await
    }

    /// A page of the tenants `user` belongs to.
    pub async fn list_user_memberships(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<Membership>> {
        self.store.list_user_memberships(user, page).await
    }

    // ----- invitations -----

    /// Invites `email` to `tenant` with `roles`, valid for `ttl` (1 minute to 30 days).
    /// Returns the invitation and its secret token: the only time the token is seen.
    pub async fn invite<S: AsRef<str>>(
        &self,
        tenant: TenantId,
        email: &str,
        roles: &[S],
        ttl: Duration,
    ) -> Result<(Invitation, SecretToken)> {
        let email = Email::parse(email)?;
        let roles = RoleName::parse_all(roles)?;
        check_ttl(ttl)?;
        self.usable_tenant(tenant).await?;
        let token = SecretToken::generate()?;
        let now = self.clock.now();
        let invitation = Invitation {
            id: InvitationId::new(),
            tenant_id: tenant,
            email,
            roles,
            token_hash: token.hash(),
            created_at: now,
            expires_at: now + ttl,
            accepted_at: None,
            accepted_by: None,
        };
        self.store.insert_invitation(tenant, &invitation).await?;
        Ok((invitation, token))
    }

    /// Accepts an invitation of `tenant` for `user`, who holds its token (the token is
    /// the proof). The user becomes a member with the invitation's roles (added to any
    /// roles they already hold). A token works once, and not after it expires.
    pub async fn accept_invitation(
        &self,
        tenant: TenantId,
        token: &str,
        user: UserId,
    ) -> Result<Membership> {
        let token = SecretToken::from_presented("token", token)?;
        self.store.user(user).await?;
        self.usable_tenant(tenant).await?;
        let invitation = self
            .store
            .accept_invitation(tenant, &token.hash(), user, self.clock.now())
            .await?;
        loop {
            match self.store.membership(tenant, user).await {
                Ok(mut existing) => {
                    let mut roles = existing.roles.clone();
                    roles.extend(invitation.roles.iter().cloned());
                    roles.sort();
                    roles.dedup();
                    existing.roles = roles;
                    existing.updated_at = self.clock.now();
                    match self.store.update_membership(tenant, &existing).await {
                        Err(e) if e.kind() == ErrorKind::Conflict => {}
                        other => return other,
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let now = self.clock.now();
                    let membership = Membership {
                        id: MembershipId::new(),
                        tenant_id: tenant,
                        user_id: user,
                        roles: invitation.roles.clone(),
                        created_at: now,
                        updated_at: now,
                        version: 1,
                    };
                    match self.store.insert_membership(tenant, &membership).await {
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                        Ok(()) => return Ok(membership),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The invitation with this id in `tenant`.
    pub async fn invitation(&self, tenant: TenantId, id: InvitationId) -> Result<Invitation> {
        self.store.invitation(tenant, id).await
    }

    /// A page of the invitations of `tenant`.
    pub async fn list_invitations(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        self.store.list_invitations(tenant, page).await
    }

    // ----- email verification -----

    /// Starts verification of the user's current email, valid for `ttl`. Returns the
    /// secret token to mail to the user: the only time it is seen.
    pub async fn start_email_verification(
        &self,
        user: UserId,
        ttl: Duration,
    ) -> Result<SecretToken> {
        check_ttl(ttl)?;
        let user = self.store.user(user).await?;
        let token = SecretToken::generate()?;
        let now = self.clock.now();
        let verification = EmailVerification {
            id: VerificationId::new(),
            user_id: user.id,
            email: user.email,
            token_hash: token.hash(),
            created_at: now,
            expires_at: now + ttl,
            consumed_at: None,
        };
        self.store.insert_verification(&verification).await?;
        Ok(token)
    }

    /// Confirms an email verification: the user's email becomes verified, if it is still
    /// the address the token was sent to (else `Conflict`). A token works once.
    pub async fn confirm_email_verification(&self, token: &str) -> Result<User> {
        let token = SecretToken::from_presented("token", token)?;
        let verification = self
            .store
            .consume_verification(&token.hash(), self.clock.now())
            .await?;
        loop {
            let mut user = self.store.user(verification.user_id).await?;
            if user.email.normalized() != verification.email.normalized() {
                return Err(Error::Conflict(
                    "the email address changed after verification started".into(),
                ));
            }
            if user.email_verified {
                return Ok(user);
            }
            user.email_verified = true;
            user.updated_at = self.clock.now();
            match self.store.update_user(&user).await {
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => return other,
            }
        }
    }

    async fn usable_tenant(&self, tenant: TenantId) -> Result<Tenant> {
        let t = self.store.tenant(tenant).await?;
        if t.status == TenantStatus::Deleted {
            return Err(Error::Conflict(format!("tenant `{tenant}` is deleted")));
        }
        Ok(t)
    }
}

fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::minutes(1) || ttl > MAX_TOKEN_TTL {
        return Err(Error::invalid(
            "ttl",
            "must be between 1 minute and 30 days",
        ));
    }
    Ok(())
}
