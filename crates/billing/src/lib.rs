//! # tenancy-billing
//!
//! Billing for multi-tenant applications: plans and prices, subscriptions with proration,
//! invoices priced from metered usage, payments and signed webhooks.
//!
//! What exists so far is its foundation, [`money`]: amounts in integer minor units of
//! an ISO 4217 currency ([`Money`], [`Currency`]), checked arithmetic, decimal prices
//! rounded with an explicit [`Rounding`], and exact largest-remainder allocation
//! ([`Money::allocate`]) so invoice lines always add up to their total.
//!
//! ```
//! use rust_decimal::Decimal;
//! use tenancy_billing::{Currency, Money, Rounding};
//!
//! # fn main() -> tenancy_core::Result<()> {
//! let usd = Currency::parse("USD")?;
//! // 1,234 units at 0.0125 USD each, rounded half-even to cents.
//! let fee = Money::from_decimal(Decimal::new(125, 4) * Decimal::from(1_234), usd, Rounding::HalfEven)?;
//! assert_eq!(fee.minor, 1_542);
//! // Split over three equal lines: 514 + 514 + 514.
//! let lines = fee.allocate(&[Decimal::ONE; 3])?;
//! assert_eq!(Money::sum(usd, lines)?, fee);
//! # Ok(())
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
