//! Compiling a [`PolicySetDocument`] into what Cedar evaluates: the schema (tenant
//! fragment plus the built-in RBAC fragment) and the policy set, strictly validated.
//! Every problem becomes a [`PolicyDiagnostic`] carrying Cedar's own message and, where
//! Cedar points at a place, the line and column in the offending text.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, PolicySetError, PrincipalConstraint, Request, Response, Schema, SchemaFragment,
    SlotId, Template, ValidationMode, Validator,
};

use crate::conform::Shapes;
use crate::model::{PolicyDiagnostic, PolicySetDocument, SchemaDocument};

/// The schema fragment every tenant gets: users are members of roles, and the roles
/// come from their memberships in tenancy-core. "Admins may do X" is then one policy:
/// `permit(principal in Role::"admin", action == Action::"X", resource);`.
pub const BUILTIN_SCHEMA: &str = r#"
entity Role;
entity User in [Role] {
    email?: String,
    email_verified?: Bool,
    display_name?: String,
};
"#;

/// A tenant's policies, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicies {
    /// The version of the tenant's store these were compiled from (0: no version).
    pub version: i64,
    /// The tenant's schema merged with [`BUILTIN_SCHEMA`], if the tenant has a schema.
    pub schema: Option<Schema>,
    /// Static policies, templates and links.
    pub policies: PolicySet,
    /// For each action some policy names in its scope, the policies that can apply to
    /// it: those naming it (or, with a schema, an action group containing it) plus
    /// those whose scope allows any action; grouped by principal scope.
    by_action: HashMap<EntityUid, Slice>,
    /// The policies whose scope allows any action: all that can apply to an action
    /// no policy names.
    any_action: Slice,
    /// The schema's entity types as the fast conformance check reads them.
    pub(crate) shapes: Shapes,
    /// The schema's action entities when it groups actions (evaluating `action in`
    /// a group needs their hierarchy); empty otherwise.
    pub(crate) action_groups: Vec<Entity>,
}

/// The principal part of a policy's scope, as an index key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PrincipalKey {
    /// `principal`: any principal.
    Any,
    /// `principal == uid`.
    Eq(EntityUid),
    /// `principal in uid` (and `principal is T in uid`).
    In(EntityUid),
    /// `principal is T`.
    Is(cedar_policy::EntityTypeName),
}

impl PrincipalKey {
    fn of(constraint: PrincipalConstraint) -> Self {
        match constraint {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(u) => Self::Eq(u),
            PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => Self::In(u),
            PrincipalConstraint::Is(t) => Self::Is(t),
        }
    }
}

/// The policies of one action slice, grouped by principal scope.
#[derive(Debug, Clone, Default)]
struct Slice {
    groups: HashMap<PrincipalKey, PolicySet>,
}

impl Slice {
    /// The groups whose principal scope can admit `principal`: any, equal to it, of
    /// its type, or `in` it or one of its ancestors. The others cannot be satisfied
    /// and, their scope being checked first, cannot produce errors either.
    fn candidates<'a>(
        &'a self,
        principal: Option<&EntityUid>,
        entities: &Entities,
    ) -> Vec<&'a PolicySet> {
        let Some(p) = principal else {
            return self.groups.values().collect();
        };
        let mut out = Vec::with_capacity(4);
        let mut push = |key: &PrincipalKey| {
            if let Some(set) = self.groups.get(key) {
                out.push(set);
            }
        };
        push(&PrincipalKey::Any);
        push(&PrincipalKey::Eq(p.clone()));
        push(&PrincipalKey::Is(p.type_name().clone()));
        push(&PrincipalKey::In(p.clone()));
        if let Some(ancestors) = entities.ancestors(p) {
            for a in ancestors {
                push(&PrincipalKey::In(a.clone()));
            }
        }
        out
    }
}

