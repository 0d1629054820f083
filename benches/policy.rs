//! Policy evaluation benchmarks: the engine's decisions against raw Cedar on the same
//! generated RBAC + ABAC policy set, request and entities.
//!
//! Groups:
//! - `check_vs_raw`: one check against 50 policies, through the engine (prepared and
//!   JSON paths) and through `cedar_policy::Authorizer` directly, with the parts of
//!   each path timed alone.
//! - `tenants`: the same check with 1 to 10,000 tenants of 50 policies each loaded and
//!   compiled, on a tenant drawn at random per iteration.
//! - `policy_count`: 10, 100 and 1,000 policies in one tenant, engine and raw.
//! - `decision_cache`: a repeated request answered by the decision cache, against raw.
//!
//! `sliced_prepared` lines time `CompiledPolicies::decide` (only the action and
//! principal slices a request can match), called as the engine's prepared path would.
//!
//! After each group, a `paired …` line on stderr gives the ratio of the compared
//! routines timed interleaved (A B B A blocks), which stays fair while other processes
//! load the machine; criterion's own lines time each routine in turn.
//!
//! Run with `cargo bench --bench policy`; results and how to read them are in
//! `docs/benchmarks.md`.
#![expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails must stop loudly"
)]

use std::cell::Cell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, Request, Schema,
};
use criterion::{BenchmarkId, Criterion, criterion_main};
use serde_json::{Value, json};
use tenancy::TenantId;
use tenancy::authz::memory::MemoryPolicyStore;
use tenancy::authz::{
    Authz, AuthzConfig, CheckRequest, CompiledPolicies, Decision, DecisionCache, DecisionKey,
    MemoryDecisionCache, PolicyDocument, PolicyStore, PolicyVersion, SchemaDocument,
};
use tokio::runtime::Runtime;

// ----- the generated workload -----

/// The tenant schema (merged by the engine with its built-in `User in [Role]`).
const SCHEMA: &str = r#"
type RequestContext = {
    ip: __cedar::ipaddr,
    hour: Long,
    mfa: Bool,
    device_trusted: Bool,
};
entity Organization { plan: String, region: String };
entity Project in [Organization] {
    owner: User, members: Set<User>, archived: Bool, region: String,
};
entity Folder in [Folder, Project] { owner: User, classification: Long };
entity Document in [Folder, Project] {
    owner: User, editors: Set<User>, viewers: Set<User>, classification: Long,
    tags: Set<String>, public: Bool, locked: Bool, size_bytes: Long, region: String,
};
action read;
action view, comment, download in [read]
    appliesTo { principal: User, resource: [Document, Folder, Project], context: RequestContext };
action edit, share, delete, export
    appliesTo { principal: User, resource: [Document, Folder, Project], context: RequestContext };
action administer
    appliesTo { principal: User, resource: [Organization, Project], context: RequestContext };
"#;

const ROLES: usize = 16;
const PROJECTS: usize = 8;
const TAGS: usize = 12;
const ORGS: usize = 4;
const DEPARTMENTS: usize = 6;
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// `n` policies cycling through ten shapes (two of them `forbid`s): role membership,
/// resource hierarchy, resource and principal attributes, context (network, time,
/// MFA). Deterministic: policy `i` is the same text for every `n` and every tenant.
fn policies(n: usize) -> Vec<PolicyDocument> {
    policies_from(0, n)
}

/// Policies `start..start + n` of the same sequence: tenant `k` of the `tenants`
/// group holds policies `50k..50k + 50`, the same shapes with other roles, projects,
/// tags and limits, so no two tenants hold the same texts.
fn policies_from(start: usize, n: usize) -> Vec<PolicyDocument> {
    (start..start + n).map(policy).collect()
}

fn policy(i: usize) -> PolicyDocument {
    let round = i / 10;
    let role = (i * 5 + round) % ROLES;
    let project = (i * 3 + round) % PROJECTS;
    let tag = (i + round) % TAGS;
    let org = round % ORGS;
    let department = round % DEPARTMENTS;
    let region = REGIONS.get(round % REGIONS.len()).copied().unwrap_or("eu");
    let (id, text) = match i % 10 {
        0 => (
            "project-read",
            format!(
                r#"permit(principal in Role::"role-{role}", action in Action::"read", resource in Project::"proj-{project}");"#
            ),
        ),
        1 => (
            "role-edit",
            format!(
                r#"permit(principal in Role::"role-{role}", action in [Action::"edit", Action::"comment"], resource is Document)
when {{ resource.classification <= {} && !resource.locked }};"#,
                round % 4
            ),
        ),
        2 => (
            "tag-view",
            format!(
                r#"permit(principal, action == Action::"view", resource is Document)
when {{ resource.tags.contains("tag-{tag}") && resource.classification < 3 }};"#
            ),
        ),
        3 => (
            "office-download",
            format!(
                r#"permit(principal in Role::"role-{role}", action == Action::"download", resource is Document)
when {{ context.ip.isInRange(ip("10.{}.0.0/16")) && context.hour >= 8 && context.hour < 18 }};"#,
                round % 256
            ),
        ),
        4 => (
            "department-region",
            format!(
                r#"permit(principal, action in [Action::"view", Action::"edit"], resource is Document)
when {{ principal has email && principal.email like "*@dept-{department}.example.com" && resource.region == "{region}" }};"#
            ),
        ),
        5 => (
            "owner-editor",
            format!(
                r#"permit(principal, action in [Action::"view", Action::"edit", Action::"share"], resource is Document in Project::"proj-{project}")
when {{ (resource.owner == principal || resource.editors.contains(principal)) && context.mfa && resource.size_bytes < {} }};"#,
                16_384_u64 << (round % 4)
            ),
        ),
        6 => (
            "forbid-locked",
            format!(
                r#"forbid(principal, action in [Action::"delete", Action::"edit"], resource is Document)
when {{ resource.locked || resource.tags.contains("legal-hold-{tag}") }};"#
            ),
        ),
        7 => (
            "org-trusted-device",
            format!(
                r#"permit(principal in Role::"role-{role}", action, resource in Organization::"org-{org}")
when {{ context.device_trusted && principal has email_verified && principal.email_verified }};"#
            ),
        ),
        8 => (
            "folder-view",
            format!(
                r#"permit(principal, action == Action::"view", resource is Folder)
when {{ resource.owner == principal || resource.classification == {} }};"#,
                round % 3
            ),
        ),
        _ => (
            "forbid-export",
            format!(
                r#"forbid(principal, action == Action::"export", resource is Document)
unless {{ context.mfa && context.device_trusted && resource.classification < {} }};"#,
                1 + round % 3
            ),
        ),
    };
    PolicyDocument {
        id: format!("{id}-{i}"),
        text,
        description: format!("generated policy {i} ({id})"),
    }
}

