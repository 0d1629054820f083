//! Differential test: for random requests and entities, the engine's decision,
//! determining policies and evaluation errors equal a direct
//! `cedar_policy::Authorizer::is_authorized` call on the same policies, entities and
//! request — with the decision cache off, on (first call), and on (a cache hit).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_authz::{
    Authz, CheckRequest, Decision, EvaluationError, MemoryDecisionCache, PolicyDocument,
};
use tenancy_core::TenantId;

/// No schema, so policies may fail at evaluation (missing attributes, wrong types):
/// errors are compared too.
const POLICIES: &[(&str, &str)] = &[
    (
        "owner",
        r#"permit(principal, action, resource) when { resource.owner == principal };"#,
    ),
    (
        "admins",
        r#"permit(principal in Role::"admin", action, resource);"#,
    ),
    (
        "viewers",
        r#"permit(principal in Role::"viewer", action == Action::"view", resource) when { resource.public };"#,
    ),
    (
        "locked",
        r#"forbid(principal, action == Action::"delete", resource) when { resource.locked };"#,
    ),
    (
        "level",
        r#"permit(principal, action == Action::"edit", resource) when { principal.level > resource.min_level };"#,
    ),
    (
        "office",
        r#"permit(principal in Role::"staff", action == Action::"download", resource) when { context.ip.isInRange(ip("10.0.0.0/8")) && context.hour < 18 };"#,
    ),
    (
        "banned",
        r#"forbid(principal, action, resource) when { principal has banned && principal.banned };"#,
    ),
    (
        "typo",
        r#"permit(principal, action == Action::"view", resource) when { resource.public == "yes" || resource.tags.contains("open") };"#,
    ),
];

fn uid(t: &str, id: &str) -> Value {
    json!({ "type": t, "id": id })
}

prop_compose! {
    fn user()(id in prop::sample::select(vec!["alice", "bob", "carol", "ghost"]),
               roles in prop::collection::btree_set(prop::sample::select(vec!["admin", "viewer", "staff"]), 0..3),
               level in prop::option::of(0_i64..10),
               banned in prop::option::of(any::<bool>())) -> Value {
        let mut attrs = serde_json::Map::new();
        if let Some(l) = level { attrs.insert("level".into(), json!(l)); }
        if let Some(b) = banned { attrs.insert("banned".into(), json!(b)); }
        json!({ "uid": uid("User", id), "attrs": attrs,
                "parents": roles.iter().map(|r| uid("Role", r)).collect::<Vec<_>>() })
    }
}

prop_compose! {
    fn document()(id in prop::sample::select(vec!["d1", "d2", "d3"]),
                  owner in prop::sample::select(vec!["alice", "bob", "carol"]),
                  public in prop::option::of(any::<bool>()),
                  locked in any::<bool>(),
                  min_level in prop::option::of(0_i64..10),
                  tags in prop::option::of(prop::collection::vec(prop::sample::select(vec!["open", "closed"]), 0..3))) -> Value {
        let mut attrs = serde_json::Map::new();
        attrs.insert("owner".into(), json!({ "__entity": uid("User", owner) }));
        attrs.insert("locked".into(), json!(locked));
        if let Some(p) = public { attrs.insert("public".into(), json!(p)); }
        if let Some(m) = min_level { attrs.insert("min_level".into(), json!(m)); }
        if let Some(t) = tags { attrs.insert("tags".into(), json!(t)); }
        json!({ "uid": uid("Document", id), "attrs": attrs, "parents": [] })
    }
}

prop_compose! {
    fn case()(users in prop::collection::vec(user(), 0..4),
              docs in prop::collection::vec(document(), 0..3),
              principal in prop::sample::select(vec!["alice", "bob", "carol", "ghost"]),
              action in prop::sample::select(vec!["view", "edit", "delete", "download"]),
              resource in prop::sample::select(vec!["d1", "d2", "d3"]),
              ip in prop::option::of(prop::sample::select(vec!["10.1.2.3", "192.168.0.1"])),
              hour in prop::option::of(0_i64..24)) -> CheckRequest {
        // Entities must have unique uids: keep the first of each.
        let mut seen = std::collections::HashSet::new();
        let mut entities: Vec<Value> = users.into_iter().chain(docs)
            .filter(|e| seen.insert(e["uid"].to_string()))
            .collect();
        entities.extend(["admin", "viewer", "staff"].iter().map(|r| json!({ "uid": uid("Role", r), "attrs": {}, "parents": [] })));
        let mut context = serde_json::Map::new();
        if let Some(ip) = ip { context.insert("ip".into(), json!({ "__extn": { "fn": "ip", "arg": ip } })); }
        if let Some(h) = hour { context.insert("hour".into(), json!(h)); }
        CheckRequest {
            principal: format!("User::\"{principal}\""),
            action: format!("Action::\"{action}\""),
            resource: format!("Document::\"{resource}\""),
            context: Value::Object(context),
            entities: Value::Array(entities),
        }
    }
}

