//! The servers, end to end: the identity gRPC service in process over a real TCP
//! socket (memory store), and the `tenancy` binary as an operator runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "servers/support.rs"]
mod support;

#[path = "servers/binary.rs"]
mod binary;
#[path = "servers/identity.rs"]
mod identity;
