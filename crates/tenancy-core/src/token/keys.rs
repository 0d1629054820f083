//! Signing algorithms, key generation (josekit), RFC 7638 key ids, and the decrypted
//! [`SigningKey`] built from a stored [`KeyRecord`].
//!
//! A [`SigningKey`] parses its private key once (aws-lc-rs) and keeps its encoded JOSE
//! headers, so signing a token costs one JSON serialization of the claims, base64url
//! and the signature itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair as JoseRsaKeyPair;
use jsonwebtoken::EncodingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::VerifyKey;
use super::manager::{TYP_ACCESS_TOKEN, TYP_ID_TOKEN};
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
            let pair = JoseRsaKeyPair::generate(RSA_BITS).map_err(fail)?;
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

/// A private key parsed once, for the signing hot path.
enum PrivateKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(Box<RsaKeyPair>),
}

impl PrivateKey {
    /// Parses a PKCS#8 private key for `alg`.
    fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Option<Self> {
        match alg {
            Algorithm::Es256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .ok()
                .map(Self::Es256),
            Algorithm::EdDsa => Ed25519KeyPair::from_pkcs8(der).ok().map(Self::EdDsa),
            Algorithm::Rs256 => RsaKeyPair::from_pkcs8(der)
                .ok()
                .map(|pair| Self::Rs256(Box::new(pair))),
        }
    }

    /// The raw signature of `message` (fixed-size `r || s` for ECDSA, as JWS wants);
    /// `None` only if the library fails.
    fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .ok()
                .map(|signature| signature.as_ref().to_vec()),
            Self::EdDsa(pair) => pair
                .try_sign(message)
                .ok()
                .map(|signature| signature.as_ref().to_vec()),
            Self::Rs256(pair) => {
                let mut signature = vec![0_u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .ok()
                .map(|()| signature)
            }
        }
    }

    /// The length of a signature in base64url without padding.
    fn encoded_signature_len(&self) -> usize {
        let bytes = match self {
            Self::Es256(_) | Self::EdDsa(_) => 64,
            Self::Rs256(pair) => pair.public_modulus_len(),
        };
        (bytes * 4).div_ceil(3)
    }
}

/// The JOSE header of the tokens the provider signs, members in the order
/// `jsonwebtoken` writes them.
#[derive(Serialize)]
struct JoseHeader<'a> {
    typ: &'a str,
    alg: &'a str,
    kid: &'a str,
}

