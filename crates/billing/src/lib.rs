//! # tenancy-billing
//!
//! Billing for multi-tenant applications: plans and prices, subscriptions with proration,
//! invoices priced from metered usage, payments and signed webhooks. This crate is
//! reserved for that engine; it has no public items yet.
