//! Opening the stores a database URL names, with their migrations applied.

use std::sync::Arc;

use tenancy_authz::PolicyStore;
use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_authz::sql::{migrate_postgres, migrate_sqlite};
use tenancy_billing::sql as billing_sql;
use tenancy_billing::webhooks::{MemoryWebhookStore, WebhookStore};
use tenancy_billing::{BillingStore, MemoryBillingStore};
use tenancy_core::events::OutboxStore;
use tenancy_core::identity::IdentityStore;
use tenancy_core::memory::MemoryRateLimiter;
use tenancy_core::memory::MemoryStore;
use tenancy_core::oauth::{OAuthStore, RateLimiter, SessionStore};
use tenancy_core::postgres::PgStore;
use tenancy_core::redis_store::{RedisRateLimiter, RedisSessionStore};
use tenancy_core::sqlite::SqliteStore;
use tenancy_core::token::KeyStore;
use tenancy_metering::MeteringStore;
use tenancy_metering::memory::MemoryMeteringStore;
use tenancy_metering::sql as metering_sql;

use crate::Error;

/// The storage backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:...`: one local file (or `sqlite::memory:`).
    Sqlite,
    /// `postgres://...` or `postgresql://...`.
    Postgres,
    /// `memory:`: in-process, nothing persists.
    Memory,
}

impl Backend {
    /// The backend of `url`; `UnsupportedDatabase` for any other scheme.
    pub fn of(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else if url.starts_with("memory:") {
            Ok(Self::Memory)
        } else {
            Err(Error::UnsupportedDatabase(url.to_owned()))
        }
    }
}

/// The stores of every service, in one database.
#[derive(Clone)]
pub struct Stores {
    /// Tenants, users, memberships, invitations.
    pub identity: Arc<dyn IdentityStore>,
    /// Tenants' policy versions.
    pub policies: Arc<dyn PolicyStore>,
    /// OAuth clients, codes, grants, refresh tokens, consents.
    pub oauth: Arc<dyn OAuthStore>,
    /// Login sessions (in the database; see [`session_backends`] for Redis).
    pub sessions: Arc<dyn SessionStore>,
    /// The gateway's signing keys.
    pub keys: Arc<dyn KeyStore>,
    /// Meters, usage events, rollups, quotas.
    pub metering: Arc<dyn MeteringStore>,
    /// The billing catalog, customers, subscriptions, invoices, credit notes.
    pub billing: Arc<dyn BillingStore>,
    /// The outbox billing writes its events to (in SQL databases, the one outbox every
    /// domain shares), read by the relay.
    pub outbox: Arc<dyn OutboxStore>,
    /// The tenants' webhook endpoints and deliveries.
    pub webhooks: Arc<dyn WebhookStore>,
}

/// Where login sessions and rate limits live: Redis when `redis_url` is set (shared by
/// every gateway process), else sessions in the database and rate limits in memory.
pub async fn session_backends(
    stores: &Stores,
    redis_url: Option<&str>,
) -> Result<(Arc<dyn SessionStore>, Arc<dyn RateLimiter>), Error> {
    match redis_url {
        Some(url) => Ok((
            Arc::new(RedisSessionStore::connect(url, "tenancy").await?),
            Arc::new(RedisRateLimiter::connect(url, "tenancy").await?),
        )),
        None => Ok((stores.sessions.clone(), Arc::new(MemoryRateLimiter::new()))),
    }
}