fn raw_policy_set() -> PolicySet {
    let mut set = PolicySet::new();
    for (id, text) in POLICIES {
        set.add(Policy::parse(Some(PolicyId::new(*id)), *text).unwrap())
            .unwrap();
    }
    set
}

/// The raw authorizer's answer, in the engine's terms.
fn raw(set: &PolicySet, r: &CheckRequest) -> (bool, Vec<String>, Vec<EvaluationError>) {
    let request = Request::new(
        EntityUid::from_str(&r.principal).unwrap(),
        EntityUid::from_str(&r.action).unwrap(),
        EntityUid::from_str(&r.resource).unwrap(),
        Context::from_json_value(r.context.clone(), None).unwrap(),
        None,
    )
    .unwrap();
    let entities = Entities::from_json_value(r.entities.clone(), None).unwrap();
    let response = Authorizer::new().is_authorized(&request, set, &entities);
    let d = Decision::from_response(&response, 0);
    (d.allowed, d.determining_policies, d.errors)
}

fn engine_with(cache: bool) -> Authz {
    let authz = Authz::new(Arc::new(MemoryPolicyStore::new()));
    if cache {
        authz.with_decision_cache(Arc::new(MemoryDecisionCache::new(
            10_000,
            Duration::from_secs(60),
        )))
    } else {
        authz
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_raw_cedar(cases in prop::collection::vec(case(), 1..8)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let set = raw_policy_set();
        rt.block_on(async {
            let tenant = TenantId::new();
            let plain = engine_with(false);
            let cached = engine_with(true);
            for engine in [&plain, &cached] {
                let mut v = 0;
                for (id, text) in POLICIES {
                    let doc = PolicyDocument { id: (*id).into(), text: (*text).into(), description: String::new() };
                    v = engine.create_policy(tenant, v, doc).await.unwrap().version;
                }
            }
            for r in &cases {
                let expected = raw(&set, r);
                for (label, engine) in [("cache off", &plain), ("cache on, miss", &cached), ("cache on, hit", &cached)] {
                    let d = engine.is_authorized(tenant, r).await.unwrap();
                    prop_assert_eq!((d.allowed, d.determining_policies, d.errors), expected.clone(), "{} {:?}", label, r);
                }
            }
            Ok(())
        })?;
    }
}

/// The generators reach every kind of outcome: allowed, denied by default, denied by
/// a forbid, and evaluation errors (otherwise the comparison above proves little).
#[test]
fn generated_cases_cover_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let set = raw_policy_set();
    let mut runner = TestRunner::deterministic();
    let (mut allowed, mut denied, mut forbidden, mut errors) = (0, 0, 0, 0);
    for _ in 0..500 {
        let r = case().new_tree(&mut runner).unwrap().current();
        let (ok, reasons, errs) = raw(&set, &r);
        if ok {
            allowed += 1;
        } else if reasons.is_empty() {
            denied += 1;
        } else {
            forbidden += 1;
        }
        if !errs.is_empty() {
            errors += 1;
        }
    }
    assert!(
        allowed > 20 && denied > 20 && forbidden > 5 && errors > 20,
        "{allowed} {denied} {forbidden} {errors}"
    );
}

/// `schema` (Cedar text) compiled as the engine compiles it (with the built-in
/// fragment), and `policies` as one raw Cedar policy set.
fn raw_with_schema(schema: &str, policies: &[(&str, &str)]) -> (cedar_policy::Schema, PolicySet) {
    let schema = tenancy_authz::compile::compile(
        &tenancy_authz::PolicySetDocument {
            schema: Some(tenancy_authz::SchemaDocument::Cedar(schema.into())),
            ..Default::default()
        },
        0,
    )
    .unwrap()
    .schema
    .unwrap();
    let mut set = PolicySet::new();
    for (id, text) in policies {
        set.add(Policy::parse(Some(PolicyId::new(*id)), *text).unwrap())
            .unwrap();
    }
    (schema, set)
}

