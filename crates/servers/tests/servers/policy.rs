//! The policy gRPC service in process, over memory stores, next to an identity server
//! sharing its identity store.

use serde_json::{Value, json};
use tenancy_core::TenantId;
use tenancy_servers::proto::identity::v1 as identity_pb;
use tenancy_servers::proto::policy::v1 as pb;
use tenancy_servers::proto::policy::v1::put_schema_request::Schema as PutSchema;
use tenancy_servers::proto::policy::v1::schema::Text as SchemaText;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{
    ADMIN_TOKEN, POLICY_SERVICE, PolicyClient, TestServer, assert_code, assert_invalid,
    create_tenant, create_user, health, reflect,
};

const SCHEMA: &str = "entity Document { owner: User, public: Bool };\n\
                      action view, edit appliesTo { principal: User, resource: Document };\n";

const OWNER_EDIT: &str = "permit(principal, action in [Action::\"view\", Action::\"edit\"], resource)\n\
                          when { resource.owner == principal };";
const ADMINS_VIEW: &str =
    "permit(principal in Role::\"admin\", action == Action::\"view\", resource);";

/// Alice is an admin, Bob owns document `d1`.
fn entities() -> String {
    json!([
        { "uid": { "type": "User", "id": "alice" }, "attrs": {},
          "parents": [{ "type": "Role", "id": "admin" }] },
        { "uid": { "type": "User", "id": "bob" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Role", "id": "admin" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Document", "id": "d1" }, "parents": [],
          "attrs": { "owner": { "__entity": { "type": "User", "id": "bob" } }, "public": false } }
    ])
    .to_string()
}

fn user(id: &str) -> String {
    format!("User::\"{id}\"")
}

fn action(name: &str) -> String {
    format!("Action::\"{name}\"")
}

const D1: &str = "Document::\"d1\"";

async fn put_schema(client: &mut PolicyClient, tenant: &str, expected: i64) -> pb::VersionInfo {
    client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.to_owned(),
            expected_version: expected,
            schema: Some(PutSchema::CedarText(SCHEMA.to_owned())),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap()
}

fn new_policy(tenant: &str, expected: i64, id: &str, text: &str) -> pb::CreatePolicyRequest {
    pb::CreatePolicyRequest {
        tenant_id: tenant.to_owned(),
        expected_version: expected,
        policy_id: id.to_owned(),
        text: text.to_owned(),
        description: format!("policy {id}"),
    }
}

async fn create_policy(
    client: &mut PolicyClient,
    tenant: &str,
    expected: i64,
    id: &str,
    text: &str,
) -> pb::VersionInfo {
    client
        .create_policy(new_policy(tenant, expected, id, text))
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap()
}

/// A tenant with the schema (v1), `owner-edit` (v2) and `admins-view` (v3).
async fn tenant_with_policies(client: &mut PolicyClient) -> String {
    let tenant = TenantId::new().to_string();
    put_schema(client, &tenant, 0).await;
    create_policy(client, &tenant, 1, "owner-edit", OWNER_EDIT).await;
    create_policy(client, &tenant, 2, "admins-view", ADMINS_VIEW).await;
    tenant
}

fn check(tenant: &str, principal: &str, act: &str, resource: &str) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        tenant_id: tenant.to_owned(),
        principal: user(principal),
        action: action(act),
        resource: resource.to_owned(),
        context_json: String::new(),
        entities_json: entities(),
    }
}

async fn decide(
    client: &mut PolicyClient,
    request: pb::CheckPermissionRequest,
) -> (bool, Vec<String>, i64) {
    let d = client.check_permission(request).await.unwrap().into_inner();
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    (d.allowed, d.determining_policies, d.policy_version)
}

