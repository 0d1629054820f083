#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod clock;
pub mod context;
pub mod error;
pub mod events;
pub mod identity;
pub mod ids;
pub mod memory;
#[cfg(feature = "oauth")]
pub mod oauth;
pub mod page;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_store;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "oauth")]
pub mod token;

pub use context::{Subject, TenantContext};
pub use error::{Error, ErrorKind, Result};
pub use ids::{
    ClientId, EventId, GrantId, InvitationId, MembershipId, TenantId, UserId, VerificationId,
};
