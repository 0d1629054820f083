//! A bounded loopback load test of the gateway's token endpoint with the
//! `client_credentials` grant.
//!
//! Starts the auth gateway in process on an ephemeral port (memory stores, the system
//! clock, ES256 keys unless `--algorithm` says otherwise), registers a tenant and a
//! confidential client allowed the `client_credentials` grant, then keeps
//! `--concurrency` token requests in flight over `--connections` keep-alive HTTP/1.1
//! connections until `--duration` seconds or `--requests` tokens have passed,
//! whichever comes first, and prints the latency percentiles, the throughput and the
//! CPU time per token of the gateway's and the client's threads. Every answer must be a 200 with a bearer access
//! token; the first token and the last token of every connection are verified against
//! the gateway's JWKS (signature, issuer, audience, expiry).
//!
//! ```text
//! cargo run --release -p tenancy-servers --example token_load
//! cargo run --release -p tenancy-servers --example token_load -- \
//!     --server-threads 2 --client-threads 1 --connections 32 --duration 10
//! cargo run --release -p tenancy-servers --example token_load -- \
//!     --addr 127.0.0.1:3000 --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET"
//! ```
//!
//! Each request is `POST /token` with `grant_type=client_credentials` and HTTP Basic
//! client authentication (`client_secret_basic`), as a backend service sends it.
//!
//! # Threads
//!
//! The in-process gateway runs on its own tokio runtime of `--server-threads` workers
//! (default 2) and the load generator on another of `--client-threads` workers
//! (default 1), so the two never share a worker queue and the figures say how the
//! server's threads were used. On a 2-core machine they still share the cores: the
//! client's time (building requests, parsing answers, the loopback TCP stack on both
//! sides) is taken from the server, so the in-process figures are a lower bound of
//! what the same gateway serves to remote clients. `--server-threads 0` runs the
//! gateway on the client's runtime instead.
//!
//! # Connections
//!
//! HTTP/1.1 carries one request at a time per connection (no pipelining). With
//! `--concurrency` above `--connections`, the in-flight requests of one connection take
//! turns, and the time a request waits for its connection counts in its latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tenancy_core::clock::SystemClock;
use tenancy_core::identity::{Identity, NewTenant};
use tenancy_core::memory::MemoryStore;
use tenancy_core::oauth::{
    ClientRegistration, GrantType, MemoryRateLimiter, Provider, ProviderConfig, ProviderParts,
};
use tenancy_core::token::{
    Algorithm, CachedJwks, HttpJwks, KeyManager, MasterKey, RotationPolicy, Verifier,
    VerifierConfig,
};
use tenancy_servers::AdminAuth;
use tenancy_servers::gateway::GatewayState;
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Mutex, oneshot};

