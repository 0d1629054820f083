//! The billing records: the catalog (products and plans, shared by every tenant), and
//! per tenant its customer profile, subscriptions, invoices and credit notes.
//!
//! Amounts on records are whole minor units (`i64`) of the record's currency; credits
//! are negative. Every mutable record carries a `version` that each write increments:
//! writers pass the version they read and a stale one is a `Conflict`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result, TenantId};

use crate::calendar::{Interval, Period};
use crate::ids::{CreditNoteId, InvoiceId, PlanId, PriceId, ProductId, SubscriptionId};
use crate::money::Currency;
use crate::price::Price;

/// Something sold; plans price it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: ProductId,
    /// Its name, shown on invoices.
    pub name: String,
    /// A longer description.
    #[serde(default)]
    pub description: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A set of prices billed together every interval, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Its id.
    pub id: PlanId,
    /// The product it prices.
    pub product_id: ProductId,
    /// Its name (e.g. `Pro monthly`).
    pub name: String,
    /// The currency of every price.
    pub currency: Currency,
    /// How often it bills.
    pub interval: Interval,
    /// Free days before the first charge of a new subscription.
    #[serde(default)]
    pub trial_days: u32,
    /// Its prices: fees (in advance) and metered components (in arrears).
    pub prices: Vec<Price>,
    /// Whether new subscriptions may use it (archived plans keep their subscribers).
    pub active: bool,
    /// Incremented by every write.
    pub version: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Plan {
    /// The price with `id`.
    #[must_use]
    pub fn price(&self, id: PriceId) -> Option<&Price> {
        self.prices.iter().find(|p| p.id == id)
    }
}

/// A postal address, as printed on invoices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street and number.
    #[serde(default)]
    pub line1: String,
    /// More of it.
    #[serde(default)]
    pub line2: String,
    /// City.
    #[serde(default)]
    pub city: String,
    /// Postal code.
    #[serde(default)]
    pub postal_code: String,
    /// State or region.
    #[serde(default)]
    pub state: String,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default)]
    pub country: String,
}

/// A tenant as a billing customer: one per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The tenant billed.
    pub tenant_id: TenantId,
    /// The name on invoices.
    pub name: String,
    /// Where invoices are sent.
    pub email: String,
    /// The billing address.
    #[serde(default)]
    pub address: Address,
    /// The currency it is billed in: plans of other currencies are refused.
    pub currency: Currency,
    /// Tax as a percentage of each invoice's subtotal (e.g. `19` or `8.875`). Tax is
    /// computed once per invoice on the subtotal, rounded half-up to the minor unit,
    /// then spread over the lines by largest remainder so lines add up exactly.
    #[serde(default)]
    pub tax_rate: Decimal,
    /// The customer's id at the payment provider, once created there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_customer_id: Option<String>,
    /// Credit in minor units (from downgrades and credit notes), applied to the next
    /// invoices before any charge.
    #[serde(default)]
    pub balance: i64,
    /// The prefix of its invoice numbers (`PREFIX-0001`, …).
    pub invoice_prefix: String,
    /// The sequence number the next finalized invoice gets: numbers have no gaps.
    pub next_invoice_number: u64,
    /// Incremented by every write.
    pub version: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// In a free trial: nothing is charged until it ends.
    Trialing,
    /// Billed every period.
    Active,
    /// An invoice is unpaid after a failed payment; retries are scheduled.
    PastDue,
    /// Paused: no fees are invoiced while paused; usage is still billed.
    Paused,
    /// Ended; its last period is still closed for usage.
    Canceled,
}

impl SubscriptionStatus {
    /// The name used on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Paused => "paused",
            Self::Canceled => "canceled",
        }
    }
}

/// A plan change waiting for the end of the current period (a downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// The plan from the next period on.
    pub plan_id: PlanId,
    /// The quantity from the next period on.
    pub quantity: u32,
}

/// A tenant's subscription to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id.
    pub id: SubscriptionId,
    /// The tenant (customer) subscribed.
    pub tenant_id: TenantId,
    /// The plan in effect.
    pub plan_id: PlanId,
    /// The quantity of fee prices (seats).
    pub quantity: u32,
    /// Its state.
    pub status: SubscriptionStatus,
    /// The instant its periods are counted from (see [`crate::calendar`]).
    pub anchor: DateTime<Utc>,
    /// The current period: the scheduler closes it at its end.
    pub current_period: Period,
    /// When the trial ends (the first paid period starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_end: Option<DateTime<Utc>>,
    /// Cancel at the end of the current period instead of renewing.
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// When it was canceled (asked, for a cancellation at period end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
    /// When it stopped (no more periods after the one containing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// When it was paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<DateTime<Utc>>,
    /// A change that takes effect when the current period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_change: Option<ScheduledChange>,
    /// Whether the fees of the current period were invoiced (not when the period
    /// started while paused): only invoiced fees are credited on changes.
    #[serde(default = "yes")]
    pub fee_invoiced: bool,
    /// Whether the current period's closing invoice is still due (false once the final
    /// period of an ended subscription has been closed).
    pub open: bool,
    /// The most recent invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_invoice_id: Option<InvoiceId>,
    /// Incremented by every write.
    pub version: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

