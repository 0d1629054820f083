//! [`Authz`]: the per-tenant policy store API (schema, policies, templates, links,
//! versions, rollback) and the decision API (`is_authorized`, batches, allowed
//! actions), evaluated in process against only the calling tenant's compiled policies.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{Authorizer, Context, Entities, Entity, EntityUid, Request, Response};
use serde::{Deserialize, Serialize};
use tenancy_core::clock::{Clock, SystemClock};
use tenancy_core::page::{Page, PageRequest};
use tenancy_core::{Error, Result, TenantId};

use crate::cache::{Cached, CompiledCache, DecisionCache, DecisionKey};
use crate::compile::{CompiledPolicies, compile, diagnostic};
use crate::entities::EntityProvider;
use crate::model::{
    MAX_POLICIES, PolicyDiagnostic, PolicyDocument, PolicySetDocument, PolicyVersion,
    SchemaDocument, TemplateLink, VersionInfo, validate_policy_id, validate_text,
};
use crate::store::PolicyStore;

/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;
/// Most entities one request (or batch) may carry.
pub const MAX_ENTITIES: usize = 10_000;

/// Tuning of an [`Authz`].
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    /// How many tenants' compiled policy sets stay in memory (least recently used are
    /// evicted). Default 10,000.
    pub compiled_capacity: usize,
    /// How long a compiled set is used before the store is asked (one cheap query)
    /// whether another process wrote a newer version. Writes through this `Authz` take
    /// effect at once. Default 1 s.
    pub revalidate_after: Duration,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self {
            compiled_capacity: 10_000,
            revalidate_after: Duration::from_secs(1),
        }
    }
}

/// An authorization request in wire form, as Verified Permissions accepts it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The principal, as `Type::"id"` (`User::"<user id>"` is loaded from identity).
    pub principal: String,
    /// The action, as `Action::"name"`.
    pub action: String,
    /// The resource, as `Type::"id"`.
    pub resource: String,
    /// The context record (a JSON object; `null` = empty).
    #[serde(default)]
    pub context: serde_json::Value,
    /// Entities in Cedar's entity JSON format (an array; `null` = none).
    #[serde(default)]
    pub entities: serde_json::Value,
}

/// One request of a batch: the entities are shared by the whole batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BatchItem {
    /// The principal, as `Type::"id"`.
    pub principal: String,
    /// The action, as `Action::"name"`.
    pub action: String,
    /// The resource, as `Type::"id"`.
    pub resource: String,
    /// The context record.
    #[serde(default)]
    pub context: serde_json::Value,
}

/// An error Cedar met while evaluating one policy (the policy is then skipped, as
/// Cedar specifies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationError {
    /// The policy that failed.
    pub policy_id: String,
    /// Cedar's message.
    pub message: String,
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The policies that determined the decision (the satisfied `permit`s when allowed,
    /// the satisfied `forbid`s when denied by one), sorted.
    pub determining_policies: Vec<String>,
    /// Policies that failed to evaluate, sorted by policy id.
    pub errors: Vec<EvaluationError>,
    /// The tenant's policy version the decision was made under.
    pub policy_version: i64,
}

impl Decision {
    /// The decision of a Cedar response under `policy_version`.
    #[must_use]
    pub fn from_response(response: &Response, policy_version: i64) -> Self {
        let mut determining_policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        determining_policies.sort();
        let mut errors: Vec<EvaluationError> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => EvaluationError {
                    policy_id: p.policy_id().to_string(),
                    message: p.inner().to_string(),
                },
            })
            .collect();
        errors.sort_by(|a, b| a.policy_id.cmp(&b.policy_id));
        Self {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            determining_policies,
            errors,
            policy_version,
        }
    }
}

/// Policy administration and authorization decisions for every tenant.
pub struct Authz {
    store: Arc<dyn PolicyStore>,
    compiled: CompiledCache,
    providers: Vec<Arc<dyn EntityProvider>>,
    decisions: Option<Arc<dyn DecisionCache>>,
    clock: Arc<dyn Clock>,
    config: AuthzConfig,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz")
            .field("config", &self.config)
            .field("cached_tenants", &self.compiled.len())
            .field("providers", &self.providers.len())
            .field("decision_cache", &self.decisions.is_some())
            .finish_non_exhaustive()
    }
}

impl Authz {
    /// An engine over `store` with default tuning, no entity providers and no
    /// decision cache.
    #[must_use]
    pub fn new(store: Arc<dyn PolicyStore>) -> Self {
        Self::with_config(store, AuthzConfig::default())
    }

