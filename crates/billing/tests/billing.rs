//! tenancy-billing integration tests: one binary (link time is precious), one module
//! per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "tests"
)]

#[path = "billing/properties.rs"]
mod properties;
#[path = "billing/stores.rs"]
mod stores;
