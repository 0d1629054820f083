//! # tenancy-authz
//!
//! Authorization for multi-tenant applications, built on the Cedar policy language:
//! a policy store per tenant (schema, policies, templates, versions), in-process
//! authorization decisions evaluated against only the calling tenant's policies, and an
//! optional decision cache. This crate is reserved for that engine; it has no public
//! items yet.
