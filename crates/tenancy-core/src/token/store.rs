//! Storage of the provider's signing keys. Keys are issuer-wide (not tenant data); the
//! private half is stored only encrypted under the master key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One signing key as stored.
///
/// Its life: published in the JWKS from `created_at`; signs from `activates_at` (after
/// every verifier had time to fetch it); stops signing at `retires_at`; leaves the JWKS
/// at `expires_at` (when every token it signed has expired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id (`kid`): its RFC 7638 thumbprint.
    pub kid: String,
    /// The JWS algorithm name (`ES256`, `EdDSA`, `RS256`).
    pub alg: String,
    /// The public key as a JWK (JSON object).
    pub public_jwk: serde_json::Value,
    /// The private key (PKCS#8 DER) sealed with AES-256-GCM under the master key.
    pub sealed_private_key: Vec<u8>,
    /// When it was created and published.
    pub created_at: DateTime<Utc>,
    /// When it starts signing.
    pub activates_at: DateTime<Utc>,
    /// When it stops signing, once decided.
    pub retires_at: Option<DateTime<Utc>>,
    /// When it leaves the JWKS, once decided.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The signing keys. Writes are rare (rotation); reads happen at start-up and on refresh.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored key, oldest first.
    async fn keys(&self) -> Result<Vec<KeyRecord>>;
    /// Stores a new key; `AlreadyExists` if its `kid` is taken.
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;
    /// Sets when a key starts signing (a forced rotation promotes the published next key
    /// now); `NotFound` if no such key.
    async fn activate_key(&self, kid: &str, activates_at: DateTime<Utc>) -> Result<()>;
    /// Sets when a key stops signing and leaves the JWKS; `NotFound` if no such key.
    async fn retire_key(
        &self,
        kid: &str,
        retires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Deletes keys whose `expires_at` is before `now`; returns how many went.
    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64>;
}
