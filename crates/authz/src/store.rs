//! The policy store trait: an append-only log of immutable versions per tenant.

use async_trait::async_trait;
use tenancy_core::page::{Page, PageRequest};
use tenancy_core::{Result, TenantId};

use crate::model::{PolicyVersion, VersionInfo};

/// Where tenants' policy versions live. Every method takes the tenant first and never
/// reads or writes another tenant's versions.
///
/// Contract:
/// - Versions are immutable and numbered 1, 2, 3, … per tenant without gaps.
/// - [`PolicyStore::append`] is the only write. It stores `version` if and only if its
///   number is the latest number + 1 (1 for a tenant with none); otherwise it is
///   `Conflict` and nothing is written. Of concurrent appends of the same number,
///   exactly one succeeds: this is how concurrent writers detect a stale read.
/// - [`PolicyStore::latest_version`] is cheap: engines call it to notice writes made by
///   other processes.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The latest version number of `tenant`, or 0 if it has none.
    async fn latest_version(&self, tenant: TenantId) -> Result<i64>;
    /// The latest version of `tenant`, if any.
    async fn latest(&self, tenant: TenantId) -> Result<Option<PolicyVersion>>;
    /// Version `version` of `tenant`; `NotFound` if there is no such version.
    async fn version(&self, tenant: TenantId, version: i64) -> Result<PolicyVersion>;
    /// Appends the next version (see the trait docs); `InvalidInput` if the record
    /// names another tenant.
    async fn append(&self, tenant: TenantId, version: &PolicyVersion) -> Result<()>;
    /// A page of `tenant`'s versions, newest first.
    async fn list_versions(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<VersionInfo>>;
}

/// Versions are listed newest first; the opaque cursor carries the last version seen.
pub(crate) fn version_cursor(version: i64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0, version.unsigned_abs())
}

/// The version a cursor resumes before (`i64::MAX` on the first page).
pub(crate) fn before_version(page: &PageRequest) -> i64 {
    page.after_id()
        .map(|u| i64::try_from(u.as_u64_pair().1).unwrap_or(i64::MAX))
        .unwrap_or(i64::MAX)
}
