//! The billing conformance suite on memory, SQLite and PostgreSQL (when
//! `TENANCY_TEST_POSTGRES_URL` is set; with `TENANCY_TEST_REQUIRE_BACKENDS=1` a
//! missing URL fails), PostgreSQL's row-level security on the billing tables, and
//! usage priced from tenancy-metering.

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use tenancy_billing::conformance;
use tenancy_billing::sql::{migrate_postgres, migrate_sqlite};
use tenancy_billing::{BillingStore, MemoryBillingStore};
use tenancy_core::TenantId;
use tenancy_core::conformance::{PgTestDatabase, sqlite_test_store};
use tenancy_core::events::OutboxStore;

pub struct Backend {
    pub store: Arc<dyn BillingStore>,
    pub outbox: Arc<dyn OutboxStore>,
    _dir: Option<tempfile::TempDir>,
    pub pg: Option<PgTestDatabase>,
}

impl Backend {
    pub async fn finish(self) {
        drop(self.store);
        drop(self.outbox);
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

pub async fn memory() -> Option<Backend> {
    let store = Arc::new(MemoryBillingStore::new());
    Some(Backend {
        store: store.clone(),
        outbox: store,
        _dir: None,
        pg: None,
    })
}

pub(crate) async fn migrate_sqlite_all(
    store: &tenancy_core::sqlite::SqliteStore,
) -> tenancy_core::Result<()> {
    tenancy_metering::sql::migrate_sqlite(store).await?;
    migrate_sqlite(store).await
}

pub(crate) async fn migrate_postgres_all(
    store: &tenancy_core::postgres::PgStore,
) -> tenancy_core::Result<()> {
    tenancy_metering::sql::migrate_postgres(store).await?;
    migrate_postgres(store).await
}

pub async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(sqlite_test_store(dir.path(), "billing.db", migrate_sqlite_all).await);
    Some(Backend {
        store: store.clone(),
        outbox: store,
        _dir: Some(dir),
        pg: None,
    })
}

/// A database of its own, migrated by the owner, used by a role that owns nothing and
/// cannot bypass row-level security.
pub async fn postgres() -> Option<Backend> {
    let db = PgTestDatabase::create().await?;
    let store = Arc::new(db.app_store(migrate_postgres_all).await);
    Some(Backend {
        store: store.clone(),
        outbox: store,
        _dir: None,
        pg: Some(db),
    })
}

macro_rules! billing_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! store_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(b.store.clone()).await;
                            b.finish().await;
                        }
                    };
                }

                macro_rules! outbox_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(b.store.clone(), b.outbox.clone()).await;
                            b.finish().await;
                        }
                    };
                }

                store_test!(catalog);
                outbox_test!(subscription_lifecycle);
                store_test!(proration_and_balance);
                outbox_test!(atomic_commits);
                store_test!(idempotency);
                store_test!(tenant_isolation);
                store_test!(dunning);
                store_test!(drafts_and_credit_notes);
                store_test!(exactly_once_cycles);
                store_test!(backdated_subscription);
                store_test!(payments);
            }
        )+
    };
}

billing_suite!(memory, sqlite, postgres);

/// Row-level security on every tenant table of billing: the application role sees no
/// row without the tenant setting, only its tenant's with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_billing_rls() {
    let Some(b) = postgres().await else { return };
    let (billing, _, _) = conformance::billing(b.store.clone());
    let plan = conformance::pro_plan(&billing, "Pro", "30", 0).await;
    let (a, other) = (TenantId::new(), TenantId::new());
    for t in [a, other] {
        conformance::customer(&billing, t, "0").await;
        let key = tenancy_billing::Idempotency::new("k", "f").unwrap();
        let created = billing
            .create_subscription(
                t,
                tenancy_billing::NewSubscription {
                    plan_id: plan.id,
                    quantity: 1,
                    trial_days: None,
                    billing_anchor_day: None,
                    backdate_start_date: None,
                },
                Some(&key),
            )
            .await
            .unwrap();
        let invoice = created.invoice.unwrap();
        billing
            .create_credit_note(
                t,
                invoice.id,
                tenancy_billing::NewCreditNote {
                    reason: "test".into(),
                    lines: vec![tenancy_billing::CreditNoteLine {
                        description: "x".into(),
                        amount: 1,
                    }],
                },
                None,
            )
            .await
            .unwrap();
    }
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(b.pg.as_ref().unwrap().app_options())
        .await
        .unwrap();
    let tables = [
        "billing_customers",
        "billing_subscriptions",
        "billing_invoices",
        "billing_credit_notes",
        "billing_idempotency",
    ];
    for table in tables {
        let tx = rls_visibility(&raw, table, a, other).await;
        tx.rollback().await.unwrap();
    }
    // Deleting other tenants' idempotency keys needs the purge setting.
    let deleted = sqlx::query("DELETE FROM billing_idempotency")
        .execute(&raw)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    raw.close().await;
    b.finish().await;
}

/// Row-level security of `table` seen by the application role's pool `raw`: no row
/// without the tenant setting, exactly one row of `tenant` with it and none of `other`.
/// Returns the transaction scoped to `tenant`, for further checks.
pub(crate) async fn rls_visibility<'a>(
    raw: &'a sqlx::PgPool,
    table: &str,
    tenant: TenantId,
    other: TenantId,
) -> sqlx::Transaction<'a, sqlx::Postgres> {
    let count: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(raw)
            .await
            .unwrap();
    assert_eq!(count, 0, "{table} shows rows without a tenant");
    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let mine: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(mine, 1, "{table} shows one row of tenant a");
    let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    )))
    .bind(other.as_uuid())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(foreign, 0, "{table} shows another tenant's rows");
    tx
}
