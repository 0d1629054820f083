//! `tenancy.policy.v1.PolicyService` over an [`Authz`]: each handler parses the
//! request, calls one library method and maps the result. Fields the library names
//! differently from the wire (`context` is `context_json`, a policy's text is `text`)
//! are renamed in its errors, so `INVALID_ARGUMENT` always names a request field.

use std::sync::Arc;

use tenancy_authz::{
    Authz, BatchItem, CheckRequest, PolicyDocument, PolicySetDocument, SchemaDocument, TemplateLink,
};
use tenancy_core::{Error, Result, TenantId};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::AdminAuth;
use crate::convert::{
    allowed_actions_field, batch_field, check_field, json_value, page_info, page_request,
    schema_document, wire_field,
};
use crate::limit::SizeLimited;
use crate::proto::policy::v1 as pb;
use crate::proto::policy::v1::policy_service_server::{PolicyService, PolicyServiceServer};
use crate::status::reply;

/// The full gRPC name of the policy service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = pb::policy_service_server::SERVICE_NAME;

/// The largest request message the policy service accepts (1 MiB); a larger one is
/// `INVALID_ARGUMENT` naming the field `request`.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The policy service as served: size-limited, behind the admin token.
pub type PolicyServer = InterceptedService<SizeLimited<PolicyServiceServer<PolicyGrpc>>, AdminAuth>;

/// The gRPC policy service: an adapter over an [`Authz`].
#[derive(Debug, Clone)]
pub struct PolicyGrpc {
    authz: Arc<Authz>,
}

impl PolicyGrpc {
    /// The service over `authz`.
    #[must_use]
    pub fn new(authz: Arc<Authz>) -> Self {
        Self { authz }
    }

    /// The service wrapped in its tonic server, with requests limited to
    /// [`MAX_REQUEST_BYTES`] and guarded by `auth`.
    #[must_use]
    pub fn into_server(self, auth: AdminAuth) -> PolicyServer {
        let server = PolicyServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES);
        InterceptedService::new(SizeLimited::new(server, MAX_REQUEST_BYTES), auth)
    }

    /// The latest policy set of `tenant` and its version.
    async fn current(&self, tenant: &str) -> Result<(PolicySetDocument, i64)> {
        let current = self.authz.current(tenant_id(tenant)?).await?;
        Ok((current.document, current.version))
    }
}

fn tenant_id(value: &str) -> Result<TenantId> {
    TenantId::parse_field("tenant_id", value)
}

/// A policy's text is `text` on the wire; problems Cedar finds in the set a policy
/// write produces are reported on it too.
fn policy_field(field: &str) -> Option<String> {
    matches!(field, "policy" | "policies").then(|| "text".to_owned())
}

/// Like [`policy_field`], and a template's id is `template_id`.
fn template_field(field: &str) -> Option<String> {
    match field {
        "template" | "policies" => Some("text".to_owned()),
        "policy_id" => Some("template_id".to_owned()),
        _ => None,
    }
}

