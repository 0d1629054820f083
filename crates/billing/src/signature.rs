//! Signed webhooks in Stripe's scheme: what this crate checks on payment webhooks it
//! receives from Stripe, and what it puts on the webhooks it sends to tenants, so a
//! tenant can verify them with any Stripe library.
//!
//! The sender signs the **raw bytes** of the body with a secret it shares with the
//! receiver and sends the result in a `Stripe-Signature` header:
//!
//! ```text
//! Stripe-Signature: t=1700000000,v1=0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd
//! ```
//!
//! - `t` is the unix time (seconds) of signing;
//! - each `v1` is the lowercase hex HMAC-SHA256, keyed with the secret's bytes, of the
//!   bytes `{t}.{raw body}`. While a secret is rotated the sender signs with the old and
//!   the new one and sends one `v1` each;
//! - other schemes (Stripe's test-mode `v0`, future ones) are ignored.
//!
//! [`verify`] checks a header against the raw body as received (never a re-serialized
//! JSON value: any change of a byte, even of whitespace, breaks the signature) and a
//! list of accepted secrets (several while one is rotated). It compares every `v1`
//! with the expected signature in constant time, then refuses a timestamp further than
//! the tolerance (by default [`DEFAULT_TOLERANCE`], 5 minutes) from now in either
//! direction: in the past, to bound replays; in the future, so a sender whose clock
//! runs ahead cannot mint signatures valid for longer than the tolerance. Only a
//! timestamp that a valid signature covers is judged, so a forged request is always
//! refused as a mismatch.
//!
//! ```
//! use std::time::Duration;
//! use tenancy_billing::signature::{self, SignatureError, DEFAULT_TOLERANCE};
//!
//! let body = br#"{"id":"evt_1","object":"event"}"#;
//! let header = signature::sign("whsec_test_secret", 1_700_000_000, body);
//! let secrets = ["whsec_old", "whsec_test_secret"];
//! assert_eq!(
//!     signature::verify(&header, body, &secrets, 1_700_000_042, DEFAULT_TOLERANCE),
//!     Ok(1_700_000_000)
//! );
//! assert_eq!(
//!     signature::verify(&header, b"{}", &secrets, 1_700_000_042, DEFAULT_TOLERANCE),
//!     Err(SignatureError::Mismatch)
//! );
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use aws_lc_rs::{constant_time, hmac};
use tenancy_core::Error;

/// The HTTP header carrying the signature (header names are case-insensitive).
pub const HEADER: &str = "Stripe-Signature";

/// How far a signature's timestamp may be from now, either way, by default: 5
/// minutes, as Stripe's libraries.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The only signature scheme this module produces and checks.
const SCHEME: &str = "v1";

/// Input echoed in an error message is cut to this many characters.
const MAX_ECHO: usize = 40;

