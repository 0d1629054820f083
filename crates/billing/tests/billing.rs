//! tenancy-billing integration tests, one binary: webhook signatures against the
//! official `stripe` npm package (when `TENANCY_TEST_STRIPE_NODE_MODULES` names its
//! `node_modules`; with `TENANCY_TEST_REQUIRE_BACKENDS=1` a missing one fails) and the
//! payment providers (the Stripe one against a local stub of Stripe's API).

#[path = "billing/payments.rs"]
mod payments;
#[path = "billing/signature.rs"]
mod signature;
