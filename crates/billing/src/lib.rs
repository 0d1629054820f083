//! # tenancy-billing
//!
//! Billing for multi-tenant applications, embeddable: the operator's catalog of plans
//! and prices, each tenant billed as a customer — subscriptions with proration,
//! invoices priced from metered usage, credit notes, payments and dunning, and signed
//! webhooks in and out.
//!
//! - [`money`]: integer minor units of an ISO 4217 currency ([`Money`], [`Currency`]),
//!   checked arithmetic, decimals rounded with an explicit [`Rounding`], exact
//!   largest-remainder allocation.
//! - [`price`]: flat, per-unit, graduated, volume and package prices with included
//!   units; [`calendar`]: periods anchored on a date (month ends, leap years) and
//!   proration by the second.
//! - [`Billing`] ([`service`]): the engine. Every change is one atomic [`Changes`]
//!   (records, invoice, customer counter, `billing.events` through the outbox, the
//!   idempotency key); [`Billing::run_due`] closes ended periods — usage in arrears
//!   from a [`UsageSource`] (tenancy-metering's rollups with `MeteringUsage`, feature
//!   `metering`), fees
//!   in advance — each period exactly once; [`Billing::collect_due`] charges invoices
//!   through a [`PaymentProvider`] ([`ManualProvider`], or `StripeProvider` with
//!   feature `stripe`) and runs
//!   dunning; [`Billing::apply_payment_event`] applies Stripe's verified events
//!   ([`provider_events`], [`signature`]) once, in any order.
//! - [`BillingStore`]: memory, SQLite and PostgreSQL (row-level security) backends,
//!   one conformance suite (feature `conformance`).
//! - `webhooks` (feature `webhooks`): the tenants' endpoints, deliveries signed
//!   like Stripe's, retried with backoff, every attempt recorded.
//!
//! ```
//! use std::sync::Arc;
//!
//! use chrono::{Duration, TimeZone, Utc};
//! use rust_decimal::Decimal;
//! use tenancy_billing::{
//!     Billing, Currency, CustomerInput, FixedUsage, InvoiceFilter, Interval, MemoryBillingStore,
//!     NewPlan, NewProduct, NewSubscription, Price, PriceKind, PriceModel, Rounding,
//! };
//! use tenancy_core::TenantId;
//! use tenancy_core::clock::ManualClock;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap()));
//! let usage = Arc::new(FixedUsage::new());
//! let billing = Billing::new(Arc::new(MemoryBillingStore::new()), usage.clone())
//!     .with_clock(clock.clone());
//! let usd = Currency::parse("USD")?;
//! let product = billing.create_product(NewProduct { name: "API".into(), description: String::new() }).await?;
//! let price = |description: &str, kind, pricing| Price {
//!     id: Default::default(), description: description.into(), kind, pricing,
//!     included_units: Decimal::ZERO, rounding: Rounding::HalfEven,
//! };
//! let plan = billing.create_plan(NewPlan {
//!     product_id: product.id, name: "Pro".into(), currency: usd, interval: Interval::Month,
//!     trial_days: 0,
//!     prices: vec![
//!         price("Seats", PriceKind::Fee, PriceModel::PerUnit { unit_amount: Decimal::from(30) }),
//!         price("Calls", PriceKind::Metered { meter: "calls".into() },
//!               PriceModel::PerUnit { unit_amount: Decimal::new(1, 2) }),
//!     ],
//! }).await?;
//! let tenant = TenantId::new();
//! billing.put_customer(tenant, CustomerInput {
//!     name: "Acme".into(), email: "billing@acme.example".into(), address: Default::default(),
//!     currency: usd, tax_rate: Decimal::from(10), provider_customer_id: None,
//!     invoice_prefix: Some("ACME".into()),
//! }, None).await?;
//! // Two seats from January 31: 60.00 + 10 % tax now.
//! let created = billing.create_subscription(tenant, NewSubscription {
//!     plan_id: plan.id, quantity: 2, trial_days: None, billing_anchor_day: None,
//!     backdate_start_date: None,
//! }, None).await?;
//! assert_eq!(created.invoice.map(|i| i.total), Some(6_600));
//! // The period ends on February 28: 1,500 calls in arrears, the next seats in advance.
//! usage.set(tenant, "calls", Decimal::from(1_500));
//! clock.advance(Duration::days(29));
//! assert_eq!(billing.run_due(100).await?.invoiced, 1);
//! let invoices = billing.invoices(tenant, &InvoiceFilter::default(), 10).await?;
//! assert_eq!(invoices[1].number.as_deref(), Some("ACME-0002"));
//! assert_eq!(invoices[1].total, 8_250);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
#![deny(missing_docs)]

pub mod calendar;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod ids;
pub mod invoice;
pub mod memory;
pub mod model;
pub mod money;
pub mod payment;
pub mod price;
pub mod provider_events;
pub mod service;
pub mod signature;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
pub mod store;
#[cfg(feature = "stripe")]
pub mod stripe;
pub mod usage;
#[cfg(feature = "webhooks")]
pub mod webhooks;

pub use calendar::{Interval, Period};
pub use ids::{
    CreditNoteId, InvoiceId, PaymentId, PlanId, PriceId, ProductId, SubscriptionId,
    WebhookDeliveryId, WebhookEndpointId,
};
pub use memory::MemoryBillingStore;
pub use model::{
    Address, BillingReason, CreditNote, CreditNoteLine, CreditOutcome, Customer, Invoice,
    InvoiceLine, InvoiceStatus, LineKind, Plan, Product, ScheduledChange, Subscription,
    SubscriptionStatus,
};
pub use money::{Currency, Money, Rounding};
pub use payment::{
    ChargeOutcome, ChargeRequest, CustomerRequest, ManualProvider, PaymentProvider,
    ProviderCustomerId, RefundOutcome, RefundRequest,
};
pub use price::{Price, PriceKind, PriceModel, Tier};
pub use provider_events::{PaymentEvent, PaymentEventKind, PaymentEventOutcome};
pub use service::{
    AfterRetries, Billing, BillingConfig, Cancel, CustomerInput, CycleReport, Effective,
    Idempotency, NewCreditNote, NewPlan, NewProduct, NewSubscription, PaymentReport, PlanChange,
    SubscriptionChange,
};
pub use signature::SignatureError;
pub use store::{
    BILLING_TOPIC, BillingStore, Changes, Due, DueKind, IdempotencyRecord, InvoiceFilter, Write,
};
#[cfg(feature = "stripe")]
pub use stripe::StripeProvider;
#[cfg(feature = "metering")]
pub use usage::MeteringUsage;
pub use usage::{FixedUsage, UsageSource};
#[cfg(feature = "webhooks")]
pub use webhooks::{
    MemoryWebhookStore, WebhookDelivery, WebhookDispatcher, WebhookEndpoint, WebhookStore, Webhooks,
};