const PRINCIPAL: &str = r#"User::"alice""#;
const ACTION: &str = r#"Action::"view""#;
const RESOURCE: &str = r#"Document::"doc-1""#;

fn uid(kind: &str, id: &str) -> Value {
    json!({ "type": kind, "id": id })
}

fn entity_ref(kind: &str, id: &str) -> Value {
    json!({ "__entity": { "type": kind, "id": id } })
}

/// The request's context: office network, office hours, MFA, trusted device.
fn context() -> Value {
    json!({
        "ip": { "__extn": { "fn": "ip", "arg": "10.1.2.3" } },
        "hour": 10,
        "mfa": true,
        "device_trusted": true,
    })
}

/// What a gateway would send along: the principal with its roles, the document with
/// its folder / project / organization ancestry, and the people it mentions.
fn entities() -> Value {
    let role = |id: &str| json!({ "uid": uid("Role", id), "attrs": {}, "parents": [] });
    json!([
        {
            "uid": uid("User", "alice"),
            "attrs": {
                "email": "alice@dept-0.example.com",
                "email_verified": true,
                "display_name": "Alice",
            },
            "parents": [uid("Role", "role-1"), uid("Role", "role-3"), uid("Role", "role-9")],
        },
        {
            "uid": uid("User", "bob"),
            "attrs": { "email": "bob@dept-1.example.com" },
            "parents": [uid("Role", "role-2")],
        },
        { "uid": uid("User", "carol"), "attrs": {}, "parents": [] },
        role("role-1"),
        role("role-2"),
        role("role-3"),
        role("role-9"),
        {
            "uid": uid("Document", "doc-1"),
            "attrs": {
                "owner": entity_ref("User", "bob"),
                "editors": [entity_ref("User", "alice")],
                "viewers": [entity_ref("User", "carol")],
                "classification": 1,
                "tags": ["tag-1", "finance"],
                "public": false,
                "locked": false,
                "size_bytes": 48_213,
                "region": "eu",
            },
            "parents": [uid("Folder", "folder-7"), uid("Project", "proj-2")],
        },
        {
            "uid": uid("Folder", "folder-7"),
            "attrs": { "owner": entity_ref("User", "bob"), "classification": 1 },
            "parents": [uid("Folder", "folder-1")],
        },
        {
            "uid": uid("Folder", "folder-1"),
            "attrs": { "owner": entity_ref("User", "bob"), "classification": 0 },
            "parents": [uid("Project", "proj-2")],
        },
        {
            "uid": uid("Project", "proj-2"),
            "attrs": {
                "owner": entity_ref("User", "bob"),
                "members": [entity_ref("User", "alice"), entity_ref("User", "bob")],
                "archived": false,
                "region": "eu",
            },
            "parents": [uid("Organization", "org-0")],
        },
        {
            "uid": uid("Organization", "org-0"),
            "attrs": { "plan": "enterprise", "region": "eu" },
            "parents": [],
        },
    ])
}

fn check_request() -> CheckRequest {
    CheckRequest {
        principal: PRINCIPAL.to_owned(),
        action: ACTION.to_owned(),
        resource: RESOURCE.to_owned(),
        context: context(),
        entities: entities(),
    }
}

/// The request and entities in Cedar's typed form, built once against `schema` (the
/// tenant's merged schema): what `is_authorized_prepared` and raw Cedar both take.
fn prepared(schema: &Schema) -> (Request, Entities) {
    let uid = |text: &str| EntityUid::from_str(text).expect("entity uid");
    let action = uid(ACTION);
    let context =
        Context::from_json_value(context(), Some((schema, &action))).expect("request context");
    let request = Request::new(uid(PRINCIPAL), action, uid(RESOURCE), context, Some(schema))
        .expect("request valid for the schema");
    let entities = Entities::from_json_value(entities(), Some(schema)).expect("entities");
    (request, entities)
}

