//! The PostgreSQL backend (feature `postgres`), for production.
//!
//! Tenant isolation in depth: every tenant-scoped table has ROW LEVEL SECURITY (FORCE)
//! keyed on `current_setting('app.tenant_id', true)`. Each operation runs in its own
//! transaction that first sets `app.tenant_id` (or, for a user's own memberships,
//! `app.user_id`) with `set_config(..., true)`, i.e. transaction-locally: a pooled
//! connection never carries one tenant's setting into the next transaction.
//!
//! Run the application as a role that neither owns the tables nor has BYPASSRLS (nor
//! is a superuser): `tenancy migrate --grant-to <role>` applies the migrations as the
//! owner and grants that role what it needs ([`PgStore::grant_app_role`]).
//!
//! The event outbox (`event_outbox`) has no row-level security: the relay reads it
//! across tenants, and tenants never read it. [`enqueue`] writes an event into a
//! transaction the caller holds (e.g. one of [`PgStore::tenant_transaction`]).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use crate::TenantId;
use crate::error::{Error, Result};
use crate::sql::{Scope, sql_identity_store};

/// The identity migrations. Every domain crate keeps its own migrations in the same
/// database under its own version range (identity: 1–999), so each migrator ignores
/// the versions of the others.
fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations/postgres");
    m.set_ignore_missing(true);
    m
}

/// All identity stores in one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`). Call [`PgStore::migrate`] before
    /// use.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", format!("not a PostgreSQL URL: {e}")))?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        // No ping before each acquire (a round trip per transaction): a connection the
        // server closed fails its next query instead and leaves the pool; idle ones
        // are recycled after 5 minutes, before most servers and proxies drop them.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations that are not applied yet. When all are applied
    /// already it only reads the migrations table, so an application role without DDL
    /// rights can call it at start-up.
    pub async fn migrate(&self) -> Result<()> {
        self.apply_migrations(&migrator()).await
    }

    /// Applies `migrator`'s pending migrations; when none is pending it only reads the
    /// migrations table (no DDL rights needed). Domain crates keep their tables in the
    /// same database this way; build the migrator with `ignore_missing`.
    pub async fn apply_migrations(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let pending = migrator
            .iter()
            .any(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version));
        if pending {
            migrator.run(&self.pool).await?;
        }
        Ok(())
    }

    /// Grants the application role `role` what it needs on the migrated tables:
    /// `SELECT, INSERT, UPDATE, DELETE` and reading the migrations table. It grants no
    /// ownership and no BYPASSRLS. `role` must be a plain lowercase identifier.
    pub async fn grant_app_role(&self, role: &str) -> Result<()> {
        let valid = !role.is_empty()
            && role.len() <= 63
            && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::invalid(
                "role",
                format!("`{role}` must be a lowercase identifier of letters, digits and `_`"),
            ));
        }
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&self.pool)
            .await?;
        let schema = schema.replace('"', "\"\"");
        let statements = [
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO {role}"
            ),
            format!("REVOKE INSERT, UPDATE, DELETE ON \"{schema}\"._sqlx_migrations FROM {role}"),
        ];
        let mut tx = self.pool.begin().await?;
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A transaction for data of `tenant`, for domain crates' stores in this database:
    /// `app.tenant_id` is set transaction-locally, so row-level security shows only
    /// that tenant's rows. (`write` makes no difference here; it exists so SQL written
    /// for both backends reads the same.)
    pub async fn tenant_transaction(
        &self,
        tenant: TenantId,
        write: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        let _ = write;
        self.write(Scope::Tenant(tenant)).await
    }

    async fn read(&self, scope: Scope) -> Result<Transaction<'static, Postgres>> {
        self.write(scope).await
    }

    async fn write(&self, scope: Scope) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        let setting = match scope {
            Scope::Global => None,
            Scope::Tenant(t) => Some(("app.tenant_id", t.to_string())),
            Scope::User(u) => Some(("app.user_id", u.to_string())),
            #[cfg(feature = "oauth")]
            Scope::Purge(before) => Some(("app.purge_before", before.to_rfc3339())),
        };
        if let Some((name, value)) = setting {
            sqlx::query("SELECT set_config($1, $2, true)")
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

sql_identity_store!(PgStore, Postgres);
crate::sql::outbox::sql_outbox_store!(PgStore, Postgres);
#[cfg(feature = "oauth")]
crate::sql::oauth::sql_oauth_store!(PgStore, Postgres);