impl CompiledPolicies {
    /// The empty set of a tenant without policies: every request is denied.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            version: 0,
            schema: None,
            policies: PolicySet::new(),
            by_action: HashMap::new(),
            any_action: Slice::default(),
            shapes: Shapes::default(),
            action_groups: Vec::new(),
        }
    }

    /// Decides `request`, evaluating only the policies whose scope can admit it: those
    /// of the request's action slice whose principal scope admits the principal. A
    /// policy whose scope excludes the request is never satisfied and never evaluates
    /// its conditions (Cedar checks the scope first), so the merged answer equals the
    /// whole set's: denied with the satisfied forbids if any; otherwise allowed with
    /// the satisfied permits if any; errors from every evaluated policy.
    #[must_use]
    pub fn decide(
        &self,
        authorizer: &Authorizer,
        request: &Request,
        entities: &Entities,
    ) -> Response {
        let slice = match request.action() {
            Some(a) => self.by_action.get(a).unwrap_or(&self.any_action),
            None => return authorizer.is_authorized(request, &self.policies, entities),
        };
        let groups = slice.candidates(request.principal(), entities);
        if let [only] = groups.as_slice() {
            return authorizer.is_authorized(request, only, entities);
        }
        let mut forbids = HashSet::new();
        let mut permits = HashSet::new();
        let mut errors = Vec::new();
        for group in groups {
            let response = authorizer.is_authorized(request, group, entities);
            let reasons = response.diagnostics().reason().cloned();
            if response.decision() == Decision::Allow {
                permits.extend(reasons);
            } else {
                forbids.extend(reasons);
            }
            errors.extend(response.diagnostics().errors().cloned());
        }
        if !forbids.is_empty() {
            Response::new(Decision::Deny, forbids, errors)
        } else if !permits.is_empty() {
            Response::new(Decision::Allow, permits, errors)
        } else {
            Response::new(Decision::Deny, HashSet::new(), errors)
        }
    }

    /// The ids of the policies [`CompiledPolicies::decide`] evaluates for `request`.
    #[must_use]
    pub fn candidate_ids(&self, request: &Request, entities: &Entities) -> Vec<String> {
        let slice = match request.action() {
            Some(a) => self.by_action.get(a).unwrap_or(&self.any_action),
            None => {
                return self
                    .policies
                    .policies()
                    .map(|p| p.id().to_string())
                    .collect();
            }
        };
        let mut ids: Vec<String> = slice
            .candidates(request.principal(), entities)
            .into_iter()
            .flat_map(|set| set.policies().map(|p| p.id().to_string()))
            .collect();
        ids.sort();
        ids
    }
}

/// The actions a scope constraint admits; `None` when it may admit any action (no
/// constraint, or `action in [...]` without a schema to resolve action groups).
fn admitted_actions(
    constraint: ActionConstraint,
    groups: Option<&HashMap<EntityUid, HashSet<EntityUid>>>,
) -> Option<HashSet<EntityUid>> {
    match constraint {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(a) => Some(HashSet::from([a])),
        ActionConstraint::In(list) => {
            let groups = groups?;
            Some(
                groups
                    .iter()
                    .filter(|(action, ancestors)| {
                        list.iter().any(|l| l == *action || ancestors.contains(l))
                    })
                    .map(|(action, _)| action.clone())
                    .collect(),
            )
        }
    }
}

/// Adds `policy` (static or template-linked) to `set`, adding its template first.
fn add_policy(
    set: &mut PolicySet,
    policy: &Policy,
    templates: &HashMap<PolicyId, Template>,
) -> Result<(), String> {
    let added: Result<(), PolicySetError> = match (policy.template_id(), policy.template_links()) {
        (Some(template_id), Some(values)) => {
            if set.template(template_id).is_none()
                && let Some(template) = templates.get(template_id)
            {
                set.add_template(template.clone())
                    .map_err(|e| e.to_string())?;
            }
            set.link(template_id.clone(), policy.id().clone(), values)
        }
        _ => set.add(policy.clone()),
    };
    added.map_err(|e| e.to_string())
}