/// The base64url JOSE header for `typ`, `alg` and `kid`.
fn encoded_header(typ: &str, alg: Algorithm, kid: &str) -> Result<String> {
    let json = serde_json::to_vec(&JoseHeader {
        typ,
        alg: alg.as_str(),
        kid,
    })
    .map_err(|e| Error::Internal(format!("cannot serialize a jose header: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// A decrypted private key, ready to sign: parsed once, with the encoded headers of
/// access tokens and ID tokens built once.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    private: Arc<PrivateKey>,
    /// The base64url header with `typ` [`TYP_ACCESS_TOKEN`].
    access_header: String,
    /// The base64url header with `typ` [`TYP_ID_TOKEN`].
    id_header: String,
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
    /// (unknown algorithm, `kid` that is not the thumbprint of the public key, private
    /// key that does not parse or whose signatures the published public key does not
    /// verify).
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
        let private = PrivateKey::from_pkcs8(alg, &der)
            .ok_or_else(|| broken(&format!("its private key is not an {alg} key")))?;
        // What it signs must verify with what is published.
        let (_, public) = VerifyKey::from_jwk(&record.public_jwk)
            .map_err(|why| broken(&format!("its public key {why}")))?;
        let probe = b"tenancy signing key self-test";
        let matches = public.alg == alg
            && private
                .sign(probe)
                .is_some_and(|signature| public.verify(probe, &signature));
        if !matches {
            return Err(broken("its private key does not match its public key"));
        }
        Ok(Self {
            access_header: encoded_header(TYP_ACCESS_TOKEN, alg, &record.kid)?,
            id_header: encoded_header(TYP_ID_TOKEN, alg, &record.kid)?,
            kid: record.kid.clone(),
            alg,
            key,
            private: Arc::new(private),
        })
    }

    /// Signs `claims` as a compact JWS with `kid`, `alg` and `typ` in the header
    /// (`{"typ":…,"alg":…,"kid":…}`, as `jsonwebtoken` writes it).
    pub(crate) fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        let failed =
            |what: &str| Error::Internal(format!("signing with key `{}` failed: {what}", self.kid));
        let header = match typ {
            TYP_ACCESS_TOKEN => Cow::Borrowed(self.access_header.as_str()),
            TYP_ID_TOKEN => Cow::Borrowed(self.id_header.as_str()),
            other => Cow::Owned(encoded_header(other, self.alg, &self.kid)?),
        };
        let claims = serde_json::to_vec(claims).map_err(|e| failed(&e.to_string()))?;
        let mut token = String::with_capacity(
            header.len()
                + (claims.len() * 4).div_ceil(3)
                + self.private.encoded_signature_len()
                + 2,
        );
        token.push_str(&header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self
            .private
            .sign(token.as_bytes())
            .ok_or_else(|| failed("the signature could not be computed"))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
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
    fn tokens_are_what_jsonwebtoken_writes_and_verify_with_the_published_key() {
        let master = MasterKey::generate().unwrap();
        let now = Utc::now();
        let claims = json!({"iss": "https://id.example", "sub": "s\u{e9}\"q", "exp": 4_000_000_000_i64, "aud": ["a", "b"]});
        for (alg, jwt_alg) in [
            (Algorithm::Es256, jsonwebtoken::Algorithm::ES256),
            (Algorithm::EdDsa, jsonwebtoken::Algorithm::EdDSA),
            (Algorithm::Rs256, jsonwebtoken::Algorithm::RS256),
        ] {
            let record = new_record(alg, &master, now, now).unwrap();
            let key = SigningKey::from_record(&record, &master).unwrap();
            for typ in [TYP_ACCESS_TOKEN, TYP_ID_TOKEN, "dpop+jwt"] {
                let token = key.sign(typ, &claims).unwrap();
                let mut header = jsonwebtoken::Header::new(jwt_alg);
                header.typ = Some(typ.to_owned());
                header.kid = Some(record.kid.clone());
                let reference = jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap();
                let signing_input = |t: &str| t.rsplit_once('.').unwrap().0.to_owned();
                assert_eq!(
                    signing_input(&token),
                    signing_input(&reference),
                    "{alg} {typ}"
                );
                if alg != Algorithm::Es256 {
                    // Ed25519 and RSASSA-PKCS1-v1_5 are deterministic.
                    assert_eq!(token, reference, "{alg} {typ}");
                }
                let jwk: jsonwebtoken::jwk::Jwk =
                    serde_json::from_value(record.public_jwk.clone()).unwrap();
                let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
                let mut validation = jsonwebtoken::Validation::new(jwt_alg);
                validation.set_audience(&["a"]);
                let decoded =
                    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
                assert_eq!(decoded.claims, claims);
                assert_eq!(decoded.header.typ.as_deref(), Some(typ));
                assert_eq!(decoded.header.kid.as_deref(), Some(record.kid.as_str()));
            }
        }
    }

    #[test]
    fn a_private_key_that_does_not_match_the_published_one_is_refused() {
        let master = MasterKey::generate().unwrap();
        let now = Utc::now();
        for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
            let mut record = new_record(alg, &master, now, now).unwrap();
            let stranger = generate(alg).unwrap();
            record.sealed_private_key = master
                .seal(&stranger.pkcs8_der, record.kid.as_bytes())
                .unwrap();
            let err = SigningKey::from_record(&record, &master).unwrap_err();
            assert!(err.to_string().contains("does not match"), "{alg}: {err}");
            // A private key of another algorithm does not even parse as this one.
            let other = if alg == Algorithm::Es256 {
                Algorithm::EdDsa
            } else {
                Algorithm::Es256
            };
            record.sealed_private_key = master
                .seal(&generate(other).unwrap().pkcs8_der, record.kid.as_bytes())
                .unwrap();
            assert!(SigningKey::from_record(&record, &master).is_err(), "{alg}");
        }
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255).collect();
        assert_eq!(pem_to_der(der_to_pem(&der).as_bytes()).unwrap(), der);
    }
}
