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

fn request(
    principal: &str,
    action: &str,
    resource: &str,
    entities: serde_json::Value,
) -> CheckRequest {
    CheckRequest {
        principal: principal.into(),
        action: action.into(),
        resource: resource.into(),
        context: serde_json::Value::Null,
        entities,
    }
}

/// Bad requests and bad writes are `InvalidInput` naming the problem, and change
/// nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let f = fixture();
    let authz = Authz::new(Arc::new(MemoryPolicyStore::new()));
    let t = TenantId::new();
    load(&authz, t, &f).await;
    let before = authz.current(t).await.unwrap();

    let cases = [
        (
            request(
                "User::\"bob\"",
                "Action::\"fly\"",
                "Document::\"d1\"",
                f.entities.clone(),
            ),
            "request",
        ),
        (
            request(
                "Robot::\"r2\"",
                "Action::\"view\"",
                "Document::\"d1\"",
                f.entities.clone(),
            ),
            "request",
        ),
        (
            request(
                "bob",
                "Action::\"view\"",
                "Document::\"d1\"",
                f.entities.clone(),
            ),
            "principal",
        ),
        (
            request(
                "User::\"bob\"",
                "Action::\"view\"",
                "Document::\"d1\"",
                serde_json::json!({"not": "an array"}),
            ),
            "entities",
        ),
        (
            request(
                "User::\"bob\"",
                "Action::\"view\"",
                "Document::\"d1\"",
                serde_json::json!([{ "uid": { "type": "Document", "id": "d9" }, "attrs": { "owner": 5 }, "parents": [] }]),
            ),
            "entities[0]",
        ),
    ];
    for (r, field) in cases {
        let err = authz.is_authorized(t, &r).await.unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
    }
    let mut r = request(
        "User::\"bob\"",
        "Action::\"download\"",
        "Document::\"d1\"",
        f.entities.clone(),
    );
    r.context = serde_json::json!({ "ip": "not an ip", "hour": 10 });
    assert_eq!(
        authz.is_authorized(t, &r).await.unwrap_err().field(),
        Some("context")
    );
    let too_many = serde_json::Value::Array(
        (0..=tenancy_authz::MAX_ENTITIES).map(|i| serde_json::json!({ "uid": { "type": "User", "id": i.to_string() }, "attrs": {}, "parents": [] })).collect(),
    );
    let err = authz
        .is_authorized(
            t,
            &request(
                "User::\"bob\"",
                "Action::\"view\"",
                "Document::\"d1\"",
                too_many,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("entities"));
    let items = vec![tenancy_authz::BatchItem::default(); tenancy_authz::MAX_BATCH + 1];
    let err = authz
        .batch_is_authorized(t, &items, &serde_json::Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("requests"));

    let v = before.version;
    let syntax = PolicyDocument {
        id: "broken".into(),
        text: "permit(principal, action, resource) when { principal.".into(),
        description: String::new(),
    };
    let err = authz.create_policy(t, v, syntax).await.unwrap_err();
    assert!(err.to_string().contains("`broken` at 1:"), "{err}");
    let bad_id = PolicyDocument {
        id: "no spaces allowed".into(),
        text: "permit(principal, action, resource);".into(),
        description: String::new(),
    };
    assert_eq!(
        authz.create_policy(t, v, bad_id).await.unwrap_err().field(),
        Some("policy_id")
    );
    let err = authz
        .set_schema(t, v, Some(SchemaDocument::Cedar("entity Document;".into())))
        .await
        .unwrap_err();
    assert_eq!(
        err.field(),
        Some("policies"),
        "the policies no longer validate: {err}"
    );
    assert_eq!(authz.current(t).await.unwrap(), before, "nothing changed");
    let diagnostics = authz
        .validate_policies(
            t,
            None,
            vec![PolicyDocument {
                id: "dry".into(),
                text: "permit(principal, action == Action::\"fly\", resource);".into(),
                description: String::new(),
            }],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].policy_id, "dry");
    assert_eq!(diagnostics[0].line, Some(1));
    assert_eq!(
        authz.current(t).await.unwrap(),
        before,
        "a dry run writes nothing"
    );
}