    /// An engine over `store` with `config`.
    #[must_use]
    pub fn with_config(store: Arc<dyn PolicyStore>, config: AuthzConfig) -> Self {
        Self {
            store,
            compiled: CompiledCache::new(config.compiled_capacity),
            providers: Vec::new(),
            decisions: None,
            clock: Arc::new(SystemClock),
            config,
            authorizer: Authorizer::new(),
        }
    }

    /// Adds an entity provider (e.g. [`crate::IdentityEntities`] for principals, or the
    /// application's loader of resources).
    #[must_use]
    pub fn with_entity_provider(mut self, provider: Arc<dyn EntityProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Turns the decision cache on.
    #[must_use]
    pub fn with_decision_cache(mut self, cache: Arc<dyn DecisionCache>) -> Self {
        self.decisions = Some(cache);
        self
    }

    /// Replaces the clock that stamps versions.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn PolicyStore> {
        &self.store
    }

    // ----- decisions -----

    /// The compiled policies of `tenant`, from the cache when fresh.
    pub async fn compiled(&self, tenant: TenantId) -> Result<Arc<CompiledPolicies>> {
        match self.compiled.get(tenant, self.config.revalidate_after) {
            Cached::Fresh(c) => Ok(c),
            Cached::Stale(c) => {
                let latest = self.store.latest_version(tenant).await?;
                if latest == c.version {
                    self.compiled.confirm(tenant, latest);
                    Ok(c)
                } else {
                    self.load(tenant).await
                }
            }
            Cached::Missing => self.load(tenant).await,
        }
    }

    async fn load(&self, tenant: TenantId) -> Result<Arc<CompiledPolicies>> {
        let compiled = match self.store.latest(tenant).await? {
            None => CompiledPolicies::empty(),
            Some(v) => compile(&v.document, v.version).map_err(|d| {
                Error::Internal(format!(
                    "stored policy version {} of tenant `{tenant}` does not compile: {}",
                    v.version,
                    join(&d)
                ))
            })?,
        };
        Ok(self.compiled.insert(tenant, Arc::new(compiled)))
    }

    /// Decides a request prepared by the caller (typed Cedar values): the fastest
    /// path, for embedders that build requests and entities themselves. Evaluates only
    /// `tenant`'s policies.
    pub async fn is_authorized_prepared(
        &self,
        tenant: TenantId,
        request: &Request,
        entities: &Entities,
    ) -> Result<Decision> {
        let compiled = self.compiled(tenant).await?;
        Ok(self.evaluate(&compiled, request, entities))
    }

    fn evaluate(
        &self,
        compiled: &CompiledPolicies,
        request: &Request,
        entities: &Entities,
    ) -> Decision {
        let response = compiled.decide(&self.authorizer, request, entities);
        Decision::from_response(&response, compiled.version)
    }

    /// Decides `request` against `tenant`'s policies: parses and validates it (against
    /// the tenant's schema, if any), adds the entities the providers load, evaluates.
    /// With a decision cache, a repeated request under the same policy version is
    /// answered from it.
    pub async fn is_authorized(
        &self,
        tenant: TenantId,
        request: &CheckRequest,
    ) -> Result<Decision> {
        let compiled = self.compiled(tenant).await?;
        let key = match &self.decisions {
            Some(cache) => {
                let key = DecisionKey::new(tenant, compiled.version, request);
                if let Some(hit) = cache.get(&key).await? {
                    return Ok(hit);
                }
                Some((cache, key))
            }
            None => None,
        };
        let parsed = parse_item(
            &compiled,
            &request.principal,
            &request.action,
            &request.resource,
            &request.context,
        )?;
        let entities = self
            .entities(
                tenant,
                &compiled,
                &request.entities,
                &[&parsed.principal, &parsed.resource],
            )
            .await?;
        let decision = self.evaluate(&compiled, &parsed.request, &entities);
        if let Some((cache, key)) = key {
            cache.put(&key, &decision).await?;
        }
        Ok(decision)
    }

