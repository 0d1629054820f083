//! The servers, end to end: the identity and policy gRPC services in process over real
//! TCP sockets (memory stores), and the `tenancy` binary as an operator runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "servers/support.rs"]
mod support;

#[path = "servers/billing.rs"]
mod billing;
#[path = "servers/binary.rs"]
mod binary;
#[path = "servers/gateway.rs"]
mod gateway;
#[path = "servers/gateway_interop.rs"]
mod gateway_interop;
#[path = "servers/gateway_support.rs"]
mod gateway_support;
#[path = "servers/identity.rs"]
mod identity;
#[path = "servers/policy.rs"]
mod policy;
#[path = "servers/usage.rs"]
mod usage;
