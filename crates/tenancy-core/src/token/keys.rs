//! Signing algorithms, key generation (josekit), RFC 7638 key ids, and the decrypted
//! [`SigningKey`] built from a stored [`KeyRecord`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::master::MasterKey;
use super::store::KeyRecord;
use crate::error::{Error, Result};

/// The bits of the RSA keys this module generates.
const RSA_BITS: u32 = 2048;

/// A JWS signing algorithm the provider signs with and the verifier accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (`ES256`): small, fast, the default.
    #[default]
    Es256,
    /// Ed25519 (`EdDSA`).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`), 2048-bit keys: for relying parties
    /// that support nothing else.
    Rs256,
}

impl Algorithm {
    /// The JWS name (`ES256`, `EdDSA`, `RS256`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a JWS name, ignoring ASCII case (for configuration files);
    /// `InvalidInput` on field `algorithm` for anything else.
    pub fn parse(name: &str) -> Result<Self> {
        [Self::Es256, Self::EdDsa, Self::Rs256]
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::invalid(
                    "algorithm",
                    format!(
                        "`{}` is not a supported signing algorithm (expected `ES256`, `EdDSA` or `RS256`)",
                        name.escape_default()
                    ),
                )
            })
    }

    /// The exact JWS name as it appears in a JOSE header (case-sensitive, as RFC 7515
    /// requires).
    pub(crate) fn from_jose(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    pub(crate) const fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The RFC 7638 thumbprint of a public JWK: base64url (no padding) of the SHA-256 of its
/// required members (`crv`, `kty`, `x`, `y` for EC; `e`, `kty`, `n` for RSA; `crv`,
/// `kty`, `x` for OKP), in lexicographic order, without whitespace.
pub(crate) fn thumbprint(jwk: &Value) -> Result<String> {
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("jwk", "has no `kty`"))?;
    let required: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => {
            return Err(Error::invalid(
                "jwk",
                format!(
                    "key type `{}` has no thumbprint here",
                    other.escape_default()
                ),
            ));
        }
    };
    let mut members = BTreeMap::new();
    for name in required {
        let value = jwk
            .get(*name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("jwk", format!("has no `{name}`")))?;
        members.insert(*name, value);
    }
    let canonical = serde_json::to_vec(&members)
        .map_err(|e| Error::Internal(format!("cannot serialize a jwk: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(&canonical)))
}

/// A freshly generated key pair.
pub(crate) struct GeneratedKey {
    /// The RFC 7638 thumbprint.
    pub kid: String,
    /// The public JWK with `kid`, `alg` and `use`.
    pub public_jwk: Value,
    /// The private key as PKCS#8 DER.
    pub pkcs8_der: Vec<u8>,
}

/// Generates a key pair for `alg` with josekit.
pub(crate) fn generate(alg: Algorithm) -> Result<GeneratedKey> {
    let fail = |e: josekit::JoseError| Error::Internal(format!("cannot generate a {alg} key: {e}"));
    let (pem, jwk) = match alg {
        Algorithm::Es256 => {
            let pair = EcKeyPair::generate(EcCurve::P256).map_err(fail)?;
            (pair.to_pem_private_key(), pair.to_jwk_public_key())
        }
        Algorithm::EdDsa => {
            let pair = EdKeyPair::generate(EdCurve::Ed25519).map_err(fail)?;
            (pair.to_pem_private_key(), pair.to_jwk_public_key())
        }
        Algorithm::Rs256 => {
            let pair = RsaKeyPair::generate(RSA_BITS).map_err(fail)?;
            (pair.to_pem_private_key(), pair.to_jwk_public_key())
        }
    };
    let pkcs8_der = pem_to_der(&pem)?;
    let generated: &Map<String, Value> = jwk.as_ref();
    let mut public = Map::new();
    for name in ["kty", "crv", "x", "y", "n", "e"] {
        if let Some(value) = generated.get(name) {
            public.insert(name.to_owned(), value.clone());
        }
    }
    let mut public_jwk = Value::Object(public);
    let kid = thumbprint(&public_jwk)?;
    if let Value::Object(members) = &mut public_jwk {
        members.insert("kid".into(), Value::String(kid.clone()));
        members.insert("alg".into(), Value::String(alg.as_str().into()));
        members.insert("use".into(), Value::String("sig".into()));
    }
    Ok(GeneratedKey {
        kid,
        public_jwk,
        pkcs8_der,
    })
}

/// A new stored key for `alg`, its private half sealed under `master` with the `kid`
/// as associated data (so a sealed key cannot be moved to another record).
pub(crate) fn new_record(
    alg: Algorithm,
    master: &MasterKey,
    created_at: DateTime<Utc>,
    activates_at: DateTime<Utc>,
) -> Result<KeyRecord> {
    let key = generate(alg)?;
    let sealed_private_key = master.seal(&key.pkcs8_der, key.kid.as_bytes())?;
    Ok(KeyRecord {
        kid: key.kid,
        alg: alg.as_str().into(),
        public_jwk: key.public_jwk,
        sealed_private_key,
        created_at,
        activates_at,
        retires_at: None,
        expires_at: None,
    })
}

/// The body of a PEM document, decoded.
fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(pem).map_err(|_| Error::Internal("pem is not utf-8".into()))?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| Error::Internal(format!("pem body is not base64: {e}")))
}