const fn yes() -> bool {
    true
}

impl Subscription {
    /// When the scheduler must next act on it: the end of its current period while
    /// it is open.
    #[must_use]
    pub fn next_action_at(&self) -> Option<DateTime<Utc>> {
        self.open.then_some(self.current_period.end)
    }
}

/// Where an invoice is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Editable, not numbered, not owed.
    Draft,
    /// Finalized: numbered, immutable, owed.
    Open,
    /// Paid in full (or owed nothing).
    Paid,
    /// Canceled after finalization; kept for the record.
    Void,
    /// Given up on after the last payment retry.
    Uncollectible,
}

impl InvoiceStatus {
    /// The name used on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Void => "void",
            Self::Uncollectible => "uncollectible",
        }
    }
}

impl std::str::FromStr for InvoiceStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "draft" => Self::Draft,
            "open" => Self::Open,
            "paid" => Self::Paid,
            "void" => Self::Void,
            "uncollectible" => Self::Uncollectible,
            other => {
                return Err(Error::invalid(
                    "status",
                    format!("`{other}` is not an invoice status"),
                ));
            }
        })
    }
}

/// Why an invoice was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingReason {
    /// The first fee of a new subscription.
    SubscriptionCreate,
    /// A period closed: its usage, and the next period's fee.
    SubscriptionCycle,
    /// A plan or quantity change: proration lines.
    SubscriptionUpdate,
    /// The last period of an ended subscription: its usage.
    Final,
}

/// What an invoice line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A fee for a period, in advance.
    Fee,
    /// Metered usage of a period, in arrears.
    Usage,
    /// Credit for the unused time of a fee that changed.
    ProrationCredit,
    /// Charge for the remaining time of a new fee.
    ProrationCharge,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// What it is for.
    pub kind: LineKind,
    /// Human description.
    pub description: String,
    /// The price it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_id: Option<PriceId>,
    /// The meter of a usage line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
    /// The quantity priced (units of usage, or seats).
    pub quantity: Decimal,
    /// The span of time it covers.
    pub period: Period,
    /// The amount before tax, in minor units (negative for credits).
    pub amount: i64,
    /// Its share of the invoice's tax, in minor units.
    pub tax: i64,
}

/// An invoice of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Its id.
    pub id: InvoiceId,
    /// The tenant billed.
    pub tenant_id: TenantId,
    /// The subscription it bills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    /// Its number, given at finalization (`PREFIX-0001`), without gaps per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Its state.
    pub status: InvoiceStatus,
    /// Why it was created.
    pub billing_reason: BillingReason,
    /// What makes it unique: the subscription and the period it closes (for cycle
    /// and final invoices), or the change it prices. A second invoice with the same
    /// key is refused (`AlreadyExists`), so each period is invoiced once.
    pub billing_key: String,
    /// Its currency.
    pub currency: Currency,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// The tax rate applied (percent).
    pub tax_rate: Decimal,
    /// Sum of line amounts.
    pub subtotal: i64,
    /// Tax on the subtotal (zero when the subtotal is not positive).
    pub tax: i64,
    /// `subtotal + tax`.
    pub total: i64,
    /// Customer balance applied at finalization (positive: credit used).
    #[serde(default)]
    pub balance_applied: i64,
    /// Total of credit notes issued against it.
    #[serde(default)]
    pub credited: i64,
    /// What is owed: `total − balance_applied − credited`, never below zero.
    pub amount_due: i64,
    /// What has been paid.
    #[serde(default)]
    pub amount_paid: i64,
    /// Failed payment attempts so far.
    #[serde(default)]
    pub payment_attempts: u32,
    /// When the next payment attempt is due (dunning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_payment_attempt: Option<DateTime<Utc>>,
    /// The provider's id of the last payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_payment_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<DateTime<Utc>>,
    /// When it was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    /// When it was voided or marked uncollectible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Incremented by every write.
    pub version: u64,
}

impl Invoice {
    /// When the scheduler must next act on it: its next payment attempt while open.
    #[must_use]
    pub fn next_action_at(&self) -> Option<DateTime<Utc>> {
        if self.status == InvoiceStatus::Open {
            self.next_payment_attempt
        } else {
            None
        }
    }
}

/// One line of a credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    /// What is credited.
    pub description: String,
    /// The amount credited, tax included, in minor units (positive).
    pub amount: i64,
}

/// What a credit note did with its amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditOutcome {
    /// Reduced what an open invoice owes.
    ReducedAmountDue,
    /// Added to the customer's balance (the invoice was paid).
    CustomerBalance,
}

/// A correction of a finalized invoice: finalized invoices never change otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// Its id.
    pub id: CreditNoteId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The invoice corrected.
    pub invoice_id: InvoiceId,
    /// Its number (`<invoice number>-CN<n>`).
    pub number: String,
    /// Why.
    pub reason: String,
    /// The lines.
    pub lines: Vec<CreditNoteLine>,
    /// Sum of the lines.
    pub total: i64,
    /// Where the credit went.
    pub outcome: CreditOutcome,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}