/// The fields of a dry run: the repeated `policies` and `templates`.
fn validate_field(field: &str) -> Option<String> {
    match field {
        "policy" => Some("policies".to_owned()),
        "template" => Some("templates".to_owned()),
        _ => None,
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyGrpc {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let check = CheckRequest {
                    context: json_value("context_json", &req.context_json)?,
                    entities: json_value("entities_json", &req.entities_json)?,
                    principal: req.principal,
                    action: req.action,
                    resource: req.resource,
                };
                let decision = self
                    .authz
                    .is_authorized(tenant, &check)
                    .await
                    .map_err(|e| wire_field(e, check_field))?;
                Ok(decision.into())
            }
            .await,
        )
    }

    async fn batch_check_permission(
        &self,
        request: Request<pb::BatchCheckPermissionRequest>,
    ) -> Result<Response<pb::BatchCheckPermissionResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let entities = json_value("entities_json", &req.entities_json)?;
                let items = req
                    .items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        Ok(BatchItem {
                            context: json_value(
                                &format!("items[{i}].context_json"),
                                &item.context_json,
                            )?,
                            principal: item.principal,
                            action: item.action,
                            resource: item.resource,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let decisions = self
                    .authz
                    .batch_is_authorized(tenant, &items, &entities)
                    .await
                    .map_err(|e| wire_field(e, batch_field))?;
                Ok(pb::BatchCheckPermissionResponse {
                    decisions: decisions.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn allowed_actions(
        &self,
        request: Request<pb::AllowedActionsRequest>,
    ) -> Result<Response<pb::AllowedActionsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let context = json_value("context_json", &req.context_json)?;
                let entities = json_value("entities_json", &req.entities_json)?;
                let allowed_actions = self
                    .authz
                    .allowed_actions(
                        tenant,
                        &req.principal,
                        &req.resource,
                        &req.actions,
                        &context,
                        &entities,
                    )
                    .await
                    .map_err(|e| wire_field(e, allowed_actions_field))?;
                Ok(pb::AllowedActionsResponse { allowed_actions })
            }
            .await,
        )
    }

    async fn put_schema(
        &self,
        request: Request<pb::PutSchemaRequest>,
    ) -> Result<Response<pb::PutSchemaResponse>, Status> {
        use pb::put_schema_request::Schema;
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let (schema, field) = match req.schema {
                    Some(Schema::CedarText(text)) => {
                        (Some(SchemaDocument::Cedar(text)), "cedar_text")
                    }
                    Some(Schema::JsonText(text)) => (Some(SchemaDocument::Json(text)), "json_text"),
                    Some(Schema::Clear(true)) => (None, "clear"),
                    Some(Schema::Clear(false)) | None => {
                        return Err(Error::invalid(
                            "schema",
                            "one of `cedar_text`, `json_text` or `clear: true` is required",
                        ));
                    }
                };
                let written = self
                    .authz
                    .set_schema(tenant, req.expected_version, schema)
                    .await
                    .map_err(|e| {
                        wire_field(e, |f| {
                            matches!(f, "schema" | "policies").then(|| field.to_owned())
                        })
                    })?;
                Ok(pb::PutSchemaResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn get_schema(
        &self,
        request: Request<pb::GetSchemaRequest>,
    ) -> Result<Response<pb::GetSchemaResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let (document, version) = self.current(&req.tenant_id).await?;
                Ok(pb::GetSchemaResponse {
                    schema: Some(document.schema.into()),
                    version,
                })
            }
            .await,
        )
    }

    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::CreatePolicyResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let policy = PolicyDocument {
                    id: req.policy_id,
                    text: req.text,
                    description: req.description,
                };
                let written = self
                    .authz
                    .create_policy(tenant, req.expected_version, policy)
                    .await
                    .map_err(|e| wire_field(e, policy_field))?;
                Ok(pb::CreatePolicyResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let policy = PolicyDocument {
                    id: req.policy_id,
                    text: req.text,
                    description: req.description,
                };
                let written = self
                    .authz
                    .update_policy(tenant, req.expected_version, policy)
                    .await
                    .map_err(|e| wire_field(e, policy_field))?;
                Ok(pb::UpdatePolicyResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let written = self
                    .authz
                    .delete_policy(tenant, req.expected_version, &req.policy_id)
                    .await?;
                Ok(pb::DeletePolicyResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let (mut document, version) = self.current(&req.tenant_id).await?;
                let policy = document
                    .policies
                    .remove(&req.policy_id)
                    .ok_or_else(|| Error::not_found("policy", &req.policy_id))?;
                Ok(pb::GetPolicyResponse {
                    policy: Some(policy.into()),
                    version,
                })
            }
            .await,
        )
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let (document, version) = self.current(&req.tenant_id).await?;
                Ok(pb::ListPoliciesResponse {
                    policies: document.policies.into_values().map(Into::into).collect(),
                    links: document.links.into_values().map(Into::into).collect(),
                    version,
                })
            }
            .await,
        )
    }

    async fn create_template(
        &self,
        request: Request<pb::CreateTemplateRequest>,
    ) -> Result<Response<pb::CreateTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let template = PolicyDocument {
                    id: req.template_id,
                    text: req.text,
                    description: req.description,
                };
                let written = self
                    .authz
                    .create_template(tenant, req.expected_version, template)
                    .await
                    .map_err(|e| wire_field(e, template_field))?;
                Ok(pb::CreateTemplateResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn update_template(
        &self,
        request: Request<pb::UpdateTemplateRequest>,
    ) -> Result<Response<pb::UpdateTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let template = PolicyDocument {
                    id: req.template_id,
                    text: req.text,
                    description: req.description,
                };
                let written = self
                    .authz
                    .update_template(tenant, req.expected_version, template)
                    .await
                    .map_err(|e| wire_field(e, template_field))?;
                Ok(pb::UpdateTemplateResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let written = self
                    .authz
                    .delete_template(tenant, req.expected_version, &req.template_id)
                    .await?;
                Ok(pb::DeleteTemplateResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn get_template(
        &self,
        request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let (mut document, version) = self.current(&req.tenant_id).await?;
                let template = document
                    .templates
                    .remove(&req.template_id)
                    .ok_or_else(|| Error::not_found("template", &req.template_id))?;
                Ok(pb::GetTemplateResponse {
                    template: Some(template.into()),
                    version,
                })
            }
            .await,
        )
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let (document, version) = self.current(&req.tenant_id).await?;
                Ok(pb::ListTemplatesResponse {
                    templates: document.templates.into_values().map(Into::into).collect(),
                    version,
                })
            }
            .await,
        )
    }

    async fn link_template(
        &self,
        request: Request<pb::LinkTemplateRequest>,
    ) -> Result<Response<pb::LinkTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let link = TemplateLink {
                    id: req.policy_id,
                    template_id: req.template_id,
                    principal: req.principal,
                    resource: req.resource,
                    description: req.description,
                };
                let written = self
                    .authz
                    .link_template(tenant, req.expected_version, link)
                    .await?;
                Ok(pb::LinkTemplateResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn unlink_template(
        &self,
        request: Request<pb::UnlinkTemplateRequest>,
    ) -> Result<Response<pb::UnlinkTemplateResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let written = self
                    .authz
                    .unlink_template(tenant, req.expected_version, &req.policy_id)
                    .await?;
                Ok(pb::UnlinkTemplateResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }

    async fn validate_policies(
        &self,
        request: Request<pb::ValidatePoliciesRequest>,
    ) -> Result<Response<pb::ValidatePoliciesResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let diagnostics = self
                    .authz
                    .validate_policies(
                        tenant,
                        req.schema.and_then(schema_document),
                        req.policies.into_iter().map(Into::into).collect(),
                        req.templates.into_iter().map(Into::into).collect(),
                    )
                    .await
                    .map_err(|e| wire_field(e, validate_field))?;
                Ok(pb::ValidatePoliciesResponse {
                    diagnostics: diagnostics.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let page = self
                    .authz
                    .list_versions(tenant, &page_request(req.page)?)
                    .await?;
                Ok(pb::ListVersionsResponse {
                    page: Some(page_info(&page)),
                    versions: page.items.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let version = if req.version == 0 {
                    self.authz.current(tenant).await?
                } else {
                    self.authz.version(tenant, req.version).await?
                };
                Ok(version.into())
            }
            .await,
        )
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let tenant = tenant_id(&req.tenant_id)?;
                let written = self
                    .authz
                    .rollback(tenant, req.expected_version, req.to_version)
                    .await?;
                Ok(pb::RollbackResponse {
                    new_version: Some(written.into()),
                })
            }
            .await,
        )
    }
}
