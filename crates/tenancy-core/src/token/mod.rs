//! Tokens and keys (feature `oauth`): signing keys (ES256 default, EdDSA, RS256) sealed
//! at rest under a master key, rotation, JWKS, JWT signing, and the verifier embedders use
//! to turn an access token into a [`crate::context::TenantContext`].

mod store;

pub use store::{KeyRecord, KeyStore};
