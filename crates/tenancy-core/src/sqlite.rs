//! The SQLite backend (feature `sqlite`): every identity store in one database file,
//! the embedded default of the servers. Migrations are embedded and applied by
//! [`SqliteStore::migrate`]. Writes take the database lock up front (`BEGIN IMMEDIATE`),
//! so concurrent writers queue instead of failing; readers never block. [`enqueue`]
//! writes an event into the outbox within a transaction the caller holds (e.g. one of
//! [`SqliteStore::tenant_transaction`]).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::TenantId;
use crate::error::{Error, Result};
use crate::sql::{Scope, sql_identity_store};

/// The identity migrations. Every domain crate keeps its own migrations in the same
/// database under its own version range (identity: 1–999), so each migrator ignores
/// the versions of the others.
fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations/sqlite");
    m.set_ignore_missing(true);
    m
}

/// All identity stores in one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite://path/to/file.db`, or `sqlite::memory:`),
    /// creating the file and its directory if absent. Call [`SqliteStore::migrate`]
    /// before use.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                Error::invalid("database_url", format!("`{url}` is not a SQLite URL: {e}"))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Unavailable(format!("cannot create directory `{}`: {e}", dir.display()))
            })?;
        }
        // An in-memory database exists per connection: keep exactly one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // No ping before each acquire: a local file's connection does not break, and
        // the ping is a hop to the connection's worker thread on every query.
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        self.apply_migrations(&migrator()).await
    }

    /// Applies `migrator`'s pending migrations (domain crates keep their tables in the
    /// same database this way; build the migrator with `ignore_missing`).
    pub async fn apply_migrations(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A transaction for data of `tenant`, for domain crates' stores in this database.
    /// `write` takes the database write lock up front, so concurrent writers queue
    /// instead of failing.
    pub async fn tenant_transaction(
        &self,
        tenant: TenantId,
        write: bool,
    ) -> Result<Transaction<'static, Sqlite>> {
        if write {
            self.write(Scope::Tenant(tenant)).await
        } else {
            self.read(Scope::Tenant(tenant)).await
        }
    }

    async fn read(&self, _scope: Scope) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin().await?)
    }

    async fn write(&self, _scope: Scope) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

sql_identity_store!(SqliteStore, Sqlite);
crate::sql::outbox::sql_outbox_store!(SqliteStore, Sqlite);
#[cfg(feature = "oauth")]
crate::sql::oauth::sql_oauth_store!(SqliteStore, Sqlite);
