//! The tenancy reference servers: thin gRPC (and, as they land, HTTP) adapters over the
//! tenancy libraries, run by the `tenancy` binary.
//!
//! Each service has one entry point that takes a bound listener, the library object it
//! wraps and a shutdown future, so the binary and the tests start services the same
//! way: [`run_identity`] serves `tenancy.identity.v1.IdentityService` over an
//! [`Identity`](tenancy_core::identity::Identity), [`run_policy`] serves
//! `tenancy.policy.v1.PolicyService` over an [`Authz`](tenancy_authz::Authz) (built by
//! [`serve::policy_engine`]), each with `grpc.health.v1.Health` and server reflection.
//! The HTTP services follow the same shape: [`run_usage`] serves the usage API over a
//! [`Metering`](tenancy_metering::Metering), [`run_billing`] the billing API over a
//! [`Billing`](tenancy_billing::Billing) (with [`billing::run_scheduler`] closing ended
//! billing periods), each with `/api/openapi.json`, `/api/docs` and health endpoints.
//! [`serve::serve`] starts the services a [`config::Settings`] asks for.
//!
//! Handlers hold no business logic: they parse the request (bad input is
//! `INVALID_ARGUMENT` naming the field), call one library method and map the result;
//! library errors become gRPC statuses in one place, [`status`].

pub mod api_docs;
pub mod auth;
pub mod billing;
pub mod config;
mod convert;
mod error;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod limit;
pub mod policy;
pub mod proto;
pub mod serve;
pub mod status;
pub mod store;
pub mod usage;

pub use auth::AdminAuth;
pub use billing::run_billing;
pub use error::Error;
pub use gateway::run_gateway;
pub use serve::{run_identity, run_policy};
pub use usage::run_usage;