/// Templates and links: one template, linked per principal and resource.
#[tokio::test]
async fn templates_link_per_principal_and_resource() {
    let f = fixture();
    let authz = Authz::new(Arc::new(MemoryPolicyStore::new()));
    let t = TenantId::new();
    let v = authz
        .set_schema(t, 0, Some(SchemaDocument::Cedar(f.schema.clone())))
        .await
        .unwrap()
        .version;
    let template = PolicyDocument {
        id: "editors".into(),
        text: "permit(principal == ?principal, action == Action::\"edit\", resource == ?resource);"
            .into(),
        description: "grant edit on one document".into(),
    };
    let v = authz.create_template(t, v, template).await.unwrap().version;
    let link = tenancy_authz::TemplateLink {
        id: "carol-edits-d1".into(),
        template_id: "editors".into(),
        principal: Some("User::\"carol\"".into()),
        resource: Some("Document::\"d1\"".into()),
        description: String::new(),
    };
    let v = authz.link_template(t, v, link).await.unwrap().version;
    let d = authz
        .is_authorized(
            t,
            &request(
                "User::\"carol\"",
                "Action::\"edit\"",
                "Document::\"d1\"",
                f.entities.clone(),
            ),
        )
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!(d.determining_policies, ["carol-edits-d1"]);
    assert!(
        !authz
            .is_authorized(
                t,
                &request(
                    "User::\"carol\"",
                    "Action::\"edit\"",
                    "Document::\"d2\"",
                    f.entities.clone()
                )
            )
            .await
            .unwrap()
            .allowed
    );
    let err = authz.delete_template(t, v, "editors").await.unwrap_err();
    assert_eq!(err.kind(), tenancy_core::ErrorKind::Conflict);
    let v = authz
        .unlink_template(t, v, "carol-edits-d1")
        .await
        .unwrap()
        .version;
    authz.delete_template(t, v, "editors").await.unwrap();
    assert!(
        !authz
            .is_authorized(
                t,
                &request(
                    "User::\"carol\"",
                    "Action::\"edit\"",
                    "Document::\"d1\"",
                    f.entities.clone()
                )
            )
            .await
            .unwrap()
            .allowed
    );
}

/// Principals come from the identity store: a member's roles are their parents, so a
/// role policy applies with no entities in the request; a non-member has no roles,
/// and request-supplied entities cannot grant a member roles they do not hold.
#[tokio::test]
async fn principals_and_roles_load_from_identity() {
    use tenancy_core::identity::{Identity, NewTenant, NewUser};
    let identity = Identity::new(Arc::new(tenancy_core::memory::MemoryStore::new()));
    let acme = identity
        .create_tenant(NewTenant {
            slug: "acme".into(),
            display_name: "Acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let other = identity
        .create_tenant(NewTenant {
            slug: "other".into(),
            display_name: "Other".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let alice = identity
        .create_user(NewUser {
            email: "alice@acme.test".into(),
            display_name: "Alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    identity
        .add_member(acme.id, alice.id, &["admin"])
        .await
        .unwrap();
    identity
        .add_member(other.id, alice.id, &["viewer"])
        .await
        .unwrap();

    let authz = Authz::new(Arc::new(MemoryPolicyStore::new())).with_entity_provider(Arc::new(
        tenancy_authz::IdentityEntities::new(identity.clone()),
    ));
    let schema =
        "entity Report; action view, purge appliesTo { principal: User, resource: Report };";
    let policy = PolicyDocument { id: "admins-purge".into(), text: "permit(principal in Role::\"admin\", action == Action::\"purge\", resource) when { principal has email && principal.email like \"*@acme.test\" };".into(), description: String::new() };
    for tenant in [acme.id, other.id] {
        let v = authz
            .set_schema(tenant, 0, Some(SchemaDocument::Cedar(schema.into())))
            .await
            .unwrap()
            .version;
        authz
            .create_policy(tenant, v, policy.clone())
            .await
            .unwrap();
    }
    let principal = format!("User::\"{}\"", alice.id);
    let purge = request(
        &principal,
        "Action::\"purge\"",
        "Report::\"q3\"",
        serde_json::Value::Null,
    );
    let d = authz.is_authorized(acme.id, &purge).await.unwrap();
    assert!(d.allowed, "{d:?}");
    assert!(
        !authz.is_authorized(other.id, &purge).await.unwrap().allowed,
        "a viewer in the other tenant"
    );
    // A forged entity claiming the admin role is overridden by the identity store.
    let forged = serde_json::json!([{ "uid": { "type": "User", "id": alice.id.to_string() }, "attrs": { "email": "alice@acme.test" }, "parents": [{ "type": "Role", "id": "admin" }] }]);
    assert!(
        !authz
            .is_authorized(
                other.id,
                &request(&principal, "Action::\"purge\"", "Report::\"q3\"", forged)
            )
            .await
            .unwrap()
            .allowed
    );
    let allowed = authz
        .allowed_actions(
            acme.id,
            &principal,
            "Report::\"q3\"",
            &["Action::\"view\"".into(), "Action::\"purge\"".into()],
            &serde_json::Value::Null,
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert_eq!(allowed, ["Action::\"purge\""]);
}
