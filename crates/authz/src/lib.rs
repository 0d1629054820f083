#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod cache;
pub mod compile;
mod conform;
#[cfg(feature = "conformance")]
pub mod conformance;
mod engine;
mod entities;
mod json;
pub mod memory;
pub mod model;
mod names;
#[cfg(feature = "redis")]
mod redis_cache;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod store;

pub use cache::{DecisionCache, DecisionKey, MemoryDecisionCache};
pub use compile::{BUILTIN_SCHEMA, CompiledPolicies};
pub use engine::{
    Authz, AuthzConfig, BatchItem, CheckRequest, Decision, EvaluationError, MAX_BATCH, MAX_ENTITIES,
};
pub use entities::{EntityProvider, IdentityEntities, ROLE_TYPE, USER_TYPE};
pub use model::{
    PolicyDiagnostic, PolicyDocument, PolicySetDocument, PolicyVersion, SchemaDocument,
    TemplateLink, VersionInfo,
};
#[cfg(feature = "redis")]
pub use redis_cache::RedisDecisionCache;
pub use store::PolicyStore;
pub use tenancy_core::{Error, ErrorKind, Result};