/// Raw Cedar's side of the JSON path: everything the engine does per JSON request
/// (parse uids, context, entities against the schema), minus the engine.
fn raw_from_json(schema: &Schema, policies: &PolicySet, request: &CheckRequest) -> CedarDecision {
    let uid = |text: &str| EntityUid::from_str(text).expect("entity uid");
    let action = uid(&request.action);
    let context = Context::from_json_value(request.context.clone(), Some((schema, &action)))
        .expect("request context");
    let cedar_request = Request::new(
        uid(&request.principal),
        action,
        uid(&request.resource),
        context,
        Some(schema),
    )
    .expect("request valid for the schema");
    let entities =
        Entities::from_json_value(request.entities.clone(), Some(schema)).expect("entities");
    Authorizer::new()
        .is_authorized(&cedar_request, policies, &entities)
        .decision()
}

/// The same documents compiled by Cedar alone, without the engine.
fn raw_policy_set(documents: &[PolicyDocument]) -> PolicySet {
    let mut set = PolicySet::new();
    for d in documents {
        let policy =
            Policy::parse(Some(PolicyId::new(&d.id)), &d.text).expect("generated policy parses");
        set.add(policy).expect("unique policy id");
    }
    set
}

/// What `is_authorized_prepared` will do once `Authz::evaluate` calls
/// `CompiledPolicies::decide` (the action and principal slices built at compile time)
/// instead of evaluating the whole set: the lookup, the sliced decision, a `Decision`.
async fn sliced_prepared(
    authz: &Authz,
    authorizer: &Authorizer,
    tenant: TenantId,
    request: &Request,
    entities: &Entities,
) -> tenancy::Result<Decision> {
    let compiled = authz.compiled(tenant).await?;
    let response = compiled.decide(authorizer, request, entities);
    Ok(Decision::from_response(&response, compiled.version))
}

/// Raw Cedar's decision on `set` as a `Decision` (policy ids sorted), to compare.
fn raw_decision(set: &PolicySet, request: &Request, entities: &Entities) -> Decision {
    let response = Authorizer::new().is_authorized(request, set, entities);
    Decision::from_response(&response, 0)
}

// ----- loading tenants -----

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An engine that keeps up to 10,000 tenants compiled (the default, stated).
fn engine(store: Arc<MemoryPolicyStore>) -> Authz {
    Authz::with_config(
        store,
        AuthzConfig {
            compiled_capacity: 10_000,
            ..AuthzConfig::default()
        },
    )
}

/// Loads `documents` into `tenant` the way an administrator would: one `set_schema`,
/// then one `create_policy` per policy (each write compiles and validates the set).
async fn load_by_writes(authz: &Authz, tenant: TenantId, documents: &[PolicyDocument]) {
    let mut version = authz
        .set_schema(tenant, 0, Some(SchemaDocument::Cedar(SCHEMA.to_owned())))
        .await
        .expect("schema accepted")
        .version;
    for d in documents {
        version = authz
            .create_policy(tenant, version, d.clone())
            .await
            .expect("generated policy accepted")
            .version;
    }
}

/// Loads `documents` into `tenant` as one version: appended to the store the way a
/// bulk import or another process would write it, then compiled (and strictly
/// validated) by the engine's own loading path on first use. `schema_version` is a
/// stamped version holding the schema (see [`schema_version`]).
async fn load_as_one_version(
    authz: &Authz,
    store: &MemoryPolicyStore,
    tenant: TenantId,
    schema_version: &PolicyVersion,
    documents: &[PolicyDocument],
) -> Arc<CompiledPolicies> {
    let mut version = schema_version.clone();
    version.tenant_id = tenant;
    version.version = 1;
    version.change = format!("import {} policies", documents.len());
    version.document.policies = documents
        .iter()
        .map(|d| (d.id.clone(), d.clone()))
        .collect();
    store
        .append(tenant, &version)
        .await
        .expect("first version appended");
    let compiled = authz.compiled(tenant).await.expect("stored set compiles");
    assert_eq!(compiled.version, 1, "compiled from the store");
    compiled
}

/// A first version holding only the schema, stamped by a scratch engine's
/// `set_schema`. The engine under test has never seen it.
async fn schema_version() -> PolicyVersion {
    let scratch = Authz::new(Arc::new(MemoryPolicyStore::new()));
    let tenant = TenantId::new();
    scratch
        .set_schema(tenant, 0, Some(SchemaDocument::Cedar(SCHEMA.to_owned())))
        .await
        .expect("schema accepted");
    scratch.current(tenant).await.expect("current version")
}

/// Everything one tenant's benchmark needs.
struct Fixture {
    rt: Runtime,
    authz: Authz,
    tenant: TenantId,
    raw: PolicySet,
    schema: Schema,
    request: Request,
    entities: Entities,
    json: CheckRequest,
}

