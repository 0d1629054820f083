//! What the SQL backends share: the identity queries (written once, with `$N`
//! placeholders that both SQLite and PostgreSQL accept), row decoding and the mapping
//! of constraint violations to error kinds. Each backend instantiates
//! [`sql_identity_store!`] for its own database type and supplies `read`/`write`
//! transactions for a [`Scope`] (PostgreSQL sets the row-level-security settings there).

use crate::error::{Error, Result};
use crate::ids::{TenantId, UserId};

#[cfg(feature = "oauth")]
pub(crate) mod oauth;
pub(crate) mod outbox;

/// Which rows an operation may touch; PostgreSQL turns it into `app.*` settings.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(feature = "postgres"),
    expect(dead_code, reason = "only PostgreSQL reads the scope's values")
)]
pub(crate) enum Scope {
    /// Global tables only (tenants, users, email verifications).
    Global,
    /// The rows of one tenant.
    Tenant(TenantId),
    /// One user's memberships across tenants (read only).
    User(UserId),
    /// No tenant, but the rows of every tenant that expired before this instant, to
    /// delete them (PostgreSQL: `app.purge_before`).
    #[cfg(feature = "oauth")]
    Purge(chrono::DateTime<chrono::Utc>),
}

/// Maps an error of an `INSERT`/`UPDATE`: a unique violation becomes `AlreadyExists`
/// (with `taken(constraint)` as the message), a foreign-key violation `NotFound`.
pub(crate) fn write_error(
    err: sqlx::Error,
    taken: impl FnOnce(&str) -> String,
    missing: impl FnOnce() -> String,
) -> Error {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            let which = db.constraint().unwrap_or_else(|| db.message());
            return Error::AlreadyExists(taken(which));
        }
        if db.is_foreign_key_violation() {
            return Error::NotFound(missing());
        }
    }
    Error::from(err)
}

/// Stored data that no longer validates is a storage fault, not the caller's input.
pub(crate) fn stored<T>(what: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| Error::Internal(format!("stored {what} is invalid: {e}")))
}

