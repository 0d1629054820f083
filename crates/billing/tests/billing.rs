//! tenancy-billing integration tests, one binary (link time is precious), one module
//! per area: the store conformance suite on every backend, property tests, webhook
//! signatures against the official `stripe` npm package (when
//! `TENANCY_TEST_STRIPE_NODE_MODULES` names its `node_modules`; with
//! `TENANCY_TEST_REQUIRE_BACKENDS=1` a missing one fails) and the payment providers
//! (the Stripe one against a local stub of Stripe's API).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "tests"
)]

#[path = "billing/payments.rs"]
mod payments;
#[path = "billing/properties.rs"]
mod properties;
#[path = "billing/signature.rs"]
mod signature;
#[path = "billing/stores.rs"]
mod stores;
#[path = "billing/webhooks.rs"]
mod webhooks;