impl Fixture {
    fn new(n: usize, by_writes: bool) -> Self {
        let rt = runtime();
        let store = Arc::new(MemoryPolicyStore::new());
        let authz = engine(store.clone());
        let tenant = TenantId::new();
        let documents = policies(n);
        let started = Instant::now();
        rt.block_on(async {
            if by_writes {
                load_by_writes(&authz, tenant, &documents).await;
            } else {
                let schema_only = schema_version().await;
                load_as_one_version(&authz, &store, tenant, &schema_only, &documents).await;
            }
        });
        let loaded = started.elapsed();
        let compiled = rt
            .block_on(authz.compiled(tenant))
            .expect("compiled policies");
        let schema = compiled.schema.clone().expect("tenant has a schema");
        let (request, entities) = prepared(&schema);
        let fixture = Self {
            rt,
            authz,
            tenant,
            raw: raw_policy_set(&documents),
            schema,
            request,
            entities,
            json: check_request(),
        };
        let decision = fixture.check_prepared();
        let candidates = compiled
            .candidate_ids(&fixture.request, &fixture.entities)
            .len();
        eprintln!(
            "setup: {n} policies loaded {} in {loaded:.2?}; decision allowed={} by {} \
             policies; the slices evaluate {candidates} of the {n}",
            if by_writes {
                "by one write each"
            } else {
                "as one version"
            },
            decision.allowed,
            decision.determining_policies.len(),
        );
        fixture.assert_paths_agree(&decision);
        fixture
    }

    fn check_prepared(&self) -> Decision {
        self.rt
            .block_on(
                self.authz
                    .is_authorized_prepared(self.tenant, &self.request, &self.entities),
            )
            .expect("prepared check")
    }

    /// Every path must reach the same decision, or the comparison means nothing.
    fn assert_paths_agree(&self, ours: &Decision) {
        let raw = Authorizer::new().is_authorized(&self.request, &self.raw, &self.entities);
        let mut raw_reasons: Vec<String> = raw
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        raw_reasons.sort();
        assert!(ours.allowed, "the generated request should be allowed");
        assert!(
            ours.errors.is_empty(),
            "evaluation errors: {:?}",
            ours.errors
        );
        assert_eq!(raw.decision(), CedarDecision::Allow, "raw decision");
        assert_eq!(
            ours.determining_policies, raw_reasons,
            "determining policies"
        );
        let sliced = self
            .rt
            .block_on(sliced_prepared(
                &self.authz,
                &Authorizer::new(),
                self.tenant,
                &self.request,
                &self.entities,
            ))
            .expect("sliced check");
        assert_eq!(&sliced, ours, "sliced decision");
        let json = self
            .rt
            .block_on(self.authz.is_authorized(self.tenant, &self.json))
            .expect("json check");
        assert_eq!(&json, ours, "json path decision");
        assert_eq!(
            raw_from_json(&self.schema, &self.raw, &self.json),
            CedarDecision::Allow,
            "raw json decision"
        );
    }
}

/// xorshift64: a cheap, deterministic tenant picker (a few ns per draw).
struct Picker(u64);

impl Picker {
    fn new() -> Self {
        Self::with_seed(0x9E37_79B9_7F4A_7C15)
    }

    fn with_seed(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn index(&mut self, len: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % len.max(1) as u64) as usize
    }
}

// ----- paired ratios -----

/// Whether criterion only checks that the benchmarks run (`cargo test --benches`,
/// `cargo bench -- --test`): as criterion decides it, without `--bench` or with `--test`.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// Whether this run measures (not a test run, `--list` or `--profile-time`): the paired
/// ratios below only run then, and only for benchmarks the filter selected (`ran`).
fn measuring(ran: &Cell<bool>) -> bool {
    ran.get()
        && !test_mode()
        && !std::env::args().any(|a| matches!(a.as_str(), "--list" | "--profile-time"))
}

/// Two routines timed interleaved, so that load from other processes (a shared
/// 2-core machine) hits both alike: `ROUNDS` rounds of blocks A B B A, each block
/// about `BLOCK` long; per round the ratio A / B of the mean call times.
struct Paired {
    a_ns: f64,
    b_ns: f64,
    ratio: f64,
    ratio_p10: f64,
    ratio_p90: f64,
}

const ROUNDS: usize = 40;
const BLOCK: Duration = Duration::from_millis(5);

impl Paired {
    fn measure<FA, FB>(rt: &Runtime, mut a: impl FnMut() -> FA, mut b: impl FnMut() -> FB) -> Self
    where
        FA: Future,
        FB: Future,
    {
        rt.block_on(async {
            let calls_a = calls_per_block(&mut a).await;
            let calls_b = calls_per_block(&mut b).await;
            let mut a_ns = Vec::with_capacity(ROUNDS);
            let mut b_ns = Vec::with_capacity(ROUNDS);
            let mut ratios = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let a1 = block(&mut a, calls_a).await;
                let b1 = block(&mut b, calls_b).await;
                let b2 = block(&mut b, calls_b).await;
                let a2 = block(&mut a, calls_a).await;
                let (ta, tb) = ((a1 + a2) / 2.0, (b1 + b2) / 2.0);
                a_ns.push(ta);
                b_ns.push(tb);
                ratios.push(ta / tb);
            }
            Self {
                a_ns: quantile(&mut a_ns, 0.5),
                b_ns: quantile(&mut b_ns, 0.5),
                ratio: quantile(&mut ratios, 0.5),
                ratio_p10: quantile(&mut ratios, 0.1),
                ratio_p90: quantile(&mut ratios, 0.9),
            }
        })
    }

    /// Prints one line, with the goal `ratio <= goal` if there is one.
    fn report(&self, name: &str, a: &str, b: &str, goal: Option<f64>) {
        let verdict = goal.map_or_else(String::new, |g| {
            let met = if self.ratio <= g { "met" } else { "MISSED" };
            format!("  goal <= {g}: {met}")
        });
        eprintln!(
            "paired {name}: {a} {} / {b} {} = {:.3} (p10 {:.3}, p90 {:.3}){verdict}",
            format_ns(self.a_ns),
            format_ns(self.b_ns),
            self.ratio,
            self.ratio_p10,
            self.ratio_p90,
        );
    }
}