/// Splits `set` by the actions its policies admit, then by principal scope (see
/// [`CompiledPolicies::decide`]).
fn slice_by_action(
    set: &PolicySet,
    schema: Option<&Schema>,
) -> Result<(HashMap<EntityUid, Slice>, Slice), String> {
    let groups = schema.and_then(|s| {
        let entities = s.action_entities().ok()?;
        Some(
            s.actions()
                .map(|a| {
                    let ancestors = entities
                        .ancestors(a)
                        .map(|it| it.cloned().collect())
                        .unwrap_or_default();
                    (a.clone(), ancestors)
                })
                .collect::<HashMap<EntityUid, HashSet<EntityUid>>>(),
        )
    });
    let templates: HashMap<PolicyId, Template> = set
        .templates()
        .map(|t| (t.id().clone(), t.clone()))
        .collect();
    let template_actions: HashMap<&PolicyId, Option<HashSet<EntityUid>>> = set
        .templates()
        .map(|t| {
            (
                t.id(),
                admitted_actions(t.action_constraint(), groups.as_ref()),
            )
        })
        .collect();
    let mut any: Vec<&Policy> = Vec::new();
    let mut by_action: HashMap<EntityUid, Vec<&Policy>> = HashMap::new();
    for policy in set.policies() {
        let admitted = match policy.template_id() {
            Some(t) => template_actions.get(t).cloned().flatten(),
            None => admitted_actions(policy.action_constraint(), groups.as_ref()),
        };
        match admitted {
            None => any.push(policy),
            Some(actions) => {
                for action in actions {
                    by_action.entry(action).or_default().push(policy);
                }
            }
        }
    }
    let build = |policies: &[&Policy]| -> Result<Slice, String> {
        let mut slice = Slice::default();
        for policy in any.iter().chain(policies) {
            let key = PrincipalKey::of(policy.principal_constraint());
            add_policy(slice.groups.entry(key).or_default(), policy, &templates)?;
        }
        Ok(slice)
    };
    let any_action = build(&[])?;
    let by_action = by_action
        .into_iter()
        .map(|(action, policies)| Ok((action, build(&policies)?)))
        .collect::<Result<HashMap<_, _>, String>>()?;
    Ok((by_action, any_action))
}

