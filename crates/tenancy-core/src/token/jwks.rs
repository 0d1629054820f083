//! The published key set ([`Jwks`]), the verification keys parsed from it once, and the
//! [`KeyRing`] snapshot a [`super::KeyManager`] signs and verifies with.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{Algorithm, SigningKey};

/// The longest `kid` accepted in a key set.
const MAX_KID_BYTES: usize = 256;

/// A JSON Web Key Set (RFC 7517 §5): what `/.well-known/jwks.json` serves. Each key is
/// kept as the JSON object it was published as.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jwks {
    /// The public keys.
    pub keys: Vec<Value>,
}

/// A public key parsed once from a JWK, for the verifier's hot path.
pub(crate) struct VerifyKey {
    /// The one algorithm this key verifies.
    pub(crate) alg: Algorithm,
    /// The same key for `jsonwebtoken::decode`.
    pub(crate) decoding: DecodingKey,
    parsed: ParsedPublicKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Parses a public signing JWK; `Err` with the reason when it cannot verify any
    /// algorithm of ours: no `kid`, `use` other than `sig`, `key_ops` without `verify`,
    /// an unsupported key type or curve, an `alg` that does not fit the key, a symmetric
    /// (`oct`) key, or malformed key material.
    pub(crate) fn from_jwk(jwk: &Value) -> Result<(String, Self), String> {
        let member = |name: &str| jwk.get(name).and_then(Value::as_str);
        let kid = member("kid").ok_or("has no `kid`")?;
        if kid.is_empty() || kid.len() > MAX_KID_BYTES {
            return Err("has an empty or over-long `kid`".into());
        }
        if member("use").is_some_and(|u| u != "sig") {
            return Err("is not a signing key (`use` is not `sig`)".into());
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err("has `key_ops` without `verify`".into());
            }
        }
        let decode = |name: &str| {
            member(name)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or_else(|| format!("has no valid `{name}`"))
        };
        let kty = member("kty").ok_or("has no `kty`")?;
        let (alg, decoding, parsed) = match (kty, member("crv")) {
            ("EC", Some("P-256")) => {
                let (x, y) = (decode("x")?, decode("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("has P-256 coordinates of the wrong length".into());
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                    .map_err(|_| "is not a point on P-256")?;
                let decoding = DecodingKey::from_ec_der(&point);
                (Algorithm::Es256, decoding, parsed)
            }
            ("OKP", Some("Ed25519")) => {
                let x = decode("x")?;
                if x.len() != 32 {
                    return Err("has an Ed25519 key of the wrong length".into());
                }
                let parsed =
                    ParsedPublicKey::new(&ED25519, &x).map_err(|_| "is not an Ed25519 key")?;
                (Algorithm::EdDsa, DecodingKey::from_ed_der(&x), parsed)
            }
            ("RSA", _) => {
                let (n, e) = (decode("n")?, decode("e")?);
                let significant = n.iter().skip_while(|b| **b == 0).count();
                if !(256..=1024).contains(&significant) {
                    return Err("has an rsa modulus outside 2048 to 8192 bits".into());
                }
                let der = PublicKeyComponents { n: &n, e: &e }
                    .as_der()
                    .map_err(|_| "is not an rsa public key")?;
                let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der.as_ref())
                    .map_err(|_| "is not an rsa public key")?;
                let decoding = DecodingKey::from_rsa_raw_components(&n, &e);
                (Algorithm::Rs256, decoding, parsed)
            }
            ("oct", _) => return Err("is a symmetric key".into()),
            (kty, crv) => {
                return Err(format!(
                    "has an unsupported key type `{}`{}",
                    kty.escape_default(),
                    crv.map(|c| format!(" on curve `{}`", c.escape_default()))
                        .unwrap_or_default()
                ));
            }
        };
        if let Some(declared) = member("alg")
            && declared != alg.as_str()
        {
            return Err(format!(
                "declares `alg` `{}` for a {} key",
                declared.escape_default(),
                alg.as_str()
            ));
        }
        Ok((
            kid.to_owned(),
            Self {
                alg,
                decoding,
                parsed,
            },
        ))
    }

    /// Whether `signature` (raw bytes) is this key's signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(message, signature).is_ok()
    }
}

