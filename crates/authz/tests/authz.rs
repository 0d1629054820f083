//! tenancy-authz integration tests: the policy store conformance suite on memory,
//! SQLite and PostgreSQL (when `TENANCY_TEST_POSTGRES_URL` is set; with
//! `TENANCY_TEST_REQUIRE_BACKENDS=1` a missing URL fails), the RBAC/ABAC example table,
//! and the differential test against the raw `cedar-policy` authorizer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "tests"
)]

#[path = "authz/differential.rs"]
mod differential;
#[path = "authz/stores.rs"]
mod stores;

use std::sync::Arc;

use serde::Deserialize;
use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_authz::{Authz, CheckRequest, PolicyDocument, SchemaDocument};
use tenancy_core::TenantId;

#[derive(Deserialize)]
struct Fixture {
    schema: String,
    policies: Vec<PolicyDocument>,
    entities: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: serde_json::Value,
    allowed: bool,
    determining: Vec<String>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/rbac_abac.json")).unwrap()
}

async fn load(authz: &Authz, tenant: TenantId, f: &Fixture) {
    let mut v = authz
        .set_schema(tenant, 0, Some(SchemaDocument::Cedar(f.schema.clone())))
        .await
        .unwrap()
        .version;
    for p in &f.policies {
        v = authz
            .create_policy(tenant, v, p.clone())
            .await
            .unwrap()
            .version;
    }
}

#[tokio::test]
async fn rbac_abac_table() {
    let f = fixture();
    let authz = Authz::new(Arc::new(MemoryPolicyStore::new()));
    let (a, b) = (TenantId::new(), TenantId::new());
    load(&authz, a, &f).await;
    for (i, case) in f.cases.iter().enumerate() {
        let request = CheckRequest {
            principal: case.principal.clone(),
            action: case.action.clone(),
            resource: case.resource.clone(),
            context: case.context.clone(),
            entities: f.entities.clone(),
        };
        let d = authz.is_authorized(a, &request).await.unwrap();
        assert_eq!(
            d.allowed, case.allowed,
            "case {i}: {} {} {}",
            case.principal, case.action, case.resource
        );
        assert_eq!(d.determining_policies, case.determining, "case {i}");
        assert!(d.errors.is_empty(), "case {i}: {:?}", d.errors);
        let other = authz.is_authorized(b, &request).await.unwrap();
        assert!(
            !other.allowed && other.determining_policies.is_empty(),
            "case {i} in tenant B"
        );
    }
}