/// Raw Cedar's answer to `r` with `schema` (request and entities validated against it),
/// in the engine's terms; `Err` if Cedar refuses the request or the entities.
fn raw_with_schema_decides(
    schema: &cedar_policy::Schema,
    set: &PolicySet,
    r: &CheckRequest,
) -> Result<(bool, Vec<String>, Vec<EvaluationError>), String> {
    let action = EntityUid::from_str(&r.action).unwrap();
    let context = match &r.context {
        Value::Null => Context::empty(),
        v => Context::from_json_value(v.clone(), Some((schema, &action)))
            .map_err(|e| e.to_string())?,
    };
    let request = Request::new(
        EntityUid::from_str(&r.principal).unwrap(),
        action,
        EntityUid::from_str(&r.resource).unwrap(),
        context,
        Some(schema),
    )
    .map_err(|e| e.to_string())?;
    let entities =
        Entities::from_json_value(r.entities.clone(), Some(schema)).map_err(|e| e.to_string())?;
    let d = Decision::from_response(
        &Authorizer::new().is_authorized(&request, set, &entities),
        0,
    );
    Ok((d.allowed, d.determining_policies, d.errors))
}

/// An engine (no decision cache) whose `tenant` has `schema` and `policies`.
async fn engine_with_schema(tenant: TenantId, schema: &str, policies: &[(&str, &str)]) -> Authz {
    let engine = engine_with(false);
    let mut v = engine
        .set_schema(
            tenant,
            0,
            Some(tenancy_authz::SchemaDocument::Cedar(schema.into())),
        )
        .await
        .unwrap()
        .version;
    for (id, text) in policies {
        let doc = PolicyDocument {
            id: (*id).into(),
            text: (*text).into(),
            description: String::new(),
        };
        v = engine.create_policy(tenant, v, doc).await.unwrap().version;
    }
    engine
}

/// With a schema, `action in [...]` and action groups are resolved through the
/// schema's action hierarchy: the engine (which evaluates per-action slices of the
/// policy set) must still agree with the raw authorizer on the whole set.
const GROUP_SCHEMA: &str = r#"
entity Folder;
entity Document in [Folder] { owner: User, public: Bool };
action "readOnly";
action "writeAll";
action view in ["readOnly"] appliesTo { principal: User, resource: Document };
action comment in ["readOnly", "writeAll"] appliesTo { principal: User, resource: Document };
action edit in ["writeAll"] appliesTo { principal: User, resource: Document };
action delete appliesTo { principal: User, resource: Document };
"#;

const GROUP_POLICIES: &[(&str, &str)] = &[
    (
        "readers",
        r#"permit(principal in Role::"viewer", action in Action::"readOnly", resource);"#,
    ),
    (
        "writers",
        r#"permit(principal in Role::"editor", action in [Action::"writeAll", Action::"delete"], resource in Folder::"shared");"#,
    ),
    (
        "owners",
        r#"permit(principal, action, resource) when { resource.owner == principal };"#,
    ),
    (
        "no-delete-public",
        r#"forbid(principal, action == Action::"delete", resource) when { resource.public };"#,
    ),
    (
        "comment-public",
        r#"permit(principal, action in [Action::"comment"], resource) when { resource.public };"#,
    ),
];