/// Generates the identity store traits for `$store` over database `$db`. `$store` must
/// have `async fn read(&self, Scope) -> Result<Transaction<'static, $db>>` and
/// `async fn write(&self, Scope) -> Result<Transaction<'static, $db>>`.
macro_rules! sql_identity_store {
    ($store:ty, $db:ty) => {
        mod identity_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use sqlx::types::Json;
            use uuid::Uuid;

            use super::*;
            use crate::error::{Error, Result};
            use crate::identity::{
                DisplayName, Email, EmailVerification, Invitation, InvitationStore, Membership,
                MembershipStore, PasswordHash, RoleName, Slug, Tenant, TenantStore, TokenHash, User,
                UserStore, VerificationStore, check_usable,
            };
            use crate::ids::{InvitationId, MembershipId, TenantId, UserId, VerificationId};
            use crate::page::{Page, PageRequest};
            use crate::sql::{Scope, stored, write_error};

            type Row = <$db as sqlx::Database>::Row;

            fn after(page: &PageRequest) -> Uuid {
                page.after_id().unwrap_or(Uuid::nil())
            }

            fn overfetch(page: &PageRequest) -> i64 {
                i64::from(page.effective_limit()) + 1
            }

            fn tenant_row(row: &Row) -> Result<Tenant> {
                Ok(Tenant {
                    id: TenantId::from_uuid(row.try_get("id")?),
                    slug: stored("slug", Slug::parse(row.try_get("slug")?))?,
                    display_name: stored("display name", DisplayName::parse(row.try_get("display_name")?))?,
                    status: stored("status", row.try_get::<&str, _>("status")?.parse())?,
                    metadata: row.try_get::<Json<serde_json::Value>, _>("metadata")?.0,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    version: row.try_get("version")?,
                })
            }

            fn user_row(row: &Row) -> Result<User> {
                let hash: Option<&str> = row.try_get("password_hash")?;
                Ok(User {
                    id: UserId::from_uuid(row.try_get("id")?),
                    email: stored("email", Email::parse(row.try_get("email")?))?,
                    email_verified: row.try_get("email_verified")?,
                    display_name: stored("display name", DisplayName::parse(row.try_get("display_name")?))?,
                    attributes: row.try_get::<Json<serde_json::Value>, _>("attributes")?.0,
                    status: stored("status", row.try_get::<&str, _>("status")?.parse())?,
                    password_hash: hash.map(PasswordHash::from_phc).transpose()?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    version: row.try_get("version")?,
                })
            }

            fn membership_row(row: &Row) -> Result<Membership> {
                Ok(Membership {
                    id: MembershipId::from_uuid(row.try_get("id")?),
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    roles: row.try_get::<Json<Vec<RoleName>>, _>("roles")?.0,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    version: row.try_get("version")?,
                })
            }

            fn invitation_row(row: &Row) -> Result<Invitation> {
                Ok(Invitation {
                    id: InvitationId::from_uuid(row.try_get("id")?),
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    email: stored("email", Email::parse(row.try_get("email")?))?,
                    roles: row.try_get::<Json<Vec<RoleName>>, _>("roles")?.0,
                    token_hash: TokenHash::from_slice(row.try_get("token_hash")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    accepted_at: row.try_get("accepted_at")?,
                    accepted_by: row.try_get::<Option<Uuid>, _>("accepted_by")?.map(UserId::from_uuid),
                })
            }

            fn verification_row(row: &Row) -> Result<EmailVerification> {
                Ok(EmailVerification {
                    id: VerificationId::from_uuid(row.try_get("id")?),
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    email: stored("email", Email::parse(row.try_get("email")?))?,
                    token_hash: TokenHash::from_slice(row.try_get("token_hash")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    consumed_at: row.try_get("consumed_at")?,
                })
            }

            /// After a versioned `UPDATE` matched nothing: `NotFound` or `Conflict`.
            fn missing_or_stale(exists: bool, what: &str, id: impl std::fmt::Display, version: i64) -> Error {
                if exists { Error::stale(what, id, version) } else { Error::not_found(what, id) }
            }

            #[async_trait]
            impl TenantStore for $store {
                async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query(
                        "INSERT INTO tenants (id, slug, display_name, status, metadata, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(t.id.as_uuid())
                    .bind(t.slug.as_str())
                    .bind(t.display_name.as_str())
                    .bind(t.status.as_str())
                    .bind(Json(&t.metadata))
                    .bind(t.created_at)
                    .bind(t.updated_at)
                    .bind(t.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |c| if c.contains("slug") {
                        format!("slug `{}` is taken", t.slug)
                    } else {
                        format!("tenant `{}` already exists", t.id)
                    }, || "tenant not found".into()))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn tenant(&self, id: TenantId) -> Result<Tenant> {
                    let mut tx = self.read(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(tenant_row).transpose()?.ok_or_else(|| Error::not_found("tenant", id))
                }

                async fn tenant_by_slug(&self, slug: &Slug) -> Result<Tenant> {
                    let mut tx = self.read(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM tenants WHERE slug = $1")
                        .bind(slug.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(tenant_row).transpose()?.ok_or_else(|| Error::not_found("tenant", slug))
                }

                async fn update_tenant(&self, t: &Tenant) -> Result<Tenant> {
                    let mut tx = self.write(Scope::Global).await?;
                    let row = sqlx::query(
                        "UPDATE tenants SET slug = $2, display_name = $3, status = $4, metadata = $5, \
                         updated_at = $6, version = version + 1 WHERE id = $1 AND version = $7 RETURNING *",
                    )
                    .bind(t.id.as_uuid())
                    .bind(t.slug.as_str())
                    .bind(t.display_name.as_str())
                    .bind(t.status.as_str())
                    .bind(Json(&t.metadata))
                    .bind(t.updated_at)
                    .bind(t.version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("slug `{}` is taken", t.slug), || "tenant not found".into()))?;
                    let Some(row) = row else {
                        let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
                            .bind(t.id.as_uuid())
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                        return Err(missing_or_stale(exists, "tenant", t.id, t.version));
                    };
                    let updated = tenant_row(&row)?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
                    let mut tx = self.read(Scope::Global).await?;
                    let rows = sqlx::query("SELECT * FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(after(page))
                        .bind(overfetch(page))
                        .fetch_all(&mut *tx)
                        .await?;
                    let items = rows.iter().map(tenant_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |t| t.id.as_uuid()))
                }
            }

            #[async_trait]
            impl UserStore for $store {
                async fn insert_user(&self, u: &User) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query(
                        "INSERT INTO users (id, email, email_normalized, email_verified, display_name, attributes, \
                         status, password_hash, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(u.id.as_uuid())
                    .bind(u.email.as_str())
                    .bind(u.email.normalized())
                    .bind(u.email_verified)
                    .bind(u.display_name.as_str())
                    .bind(Json(&u.attributes))
                    .bind(u.status.as_str())
                    .bind(u.password_hash.as_ref().map(PasswordHash::as_phc))
                    .bind(u.created_at)
                    .bind(u.updated_at)
                    .bind(u.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |c| if c.contains("email") {
                        format!("email `{}` is taken", u.email)
                    } else {
                        format!("user `{}` already exists", u.id)
                    }, || "user not found".into()))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn user(&self, id: UserId) -> Result<User> {
                    let mut tx = self.read(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(user_row).transpose()?.ok_or_else(|| Error::not_found("user", id))
                }

                async fn user_by_email(&self, email: &Email) -> Result<User> {
                    let mut tx = self.read(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM users WHERE email_normalized = $1")
                        .bind(email.normalized())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(user_row).transpose()?.ok_or_else(|| Error::not_found("user", email))
                }

                async fn update_user(&self, u: &User) -> Result<User> {
                    let mut tx = self.write(Scope::Global).await?;
                    let row = sqlx::query(
                        "UPDATE users SET email = $2, email_normalized = $3, email_verified = $4, display_name = $5, \
                         attributes = $6, status = $7, password_hash = $8, updated_at = $9, version = version + 1 \
                         WHERE id = $1 AND version = $10 RETURNING *",
                    )
                    .bind(u.id.as_uuid())
                    .bind(u.email.as_str())
                    .bind(u.email.normalized())
                    .bind(u.email_verified)
                    .bind(u.display_name.as_str())
                    .bind(Json(&u.attributes))
                    .bind(u.status.as_str())
                    .bind(u.password_hash.as_ref().map(PasswordHash::as_phc))
                    .bind(u.updated_at)
                    .bind(u.version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("email `{}` is taken", u.email), || "user not found".into()))?;
                    let Some(row) = row else {
                        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
                            .bind(u.id.as_uuid())
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                        return Err(missing_or_stale(exists, "user", u.id, u.version));
                    };
                    let updated = user_row(&row)?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn list_users(&self, page: &PageRequest) -> Result<Page<User>> {
                    let mut tx = self.read(Scope::Global).await?;
                    let rows = sqlx::query("SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(after(page))
                        .bind(overfetch(page))
                        .fetch_all(&mut *tx)
                        .await?;
                    let items = rows.iter().map(user_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |u| u.id.as_uuid()))
                }
            }

            #[async_trait]
            impl MembershipStore for $store {
                async fn insert_membership(&self, tenant: TenantId, m: &Membership) -> Result<()> {
                    tenant.check_scope(m.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO memberships (id, tenant_id, user_id, roles, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(m.id.as_uuid())
                    .bind(tenant.as_uuid())
                    .bind(m.user_id.as_uuid())
                    .bind(Json(&m.roles))
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .bind(m.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| format!("user `{}` is already a member of tenant `{tenant}`", m.user_id),
                        || format!("tenant `{tenant}` or user `{}` not found", m.user_id),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn membership(&self, tenant: TenantId, user: UserId) -> Result<Membership> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT * FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                        .bind(tenant.as_uuid())
                        .bind(user.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref()
                        .map(membership_row)
                        .transpose()?
                        .ok_or_else(|| Error::not_found("membership of user", user))
                }

                async fn update_membership(&self, tenant: TenantId, m: &Membership) -> Result<Membership> {
                    tenant.check_scope(m.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query(
                        "UPDATE memberships SET roles = $3, updated_at = $4, version = version + 1 \
                         WHERE tenant_id = $1 AND id = $2 AND user_id = $5 AND version = $6 RETURNING *",
                    )
                    .bind(tenant.as_uuid())
                    .bind(m.id.as_uuid())
                    .bind(Json(&m.roles))
                    .bind(m.updated_at)
                    .bind(m.user_id.as_uuid())
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        let exists = sqlx::query("SELECT 1 FROM memberships WHERE tenant_id = $1 AND id = $2 AND user_id = $3")
                            .bind(tenant.as_uuid())
                            .bind(m.id.as_uuid())
                            .bind(m.user_id.as_uuid())
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                        return Err(missing_or_stale(exists, "membership", m.id, m.version));
                    };
                    let updated = membership_row(&row)?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_membership(&self, tenant: TenantId, user: UserId) -> Result<()> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    let done = sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                        .bind(tenant.as_uuid())
                        .bind(user.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found("membership of user", user));
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_memberships(&self, tenant: TenantId, page: &PageRequest) -> Result<Page<Membership>> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let rows = sqlx::query(
                        "SELECT * FROM memberships WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    )
                    .bind(tenant.as_uuid())
                    .bind(after(page))
                    .bind(overfetch(page))
                    .fetch_all(&mut *tx)
                    .await?;
                    let items = rows.iter().map(membership_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |m| m.id.as_uuid()))
                }

                async fn list_user_memberships(&self, user: UserId, page: &PageRequest) -> Result<Page<Membership>> {
                    let mut tx = self.read(Scope::User(user)).await?;
                    let rows = sqlx::query(
                        "SELECT * FROM memberships WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    )
                    .bind(user.as_uuid())
                    .bind(after(page))
                    .bind(overfetch(page))
                    .fetch_all(&mut *tx)
                    .await?;
                    let items = rows.iter().map(membership_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |m| m.id.as_uuid()))
                }
            }

            #[async_trait]
            impl InvitationStore for $store {
                async fn insert_invitation(&self, tenant: TenantId, i: &Invitation) -> Result<()> {
                    tenant.check_scope(i.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO invitations (id, tenant_id, email, roles, token_hash, created_at, expires_at, \
                         accepted_at, accepted_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(i.id.as_uuid())
                    .bind(tenant.as_uuid())
                    .bind(i.email.as_str())
                    .bind(Json(&i.roles))
                    .bind(&i.token_hash.as_bytes()[..])
                    .bind(i.created_at)
                    .bind(i.expires_at)
                    .bind(i.accepted_at)
                    .bind(i.accepted_by.map(|u| u.as_uuid()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| format!("invitation `{}` already exists", i.id),
                        || format!("tenant `{tenant}` not found"),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn invitation(&self, tenant: TenantId, id: InvitationId) -> Result<Invitation> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT * FROM invitations WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(invitation_row).transpose()?.ok_or_else(|| Error::not_found("invitation", id))
                }

                async fn accept_invitation(
                    &self,
                    tenant: TenantId,
                    token: &TokenHash,
                    user: UserId,
                    now: DateTime<Utc>,
                ) -> Result<Invitation> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT * FROM invitations WHERE tenant_id = $1 AND token_hash = $2")
                        .bind(tenant.as_uuid())
                        .bind(&token.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    let mut invitation = row
                        .as_ref()
                        .map(invitation_row)
                        .transpose()?
                        .ok_or_else(|| Error::NotFound("invitation not found".into()))?;
                    check_usable("invitation", invitation.accepted_at, invitation.expires_at, now)?;
                    let done = sqlx::query(
                        "UPDATE invitations SET accepted_at = $3, accepted_by = $4 \
                         WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL",
                    )
                    .bind(tenant.as_uuid())
                    .bind(invitation.id.as_uuid())
                    .bind(now)
                    .bind(user.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| "invitation conflict".into(), || format!("user `{user}` not found")))?;
                    if done.rows_affected() == 0 {
                        return Err(Error::Conflict("invitation was already used".into()));
                    }
                    tx.commit().await?;
                    invitation.accepted_at = Some(now);
                    invitation.accepted_by = Some(user);
                    Ok(invitation)
                }

                async fn list_invitations(&self, tenant: TenantId, page: &PageRequest) -> Result<Page<Invitation>> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let rows = sqlx::query(
                        "SELECT * FROM invitations WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    )
                    .bind(tenant.as_uuid())
                    .bind(after(page))
                    .bind(overfetch(page))
                    .fetch_all(&mut *tx)
                    .await?;
                    let items = rows.iter().map(invitation_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |i| i.id.as_uuid()))
                }
            }

            #[async_trait]
            impl VerificationStore for $store {
                async fn insert_verification(&self, v: &EmailVerification) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query(
                        "INSERT INTO email_verifications (id, user_id, email, token_hash, created_at, expires_at, \
                         consumed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(v.id.as_uuid())
                    .bind(v.user_id.as_uuid())
                    .bind(v.email.as_str())
                    .bind(&v.token_hash.as_bytes()[..])
                    .bind(v.created_at)
                    .bind(v.expires_at)
                    .bind(v.consumed_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| "verification already exists".into(),
                        || format!("user `{}` not found", v.user_id),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn consume_verification(&self, token: &TokenHash, now: DateTime<Utc>) -> Result<EmailVerification> {
                    let mut tx = self.write(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM email_verifications WHERE token_hash = $1")
                        .bind(&token.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    let mut v = row
                        .as_ref()
                        .map(verification_row)
                        .transpose()?
                        .ok_or_else(|| Error::NotFound("email verification not found".into()))?;
                    check_usable("email verification", v.consumed_at, v.expires_at, now)?;
                    let done = sqlx::query(
                        "UPDATE email_verifications SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL",
                    )
                    .bind(v.id.as_uuid())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::Conflict("email verification was already used".into()));
                    }
                    tx.commit().await?;
                    v.consumed_at = Some(now);
                    Ok(v)
                }
            }
        }
    };
}

pub(crate) use sql_identity_store;