/// mimalloc: measurably faster than the system allocator for the many small
/// allocations of request parsing, claims and JSON.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load-tests `POST /token` (`client_credentials`) of the auth gateway.
#[derive(Debug, Parser)]
struct Args {
    /// Gateway to load; by default one is started in process on an ephemeral port
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Client id of a confidential client allowed `client_credentials` (with `--addr`)
    #[arg(long)]
    client_id: Option<String>,
    /// Its secret (with `--addr`; or in `TOKEN_LOAD_CLIENT_SECRET`)
    #[arg(long, env = "TOKEN_LOAD_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Scopes to ask for (default: all the client's scopes)
    #[arg(long)]
    scope: Option<String>,
    /// Token requests in flight at any time
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Keep-alive HTTP/1.1 connections the requests are spread over
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// ...or after this many tokens, whichever comes first
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Tokens requested before measuring (warms up caches and connections)
    #[arg(long, default_value_t = 5_000)]
    warmup: u64,
    /// Signing algorithm of the in-process gateway's keys (`ES256`, the default of
    /// the servers, `EdDSA` or `RS256`)
    #[arg(long, default_value = "ES256")]
    algorithm: Algorithm,
    /// Worker threads of the in-process gateway's runtime; 0 runs it on the client's
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

// ----- the in-process gateway -----

/// An in-process gateway: where it listens, its client, and a sender whose drop
/// stops it.
struct InProcess {
    addr: SocketAddr,
    client_id: String,
    client_secret: String,
    _stop: oneshot::Sender<()>,
}

/// Starts a gateway over memory stores on `server` (a runtime handle), registers a
/// tenant and a `client_credentials` client, and returns them.
async fn start_gateway(server: Handle, algorithm: Algorithm) -> Result<InProcess, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let clock = Arc::new(SystemClock);
    let store = Arc::new(MemoryStore::new());
    let identity = Identity::new(store.clone());
    let master = MasterKey::generate()?;
    let keys = Arc::new(KeyManager::new(
        store.clone(),
        master.clone(),
        RotationPolicy {
            algorithm,
            ..RotationPolicy::default()
        },
        clock.clone(),
    )?);
    keys.refresh().await?;
    let provider = Arc::new(Provider::new(ProviderParts {
        config: ProviderConfig::new(format!("http://{addr}")),
        identity: identity.clone(),
        store: store.clone(),
        sessions: store.clone(),
        keys,
        limiter: Arc::new(MemoryRateLimiter::new()),
        master_key: master,
        clock: Some(clock),
    })?);
    let tenant = identity
        .create_tenant(NewTenant {
            slug: "token-load".into(),
            display_name: "Token load".into(),
            metadata: serde_json::Value::Null,
        })
        .await?;
    let (client, secret) = provider
        .register_client(ClientRegistration {
            tenant_id: Some(tenant.id),
            name: "Load generator".into(),
            grant_types: vec![GrantType::ClientCredentials],
            scope: Some("reports:read reports:write".into()),
            ..ClientRegistration::default()
        })
        .await?;
    let secret = secret.ok_or("a confidential client got no secret")?;
    let state = GatewayState {
        provider,
        admin: AdminAuth::new("token-load-admin-token")?,
        secure_cookies: false,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    // The listener joins the reactor of the runtime that serves it.
    server.spawn(async move {
        let served = async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let shutdown = async move {
                let _ = stopped.await;
            };
            tenancy_servers::run_gateway(listener, state, shutdown)
                .await
                .map_err(BoxError::from)
        };
        if let Err(err) = served.await {
            eprintln!("gateway failed: {err}");
        }
    });
    Ok(InProcess {
        addr,
        client_id: client.id.to_string(),
        client_secret: secret.expose().to_owned(),
        _stop: stop,
    })
}

// ----- the client -----

type Connection = Arc<Mutex<SendRequest<Full<Bytes>>>>;

/// The parts of every token request, built once.
struct TokenRequest {
    host: HeaderValue,
    authorization: HeaderValue,
    body: Bytes,
}

impl TokenRequest {
    fn new(
        addr: SocketAddr,
        id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<Self, BoxError> {
        // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.append_pair("grant_type", "client_credentials");
        if let Some(scope) = scope {
            body.append_pair("scope", scope);
        }
        Ok(Self {
            host: HeaderValue::from_str(&addr.to_string())?,
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))?,
            body: Bytes::from(body.finish()),
        })
    }

    fn build(&self) -> Result<Request<Full<Bytes>>, BoxError> {
        Ok(Request::builder()
            .method(Method::POST)
            .uri("/token")
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(Full::new(self.body.clone()))?)
    }
}

/// The members of a token response the load test checks.
#[derive(Deserialize)]
struct TokenAnswer<'a> {
    #[serde(borrow)]
    access_token: &'a str,
    #[serde(borrow)]
    token_type: &'a str,
}

/// Opens a keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> Result<Connection, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("connection failed: {err}");
        }
    });
    Ok(Arc::new(Mutex::new(sender)))
}

