//! Tokens and keys (feature `oauth`): signing keys (ES256 default, EdDSA, RS256) sealed
//! at rest under a master key, rotation, JWKS, JWT signing, and the verifier embedders use
//! to turn an access token into a [`crate::context::TenantContext`].
//!
//! - [`MasterKey`] seals the private keys (AES-256-GCM) and derives sub-keys.
//! - [`KeyManager`] keeps the signing keys' life cycle over a [`KeyStore`] (publish a
//!   next key ahead, rotate, retire, purge), signs tokens and serves the [`Jwks`].
//! - [`Verifier`] checks access tokens against a [`JwksSource`] ([`StaticJwks`], a
//!   [`KeyManager`], or `HttpJwks` with feature `jwks-http`) through a [`CachedJwks`].

mod claims;
#[cfg(feature = "jwks-http")]
mod http;
mod jwks;
mod keys;
mod manager;
mod master;
mod store;
mod verifier;

pub use claims::{AccessClaims, Audience, IdTokenClaims, at_hash};
#[cfg(feature = "jwks-http")]
pub use http::HttpJwks;
pub use jwks::{Jwks, KeyRing};
pub use keys::{Algorithm, SigningKey};
pub use manager::{KeyManager, RotationPolicy, TYP_ACCESS_TOKEN, TYP_ID_TOKEN};
pub use master::{MASTER_KEY_LEN, MasterKey};
pub use store::{KeyRecord, KeyStore};
pub use verifier::{
    CachedJwks, JwksSource, MAX_LEEWAY, MAX_TOKEN_BYTES, StaticJwks, VerifiedToken, Verifier,
    VerifierConfig,
};