/// Why a signature header was refused. Every kind but [`SignatureError::NoSecret`] is
/// the sender's problem and converts into [`Error::Unauthenticated`] (a request whose
/// signature cannot be verified, malformed or not, is not authenticated: a server
/// answers 401 to all of them alike); `NoSecret` is a configuration error of the
/// receiver and converts into [`Error::Internal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is absent or empty.
    #[error("the signature header is missing")]
    MissingHeader,
    /// The header is not a list of `key=value` pairs with one unix timestamp `t`.
    #[error("malformed signature header: {0}")]
    Malformed(String),
    /// The header has a timestamp but no `v1` signature.
    #[error("the signature header has no `v1` signature")]
    NoSignature,
    /// No `v1` signature matches the body under any of the secrets (wrong secret,
    /// altered body or timestamp).
    #[error("no signature matches the body")]
    Mismatch,
    /// The signature is valid but older than the tolerance allows (a replay or a
    /// delivery held up for too long).
    #[error("the signature timestamp `{timestamp}` is more than {tolerance} seconds old")]
    Expired {
        /// The header's timestamp (unix seconds).
        timestamp: i64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// The signature is valid but its timestamp is further in the future than the
    /// tolerance allows (the sender's clock is wrong, or it pre-signs requests).
    #[error("the signature timestamp `{timestamp}` is more than {tolerance} seconds in the future")]
    Future {
        /// The header's timestamp (unix seconds).
        timestamp: i64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// The receiver has no secret to verify with (none, or an empty one).
    #[error("no webhook signing secret is configured")]
    NoSecret,
}

impl From<SignatureError> for Error {
    fn from(err: SignatureError) -> Self {
        match err {
            SignatureError::NoSecret => Self::Internal(err.to_string()),
            other => Self::Unauthenticated(format!("webhook signature refused: {other}")),
        }
    }
}

/// The `Stripe-Signature` header value signing `raw_body` with `secret` at unix time
/// `timestamp`: `t={timestamp},v1={hex hmac-sha256 of "{timestamp}.{raw_body}"}`.
///
/// For a Stripe-style secret (`whsec_…`) pass the whole string: its UTF-8 bytes are
/// the key, as in Stripe's libraries.
#[must_use]
pub fn sign(secret: impl AsRef<[u8]>, timestamp: i64, raw_body: &[u8]) -> String {
    format!(
        "t={timestamp},{SCHEME}={}",
        expected_signature(secret.as_ref(), timestamp, raw_body)
    )
}

/// Verifies a `Stripe-Signature` header against the raw body as received, accepting a
/// signature by any of `secrets`, and returns the signed timestamp.
///
/// `now` is the receiver's unix time in seconds; the timestamp must be within
/// `tolerance` of it, before or after (a zero tolerance accepts only `now` itself).
/// The signature is checked first: every `v1` in the header (other schemes are
/// ignored) is compared in constant time with the expected one under every secret.
///
/// # Errors
///
/// [`SignatureError::NoSecret`] when `secrets` is empty or holds an empty secret;
/// [`SignatureError::MissingHeader`] for an empty header;
/// [`SignatureError::Malformed`] when a part is not `key=value`, or `t` is missing,
/// repeated or not a non-negative integer; [`SignatureError::NoSignature`] without
/// `v1`; [`SignatureError::Mismatch`] when no `v1` matches;
/// [`SignatureError::Expired`] / [`SignatureError::Future`] when the timestamp is
/// outside the tolerance.
pub fn verify<S: AsRef<[u8]>>(
    header: &str,
    raw_body: &[u8],
    secrets: &[S],
    now: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    if secrets.is_empty() || secrets.iter().any(|s| s.as_ref().is_empty()) {
        return Err(SignatureError::NoSecret);
    }
    let parsed = ParsedHeader::parse(header)?;
    let matched = secrets.iter().any(|secret| {
        let expected = expected_signature(secret.as_ref(), parsed.timestamp, raw_body);
        // Each comparison runs in constant time in the bytes compared; which
        // candidate matched reveals nothing about the secret.
        parsed.signatures.iter().any(|candidate| {
            constant_time::verify_slices_are_equal(candidate.as_bytes(), expected.as_bytes())
                .is_ok()
        })
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let tolerance_secs = tolerance.as_secs();
    let age = i128::from(now) - i128::from(parsed.timestamp);
    if age > i128::from(tolerance_secs) {
        return Err(SignatureError::Expired {
            timestamp: parsed.timestamp,
            tolerance: tolerance_secs,
        });
    }
    if -age > i128::from(tolerance_secs) {
        return Err(SignatureError::Future {
            timestamp: parsed.timestamp,
            tolerance: tolerance_secs,
        });
    }
    Ok(parsed.timestamp)
}

/// The lowercase hex HMAC-SHA256 of `{timestamp}.{raw_body}` keyed with `secret`.
fn expected_signature(secret: &[u8], timestamp: i64, raw_body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(raw_body);
    lower_hex(context.sign().as_ref())
}

/// `bytes` as lowercase hex.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `input` cut to [`MAX_ECHO`] characters, for an error message.
fn echo(input: &str) -> String {
    let cut: String = input.chars().take(MAX_ECHO).collect();
    let mut echoed = cut.escape_default().to_string();
    if cut.len() < input.len() {
        echoed.push('…');
    }
    echoed
}

/// The parts of a signature header this module reads.
struct ParsedHeader<'a> {
    timestamp: i64,
    signatures: Vec<&'a str>,
}

impl<'a> ParsedHeader<'a> {
    fn parse(header: &'a str) -> Result<Self, SignatureError> {
        let header = header.trim();
        if header.is_empty() {
            return Err(SignatureError::MissingHeader);
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            let part = part.trim();
            let Some((key, value)) = part.split_once('=') else {
                return Err(SignatureError::Malformed(format!(
                    "`{}` is not a `key=value` pair",
                    echo(part)
                )));
            };
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed("`t` appears twice".into()));
                    }
                    timestamp = Some(parse_timestamp(value)?);
                }
                SCHEME => signatures.push(value),
                _ => {}
            }
        }
        let Some(timestamp) = timestamp else {
            return Err(SignatureError::Malformed(
                "the timestamp `t` is missing".into(),
            ));
        };
        if signatures.is_empty() {
            return Err(SignatureError::NoSignature);
        }
        Ok(Self {
            timestamp,
            signatures,
        })
    }
}

