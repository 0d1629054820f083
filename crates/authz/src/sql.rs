//! Policy stores in tenancy-core's SQL databases: [`PolicyStore`](crate::PolicyStore) for
//! `tenancy_core::sqlite::SqliteStore` and `tenancy_core::postgres::PgStore`, so one
//! database (and one pool) serves identity and policies. Call [`migrate_sqlite`] /
//! [`migrate_postgres`] once, after the identity migrations. In PostgreSQL the table
//! has row-level security on `app.tenant_id` like every tenant table.

/// Generates `PolicyStore` for `$store` (which provides `tenant_transaction`).
macro_rules! sql_policy_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl crate::store::PolicyStore for $store {
            async fn latest_version(&self, tenant: tenancy_core::TenantId) -> tenancy_core::Result<i64> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let v: Option<i64> =
                    sqlx::query_scalar("SELECT max(version) FROM policy_versions WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(tenancy_core::Error::from)?;
                Ok(v.unwrap_or(0))
            }

            async fn latest(&self, tenant: tenancy_core::TenantId) -> tenancy_core::Result<Option<crate::model::PolicyVersion>> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let row = sqlx::query(
                    "SELECT * FROM policy_versions WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(tenancy_core::Error::from)?;
                row.as_ref().map(version_row).transpose()
            }

            async fn version(&self, tenant: tenancy_core::TenantId, version: i64) -> tenancy_core::Result<crate::model::PolicyVersion> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let row = sqlx::query("SELECT * FROM policy_versions WHERE tenant_id = $1 AND version = $2")
                    .bind(tenant.as_uuid())
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(tenancy_core::Error::from)?;
                row.as_ref()
                    .map(version_row)
                    .transpose()?
                    .ok_or_else(|| tenancy_core::Error::not_found("policy version", version))
            }

            async fn append(&self, tenant: tenancy_core::TenantId, v: &crate::model::PolicyVersion) -> tenancy_core::Result<()> {
                tenant.check_scope(v.tenant_id)?;
                let mut tx = self.tenant_transaction(tenant, true).await?;
                let latest: Option<i64> =
                    sqlx::query_scalar("SELECT max(version) FROM policy_versions WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(tenancy_core::Error::from)?;
                let stale = || tenancy_core::Error::stale("policy store of tenant", tenant, v.version - 1);
                if v.version != latest.unwrap_or(0) + 1 {
                    return Err(stale());
                }
                sqlx::query(
                    "INSERT INTO policy_versions (tenant_id, version, created_at, change, document) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant.as_uuid())
                .bind(v.version)
                .bind(v.created_at)
                .bind(&v.change)
                .bind(sqlx::types::Json(&v.document))
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => stale(),
                    _ => tenancy_core::Error::from(e),
                })?;
                tx.commit().await.map_err(tenancy_core::Error::from)?;
                Ok(())
            }

            async fn list_versions(
                &self,
                tenant: tenancy_core::TenantId,
                page: &tenancy_core::page::PageRequest,
            ) -> tenancy_core::Result<tenancy_core::page::Page<crate::model::VersionInfo>> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let rows = sqlx::query(
                    "SELECT tenant_id, version, created_at, change FROM policy_versions \
                     WHERE tenant_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3",
                )
                .bind(tenant.as_uuid())
                .bind(crate::store::before_version(page))
                .bind(i64::from(page.effective_limit()) + 1)
                .fetch_all(&mut *tx)
                .await
                .map_err(tenancy_core::Error::from)?;
                let items = rows.iter().map(info_row).collect::<tenancy_core::Result<Vec<_>>>()?;
                Ok(tenancy_core::page::Page::from_overfetch(items, page, |v| {
                    crate::store::version_cursor(v.version)
                }))
            }
        }

        fn info_row(row: &<$db as sqlx::Database>::Row) -> tenancy_core::Result<crate::model::VersionInfo> {
            use sqlx::Row as _;
            Ok(crate::model::VersionInfo {
                tenant_id: tenancy_core::TenantId::from_uuid(row.try_get("tenant_id").map_err(tenancy_core::Error::from)?),
                version: row.try_get("version").map_err(tenancy_core::Error::from)?,
                created_at: row.try_get("created_at").map_err(tenancy_core::Error::from)?,
                change: row.try_get("change").map_err(tenancy_core::Error::from)?,
            })
        }

        fn version_row(row: &<$db as sqlx::Database>::Row) -> tenancy_core::Result<crate::model::PolicyVersion> {
            use sqlx::Row as _;
            let info = info_row(row)?;
            let document: sqlx::types::Json<crate::model::PolicySetDocument> =
                row.try_get("document").map_err(tenancy_core::Error::from)?;
            Ok(crate::model::PolicyVersion {
                tenant_id: info.tenant_id,
                version: info.version,
                created_at: info.created_at,
                change: info.change,
                document: document.0,
            })
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use tenancy_core::sqlite::SqliteStore;

    sql_policy_store!(SqliteStore, sqlx::Sqlite);

    /// Applies the policy-store migrations to a SQLite database.
    pub async fn migrate_sqlite(store: &SqliteStore) -> tenancy_core::Result<()> {
        let mut m = sqlx::migrate!("./migrations/sqlite");
        m.set_ignore_missing(true);
        store.apply_migrations(&m).await
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use tenancy_core::postgres::PgStore;

    sql_policy_store!(PgStore, sqlx::Postgres);

    /// Applies the policy-store migrations to a PostgreSQL database.
    pub async fn migrate_postgres(store: &PgStore) -> tenancy_core::Result<()> {
        let mut m = sqlx::migrate!("./migrations/postgres");
        m.set_ignore_missing(true);
        store.apply_migrations(&m).await
    }
}

#[cfg(feature = "postgres")]
pub use postgres::migrate_postgres;
#[cfg(feature = "sqlite")]
pub use sqlite::migrate_sqlite;