/// Compiles and strictly validates `doc`; on failure, every diagnostic found.
pub fn compile(
    doc: &PolicySetDocument,
    version: i64,
) -> Result<CompiledPolicies, Vec<PolicyDiagnostic>> {
    let mut diagnostics = Vec::new();
    let (schema, shapes) = match &doc.schema {
        None => (None, Shapes::default()),
        Some(s) => match parse_schema(s) {
            Ok((schema, shapes)) => (Some(schema), shapes),
            Err(d) => {
                diagnostics.push(d);
                (None, Shapes::default())
            }
        },
    };

    let mut set = PolicySet::new();
    for (id, p) in &doc.policies {
        match Policy::parse(Some(PolicyId::new(id)), &p.text) {
            Ok(policy) => {
                if let Err(e) = set.add(policy) {
                    diagnostics.push(diagnostic(id, &p.text, &e));
                }
            }
            Err(e) => diagnostics.push(diagnostic(id, &p.text, &e)),
        }
    }
    for (id, t) in &doc.templates {
        match Template::parse(Some(PolicyId::new(id)), &t.text) {
            Ok(template) => {
                if let Err(e) = set.add_template(template) {
                    diagnostics.push(diagnostic(id, &t.text, &e));
                }
            }
            Err(e) => diagnostics.push(diagnostic(id, &t.text, &e)),
        }
    }
    for (id, link) in &doc.links {
        let mut values = HashMap::new();
        for (slot, entity) in [
            (SlotId::principal(), &link.principal),
            (SlotId::resource(), &link.resource),
        ] {
            if let Some(entity) = entity {
                match EntityUid::from_str(entity) {
                    Ok(uid) => {
                        values.insert(slot, uid);
                    }
                    Err(e) => diagnostics.push(diagnostic(id, entity, &e)),
                }
            }
        }
        if let Err(e) = set.link(PolicyId::new(&link.template_id), PolicyId::new(id), values) {
            diagnostics.push(PolicyDiagnostic {
                policy_id: id.clone(),
                line: None,
                column: None,
                message: e.to_string(),
            });
        }
    }

    if diagnostics.is_empty()
        && let Some(schema) = &schema
    {
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let text = doc
                .policies
                .get(&id)
                .or_else(|| doc.templates.get(&id))
                .map(|p| p.text.as_str())
                .unwrap_or_default();
            diagnostics.push(diagnostic(&id, text, e));
        }
    }

    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let (by_action, any_action) = slice_by_action(&set, schema.as_ref()).map_err(|e| {
        vec![PolicyDiagnostic {
            policy_id: "policies".into(),
            line: None,
            column: None,
            message: format!("cannot index the policy set by action: {e}"),
        }]
    })?;
    let action_groups = match &schema {
        Some(schema) if schema.action_groups().next().is_some() => schema
            .action_entities()
            .map_err(|e| {
                vec![diagnostic(
                    "schema",
                    doc.schema.as_ref().map_or("", SchemaDocument::text),
                    &e,
                )]
            })?
            .iter()
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    Ok(CompiledPolicies {
        version,
        schema,
        policies: set,
        by_action,
        any_action,
        shapes,
        action_groups,
    })
}

/// The schema of `doc` merged with [`BUILTIN_SCHEMA`], and its entity types as the
/// fast conformance check reads them (none if the schema declares `external` types
/// or actions, whose entities only Cedar can judge).
fn parse_schema(doc: &SchemaDocument) -> Result<(Schema, Shapes), PolicyDiagnostic> {
    let builtin = SchemaFragment::from_cedarschema_str(BUILTIN_SCHEMA)
        .map(|(f, _)| f)
        .map_err(|e| diagnostic("schema", BUILTIN_SCHEMA, &e))?;
    let tenant = match doc {
        SchemaDocument::Cedar(text) => SchemaFragment::from_cedarschema_str(text)
            .map(|(f, _)| f)
            .map_err(|e| diagnostic("schema", text, &e))?,
        SchemaDocument::Json(text) => {
            SchemaFragment::from_json_str(text).map_err(|e| diagnostic("schema", text, &e))?
        }
    };
    let json: Option<Vec<serde_json::Value>> = [&builtin, &tenant]
        .into_iter()
        .map(|f| f.clone().to_json_value().ok())
        .collect();
    let schema = Schema::from_schema_fragments([builtin, tenant])
        .map_err(|e| diagnostic("schema", doc.text(), &e))?;
    let shapes = match json {
        Some(json) if schema.is_complete() => Shapes::from_json_fragments(&json),
        _ => Shapes::default(),
    };
    Ok((schema, shapes))
}

