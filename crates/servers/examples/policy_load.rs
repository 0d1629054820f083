//! A bounded loopback load test of the policy service's `CheckPermission`.
//!
//! Starts the policy server in process on an ephemeral port (or uses the one at
//! `--addr`), loads a schema and 50 generated RBAC + ABAC policies into one tenant, then
//! keeps `--concurrency` checks in flight over `--connections` HTTP/2 connections until
//! `--duration` seconds or `--requests` checks have passed, whichever comes first, and
//! prints the latency percentiles and the throughput.
//!
//! ```text
//! cargo run --release -p tenancy-servers --example policy_load
//! cargo run --release -p tenancy-servers --example policy_load -- \
//!     --addr 127.0.0.1:50052 --token "$TENANCY_ADMIN_TOKEN" --concurrency 32
//! ```
//!
//! Each request carries its principal and resource as entities (Cedar entity JSON) and
//! a context, as a gateway would send them; requests are drawn from a pool of 1,024
//! generated ones, about a quarter of them allowed. The decision cache is off: every
//! check is evaluated.
//!
//! `--client h2` sends the same requests pre-encoded over bare hyper HTTP/2
//! connections instead of tonic's client, as gRPC load generators do, leaving more of
//! the shared cores to the server.
//!
//! `--breakdown` (in-process server only) first times the stages of one check, one at
//! a time on one task: parsing the JSON texts, Cedar's part of the library
//! (uids, context and entities parsed against the schema, then evaluated), the
//! evaluation alone, the whole library call, and the whole gRPC round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_authz::{Authz, CheckRequest};
use tenancy_core::TenantId;
use tenancy_core::identity::Identity;
use tenancy_core::memory::MemoryStore;
use tenancy_servers::AdminAuth;
use tenancy_servers::proto::policy::v1 as pb;
use tenancy_servers::proto::policy::v1::policy_service_client::PolicyServiceClient;
use tenancy_servers::serve::policy_engine;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::http;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// mimalloc: measurably faster than the system allocator for the many small
/// allocations of policy evaluation and gRPC framing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load-tests `CheckPermission` of the policy service.
#[derive(Debug, Parser)]
struct Args {
    /// Policy server to load; by default one is started in process on an ephemeral
    /// port
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Admin token the server expects
    #[arg(long, default_value = "policy-load-admin-token")]
    token: String,
    /// Checks in flight at any time
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the checks are spread over
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// ...or after this many checks, whichever comes first
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Checks sent before measuring (warms up caches and connections)
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// First time the stages of a check one by one (in-process server only)
    #[arg(long)]
    breakdown: bool,
    /// The load's client: `tonic` (the generated client over a tonic `Channel`, as an
    /// application would call us) or `h2` (a bare hyper HTTP/2 connection sending
    /// pre-encoded gRPC frames, as load generators such as h2load or ghz do, so more
    /// of the 2 cores is left to the server)
    #[arg(long, default_value = "tonic")]
    client: ClientKind,
}

/// See [`Args::client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientKind {
    Tonic,
    H2,
}

/// Adds the admin bearer token to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = PolicyServiceClient<InterceptedService<Channel, Bearer>>;

// ----- the workload -----

const DEPARTMENTS: u64 = 10;
const USERS: u64 = 200;
const DOCUMENTS: u64 = 500;
const POOL: u64 = 1_024;
const ACTIONS: [&str; 4] = ["view", "edit", "delete", "share"];

const SCHEMA: &str = r"
entity Department;
entity Document in [Department] {
    owner: User,
    classification: Long,
    locked: Bool,
    public: Bool,
    tags: Set<String>,
};
action view, edit, delete, share appliesTo {
    principal: User,
    resource: Document,
    context: { mfa: Bool, ip: __cedar::ipaddr, hour: Long },
};
";