/// How many calls fill about one `BLOCK` (at least one).
async fn calls_per_block<F: Future>(routine: &mut impl FnMut() -> F) -> usize {
    let started = Instant::now();
    let mut calls = 0_usize;
    while started.elapsed() < BLOCK / 5 || calls < 3 {
        black_box(routine().await);
        calls += 1;
    }
    (calls * 5).max(1)
}

/// Mean nanoseconds per call over `calls` calls.
async fn block<F: Future>(routine: &mut impl FnMut() -> F, calls: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..calls {
        black_box(routine().await);
    }
    started.elapsed().as_secs_f64() * 1e9 / calls as f64
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let last = values.len().saturating_sub(1);
    let index = ((last as f64) * q).round() as usize;
    values.get(index.min(last)).copied().unwrap_or(f64::NAN)
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

// ----- the groups -----

/// One check, 50 policies: the engine's prepared and JSON paths against raw Cedar on
/// the same request, entities and policy texts.
fn check_vs_raw(c: &mut Criterion) {
    let f = Fixture::new(50, true);
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("check_vs_raw");
    group.bench_function("raw_prepared", |b| {
        b.to_async(&f.rt)
            .iter(|| async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) });
    });
    let (ran_prepared, ran_json) = (Cell::new(false), Cell::new(false));
    group.bench_function("ours_prepared", |b| {
        ran_prepared.set(true);
        b.to_async(&f.rt).iter(|| async {
            f.authz
                .is_authorized_prepared(f.tenant, &f.request, &f.entities)
                .await
        });
    });
    group.bench_function("sliced_prepared", |b| {
        b.to_async(&f.rt)
            .iter(|| sliced_prepared(&f.authz, &authorizer, f.tenant, &f.request, &f.entities));
    });
    // The engine's part of the prepared path: finding the compiled set, and turning
    // Cedar's response into a `Decision` (sorted policy ids).
    group.bench_function("prepared_part/lookup", |b| {
        b.to_async(&f.rt)
            .iter(|| async { f.authz.compiled(f.tenant).await.map(|c| c.version) });
    });
    let response = authorizer.is_authorized(&f.request, &f.raw, &f.entities);
    group.bench_function("prepared_part/decision_from_response", |b| {
        b.iter(|| Decision::from_response(&response, 1));
    });
    group.bench_function("raw_json", |b| {
        b.to_async(&f.rt)
            .iter(|| async { raw_from_json(&f.schema, &f.raw, &f.json) });
    });
    group.bench_function("ours_json", |b| {
        ran_json.set(true);
        b.to_async(&f.rt)
            .iter(|| async { f.authz.is_authorized(f.tenant, &f.json).await });
    });
    // Where the JSON path's time goes: Cedar's JSON parser on the entities, in one
    // call (as `raw_json` does) or one entity at a time (the engine's fallback for
    // entities not in Cedar's explicit format), and the decision cache key (computed
    // only when a decision cache is configured).
    group.bench_function("json_part/entities_one_shot", |b| {
        b.iter(|| Entities::from_json_value(f.json.entities.clone(), Some(&f.schema)).ok());
    });
    group.bench_function("json_part/entities_per_entity", |b| {
        b.iter(|| entities_per_entity(&f.schema, &f.json.entities));
    });
    group.bench_function("json_part/decision_key", |b| {
        b.iter(|| DecisionKey::new(f.tenant, 1, &f.json));
    });
    group.finish();
    if measuring(&ran_prepared) {
        Paired::measure(
            &f.rt,
            || {
                f.authz
                    .is_authorized_prepared(f.tenant, &f.request, &f.entities)
            },
            || async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) },
        )
        .report("check_vs_raw prepared", "ours", "raw", Some(1.1));
        Paired::measure(
            &f.rt,
            || sliced_prepared(&f.authz, &authorizer, f.tenant, &f.request, &f.entities),
            || async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) },
        )
        .report("check_vs_raw sliced", "sliced", "raw", Some(1.1));
    }
    if measuring(&ran_json) {
        Paired::measure(
            &f.rt,
            || f.authz.is_authorized(f.tenant, &f.json),
            || async { raw_from_json(&f.schema, &f.raw, &f.json) },
        )
        .report("check_vs_raw json", "ours", "raw", None);
    }
}

/// Entities parsed by Cedar's JSON parser one at a time, then gathered into a set
/// (with the schema's action entities).
fn entities_per_entity(schema: &Schema, json: &Value) -> Option<Entities> {
    let parsed = json
        .as_array()?
        .iter()
        .map(|item| Entity::from_json_value(item.clone(), Some(schema)).ok())
        .collect::<Option<Vec<_>>>()?;
    Entities::from_entities(parsed, Some(schema)).ok()
}

