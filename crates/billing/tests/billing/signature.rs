//! `signature.rs` against an independent implementation: the official `stripe` npm
//! package, run offline by `tests/stripe-signature.mjs`. Headers stripe-node makes are
//! accepted by `verify` (and refused when they should be), and headers `sign` makes
//! are accepted by stripe-node.

use std::error::Error;
use std::io::Write as _;
use std::process::{Command, Stdio};

use tenancy_billing::SignatureError;
use tenancy_billing::signature::{self, DEFAULT_TOLERANCE};
use tenancy_core::conformance::backend_url;

type TestResult = Result<(), Box<dyn Error>>;

const SECRET: &str = "whsec_2b6c8f0e4d1a4e7f9c3b5a7d9e1f3a5c";
const NOW: i64 = 1_767_225_600;
/// Raw bodies as a sender would send them: compact, pretty-printed with a final
/// newline, with non-ASCII text and escapes.
const BODIES: [&str; 3] = [
    r#"{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"amount_paid":1999}}}"#,
    "{\n  \"id\": \"evt_2\",\n  \"object\": \"event\",\n  \"livemode\": false\n}\n",
    r#"{"id":"evt_3","object":"event","data":{"object":{"description":"Café – 東京 \"quoted\" \\ \u00e9"}}}"#,
];

/// The `node_modules` holding the `stripe` package, or `None` (the test is skipped)
/// when `TENANCY_TEST_STRIPE_NODE_MODULES` is unset.
fn stripe_node() -> Option<String> {
    backend_url(
        "TENANCY_TEST_STRIPE_NODE_MODULES",
        "webhook signatures against stripe-node",
    )
}

/// Runs the script with `args` and `payload` on stdin: `Ok(Some(stdout))` when it
/// exits 0, `Ok(None)` when it exits 1 (a refusal), an error otherwise.
fn run_node(
    modules: &str,
    args: &[&str],
    payload: &[u8],
) -> Result<Option<String>, Box<dyn Error>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-signature.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .env("TENANCY_TEST_STRIPE_NODE_MODULES", modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `node` (is it on PATH?): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin for node")?
        .write_all(payload)?;
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(Some(stdout.trim().to_owned())),
        Some(1) if stderr.starts_with("refused: ") => Ok(None),
        status => {
            Err(format!("stripe-signature.mjs {args:?} failed ({status:?}): {stderr}").into())
        }
    }
}