/// Sends one token request on `connection`; the access token when the answer is a 200
/// with a bearer token, else a description of what came back.
async fn request_token(connection: &Connection, request: &TokenRequest) -> Result<String, String> {
    let request = request.build().map_err(|e| e.to_string())?;
    let (status, body) = {
        let mut sender = connection.lock().await;
        sender
            .ready()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        (status, body)
    };
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let answer: TokenAnswer<'_> = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "not a token response ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if answer.token_type != "Bearer" || answer.access_token.split('.').count() != 3 {
        return Err(format!(
            "not a bearer JWT: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(answer.access_token.to_owned())
}

/// What one client task saw.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    last_token: Option<String>,
}

/// Requests tokens until the budget or the deadline runs out.
async fn client_loop(
    connection: Connection,
    request: Arc<TokenRequest>,
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
        let started = Instant::now();
        let result = request_token(&connection, &request).await;
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match result {
            Ok(token) => {
                tally.latencies_ns.push(elapsed);
                tally.last_token = Some(token);
            }
            Err(err) => {
                if tally.errors == 0 {
                    eprintln!("token request failed: {err}");
                }
                tally.errors += 1;
            }
        }
    }
}

/// Runs `concurrency` client loops over `connections` and merges their tallies.
async fn run(
    connections: &[Connection],
    concurrency: usize,
    request: &Arc<TokenRequest>,
    budget: u64,
    duration: Duration,
) -> Result<(Tally, Vec<String>, Duration), BoxError> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for connection in connections.iter().cycle().take(concurrency) {
        tasks.push(tokio::spawn(client_loop(
            connection.clone(),
            request.clone(),
            issued.clone(),
            budget,
            deadline,
        )));
    }
    let mut total = Tally::default();
    let mut last_tokens = Vec::new();
    for task in tasks {
        let tally = task.await?;
        total.latencies_ns.extend(tally.latencies_ns);
        total.errors += tally.errors;
        last_tokens.extend(tally.last_token);
    }
    Ok((total, last_tokens, started.elapsed()))
}

/// A verifier of the gateway's access tokens for `client_id`, with the issuer its
/// discovery document names and the keys of its JWKS.
async fn verifier(
    connection: &Connection,
    addr: SocketAddr,
    client_id: &str,
) -> Result<Verifier, BoxError> {
    let request = Request::builder()
        .uri("/.well-known/openid-configuration")
        .header(HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let body = {
        let mut sender = connection.lock().await;
        sender.ready().await?;
        sender
            .send_request(request)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes()
    };
    let discovery: serde_json::Value = serde_json::from_slice(&body)?;
    let issuer = discovery
        .get("issuer")
        .and_then(|v| v.as_str())
        .ok_or("the discovery document names no issuer")?;
    let config = VerifierConfig {
        algorithms: vec![Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256],
        ..VerifierConfig::new(issuer, [client_id])
    };
    let jwks = HttpJwks::new(&format!("http://{addr}/jwks.json"))?;
    Ok(Verifier::new(
        config,
        CachedJwks::new(Arc::new(jwks), Arc::new(SystemClock)),
    )?)
}

/// CPU time used so far by the gateway's threads and by the client's, in nanoseconds,
/// from `/proc/self/task/*/schedstat` (Linux; `None` elsewhere). Threads are told apart
/// by the names [`runtime`] gives them.
fn cpu_time_ns() -> Option<(u64, u64)> {
    let mut gateway = 0;
    let mut client = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = stat.split(' ').next()?.parse().ok()?;
        if name.trim_end() == SERVER_THREADS {
            gateway += ns;
        } else {
            client += ns;
        }
    }
    Some((gateway, client))
}

/// The thread names of the two runtimes (at most 15 bytes, as Linux keeps them).
const SERVER_THREADS: &str = "gateway-worker";
const CLIENT_THREADS: &str = "client-worker";

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank).copied().unwrap_or(0) as f64 / 1_000.0
}

fn runtime(threads: usize, name: &str) -> Result<Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

