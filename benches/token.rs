//! Access-token verification benchmarks: the tenancy `Verifier` (warm key cache) against
//! a raw `jsonwebtoken::crypto::verify` of the same ES256 token's signing input.
//!
//! Group `verify`:
//! - `raw_es256`: the signature check alone, with a prebuilt `DecodingKey`.
//! - `tenancy_verifier`: everything the verifier does — split, header, key lookup,
//!   signature, claims, `iss`/`aud`/time checks and the `TenantContext`.
//!
//! After the group, a `paired …` line on stderr gives the ratio verifier / raw timed
//! interleaved (A B B A blocks), fair while other processes load the machine.
//!
//! Run with `cargo bench --bench token`.
#![expect(
    clippy::expect_used,
    reason = "a benchmark whose setup fails must stop loudly"
)]

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_main};
use tenancy::core::clock::SystemClock;
use tenancy::core::ids::{ClientId, GrantId, TenantId, UserId};
use tenancy::core::memory::MemoryStore;
use tenancy::core::token::{
    AccessClaims, Audience, CachedJwks, KeyManager, MasterKey, RotationPolicy, TYP_ACCESS_TOKEN,
    Verifier, VerifierConfig,
};
use tokio::runtime::Runtime;

const ISSUER: &str = "https://id.example.com";

struct Fixture {
    rt: Runtime,
    token: String,
    verifier: Verifier,
    decoding: jsonwebtoken::DecodingKey,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let manager = Arc::new(
            KeyManager::new(
                Arc::new(MemoryStore::new()),
                MasterKey::generate().expect("master key"),
                RotationPolicy::default(),
                Arc::new(SystemClock),
            )
            .expect("key manager"),
        );
        rt.block_on(manager.refresh()).expect("refresh");
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            sub: UserId::new().to_string(),
            aud: Audience::One("api".into()),
            exp: now + 3600,
            iat: now,
            nbf: None,
            jti: "8a4f0c1e-6b1d-4c49-9d55-0f3b5a7c2e10".into(),
            scope: "openid profile orders:read orders:write".into(),
            client_id: ClientId::new(),
            tenant_id: TenantId::new(),
            roles: vec!["member".into(), "billing-admin".into()],
            gid: Some(GrantId::new()),
        };
        let token = manager.sign(TYP_ACCESS_TOKEN, &claims).expect("sign");
        let kid = jsonwebtoken::decode_header(&token)
            .expect("header")
            .kid
            .expect("kid");
        let decoding = manager
            .ring()
            .decoding_key(&kid)
            .expect("published key")
            .clone();
        let keys = CachedJwks::new(manager, Arc::new(SystemClock));
        let verifier = Verifier::new(VerifierConfig::new(ISSUER, ["api"]), keys).expect("verifier");
        let verified = rt
            .block_on(verifier.verify(&token))
            .expect("the token verifies");
        assert_eq!(verified.claims, claims);
        Self {
            rt,
            token,
            verifier,
            decoding,
        }
    }

    fn raw(&self) -> bool {
        let (message, signature) = self.token.rsplit_once('.').expect("three parts");
        jsonwebtoken::crypto::verify(
            black_box(signature),
            black_box(message.as_bytes()),
            &self.decoding,
            jsonwebtoken::Algorithm::ES256,
        )
        .expect("verifies")
    }

    fn ours(&self) -> bool {
        self.rt
            .block_on(self.verifier.verify(black_box(&self.token)))
            .is_ok()
    }
}

fn verify(c: &mut Criterion) {
    let f = Fixture::new();
    assert!(f.raw() && f.ours());
    let ran = Cell::new(false);
    let mut group = c.benchmark_group("verify");
    group.bench_function("raw_es256", |b| {
        ran.set(true);
        b.iter(|| f.raw());
    });
    group.bench_function("tenancy_verifier", |b| {
        ran.set(true);
        b.iter(|| f.ours());
    });
    group.finish();
    if measuring(&ran) {
        paired(&f);
    }
}

/// Whether this run measures: a benchmark the filter selected ran, and this is not a
/// test run (`cargo test --benches`, `--test`) nor `--profile-time`.
fn measuring(ran: &Cell<bool>) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    ran.get() && flag("--bench") && !flag("--test") && !flag("--profile-time")
}

/// The verifier and the raw check timed interleaved: 40 rounds of blocks A B B A of
/// about 5 ms each; prints the median of the per-round ratios.
fn paired(f: &Fixture) {
    const ROUNDS: usize = 40;
    let calls = {
        let start = Instant::now();
        let mut n = 0_u32;
        while start.elapsed() < Duration::from_millis(5) {
            f.ours();
            n += 1;
        }
        n.max(1)
    };
    let time = |routine: &dyn Fn() -> bool| {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(routine());
        }
        start.elapsed().as_secs_f64()
    };
    let (mut ratios, mut ours_total, mut raw_total) = (Vec::with_capacity(ROUNDS), 0.0, 0.0);
    for _ in 0..ROUNDS {
        let a1 = time(&|| f.ours());
        let b1 = time(&|| f.raw());
        let b2 = time(&|| f.raw());
        let a2 = time(&|| f.ours());
        ours_total += a1 + a2;
        raw_total += b1 + b2;
        ratios.push((a1 + a2) / (b1 + b2));
    }
    ratios.sort_by(f64::total_cmp);
    let per_call = |total: f64| total / (2.0 * ROUNDS as f64 * f64::from(calls)) * 1e6;
    eprintln!(
        "paired verify: tenancy_verifier {:.2} µs / raw_es256 {:.2} µs = {:.3} (p10 {:.3}, p90 {:.3})",
        per_call(ours_total),
        per_call(raw_total),
        ratios.get(ROUNDS / 2).copied().unwrap_or(f64::NAN),
        ratios.get(ROUNDS / 10).copied().unwrap_or(f64::NAN),
        ratios.get(ROUNDS * 9 / 10).copied().unwrap_or(f64::NAN),
    );
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The benchmark list (in a private module: the macro's function has no docs).
mod suite {
    use super::{config, verify};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = verify
    }
}
criterion_main!(suite::benches);
