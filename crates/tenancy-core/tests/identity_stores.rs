//! The identity, provider, outbox and event bus conformance suites against every
//! backend: memory, SQLite and the in-process bus always, PostgreSQL when
//! `TENANCY_TEST_POSTGRES_URL` is set (an admin URL; each test creates and drops its own
//! database and connects as a non-owner application role), Kafka when
//! `TENANCY_TEST_KAFKA_BROKERS` is set. With `TENANCY_TEST_REQUIRE_BACKENDS=1` (CI), a
//! missing URL fails instead of skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "tests"
)]

#[path = "identity_stores/events.rs"]
mod events;
#[path = "identity_stores/oauth.rs"]
mod oauth;

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Row};
use tenancy_core::conformance::{self, PgTestDatabase};
use tenancy_core::events::OutboxStore;
use tenancy_core::identity::{Identity, IdentityStore, NewTenant, NewUser};
use tenancy_core::memory::MemoryStore;
use tenancy_core::oauth::ProviderStore;
use tenancy_core::postgres::PgStore;
use tenancy_core::sqlite::SqliteStore;

/// A store for one test (as the identity, provider and outbox stores it implements),
/// and what to tear down after it.
struct TestStore {
    store: Arc<dyn IdentityStore>,
    provider: Arc<dyn ProviderStore>,
    outbox: Arc<dyn OutboxStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

impl TestStore {
    fn new<S: IdentityStore + ProviderStore + OutboxStore + 'static>(
        store: S,
        dir: Option<tempfile::TempDir>,
        pg: Option<PgTestDatabase>,
    ) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            provider: store.clone(),
            outbox: store,
            _dir: dir,
            pg,
        }
    }

    async fn finish(self) {
        if let Some(pg) = self.pg {
            pg.drop_database().await;
        }
    }
}

async fn memory() -> Option<TestStore> {
    Some(TestStore::new(MemoryStore::new(), None, None))
}

async fn sqlite() -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/identity.db").display()
    );
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    Some(TestStore::new(store, Some(dir), None))
}

async fn postgres() -> Option<TestStore> {
    let db = migrated_database().await?;
    let store = PgStore::connect_with(db.app_options()).await.unwrap();
    store.migrate().await.unwrap(); // as the app role: a no-op read, no DDL rights needed
    Some(TestStore::new(store, None, Some(db)))
}

/// A database of its own, migrated by the owner, which grants the application role.
async fn migrated_database() -> Option<PgTestDatabase> {
    let db = PgTestDatabase::create().await?;
    let owner = PgStore::connect_with(db.owner_options()).await.unwrap();
    owner.migrate().await.unwrap();
    owner
        .grant_app_role(PgTestDatabase::APP_ROLE)
        .await
        .unwrap();
    owner.pool().close().await;
    Some(db)
}

macro_rules! conformance_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! store_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(t) = super::$backend().await else { return };
                            conformance::$name(&*t.store).await;
                            t.finish().await;
                        }
                    };
                }

                store_test!(tenant_crud);
                store_test!(uniqueness_conflicts);
                store_test!(user_crud);
                store_test!(optimistic_concurrency);
                store_test!(pagination);
                store_test!(memberships);
                store_test!(invitation_tokens);
                store_test!(verification_tokens);
                store_test!(tenant_isolation);

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn identity_service() {
                    let Some(t) = super::$backend().await else { return };
                    conformance::identity_service(t.store.clone()).await;
                    t.finish().await;
                }
            }
        )+
    };
}

conformance_suite!(memory, sqlite, postgres);

/// Row-level security holds against the application role itself: raw SQL without the
/// tenant setting sees nothing, with tenant A's setting never sees tenant B, writes
/// into another tenant are refused, and a pooled connection forgets the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rls_attack() {
    let Some(db) = migrated_database().await else {
        return;
    };
    let store = PgStore::connect_with(db.app_options()).await.unwrap();
    let identity = Identity::new(Arc::new(store));
    let mut tenants = Vec::new();
    for slug in ["rls-a", "rls-b"] {
        tenants.push(
            identity
                .create_tenant(NewTenant {
                    slug: slug.into(),
                    display_name: slug.into(),
                    ..Default::default()
                })
                .await
                .unwrap(),
        );
    }
    let (a, b) = (tenants[0].id, tenants[1].id);
    let user = identity
        .create_user(NewUser {
            email: "rls@example.com".into(),
            display_name: "R".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    identity.add_member(a, user.id, &["admin"]).await.unwrap();
    identity.add_member(b, user.id, &["admin"]).await.unwrap();
    identity
        .invite(
            a,
            "guest@example.com",
            &["viewer"],
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    identity
        .invite(
            b,
            "guest@example.com",
            &["viewer"],
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();

    // One connection, reused by every statement below.
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options())
        .await
        .unwrap();

    let me = sqlx::query(
        "SELECT rolsuper, rolbypassrls, \
         (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user) AS owned \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert!(
        !me.get::<bool, _>("rolsuper"),
        "the app role must not be a superuser"
    );
    assert!(
        !me.get::<bool, _>("rolbypassrls"),
        "the app role must not bypass RLS"
    );
    assert_eq!(
        me.get::<i64, _>("owned"),
        0,
        "the app role must own no table"
    );

    for table in ["memberships", "invitations"] {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&raw)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: no tenant setting must mean no rows");
    }

    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in ["memberships", "invitations"] {
        let seen: Vec<uuid::Uuid> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT tenant_id FROM {table}")))
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            seen,
            vec![a.as_uuid()],
            "{table}: tenant A must see exactly its own row"
        );
    }
    let touched = sqlx::query("UPDATE memberships SET roles = '[]' WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        touched.rows_affected(),
        0,
        "tenant A must not update tenant B's rows"
    );
    let deleted = sqlx::query("DELETE FROM invitations WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        deleted.rows_affected(),
        0,
        "tenant A must not delete tenant B's rows"
    );
    tx.commit().await.unwrap();

    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let smuggled = sqlx::query(
        "INSERT INTO memberships (id, tenant_id, user_id, roles, created_at, updated_at, version) \
         VALUES ($1, $2, $3, '[]', now(), now(), 1)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(b.as_uuid())
    .bind(user.id.as_uuid())
    .execute(&mut *tx)
    .await;
    let err = smuggled.expect_err("inserting into tenant B while scoped to A must fail");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The pooled connection carries no tenant setting into the next transaction.
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(&raw)
            .await
            .unwrap();
    assert!(
        setting.unwrap_or_default().is_empty(),
        "the setting must not leak"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Through the store, B's rows are intact.
    let b_members = identity
        .list_members(b, &tenancy_core::page::PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(b_members.items.len(), 1);
    assert_eq!(b_members.items[0].roles[0].as_str(), "admin");
    raw.close().await;
    db.drop_database().await;
}