/// A unix timestamp: ASCII digits only (no sign, no spaces), within `i64`.
fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    let malformed = || {
        SignatureError::Malformed(format!(
            "the timestamp `{}` is not a unix time in seconds",
            echo(value)
        ))
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    value.parse().map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const T: i64 = 1_700_000_000;
    /// HMAC-SHA256 of `1700000000.{BODY}` under `SECRET`, computed with
    /// `openssl dgst -sha256 -hmac`.
    const OPENSSL_V1: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

    fn check(header: &str, body: &[u8], now: i64) -> Result<i64, SignatureError> {
        verify(header, body, &[SECRET], now, DEFAULT_TOLERANCE)
    }

    #[test]
    fn signs_like_an_independent_hmac() {
        assert_eq!(sign(SECRET, T, BODY), format!("t={T},v1={OPENSSL_V1}"));
        assert_eq!(sign(SECRET.as_bytes(), T, BODY), sign(SECRET, T, BODY));
        assert_eq!(check(&sign(SECRET, T, BODY), BODY, T), Ok(T));
    }

    #[test]
    fn refuses_an_altered_body_or_timestamp_or_another_secret() {
        let header = sign(SECRET, T, BODY);
        let spaced = br#"{"id": "evt_1","object":"event"}"#;
        assert_eq!(check(&header, spaced, T), Err(SignatureError::Mismatch));
        assert_eq!(check(&header, b"", T), Err(SignatureError::Mismatch));
        let moved = format!("t={},v1={OPENSSL_V1}", T + 1);
        assert_eq!(check(&moved, BODY, T), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&header, BODY, &["whsec_other"], T, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        let upper = format!("t={T},v1={}", OPENSSL_V1.to_uppercase());
        assert_eq!(check(&upper, BODY, T), Err(SignatureError::Mismatch));
        let short = format!("t={T},v1={}", OPENSSL_V1.get(..32).unwrap_or_default());
        assert_eq!(check(&short, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn accepts_any_listed_secret_and_any_matching_v1() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(
            verify(&header, BODY, &["whsec_new", SECRET], T, DEFAULT_TOLERANCE),
            Ok(T)
        );
        // Rotation on the sender's side: one v1 per secret, in any order, next to
        // schemes this module ignores.
        let other = sign("whsec_new", T, BODY);
        let other_v1 = other.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let both = format!("t={T},v0=deadbeef,v1={other_v1},v1={OPENSSL_V1}");
        assert_eq!(check(&both, BODY, T), Ok(T));
        assert_eq!(
            verify(&both, BODY, &["whsec_new"], T, DEFAULT_TOLERANCE),
            Ok(T)
        );
        let spaced = format!(" t={T}, v1={OPENSSL_V1} ");
        assert_eq!(check(&spaced, BODY, T), Ok(T));
    }

    #[test]
    fn judges_the_timestamp_both_ways() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(check(&header, BODY, T + 300), Ok(T));
        assert_eq!(check(&header, BODY, T - 300), Ok(T));
        assert_eq!(
            check(&header, BODY, T + 301),
            Err(SignatureError::Expired {
                timestamp: T,
                tolerance: 300
            })
        );
        assert_eq!(
            check(&header, BODY, T - 301),
            Err(SignatureError::Future {
                timestamp: T,
                tolerance: 300
            })
        );
        let strict = verify(&header, BODY, &[SECRET], T + 1, Duration::ZERO);
        assert!(matches!(strict, Err(SignatureError::Expired { .. })));
        assert_eq!(verify(&header, BODY, &[SECRET], T, Duration::ZERO), Ok(T));
        // Extreme values neither overflow nor pass.
        assert!(check(&header, BODY, i64::MIN).is_err());
        assert!(check(&header, BODY, i64::MAX).is_err());
        let huge = verify(&header, BODY, &[SECRET], i64::MAX, Duration::MAX);
        assert_eq!(huge, Ok(T));
    }

    #[test]
    fn a_forged_stale_header_is_a_mismatch() {
        // Without a valid signature, the timestamp is not judged.
        let forged = format!("t=1,v1={OPENSSL_V1}");
        assert_eq!(check(&forged, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn refuses_malformed_headers() {
        assert_eq!(check("", BODY, T), Err(SignatureError::MissingHeader));
        assert_eq!(check("  ", BODY, T), Err(SignatureError::MissingHeader));
        assert_eq!(
            check(&format!("t={T}"), BODY, T),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            check(&format!("t={T},v0={OPENSSL_V1}"), BODY, T),
            Err(SignatureError::NoSignature)
        );
        for bad in [
            format!("v1={OPENSSL_V1}"),
            format!("t=,v1={OPENSSL_V1}"),
            format!("t=-1,v1={OPENSSL_V1}"),
            format!("t=+{T},v1={OPENSSL_V1}"),
            format!("t=1e9,v1={OPENSSL_V1}"),
            format!("t=99999999999999999999,v1={OPENSSL_V1}"),
            format!("t={T},t={T},v1={OPENSSL_V1}"),
            format!("t={T};v1={OPENSSL_V1}"),
            format!("t={T},,v1={OPENSSL_V1}"),
            format!("t={T},garbage,v1={OPENSSL_V1}"),
        ] {
            let result = check(&bad, BODY, T);
            assert!(
                matches!(result, Err(SignatureError::Malformed(_))),
                "{bad}: {result:?}"
            );
        }
        let long = format!("t={},v1={OPENSSL_V1}", "x".repeat(500));
        let err = check(&long, BODY, T)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("malformed signature header: the timestamp `xxxx"),
            "{err}"
        );
        assert!(err.len() < 120, "{err}");
    }

    #[test]
    fn needs_a_secret() {
        let header = sign(SECRET, T, BODY);
        let none: [&str; 0] = [];
        assert_eq!(
            verify(&header, BODY, &none, T, DEFAULT_TOLERANCE),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify(&header, BODY, &[SECRET, ""], T, DEFAULT_TOLERANCE),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn converts_into_error_kinds() {
        use tenancy_core::ErrorKind;
        let refused = Error::from(SignatureError::Mismatch);
        assert_eq!(refused.kind(), ErrorKind::Unauthenticated);
        assert_eq!(
            refused.to_string(),
            "webhook signature refused: no signature matches the body"
        );
        let malformed = Error::from(SignatureError::Malformed("x".into()));
        assert_eq!(malformed.kind(), ErrorKind::Unauthenticated);
        assert_eq!(
            Error::from(SignatureError::NoSecret).kind(),
            ErrorKind::Internal
        );
    }
}