/// `der` wrapped as a PEM `PRIVATE KEY` document.
fn der_to_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    let mut rest = body.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        pem.push_str(line);
        pem.push('\n');
        rest = tail;
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// A decrypted private key, ready to sign.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key id (`kid`) put in the header of every token it signs.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm it signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The private key, for `jsonwebtoken::encode`.
    #[must_use]
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }

    /// Opens the sealed private key of `record` with `master`. `Internal` when the
    /// record does not open (wrong master key, altered record) or is inconsistent
    /// (unknown algorithm, `kid` that is not the thumbprint of the public key).
    pub(crate) fn from_record(record: &KeyRecord, master: &MasterKey) -> Result<Self> {
        let broken = |what: &str| {
            Error::Internal(format!("signing key `{}` is unusable: {what}", record.kid))
        };
        let alg = Algorithm::from_jose(&record.alg).ok_or_else(|| broken("unknown algorithm"))?;
        if thumbprint(&record.public_jwk).ok().as_deref() != Some(record.kid.as_str()) {
            return Err(broken("its kid is not the thumbprint of its public key"));
        }
        let der = master
            .open(&record.sealed_private_key, record.kid.as_bytes())
            .map_err(|_| broken("its private key does not open with this master key"))?;
        let key = match alg {
            Algorithm::Es256 => EncodingKey::from_ec_der(&der),
            Algorithm::EdDsa => EncodingKey::from_ed_der(&der),
            // jsonwebtoken wants PKCS#1 DER for RSA; its PEM reader unwraps PKCS#8.
            Algorithm::Rs256 => EncodingKey::from_rsa_pem(der_to_pem(&der).as_bytes())
                .map_err(|_| broken("its private key is not an rsa key"))?,
        };
        Ok(Self {
            kid: record.kid.clone(),
            alg,
            key,
        })
    }

    /// Signs `claims` as a compact JWS with `kid`, `alg` and `typ` in the header.
    pub(crate) fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        let mut header = Header::new(self.alg.to_jwt());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| Error::Internal(format!("signing with key `{}` failed: {e}", self.kid)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert!(thumbprint(&json!({"kty": "oct", "k": "abc"})).is_err());
        assert!(thumbprint(&json!({"kty": "EC", "crv": "P-256", "x": "a"})).is_err());
        assert!(thumbprint(&json!("not an object")).is_err());
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
            assert_eq!(Algorithm::parse(alg.as_str()).unwrap(), alg);
            assert_eq!(Algorithm::from_jose(alg.as_str()), Some(alg));
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), alg);
        }
        assert_eq!(Algorithm::parse("es256").unwrap(), Algorithm::Es256);
        assert_eq!(Algorithm::from_jose("es256"), None);
        assert_eq!(Algorithm::default(), Algorithm::Es256);
        let err = Algorithm::parse("HS256").unwrap_err();
        assert_eq!(err.field(), Some("algorithm"));
        assert!(err.to_string().contains("`HS256`"), "{err}");
    }

    #[test]
    fn generated_keys_have_thumbprint_kids_and_open_from_their_record() {
        let master = MasterKey::generate().unwrap();
        let now = Utc::now();
        for (alg, kty) in [
            (Algorithm::Es256, "EC"),
            (Algorithm::EdDsa, "OKP"),
            (Algorithm::Rs256, "RSA"),
        ] {
            let record = new_record(alg, &master, now, now).unwrap();
            let jwk = &record.public_jwk;
            assert_eq!(jwk["kty"], kty);
            assert_eq!(jwk["kid"], record.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "no private member in {jwk}");
            assert_eq!(thumbprint(jwk).unwrap(), record.kid);
            let key = SigningKey::from_record(&record, &master).unwrap();
            assert_eq!(key.kid(), record.kid);
            assert_eq!(key.algorithm(), alg);
            assert!(key.sign("JWT", &json!({"sub": "x"})).is_ok(), "{alg}");
            assert!(!format!("{key:?}").contains("EncodingKey"));

            let other = MasterKey::generate().unwrap();
            assert!(SigningKey::from_record(&record, &other).is_err());
            let mut moved = record.clone();
            moved.public_jwk = new_record(alg, &master, now, now).unwrap().public_jwk;
            assert!(SigningKey::from_record(&moved, &master).is_err());
        }
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255).collect();
        assert_eq!(pem_to_der(der_to_pem(&der).as_bytes()).unwrap(), der);
    }
}
