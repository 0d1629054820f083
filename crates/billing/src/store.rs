//! The billing store: the catalog, and per tenant its records, written as one unit of
//! work per change ([`Changes`]) so a subscription change, the invoice it causes, the
//! customer's invoice counter, the events it emits (outbox) and the idempotency key
//! that asked for it commit together or not at all.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenancy_core::events::Event;
use tenancy_core::{Result, TenantId};
use uuid::Uuid;

use crate::ids::{InvoiceId, PlanId, ProductId, SubscriptionId};
use crate::model::{CreditNote, Customer, Invoice, InvoiceStatus, Plan, Product, Subscription};

/// The topic billing events are published on.
pub const BILLING_TOPIC: &str = "billing.events";

/// A write of one record in a [`Changes`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write<T> {
    /// A new record, with `version` 1. `AlreadyExists` when its id (or an invoice's
    /// `billing_key`) is taken.
    Insert(T),
    /// A new state of a stored record: its `version` is the stored one plus one, else
    /// `Conflict` (someone else wrote it since it was read). `NotFound` when absent.
    Update(T),
}

impl<T> Write<T> {
    /// The record written.
    #[must_use]
    pub fn record(&self) -> &T {
        match self {
            Self::Insert(r) | Self::Update(r) => r,
        }
    }
}

/// A saved response of an idempotent request: the same key with the same request
/// replays it; with another request it is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The client's key (scoped by tenant).
    pub key: String,
    /// A digest of the request that used it (operation and parameters).
    pub fingerprint: String,
    /// The response to replay.
    pub response: serde_json::Value,
    /// When it was saved; kept at least 24 hours.
    pub created_at: DateTime<Utc>,
}

/// An event of a payment provider that has been applied (incoming webhooks are
/// idempotent by event id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// The provider (`stripe`).
    pub provider: String,
    /// The provider's event id.
    pub event_id: String,
}

/// Everything one change writes for one tenant, committed atomically by
/// [`BillingStore::commit`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The tenant's customer profile.
    pub customer: Option<Write<Customer>>,
    /// Subscriptions.
    pub subscriptions: Vec<Write<Subscription>>,
    /// Invoices.
    pub invoices: Vec<Write<Invoice>>,
    /// New credit notes.
    pub credit_notes: Vec<CreditNote>,
    /// Events for [`BILLING_TOPIC`], through the outbox.
    pub events: Vec<Event>,
    /// The idempotency key of the request, with its response. `AlreadyExists` when
    /// the tenant used the key before.
    pub idempotency: Option<IdempotencyRecord>,
    /// A provider event being applied. `AlreadyExists` when it was applied before.
    pub provider_event: Option<ProviderEvent>,
}

/// What the scheduler looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueKind {
    /// Subscriptions whose current period has ended
    /// ([`Subscription::next_action_at`]).
    PeriodEnd,
    /// Open invoices whose next payment attempt is due ([`Invoice::next_action_at`]).
    PaymentRetry,
}

impl DueKind {
    /// The name stored.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PeriodEnd => "period_end",
            Self::PaymentRetry => "payment_retry",
        }
    }
}

/// A record the scheduler must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The subscription or invoice id.
    pub id: Uuid,
    /// Since when.
    pub due_at: DateTime<Utc>,
}

/// Which invoices to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvoiceFilter {
    /// Only this subscription's.
    pub subscription: Option<SubscriptionId>,
    /// Only in this state.
    pub status: Option<InvoiceStatus>,
}

