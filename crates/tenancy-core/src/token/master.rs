//! The master key: the one secret of a deployment. It seals the signing keys at rest
//! (AES-256-GCM) and derives independent sub-keys (HMAC-SHA256) for the other secrets
//! the provider needs.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::error::{Error, Result};

/// The length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The AES-GCM tag length in bytes.
const TAG_LEN: usize = 16;

/// The deployment's master key: 32 random bytes, given to every server (for example as
/// base64 in an environment variable) and never stored next to the data it protects.
///
/// Its `Debug` form hides the key (and it has no `PartialEq`, whose comparison would
/// not run in constant time).
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Wraps raw key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a key written as base64 (standard or URL-safe alphabet, padded or not;
    /// surrounding whitespace is ignored). `InvalidInput` on field `master_key` when it
    /// is not base64 or not 32 bytes long; the message never repeats the input.
    pub fn from_base64(encoded: &str) -> Result<Self> {
        let encoded = encoded.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(encoded).ok())
            .ok_or_else(|| Error::invalid("master_key", "is not valid base64"))?;
        let bytes: [u8; MASTER_KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            Error::invalid(
                "master_key",
                format!(
                    "must be {MASTER_KEY_LEN} bytes, found {} (generate one with 32 random bytes in base64)",
                    decoded.len()
                ),
            )
        })?;
        Ok(Self(bytes))
    }

    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0_u8; MASTER_KEY_LEN];
        fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The key as padded standard base64, the form [`MasterKey::from_base64`] reads (to
    /// print a freshly generated key once).
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Encrypts and authenticates `plaintext` with AES-256-GCM; `aad` (for example the
    /// id of the record) is authenticated too and must be given again to
    /// [`MasterKey::open`]. The output is a random 96-bit nonce, the ciphertext and the
    /// 128-bit tag. Fails only when the system has no randomness.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0_u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.aead_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `aad`. `Internal` when
    /// the input is too short, was sealed under another key or with another `aad`, or
    /// was altered.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let (nonce, body) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .filter(|(_, body)| body.len() >= TAG_LEN)
            .ok_or_else(|| Error::Internal("sealed data is truncated".into()))?;
        let mut body = body.to_vec();
        let len = self
            .aead_key()?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| {
                Error::Internal(
                    "sealed data does not open: wrong master key, wrong record or altered data"
                        .into(),
                )
            })?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// A 32-byte sub-key for one purpose: HMAC-SHA256 of `label` under the master key.
    /// Different labels give independent keys, so a secret derived for one purpose
    /// (say `tenancy/client-secret`) reveals nothing about another (`tenancy/csrf`).
    #[must_use]
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, label.as_bytes());
        let mut out = [0_u8; 32];
        // HMAC-SHA256 tags are exactly 32 bytes.
        if let Some(bytes) = tag.as_ref().first_chunk::<32>() {
            out = *bytes;
        }
        out
    }

    fn aead_key(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Internal("the master key is not a valid aes-256 key".into()))
    }
}

/// Fills `buf` from the system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Unavailable(format!("no system randomness: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal(b"private key bytes", b"kid-1").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 17 + TAG_LEN);
        assert_eq!(key.open(&sealed, b"kid-1").unwrap(), b"private key bytes");
        // A fresh nonce every time.
        assert_ne!(sealed, key.seal(b"private key bytes", b"kid-1").unwrap());
        // Empty plaintext works too.
        let empty = key.seal(b"", b"").unwrap();
        assert!(key.open(&empty, b"").unwrap().is_empty());
    }

    #[test]
    fn open_refuses_wrong_key_aad_tampering_and_truncation() {
        let key = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let sealed = key.seal(b"secret", b"kid-1").unwrap();
        assert!(other.open(&sealed, b"kid-1").is_err());
        assert!(key.open(&sealed, b"kid-2").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(key.open(&bad, b"kid-1").is_err(), "flipped byte {i}");
        }
        for len in 0..sealed.len() {
            assert!(key.open(&sealed[..len], b"kid-1").is_err(), "length {len}");
        }
        let err = key.open(&[], b"").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Internal);
    }

    #[test]
    fn base64_forms_parse_and_bad_input_names_master_key() {
        let key = MasterKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(MasterKey::from_base64(&text).unwrap().0, key.0);
        assert_eq!(
            MasterKey::from_base64(&format!("  {text}\n")).unwrap().0,
            key.0
        );
        let url = URL_SAFE_NO_PAD.encode(key.0);
        assert_eq!(MasterKey::from_base64(&url).unwrap().0, key.0);

        let err = MasterKey::from_base64("not base64!").unwrap_err();
        assert_eq!(err.field(), Some("master_key"));
        let err = MasterKey::from_base64(&STANDARD.encode([1_u8; 16])).unwrap_err();
        assert_eq!(err.field(), Some("master_key"));
        assert!(err.to_string().contains("found 16"), "{err}");
    }

    #[test]
    fn debug_hides_the_key_and_derive_separates_labels() {
        let key = MasterKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
        let a = key.derive("tenancy/csrf");
        assert_eq!(a, key.derive("tenancy/csrf"));
        assert_ne!(a, key.derive("tenancy/cookie"));
        assert_ne!(a, MasterKey::from_bytes([8; 32]).derive("tenancy/csrf"));
        assert_ne!(a, [0; 32]);
    }
}