    /// Decides up to [`MAX_BATCH`] requests that share one set of entities, loading
    /// provider entities once for the whole batch. The answers are in request order;
    /// one bad request fails the batch (nothing is evaluated).
    pub async fn batch_is_authorized(
        &self,
        tenant: TenantId,
        items: &[BatchItem],
        entities: &serde_json::Value,
    ) -> Result<Vec<Decision>> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(Error::invalid(
                "requests",
                format!(
                    "a batch holds 1 to {MAX_BATCH} requests, got {}",
                    items.len()
                ),
            ));
        }
        let compiled = self.compiled(tenant).await?;
        let parsed = items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                parse_item(
                    &compiled,
                    &it.principal,
                    &it.action,
                    &it.resource,
                    &it.context,
                )
                .map_err(|e| match e {
                    Error::InvalidInput { field, reason } => {
                        Error::invalid(format!("requests[{i}].{field}"), reason)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut uids: Vec<&EntityUid> = Vec::new();
        let mut seen = HashSet::new();
        for p in &parsed {
            for uid in [&p.principal, &p.resource] {
                if seen.insert(uid) {
                    uids.push(uid);
                }
            }
        }
        let entities = self.entities(tenant, &compiled, entities, &uids).await?;
        Ok(parsed
            .iter()
            .map(|p| self.evaluate(&compiled, &p.request, &entities))
            .collect())
    }

    /// Which of `actions` `principal` may take on `resource` (in the order given).
    pub async fn allowed_actions(
        &self,
        tenant: TenantId,
        principal: &str,
        resource: &str,
        actions: &[String],
        context: &serde_json::Value,
        entities: &serde_json::Value,
    ) -> Result<Vec<String>> {
        let items: Vec<BatchItem> = actions
            .iter()
            .map(|a| BatchItem {
                principal: principal.to_owned(),
                action: a.clone(),
                resource: resource.to_owned(),
                context: context.clone(),
            })
            .collect();
        let decisions = self.batch_is_authorized(tenant, &items, entities).await?;
        Ok(actions
            .iter()
            .zip(decisions)
            .filter(|(_, d)| d.allowed)
            .map(|(a, _)| a.clone())
            .collect())
    }

    /// The entities of a request: those the providers load for `uids`, plus the
    /// supplied ones (Cedar entity JSON) whose uids the providers did not load,
    /// validated against the tenant's schema.
    async fn entities(
        &self,
        tenant: TenantId,
        compiled: &CompiledPolicies,
        supplied: &serde_json::Value,
        uids: &[&EntityUid],
    ) -> Result<Entities> {
        let schema = compiled.schema.as_ref();
        let mut loaded: HashMap<EntityUid, Entity> = HashMap::new();
        if !self.providers.is_empty() {
            let owned: Vec<EntityUid> = uids.iter().map(|u| (*u).clone()).collect();
            for provider in &self.providers {
                for e in provider.entities(tenant, &owned).await? {
                    loaded.insert(e.uid(), e);
                }
            }
        }
        // The providers are the authority on the entities they load.
        let not_loaded = |e: &Entity| !loaded.contains_key(&e.uid());
        let validated = |supplied: Vec<Entity>| -> Result<Entities> {
            let all = supplied
                .into_iter()
                .filter(not_loaded)
                .chain(loaded.values().cloned());
            match schema {
                Some(schema) => Entities::from_entities(all, Some(schema))
                    .map_err(|e| Error::invalid("entities", e.to_string())),
                None => closed(all),
            }
        };
        if let Some(fast) = fast_entities(supplied) {
            let conforming = match (schema, supplied) {
                (Some(_), serde_json::Value::Array(items)) => {
                    items.iter().all(|item| compiled.shapes.conforms(item))
                }
                _ => false,
            };
            let built = if !conforming {
                validated(fast).ok()
            } else if loaded.is_empty() {
                // Every entity certainly conforms (see `conform`): Cedar's per-entity
                // validation would only repeat the check.
                closed(
                    fast.into_iter()
                        .chain(compiled.action_groups.iter().cloned()),
                )
                .ok()
            } else {
                Entities::from_entities(loaded.values().cloned(), schema)
                    .ok()
                    .and_then(|base| {
                        base.add_entities(fast.into_iter().filter(not_loaded), None)
                            .ok()
                    })
            };
            if let Some(entities) = built {
                return Ok(entities);
            }
        }
        // Unusual forms, schema-directed shorthands, or invalid input: Cedar's parser
        // decides (and words the error).
        validated(parse_entities(supplied, schema)?)
    }

    // ----- policy administration -----

    /// The latest version of `tenant`'s policy store (an empty version 0 if it has
    /// none).
    pub async fn current(&self, tenant: TenantId) -> Result<PolicyVersion> {
        Ok(self
            .store
            .latest(tenant)
            .await?
            .unwrap_or_else(|| PolicyVersion {
                tenant_id: tenant,
                version: 0,
                created_at: chrono::DateTime::UNIX_EPOCH,
                change: String::new(),
                document: PolicySetDocument::default(),
            }))
    }

    /// Version `version` of `tenant`'s policy store.
    pub async fn version(&self, tenant: TenantId, version: i64) -> Result<PolicyVersion> {
        self.store.version(tenant, version).await
    }

    /// A page of `tenant`'s versions, newest first.
    pub async fn list_versions(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<VersionInfo>> {
        self.store.list_versions(tenant, page).await
    }

    /// Sets (or with `None` removes) the schema; every policy must still validate.
    pub async fn set_schema(
        &self,
        tenant: TenantId,
        expected_version: i64,
        schema: Option<SchemaDocument>,
    ) -> Result<VersionInfo> {
        if let Some(s) = &schema {
            validate_text("schema", s.text())?;
        }
        let change = if schema.is_some() {
            "set schema"
        } else {
            "remove schema"
        };
        self.write(tenant, expected_version, change.to_owned(), |doc| {
            doc.schema = schema;
            Ok(())
        })
        .await
    }

    /// Adds a static policy; `AlreadyExists` if its id is used by a policy, template or
    /// link.
    pub async fn create_policy(
        &self,
        tenant: TenantId,
        expected_version: i64,
        policy: PolicyDocument,
    ) -> Result<VersionInfo> {
        self.create_document(DocumentKind::Policy, tenant, expected_version, policy)
            .await
    }

    /// Replaces a static policy; `NotFound` if there is none with its id.
    pub async fn update_policy(
        &self,
        tenant: TenantId,
        expected_version: i64,
        policy: PolicyDocument,
    ) -> Result<VersionInfo> {
        self.update_document(DocumentKind::Policy, tenant, expected_version, policy)
            .await
    }

    /// Deletes a static policy; `NotFound` if there is none.
    pub async fn delete_policy(
        &self,
        tenant: TenantId,
        expected_version: i64,
        id: &str,
    ) -> Result<VersionInfo> {
        self.write(
            tenant,
            expected_version,
            format!("delete policy `{id}`"),
            |doc| {
                doc.policies
                    .remove(id)
                    .map(|_| ())
                    .ok_or_else(|| Error::not_found("policy", id))
            },
        )
        .await
    }

    /// Adds a template (a policy with `?principal` and/or `?resource` slots).
    pub async fn create_template(
        &self,
        tenant: TenantId,
        expected_version: i64,
        template: PolicyDocument,
    ) -> Result<VersionInfo> {
        self.create_document(DocumentKind::Template, tenant, expected_version, template)
            .await
    }

    /// Replaces a template; its links follow the new text.
    pub async fn update_template(
        &self,
        tenant: TenantId,
        expected_version: i64,
        template: PolicyDocument,
    ) -> Result<VersionInfo> {
        self.update_document(DocumentKind::Template, tenant, expected_version, template)
            .await
    }

    async fn create_document(
        &self,
        kind: DocumentKind,
        tenant: TenantId,
        expected_version: i64,
        document: PolicyDocument,
    ) -> Result<VersionInfo> {
        check_document(kind.name(), &document)?;
        let change = format!("create {} `{}`", kind.name(), document.id);
        self.write(tenant, expected_version, change, |doc| {
            ensure_unused(doc, &document.id)?;
            kind.documents(doc).insert(document.id.clone(), document);
            Ok(())
        })
        .await
    }

    async fn update_document(
        &self,
        kind: DocumentKind,
        tenant: TenantId,
        expected_version: i64,
        document: PolicyDocument,
    ) -> Result<VersionInfo> {
        check_document(kind.name(), &document)?;
        let change = format!("update {} `{}`", kind.name(), document.id);
        self.write(tenant, expected_version, change, |doc| {
            let slot = kind
                .documents(doc)
                .get_mut(&document.id)
                .ok_or_else(|| Error::not_found(kind.name(), &document.id))?;
            *slot = document;
            Ok(())
        })
        .await
    }

    /// Deletes a template; `Conflict` while links to it exist.
    pub async fn delete_template(
        &self,
        tenant: TenantId,
        expected_version: i64,
        id: &str,
    ) -> Result<VersionInfo> {
        self.write(
            tenant,
            expected_version,
            format!("delete template `{id}`"),
            |doc| {
                if let Some(link) = doc.links.values().find(|l| l.template_id == id) {
                    return Err(Error::Conflict(format!(
                        "template `{id}` is still linked by `{}`",
                        link.id
                    )));
                }
                doc.templates
                    .remove(id)
                    .map(|_| ())
                    .ok_or_else(|| Error::not_found("template", id))
            },
        )
        .await
    }

    /// Links a template: a new policy with the template's slots filled.
    pub async fn link_template(
        &self,
        tenant: TenantId,
        expected_version: i64,
        link: TemplateLink,
    ) -> Result<VersionInfo> {
        validate_policy_id("policy_id", &link.id)?;
        validate_policy_id("template_id", &link.template_id)?;
        self.write(
            tenant,
            expected_version,
            format!("link template `{}` as `{}`", link.template_id, link.id),
            |doc| {
                ensure_unused(doc, &link.id)?;
                if !doc.templates.contains_key(&link.template_id) {
                    return Err(Error::not_found("template", &link.template_id));
                }
                doc.links.insert(link.id.clone(), link);
                Ok(())
            },
        )
        .await
    }

    /// Removes a template link.
    pub async fn unlink_template(
        &self,
        tenant: TenantId,
        expected_version: i64,
        id: &str,
    ) -> Result<VersionInfo> {
        self.write(tenant, expected_version, format!("unlink `{id}`"), |doc| {
            doc.links
                .remove(id)
                .map(|_| ())
                .ok_or_else(|| Error::not_found("template link", id))
        })
        .await
    }

    /// Makes the document of version `to` current again, as a new version.
    pub async fn rollback(
        &self,
        tenant: TenantId,
        expected_version: i64,
        to: i64,
    ) -> Result<VersionInfo> {
        let target = self.store.version(tenant, to).await?;
        self.write(
            tenant,
            expected_version,
            format!("rollback to version {to}"),
            |doc| {
                *doc = target.document;
                Ok(())
            },
        )
        .await
    }

    /// Dry run: the diagnostics the current set would have with `policies` (and
    /// `templates`) added or replaced, and `schema` if given. Writes nothing.
    pub async fn validate_policies(
        &self,
        tenant: TenantId,
        schema: Option<SchemaDocument>,
        policies: Vec<PolicyDocument>,
        templates: Vec<PolicyDocument>,
    ) -> Result<Vec<PolicyDiagnostic>> {
        let mut doc = self.current(tenant).await?.document;
        if let Some(s) = schema {
            validate_text("schema", s.text())?;
            doc.schema = Some(s);
        }
        for p in policies {
            check_document("policy", &p)?;
            doc.templates.remove(&p.id);
            doc.policies.insert(p.id.clone(), p);
        }
        for t in templates {
            check_document("template", &t)?;
            doc.policies.remove(&t.id);
            doc.templates.insert(t.id.clone(), t);
        }
        Ok(compile(&doc, 0).err().unwrap_or_default())
    }

    /// Applies `change` to the latest document if `expected_version` is still the
    /// latest, validates the result strictly, and appends it as the next version.
    async fn write(
        &self,
        tenant: TenantId,
        expected_version: i64,
        description: String,
        change: impl FnOnce(&mut PolicySetDocument) -> Result<()>,
    ) -> Result<VersionInfo> {
        let current = self.current(tenant).await?;
        if current.version != expected_version {
            return Err(Error::stale(
                "policy store of tenant",
                tenant,
                expected_version,
            ));
        }
        let mut document = current.document;
        change(&mut document)?;
        if document.policies.len() + document.links.len() > MAX_POLICIES {
            return Err(Error::invalid(
                "policies",
                format!("a tenant may hold at most {MAX_POLICIES} policies"),
            ));
        }
        let version = expected_version + 1;
        let compiled =
            compile(&document, version).map_err(|d| Error::invalid("policies", join(&d)))?;
        let record = PolicyVersion {
            tenant_id: tenant,
            version,
            created_at: self.clock.now(),
            change: description,
            document,
        };
        self.store.append(tenant, &record).await?;
        self.compiled.insert(tenant, Arc::new(compiled));
        Ok(record.info())
    }
}

/// Static policies and templates are written the same way, into different maps.
#[derive(Debug, Clone, Copy)]
enum DocumentKind {
    Policy,
    Template,
}

impl DocumentKind {
    const fn name(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Template => "template",
        }
    }

    fn documents(
        self,
        doc: &mut PolicySetDocument,
    ) -> &mut std::collections::BTreeMap<String, PolicyDocument> {
        match self {
            Self::Policy => &mut doc.policies,
            Self::Template => &mut doc.templates,
        }
    }
}

fn join(diagnostics: &[PolicyDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_document(field: &str, p: &PolicyDocument) -> Result<()> {
    validate_policy_id("policy_id", &p.id)?;
    validate_text(field, &p.text)?;
    if p.description.len() > 1024 {
        return Err(Error::invalid("description", "must be at most 1024 bytes"));
    }
    Ok(())
}

fn ensure_unused(doc: &PolicySetDocument, id: &str) -> Result<()> {
    if doc.policies.contains_key(id) || doc.templates.contains_key(id) || doc.links.contains_key(id)
    {
        return Err(Error::AlreadyExists(format!(
            "policy id `{id}` is already used"
        )));
    }
    Ok(())
}

struct ParsedItem {
    principal: EntityUid,
    resource: EntityUid,
    request: Request,
}

fn parse_uid(field: &str, text: &str) -> Result<EntityUid> {
    if let Some(uid) = crate::names::uid(text) {
        return Ok(uid);
    }
    EntityUid::from_str(text).map_err(|e| {
        Error::invalid(
            field,
            format!("`{text}` is not an entity uid like `Type::\"id\"`: {e}"),
        )
    })
}

fn parse_item(
    compiled: &CompiledPolicies,
    principal: &str,
    action: &str,
    resource: &str,
    context: &serde_json::Value,
) -> Result<ParsedItem> {
    let schema = compiled.schema.as_ref();
    let principal = parse_uid("principal", principal)?;
    let action = parse_uid("action", action)?;
    let resource = parse_uid("resource", resource)?;
    let context_json = context;
    let cedar_context = |v: &serde_json::Value| {
        Context::from_json_value(v.clone(), schema.map(|s| (s, &action)))
            .map_err(|e| Error::invalid("context", e.to_string()))
    };
    let (context, fast) = match context {
        serde_json::Value::Null => (Context::empty(), false),
        v @ serde_json::Value::Object(_) => match crate::json::context(v) {
            Some(c) => (c, true),
            None => (cedar_context(v)?, false),
        },
        _ => return Err(Error::invalid("context", "must be a JSON object")),
    };
    // A request the schema certainly admits (see `conform`) skips Cedar's check of it.
    let admitted = schema.is_some()
        && (fast || context_json.is_null())
        && compiled
            .shapes
            .admits_request(&principal, &action, &resource, context_json);
    let build = |context: Context| {
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            if admitted { None } else { schema },
        )
        .map_err(|e| {
            let d = diagnostic("request", "", &e);
            Error::invalid("request", d.message)
        })
    };
    let request = match build(context) {
        Ok(r) => r,
        // The fast conversion may differ from Cedar's schema-directed reading (e.g. an
        // extension value written as a plain string): let Cedar decide.
        Err(_) if fast => build(cedar_context(context_json)?)?,
        Err(e) => return Err(e),
    };
    Ok(ParsedItem {
        principal,
        resource,
        request,
    })
}

/// `entities` as Cedar `Entities`, with their ancestors transitively closed, unchecked
/// against any schema. Adding them to an empty set closes the hierarchy incrementally
/// from the added entities; `Entities::from_entities` runs a general
/// strongly-connected-components pass over hash maps instead, about 30,000 more
/// instructions for a request's two entities. Both refuse duplicate uids and cycles.
fn closed(entities: impl IntoIterator<Item = Entity>) -> Result<Entities> {
    Entities::empty()
        .add_entities(entities, None)
        .map_err(|e| Error::invalid("entities", e.to_string()))
}

/// Entities in Cedar's explicit JSON form, or `None` if any needs Cedar's parser.
fn fast_entities(value: &serde_json::Value) -> Option<Vec<Entity>> {
    match value {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::Array(items) if items.len() <= MAX_ENTITIES => {
            items.iter().map(crate::json::entity).collect()
        }
        _ => None,
    }
}

fn parse_entities(
    value: &serde_json::Value,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Vec<Entity>> {
    let items = match value {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Array(items) => items,
        _ => {
            return Err(Error::invalid(
                "entities",
                "must be a JSON array of entities",
            ));
        }
    };
    if items.len() > MAX_ENTITIES {
        return Err(Error::invalid(
            "entities",
            format!(
                "at most {MAX_ENTITIES} entities are allowed, got {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Entity::from_json_value(item.clone(), schema)
                .map_err(|e| Error::invalid(format!("entities[{i}]"), e.to_string()))
        })
        .collect()
}
