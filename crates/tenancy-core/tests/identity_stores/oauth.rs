//! The provider store conformance suite (`conformance::oauth`) on every backend.

use std::sync::Arc;

use tenancy_core::conformance::oauth as suite;
use tenancy_core::memory::{MemoryRateLimiter, MemoryStore};
use tenancy_core::oauth::ProviderStore;

async fn memory() -> Option<Arc<dyn ProviderStore>> {
    Some(Arc::new(MemoryStore::new()))
}

macro_rules! provider_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! provider_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(store) = super::$backend().await else { return };
                            suite::$name(&*store).await;
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

provider_suite!(memory);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rate_limiter() {
    suite::rate_limiter(&MemoryRateLimiter::new()).await;
}