/// 50 policies: per-department RBAC, clearance-based ABAC, network and time windows,
/// ownership, tags, and a few `forbid`s.
fn policies() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in 0..DEPARTMENTS {
        out.push((
            format!("dept-{d}-editors"),
            format!(
                "permit(principal in Role::\"editor-{d}\", action in [Action::\"view\", Action::\"edit\"], resource in Department::\"dept-{d}\");"
            ),
        ));
        out.push((
            format!("dept-{d}-viewers"),
            format!(
                "permit(principal in Role::\"viewer-{d}\", action == Action::\"view\", resource in Department::\"dept-{d}\");"
            ),
        ));
        out.push((
            format!("dept-{d}-share-from-office"),
            format!(
                "permit(principal in Role::\"editor-{d}\", action == Action::\"share\", resource in Department::\"dept-{d}\")\n\
                 when {{ context.ip.isInRange(ip(\"10.{d}.0.0/16\")) && context.hour >= 8 && context.hour < 20 }};"
            ),
        ));
    }
    for c in 0..10 {
        out.push((
            format!("clearance-{c}"),
            format!(
                "permit(principal in Role::\"clearance-{c}\", action == Action::\"view\", resource)\n\
                 when {{ resource.classification <= {c} && context.mfa }};"
            ),
        ));
    }
    out.push((
        "owner-all".into(),
        "permit(principal, action, resource) when { resource.owner == principal };".into(),
    ));
    for t in 0..4 {
        out.push((
            format!("public-tag-{t}"),
            format!(
                "permit(principal, action == Action::\"view\", resource)\n\
                 when {{ resource.public && resource.tags.contains(\"tag-{t}\") }};"
            ),
        ));
    }
    out.extend([
        (
            "forbid-delete-locked".into(),
            "forbid(principal, action == Action::\"delete\", resource) when { resource.locked };"
                .into(),
        ),
        (
            "forbid-secret-without-mfa".into(),
            "forbid(principal, action, resource)\nwhen { !context.mfa && resource.classification >= 8 };".into(),
        ),
        (
            "forbid-share-secret".into(),
            "forbid(principal, action == Action::\"share\", resource)\nwhen { resource.tags.contains(\"secret\") };".into(),
        ),
        (
            "forbid-suspended".into(),
            "forbid(principal in Role::\"suspended\", action, resource);".into(),
        ),
        (
            "forbid-night-edits".into(),
            "forbid(principal, action == Action::\"edit\", resource) when { context.hour < 6 };"
                .into(),
        ),
    ]);
    out
}

/// A small deterministic generator (xorshift), so every run sends the same requests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn user_entity(rng: &mut Rng, user: u64) -> Value {
    let d = user % DEPARTMENTS;
    let mut roles = vec![if user.is_multiple_of(3) {
        format!("editor-{d}")
    } else {
        format!("viewer-{d}")
    }];
    roles.push(format!("clearance-{}", rng.below(10)));
    if user % 50 == 7 {
        roles.push("suspended".into());
    }
    let parents: Vec<Value> = roles
        .iter()
        .map(|r| json!({ "type": "Role", "id": r }))
        .collect();
    json!({
        "uid": { "type": "User", "id": format!("u{user}") },
        "attrs": { "email": format!("u{user}@example.com"), "email_verified": true },
        "parents": parents,
    })
}

fn document_entity(rng: &mut Rng, doc: u64) -> Value {
    let d = doc % DEPARTMENTS;
    let mut tags = vec![format!("tag-{}", rng.below(6))];
    if doc.is_multiple_of(17) {
        tags.push("secret".into());
    }
    json!({
        "uid": { "type": "Document", "id": format!("doc-{doc}") },
        "attrs": {
            "owner": { "__entity": { "type": "User", "id": format!("u{}", rng.below(USERS)) } },
            "classification": rng.below(10),
            "locked": doc.is_multiple_of(5),
            "public": doc.is_multiple_of(4),
            "tags": tags,
        },
        "parents": [{ "type": "Department", "id": format!("dept-{d}") }],
    })
}