async fn latest_version(client: &mut PolicyClient, tenant: &str) -> i64 {
    client
        .get_version(pb::GetVersionRequest {
            tenant_id: tenant.to_owned(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .version
}

#[tokio::test]
async fn schema_policies_and_decisions() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = TenantId::new().to_string();

    let empty = client
        .get_schema(pb::GetSchemaRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.version, 0);
    assert_eq!(empty.schema.unwrap().text, None);

    let v1 = put_schema(&mut client, &tenant, 0).await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.change, "set schema");
    assert!(v1.created_at.is_some());
    let schema = client
        .get_schema(pb::GetSchemaRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schema.version, 1);
    assert_eq!(
        schema.schema.unwrap().text,
        Some(SchemaText::CedarText(SCHEMA.into()))
    );

    let v2 = create_policy(&mut client, &tenant, 1, "owner-edit", OWNER_EDIT).await;
    assert_eq!(v2.version, 2);
    assert_eq!(v2.change, "create policy `owner-edit`");
    let v3 = create_policy(&mut client, &tenant, 2, "admins-view", ADMINS_VIEW).await;
    assert_eq!(v3.version, 3);

    let got = client
        .get_policy(pb::GetPolicyRequest {
            tenant_id: tenant.clone(),
            policy_id: "owner-edit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, 3);
    let policy = got.policy.unwrap();
    assert_eq!(policy.text, OWNER_EDIT);
    assert_eq!(policy.description, "policy owner-edit");
    let listed = client
        .list_policies(pb::ListPoliciesRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .policies
        .iter()
        .map(|p| p.policy_id.as_str())
        .collect();
    assert_eq!(ids, ["admins-view", "owner-edit"]);
    assert!(listed.links.is_empty());
    assert_eq!(listed.version, 3);

    // Single decisions.
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "view", D1)).await,
        (true, vec!["admins-view".to_owned()], 3)
    );
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "edit", D1)).await,
        (false, vec![], 3)
    );
    assert_eq!(
        decide(&mut client, check(&tenant, "bob", "edit", D1)).await,
        (true, vec!["owner-edit".to_owned()], 3)
    );

    // A batch sharing the entities, answered in order.
    let item = |p: &str, a: &str| pb::BatchCheckItem {
        principal: user(p),
        action: action(a),
        resource: D1.into(),
        context_json: String::new(),
    };
    let batch = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: tenant.clone(),
            entities_json: entities(),
            items: vec![
                item("alice", "view"),
                item("alice", "edit"),
                item("bob", "view"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let answers: Vec<(bool, Vec<String>)> = batch
        .decisions
        .into_iter()
        .map(|d| (d.allowed, d.determining_policies))
        .collect();
    assert_eq!(
        answers,
        [
            (true, vec!["admins-view".to_owned()]),
            (false, vec![]),
            (true, vec!["owner-edit".to_owned()]),
        ]
    );

    // Allowed actions, in the order asked.
    let allowed = |principal: &str| pb::AllowedActionsRequest {
        tenant_id: tenant.clone(),
        principal: user(principal),
        resource: D1.into(),
        actions: vec![action("edit"), action("view")],
        context_json: String::new(),
        entities_json: entities(),
    };
    let alice = client
        .allowed_actions(allowed("alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alice.allowed_actions, [action("view")]);
    let bob = client
        .allowed_actions(allowed("bob"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.allowed_actions, [action("edit"), action("view")]);

    // Updates and deletes take effect at once.
    let v4 = client
        .update_policy(pb::UpdatePolicyRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            policy_id: "admins-view".into(),
            text: "permit(principal in Role::\"admin\", action, resource);".into(),
            description: "admins may do anything".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap();
    assert_eq!(v4.version, 4);
    assert_eq!(v4.change, "update policy `admins-view`");
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "edit", D1)).await,
        (true, vec!["admins-view".to_owned()], 4)
    );
    let v5 = client
        .delete_policy(pb::DeletePolicyRequest {
            tenant_id: tenant.clone(),
            expected_version: 4,
            policy_id: "admins-view".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap();
    assert_eq!(v5.version, 5);
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "view", D1)).await,
        (false, vec![], 5)
    );
    let gone = client
        .get_policy(pb::GetPolicyRequest {
            tenant_id: tenant.clone(),
            policy_id: "admins-view".into(),
        })
        .await
        .unwrap_err();
    assert_code(&gone, Code::NotFound, "not_found");
    let twice = client
        .delete_policy(pb::DeletePolicyRequest {
            tenant_id: tenant.clone(),
            expected_version: 5,
            policy_id: "admins-view".into(),
        })
        .await
        .unwrap_err();
    assert_code(&twice, Code::NotFound, "not_found");
    let taken = client
        .create_policy(new_policy(&tenant, 5, "owner-edit", ADMINS_VIEW))
        .await
        .unwrap_err();
    assert_code(&taken, Code::AlreadyExists, "already_exists");

    server.stop().await;
}

#[tokio::test]
async fn stale_versions_are_aborted_and_change_nothing() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = tenant_with_policies(&mut client).await;

    let stale = client
        .create_policy(new_policy(&tenant, 2, "late", ADMINS_VIEW))
        .await
        .unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");
    assert!(stale.message().contains("stale"), "{}", stale.message());
    let stale = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.clone(),
            expected_version: 0,
            schema: Some(PutSchema::Clear(true)),
        })
        .await
        .unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");
    let stale = client
        .rollback(pb::RollbackRequest {
            tenant_id: tenant.clone(),
            expected_version: 1,
            to_version: 1,
        })
        .await
        .unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");
    assert_eq!(latest_version(&mut client, &tenant).await, 3);
}

