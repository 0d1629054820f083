//! Password hashing with argon2id (the `argon2` crate, OWASP default parameters).

use std::fmt;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::{Error, Result};

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An argon2id password hash in PHC string form (`$argon2id$v=19$...`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hashes a password with a fresh random salt, after checking its length.
    pub fn new(password: &str) -> Result<Self> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(Error::invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters long"),
            ));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid(
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes long"),
            ));
        }
        hash(password)
    }

    /// Wraps a PHC string read from storage, checking that it parses.
    pub fn from_phc(phc: &str) -> Result<Self> {
        phc::PasswordHash::new(phc)
            .map_err(|e| Error::Internal(format!("stored password hash is corrupt: {e}")))?;
        Ok(Self(phc.to_owned()))
    }

    /// The PHC string, for storage.
    #[must_use]
    pub fn as_phc(&self) -> &str {
        &self.0
    }

    /// Whether `password` matches. The comparison of the derived key is constant-time;
    /// a wrong password costs one full argon2id evaluation, like a right one.
    #[must_use]
    pub fn verify(&self, password: &str) -> bool {
        let Ok(parsed) = phc::PasswordHash::new(&self.0) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }
}

fn hash(password: &str) -> Result<PasswordHash> {
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::Unavailable(format!("no system randomness: {e}")))?;
    let hashed: phc::PasswordHash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))?;
    Ok(PasswordHash(hashed.to_string()))
}

/// Verifies `password` against an optional stored hash. When there is no hash (unknown
/// user, or a user without a password) a fixed dummy hash is verified instead, so the
/// answer takes the same time whether or not the account exists.
#[must_use]
pub fn verify_password(stored: Option<&PasswordHash>, password: &str) -> bool {
    match stored {
        Some(hash) => hash.verify(password),
        None => {
            static DUMMY: OnceLock<Option<PasswordHash>> = OnceLock::new();
            if let Some(dummy) = DUMMY.get_or_init(|| hash("tenancy-dummy-password").ok()) {
                let _ = dummy.verify(password);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let h = PasswordHash::new("correct horse battery").unwrap();
        assert!(h.as_phc().starts_with("$argon2id$"));
        assert!(h.verify("correct horse battery"));
        assert!(!h.verify("correct horse battery!"));
        let again = PasswordHash::from_phc(h.as_phc()).unwrap();
        assert!(again.verify("correct horse battery"));
        assert_ne!(
            PasswordHash::new("correct horse battery").unwrap(),
            h,
            "salted"
        );
    }

    #[test]
    fn length_rules_and_missing_hash() {
        assert_eq!(
            PasswordHash::new("short").unwrap_err().field(),
            Some("password")
        );
        assert!(PasswordHash::new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(!verify_password(None, "anything at all"));
        assert!(PasswordHash::from_phc("not a hash").is_err());
        assert!(!format!("{:?}", PasswordHash::new("secret-secret").unwrap()).contains("argon2"));
    }
}