/// Tenants of 50 policies each (tenant `k` holds policies `50k..50k + 50`), all
/// compiled and cached, grown on demand.
struct TenantPool {
    rt: Runtime,
    store: Arc<MemoryPolicyStore>,
    authz: Authz,
    /// An engine holding only the first tenant (the same 50 policies): the 1-tenant
    /// baseline of the same-tenant comparison.
    single: Authz,
    schema_version: PolicyVersion,
    tenants: Vec<TenantId>,
    sets: Vec<Arc<CompiledPolicies>>,
    request: Request,
    entities: Entities,
}

impl TenantPool {
    fn new() -> Self {
        let rt = runtime();
        let store = Arc::new(MemoryPolicyStore::new());
        let authz = engine(store.clone());
        let first = TenantId::new();
        let single_store = Arc::new(MemoryPolicyStore::new());
        let single = engine(single_store.clone());
        let (schema_version, compiled) = rt.block_on(async {
            let schema_only = schema_version().await;
            let compiled =
                load_as_one_version(&authz, &store, first, &schema_only, &policies(50)).await;
            load_as_one_version(&single, &single_store, first, &schema_only, &policies(50)).await;
            (schema_only, compiled)
        });
        let schema = compiled.schema.clone().expect("tenant has a schema");
        let (request, entities) = prepared(&schema);
        Self {
            rt,
            store,
            authz,
            single,
            schema_version,
            tenants: vec![first],
            sets: vec![compiled],
            request,
            entities,
        }
    }

    /// Loads tenants until there are `count` (at most 100 in a test run, which only
    /// checks that the benchmarks run: 10,000 tenants take a minute and 5 GB).
    fn grow(&mut self, count: usize) {
        let count = if test_mode() { count.min(100) } else { count };
        if self.tenants.len() >= count {
            return;
        }
        let started = Instant::now();
        self.rt.block_on(async {
            while self.tenants.len() < count {
                let tenant = TenantId::new();
                let documents = policies_from(50 * self.tenants.len(), 50);
                let compiled = load_as_one_version(
                    &self.authz,
                    &self.store,
                    tenant,
                    &self.schema_version,
                    &documents,
                )
                .await;
                self.sets.push(compiled);
                self.tenants.push(tenant);
            }
        });
        let mut allowed = 0;
        let authorizer = Authorizer::new();
        for set in &self.sets {
            let raw = raw_decision(&set.policies, &self.request, &self.entities);
            let sliced =
                Decision::from_response(&set.decide(&authorizer, &self.request, &self.entities), 0);
            assert_eq!(sliced, raw, "sliced and whole-set decisions differ");
            allowed += usize::from(raw.allowed);
        }
        eprintln!(
            "setup: {count} tenants of 50 policies loaded and compiled (+{:.2?}); the request \
             is allowed in {allowed}; resident {}",
            started.elapsed(),
            resident_memory(),
        );
    }

    /// A tenant drawn at random among the first `count` (or all, if fewer are loaded).
    fn draw(&self, picker: &mut Picker, count: usize) -> Option<(TenantId, &CompiledPolicies)> {
        let index = picker.index(count.min(self.tenants.len()));
        Some((*self.tenants.get(index)?, self.sets.get(index)?))
    }
}