/// The pool of requests the clients cycle through.
fn requests(tenant: &str) -> Vec<pb::CheckPermissionRequest> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..POOL)
        .map(|_| {
            let user = rng.below(USERS);
            let doc = rng.below(DOCUMENTS);
            // Most requests stay in the user's department, as in real traffic.
            let doc = if rng.below(4) == 0 {
                doc
            } else {
                doc - doc % DEPARTMENTS + user % DEPARTMENTS
            };
            let action = ACTIONS
                .get(usize::try_from(rng.below(4)).unwrap_or(0))
                .copied()
                .unwrap_or("view");
            let ip = if rng.below(3) == 0 {
                format!("192.168.{}.{}", rng.below(255), rng.below(255))
            } else {
                format!(
                    "10.{}.{}.{}",
                    doc % DEPARTMENTS,
                    rng.below(255),
                    rng.below(255)
                )
            };
            let context = json!({
                "mfa": rng.below(4) != 0,
                "ip": { "__extn": { "fn": "ip", "arg": ip } },
                "hour": rng.below(24),
            });
            let entities = json!([user_entity(&mut rng, user), document_entity(&mut rng, doc)]);
            pb::CheckPermissionRequest {
                tenant_id: tenant.to_owned(),
                principal: format!("User::\"u{user}\""),
                action: format!("Action::\"{action}\""),
                resource: format!("Document::\"doc-{doc}\""),
                context_json: context.to_string(),
                entities_json: entities.to_string(),
            }
        })
        .collect()
}

// ----- running it -----

/// An in-process policy server: its engine, and a sender whose drop stops it.
struct InProcess {
    authz: Arc<Authz>,
    _stop: oneshot::Sender<()>,
}

/// Starts an in-process policy server.
async fn start_server(token: &str) -> Result<(SocketAddr, InProcess), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let identity = Identity::new(Arc::new(MemoryStore::new()));
    let authz = Arc::new(policy_engine(Arc::new(MemoryPolicyStore::new()), &identity));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = InProcess {
        authz: authz.clone(),
        _stop: stop,
    };
    let auth = AdminAuth::new(token)?;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = tenancy_servers::run_policy(listener, authz, auth, shutdown).await {
            eprintln!("policy server failed: {err}");
        }
    });
    Ok((addr, server))
}

async fn connect(addr: SocketAddr, token: &str) -> Result<Client, BoxError> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    Ok(PolicyServiceClient::with_interceptor(channel, bearer))
}

/// Writes the schema and the policies into a new tenant; returns the tenant.
async fn load_policies(client: &mut Client) -> Result<String, BoxError> {
    let tenant = TenantId::new().to_string();
    let mut version = client
        .put_schema(pb::PutSchemaRequest {
            tenant_id: tenant.clone(),
            expected_version: 0,
            schema: Some(pb::put_schema_request::Schema::CedarText(SCHEMA.into())),
        })
        .await?
        .into_inner()
        .new_version
        .map_or(0, |v| v.version);
    for (id, text) in policies() {
        version = client
            .create_policy(pb::CreatePolicyRequest {
                tenant_id: tenant.clone(),
                expected_version: version,
                policy_id: id,
                text,
                description: String::new(),
            })
            .await?
            .into_inner()
            .new_version
            .map_or(0, |v| v.version);
    }
    Ok(tenant)
}

/// What one client task saw.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    allowed: u64,
    errors: u64,
}

/// Sends checks with `checker` until the budget or the deadline runs out; every check
/// takes the next request of the pool, whichever task sends it.
async fn client_loop(
    mut checker: Checker,
    issued: Arc<AtomicU64>,
    budget: u64,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= budget || Instant::now() >= deadline {
            return tally;
        }
        let index = usize::try_from(n % POOL).unwrap_or(0);
        let started = Instant::now();
        let result = checker.check(index).await;
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match result {
            Ok(allowed) => {
                tally.latencies_ns.push(elapsed);
                tally.allowed += u64::from(allowed);
            }
            Err(err) => {
                if tally.errors == 0 {
                    eprintln!("check failed: {err}");
                }
                tally.errors += 1;
            }
        }
    }
}