async fn load(args: Args, server: Handle) -> Result<(), BoxError> {
    let (addr, id, secret, in_process) = match (args.addr, args.client_id, args.client_secret) {
        (Some(addr), Some(id), Some(secret)) => (addr, id, secret, None),
        (Some(_), _, _) => return Err("--addr needs --client-id and --client-secret".into()),
        (None, _, _) => {
            let gateway = start_gateway(server, args.algorithm).await?;
            (
                gateway.addr,
                gateway.client_id.clone(),
                gateway.client_secret.clone(),
                Some(gateway),
            )
        }
    };
    let request = Arc::new(TokenRequest::new(
        addr,
        &id,
        &secret,
        args.scope.as_deref(),
    )?);
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(connect(addr).await?);
    }
    let first = connections.first().ok_or("no connection")?;
    let verifier = verifier(first, addr, &id).await?;
    let token = request_token(first, &request).await?;
    let verified = verifier.verify(&token).await?;
    println!(
        "gateway {addr} ({}), client {id} of tenant {}: scope `{}`",
        if in_process.is_some() {
            format!(
                "in process, {}, {} server threads, {} client threads",
                args.algorithm, args.server_threads, args.client_threads
            )
        } else {
            format!("remote, {} client threads", args.client_threads)
        },
        verified.claims.tenant_id,
        verified.claims.scope,
    );
    println!(
        "{} requests in flight over {} HTTP/1.1 connections, for {} s or {} tokens",
        args.concurrency, args.connections, args.duration, args.requests
    );
    if args.warmup > 0 {
        run(
            &connections,
            args.concurrency,
            &request,
            args.warmup,
            Duration::from_secs(30),
        )
        .await?;
    }
    let cpu_before = cpu_time_ns();
    let (mut tally, last_tokens, elapsed) = run(
        &connections,
        args.concurrency,
        &request,
        args.requests,
        Duration::from_secs_f64(args.duration),
    )
    .await?;
    let cpu_after = cpu_time_ns();
    for token in &last_tokens {
        verifier.verify(token).await?;
    }
    tally.latencies_ns.sort_unstable();
    let done = tally.latencies_ns.len() as u64;
    let seconds = elapsed.as_secs_f64();
    println!(
        "{done} tokens in {seconds:.2} s: {:.0} tokens/s, {} errors, {} sampled tokens verified",
        done as f64 / seconds,
        tally.errors,
        last_tokens.len()
    );
    println!(
        "latency (us): p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
        percentile(&tally.latencies_ns, 50.0),
        percentile(&tally.latencies_ns, 90.0),
        percentile(&tally.latencies_ns, 99.0),
        percentile(&tally.latencies_ns, 100.0),
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let per_token = |ns: u64| ns as f64 / 1_000.0 / done.max(1) as f64;
        let gateway = after.0.saturating_sub(before.0);
        let client = after.1.saturating_sub(before.1);
        let busy = (gateway + client) as f64 / 1e9 / seconds;
        if in_process.is_some() && args.server_threads > 0 {
            println!(
                "cpu per token (us): gateway threads {:.1}, client threads {:.1}; {busy:.2} cores busy in this process",
                per_token(gateway),
                per_token(client),
            );
        } else {
            println!(
                "cpu per token (us): {:.1} in this process; {busy:.2} cores busy in it",
                per_token(gateway + client),
            );
        }
    }
    drop(connections);
    drop(in_process);
    if tally.errors > 0 {
        return Err(format!("{} token requests failed", tally.errors).into());
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.concurrency < args.connections || args.connections == 0 {
        return Err(
            "--connections must be at least 1 and --concurrency at least --connections".into(),
        );
    }
    if args.client_threads == 0 {
        return Err("--client-threads must be at least 1".into());
    }
    let client = runtime(args.client_threads, CLIENT_THREADS)?;
    let server = if args.server_threads > 0 && args.addr.is_none() {
        Some(runtime(args.server_threads, SERVER_THREADS)?)
    } else {
        None
    };
    let handle = server
        .as_ref()
        .map_or_else(|| client.handle().clone(), |s| s.handle().clone());
    let result = client.block_on(load(args, handle));
    // Runtimes are dropped outside any async context.
    if let Some(server) = server {
        server.shutdown_timeout(Duration::from_secs(1));
    }
    client.shutdown_timeout(Duration::from_secs(1));
    result
}