/// Connects to the database `url` names (one pool shared by every store) and applies
/// every domain's migrations.
///
/// For a SQLite file, the file and its directory are created first if absent.
pub async fn open_stores(url: &str) -> Result<Stores, Error> {
    let stores = match Backend::of(url)? {
        Backend::Sqlite => {
            let store = Arc::new(SqliteStore::connect(url).await?);
            migrate_sqlite_all(&store).await?;
            Stores {
                billing: store.clone(),
                outbox: store.clone(),
                webhooks: store.clone(),
                metering: store.clone(),
                identity: store.clone(),
                oauth: store.clone(),
                sessions: store.clone(),
                keys: store.clone(),
                policies: store,
            }
        }
        Backend::Postgres => {
            let store = Arc::new(PgStore::connect(url).await?);
            migrate_postgres_all(&store).await?;
            Stores {
                billing: store.clone(),
                outbox: store.clone(),
                webhooks: store.clone(),
                metering: store.clone(),
                identity: store.clone(),
                oauth: store.clone(),
                sessions: store.clone(),
                keys: store.clone(),
                policies: store,
            }
        }
        Backend::Memory => {
            let store = Arc::new(MemoryStore::new());
            let billing = Arc::new(MemoryBillingStore::new());
            Stores {
                identity: store.clone(),
                oauth: store.clone(),
                sessions: store.clone(),
                keys: store,
                policies: Arc::new(MemoryPolicyStore::new()),
                metering: Arc::new(MemoryMeteringStore::new()),
                billing: billing.clone(),
                outbox: billing,
                webhooks: Arc::new(MemoryWebhookStore::new()),
            }
        }
    };
    Ok(stores)
}

/// Every domain's migrations on a SQLite database: identity and OAuth (core), then
/// policies, then metering, then billing.
async fn migrate_sqlite_all(store: &SqliteStore) -> Result<(), Error> {
    store.migrate().await?;
    migrate_sqlite(store).await?;
    metering_sql::migrate_sqlite(store).await?;
    billing_sql::migrate_sqlite(store).await?;
    Ok(())
}

/// Every domain's migrations on a PostgreSQL database (see [`migrate_sqlite_all`]).
async fn migrate_postgres_all(store: &PgStore) -> Result<(), Error> {
    store.migrate().await?;
    migrate_postgres(store).await?;
    metering_sql::migrate_postgres(store).await?;
    billing_sql::migrate_postgres(store).await?;
    Ok(())
}

/// Applies the migrations of the database `url` names and, for PostgreSQL, grants the
/// application role `grant_to` its rights.
pub async fn migrate(url: &str, grant_to: Option<&str>) -> Result<Backend, Error> {
    let backend = Backend::of(url)?;
    if grant_to.is_some() && backend != Backend::Postgres {
        return Err(Error::Config(
            "`--grant-to` applies to PostgreSQL databases only".into(),
        ));
    }
    match backend {
        Backend::Sqlite => {
            let store = SqliteStore::connect(url).await?;
            migrate_sqlite_all(&store).await?;
        }
        Backend::Postgres => {
            let store = PgStore::connect(url).await?;
            migrate_postgres_all(&store).await?;
            if let Some(role) = grant_to {
                store.grant_app_role(role).await?;
            }
        }
        Backend::Memory => {}
    }
    Ok(backend)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn backends_by_scheme() {
        assert_eq!(
            Backend::of("sqlite://./data/t.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::of("memory:").unwrap(), Backend::Memory);
        let err = Backend::of("mysql://h/db").unwrap_err();
        assert!(err.to_string().contains("`mysql://h/db`"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_file_and_directory_are_created_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/data/t.db");
        let url = format!("sqlite://{}", path.display());
        let tenant = tenancy_core::TenantId::new();
        let stores = open_stores(&url).await.unwrap();
        assert!(path.is_file());
        let doc = tenancy_authz::PolicyDocument {
            id: "p".into(),
            text: "permit(principal, action, resource);".into(),
            description: String::new(),
        };
        tenancy_authz::Authz::new(stores.policies)
            .create_policy(tenant, 0, doc)
            .await
            .unwrap();
        // Opening again keeps what the file holds.
        let again = open_stores(&url).await.unwrap();
        assert_eq!(again.policies.latest_version(tenant).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn stores_open_for_embedded_backends_and_refuse_others() {
        for url in ["memory:", "sqlite::memory:"] {
            let stores = open_stores(url).await.unwrap();
            assert_eq!(
                stores
                    .policies
                    .latest_version(tenancy_core::TenantId::new())
                    .await
                    .unwrap(),
                0
            );
        }
        let err = open_stores("mysql://h/db").await.err().unwrap();
        assert!(err.to_string().contains("`mysql://h/db`"), "{err}");
    }

    #[tokio::test]
    async fn grant_to_needs_postgres() {
        let err = migrate("memory:", Some("app")).await.unwrap_err();
        assert!(err.to_string().contains("`--grant-to`"), "{err}");
        assert_eq!(migrate("memory:", None).await.unwrap(), Backend::Memory);
    }
}