/// The prepared check with 1 to 10,000 tenants of 50 policies loaded and compiled,
/// on a tenant drawn at random per iteration. `raw_random` runs raw Cedar on the
/// same drawn tenant's compiled set: the part of any slowdown that is Cedar's data
/// leaving the CPU caches rather than the engine's lookup. `lookup` is the engine's
/// part alone: finding the drawn tenant's compiled set (and, once a second, asking
/// the store whether it is still current). Tenants are loaded only when a benchmark
/// of that size runs, so a filtered run stays cheap.
fn tenants(c: &mut Criterion) {
    const COUNTS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
    let mut pool = TenantPool::new();
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("tenants");
    // One picker per benchmark, kept across criterion's samples: restarting the draw
    // every sample would revisit the same few tenants and keep them warm.
    let mut pickers = [1_u64, 2, 3, 4].map(|i| Picker::with_seed(0x9E37_79B9_7F4A_7C15 ^ i));
    let ran = COUNTS.map(|_| Cell::new(false));
    for (count, ran) in COUNTS.into_iter().zip(&ran) {
        let [ours, raw, lookup, sliced] = &mut pickers;
        group.bench_with_input(BenchmarkId::new("ours_prepared", count), &count, |b, _| {
            ran.set(true);
            pool.grow(count);
            b.to_async(&pool.rt)
                .iter(|| ours_on_drawn(&pool, ours, count));
        });
        group.bench_with_input(BenchmarkId::new("raw_random", count), &count, |b, _| {
            pool.grow(count);
            b.to_async(&pool.rt)
                .iter(|| raw_on_drawn(&pool, &authorizer, raw, count));
        });
        group.bench_with_input(
            BenchmarkId::new("sliced_prepared", count),
            &count,
            |b, _| {
                pool.grow(count);
                b.to_async(&pool.rt)
                    .iter(|| sliced_on_drawn(&pool, &authorizer, sliced, count));
            },
        );
        group.bench_with_input(BenchmarkId::new("lookup", count), &count, |b, _| {
            pool.grow(count);
            let p = &pool;
            b.to_async(&p.rt).iter(|| {
                let drawn = p.draw(lookup, count);
                async move {
                    match drawn {
                        Some((t, _)) => Some(p.authz.compiled(t).await.map(|c| c.version)),
                        None => None,
                    }
                }
            });
        });
    }
    group.finish();
    let p = &pool;
    for (count, _) in COUNTS.into_iter().zip(&ran).filter(|(_, r)| measuring(r)) {
        // Independent draws on each side, so neither side finds the tenants the
        // other just warmed.
        let (mut a, mut b) = (Picker::new(), Picker::with_seed(0x2545_F491_4F6C_DD1D));
        Paired::measure(
            &p.rt,
            || ours_on_drawn(p, &mut a, count),
            || raw_on_drawn(p, &authorizer, &mut b, count),
        )
        .report(&format!("tenants {count}"), "ours", "raw", None);
        let (mut a, mut b) = (Picker::new(), Picker::new());
        Paired::measure(
            &p.rt,
            || raw_on_drawn(p, &authorizer, &mut a, count),
            || raw_on_drawn(p, &authorizer, &mut b, 1),
        )
        .report(
            &format!("tenants raw {count} vs 1"),
            &format!("raw/{count}"),
            "raw/1",
            None,
        );
        let (mut a, mut b) = (Picker::new(), Picker::new());
        let goal = (count == 10_000).then_some(1.2);
        Paired::measure(
            &p.rt,
            || ours_on_drawn(p, &mut a, count),
            || ours_on_drawn(p, &mut b, 1),
        )
        .report(
            &format!("tenants {count} vs 1"),
            &format!("ours/{count}"),
            "ours/1",
            goal,
        );
        // The same check (one tenant, the same request) answered by an engine holding
        // `count` tenants and by one holding only that tenant: what the number of
        // tenants loaded costs the engine itself.
        let first = p.tenants.first().copied().expect("a first tenant");
        Paired::measure(
            &p.rt,
            || {
                p.authz
                    .is_authorized_prepared(first, &p.request, &p.entities)
            },
            || {
                p.single
                    .is_authorized_prepared(first, &p.request, &p.entities)
            },
        )
        .report(
            &format!("tenants same-tenant {count} vs 1"),
            &format!("ours/{count} loaded"),
            "ours/1 loaded",
            goal,
        );
        let (mut a, mut b) = (Picker::new(), Picker::new());
        Paired::measure(
            &p.rt,
            || sliced_on_drawn(p, &authorizer, &mut a, count),
            || sliced_on_drawn(p, &authorizer, &mut b, 1),
        )
        .report(
            &format!("tenants sliced {count} vs 1"),
            &format!("sliced/{count}"),
            "sliced/1",
            goal,
        );
    }
}

/// The engine's prepared check on a tenant drawn among the first `count`.
fn ours_on_drawn<'a>(
    pool: &'a TenantPool,
    picker: &mut Picker,
    count: usize,
) -> impl Future<Output = Option<tenancy::Result<Decision>>> + use<'a> {
    let drawn = pool.draw(picker, count).map(|(t, _)| t);
    async move {
        match drawn {
            Some(t) => Some(
                pool.authz
                    .is_authorized_prepared(t, &pool.request, &pool.entities)
                    .await,
            ),
            None => None,
        }
    }
}

/// The sliced prepared check (see [`sliced_prepared`]) on a drawn tenant.
fn sliced_on_drawn<'a>(
    pool: &'a TenantPool,
    authorizer: &'a Authorizer,
    picker: &mut Picker,
    count: usize,
) -> impl Future<Output = Option<tenancy::Result<Decision>>> + use<'a> {
    let drawn = pool.draw(picker, count).map(|(t, _)| t);
    async move {
        match drawn {
            Some(t) => Some(
                sliced_prepared(&pool.authz, authorizer, t, &pool.request, &pool.entities).await,
            ),
            None => None,
        }
    }
}

/// Raw Cedar on the compiled set of a tenant drawn among the first `count`.
fn raw_on_drawn<'a>(
    pool: &'a TenantPool,
    authorizer: &'a Authorizer,
    picker: &mut Picker,
    count: usize,
) -> impl Future<Output = Option<cedar_policy::Response>> + use<'a> {
    let drawn = pool.draw(picker, count).map(|(_, s)| s);
    async move { drawn.map(|s| authorizer.is_authorized(&pool.request, &s.policies, &pool.entities)) }
}

