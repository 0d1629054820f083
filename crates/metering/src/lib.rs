//! # tenancy-metering
//!
//! Usage metering for multi-tenant applications: idempotent ingestion of usage events,
//! meters with per-window rollups, period totals for billing, and quotas. This crate is
//! reserved for that engine; it has no public items yet.
