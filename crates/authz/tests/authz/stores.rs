//! The policy store conformance suite on every backend.

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use tenancy_authz::PolicyStore;
use tenancy_authz::conformance;
use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_authz::sql::{migrate_postgres, migrate_sqlite};
use tenancy_core::conformance::{PgTestDatabase, backend_url, sqlite_test_store};

struct Backend {
    store: Arc<dyn PolicyStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

impl Backend {
    async fn finish(self) {
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

async fn memory() -> Option<Backend> {
    Some(Backend {
        store: Arc::new(MemoryPolicyStore::new()),
        _dir: None,
        pg: None,
    })
}

async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_test_store(dir.path(), "authz.db", migrate_sqlite).await;
    Some(Backend {
        store: Arc::new(store),
        _dir: Some(dir),
        pg: None,
    })
}

/// A database of its own, migrated by the admin (identity, then policies), used by a
/// role that owns nothing and cannot bypass row-level security.
async fn postgres() -> Option<Backend> {
    let db = PgTestDatabase::create().await?;
    let app = db.app_store(migrate_postgres).await;
    Some(Backend {
        store: Arc::new(app),
        _dir: None,
        pg: Some(db),
    })
}

macro_rules! policy_store_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! store_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(&*b.store).await;
                            b.finish().await;
                        }
                    };
                }

                store_test!(append_and_read);
                store_test!(stale_appends_conflict);
                store_test!(version_pagination);
                store_test!(tenant_isolation);

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn engine_over_store() {
                    let Some(b) = super::$backend().await else { return };
                    conformance::engine_over_store(b.store.clone()).await;
                    b.finish().await;
                }
            }
        )+
    };
}

policy_store_suite!(memory, sqlite, postgres);

/// Row-level security on the policy table: the application role sees no version
/// without the tenant setting, and only its tenant's with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_policy_rls() {
    let Some(b) = postgres().await else { return };
    let (a, other) = (tenancy_core::TenantId::new(), tenancy_core::TenantId::new());
    let engine = tenancy_authz::Authz::new(b.store.clone());
    for t in [a, other] {
        let doc = tenancy_authz::PolicyDocument {
            id: "p".into(),
            text: "permit(principal, action, resource);".into(),
            description: String::new(),
        };
        engine.create_policy(t, 0, doc).await.unwrap();
    }
    let app_options = b.pg.as_ref().unwrap().app_options();
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(app_options)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM policy_versions")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(n, 0, "no tenant setting must mean no rows");
    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM policy_versions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec![a.as_uuid()]);
    tx.rollback().await.unwrap();
    raw.close().await;
    b.finish().await;
}

#[tokio::test]
async fn memory_decision_cache() {
    let cache = tenancy_authz::MemoryDecisionCache::new(100, std::time::Duration::from_secs(60));
    conformance::decision_cache_roundtrip(&cache).await;
}

#[tokio::test]
async fn redis_decision_cache() {
    let Some(url) = backend_url("TENANCY_TEST_REDIS_URL", "Redis decision cache") else {
        return;
    };
    let prefix = format!("tenancy-test-{}", uuid::Uuid::now_v7().simple());
    let cache = tenancy_authz::RedisDecisionCache::connect(
        &url,
        std::time::Duration::from_secs(60),
        &prefix,
    )
    .await
    .unwrap();
    conformance::decision_cache_roundtrip(&cache).await;
}