/// The verification keys of a key set by `kid`; keys that cannot verify are skipped
/// (logged at debug level), and the first of two keys with one `kid` wins.
pub(crate) fn index(jwks: &Jwks) -> HashMap<String, Arc<VerifyKey>> {
    let mut keys = HashMap::with_capacity(jwks.keys.len());
    for jwk in &jwks.keys {
        match VerifyKey::from_jwk(jwk) {
            Ok((kid, key)) => {
                keys.entry(kid).or_insert_with(|| Arc::new(key));
            }
            Err(reason) => tracing::debug!(%reason, "skipping a jwk that cannot verify tokens"),
        }
    }
    keys
}

/// One key that may sign, with its signing window.
#[derive(Debug)]
pub(crate) struct Signer {
    pub(crate) activates_at: DateTime<Utc>,
    pub(crate) retires_at: Option<DateTime<Utc>>,
    pub(crate) key: SigningKey,
}

/// A snapshot of the keys: those that may sign (in the order they take over), the
/// published key set, and its verification keys. Cheap to share; a
/// [`super::KeyManager`] swaps in a new one on every refresh.
pub struct KeyRing {
    signers: Vec<Signer>,
    jwks: Jwks,
    keys: HashMap<String, Arc<VerifyKey>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut published: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        published.sort_unstable();
        f.debug_struct("KeyRing")
            .field("signers", &self.signers)
            .field("published", &published)
            .finish()
    }
}

impl KeyRing {
    /// A ring with no keys: signs nothing, verifies nothing.
    pub(crate) fn empty() -> Self {
        Self {
            signers: Vec::new(),
            jwks: Jwks::default(),
            keys: HashMap::new(),
        }
    }

    /// A ring of `signers` (sorted so that the one taking over last comes last) and
    /// the published `jwks`.
    pub(crate) fn new(signers: Vec<Signer>, jwks: Jwks) -> Self {
        let keys = index(&jwks);
        Self {
            signers,
            jwks,
            keys,
        }
    }

    /// The key that signs at `now`: the newest that has activated and not retired.
    #[must_use]
    pub fn signing_key(&self, now: DateTime<Utc>) -> Option<&SigningKey> {
        self.signers
            .iter()
            .rev()
            .find(|s| s.activates_at <= now && s.retires_at.is_none_or(|r| now < r))
            .map(|s| &s.key)
    }

    /// The published key set: every key that signs, will sign soon, or signed tokens
    /// that may not have expired yet.
    #[must_use]
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The verification key of a published `kid`, for `jsonwebtoken::decode`.
    #[must_use]
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|k| &k.decoding)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::token::keys::generate;

    #[test]
    fn generated_jwks_parse_into_keys_of_their_algorithm() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
            let key = generate(alg).unwrap();
            let (kid, parsed) = VerifyKey::from_jwk(&key.public_jwk).unwrap();
            assert_eq!(kid, key.kid);
            assert_eq!(parsed.alg, alg);
            // Without `alg`, the key type decides.
            let mut bare = key.public_jwk.clone();
            bare.as_object_mut().unwrap().remove("alg");
            assert_eq!(VerifyKey::from_jwk(&bare).unwrap().1.alg, alg);
        }
    }

    #[test]
    fn unusable_jwks_are_refused_with_a_reason() {
        let ec = generate(Algorithm::Es256).unwrap().public_jwk;
        let with = |name: &str, value: Value| {
            let mut jwk = ec.clone();
            jwk.as_object_mut().unwrap().insert(name.into(), value);
            jwk
        };
        let without = |name: &str| {
            let mut jwk = ec.clone();
            jwk.as_object_mut().unwrap().remove(name);
            jwk
        };
        for (jwk, reason) in [
            (without("kid"), "kid"),
            (with("kid", json!("")), "kid"),
            (with("use", json!("enc")), "use"),
            (with("key_ops", json!(["sign"])), "key_ops"),
            (with("alg", json!("HS256")), "HS256"),
            (with("alg", json!("RS256")), "RS256"),
            (with("crv", json!("P-384")), "P-384"),
            (with("x", json!("AAAA")), "length"),
            (with("x", json!("not base64!")), "`x`"),
            (
                with("y", json!(URL_SAFE_NO_PAD.encode([1_u8; 32]))),
                "P-256",
            ),
            (
                json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"}),
                "symmetric",
            ),
            (
                json!({"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}),
                "2048",
            ),
            (json!("a string"), "kid"),
        ] {
            let err = VerifyKey::from_jwk(&jwk).unwrap_err();
            assert!(err.contains(reason), "{err} should mention {reason}");
        }
        let set = Jwks {
            keys: vec![with("use", json!("enc")), ec.clone()],
        };
        assert_eq!(index(&set).len(), 1);
    }
}