#[tokio::test]
async fn versions_are_listed_in_pages_and_rolled_back() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = tenant_with_policies(&mut client).await;
    client
        .delete_policy(pb::DeletePolicyRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            policy_id: "admins-view".into(),
        })
        .await
        .unwrap();

    // Newest first, two at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_versions(pb::ListVersionsRequest {
                tenant_id: tenant.clone(),
                page: Some(tenancy_servers::proto::common::v1::PageRequest {
                    page_size: 2,
                    page_token: token,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.versions.len() <= 2);
        seen.extend(page.versions.iter().map(|v| (v.version, v.change.clone())));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            (4, "delete policy `admins-view`".to_owned()),
            (3, "create policy `admins-view`".to_owned()),
            (2, "create policy `owner-edit`".to_owned()),
            (1, "set schema".to_owned()),
        ]
    );

    let v3 = client
        .get_version(pb::GetVersionRequest {
            tenant_id: tenant.clone(),
            version: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v3.info.unwrap().version, 3);
    assert_eq!(
        v3.schema.unwrap().text,
        Some(SchemaText::CedarText(SCHEMA.into()))
    );
    let ids: Vec<&str> = v3.policies.iter().map(|p| p.policy_id.as_str()).collect();
    assert_eq!(ids, ["admins-view", "owner-edit"]);
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "view", D1)).await,
        (false, vec![], 4)
    );

    let v5 = client
        .rollback(pb::RollbackRequest {
            tenant_id: tenant.clone(),
            expected_version: 4,
            to_version: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap();
    assert_eq!(v5.version, 5);
    assert_eq!(v5.change, "rollback to version 3");
    assert_eq!(
        decide(&mut client, check(&tenant, "alice", "view", D1)).await,
        (true, vec!["admins-view".to_owned()], 5)
    );
    let latest = client
        .get_version(pb::GetVersionRequest {
            tenant_id: tenant.clone(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.info.unwrap().version, 5);
    assert_eq!(latest.policies, v3.policies);

    let missing = client
        .rollback(pb::RollbackRequest {
            tenant_id: tenant.clone(),
            expected_version: 5,
            to_version: 99,
        })
        .await
        .unwrap_err();
    assert_code(&missing, Code::NotFound, "not_found");
    let missing = client
        .get_version(pb::GetVersionRequest {
            tenant_id: tenant.clone(),
            version: 6,
        })
        .await
        .unwrap_err();
    assert_code(&missing, Code::NotFound, "not_found");
}

#[tokio::test]
async fn templates_are_linked_and_unlinked() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = tenant_with_policies(&mut client).await;
    let viewer =
        "permit(principal == ?principal, action == Action::\"view\", resource == ?resource);";

    let v4 = client
        .create_template(pb::CreateTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            template_id: "viewer".into(),
            text: viewer.into(),
            description: "one user may view one document".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap();
    assert_eq!(v4.change, "create template `viewer`");
    let got = client
        .get_template(pb::GetTemplateRequest {
            tenant_id: tenant.clone(),
            template_id: "viewer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.template.unwrap().text, viewer);
    let carol_d1 = check(&tenant, "carol", "view", D1);
    assert!(!decide(&mut client, carol_d1.clone()).await.0);

    client
        .link_template(pb::LinkTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 4,
            policy_id: "carol-views-d1".into(),
            template_id: "viewer".into(),
            principal: Some(user("carol")),
            resource: Some(D1.into()),
            description: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        decide(&mut client, carol_d1.clone()).await,
        (true, vec!["carol-views-d1".to_owned()], 5)
    );
    let listed = client
        .list_policies(pb::ListPoliciesRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.links.len(), 1);
    assert_eq!(listed.links[0].template_id, "viewer");
    assert_eq!(
        listed.links[0].principal.as_deref(),
        Some("User::\"carol\"")
    );
    let templates = client
        .list_templates(pb::ListTemplatesRequest {
            tenant_id: tenant.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(templates.templates.len(), 1);
    assert_eq!(templates.version, 5);

    let linked = client
        .delete_template(pb::DeleteTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 5,
            template_id: "viewer".into(),
        })
        .await
        .unwrap_err();
    assert_code(&linked, Code::Aborted, "conflict");
    assert!(
        linked.message().contains("carol-views-d1"),
        "{}",
        linked.message()
    );

    client
        .unlink_template(pb::UnlinkTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 5,
            policy_id: "carol-views-d1".into(),
        })
        .await
        .unwrap();
    assert!(!decide(&mut client, carol_d1).await.0);
    client
        .delete_template(pb::DeleteTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 6,
            template_id: "viewer".into(),
        })
        .await
        .unwrap();
    assert_eq!(latest_version(&mut client, &tenant).await, 7);
}

#[tokio::test]
async fn validate_policies_is_a_dry_run_with_diagnostics() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = tenant_with_policies(&mut client).await;
    let validate = |policies: Vec<pb::Policy>| pb::ValidatePoliciesRequest {
        tenant_id: tenant.clone(),
        schema: None,
        policies,
        templates: vec![],
    };
    let policy = |id: &str, text: &str| pb::Policy {
        policy_id: id.into(),
        text: text.into(),
        description: String::new(),
    };

    let fine = client
        .validate_policies(validate(vec![policy(
            "edit-public",
            "permit(principal, action == Action::\"edit\", resource) when { resource.public };",
        )]))
        .await
        .unwrap()
        .into_inner();
    assert!(fine.diagnostics.is_empty(), "{:?}", fine.diagnostics);

    let bad = client
        .validate_policies(validate(vec![
            policy(
                "typo",
                "permit(principal, action == Action::\"frobnicate\", resource);",
            ),
            policy("broken", "permit(\n  principal,\n  action\n  resource\n);"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let broken = bad
        .diagnostics
        .iter()
        .find(|d| d.policy_id == "broken")
        .unwrap();
    assert_eq!(broken.line, 4, "{broken:?}");
    assert!(broken.column > 0, "{broken:?}");

    // An undeclared action is found once the set parses.
    let typo = client
        .validate_policies(validate(vec![policy(
            "typo",
            "permit(principal, action == Action::\"frobnicate\", resource);",
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(typo.diagnostics.len(), 1, "{:?}", typo.diagnostics);
    assert_eq!(typo.diagnostics[0].policy_id, "typo");
    assert!(
        typo.diagnostics[0].message.contains("frobnicate"),
        "{:?}",
        typo.diagnostics
    );
    assert_eq!(typo.diagnostics[0].line, 1);

    // A schema change can be tried too: without `edit`, `owner-edit` breaks.
    let narrower = client
        .validate_policies(pb::ValidatePoliciesRequest {
            tenant_id: tenant.clone(),
            schema: Some(pb::Schema {
                text: Some(SchemaText::CedarText(
                    "entity Document { owner: User, public: Bool };\n\
                     action view appliesTo { principal: User, resource: Document };"
                        .into(),
                )),
            }),
            policies: vec![],
            templates: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        narrower
            .diagnostics
            .iter()
            .any(|d| d.policy_id == "owner-edit"),
        "{:?}",
        narrower.diagnostics
    );

    assert_eq!(
        latest_version(&mut client, &tenant).await,
        3,
        "nothing was written"
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_problem() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let tenant = tenant_with_policies(&mut client).await;

    // Tenant ids.
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            tenant_id: "not-a-uuid".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "tenant_id");
    assert!(err.message().contains("`not-a-uuid`"), "{}", err.message());
    let err = client
        .create_policy(new_policy("42", 3, "p", ADMINS_VIEW))
        .await
        .unwrap_err();
    assert_invalid(&err, "tenant_id");

    // Policy text: Cedar's diagnostics, with line and column, are passed through.
    let err = client
        .create_policy(new_policy(
            &tenant,
            3,
            "bad",
            "permit(\n  principal,\n  action,\n  resource\n) when { 1 + };",
        ))
        .await
        .unwrap_err();
    assert_invalid(&err, "text");
    assert!(err.message().contains("`bad` at 5:"), "{}", err.message());
    let err = client
        .create_policy(new_policy(
            &tenant,
            3,
            "typo",
            "permit(principal, action == Action::\"frobnicate\", resource);",
        ))
        .await
        .unwrap_err();
    assert_invalid(&err, "text");
    assert!(err.message().contains("frobnicate"), "{}", err.message());
    let err = client
        .create_policy(new_policy(&tenant, 3, "has space", ADMINS_VIEW))
        .await
        .unwrap_err();
    assert_invalid(&err, "policy_id");
    let err = client
        .create_policy(new_policy(&tenant, 3, "empty", " "))
        .await
        .unwrap_err();
    assert_invalid(&err, "text");
    let err = client
        .create_template(pb::CreateTemplateRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            template_id: "no/slash".into(),
            text: "permit(principal == ?principal, action, resource);".into(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "template_id");

    // Schemas.
    let err = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            schema: None,
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "schema");
    let err = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            schema: Some(PutSchema::CedarText("entity ;".into())),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "cedar_text");
    assert!(
        err.message().contains("`schema` at 1:"),
        "{}",
        err.message()
    );
    let err = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.clone(),
            expected_version: 3,
            schema: Some(PutSchema::JsonText("{ not json".into())),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "json_text");

    // Requests the schema does not allow: an undeclared action, an unknown entity type.
    let err = client
        .check_permission(check(&tenant, "alice", "frobnicate", D1))
        .await
        .unwrap_err();
    assert_invalid(&err, "request");
    assert!(err.message().contains("frobnicate"), "{}", err.message());
    let err = client
        .check_permission(check(&tenant, "alice", "view", "Folder::\"f1\""))
        .await
        .unwrap_err();
    assert_invalid(&err, "request");
    assert!(err.message().contains("Folder"), "{}", err.message());
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            principal: "alice".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "principal");
    assert!(err.message().contains("`alice`"), "{}", err.message());

    // JSON: malformed, the wrong shape, a malformed entity, context the schema refuses.
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            entities_json: "[{\"uid\": ".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "entities_json");
    assert!(
        err.message().contains("not valid JSON"),
        "{}",
        err.message()
    );
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            entities_json: "{}".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "entities_json");
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            entities_json: "[{\"attrs\": {}}]".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "entities_json[0]");
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            context_json: "{\"hour\": ".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "context_json");
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            context_json: "[1, 2]".into(),
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "context_json");

    // Batches: too many, one bad item; allowed actions: a bad action.
    let item = pb::BatchCheckItem {
        principal: user("alice"),
        action: action("view"),
        resource: D1.into(),
        context_json: String::new(),
    };
    let err = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: tenant.clone(),
            entities_json: entities(),
            items: vec![item.clone(); 101],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "items");
    assert!(err.message().contains("101"), "{}", err.message());
    let err = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: tenant.clone(),
            entities_json: entities(),
            items: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "items");
    let err = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: tenant.clone(),
            entities_json: entities(),
            items: vec![
                item.clone(),
                pb::BatchCheckItem {
                    context_json: "nope".into(),
                    ..item.clone()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "items[1].context_json");
    let err = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: tenant.clone(),
            entities_json: entities(),
            items: vec![
                item.clone(),
                pb::BatchCheckItem {
                    action: action("frobnicate"),
                    ..item.clone()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "items[1]");
    let err = client
        .allowed_actions(pb::AllowedActionsRequest {
            tenant_id: tenant.clone(),
            principal: user("alice"),
            resource: D1.into(),
            actions: vec![action("view"), "view".into()],
            context_json: String::new(),
            entities_json: entities(),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "actions[1]");

    // A request over 1 MiB is refused before it is decoded.
    let big = format!("{{\"padding\": \"{}\"}}", "x".repeat(1024 * 1024));
    let err = client
        .check_permission(pb::CheckPermissionRequest {
            context_json: big,
            ..check(&tenant, "alice", "view", D1)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "request");
    assert!(err.message().contains("1048576 bytes"), "{}", err.message());
    // The connection is still usable.
    assert!(
        decide(&mut client, check(&tenant, "alice", "view", D1))
            .await
            .0
    );

    assert_eq!(
        latest_version(&mut client, &tenant).await,
        3,
        "nothing was written"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_tenants_are_denied_and_tenants_are_isolated() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let open = TenantId::new().to_string();
    create_policy(
        &mut client,
        &open,
        0,
        "everything",
        "permit(principal, action, resource);",
    )
    .await;
    let request = |tenant: &str| pb::CheckPermissionRequest {
        tenant_id: tenant.to_owned(),
        principal: user("anyone"),
        action: action("anything"),
        resource: "Thing::\"t\"".into(),
        context_json: String::new(),
        entities_json: String::new(),
    };
    assert_eq!(
        decide(&mut client, request(&open)).await,
        (true, vec!["everything".to_owned()], 1)
    );
    let unknown = TenantId::new().to_string();
    assert_eq!(
        decide(&mut client, request(&unknown)).await,
        (false, vec![], 0)
    );
    let versions = client
        .list_versions(pb::ListVersionsRequest {
            tenant_id: unknown.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(versions.versions.is_empty());
    let listed = client
        .list_policies(pb::ListPoliciesRequest { tenant_id: unknown })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policies.is_empty());
    assert_eq!(listed.version, 0);
}

#[tokio::test]
async fn policy_calls_need_the_admin_token() {
    let server = TestServer::start().await;
    let tenant = TenantId::new().to_string();
    let request = || pb::CheckPermissionRequest {
        tenant_id: tenant.clone(),
        principal: user("alice"),
        action: action("view"),
        resource: D1.into(),
        context_json: String::new(),
        entities_json: String::new(),
    };
    let err = server
        .policy_with_token(None)
        .check_permission(request())
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    let err = server
        .policy_with_token(Some("wrong-token"))
        .check_permission(request())
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    // A refused write changes nothing, whatever its size.
    let err = server
        .policy_with_token(None)
        .create_policy(new_policy(
            &tenant,
            0,
            "sneaky",
            "permit(principal, action, resource);",
        ))
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    assert_eq!(latest_version(&mut server.policy(), &tenant).await, 0);
    assert!(
        server
            .policy_with_token(Some(ADMIN_TOKEN))
            .check_permission(request())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn policy_health_and_reflection_need_no_token() {
    let server = TestServer::start().await;
    let channel = server.policy_channel.clone();
    assert_eq!(
        health(channel.clone(), POLICY_SERVICE).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(channel.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    let MessageResponse::ListServicesResponse(list) =
        reflect(channel.clone(), MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&POLICY_SERVICE), "{names:?}");
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        channel.clone(),
        MessageRequest::FileContainingSymbol(POLICY_SERVICE.into()),
    )
    .await
    else {
        panic!("not a file descriptor response");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        channel,
        MessageRequest::FileByFilename("tenancy/policy/v1/policy.proto".into()),
    )
    .await
    else {
        panic!("not a file descriptor response");
    };
    assert_eq!(files.file_descriptor_proto.len(), 1);
    server.stop().await;
}

/// The example table of tenancy-authz's own tests, shared with them.
fn fixture() -> Value {
    serde_json::from_str(include_str!("../../../authz/tests/fixtures/rbac_abac.json")).unwrap()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn rbac_abac_table_through_grpc() {
    let server = TestServer::start().await;
    let mut client = server.policy();
    let f = fixture();
    let (a, b) = (TenantId::new().to_string(), TenantId::new().to_string());

    let mut version = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: a.clone(),
            expected_version: 0,
            schema: Some(PutSchema::CedarText(text(&f["schema"]))),
        })
        .await
        .unwrap()
        .into_inner()
        .new_version
        .unwrap()
        .version;
    for p in f["policies"].as_array().unwrap() {
        version = client
            .create_policy(pb::CreatePolicyRequest {
                tenant_id: a.clone(),
                expected_version: version,
                policy_id: text(&p["id"]),
                text: text(&p["text"]),
                description: text(&p["description"]),
            })
            .await
            .unwrap()
            .into_inner()
            .new_version
            .unwrap()
            .version;
    }

    let entities = f["entities"].to_string();
    let cases = f["cases"].as_array().unwrap();
    let context = |case: &Value| {
        case.get("context")
            .map(Value::to_string)
            .unwrap_or_default()
    };
    let mut items = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let request = |tenant: &str| pb::CheckPermissionRequest {
            tenant_id: tenant.to_owned(),
            principal: text(&case["principal"]),
            action: text(&case["action"]),
            resource: text(&case["resource"]),
            context_json: context(case),
            entities_json: entities.clone(),
        };
        let expected: Vec<String> = serde_json::from_value(case["determining"].clone()).unwrap();
        let d = client
            .check_permission(request(&a))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            Some(d.allowed),
            case["allowed"].as_bool(),
            "case {i}: {case}"
        );
        assert_eq!(d.determining_policies, expected, "case {i}");
        assert!(d.errors.is_empty(), "case {i}: {:?}", d.errors);
        assert_eq!(d.policy_version, version);
        let other = client
            .check_permission(request(&b))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !other.allowed && other.determining_policies.is_empty(),
            "case {i} in tenant B"
        );
        assert_eq!(other.policy_version, 0);
        items.push(pb::BatchCheckItem {
            principal: text(&case["principal"]),
            action: text(&case["action"]),
            resource: text(&case["resource"]),
            context_json: context(case),
        });
    }

    // The whole table as one batch gives the same answers.
    let batch = client
        .batch_check_permission(pb::BatchCheckPermissionRequest {
            tenant_id: a.clone(),
            entities_json: entities,
            items,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.decisions.len(), cases.len());
    for (i, (d, case)) in batch.decisions.iter().zip(cases).enumerate() {
        assert_eq!(Some(d.allowed), case["allowed"].as_bool(), "batch case {i}");
        let expected: Vec<String> = serde_json::from_value(case["determining"].clone()).unwrap();
        assert_eq!(d.determining_policies, expected, "batch case {i}");
    }
}

#[tokio::test]
async fn identity_users_are_principals_with_their_roles_in_the_tenant() {
    let server = TestServer::start().await;
    let mut identity = server.client();
    let mut client = server.policy();
    let acme = create_tenant(&mut identity, "acme").await;
    let globex = create_tenant(&mut identity, "globex").await;
    let admin = create_user(&mut identity, "admin@example.com").await;
    let viewer = create_user(&mut identity, "viewer@example.com").await;
    let outsider = create_user(&mut identity, "outsider@example.com").await;
    identity
        .add_membership(identity_pb::AddMembershipRequest {
            tenant_id: acme.id.clone(),
            user_id: admin.id.clone(),
            roles: vec!["admin".into()],
        })
        .await
        .unwrap();
    identity
        .add_membership(identity_pb::AddMembershipRequest {
            tenant_id: acme.id.clone(),
            user_id: viewer.id.clone(),
            roles: vec!["viewer".into()],
        })
        .await
        .unwrap();
    identity
        .add_membership(identity_pb::AddMembershipRequest {
            tenant_id: globex.id.clone(),
            user_id: admin.id.clone(),
            roles: vec!["viewer".into()],
        })
        .await
        .unwrap();
    for tenant in [&acme.id, &globex.id] {
        put_schema(&mut client, tenant, 0).await;
        create_policy(&mut client, tenant, 1, "admins-view", ADMINS_VIEW).await;
    }

    // No entities sent: the principal and its roles come from the identity store.
    let request = |tenant: &str, user_id: &str| pb::CheckPermissionRequest {
        tenant_id: tenant.to_owned(),
        principal: user(user_id),
        action: action("view"),
        resource: "Document::\"d9\"".into(),
        context_json: String::new(),
        entities_json: String::new(),
    };
    assert_eq!(
        decide(&mut client, request(&acme.id, &admin.id)).await,
        (true, vec!["admins-view".to_owned()], 2)
    );
    assert!(!decide(&mut client, request(&acme.id, &viewer.id)).await.0);
    assert!(!decide(&mut client, request(&acme.id, &outsider.id)).await.0);
    // Roles are per tenant: an admin of acme is a viewer in globex.
    assert!(!decide(&mut client, request(&globex.id, &admin.id)).await.0);

    // A member's entity comes from the identity store, whatever the request claims.
    let spoofed = json!([
        { "uid": { "type": "User", "id": viewer.id }, "attrs": {},
          "parents": [{ "type": "Role", "id": "admin" }] },
        { "uid": { "type": "Role", "id": "admin" }, "attrs": {}, "parents": [] }
    ]);
    assert!(
        !decide(
            &mut client,
            pb::CheckPermissionRequest {
                entities_json: spoofed.to_string(),
                ..request(&acme.id, &viewer.id)
            }
        )
        .await
        .0
    );

    // Role changes show at once.
    let membership = identity
        .list_tenant_memberships(identity_pb::ListTenantMembershipsRequest {
            tenant_id: acme.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .memberships
        .into_iter()
        .find(|m| m.user_id == admin.id)
        .unwrap();
    identity
        .update_membership_roles(identity_pb::UpdateMembershipRolesRequest {
            tenant_id: acme.id.clone(),
            user_id: admin.id.clone(),
            expected_version: membership.version,
            roles: vec!["viewer".into()],
        })
        .await
        .unwrap();
    assert!(!decide(&mut client, request(&acme.id, &admin.id)).await.0);
    server.stop().await;
}
