//! `tenancy.identity.v1.IdentityService` over an [`Identity`]: each handler parses the
//! request, calls one library method and maps the result.

use tenancy_core::identity::{
    DEFAULT_INVITATION_TTL, DEFAULT_VERIFICATION_TTL, Identity, NewTenant, NewUser, TenantChanges,
    TenantStatus, UserChanges,
};
use tenancy_core::{Error, Result, TenantId, UserId};
use tonic::{Request, Response, Status};

use crate::convert::{json_object, page_info, page_request, ttl, user_status};
use crate::proto::identity::v1 as pb;
use crate::proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use crate::status::reply;

/// The full gRPC name of the identity service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = pb::identity_service_server::SERVICE_NAME;

/// The gRPC identity service: an adapter over an [`Identity`].
#[derive(Debug, Clone)]
pub struct IdentityGrpc {
    identity: Identity,
}

impl IdentityGrpc {
    /// The service over `identity`.
    #[must_use]
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }

    /// The service wrapped in its tonic server (without authentication: see
    /// [`crate::AdminAuth`]).
    #[must_use]
    pub fn into_server(self) -> IdentityServiceServer<Self> {
        IdentityServiceServer::new(self)
    }
}

fn tenant_id(field: &str, value: &str) -> Result<TenantId> {
    TenantId::parse_field(field, value)
}

fn user_id(field: &str, value: &str) -> Result<UserId> {
    UserId::parse_field(field, value)
}

