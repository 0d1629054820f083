//! The in-memory policy store: conformant, for tests, demos and embedding.

use std::collections::HashMap;

use async_trait::async_trait;
use tenancy_core::page::{Page, PageRequest};
use tenancy_core::{Error, Result, TenantId};
use tokio::sync::RwLock;

use crate::model::{PolicyVersion, VersionInfo};
use crate::store::{PolicyStore, before_version, version_cursor};

/// Every tenant's versions, in memory.
#[derive(Debug, Default)]
pub struct MemoryPolicyStore {
    tenants: RwLock<HashMap<TenantId, Vec<PolicyVersion>>>,
}

impl MemoryPolicyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PolicyStore for MemoryPolicyStore {
    async fn latest_version(&self, tenant: TenantId) -> Result<i64> {
        let t = self.tenants.read().await;
        Ok(t.get(&tenant)
            .and_then(|v| v.last())
            .map_or(0, |v| v.version))
    }

    async fn latest(&self, tenant: TenantId) -> Result<Option<PolicyVersion>> {
        let t = self.tenants.read().await;
        Ok(t.get(&tenant).and_then(|v| v.last()).cloned())
    }

    async fn version(&self, tenant: TenantId, version: i64) -> Result<PolicyVersion> {
        let t = self.tenants.read().await;
        t.get(&tenant)
            .and_then(|versions| {
                let index = usize::try_from(version.checked_sub(1)?).ok()?;
                versions.get(index)
            })
            .cloned()
            .ok_or_else(|| Error::not_found("policy version", version))
    }

    async fn append(&self, tenant: TenantId, version: &PolicyVersion) -> Result<()> {
        tenant.check_scope(version.tenant_id)?;
        let mut t = self.tenants.write().await;
        let versions = t.entry(tenant).or_default();
        let latest = versions.last().map_or(0, |v| v.version);
        if version.version != latest + 1 {
            return Err(Error::stale(
                "policy store of tenant",
                tenant,
                version.version - 1,
            ));
        }
        versions.push(version.clone());
        Ok(())
    }

    async fn list_versions(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<VersionInfo>> {
        let t = self.tenants.read().await;
        let before = before_version(page);
        let take = page.effective_limit() as usize + 1;
        let items = t
            .get(&tenant)
            .map(|versions| {
                versions
                    .iter()
                    .rev()
                    .filter(|v| v.version < before)
                    .take(take)
                    .map(PolicyVersion::info)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page::from_overfetch(items, page, |v| {
            version_cursor(v.version)
        }))
    }
}
