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
//! `--breakdown` (in-process gateway only) first times the pieces of one token, one at
//! a time on one task: signing as `jsonwebtoken::encode` does it (the private key
//! parsed from PKCS#8 on every call), signing with the gateway's key (parsed once),
//! the raw signature alone, the claims' JSON, client authentication, the whole library
//! call, and the whole HTTP round trip.
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

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
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
    ClientAuthentication, ClientRegistration, GrantType, MemoryRateLimiter, Provider,
    ProviderConfig, ProviderParts, TokenRequest,
};
use tenancy_core::token::{
    AccessClaims, Algorithm, CachedJwks, HttpJwks, KeyManager, MasterKey, RotationPolicy,
    TYP_ACCESS_TOKEN, Verifier, VerifierConfig,
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
    /// First time the pieces of one token one by one (in-process gateway only)
    #[arg(long)]
    breakdown: bool,
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
    provider: Arc<Provider>,
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
        provider: provider.clone(),
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
        provider,
        client_id: client.id.to_string(),
        client_secret: secret.expose().to_owned(),
        _stop: stop,
    })
}

// ----- the client -----

type Connection = Arc<Mutex<SendRequest<Full<Bytes>>>>;

/// The parts of every token request, built once.
struct TokenCall {
    host: HeaderValue,
    authorization: HeaderValue,
    body: Bytes,
}

impl TokenCall {
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
async fn request_token(connection: &Connection, request: &TokenCall) -> Result<String, String> {
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
    request: Arc<TokenCall>,
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
    request: &Arc<TokenCall>,
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

/// A key pair of aws-lc-rs, the library under the gateway's signatures, to time the
/// signature alone.
enum RawSigner {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(Box<RsaKeyPair>),
}

impl RawSigner {
    fn generate(alg: Algorithm) -> Result<Self, BoxError> {
        let failed = |_| BoxError::from(format!("cannot generate a {alg} key"));
        Ok(match alg {
            Algorithm::Es256 => Self::Es256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?,
            ),
            Algorithm::EdDsa => Self::EdDsa(Ed25519KeyPair::generate().map_err(failed)?),
            Algorithm::Rs256 => Self::Rs256(Box::new(
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?,
            )),
        })
    }

    fn sign(&self, message: &[u8]) -> Result<(), BoxError> {
        let failed = |_| BoxError::from("signing failed");
        match self {
            Self::Es256(pair) => pair.sign(&SystemRandom::new(), message).map_err(failed)?,
            Self::EdDsa(pair) => pair.try_sign(message).map_err(failed)?,
            Self::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(failed)?;
                return Ok(());
            }
        };
        Ok(())
    }
}

/// Mean microseconds per call of `f`, called `rounds` times one after the other.
async fn time_per_call<F, Fut>(rounds: u32, mut f: F) -> Result<f64, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let started = Instant::now();
    for _ in 0..rounds {
        f().await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds.max(1)))
}

/// Times the pieces of a token, one at a time.
async fn breakdown(
    gateway: &InProcess,
    connection: &Connection,
    call: &TokenCall,
) -> Result<(), BoxError> {
    let provider = &gateway.provider;
    let auth = ClientAuthentication {
        authorization: Some(call.authorization.to_str()?.to_owned()),
        remote_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        ..ClientAuthentication::default()
    };
    let request = TokenRequest {
        grant_type: Some("client_credentials".into()),
        ..TokenRequest::default()
    };
    // The claims of a real token, to sign again.
    let issued = provider.token(&auth, &request).await?.access_token;
    let payload = issued.split('.').nth(1).ok_or("not a JWT")?;
    let claims: AccessClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    let ring = provider.keys().ring();
    let key = ring
        .signing_key(chrono::Utc::now())
        .ok_or("no signing key")?;
    let mut header = jsonwebtoken::Header::new(match key.algorithm() {
        Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
    });
    header.typ = Some(TYP_ACCESS_TOKEN.into());
    header.kid = Some(key.kid().into());
    let signing_input = issued
        .rsplit_once('.')
        .map(|(input, _)| input.to_owned())
        .ok_or("not a JWT")?;
    let rounds = 2_000;

    let encode = time_per_call(rounds, || {
        let result = jsonwebtoken::encode(&header, &claims, key.encoding_key());
        async move { result.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    let sign = time_per_call(rounds, || {
        let result = provider.keys().sign(TYP_ACCESS_TOKEN, &claims);
        async move { result.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    let signer = RawSigner::generate(key.algorithm())?;
    let raw = time_per_call(rounds, || {
        let result = signer.sign(signing_input.as_bytes());
        async move { result }
    })
    .await?;
    let json = time_per_call(rounds, || {
        let result = serde_json::to_vec(&claims);
        async move { result.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    let authenticate = time_per_call(rounds, || async {
        provider.authenticate_client(&auth).await?;
        Ok(())
    })
    .await?;
    let library = time_per_call(rounds, || async {
        provider.token(&auth, &request).await?;
        Ok(())
    })
    .await?;
    let round_trip = time_per_call(rounds, || async {
        request_token(connection, call).await?;
        Ok(())
    })
    .await?;
    println!("one token at a time, mean per call (us):");
    println!("  jsonwebtoken::encode (PKCS#8 key parsed per call)   {encode:>8.1}");
    println!("  KeyManager::sign (key pair parsed once)             {sign:>8.1}");
    println!("  signature alone (signing input given)               {raw:>8.1}");
    println!("  claims JSON (serde_json::to_vec)                    {json:>8.1}");
    println!("  Provider::authenticate_client (Basic, 2 peeks)      {authenticate:>8.1}");
    println!("  library: Provider::token (everything but HTTP)      {library:>8.1}");
    println!("  HTTP round trip on loopback (everything)            {round_trip:>8.1}");
    Ok(())
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
    let request = Arc::new(TokenCall::new(addr, &id, &secret, args.scope.as_deref())?);
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
    if args.breakdown {
        let Some(gateway) = &in_process else {
            return Err("--breakdown needs the in-process gateway (no --addr)".into());
        };
        breakdown(gateway, first, &request).await?;
    }
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