/// A diagnostic from any Cedar error: its message (with its causes) and the line and
/// column of its first label within `text`.
pub(crate) fn diagnostic(id: &str, text: &str, err: &dyn miette::Diagnostic) -> PolicyDiagnostic {
    let offset = err
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (l, c) = line_column(text, offset);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let mut message = err.to_string();
    if let Some(help) = err.help() {
        message.push_str(&format!(" ({help})"));
    }
    if let Some(related) = err.related() {
        for r in related {
            message.push_str(&format!("; {r}"));
        }
    }
    PolicyDiagnostic {
        policy_id: id.to_owned(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PolicyDocument;

    fn doc(schema: Option<&str>, policies: &[(&str, &str)]) -> PolicySetDocument {
        PolicySetDocument {
            schema: schema.map(|s| SchemaDocument::Cedar(s.to_owned())),
            policies: policies
                .iter()
                .map(|(id, text)| {
                    (
                        (*id).to_owned(),
                        PolicyDocument {
                            id: (*id).to_owned(),
                            text: (*text).to_owned(),
                            description: String::new(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    const SCHEMA: &str = "entity Document { owner: User }; action view appliesTo { principal: User, resource: Document };";

    #[test]
    fn valid_sets_compile() {
        let d = doc(
            Some(SCHEMA),
            &[(
                "p1",
                "permit(principal in Role::\"admin\", action == Action::\"view\", resource);",
            )],
        );
        let compiled = compile(&d, 3).unwrap();
        assert_eq!(compiled.version, 3);
        assert_eq!(compiled.policies.policies().count(), 1);
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let d = doc(
            None,
            &[(
                "bad",
                "permit(\n  principal,\n  action,\n  resource\n) when { 1 + };",
            )],
        );
        let diags = compile(&d, 1).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].policy_id, "bad");
        assert_eq!(diags[0].line, Some(5));
        assert!(diags[0].column.unwrap() > 1, "{:?}", diags[0]);
    }

    #[test]
    fn schema_violations_are_reported_with_the_policy_id() {
        let d = doc(
            Some(SCHEMA),
            &[(
                "p2",
                "permit(principal, action == Action::\"edit\", resource);",
            )],
        );
        let diags = compile(&d, 1).unwrap_err();
        assert_eq!(diags[0].policy_id, "p2");
        assert!(diags[0].message.contains("edit"), "{}", diags[0].message);
        assert_eq!(diags[0].line, Some(1));
    }

    #[test]
    fn only_policies_whose_scope_can_admit_the_request_are_candidates() {
        let schema = "entity Document; action \"read\"; action view in [\"read\"] appliesTo { principal: User, resource: Document }; action list in [\"read\"] appliesTo { principal: User, resource: Document }; action delete appliesTo { principal: User, resource: Document };";
        let d = doc(
            Some(schema),
            &[
                (
                    "readers",
                    "permit(principal, action in Action::\"read\", resource);",
                ),
                (
                    "deleters",
                    "permit(principal, action == Action::\"delete\", resource);",
                ),
                (
                    "admins",
                    "permit(principal in Role::\"admin\", action, resource);",
                ),
                (
                    "bob",
                    "permit(principal == User::\"bob\", action == Action::\"view\", resource);",
                ),
            ],
        );
        let c = compile(&d, 1).unwrap();
        let entities = Entities::from_json_value(
            serde_json::json!([{ "uid": { "type": "User", "id": "alice" }, "attrs": {}, "parents": [{ "type": "Role", "id": "admin" }] }]),
            c.schema.as_ref(),
        )
        .unwrap();
        let ids = |principal: &str, action: &str| {
            let request = Request::new(
                EntityUid::from_str(&format!("User::\"{principal}\"")).unwrap(),
                EntityUid::from_str(&format!("Action::\"{action}\"")).unwrap(),
                EntityUid::from_str("Document::\"d\"").unwrap(),
                cedar_policy::Context::empty(),
                None,
            )
            .unwrap();
            c.candidate_ids(&request, &entities)
        };
        assert_eq!(ids("alice", "view"), ["admins", "readers"]);
        assert_eq!(ids("bob", "view"), ["bob", "readers"]);
        assert_eq!(ids("carol", "list"), ["readers"]);
        assert_eq!(ids("alice", "delete"), ["admins", "deleters"]);
        assert_eq!(ids("carol", "unknown"), Vec::<String>::new());
        assert_eq!(ids("alice", "unknown"), ["admins"]);
    }

    #[test]
    fn bad_schema_is_a_diagnostic() {
        let d = doc(Some("entity ;"), &[]);
        let diags = compile(&d, 1).unwrap_err();
        assert_eq!(diags[0].policy_id, "schema");
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
