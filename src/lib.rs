#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use tenancy_authz as authz;
pub use tenancy_billing as billing;
pub use tenancy_core as core;
pub use tenancy_metering as metering;

pub use tenancy_core::{Error, ErrorKind, Result, TenantId, UserId};
