//! Single-use secret tokens (invitations, email verification): 256 random bits handed
//! out once; only their SHA-256 is stored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A raw secret token. Returned once to the caller; its `Debug` form hides it so it is
/// never logged by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

impl SecretToken {
    /// A new random token (32 bytes, base64url without padding).
    pub fn generate() -> Result<Self> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Unavailable(format!("no system randomness: {e}")))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a token presented by a client, checking only its length bounds.
    pub fn from_presented(field: &str, token: &str) -> Result<Self> {
        if token.is_empty() || token.len() > 256 {
            return Err(Error::invalid(field, "is empty or too long"));
        }
        Ok(Self(token.to_owned()))
    }

    /// The token text, to hand to its owner (once).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash that is stored and looked up.
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// The SHA-256 of a [`SecretToken`]: what the stores keep and look up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a hash read from storage.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| Error::Internal("stored token hash is not 32 bytes".into()))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = SecretToken::generate().unwrap();
        let b = SecretToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(
            a.hash(),
            SecretToken::from_presented("token", a.expose())
                .unwrap()
                .hash()
        );
        assert_ne!(a.hash(), b.hash());
        assert_eq!(format!("{a:?}"), "SecretToken(..)");
        assert!(SecretToken::from_presented("token", "").is_err());
        assert_eq!(
            TokenHash::from_slice(a.hash().as_bytes()).unwrap(),
            a.hash()
        );
    }
}