/// One load task's client: a connection of either kind and the request pool.
enum Checker {
    Tonic {
        client: Client,
        pool: Arc<Vec<pb::CheckPermissionRequest>>,
    },
    H2 {
        sender: H2Sender,
        uri: http::Uri,
        bearer: http::HeaderValue,
        frames: Arc<Vec<Bytes>>,
    },
}

impl Checker {
    /// Sends request `index` of the pool: whether it was allowed.
    async fn check(&mut self, index: usize) -> Result<bool, BoxError> {
        match self {
            Self::Tonic { client, pool } => {
                let request = pool.get(index).cloned().ok_or("no such request")?;
                let reply = client.check_permission(request).await?;
                Ok(reply.get_ref().allowed)
            }
            Self::H2 {
                sender,
                uri,
                bearer,
                frames,
            } => {
                let frame = frames.get(index).cloned().ok_or("no such request")?;
                check_h2(sender, uri, bearer, frame).await
            }
        }
    }
}

// ----- the bare HTTP/2 client -----

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A `CheckPermission` request body: the gRPC frame (uncompressed flag, big-endian
/// length, the protobuf message), encoded once.
fn grpc_frame(request: &pb::CheckPermissionRequest) -> Bytes {
    let message = prost::Message::encode_to_vec(request);
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// Opens one HTTP/2 connection to `addr`; its driver runs as a task.
async fn connect_h2(addr: SocketAddr) -> Result<H2Sender, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("h2 connection failed: {err}");
        }
    });
    Ok(sender)
}

/// One `CheckPermission` over `sender`: whether it was allowed.
async fn check_h2(
    sender: &mut H2Sender,
    uri: &http::Uri,
    bearer: &http::HeaderValue,
    frame: Bytes,
) -> Result<bool, BoxError> {
    sender.ready().await?;
    let request = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::AUTHORIZATION, bearer.clone())
        .body(Full::new(frame))?;
    let response = sender.send_request(request).await?;
    let collected = response.into_body().collect().await?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    if status != "0" {
        return Err(format!("grpc-status {status}").into());
    }
    let body = collected.to_bytes();
    let message = body
        .get(5..)
        .ok_or("a reply shorter than its frame header")?;
    let reply: pb::CheckPermissionResponse = prost::Message::decode(message)?;
    Ok(reply.allowed)
}

/// The load's connections, of the chosen kind.
enum Clients {
    Tonic(Vec<Client>),
    H2 {
        senders: Vec<H2Sender>,
        uri: http::Uri,
        bearer: http::HeaderValue,
        frames: Arc<Vec<Bytes>>,
    },
}

impl Clients {
    /// The client of load task `i`: the connections are shared out in turn.
    fn checker(
        &self,
        i: usize,
        pool: &Arc<Vec<pb::CheckPermissionRequest>>,
    ) -> Result<Checker, BoxError> {
        Ok(match self {
            Self::Tonic(clients) => Checker::Tonic {
                client: clients
                    .iter()
                    .cycle()
                    .nth(i)
                    .ok_or("no connection")?
                    .clone(),
                pool: pool.clone(),
            },
            Self::H2 {
                senders,
                uri,
                bearer,
                frames,
            } => Checker::H2 {
                sender: senders
                    .iter()
                    .cycle()
                    .nth(i)
                    .ok_or("no connection")?
                    .clone(),
                uri: uri.clone(),
                bearer: bearer.clone(),
                frames: frames.clone(),
            },
        })
    }
}