/// The process's resident memory, from /proc (Linux), for the setup log.
fn resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// 10, 100 and 1,000 policies in one tenant, engine and raw side by side.
fn policy_count(c: &mut Criterion) {
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("policy_count");
    for n in [10_usize, 100, 1_000] {
        let f = Fixture::new(n, false);
        group.bench_with_input(BenchmarkId::new("raw_prepared", n), &n, |b, _| {
            b.to_async(&f.rt)
                .iter(|| async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) });
        });
        let ran = Cell::new(false);
        group.bench_with_input(BenchmarkId::new("ours_prepared", n), &n, |b, _| {
            ran.set(true);
            b.to_async(&f.rt).iter(|| async {
                f.authz
                    .is_authorized_prepared(f.tenant, &f.request, &f.entities)
                    .await
            });
        });
        group.bench_with_input(BenchmarkId::new("sliced_prepared", n), &n, |b, _| {
            b.to_async(&f.rt)
                .iter(|| sliced_prepared(&f.authz, &authorizer, f.tenant, &f.request, &f.entities));
        });
        if measuring(&ran) {
            Paired::measure(
                &f.rt,
                || {
                    f.authz
                        .is_authorized_prepared(f.tenant, &f.request, &f.entities)
                },
                || async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) },
            )
            .report(&format!("policy_count {n}"), "ours", "raw", None);
            Paired::measure(
                &f.rt,
                || sliced_prepared(&f.authz, &authorizer, f.tenant, &f.request, &f.entities),
                || async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) },
            )
            .report(&format!("policy_count {n} sliced"), "sliced", "raw", None);
        }
    }
    group.finish();
}

/// A repeated JSON request answered from the in-memory decision cache, against raw
/// Cedar deciding it (prepared, the cheapest raw form) over the same 50 policies.
fn decision_cache(c: &mut Criterion) {
    let f = Fixture::new(50, true);
    let cache = Arc::new(MemoryDecisionCache::new(10_000, Duration::from_secs(3_600)));
    let cached = Authz::new(f.authz.store().clone()).with_decision_cache(cache.clone());
    let first =
        f.rt.block_on(cached.is_authorized(f.tenant, &f.json))
            .expect("first check");
    let version = first.policy_version;
    let key = DecisionKey::new(f.tenant, version, &f.json);
    let stored = f.rt.block_on(cache.get(&key)).expect("cache lookup");
    assert_eq!(stored.as_ref(), Some(&first), "the decision is cached");
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("decision_cache");
    group.bench_function("raw_prepared", |b| {
        b.to_async(&f.rt)
            .iter(|| async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) });
    });
    let ran = Cell::new(false);
    group.bench_function("ours_json_hit", |b| {
        ran.set(true);
        b.to_async(&f.rt)
            .iter(|| async { cached.is_authorized(f.tenant, &f.json).await });
    });
    // Where a hit's time goes: the parts `is_authorized` runs before it returns
    // (finding the compiled set is `check_vs_raw/prepared_part/lookup`).
    group.bench_function("hit_part/decision_key", |b| {
        b.iter(|| DecisionKey::new(f.tenant, version, &f.json));
    });
    group.bench_function("hit_part/cache_get", |b| {
        b.to_async(&f.rt).iter(|| async { cache.get(&key).await });
    });
    // The proposed cheaper fingerprint (see `fingerprint_serialized`), alone and in a
    // hit emulated from the engine's public parts: lookup, key, cache get.
    group.bench_function("hit_part/fingerprint_serialized", |b| {
        b.iter(|| fingerprint_serialized(&f.json));
    });
    let emulated_key = DecisionKey {
        tenant: f.tenant,
        policy_version: version,
        fingerprint: fingerprint_serialized(&f.json),
    };
    f.rt.block_on(cache.put(&emulated_key, &first))
        .expect("cache put");
    let emulated_hit = || async {
        let compiled = cached.compiled(f.tenant).await?;
        let key = DecisionKey {
            tenant: f.tenant,
            policy_version: compiled.version,
            fingerprint: fingerprint_serialized(&f.json),
        };
        cache.get(&key).await
    };
    let hit = f.rt.block_on(emulated_hit()).expect("emulated hit");
    assert_eq!(
        hit.as_ref(),
        Some(&first),
        "the emulated hit finds the decision"
    );
    group.bench_function("hit_emulated_serialized_key", |b| {
        b.to_async(&f.rt).iter(emulated_hit);
    });
    group.finish();
    if measuring(&ran) {
        Paired::measure(
            &f.rt,
            || cached.is_authorized(f.tenant, &f.json),
            || async { authorizer.is_authorized(&f.request, &f.raw, &f.entities) },
        )
        .report("decision_cache hit", "ours", "raw", Some(0.1));
        Paired::measure(&f.rt, emulated_hit, || async {
            authorizer.is_authorized(&f.request, &f.raw, &f.entities)
        })
        .report(
            "decision_cache hit, serialized key (emulated)",
            "ours",
            "raw",
            Some(0.1),
        );
    }
}

/// A 128-bit fingerprint of `request` as `DecisionKey::new` could compute it: the
/// request serialized once and the bytes hashed in one call per 64-bit half, with
/// std's `DefaultHasher` as `DecisionKey::new` uses. Equal bytes mean equal requests.
/// Cedar turns on serde_json's `preserve_order`, so the same objects with their keys
/// in another order give other bytes: another key, a cache miss, never a wrong hit.
fn fingerprint_serialized(request: &CheckRequest) -> u128 {
    let bytes = serde_json::to_vec(request).expect("request serializes");
    let mut high = DefaultHasher::new();
    let mut low = DefaultHasher::new();
    0xA5A5_u16.hash(&mut low);
    high.write(&bytes);
    low.write(&bytes);
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The benchmark list (in a private module: the macro's function has no docs).
mod suite {
    use super::{check_vs_raw, config, decision_cache, policy_count, tenants};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = check_vs_raw, tenants, policy_count, decision_cache
    }
}
criterion_main!(suite::benches);
