//! The policy store conformance suite (feature `conformance`): plain async functions
//! every [`PolicyStore`] backend runs with a fresh store, including the two-tenant
//! isolation test, plus an engine-level test of [`Authz`] over the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite reports failures by panicking"
)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tenancy_core::clock::{Clock, SystemClock};
use tenancy_core::page::PageRequest;
use tenancy_core::{ErrorKind, TenantId};

use crate::cache::{DecisionCache, DecisionKey};
use crate::engine::{Authz, AuthzConfig, CheckRequest, Decision, EvaluationError};
use crate::model::{PolicyDocument, PolicySetDocument, PolicyVersion, SchemaDocument};
use crate::store::PolicyStore;

fn version(tenant: TenantId, number: i64, policy_text: &str) -> PolicyVersion {
    let mut document = PolicySetDocument::default();
    document.policies.insert(
        "p".into(),
        PolicyDocument {
            id: "p".into(),
            text: policy_text.into(),
            description: format!("version {number}"),
        },
    );
    PolicyVersion {
        tenant_id: tenant,
        version: number,
        created_at: SystemClock.now(),
        change: format!("write {number}"),
        document,
    }
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(r: tenancy_core::Result<T>, kind: ErrorKind) {
    match r {
        Err(e) => assert_eq!(e.kind(), kind, "expected {kind:?}, got {e}"),
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
    }
}

/// Appending and reading versions back: latest, by number, listed newest first.
pub async fn append_and_read(store: &dyn PolicyStore) {
    let t = TenantId::new();
    assert_eq!(store.latest_version(t).await.unwrap(), 0);
    assert!(store.latest(t).await.unwrap().is_none());
    let v1 = version(t, 1, "permit(principal, action, resource);");
    let v2 = version(t, 2, "forbid(principal, action, resource);");
    store.append(t, &v1).await.unwrap();
    store.append(t, &v2).await.unwrap();
    assert_eq!(store.latest_version(t).await.unwrap(), 2);
    assert_eq!(store.latest(t).await.unwrap(), Some(v2.clone()));
    assert_eq!(store.version(t, 1).await.unwrap(), v1);
    assert_kind(store.version(t, 3).await, ErrorKind::NotFound);
    assert_kind(store.version(t, 0).await, ErrorKind::NotFound);
    let listed = store
        .list_versions(t, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![v2.info(), v1.info()]);
    assert!(listed.next.is_none());
}

/// Only the next number may be appended; of concurrent appends of it, exactly one
/// succeeds.
pub async fn stale_appends_conflict(store: &dyn PolicyStore) {
    let t = TenantId::new();
    store
        .append(t, &version(t, 1, "permit(principal, action, resource);"))
        .await
        .unwrap();
    assert_kind(
        store
            .append(t, &version(t, 1, "forbid(principal, action, resource);"))
            .await,
        ErrorKind::Conflict,
    );
    assert_kind(
        store
            .append(t, &version(t, 3, "forbid(principal, action, resource);"))
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(store.latest_version(t).await.unwrap(), 1);

    let racers: Vec<PolicyVersion> = (0..8)
        .map(|i| {
            version(
                t,
                2,
                &format!("// racer {i}\npermit(principal, action, resource);"),
            )
        })
        .collect();
    let results = join_all(racers.iter().map(|v| store.append(t, v))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.kind(), ErrorKind::Conflict);
    }
    let winner = results.iter().position(Result::is_ok).unwrap();
    assert_eq!(store.latest(t).await.unwrap(), Some(racers[winner].clone()));
}

/// Version lists page newest first, every version exactly once.
pub async fn version_pagination(store: &dyn PolicyStore) {
    let t = TenantId::new();
    for n in 1..=25 {
        store
            .append(t, &version(t, n, "permit(principal, action, resource);"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(10);
    loop {
        let p = store.list_versions(t, &page).await.unwrap();
        assert!(p.items.len() <= 10);
        seen.extend(p.items.iter().map(|v| v.version));
        match p.next {
            Some(c) => {
                page = PageRequest {
                    after: Some(c),
                    limit: 10,
                }
            }
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());
}

/// Two tenants with the same policy ids and version numbers never see each other's.
pub async fn tenant_isolation(store: &dyn PolicyStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let va = version(a, 1, "permit(principal, action, resource);");
    let vb = version(b, 1, "forbid(principal, action, resource);");
    store.append(a, &va).await.unwrap();
    store.append(b, &vb).await.unwrap();
    assert_eq!(store.latest(a).await.unwrap(), Some(va.clone()));
    assert_eq!(store.latest(b).await.unwrap(), Some(vb.clone()));
    assert_eq!(store.version(b, 1).await.unwrap(), vb);
    assert_eq!(
        store
            .list_versions(a, &PageRequest::first(10))
            .await
            .unwrap()
            .items,
        vec![va.info()]
    );
    // A record of B written through A's scope is refused and changes nothing.
    assert_kind(
        store
            .append(a, &version(b, 2, "permit(principal, action, resource);"))
            .await,
        ErrorKind::InvalidInput,
    );
    assert_eq!(store.latest_version(b).await.unwrap(), 1);
    store
        .append(a, &version(a, 2, "permit(principal, action, resource);"))
        .await
        .unwrap();
    assert_eq!(store.latest_version(b).await.unwrap(), 1);
    assert_eq!(store.latest_version(TenantId::new()).await.unwrap(), 0);
}

/// [`Authz`] over the store: invalid writes change nothing, stale writers conflict,
/// rollback is a new version, and a second engine on the same store (another process)
/// sees writes once it revalidates.
pub async fn engine_over_store(store: Arc<dyn PolicyStore>) {
    let config = AuthzConfig {
        revalidate_after: Duration::ZERO,
        ..AuthzConfig::default()
    };
    let writer = Authz::with_config(store.clone(), config.clone());
    let reader = Authz::with_config(store.clone(), config);
    let t = TenantId::new();
    let schema = "entity Doc; action read appliesTo { principal: User, resource: Doc };";
    let v1 = writer
        .set_schema(t, 0, Some(SchemaDocument::Cedar(schema.into())))
        .await
        .unwrap();
    let request = CheckRequest {
        principal: r#"User::"u1""#.into(),
        action: r#"Action::"read""#.into(),
        resource: r#"Doc::"d1""#.into(),
        entities: serde_json::json!([{ "uid": { "type": "User", "id": "u1" }, "attrs": {}, "parents": [{ "type": "Role", "id": "reader" }] }]),
        ..Default::default()
    };
    assert!(!reader.is_authorized(t, &request).await.unwrap().allowed);

    let bad = PolicyDocument {
        id: "bad".into(),
        text: r#"permit(principal, action == Action::"write", resource);"#.into(),
        description: String::new(),
    };
    let err = writer.create_policy(t, v1.version, bad).await.unwrap_err();
    assert_eq!(err.field(), Some("policies"), "{err}");
    assert!(err.to_string().contains("`bad` at 1:"), "{err}");
    assert_eq!(store.latest_version(t).await.unwrap(), v1.version);

    let good = PolicyDocument {
        id: "readers".into(),
        text: r#"permit(principal in Role::"reader", action == Action::"read", resource);"#.into(),
        description: String::new(),
    };
    let v2 = writer
        .create_policy(t, v1.version, good.clone())
        .await
        .unwrap();
    assert_kind(
        writer.create_policy(t, v1.version, good).await,
        ErrorKind::Conflict,
    );
    let d = reader.is_authorized(t, &request).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.determining_policies, ["readers"]);
    assert_eq!(d.policy_version, v2.version);

    let v3 = writer.rollback(t, v2.version, v1.version).await.unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(
        writer.current(t).await.unwrap().document,
        store.version(t, 1).await.unwrap().document
    );
    assert!(!reader.is_authorized(t, &request).await.unwrap().allowed);
    let listed = writer
        .list_versions(t, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(listed.items[0].change, "rollback to version 1");
}

/// A decision cache returns what was put under the same key only: another tenant,
/// another policy version or another request is a miss.
pub async fn decision_cache_roundtrip(cache: &dyn DecisionCache) {
    let tenant = TenantId::new();
    let request = CheckRequest {
        principal: r#"User::"u""#.into(),
        action: r#"Action::"read""#.into(),
        resource: r#"Doc::"d""#.into(),
        context: serde_json::json!({ "ip": "10.0.0.1", "n": 1 }),
        entities: serde_json::json!([]),
    };
    let key = DecisionKey::new(tenant, 4, &request);
    assert!(cache.get(&key).await.unwrap().is_none());
    let decision = Decision {
        allowed: true,
        determining_policies: vec!["p1".into(), "p2".into()],
        errors: vec![EvaluationError {
            policy_id: "p3".into(),
            message: "boom".into(),
        }],
        policy_version: 4,
    };
    cache.put(&key, &decision).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), Some(decision));
    assert!(
        cache
            .get(&DecisionKey::new(tenant, 5, &request))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .get(&DecisionKey::new(TenantId::new(), 4, &request))
            .await
            .unwrap()
            .is_none()
    );
    let mut other = request.clone();
    other.context = serde_json::json!({ "ip": "10.0.0.1", "n": 2 });
    assert!(
        cache
            .get(&DecisionKey::new(tenant, 4, &other))
            .await
            .unwrap()
            .is_none()
    );
    // Key order inside JSON objects does not matter; values do.
    let mut reordered = request.clone();
    reordered.context = serde_json::json!({ "n": 1, "ip": "10.0.0.1" });
    assert_eq!(DecisionKey::new(tenant, 4, &reordered), key);
}