/// Runs `concurrency` client loops over `clients` and merges their tallies.
async fn run(
    clients: &Clients,
    concurrency: usize,
    pool: &Arc<Vec<pb::CheckPermissionRequest>>,
    budget: u64,
    duration: Duration,
) -> Result<(Tally, Duration), BoxError> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        tasks.push(tokio::spawn(client_loop(
            clients.checker(i, pool)?,
            issued.clone(),
            budget,
            deadline,
        )));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.latencies_ns.extend(tally.latencies_ns);
        total.allowed += tally.allowed;
        total.errors += tally.errors;
    }
    Ok((total, started.elapsed()))
}

/// Mean microseconds per call of `f` over the pool, sequentially.
async fn time_per_check<F, Fut>(
    pool: &[pb::CheckPermissionRequest],
    rounds: usize,
    mut f: F,
) -> Result<f64, BoxError>
where
    F: FnMut(&pb::CheckPermissionRequest) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let started = Instant::now();
    let mut n = 0_u32;
    for _ in 0..rounds {
        for request in pool {
            f(request).await?;
            n += 1;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1)))
}

/// Times the stages of a check, one at a time.
async fn breakdown(
    authz: &Authz,
    client: &mut Client,
    tenant: &str,
    pool: &[pb::CheckPermissionRequest],
) -> Result<(), BoxError> {
    let tenant_id: TenantId = tenant.parse()?;
    let parsed: Vec<CheckRequest> = pool
        .iter()
        .map(|r| -> Result<CheckRequest, BoxError> {
            Ok(CheckRequest {
                principal: r.principal.clone(),
                action: r.action.clone(),
                resource: r.resource.clone(),
                context: serde_json::from_str(&r.context_json)?,
                entities: serde_json::from_str(&r.entities_json)?,
            })
        })
        .collect::<Result<_, _>>()?;
    let compiled = authz.compiled(tenant_id).await?;
    let schema = compiled.schema.as_ref();
    let prepared: Vec<(cedar_policy::Request, cedar_policy::Entities)> = parsed
        .iter()
        .map(|r| -> Result<_, BoxError> { prepare(r, schema) })
        .collect::<Result<_, _>>()?;
    let rounds = 3;

    let json = time_per_check(pool, rounds, |r| {
        let result = serde_json::from_str::<Value>(&r.context_json)
            .and_then(|_| serde_json::from_str::<Value>(&r.entities_json));
        async move { result.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    let mut i = 0;
    let cedar_parse = time_per_check(pool, rounds, |_| {
        let result = parsed.get(i % parsed.len()).map(|r| prepare(r, schema));
        i += 1;
        async move { result.ok_or("no request")?.map(|_| ()) }
    })
    .await?;
    let mut i = 0;
    let evaluate = time_per_check(pool, rounds, |_| {
        let pair = prepared.get(i % prepared.len());
        i += 1;
        async move {
            let (request, entities) = pair.ok_or("no request")?;
            authz
                .is_authorized_prepared(tenant_id, request, entities)
                .await?;
            Ok(())
        }
    })
    .await?;
    let mut i = 0;
    let library = time_per_check(pool, rounds, |_| {
        let request = parsed.get(i % parsed.len());
        i += 1;
        async move {
            authz
                .is_authorized(tenant_id, request.ok_or("no request")?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let round_trip = time_per_check(pool, rounds, |r| {
        let mut client = client.clone();
        let request = r.clone();
        async move {
            client.check_permission(request).await?;
            Ok(())
        }
    })
    .await?;
    println!("one check at a time, mean per check (us):");
    println!("  parse context_json + entities_json (serde_json)      {json:>8.1}");
    println!("  cedar: parse uids, context, entities (with schema)   {cedar_parse:>8.1}");
    println!("  cedar: evaluate 50 policies (is_authorized_prepared) {evaluate:>8.1}");
    println!("  library: Authz::is_authorized (JSON values given)    {library:>8.1}");
    println!("  gRPC round trip on loopback (everything)             {round_trip:>8.1}");
    Ok(())
}

/// A request and its entities as Cedar values, as the library builds them.
fn prepare(
    r: &CheckRequest,
    schema: Option<&cedar_policy::Schema>,
) -> Result<(cedar_policy::Request, cedar_policy::Entities), BoxError> {
    let principal: cedar_policy::EntityUid = r.principal.parse()?;
    let action: cedar_policy::EntityUid = r.action.parse()?;
    let resource: cedar_policy::EntityUid = r.resource.parse()?;
    let context =
        cedar_policy::Context::from_json_value(r.context.clone(), schema.map(|s| (s, &action)))?;
    let request = cedar_policy::Request::new(principal, action, resource, context, schema)?;
    let entities = cedar_policy::Entities::from_json_value(r.entities.clone(), schema)?;
    Ok((request, entities))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank).copied().unwrap_or(0) as f64 / 1_000.0
}

fn first_client(clients: &mut [Client]) -> Result<&mut Client, BoxError> {
    clients.first_mut().ok_or_else(|| "no connection".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.concurrency == 0 || args.connections == 0 {
        return Err("--concurrency and --connections must be at least 1".into());
    }
    let (addr, in_process) = match args.addr {
        Some(addr) => (addr, None),
        None => {
            let (addr, server) = start_server(&args.token).await?;
            (addr, Some(server))
        }
    };
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(connect(addr, &args.token).await?);
    }
    let tenant = load_policies(first_client(&mut clients)?).await?;
    let pool = Arc::new(requests(&tenant));
    let load = match args.client {
        ClientKind::Tonic => Clients::Tonic(clients.clone()),
        ClientKind::H2 => {
            let mut senders = Vec::with_capacity(args.connections);
            for _ in 0..args.connections {
                senders.push(connect_h2(addr).await?);
            }
            Clients::H2 {
                senders,
                uri: format!("http://{addr}/tenancy.policy.v1.PolicyService/CheckPermission")
                    .parse()?,
                bearer: format!("Bearer {}", args.token).parse()?,
                frames: Arc::new(pool.iter().map(grpc_frame).collect()),
            }
        }
    };
    println!(
        "policy server {addr} ({}), tenant {tenant}: {} policies, {} distinct requests",
        if args.addr.is_some() {
            "remote"
        } else {
            "in process"
        },
        policies().len(),
        pool.len()
    );
    println!(
        "{} checks in flight over {} HTTP/2 connections ({} client), for {} s or {} checks",
        args.concurrency,
        args.connections,
        match args.client {
            ClientKind::Tonic => "tonic",
            ClientKind::H2 => "bare h2",
        },
        args.duration,
        args.requests
    );

    if args.breakdown {
        let Some(server) = &in_process else {
            return Err("--breakdown needs the in-process server (no --addr)".into());
        };
        breakdown(&server.authz, first_client(&mut clients)?, &tenant, &pool).await?;
    }
    if args.warmup > 0 {
        run(
            &load,
            args.concurrency,
            &pool,
            args.warmup,
            Duration::from_secs(30),
        )
        .await?;
    }
    let (mut tally, elapsed) = run(
        &load,
        args.concurrency,
        &pool,
        args.requests,
        Duration::from_secs_f64(args.duration),
    )
    .await?;
    tally.latencies_ns.sort_unstable();
    let done = tally.latencies_ns.len() as u64;
    let seconds = elapsed.as_secs_f64();
    println!(
        "{done} checks in {seconds:.2} s: {:.0} checks/s, {:.1}% allowed, {} errors",
        done as f64 / seconds,
        100.0 * tally.allowed as f64 / done.max(1) as f64,
        tally.errors
    );
    println!(
        "latency (us): p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
        percentile(&tally.latencies_ns, 50.0),
        percentile(&tally.latencies_ns, 90.0),
        percentile(&tally.latencies_ns, 99.0),
        percentile(&tally.latencies_ns, 100.0),
    );
    if tally.errors > 0 {
        return Err(format!("{} checks failed", tally.errors).into());
    }
    Ok(())
}
