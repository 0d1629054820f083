//! The provider store conformance suite (`conformance::oauth`) on every backend, the
//! rate limiters, and row-level security of the provider's tenant tables.

use chrono::{Duration, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolOptions;
use tenancy_core::conformance::backend_url;
use tenancy_core::conformance::oauth as suite;
use tenancy_core::memory::MemoryRateLimiter;
use tenancy_core::oauth::{
    ClientScope, Consent, OAuthStore, Quota, RateDecision, RateLimiter, SessionStore,
};
use tenancy_core::postgres::PgStore;
use tenancy_core::redis_store::{RedisRateLimiter, RedisSessionStore};
use tenancy_core::{TenantId, UserId};

use super::migrated_database;

macro_rules! provider_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                macro_rules! provider_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(t) = super::super::$backend().await else { return };
                            super::suite::$name(&*t.provider).await;
                            t.finish().await;
                        }
                    };
                }

                provider_test!(oauth_clients);
                provider_test!(oauth_codes);
                provider_test!(oauth_refresh_tokens);
                provider_test!(oauth_consents);
                provider_test!(oauth_revocations);
                provider_test!(oauth_purge);
                provider_test!(oauth_tenant_isolation);
                provider_test!(oauth_delete_client);
                provider_test!(login_sessions);
                provider_test!(provider_purge);
                provider_test!(signing_keys);
            }
        )+
    };
}