/// Billing storage.
///
/// The catalog is shared by all tenants (the operator's price list). Everything else
/// is tenant data: each method names its tenant and never sees another tenant's
/// records (PostgreSQL enforces it with row-level security as well).
///
/// [`BillingStore::commit`] is atomic: all of a [`Changes`] is written, or nothing,
/// with every version check, unique key (invoice `billing_key` and `number`,
/// idempotency key, provider event) and the outbox events in one transaction. The
/// scheduling index ([`BillingStore::due`]) is kept in the same transaction from each
/// written record's `next_action_at`.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Adds a product. `AlreadyExists` for a taken id.
    async fn insert_product(&self, product: &Product) -> Result<()>;
    /// A product. `NotFound` when absent.
    async fn get_product(&self, id: ProductId) -> Result<Product>;
    /// Every product, oldest first.
    async fn list_products(&self) -> Result<Vec<Product>>;
    /// Adds a plan (`version` 1). `AlreadyExists` for a taken id.
    async fn insert_plan(&self, plan: &Plan) -> Result<()>;
    /// Replaces a plan whose stored version is `plan.version − 1`, else `Conflict`.
    async fn update_plan(&self, plan: &Plan) -> Result<()>;
    /// A plan. `NotFound` when absent.
    async fn get_plan(&self, id: PlanId) -> Result<Plan>;
    /// Every plan, oldest first.
    async fn list_plans(&self) -> Result<Vec<Plan>>;

    /// Writes `changes` for `tenant` atomically (see the trait's documentation). Every
    /// record must belong to `tenant` (`InvalidInput` otherwise).
    async fn commit(&self, tenant: TenantId, changes: &Changes) -> Result<()>;
    /// Writes several tenants' changes in one transaction, all or nothing: the first
    /// failure of any (the same as [`BillingStore::commit`]'s) fails the batch and
    /// nothing is written. At most one [`Changes`] per tenant (`InvalidInput`
    /// otherwise).
    async fn commit_batch(&self, batch: &[(TenantId, Changes)]) -> Result<()>;
    /// How many commits are worth running at once: SQLite has one writer (more only
    /// queue for its lock), PostgreSQL many. Unbounded by default.
    fn write_concurrency(&self) -> usize {
        usize::MAX
    }
    /// The tenant's customer profile. `NotFound` when absent.
    async fn get_customer(&self, tenant: TenantId) -> Result<Customer>;
    /// A subscription. `NotFound` when absent.
    async fn get_subscription(&self, tenant: TenantId, id: SubscriptionId) -> Result<Subscription>;
    /// The tenant's subscriptions, oldest first.
    async fn list_subscriptions(&self, tenant: TenantId) -> Result<Vec<Subscription>>;
    /// An invoice. `NotFound` when absent.
    async fn get_invoice(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice>;
    /// The tenant's invoices matching `filter`, oldest first, at most `limit`.
    async fn list_invoices(
        &self,
        tenant: TenantId,
        filter: &InvoiceFilter,
        limit: u32,
    ) -> Result<Vec<Invoice>>;
    /// The credit notes of an invoice, oldest first.
    async fn list_credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>>;
    /// The saved response of an idempotency key of the tenant.
    async fn get_idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>>;
    /// Forgets idempotency keys saved before `before` (of every tenant).
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Records of `kind` due at or before `now`, of every tenant, earliest first.
    async fn due(&self, kind: DueKind, now: DateTime<Utc>, limit: u32) -> Result<Vec<Due>>;
}

/// Checks a batch for [`BillingStore::commit_batch`]: each [`Changes`] with
/// [`check_changes`], and at most one per tenant.
pub fn check_batch(batch: &[(TenantId, Changes)]) -> Result<()> {
    let mut tenants = std::collections::HashSet::new();
    for (tenant, changes) in batch {
        if !tenants.insert(*tenant) {
            return Err(tenancy_core::Error::invalid(
                "batch",
                format!("tenant `{tenant}` has more than one change in the batch"),
            ));
        }
        check_changes(*tenant, changes)?;
    }
    Ok(())
}

/// Checks that every record of `changes` belongs to `tenant` and that versions follow
/// the [`Write`] contract (inserts at version 1).
pub fn check_changes(tenant: TenantId, changes: &Changes) -> Result<()> {
    use tenancy_core::Error;
    fn version<T>(w: &Write<T>, v: u64, what: &str) -> Result<()> {
        match w {
            Write::Insert(_) if v != 1 => Err(Error::invalid(
                "version",
                format!("a new {what} starts at version 1"),
            )),
            Write::Update(_) if v < 2 => Err(Error::invalid(
                "version",
                format!("an updated {what} has a version above 1"),
            )),
            _ => Ok(()),
        }
    }
    if let Some(c) = &changes.customer {
        tenant.check_scope(c.record().tenant_id)?;
        version(c, c.record().version, "customer")?;
    }
    for s in &changes.subscriptions {
        tenant.check_scope(s.record().tenant_id)?;
        version(s, s.record().version, "subscription")?;
    }
    for i in &changes.invoices {
        tenant.check_scope(i.record().tenant_id)?;
        version(i, i.record().version, "invoice")?;
    }
    for n in &changes.credit_notes {
        tenant.check_scope(n.tenant_id)?;
    }
    for e in &changes.events {
        tenant.check_scope(e.tenant_id())?;
    }
    Ok(())
}
