//! The provider queries the SQL backends share (feature `oauth`), written once with
//! `$N` placeholders for SQLite and PostgreSQL, instantiated per backend by
//! [`sql_oauth_store!`].
//!
//! Atomicity: `redeem_code` and the spending step of `rotate_refresh_token` are single
//! conditional `UPDATE … WHERE <unused> RETURNING` statements, so of concurrent calls
//! exactly one matches the row (SQLite serialises writers with `BEGIN IMMEDIATE`;
//! PostgreSQL re-checks the condition on the locked row). `rotate_refresh_token` and
//! `revoke_grant` both lock the grant row before touching its tokens, so a rotation
//! and a revocation of one family never interleave. `record_assertion` is an
//! `INSERT … ON CONFLICT DO NOTHING`.

use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::oauth::{AuthMethod, ClientKind, SecretDigest};
use crate::sql::Scope;

/// The scope in which a client owned by `tenant` (or global) is read and written.
pub(crate) fn client_scope(tenant: Option<TenantId>) -> Scope {
    tenant.map_or(Scope::Global, Scope::Tenant)
}

pub(crate) fn kind_text(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::Confidential => "confidential",
        ClientKind::Public => "public",
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<ClientKind> {
    [ClientKind::Confidential, ClientKind::Public]
        .into_iter()
        .find(|k| kind_text(*k) == s)
        .ok_or_else(|| Error::Internal(format!("stored client kind `{s}` is unknown")))
}

pub(crate) fn parse_auth_method(s: &str) -> Result<AuthMethod> {
    [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::None,
    ]
    .into_iter()
    .find(|m| m.as_str() == s)
    .ok_or_else(|| Error::Internal(format!("stored auth method `{s}` is unknown")))
}

pub(crate) fn secret_digest(bytes: &[u8]) -> Result<SecretDigest> {
    <[u8; 32]>::try_from(bytes)
        .map(SecretDigest)
        .map_err(|_| Error::Internal("stored secret digest is not 32 bytes".into()))
}

/// Generates [`crate::oauth::OAuthStore`], [`crate::oauth::SessionStore`] and
/// [`crate::token::KeyStore`] for `$store` over database `$db`, with the same
/// `read`/`write` transactions as [`crate::sql::sql_identity_store!`].
macro_rules! sql_oauth_store {
    ($store:ty, $db:ty) => {
        mod oauth_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use sqlx::types::Json;
            use uuid::Uuid;

            use super::*;
            use crate::error::{Error, Result};
            use crate::identity::TokenHash;
            use crate::ids::{ClientId, GrantId, TenantId, UserId};
            use crate::oauth::rules::{check_client_scope, check_same_family};
            use crate::oauth::{
                AuthorizationCode, Client, ClientScope, CodeRedemption, Consent, Grant, GrantType, LoginSession,
                OAuthStore, RedirectUri, RefreshRotation, RefreshToken, Scopes, SessionStore,
            };
            use crate::page::{Page, PageRequest};
            use crate::sql::oauth::{client_scope, kind_text, parse_auth_method, parse_kind, secret_digest};
            use crate::sql::{Scope, stored, write_error};
            use crate::token::{KeyRecord, KeyStore};

            type Row = <$db as sqlx::Database>::Row;

            fn scopes(row: &Row, column: &str) -> Result<Scopes> {
                stored("scope", Scopes::parse(row.try_get(column)?))
            }

            fn hash(row: &Row, column: &str) -> Result<TokenHash> {
                TokenHash::from_slice(row.try_get(column)?)
            }

            fn client_row(row: &Row) -> Result<Client> {
                let digest: Option<&[u8]> = row.try_get("secret_digest")?;
                Ok(Client {
                    id: ClientId::from_uuid(row.try_get("id")?),
                    tenant_id: row.try_get::<Option<Uuid>, _>("tenant_id")?.map(TenantId::from_uuid),
                    name: row.try_get("name")?,
                    kind: parse_kind(row.try_get("kind")?)?,
                    auth_method: parse_auth_method(row.try_get("auth_method")?)?,
                    secret_digest: digest.map(secret_digest).transpose()?,
                    jwks: row.try_get::<Option<Json<serde_json::Value>>, _>("jwks")?.map(|j| j.0),
                    redirect_uris: row.try_get::<Json<Vec<RedirectUri>>, _>("redirect_uris")?.0,
                    post_logout_redirect_uris: row
                        .try_get::<Json<Vec<RedirectUri>>, _>("post_logout_redirect_uris")?
                        .0,
                    grant_types: row.try_get::<Json<Vec<GrantType>>, _>("grant_types")?.0,
                    scopes: scopes(row, "scopes")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    version: row.try_get("version")?,
                })
            }

            fn code_row(row: &Row) -> Result<AuthorizationCode> {
                Ok(AuthorizationCode {
                    code_hash: hash(row, "code_hash")?,
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    client_id: ClientId::from_uuid(row.try_get("client_id")?),
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    grant_id: GrantId::from_uuid(row.try_get("grant_id")?),
                    redirect_uri: row.try_get("redirect_uri")?,
                    scope: scopes(row, "scope")?,
                    nonce: row.try_get("nonce")?,
                    code_challenge: row.try_get("code_challenge")?,
                    auth_time: row.try_get("auth_time")?,
                    issued_at: row.try_get("issued_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            fn grant_row(row: &Row) -> Result<Grant> {
                Ok(Grant {
                    id: GrantId::from_uuid(row.try_get("id")?),
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    client_id: ClientId::from_uuid(row.try_get("client_id")?),
                    user_id: row.try_get::<Option<Uuid>, _>("user_id")?.map(UserId::from_uuid),
                    scope: scopes(row, "scope")?,
                    auth_time: row.try_get("auth_time")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            }

            fn refresh_row(row: &Row) -> Result<RefreshToken> {
                Ok(RefreshToken {
                    token_hash: hash(row, "token_hash")?,
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    grant_id: GrantId::from_uuid(row.try_get("grant_id")?),
                    client_id: ClientId::from_uuid(row.try_get("client_id")?),
                    scope: scopes(row, "scope")?,
                    issued_at: row.try_get("issued_at")?,
                    expires_at: row.try_get("expires_at")?,
                    used_at: row.try_get("used_at")?,
                })
            }

            fn consent_row(row: &Row) -> Result<Consent> {
                Ok(Consent {
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id")?),
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    client_id: ClientId::from_uuid(row.try_get("client_id")?),
                    scope: scopes(row, "scope")?,
                    granted_at: row.try_get("granted_at")?,
                })
            }

            fn session_row(row: &Row) -> Result<LoginSession> {
                Ok(LoginSession {
                    id_hash: hash(row, "id_hash")?,
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    auth_time: row.try_get("auth_time")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            fn key_row(row: &Row) -> Result<KeyRecord> {
                Ok(KeyRecord {
                    kid: row.try_get("kid")?,
                    alg: row.try_get("alg")?,
                    public_jwk: row.try_get::<Json<serde_json::Value>, _>("public_jwk")?.0,
                    sealed_private_key: row.try_get("sealed_private_key")?,
                    created_at: row.try_get("created_at")?,
                    activates_at: row.try_get("activates_at")?,
                    retires_at: row.try_get("retires_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            /// Inserts a refresh token within `tx` (shared by insert and rotation).
            async fn insert_refresh(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: TenantId,
                t: &RefreshToken,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO oauth_refresh_tokens (tenant_id, token_hash, grant_id, client_id, scope, issued_at, \
                     expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(tenant.as_uuid())
                .bind(&t.token_hash.as_bytes()[..])
                .bind(t.grant_id.as_uuid())
                .bind(t.client_id.as_uuid())
                .bind(t.scope.to_string())
                .bind(t.issued_at)
                .bind(t.expires_at)
                .bind(t.used_at)
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error(
                    e,
                    |_| "refresh token already exists".into(),
                    || format!("client `{}` or grant `{}` not found", t.client_id, t.grant_id),
                ))?;
                Ok(())
            }

            #[async_trait]
            impl OAuthStore for $store {
                async fn insert_client(&self, c: &Client) -> Result<()> {
                    let taken = |_: &str| format!("client `{}` already exists", c.id);
                    let missing = || format!("client `{}` not found", c.id);
                    let mut tx = self.write(client_scope(c.tenant_id)).await?;
                    sqlx::query("INSERT INTO oauth_client_owners (client_id, tenant_id) VALUES ($1, $2)")
                        .bind(c.id.as_uuid())
                        .bind(c.tenant_id.map(|t| t.as_uuid()))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| write_error(e, taken, missing))?;
                    sqlx::query(
                        "INSERT INTO oauth_clients (id, tenant_id, name, kind, auth_method, secret_digest, jwks, \
                         redirect_uris, post_logout_redirect_uris, grant_types, scopes, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    )
                    .bind(c.id.as_uuid())
                    .bind(c.tenant_id.map(|t| t.as_uuid()))
                    .bind(&c.name)
                    .bind(kind_text(c.kind))
                    .bind(c.auth_method.as_str())
                    .bind(c.secret_digest.as_ref().map(|d| &d.0[..]))
                    .bind(c.jwks.as_ref().map(Json))
                    .bind(Json(&c.redirect_uris))
                    .bind(Json(&c.post_logout_redirect_uris))
                    .bind(Json(&c.grant_types))
                    .bind(c.scopes.to_string())
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .bind(c.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, taken, missing))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn client(&self, id: ClientId) -> Result<Client> {
                    let owner: Option<Option<Uuid>> = {
                        let mut tx = self.read(Scope::Global).await?;
                        sqlx::query_scalar("SELECT tenant_id FROM oauth_client_owners WHERE client_id = $1")
                            .bind(id.as_uuid())
                            .fetch_optional(&mut *tx)
                            .await?
                    };
                    let Some(owner) = owner else {
                        return Err(Error::not_found("client", id));
                    };
                    let mut tx = self.read(client_scope(owner.map(TenantId::from_uuid))).await?;
                    let row = sqlx::query("SELECT * FROM oauth_clients WHERE id = $1")
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(client_row).transpose()?.ok_or_else(|| Error::not_found("client", id))
                }

                async fn update_client(&self, scope: ClientScope, c: &Client) -> Result<Client> {
                    check_client_scope(scope, c)?;
                    let owner = scope.tenant().map(|t| t.as_uuid());
                    let mut tx = self.write(client_scope(scope.tenant())).await?;
                    let row = sqlx::query(
                        "UPDATE oauth_clients SET name = $3, kind = $4, auth_method = $5, secret_digest = $6, jwks = $7, \
                         redirect_uris = $8, post_logout_redirect_uris = $9, grant_types = $10, scopes = $11, \
                         updated_at = $12, version = version + 1 \
                         WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND version = $13 RETURNING *",
                    )
                    .bind(c.id.as_uuid())
                    .bind(owner)
                    .bind(&c.name)
                    .bind(kind_text(c.kind))
                    .bind(c.auth_method.as_str())
                    .bind(c.secret_digest.as_ref().map(|d| &d.0[..]))
                    .bind(c.jwks.as_ref().map(Json))
                    .bind(Json(&c.redirect_uris))
                    .bind(Json(&c.post_logout_redirect_uris))
                    .bind(Json(&c.grant_types))
                    .bind(c.scopes.to_string())
                    .bind(c.updated_at)
                    .bind(c.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        let exists = sqlx::query("SELECT 1 FROM oauth_clients WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2")
                            .bind(c.id.as_uuid())
                            .bind(owner)
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                        return Err(if exists { Error::stale("client", c.id, c.version) } else { Error::not_found("client", c.id) });
                    };
                    let updated = client_row(&row)?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_client(&self, scope: ClientScope, id: ClientId) -> Result<()> {
                    let mut tx = self.write(client_scope(scope.tenant())).await?;
                    // Codes, grants (with their refresh tokens) and consents go by ON DELETE CASCADE.
                    let done = sqlx::query("DELETE FROM oauth_clients WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2")
                        .bind(id.as_uuid())
                        .bind(scope.tenant().map(|t| t.as_uuid()))
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found("client", id));
                    }
                    for statement in [
                        "DELETE FROM oauth_client_owners WHERE client_id = $1",
                        "DELETE FROM oauth_assertions WHERE client_id = $1",
                    ] {
                        sqlx::query(statement).bind(id.as_uuid()).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_clients(&self, scope: ClientScope, page: &PageRequest) -> Result<Page<Client>> {
                    let after = page.after_id().unwrap_or(Uuid::nil());
                    let limit = i64::from(page.effective_limit()) + 1;
                    let mut tx = self.read(client_scope(scope.tenant())).await?;
                    let rows = match scope {
                        ClientScope::Global => sqlx::query(
                            "SELECT * FROM oauth_clients WHERE tenant_id IS NULL AND id > $1 ORDER BY id LIMIT $2",
                        )
                        .bind(after)
                        .bind(limit),
                        ClientScope::Tenant(t) => sqlx::query(
                            "SELECT * FROM oauth_clients WHERE tenant_id = $3 AND id > $1 ORDER BY id LIMIT $2",
                        )
                        .bind(after)
                        .bind(limit)
                        .bind(t.as_uuid()),
                    }
                    .fetch_all(&mut *tx)
                    .await?;
                    let items = rows.iter().map(client_row).collect::<Result<Vec<_>>>()?;
                    Ok(Page::from_overfetch(items, page, |c| c.id.as_uuid()))
                }

                async fn insert_code(&self, tenant: TenantId, code: &AuthorizationCode) -> Result<()> {
                    tenant.check_scope(code.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO oauth_codes (tenant_id, code_hash, client_id, user_id, grant_id, redirect_uri, scope, \
                         nonce, code_challenge, auth_time, issued_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(tenant.as_uuid())
                    .bind(&code.code_hash.as_bytes()[..])
                    .bind(code.client_id.as_uuid())
                    .bind(code.user_id.as_uuid())
                    .bind(code.grant_id.as_uuid())
                    .bind(&code.redirect_uri)
                    .bind(code.scope.to_string())
                    .bind(code.nonce.as_deref())
                    .bind(code.code_challenge.as_deref())
                    .bind(code.auth_time)
                    .bind(code.issued_at)
                    .bind(code.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| "authorization code already exists".into(),
                        || format!("client `{}` not found", code.client_id),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn redeem_code(&self, tenant: TenantId, code_hash: &TokenHash) -> Result<CodeRedemption> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    let spent = sqlx::query(
                        "UPDATE oauth_codes SET redeemed = TRUE \
                         WHERE tenant_id = $1 AND code_hash = $2 AND NOT redeemed RETURNING *",
                    )
                    .bind(tenant.as_uuid())
                    .bind(&code_hash.as_bytes()[..])
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = spent {
                        let code = code_row(&row)?;
                        tx.commit().await?;
                        return Ok(CodeRedemption::Redeemed(code));
                    }
                    let row = sqlx::query("SELECT * FROM oauth_codes WHERE tenant_id = $1 AND code_hash = $2")
                        .bind(tenant.as_uuid())
                        .bind(&code_hash.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    Ok(match row {
                        Some(row) => CodeRedemption::AlreadyRedeemed(code_row(&row)?),
                        None => CodeRedemption::Unknown,
                    })
                }

                async fn insert_grant(&self, tenant: TenantId, g: &Grant) -> Result<()> {
                    tenant.check_scope(g.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO oauth_grants (tenant_id, id, client_id, user_id, scope, auth_time, created_at, revoked_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(tenant.as_uuid())
                    .bind(g.id.as_uuid())
                    .bind(g.client_id.as_uuid())
                    .bind(g.user_id.map(|u| u.as_uuid()))
                    .bind(g.scope.to_string())
                    .bind(g.auth_time)
                    .bind(g.created_at)
                    .bind(g.revoked_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| format!("grant `{}` already exists", g.id),
                        || format!("client `{}` not found", g.client_id),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn grant(&self, tenant: TenantId, id: GrantId) -> Result<Grant> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT * FROM oauth_grants WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref().map(grant_row).transpose()?.ok_or_else(|| Error::not_found("grant", id))
                }

                async fn revoke_grant(&self, tenant: TenantId, id: GrantId, at: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    // Locks the grant row first, as rotation does.
                    let done = sqlx::query(
                        "UPDATE oauth_grants SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $3 \
                         THEN $3 ELSE revoked_at END WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found("grant", id));
                    }
                    sqlx::query(
                        "UPDATE oauth_refresh_tokens SET used_at = $3 \
                         WHERE tenant_id = $1 AND grant_id = $2 AND used_at IS NULL",
                    )
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn insert_refresh_token(&self, tenant: TenantId, token: &RefreshToken) -> Result<()> {
                    tenant.check_scope(token.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    insert_refresh(&mut tx, tenant, token).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn refresh_token(&self, tenant: TenantId, token_hash: &TokenHash) -> Result<RefreshToken> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT * FROM oauth_refresh_tokens WHERE tenant_id = $1 AND token_hash = $2")
                        .bind(tenant.as_uuid())
                        .bind(&token_hash.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    row.as_ref()
                        .map(refresh_row)
                        .transpose()?
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
                    let select = "SELECT * FROM oauth_refresh_tokens WHERE tenant_id = $1 AND token_hash = $2";
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query(select)
                        .bind(tenant.as_uuid())
                        .bind(&old.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(current) = row.as_ref().map(refresh_row).transpose()? else {
                        return Ok(RefreshRotation::Unknown);
                    };
                    check_same_family(&current, new)?;
                    // Lock the family (as revoke_grant does) before spending the token.
                    sqlx::query("UPDATE oauth_grants SET revoked_at = revoked_at WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.as_uuid())
                        .bind(current.grant_id.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                    let spent = sqlx::query(
                        "UPDATE oauth_refresh_tokens SET used_at = $3 \
                         WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL RETURNING *",
                    )
                    .bind(tenant.as_uuid())
                    .bind(&old.as_bytes()[..])
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(spent) = spent else {
                        let row = sqlx::query(select)
                            .bind(tenant.as_uuid())
                            .bind(&old.as_bytes()[..])
                            .fetch_optional(&mut *tx)
                            .await?;
                        return Ok(match row {
                            Some(row) => RefreshRotation::Replayed(refresh_row(&row)?),
                            None => RefreshRotation::Unknown,
                        });
                    };
                    let spent = refresh_row(&spent)?;
                    insert_refresh(&mut tx, tenant, new).await?;
                    tx.commit().await?;
                    Ok(RefreshRotation::Rotated(spent))
                }

                async fn consent(&self, tenant: TenantId, user: UserId, client: ClientId) -> Result<Option<Consent>> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query(
                        "SELECT * FROM oauth_consents WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3",
                    )
                    .bind(tenant.as_uuid())
                    .bind(user.as_uuid())
                    .bind(client.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?;
                    row.as_ref().map(consent_row).transpose()
                }

                async fn put_consent(&self, tenant: TenantId, c: &Consent) -> Result<()> {
                    tenant.check_scope(c.tenant_id)?;
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO oauth_consents (tenant_id, user_id, client_id, scope, granted_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id, client_id) \
                         DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                    )
                    .bind(tenant.as_uuid())
                    .bind(c.user_id.as_uuid())
                    .bind(c.client_id.as_uuid())
                    .bind(c.scope.to_string())
                    .bind(c.granted_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(
                        e,
                        |_| "consent already exists".into(),
                        || format!("client `{}` not found", c.client_id),
                    ))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_consent(&self, tenant: TenantId, user: UserId, client: ClientId) -> Result<()> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query("DELETE FROM oauth_consents WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3")
                        .bind(tenant.as_uuid())
                        .bind(user.as_uuid())
                        .bind(client.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn revoke_access_token(&self, tenant: TenantId, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.write(Scope::Tenant(tenant)).await?;
                    sqlx::query(
                        "INSERT INTO oauth_revoked_tokens (tenant_id, jti, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant_id, jti) DO UPDATE SET expires_at = CASE \
                         WHEN excluded.expires_at > oauth_revoked_tokens.expires_at THEN excluded.expires_at \
                         ELSE oauth_revoked_tokens.expires_at END",
                    )
                    .bind(tenant.as_uuid())
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn is_access_token_revoked(&self, tenant: TenantId, jti: &str) -> Result<bool> {
                    let mut tx = self.read(Scope::Tenant(tenant)).await?;
                    let row = sqlx::query("SELECT 1 FROM oauth_revoked_tokens WHERE tenant_id = $1 AND jti = $2")
                        .bind(tenant.as_uuid())
                        .bind(jti)
                        .fetch_optional(&mut *tx)
                        .await?;
                    Ok(row.is_some())
                }

                async fn record_assertion(&self, client: ClientId, jti: &str, expires_at: DateTime<Utc>) -> Result<bool> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query(
                        "INSERT INTO oauth_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (client_id, jti) DO NOTHING",
                    )
                    .bind(client.as_uuid())
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
                    // Without a tenant: the purge policies show only rows expired before `now`.
                    let mut tx = self.write(Scope::Purge(now)).await?;
                    let mut gone = 0_u64;
                    for statement in [
                        "DELETE FROM oauth_codes WHERE expires_at < $1",
                        "DELETE FROM oauth_refresh_tokens WHERE expires_at < $1",
                        "DELETE FROM oauth_revoked_tokens WHERE expires_at < $1",
                        "DELETE FROM oauth_assertions WHERE expires_at < $1",
                        "DELETE FROM oauth_sessions WHERE expires_at < $1",
                    ] {
                        gone += sqlx::query(statement).bind(now).execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(gone)
                }
            }

            #[async_trait]
            impl SessionStore for $store {
                async fn insert_session(&self, s: &LoginSession) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query("INSERT INTO oauth_sessions (id_hash, user_id, auth_time, expires_at) VALUES ($1, $2, $3, $4)")
                        .bind(&s.id_hash.as_bytes()[..])
                        .bind(s.user_id.as_uuid())
                        .bind(s.auth_time)
                        .bind(s.expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| write_error(e, |_| "session already exists".into(), || "session not found".into()))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn session(&self, id_hash: &TokenHash, now: DateTime<Utc>) -> Result<Option<LoginSession>> {
                    let mut tx = self.read(Scope::Global).await?;
                    let row = sqlx::query("SELECT * FROM oauth_sessions WHERE id_hash = $1")
                        .bind(&id_hash.as_bytes()[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    Ok(row.as_ref().map(session_row).transpose()?.filter(|s| s.expires_at > now))
                }

                async fn delete_session(&self, id_hash: &TokenHash) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query("DELETE FROM oauth_sessions WHERE id_hash = $1")
                        .bind(&id_hash.as_bytes()[..])
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query("DELETE FROM oauth_sessions WHERE user_id = $1")
                        .bind(user.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
            }

            #[async_trait]
            impl KeyStore for $store {
                async fn keys(&self) -> Result<Vec<KeyRecord>> {
                    let mut tx = self.read(Scope::Global).await?;
                    let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
                        .fetch_all(&mut *tx)
                        .await?;
                    rows.iter().map(key_row).collect()
                }

                async fn insert_key(&self, k: &KeyRecord) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    sqlx::query(
                        "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at, \
                         retires_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind(Json(&k.public_jwk))
                    .bind(&k.sealed_private_key)
                    .bind(k.created_at)
                    .bind(k.activates_at)
                    .bind(k.retires_at)
                    .bind(k.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("key `{}` already exists", k.kid), || format!("key `{}` not found", k.kid)))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn activate_key(&self, kid: &str, activates_at: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query("UPDATE signing_keys SET activates_at = $2 WHERE kid = $1")
                        .bind(kid)
                        .bind(activates_at)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found("key", kid));
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn retire_key(&self, kid: &str, retires_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query("UPDATE signing_keys SET retires_at = $2, expires_at = $3 WHERE kid = $1")
                        .bind(kid)
                        .bind(retires_at)
                        .bind(expires_at)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found("key", kid));
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query("DELETE FROM signing_keys WHERE expires_at < $1")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
            }
        }
    };
}

pub(crate) use sql_oauth_store;