provider_suite!(memory, sqlite, postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rate_limiter() {
    suite::rate_limiter(&MemoryRateLimiter::new()).await;
}

/// A key prefix of its own for one Redis test (CI deletes `tenancy-test-*` keys).
fn redis_prefix() -> String {
    format!("tenancy-test-{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions() {
    let Some(url) = backend_url("TENANCY_TEST_REDIS_URL", "Redis sessions") else {
        return;
    };
    let prefix = redis_prefix();
    let store = RedisSessionStore::connect(&url, &prefix).await.unwrap();
    suite::login_sessions(&store).await;

    // Redis itself expires a session at its expiry, and its user's set no later.
    let session = suite::sample_session(UserId::new());
    store.insert_session(&session).await.unwrap();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(at, session.expires_at.timestamp_millis(), "{key}");
    }
    // A session that has already expired is not stored.
    let mut old = suite::sample_session(UserId::new());
    old.expires_at = Utc::now() - Duration::seconds(1);
    store.insert_session(&old).await.unwrap();
    assert_eq!(
        store
            .session(&old.id_hash, old.auth_time - Duration::hours(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.delete_user_sessions(old.user_id).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_limiter() {
    let Some(url) = backend_url("TENANCY_TEST_REDIS_URL", "Redis rate limiter") else {
        return;
    };
    let prefix = redis_prefix();
    let limiter = RedisRateLimiter::connect(&url, &prefix).await.unwrap();
    suite::rate_limiter(&limiter).await;

    // Two processes (two connections) share each key's budget.
    let other = RedisRateLimiter::connect(&url, &prefix).await.unwrap();
    let quota = Quota {
        burst: 4,
        period: std::time::Duration::from_secs(60),
    };
    let now = Utc::now();
    let checks = (0..12).map(|i| {
        let limiter = if i % 2 == 0 { &limiter } else { &other };
        limiter.check("shared", quota, now)
    });
    let allowed = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(|d| *d.as_ref().unwrap() == RateDecision::Allowed)
        .count();
    assert_eq!(allowed, 4);
    // Another prefix is another namespace.
    let elsewhere = RedisRateLimiter::connect(&url, &redis_prefix())
        .await
        .unwrap();
    assert_eq!(
        elsewhere.check("shared", quota, now).await.unwrap(),
        RateDecision::Allowed
    );
}

/// The provider's tenant tables, as named in the migrations.
const TENANT_TABLES: [&str; 5] = [
    "oauth_codes",
    "oauth_grants",
    "oauth_refresh_tokens",
    "oauth_consents",
    "oauth_revoked_tokens",
];

async fn count(executor: impl sqlx::PgExecutor<'_>, table: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(executor)
        .await
        .unwrap()
}

/// Row-level security of the provider tables against the application role itself:
/// without `app.tenant_id` a raw `SELECT` sees no tenant row (and only global
/// clients); with tenant A's setting it never sees B's rows nor B's own client, cannot
/// write into B; the purge setting reveals only expired rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_oauth_rls_attack() {
    let Some(db) = migrated_database().await else {
        return;
    };
    let store = PgStore::connect_with(db.app_options()).await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    let global = suite::sample_client(None);
    store.insert_client(&global).await.unwrap();
    let mut own = Vec::new();
    for tenant in [a, b] {
        let client = suite::sample_client(Some(tenant));
        store.insert_client(&client).await.unwrap();
        let grant = suite::sample_grant(tenant, client.id);
        store.insert_grant(tenant, &grant).await.unwrap();
        let mut code = suite::sample_code(tenant, client.id, grant.id);
        code.expires_at = Utc::now() - Duration::minutes(1);
        store.insert_code(tenant, &code).await.unwrap();
        store
            .insert_refresh_token(tenant, &suite::sample_refresh_token(&grant))
            .await
            .unwrap();
        let consent = Consent {
            tenant_id: tenant,
            user_id: UserId::new(),
            client_id: client.id,
            scope: tenancy_core::oauth::Scopes::parse("openid").unwrap(),
            granted_at: Utc::now(),
        };
        store.put_consent(tenant, &consent).await.unwrap();
        store
            .revoke_access_token(tenant, "jti", Utc::now() + Duration::minutes(5))
            .await
            .unwrap();
        own.push(client);
    }

    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options())
        .await
        .unwrap();
    for table in TENANT_TABLES {
        assert_eq!(
            count(&raw, table).await,
            0,
            "{table}: no tenant setting must mean no rows"
        );
    }
    let visible: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM oauth_clients")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(
        visible,
        vec![global.id.as_uuid()],
        "without a tenant only global clients are visible"
    );
    // The owner directory holds no secret and is readable without a tenant.
    assert_eq!(count(&raw, "oauth_client_owners").await, 3);

    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in TENANT_TABLES {
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
    let mut clients: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM oauth_clients")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    clients.sort();
    let mut expected = vec![global.id.as_uuid(), own[0].id.as_uuid()];
    expected.sort();
    assert_eq!(
        clients, expected,
        "tenant A sees global clients and its own only"
    );
    for (statement, what) in [
        (
            "UPDATE oauth_grants SET revoked_at = now() WHERE tenant_id = $1",
            "update B's grants",
        ),
        (
            "UPDATE oauth_refresh_tokens SET used_at = now() WHERE tenant_id = $1",
            "spend B's tokens",
        ),
        (
            "DELETE FROM oauth_consents WHERE tenant_id = $1",
            "delete B's consents",
        ),
        (
            "DELETE FROM oauth_revoked_tokens WHERE tenant_id = $1",
            "delete B's revocations",
        ),
        (
            "UPDATE oauth_clients SET name = 'pwned' WHERE tenant_id = $1",
            "rename B's client",
        ),
    ] {
        let done = sqlx::query(statement)
            .bind(b.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 0, "tenant A must not {what}");
    }
    tx.commit().await.unwrap();

    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let smuggled = sqlx::query(
        "INSERT INTO oauth_revoked_tokens (tenant_id, jti, expires_at) VALUES ($1, 'x', now())",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await;
    let err = smuggled.expect_err("inserting into tenant B while scoped to A must fail");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The purge setting shows expired rows only (here: the two codes), and allows no update.
    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.purge_before', $1, true)")
        .bind(Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut *tx, "oauth_codes").await, 2);
    for table in [
        "oauth_grants",
        "oauth_refresh_tokens",
        "oauth_consents",
        "oauth_revoked_tokens",
    ] {
        assert_eq!(
            count(&mut *tx, table).await,
            0,
            "{table}: the purge must see no live row"
        );
    }
    let touched = sqlx::query("UPDATE oauth_codes SET redeemed = true")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        touched.rows_affected(),
        0,
        "the purge setting must not allow updates"
    );
    tx.rollback().await.unwrap();

    // Through the store, B's rows are intact and its client unchanged.
    assert_eq!(store.client(own[1].id).await.unwrap(), own[1]);
    let b_clients = store
        .list_clients(
            ClientScope::Tenant(b),
            &tenancy_core::page::PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(b_clients.items, vec![own[1].clone()]);
    assert!(store.is_access_token_revoked(b, "jti").await.unwrap());
    raw.close().await;
    store.pool().close().await;
    db.drop_database().await;
}
