//! The identity gRPC service in process, over a memory store.

use tenancy_servers::AdminAuth;
use tenancy_servers::proto::common::v1::PageRequest;
use tenancy_servers::proto::identity::v1 as pb;
use tenancy_servers::proto::identity::v1::{get_tenant_request, get_user_request};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{
    ADMIN_TOKEN, Client, IDENTITY_SERVICE, TestServer, assert_code, assert_invalid, create_tenant,
    create_user, health, reflect,
};

async fn get_tenant(client: &mut Client, lookup: get_tenant_request::Lookup) -> pb::Tenant {
    client
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(lookup),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

const UNKNOWN_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

#[tokio::test]
async fn tenant_lifecycle() {
    let server = TestServer::start().await;
    let mut client = server.client();

    let created = client
        .create_tenant(pb::CreateTenantRequest {
            slug: "acme".into(),
            display_name: "  Acme Corp ".into(),
            metadata_json: r#"{"plan":"pro"}"#.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(created.slug, "acme");
    assert_eq!(created.display_name, "Acme Corp");
    assert_eq!(created.status(), pb::TenantStatus::Active);
    assert_eq!(created.version, 1);
    assert!(created.created_at.is_some());
    let metadata: serde_json::Value = serde_json::from_str(&created.metadata_json).unwrap();
    assert_eq!(metadata, serde_json::json!({"plan": "pro"}));

    let by_id = get_tenant(
        &mut client,
        get_tenant_request::Lookup::TenantId(created.id.clone()),
    )
    .await;
    assert_eq!(by_id, created);
    let by_slug = get_tenant(&mut client, get_tenant_request::Lookup::Slug("acme".into())).await;
    assert_eq!(by_slug, created);

    let updated = client
        .update_tenant(pb::UpdateTenantRequest {
            tenant_id: created.id.clone(),
            expected_version: 1,
            slug: Some("acme-corp".into()),
            display_name: None,
            metadata_json: Some(r#"{"plan":"enterprise"}"#.into()),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.slug, "acme-corp");
    assert_eq!(updated.display_name, "Acme Corp");
    assert!(updated.metadata_json.contains("enterprise"));
    let by_new_slug = get_tenant(
        &mut client,
        get_tenant_request::Lookup::Slug("acme-corp".into()),
    )
    .await;
    assert_eq!(by_new_slug, updated);
    let old_slug = client
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(get_tenant_request::Lookup::Slug("acme".into())),
        })
        .await
        .unwrap_err();
    assert_code(&old_slug, Code::NotFound, "not_found");

    let suspended = client
        .suspend_tenant(pb::SuspendTenantRequest {
            tenant_id: created.id.clone(),
            expected_version: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(suspended.status(), pb::TenantStatus::Suspended);
    let reactivated = client
        .reactivate_tenant(pb::ReactivateTenantRequest {
            tenant_id: created.id.clone(),
            expected_version: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(reactivated.status(), pb::TenantStatus::Active);
    let deleted = client
        .delete_tenant(pb::DeleteTenantRequest {
            tenant_id: created.id.clone(),
            expected_version: 4,
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(deleted.status(), pb::TenantStatus::Deleted);
    assert_eq!(deleted.version, 5);

    // Soft delete: still readable, no longer changeable or reactivatable.
    let read = get_tenant(
        &mut client,
        get_tenant_request::Lookup::TenantId(created.id.clone()),
    )
    .await;
    assert_eq!(read.status(), pb::TenantStatus::Deleted);
    let err = client
        .reactivate_tenant(pb::ReactivateTenantRequest {
            tenant_id: created.id.clone(),
            expected_version: 5,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::Aborted, "conflict");

    server.stop().await;
}

#[tokio::test]
async fn tenants_are_listed_in_pages() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let mut created = Vec::new();
    for slug in ["alpha", "bravo", "charlie"] {
        created.push(create_tenant(&mut client, slug).await.id);
    }

    let first = client
        .list_tenants(pb::ListTenantsRequest {
            page: Some(PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.tenants.len(), 2);
    let token = first.page.unwrap().next_page_token;
    assert!(!token.is_empty());

    let second = client
        .list_tenants(pb::ListTenantsRequest {
            page: Some(PageRequest {
                page_size: 2,
                page_token: token,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.tenants.len(), 1);
    assert_eq!(second.page.unwrap().next_page_token, "");

    let listed: Vec<String> = first
        .tenants
        .iter()
        .chain(&second.tenants)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(listed, created, "creation (id) order across pages");

    // No page request: the first page of the default size, which holds all three.
    let all = client
        .list_tenants(pb::ListTenantsRequest { page: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.tenants.len(), 3);
    assert_eq!(all.page.unwrap().next_page_token, "");
}

#[tokio::test]
async fn users_and_memberships() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let tenant = create_tenant(&mut client, "acme").await;
    let other = create_tenant(&mut client, "globex").await;

    let user = client
        .create_user(pb::CreateUserRequest {
            email: "Alice@Example.com".into(),
            display_name: "Alice".into(),
            attributes_json: r#"{"locale":"en"}"#.into(),
            password: Some("correct horse battery staple".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "Alice@Example.com");
    assert!(!user.email_verified);
    assert_eq!(user.status(), pb::UserStatus::Active);
    assert_eq!(user.version, 1);

    let by_id = client
        .get_user(pb::GetUserRequest {
            lookup: Some(get_user_request::Lookup::UserId(user.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_id, user);
    let by_email = client
        .get_user(pb::GetUserRequest {
            lookup: Some(get_user_request::Lookup::Email("alice@example.COM".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_email, user, "email lookups are case-insensitive");

    let updated = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            expected_version: 1,
            email: None,
            display_name: Some("Alice A.".into()),
            attributes_json: None,
            status: Some(pb::UserStatus::Disabled.into()),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.display_name, "Alice A.");
    assert_eq!(updated.status(), pb::UserStatus::Disabled);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.attributes_json, user.attributes_json);

    let users = client
        .list_users(pb::ListUsersRequest { page: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(users.users, std::slice::from_ref(&updated));

    let membership = client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            roles: vec!["viewer".into(), "admin".into(), "viewer".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .membership
        .unwrap();
    assert_eq!(membership.roles, ["admin", "viewer"]);
    assert_eq!(membership.tenant_id, tenant.id);
    assert_eq!(membership.user_id, user.id);

    let again = client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_code(&again, Code::AlreadyExists, "already_exists");

    let by_tenant = client
        .list_tenant_memberships(pb::ListTenantMembershipsRequest {
            tenant_id: tenant.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_tenant.memberships, std::slice::from_ref(&membership));
    let of_other = client
        .list_tenant_memberships(pb::ListTenantMembershipsRequest {
            tenant_id: other.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(of_other.memberships.is_empty(), "tenants are isolated");
    let by_user = client
        .list_user_memberships(pb::ListUserMembershipsRequest {
            user_id: user.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_user.memberships, std::slice::from_ref(&membership));

    let roles = client
        .update_membership_roles(pb::UpdateMembershipRolesRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            expected_version: 1,
            roles: vec!["billing".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .membership
        .unwrap();
    assert_eq!(roles.roles, ["billing"]);
    assert_eq!(roles.version, 2);
    let stale = client
        .update_membership_roles(pb::UpdateMembershipRolesRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            expected_version: 1,
            roles: vec!["owner".into()],
        })
        .await
        .unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");

    client
        .remove_membership(pb::RemoveMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
        })
        .await
        .unwrap();
    let after = client
        .list_tenant_memberships(pb::ListTenantMembershipsRequest {
            tenant_id: tenant.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.memberships.is_empty());
    let twice = client
        .remove_membership(pb::RemoveMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_code(&twice, Code::NotFound, "not_found");
    // The user stays.
    client
        .get_user(pb::GetUserRequest {
            lookup: Some(get_user_request::Lookup::UserId(user.id.clone())),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn invitations_are_accepted_once() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let tenant = create_tenant(&mut client, "acme").await;
    let user = create_user(&mut client, "bob@example.com").await;

    let created = client
        .create_invitation(pb::CreateInvitationRequest {
            tenant_id: tenant.id.clone(),
            email: "bob@example.com".into(),
            roles: vec!["editor".into()],
            ttl: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let invitation = created.invitation.unwrap();
    assert!(created.token.len() >= 32, "a long random token");
    assert_eq!(invitation.tenant_id, tenant.id);
    assert_eq!(invitation.roles, ["editor"]);
    assert!(invitation.accepted_at.is_none());
    assert_eq!(invitation.accepted_by_user_id, "");
    let ttl = invitation.expires_at.unwrap().seconds - invitation.created_at.unwrap().seconds;
    assert_eq!(ttl, 3600);

    let accept = pb::AcceptInvitationRequest {
        tenant_id: tenant.id.clone(),
        token: created.token.clone(),
        user_id: user.id.clone(),
    };
    let membership = client
        .accept_invitation(accept.clone())
        .await
        .unwrap()
        .into_inner()
        .membership
        .unwrap();
    assert_eq!(membership.roles, ["editor"]);
    assert_eq!(membership.user_id, user.id);

    let twice = client.accept_invitation(accept).await.unwrap_err();
    assert_code(&twice, Code::Aborted, "conflict");

    let wrong = client
        .accept_invitation(pb::AcceptInvitationRequest {
            tenant_id: tenant.id.clone(),
            token: "not-the-token".into(),
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_code(&wrong, Code::NotFound, "not_found");

    let too_long = client
        .create_invitation(pb::CreateInvitationRequest {
            tenant_id: tenant.id.clone(),
            email: "carol@example.com".into(),
            roles: vec![],
            ttl: Some(prost_types::Duration {
                seconds: 365 * 24 * 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&too_long, "ttl");
}

#[tokio::test]
async fn email_verification_confirms_the_address() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let user = create_user(&mut client, "dave@example.com").await;
    assert!(!user.email_verified);

    let token = client
        .start_email_verification(pb::StartEmailVerificationRequest {
            user_id: user.id.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(!token.is_empty());

    let verified = client
        .confirm_email_verification(pb::ConfirmEmailVerificationRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(verified.id, user.id);
    assert!(verified.email_verified);

    let twice = client
        .confirm_email_verification(pb::ConfirmEmailVerificationRequest { token })
        .await
        .unwrap_err();
    assert_code(&twice, Code::Aborted, "conflict");

    let empty = client
        .confirm_email_verification(pb::ConfirmEmailVerificationRequest {
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&empty, "token");
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let tenant = create_tenant(&mut client, "acme").await;
    let user = create_user(&mut client, "erin@example.com").await;

    let new_tenant = |slug: &str, metadata: &str| pb::CreateTenantRequest {
        slug: slug.into(),
        display_name: "X".into(),
        metadata_json: metadata.into(),
    };
    let err = client
        .create_tenant(new_tenant("Bad Slug", ""))
        .await
        .unwrap_err();
    assert_invalid(&err, "slug");
    assert!(err.message().contains("`Bad Slug`"), "{}", err.message());
    for bad_json in ["{not json", "[1, 2]"] {
        let err = client
            .create_tenant(new_tenant("fine-slug", bad_json))
            .await
            .unwrap_err();
        assert_invalid(&err, "metadata_json");
    }
    let err = client
        .update_tenant(pb::UpdateTenantRequest {
            tenant_id: tenant.id.clone(),
            expected_version: 1,
            metadata_json: Some("nope".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "metadata_json");

    let err = client
        .create_user(pb::CreateUserRequest {
            email: "not-an-email".into(),
            display_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "email");
    let err = client
        .create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            display_name: "X".into(),
            attributes_json: "{".into(),
            password: None,
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "attributes_json");

    let err = client
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(get_tenant_request::Lookup::TenantId("not-a-uuid".into())),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "tenant_id");
    assert!(err.message().contains("`not-a-uuid`"), "{}", err.message());
    let err = client
        .get_tenant(pb::GetTenantRequest { lookup: None })
        .await
        .unwrap_err();
    assert_invalid(&err, "lookup");
    let err = client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: "42".into(),
            user_id: user.id.clone(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "tenant_id");
    let err = client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: "42".into(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "user_id");
    let err = client
        .add_membership(pb::AddMembershipRequest {
            tenant_id: tenant.id.clone(),
            user_id: user.id.clone(),
            roles: vec!["Not A Role".into()],
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "roles");
    let err = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            expected_version: 1,
            status: Some(pb::UserStatus::Unspecified.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "status");
    let err = client
        .list_tenants(pb::ListTenantsRequest {
            page: Some(PageRequest {
                page_size: 1,
                page_token: "garbage!".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "page_token");

    // Nothing was written by the rejected calls.
    let tenants = client
        .list_tenants(pb::ListTenantsRequest { page: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenants.tenants.len(), 1);
    assert_eq!(tenants.tenants[0].version, 1);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let err = client
        .get_tenant(pb::GetTenantRequest {
            lookup: Some(get_tenant_request::Lookup::TenantId(UNKNOWN_ID.into())),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::NotFound, "not_found");
    assert!(err.message().contains(UNKNOWN_ID), "{}", err.message());
    let err = client
        .get_user(pb::GetUserRequest {
            lookup: Some(get_user_request::Lookup::UserId(UNKNOWN_ID.into())),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::NotFound, "not_found");
    let err = client
        .suspend_tenant(pb::SuspendTenantRequest {
            tenant_id: UNKNOWN_ID.into(),
            expected_version: 1,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::NotFound, "not_found");
    let err = client
        .start_email_verification(pb::StartEmailVerificationRequest {
            user_id: UNKNOWN_ID.into(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::NotFound, "not_found");
}

#[tokio::test]
async fn stale_versions_and_taken_slugs_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let tenant = create_tenant(&mut client, "acme").await;
    create_tenant(&mut client, "globex").await;

    let rename = |version: i64, slug: &str| pb::UpdateTenantRequest {
        tenant_id: tenant.id.clone(),
        expected_version: version,
        display_name: Some(format!("v{version}")),
        slug: Some(slug.into()),
        metadata_json: None,
    };
    client.update_tenant(rename(1, "acme-2")).await.unwrap();
    let stale = client.update_tenant(rename(1, "acme-3")).await.unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");
    let taken = client.update_tenant(rename(2, "globex")).await.unwrap_err();
    assert_code(&taken, Code::AlreadyExists, "already_exists");
    let dup = client
        .create_tenant(pb::CreateTenantRequest {
            slug: "globex".into(),
            display_name: "Again".into(),
            metadata_json: String::new(),
        })
        .await
        .unwrap_err();
    assert_code(&dup, Code::AlreadyExists, "already_exists");

    let user = create_user(&mut client, "frank@example.com").await;
    client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            expected_version: 1,
            display_name: Some("Frank".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let stale = client
        .update_user(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            expected_version: 1,
            display_name: Some("Frankie".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(&stale, Code::Aborted, "conflict");
}

#[tokio::test]
async fn calls_need_the_admin_token() {
    let server = TestServer::start().await;
    let request = || pb::ListTenantsRequest { page: None };

    let err = server
        .client_with_token(None)
        .list_tenants(request())
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    let err = server
        .client_with_token(Some("wrong-token"))
        .list_tenants(request())
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let err = server
        .client_with_token(Some(prefix))
        .list_tenants(request())
        .await
        .unwrap_err();
    assert_code(&err, Code::Unauthenticated, "unauthenticated");
    // A refused write changes nothing.
    let err = server
        .client_with_token(None)
        .create_tenant(pb::CreateTenantRequest {
            slug: "sneaky".into(),
            display_name: "Sneaky".into(),
            metadata_json: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let tenants = server
        .client()
        .list_tenants(request())
        .await
        .unwrap()
        .into_inner();
    assert!(tenants.tenants.is_empty());
}

#[tokio::test]
async fn insecure_dev_mode_accepts_calls_without_a_token() {
    let server = TestServer::start_with(AdminAuth::insecure_dev()).await;
    let tenant = create_tenant(&mut server.client_with_token(None), "devco").await;
    assert_eq!(tenant.slug, "devco");
    server
        .client_with_token(Some("anything"))
        .list_tenants(pb::ListTenantsRequest { page: None })
        .await
        .unwrap();
}

#[tokio::test]
async fn health_reports_serving_without_a_token() {
    let server = TestServer::start().await;
    assert_eq!(
        health(server.channel.clone(), IDENTITY_SERVICE)
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(server.channel.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    let unknown = health(server.channel.clone(), "no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn reflection_describes_the_identity_service() {
    let server = TestServer::start().await;

    let MessageResponse::ListServicesResponse(list) = reflect(
        server.channel.clone(),
        MessageRequest::ListServices(String::new()),
    )
    .await
    else {
        panic!("not a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&IDENTITY_SERVICE), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // The descriptors resolve, imports included, so tools like grpcurl can call it.
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        server.channel.clone(),
        MessageRequest::FileContainingSymbol(IDENTITY_SERVICE.into()),
    )
    .await
    else {
        panic!("not a file descriptor response");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        server.channel.clone(),
        MessageRequest::FileByFilename("tenancy/common/v1/common.proto".into()),
    )
    .await
    else {
        panic!("not a file descriptor response");
    };
    assert_eq!(files.file_descriptor_proto.len(), 1);
}