impl IdentityGrpc {
    async fn set_tenant_status(
        &self,
        id: &str,
        expected_version: i64,
        status: TenantStatus,
    ) -> Result<pb::Tenant> {
        let id = tenant_id("tenant_id", id)?;
        let tenant = self
            .identity
            .set_tenant_status(id, expected_version, status)
            .await?;
        Ok(tenant.into())
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let new = NewTenant {
                    slug: req.slug,
                    display_name: req.display_name,
                    metadata: json_object("metadata_json", &req.metadata_json)?,
                };
                let tenant = self.identity.create_tenant(new).await?;
                Ok(pb::CreateTenantResponse {
                    tenant: Some(tenant.into()),
                })
            }
            .await,
        )
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        use pb::get_tenant_request::Lookup;
        let req = request.into_inner();
        reply(
            async {
                let tenant = match req.lookup {
                    Some(Lookup::TenantId(id)) => {
                        self.identity.tenant(tenant_id("tenant_id", &id)?).await?
                    }
                    Some(Lookup::Slug(slug)) => self.identity.tenant_by_slug(&slug).await?,
                    None => {
                        return Err(Error::invalid(
                            "lookup",
                            "one of `tenant_id` or `slug` is required",
                        ));
                    }
                };
                Ok(pb::GetTenantResponse {
                    tenant: Some(tenant.into()),
                })
            }
            .await,
        )
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::UpdateTenantResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let id = tenant_id("tenant_id", &req.tenant_id)?;
                let changes = TenantChanges {
                    slug: req.slug,
                    display_name: req.display_name,
                    metadata: req
                        .metadata_json
                        .as_deref()
                        .map(|text| json_object("metadata_json", text))
                        .transpose()?,
                };
                let tenant = self
                    .identity
                    .update_tenant(id, req.expected_version, changes)
                    .await?;
                Ok(pb::UpdateTenantResponse {
                    tenant: Some(tenant.into()),
                })
            }
            .await,
        )
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let page = self.identity.list_tenants(&page_request(req.page)?).await?;
                Ok(pb::ListTenantsResponse {
                    page: Some(page_info(&page)),
                    tenants: page.items.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::SuspendTenantResponse>, Status> {
        let req = request.into_inner();
        reply(
            self.set_tenant_status(
                &req.tenant_id,
                req.expected_version,
                TenantStatus::Suspended,
            )
            .await
            .map(|t| pb::SuspendTenantResponse { tenant: Some(t) }),
        )
    }

    async fn reactivate_tenant(
        &self,
        request: Request<pb::ReactivateTenantRequest>,
    ) -> Result<Response<pb::ReactivateTenantResponse>, Status> {
        let req = request.into_inner();
        reply(
            self.set_tenant_status(&req.tenant_id, req.expected_version, TenantStatus::Active)
                .await
                .map(|t| pb::ReactivateTenantResponse { tenant: Some(t) }),
        )
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let req = request.into_inner();
        reply(
            self.set_tenant_status(&req.tenant_id, req.expected_version, TenantStatus::Deleted)
                .await
                .map(|t| pb::DeleteTenantResponse { tenant: Some(t) }),
        )
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let new = NewUser {
                    email: req.email,
                    display_name: req.display_name,
                    attributes: json_object("attributes_json", &req.attributes_json)?,
                    password: req.password,
                };
                let user = self.identity.create_user(new).await?;
                Ok(pb::CreateUserResponse {
                    user: Some(user.into()),
                })
            }
            .await,
        )
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        use pb::get_user_request::Lookup;
        let req = request.into_inner();
        reply(
            async {
                let user = match req.lookup {
                    Some(Lookup::UserId(id)) => {
                        self.identity.user(user_id("user_id", &id)?).await?
                    }
                    Some(Lookup::Email(email)) => self.identity.user_by_email(&email).await?,
                    None => {
                        return Err(Error::invalid(
                            "lookup",
                            "one of `user_id` or `email` is required",
                        ));
                    }
                };
                Ok(pb::GetUserResponse {
                    user: Some(user.into()),
                })
            }
            .await,
        )
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let id = user_id("user_id", &req.user_id)?;
                let changes = UserChanges {
                    email: req.email,
                    display_name: req.display_name,
                    attributes: req
                        .attributes_json
                        .as_deref()
                        .map(|text| json_object("attributes_json", text))
                        .transpose()?,
                    status: req.status.map(user_status).transpose()?,
                };
                let user = self
                    .identity
                    .update_user(id, req.expected_version, changes)
                    .await?;
                Ok(pb::UpdateUserResponse {
                    user: Some(user.into()),
                })
            }
            .await,
        )
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let page = self.identity.list_users(&page_request(req.page)?).await?;
                Ok(pb::ListUsersResponse {
                    page: Some(page_info(&page)),
                    users: page.items.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let user = user_id("user_id", &req.user_id)?;
                let membership = self.identity.add_member(tenant, user, &req.roles).await?;
                Ok(pb::AddMembershipResponse {
                    membership: Some(membership.into()),
                })
            }
            .await,
        )
    }

    async fn update_membership_roles(
        &self,
        request: Request<pb::UpdateMembershipRolesRequest>,
    ) -> Result<Response<pb::UpdateMembershipRolesResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let user = user_id("user_id", &req.user_id)?;
                let membership = self
                    .identity
                    .set_member_roles(tenant, user, req.expected_version, &req.roles)
                    .await?;
                Ok(pb::UpdateMembershipRolesResponse {
                    membership: Some(membership.into()),
                })
            }
            .await,
        )
    }

    async fn remove_membership(
        &self,
        request: Request<pb::RemoveMembershipRequest>,
    ) -> Result<Response<pb::RemoveMembershipResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let user = user_id("user_id", &req.user_id)?;
                self.identity.remove_member(tenant, user).await?;
                Ok(pb::RemoveMembershipResponse {})
            }
            .await,
        )
    }

    async fn list_tenant_memberships(
        &self,
        request: Request<pb::ListTenantMembershipsRequest>,
    ) -> Result<Response<pb::ListTenantMembershipsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let page = self
                    .identity
                    .list_members(tenant, &page_request(req.page)?)
                    .await?;
                Ok(pb::ListTenantMembershipsResponse {
                    page: Some(page_info(&page)),
                    memberships: page.items.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn list_user_memberships(
        &self,
        request: Request<pb::ListUserMembershipsRequest>,
    ) -> Result<Response<pb::ListUserMembershipsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let user = user_id("user_id", &req.user_id)?;
                let page = self
                    .identity
                    .list_user_memberships(user, &page_request(req.page)?)
                    .await?;
                Ok(pb::ListUserMembershipsResponse {
                    page: Some(page_info(&page)),
                    memberships: page.items.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let ttl = ttl("ttl", req.ttl, DEFAULT_INVITATION_TTL)?;
                let (invitation, token) = self
                    .identity
                    .invite(tenant, &req.email, &req.roles, ttl)
                    .await?;
                Ok(pb::CreateInvitationResponse {
                    invitation: Some(invitation.into()),
                    token: token.expose().to_owned(),
                })
            }
            .await,
        )
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id("tenant_id", &req.tenant_id)?;
                let user = user_id("user_id", &req.user_id)?;
                let membership = self
                    .identity
                    .accept_invitation(tenant, &req.token, user)
                    .await?;
                Ok(pb::AcceptInvitationResponse {
                    membership: Some(membership.into()),
                })
            }
            .await,
        )
    }

    async fn start_email_verification(
        &self,
        request: Request<pb::StartEmailVerificationRequest>,
    ) -> Result<Response<pb::StartEmailVerificationResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let user = user_id("user_id", &req.user_id)?;
                let ttl = ttl("ttl", req.ttl, DEFAULT_VERIFICATION_TTL)?;
                let token = self.identity.start_email_verification(user, ttl).await?;
                Ok(pb::StartEmailVerificationResponse {
                    token: token.expose().to_owned(),
                })
            }
            .await,
        )
    }

    async fn confirm_email_verification(
        &self,
        request: Request<pb::ConfirmEmailVerificationRequest>,
    ) -> Result<Response<pb::ConfirmEmailVerificationResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let user = self.identity.confirm_email_verification(&req.token).await?;
                Ok(pb::ConfirmEmailVerificationResponse {
                    user: Some(user.into()),
                })
            }
            .await,
        )
    }
}