/// The header stripe-node makes for `body` signed with `secret` at `timestamp`.
fn node_sign(
    modules: &str,
    secret: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, Box<dyn Error>> {
    let timestamp = timestamp.to_string();
    let args = ["sign", "--secret", secret, "--timestamp", &timestamp];
    let header = run_node(modules, &args, body)?.ok_or("stripe-node refused to sign")?;
    assert!(
        header.starts_with(&format!("t={timestamp},v1=")),
        "{header}"
    );
    Ok(header)
}

/// Whether stripe-node accepts `header` for `body` under `secret`, received at `NOW`.
fn node_accepts(
    modules: &str,
    header: &str,
    body: &[u8],
    secret: &str,
) -> Result<bool, Box<dyn Error>> {
    let now = NOW.to_string();
    let args = [
        "verify", "--secret", secret, "--header", header, "--now", &now,
    ];
    Ok(run_node(modules, &args, body)?.is_some())
}

fn ours(header: &str, body: &[u8], secrets: &[&str]) -> Result<i64, SignatureError> {
    signature::verify(header, body, secrets, NOW, DEFAULT_TOLERANCE)
}

#[test]
fn headers_made_by_stripe_node_are_accepted() -> TestResult {
    let Some(modules) = stripe_node() else {
        return Ok(());
    };
    for body in BODIES {
        let body = body.as_bytes();
        for signed_at in [NOW, NOW - 299, NOW + 299] {
            let header = node_sign(&modules, SECRET, signed_at, body)?;
            assert_eq!(ours(&header, body, &[SECRET]), Ok(signed_at), "{header}");
            // The same bytes, same secret, same timestamp: the same header.
            assert_eq!(header, signature::sign(SECRET, signed_at, body));
        }
    }
    Ok(())
}

#[test]
fn headers_made_by_stripe_node_are_refused_when_they_should_be() -> TestResult {
    let Some(modules) = stripe_node() else {
        return Ok(());
    };
    let body = BODIES[0].as_bytes();
    let header = node_sign(&modules, SECRET, NOW, body)?;

    // A tampered body: one byte changed, whitespace added, a re-serialization.
    let tampered = BODIES[0].replace("1999", "1000");
    assert_eq!(
        ours(&header, tampered.as_bytes(), &[SECRET]),
        Err(SignatureError::Mismatch)
    );
    let spaced = format!("{} ", BODIES[0]);
    assert_eq!(
        ours(&header, spaced.as_bytes(), &[SECRET]),
        Err(SignatureError::Mismatch)
    );
    // The wrong secret.
    assert_eq!(
        ours(&header, body, &["whsec_another_secret"]),
        Err(SignatureError::Mismatch)
    );
    // Stale and future timestamps, just outside the tolerance.
    let stale = node_sign(&modules, SECRET, NOW - 301, body)?;
    assert_eq!(
        ours(&stale, body, &[SECRET]),
        Err(SignatureError::Expired {
            timestamp: NOW - 301,
            tolerance: 300
        })
    );
    let future = node_sign(&modules, SECRET, NOW + 301, body)?;
    assert_eq!(
        ours(&future, body, &[SECRET]),
        Err(SignatureError::Future {
            timestamp: NOW + 301,
            tolerance: 300
        })
    );
    // No v1: stripe-node signing with another scheme, or the v1 part dropped.
    let now = NOW.to_string();
    let args = [
        "sign",
        "--secret",
        SECRET,
        "--timestamp",
        &now,
        "--scheme",
        "v0",
    ];
    let v0 = run_node(&modules, &args, body)?.ok_or("stripe-node refused to sign")?;
    assert!(v0.contains(",v0="), "{v0}");
    assert_eq!(ours(&v0, body, &[SECRET]), Err(SignatureError::NoSignature));
    let bare = header.split(',').next().unwrap_or_default();
    assert_eq!(
        ours(bare, body, &[SECRET]),
        Err(SignatureError::NoSignature)
    );
    Ok(())
}

#[test]
fn several_v1_are_accepted_when_one_matches() -> TestResult {
    let Some(modules) = stripe_node() else {
        return Ok(());
    };
    let body = BODIES[1].as_bytes();
    let old = node_sign(&modules, "whsec_old_secret", NOW, body)?;
    let new = node_sign(&modules, SECRET, NOW, body)?;
    let v1 = |header: &str| header.split_once(",v1=").map(|(_, v)| v.to_owned());
    let (old_v1, new_v1) = (v1(&old).ok_or("no v1")?, v1(&new).ok_or("no v1")?);
    // A sender rotating its secret signs with both.
    let both = format!("t={NOW},v1={old_v1},v1={new_v1}");
    assert_eq!(ours(&both, body, &[SECRET]), Ok(NOW));
    assert_eq!(ours(&both, body, &["whsec_old_secret"]), Ok(NOW));
    assert_eq!(
        ours(&both, body, &["whsec_third"]),
        Err(SignatureError::Mismatch)
    );
    // A receiver rotating its secret accepts both.
    assert_eq!(ours(&new, body, &["whsec_old_secret", SECRET]), Ok(NOW));
    // stripe-node agrees.
    assert!(node_accepts(&modules, &both, body, SECRET)?);
    assert!(node_accepts(&modules, &both, body, "whsec_old_secret")?);
    assert!(!node_accepts(&modules, &both, body, "whsec_third")?);
    Ok(())
}

#[test]
fn headers_made_by_sign_are_accepted_by_stripe_node() -> TestResult {
    let Some(modules) = stripe_node() else {
        return Ok(());
    };
    for body in BODIES {
        let body = body.as_bytes();
        let header = signature::sign(SECRET, NOW - 10, body);
        assert!(node_accepts(&modules, &header, body, SECRET)?, "{header}");
    }
    // stripe-node is not a rubber stamp: it refuses what ours refuses.
    let body = BODIES[0].as_bytes();
    let header = signature::sign(SECRET, NOW, body);
    let tampered = BODIES[0].replace("1999", "1000");
    assert!(!node_accepts(
        &modules,
        &header,
        tampered.as_bytes(),
        SECRET
    )?);
    assert!(!node_accepts(
        &modules,
        &header,
        body,
        "whsec_another_secret"
    )?);
    let stale = signature::sign(SECRET, NOW - 301, body);
    assert!(!node_accepts(&modules, &stale, body, SECRET)?);
    Ok(())
}