prop_compose! {
    fn group_case()(principal in prop::sample::select(vec!["alice", "bob", "carol"]),
                    roles in prop::collection::vec(prop::collection::btree_set(prop::sample::select(vec!["viewer", "editor"]), 0..3), 3),
                    action in prop::sample::select(vec!["view", "comment", "edit", "delete"]),
                    owner in prop::sample::select(vec!["alice", "bob", "carol"]),
                    public in any::<bool>(),
                    shared in any::<bool>()) -> CheckRequest {
        let users = ["alice", "bob", "carol"];
        let mut entities: Vec<Value> = users.iter().zip(roles).map(|(u, rs)| json!({
            "uid": uid("User", u), "attrs": {},
            "parents": rs.iter().map(|r| uid("Role", r)).collect::<Vec<_>>() })).collect();
        entities.extend(["viewer", "editor"].iter().map(|r| json!({ "uid": uid("Role", r), "attrs": {}, "parents": [] })));
        entities.push(json!({ "uid": uid("Folder", "shared"), "attrs": {}, "parents": [] }));
        entities.push(json!({ "uid": uid("Document", "d"), "attrs": { "owner": { "__entity": uid("User", owner) }, "public": public },
                              "parents": if shared { vec![uid("Folder", "shared")] } else { vec![] } }));
        CheckRequest {
            principal: format!("User::\"{principal}\""),
            action: format!("Action::\"{action}\""),
            resource: "Document::\"d\"".into(),
            context: Value::Null,
            entities: Value::Array(entities),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_raw_cedar_with_action_groups(cases in prop::collection::vec(group_case(), 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (schema, set) = raw_with_schema(GROUP_SCHEMA, GROUP_POLICIES);
        rt.block_on(async {
            let tenant = TenantId::new();
            let engine = engine_with_schema(tenant, GROUP_SCHEMA, GROUP_POLICIES).await;
            for r in &cases {
                let raw = raw_with_schema_decides(&schema, &set, r).unwrap();
                let d = engine.is_authorized(tenant, r).await.unwrap();
                prop_assert_eq!((d.allowed, d.determining_policies, d.errors), raw, "{:?}", r);
            }
            Ok(())
        })?;
    }
}

/// With a schema, requests and their entities are checked against it before
/// evaluation: the engine reads well-formed ones without Cedar's validation, so for
/// requests and entities right and wrong in many ways it must accept exactly what
/// Cedar accepts, and then decide as Cedar does.
const ABAC_SCHEMA: &str = r#"
type Meta = { created: Long, label?: String };
entity Department;
entity Team in [Department];
entity Document in [Team] {
    owner: User,
    classification: Long,
    labels: Set<String>,
    meta: Meta,
    home?: ipaddr,
    secret?: Bool,
} tags String;
action view, edit appliesTo {
    principal: User,
    resource: Document,
    context: { hour: Long },
};
"#;

const ABAC_POLICIES: &[(&str, &str)] = &[
    (
        "owner",
        r#"permit(principal, action, resource) when { resource.owner == principal };"#,
    ),
    (
        "team",
        r#"permit(principal in Role::"staff", action == Action::"view", resource in Department::"eng") when { resource.classification < 3 };"#,
    ),
    (
        "labels",
        r#"permit(principal, action == Action::"view", resource) when { resource.labels.contains("public") && resource.meta.created < context.hour };"#,
    ),
    (
        "tagged",
        r#"forbid(principal, action == Action::"edit", resource) when { resource.hasTag("frozen") && resource.getTag("frozen") == "yes" };"#,
    ),
    (
        "secret",
        r#"forbid(principal, action, resource) when { resource has secret && resource.secret };"#,
    ),
];

/// Ways to spoil a well-formed document entity: a JSON pointer and the value to put
/// there (`None`: remove it).
fn spoilers() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("/uid/type", Some(json!("User"))),
        ("/uid/type", Some(json!("Unknown"))),
        ("/uid/type", Some(json!("Action"))),
        (
            "/attrs/owner",
            Some(json!({ "__entity": uid("Team", "t") })),
        ),
        ("/attrs/owner", Some(json!("alice"))),
        (
            "/attrs/owner",
            Some(json!({ "__entity": uid("Nope", "x") })),
        ),
        ("/attrs/owner", Some(uid("User", "bob"))),
        ("/attrs/owner", None),
        ("/attrs/classification", Some(json!("2"))),
        ("/attrs/classification", Some(json!(true))),
        ("/attrs/classification", Some(json!(2.5))),
        ("/attrs/labels", Some(json!(["public", 3]))),
        ("/attrs/labels", Some(json!("public"))),
        ("/attrs/labels", Some(json!([]))),
        ("/attrs/meta", Some(json!({ "created": 7, "label": 1 }))),
        ("/attrs/meta", Some(json!({ "label": "x" }))),
        ("/attrs/meta", Some(json!({ "created": 7, "extra": true }))),
        ("/attrs/meta", Some(json!({ "created": 7, "label": "x" }))),
        (
            "/attrs/home",
            Some(json!({ "__extn": { "fn": "decimal", "arg": "1.5" } })),
        ),
        ("/attrs/home", Some(json!("10.0.0.1"))),
        (
            "/attrs/home",
            Some(json!({ "__extn": { "fn": "ip", "arg": "not an ip" } })),
        ),
        ("/attrs/home", None),
        ("/attrs/secret", Some(json!(1))),
        ("/attrs/secret", Some(json!(true))),
        ("/attrs/secret", None),
        ("/attrs/extra", Some(json!("surprise"))),
        ("/parents/0", Some(uid("Department", "eng"))),
        ("/parents/0", Some(uid("Role", "t"))),
        ("/parents/0", Some(uid("Document", "t"))),
        ("/parents/0", Some(uid("Unknown", "t"))),
        ("/tags", Some(json!({ "frozen": "yes" }))),
        ("/tags", Some(json!({ "frozen": 1 }))),
        ("/tags", Some(json!([]))),
    ]
}

prop_compose! {
    /// A well-formed document, or one spoiled in one way (sometimes two).
    fn abac_document()(
        classification in 0_i64..5,
        public in any::<bool>(),
        frozen in prop::option::of(prop::sample::select(vec!["yes", "no"])),
        spoil in prop::collection::vec(prop::sample::select(spoilers()), 0..3),
    ) -> Value {
        let labels = if public { vec!["public"] } else { vec!["internal"] };
        let mut entity = json!({
            "uid": uid("Document", "d"),
            "attrs": {
                "owner": { "__entity": uid("User", "alice") },
                "classification": classification,
                "labels": labels,
                "meta": { "created": 7 },
                "home": { "__extn": { "fn": "ip", "arg": "10.0.0.1" } },
                "secret": false,
            },
            "parents": [uid("Team", "t")],
        });
        if let Some(f) = frozen {
            entity["tags"] = json!({ "frozen": f });
        }
        for (pointer, value) in spoil {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let Some(target) = entity.pointer_mut(parent) else { continue };
            match (target, value) {
                (Value::Object(obj), Some(v)) => { obj.insert(key.into(), v); }
                (Value::Object(obj), None) => { obj.remove(key); }
                (Value::Array(items), Some(v)) => { if let Some(slot) = items.get_mut(0) { *slot = v; } }
                _ => {}
            }
        }
        entity
    }
}

/// One attribute value: right, missing, or of a wrong type.
fn mangled(right: Value, wrong: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    let mut options = vec![Some(right.clone()), Some(right), None];
    options.extend(wrong.into_iter().map(Some));
    prop::sample::select(options)
}

prop_compose! {
    fn abac_case()(doc in abac_document(),
                   email in mangled(json!("a@example.com"), vec![json!(5)]),
                   role in prop::sample::select(vec!["Role", "Role", "Role", "Team"]),
                   action in prop::sample::select(vec!["view", "view", "view", "edit", "edit", "edit", "nope"]),
                   resource in prop::sample::select(vec!["Document::\"d\""; 7].into_iter().chain(["Team::\"t\""]).collect::<Vec<_>>()),
                   hour in 0_i64..24,
                   context in prop::sample::select(vec![0; 10].into_iter().chain(1..=5).collect::<Vec<_>>())) -> CheckRequest {
        let context = match context {
            0 => json!({ "hour": hour }),
            1 => json!({ "hour": hour.to_string() }),
            2 => json!({}),
            3 => json!({ "hour": hour, "extra": true }),
            4 => json!({ "hour": { "__extn": { "fn": "decimal", "arg": "1.0" } } }),
            _ => Value::Null,
        };
        let mut attrs = serde_json::Map::new();
        if let Some(e) = email { attrs.insert("email".into(), e); }
        let entities = vec![
            json!({ "uid": uid("User", "alice"), "attrs": attrs, "parents": [uid(role, "staff")] }),
            json!({ "uid": uid("Team", "t"), "attrs": {}, "parents": [uid("Department", "eng")] }),
            doc,
        ];
        CheckRequest {
            principal: "User::\"alice\"".into(),
            action: format!("Action::\"{action}\""),
            resource: resource.into(),
            context,
            entities: Value::Array(entities),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_accepts_and_decides_as_raw_cedar_with_a_schema(cases in prop::collection::vec(abac_case(), 1..16)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (schema, set) = raw_with_schema(ABAC_SCHEMA, ABAC_POLICIES);
        rt.block_on(async {
            let tenant = TenantId::new();
            let engine = engine_with_schema(tenant, ABAC_SCHEMA, ABAC_POLICIES).await;
            for r in &cases {
                let raw = raw_with_schema_decides(&schema, &set, r);
                let ours = engine.is_authorized(tenant, r).await;
                match (raw, ours) {
                    (Ok(raw), Ok(d)) => prop_assert_eq!((d.allowed, d.determining_policies, d.errors), raw, "{:?}", r),
                    (Err(_), Err(e)) => prop_assert_eq!(e.kind(), tenancy_core::ErrorKind::InvalidInput, "{:?}", r),
                    (raw, ours) => prop_assert!(false, "Cedar {:?}, engine {:?}, for {:?}", raw.map(|_| ()), ours.map(|_| ()), r),
                }
            }
            Ok(())
        })?;
    }
}

/// The generator above makes both entities Cedar accepts and entities it refuses, and
/// accepted ones that are allowed and denied.
#[test]
fn abac_cases_cover_acceptance_and_refusal() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let (schema, set) = raw_with_schema(ABAC_SCHEMA, ABAC_POLICIES);
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..500 {
        let r = abac_case().new_tree(&mut runner).unwrap().current();
        match raw_with_schema_decides(&schema, &set, &r) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted > 50 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
