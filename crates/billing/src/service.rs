//! [`Billing`]: the billing engine over a [`BillingStore`] and a [`UsageSource`].
//!
//! Every change is one [`Changes`] committed atomically: the records it touches, the
//! invoice it causes (finalized and numbered in the same commit when
//! [`BillingConfig::auto_finalize`] is on), the `billing.events` it emits (outbox) and,
//! when the caller passed one, its [`Idempotency`] key with the response. Concurrent
//! writers are serialized by record versions: a loser re-reads and tries again.
//!
//! Billing periods are closed by [`Billing::run_due`]: usage of the closed period is
//! invoiced in arrears, fees of the next period in advance, in one invoice whose
//! `billing_key` (subscription + period start) is unique, so a period is invoiced
//! once even when two schedulers race or one crashes mid-way (its transaction never
//! committed, and the period is still due).

use std::collections::HashMap;
use std::future::Future;

use futures_util::StreamExt as _;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tenancy_core::clock::{Clock, SystemClock};
use tenancy_core::events::Event;
use tenancy_core::{Error, ErrorKind, Result, TenantId};

use crate::calendar::{Interval, Period, next_anchor_day, period_containing, prorate};
use crate::ids::{InvoiceId, PlanId, ProductId, SubscriptionId};
use crate::invoice::{InvoiceDraft, finalize};
use crate::model::{
    Address, BillingReason, CreditNote, CreditNoteLine, CreditOutcome, Customer, Invoice,
    InvoiceLine, InvoiceStatus, LineKind, Plan, Product, ScheduledChange, Subscription,
    SubscriptionStatus,
};
use crate::money::{Currency, Money};
use crate::payment::{
    ChargeOutcome, ChargeRequest, CustomerRequest, PaymentProvider, ProviderCustomerId,
};
use crate::price::{Price, PriceKind};
use crate::provider_events::{PaymentEvent, PaymentEventKind, PaymentEventOutcome};
use crate::store::{
    BillingStore, Changes, Due, DueKind, IdempotencyRecord, InvoiceFilter, ProviderEvent, Write,
};
use crate::usage::UsageSource;

/// How often a change that lost a version race is tried again.
const ATTEMPTS: usize = 8;

/// What happens when the last payment retry of an invoice fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterRetries {
    /// Cancel the subscription now; the invoice stays open.
    CancelSubscription,
    /// Mark the invoice uncollectible; the subscription stays past due.
    MarkUncollectible,
}

/// Settings of the billing engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingConfig {
    /// Finalize (number) invoices when they are created; otherwise they stay drafts
    /// until [`Billing::finalize_invoice`].
    pub auto_finalize: bool,
    /// Delays after each failed payment before the next attempt (dunning), e.g.
    /// 1, 3 and 5 days.
    pub retry_schedule: Vec<Duration>,
    /// What follows the last failed retry.
    pub after_retries: AfterRetries,
    /// The `source` of emitted events.
    pub source: String,
    /// How many periods a scheduler pass closes at once.
    pub concurrency: usize,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            auto_finalize: true,
            retry_schedule: vec![Duration::days(1), Duration::days(3), Duration::days(5)],
            after_retries: AfterRetries::CancelSubscription,
            source: "/tenancy/billing".into(),
            concurrency: 8,
        }
    }
}

/// The idempotency key of a request (Stripe's semantics): the first request with a
/// key saves its response in the same commit as its effect; the same key with the
/// same `fingerprint` replays it; with another fingerprint it is a `Conflict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key (1–255 printable characters), scoped to the tenant.
    pub key: String,
    /// A digest of the operation and its parameters.
    pub fingerprint: String,
}

impl Idempotency {
    /// A key for a request; `InvalidInput` on `Idempotency-Key` when empty, longer
    /// than 255 bytes or not printable ASCII.
    pub fn new(key: &str, fingerprint: impl Into<String>) -> Result<Self> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(Error::invalid(
                "Idempotency-Key",
                "must be 1–255 printable ASCII characters without spaces",
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            fingerprint: fingerprint.into(),
        })
    }
}

/// A new product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    /// Its name.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: String,
}

/// A new plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPlan {
    /// The product it prices.
    pub product_id: ProductId,
    /// Its name.
    pub name: String,
    /// Its currency.
    pub currency: Currency,
    /// Its interval.
    pub interval: Interval,
    /// Trial days of new subscriptions.
    #[serde(default)]
    pub trial_days: u32,
    /// Its prices (ids are generated when absent).
    pub prices: Vec<Price>,
}

/// A tenant's billing profile, as set by [`Billing::put_customer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerInput {
    /// The name on invoices.
    pub name: String,
    /// Where invoices are sent.
    pub email: String,
    /// The billing address.
    #[serde(default)]
    pub address: Address,
    /// The billing currency (fixed once set).
    pub currency: Currency,
    /// Tax in percent (0–100).
    #[serde(default)]
    pub tax_rate: Decimal,
    /// The payment provider's customer id.
    #[serde(default)]
    pub provider_customer_id: Option<String>,
    /// The invoice number prefix (3–12 uppercase letters or digits); derived from the
    /// tenant id when absent.
    #[serde(default)]
    pub invoice_prefix: Option<String>,
}

/// A new subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSubscription {
    /// The plan.
    pub plan_id: PlanId,
    /// Seats (quantity of fee prices), 1 by default.
    #[serde(default = "one")]
    pub quantity: u32,
    /// Trial days instead of the plan's (0: no trial).
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// Bill on this day of the month (1–31, clamped to short months), at midnight
    /// UTC; the first period until then is prorated. By default periods start when
    /// the subscription (or its trial end) does.
    #[serde(default)]
    pub billing_anchor_day: Option<u32>,
    /// Start in the past (at most a year ago, e.g. when migrating a customer): its
    /// periods count from then, the first one's fees are invoiced now, and periods
    /// that have already ended are closed by the next scheduler pass.
    #[serde(default)]
    pub backdate_start_date: Option<DateTime<Utc>>,
}

const fn one() -> u32 {
    1
}

/// When a plan change takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    /// Now, prorated: unused time of the old fees credited, the rest of the period
    /// of the new fees charged, on an invoice of its own.
    #[default]
    Now,
    /// When the current period ends (a downgrade, usually): nothing is prorated.
    PeriodEnd,
}

/// A change of plan or quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChange {
    /// The new plan (same currency and interval); the current one when absent.
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    /// The new quantity; unchanged when absent.
    #[serde(default)]
    pub quantity: Option<u32>,
    /// When.
    #[serde(default)]
    pub effective: Effective,
}

/// How a subscription is canceled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// At the end of the current period (it can be reactivated until then) instead
    /// of now.
    #[serde(default)]
    pub at_period_end: bool,
    /// When canceling now: credit the unused time of the fees to the balance.
    #[serde(default)]
    pub prorate: bool,
}

/// A subscription after a change, and the invoice the change caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionChange {
    /// The subscription.
    pub subscription: Subscription,
    /// The invoice, if the change made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<Invoice>,
}

/// A new credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCreditNote {
    /// Why.
    pub reason: String,
    /// What is credited (tax included, positive amounts).
    pub lines: Vec<CreditNoteLine>,
}

/// What a [`Billing::run_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    /// Periods closed by this pass.
    pub closed: usize,
    /// Invoices created.
    pub invoiced: usize,
    /// Due periods someone else closed first.
    pub skipped: usize,
    /// Periods that failed (still due; logged).
    pub failed: usize,
}

/// The billing engine.
pub struct Billing {
    store: Arc<dyn BillingStore>,
    usage: Arc<dyn UsageSource>,
    payments: Option<Arc<dyn PaymentProvider>>,
    clock: Arc<dyn Clock>,
    config: BillingConfig,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::invalid(field, reason)
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("cannot encode a record: {e}")))
}

impl Billing {
    /// An engine over `store`, pricing usage from `usage`, on the system clock and the
    /// default configuration.
    #[must_use]
    pub fn new(store: Arc<dyn BillingStore>, usage: Arc<dyn UsageSource>) -> Self {
        Self {
            store,
            usage,
            payments: None,
            clock: Arc::new(SystemClock),
            config: BillingConfig::default(),
        }
    }

    /// The same engine collecting finalized invoices through `provider`: each open
    /// invoice with an amount due is charged by [`Billing::collect_due`] (the
    /// scheduler), and charged again on the dunning schedule after a failure. Without
    /// a provider, invoices stay open until [`Billing::mark_paid`].
    #[must_use]
    pub fn with_payments(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.payments = Some(provider);
        self
    }

    /// The same engine on another clock (tests, simulations).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same engine with other settings.
    #[must_use]
    pub fn with_config(mut self, config: BillingConfig) -> Self {
        self.config = config;
        self
    }

    /// Its store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn BillingStore> {
        &self.store
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &BillingConfig {
        &self.config
    }

    /// The current time of its clock.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn event<T: Serialize>(
        &self,
        tenant: TenantId,
        kind: &str,
        subject: impl std::fmt::Display,
        data: &T,
    ) -> Result<Event> {
        Ok(Event::new(
            tenant,
            format!("tenancy.billing.{kind}"),
            self.config.source.clone(),
            subject.to_string(),
            json(data)?,
        )?
        .with_time(self.now()))
    }

    async fn saved<T: DeserializeOwned>(
        &self,
        tenant: TenantId,
        idem: Option<&Idempotency>,
    ) -> Result<Option<T>> {
        let Some(idem) = idem else { return Ok(None) };
        let Some(saved) = self.store.get_idempotency(tenant, &idem.key).await? else {
            return Ok(None);
        };
        if saved.fingerprint != idem.fingerprint {
            return Err(Error::Conflict(format!(
                "idempotency key `{}` was used with other parameters",
                idem.key
            )));
        }
        serde_json::from_value(saved.response)
            .map(Some)
            .map_err(|e| Error::Internal(format!("the saved response does not decode: {e}")))
    }

    /// Runs `op` (which reads what it needs and returns the changes and the result),
    /// commits, and tries again when it lost a version race; replays the saved
    /// result of an idempotency key.
    async fn transact<T, F, Fut>(
        &self,
        tenant: TenantId,
        idem: Option<&Idempotency>,
        mut op: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(Changes, T)>>,
    {
        if let Some(saved) = self.saved(tenant, idem).await? {
            return Ok(saved);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut changes, value) = op().await?;
            if let Some(i) = idem {
                changes.idempotency = Some(IdempotencyRecord {
                    key: i.key.clone(),
                    fingerprint: i.fingerprint.clone(),
                    response: json(&value)?,
                    created_at: self.now(),
                });
            }
            match self.store.commit(tenant, &changes).await {
                Ok(()) => return Ok(value),
                Err(e) => {
                    if let Some(saved) = self.saved(tenant, idem).await? {
                        return Ok(saved);
                    }
                    if e.kind() != ErrorKind::Conflict || attempt >= ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    // ---- catalog ----

    /// Adds a product.
    pub async fn create_product(&self, input: NewProduct) -> Result<Product> {
        check_name("name", &input.name)?;
        let product = Product {
            id: ProductId::new(),
            name: input.name,
            description: input.description,
            created_at: self.now(),
        };
        self.store.insert_product(&product).await?;
        Ok(product)
    }

    /// Adds a plan: at least one price, at most 20, each valid, metered prices on
    /// distinct meters; its product must exist.
    pub async fn create_plan(&self, input: NewPlan) -> Result<Plan> {
        check_name("name", &input.name)?;
        if input.prices.is_empty() || input.prices.len() > 20 {
            return Err(invalid("prices", "a plan has 1–20 prices"));
        }
        let mut meters = std::collections::HashSet::new();
        for price in &input.prices {
            price.validate()?;
            if let Some(m) = price.meter()
                && !meters.insert(m)
            {
                return Err(invalid("prices", format!("meter `{m}` is priced twice")));
            }
        }
        let mut ids = std::collections::HashSet::new();
        if !input.prices.iter().all(|p| ids.insert(p.id)) {
            return Err(invalid("prices", "price ids must be distinct"));
        }
        self.store
            .get_product(input.product_id)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => invalid(
                    "product_id",
                    format!("product `{}` does not exist", input.product_id),
                ),
                _ => e,
            })?;
        let plan = Plan {
            id: PlanId::new(),
            product_id: input.product_id,
            name: input.name,
            currency: input.currency,
            interval: input.interval,
            trial_days: input.trial_days.min(730),
            prices: input.prices,
            active: true,
            version: 1,
            created_at: self.now(),
        };
        self.store.insert_plan(&plan).await?;
        Ok(plan)
    }

    /// Archives (or reactivates) a plan: archived plans keep their subscribers but take
    /// no new ones. `Conflict` when its version is not `expected_version`.
    pub async fn set_plan_active(
        &self,
        id: PlanId,
        active: bool,
        expected_version: Option<u64>,
    ) -> Result<Plan> {
        let mut plan = self.store.get_plan(id).await?;
        if expected_version.is_some_and(|v| v != plan.version) {
            return Err(Error::Conflict(format!(
                "plan `{id}` is at version {}",
                plan.version
            )));
        }
        plan.active = active;
        plan.version += 1;
        self.store.update_plan(&plan).await?;
        Ok(plan)
    }

    /// A product.
    pub async fn product(&self, id: ProductId) -> Result<Product> {
        self.store.get_product(id).await
    }

    /// Every product, oldest first.
    pub async fn products(&self) -> Result<Vec<Product>> {
        self.store.list_products().await
    }

    /// A plan.
    pub async fn plan(&self, id: PlanId) -> Result<Plan> {
        self.store.get_plan(id).await
    }

    /// Every plan, oldest first.
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        self.store.list_plans().await
    }

    // ---- customers ----

    /// Creates or updates the tenant's billing profile. The currency cannot change
    /// once set (`Conflict`).
    pub async fn put_customer(
        &self,
        tenant: TenantId,
        input: CustomerInput,
        idem: Option<&Idempotency>,
    ) -> Result<Customer> {
        check_name("name", &input.name)?;
        if !input.email.contains('@') || input.email.len() > 254 {
            return Err(invalid(
                "email",
                format!("`{}` is not an email address", input.email),
            ));
        }
        if input.tax_rate.is_sign_negative() || input.tax_rate > Decimal::ONE_HUNDRED {
            return Err(invalid(
                "tax_rate",
                format!("`{}` is not a percentage (0–100)", input.tax_rate),
            ));
        }
        if input.invoice_prefix.as_ref().is_some_and(|p| {
            !(3..=12).contains(&p.len())
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }) {
            return Err(invalid(
                "invoice_prefix",
                "must be 3–12 uppercase letters or digits",
            ));
        }
        let input = &input;
        self.transact(tenant, idem, || async move {
            let now = self.now();
            let (customer, write) = match self.store.get_customer(tenant).await {
                Ok(stored) => {
                    if stored.currency != input.currency {
                        return Err(Error::Conflict(format!(
                            "the customer is billed in {}; its currency cannot change",
                            stored.currency
                        )));
                    }
                    let c = Customer {
                        name: input.name.clone(),
                        email: input.email.clone(),
                        address: input.address.clone(),
                        tax_rate: input.tax_rate,
                        provider_customer_id: input
                            .provider_customer_id
                            .clone()
                            .or(stored.provider_customer_id.clone()),
                        invoice_prefix: input
                            .invoice_prefix
                            .clone()
                            .unwrap_or(stored.invoice_prefix.clone()),
                        version: stored.version + 1,
                        ..stored
                    };
                    (c.clone(), Write::Update(c))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let prefix = input.invoice_prefix.clone().unwrap_or_else(|| {
                        tenant
                            .as_uuid()
                            .simple()
                            .to_string()
                            .chars()
                            .take(8)
                            .collect::<String>()
                            .to_uppercase()
                    });
                    let c = Customer {
                        tenant_id: tenant,
                        name: input.name.clone(),
                        email: input.email.clone(),
                        address: input.address.clone(),
                        currency: input.currency,
                        tax_rate: input.tax_rate,
                        provider_customer_id: input.provider_customer_id.clone(),
                        balance: 0,
                        invoice_prefix: prefix,
                        next_invoice_number: 1,
                        version: 1,
                        created_at: now,
                    };
                    (c.clone(), Write::Insert(c))
                }
                Err(e) => return Err(e),
            };
            let changes = Changes {
                customer: Some(write),
                events: vec![self.event(tenant, "customer.updated", tenant, &customer)?],
                ..Changes::default()
            };
            Ok((changes, customer))
        })
        .await
    }

    /// The tenant's billing profile.
    pub async fn customer(&self, tenant: TenantId) -> Result<Customer> {
        self.store.get_customer(tenant).await
    }

    async fn customer_for_billing(&self, tenant: TenantId) -> Result<Customer> {
        self.store
            .get_customer(tenant)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::invalid(
                    "tenant",
                    format!("tenant `{tenant}` has no billing profile; create its customer first"),
                ),
                _ => e,
            })
    }

    // ---- subscriptions ----

    /// The plan a new subscription asks for, once the request is checked: a valid
    /// quantity and backdate, an existing and active plan.
    async fn subscribable_plan(&self, input: &NewSubscription) -> Result<Plan> {
        check_quantity(input.quantity)?;
        if let Some(start) = input.backdate_start_date {
            let now = self.now();
            if start > now || start < now - Duration::days(366) {
                return Err(invalid(
                    "backdate_start_date",
                    "must be in the past, at most a year ago",
                ));
            }
        }
        self.active_plan(input.plan_id).await
    }

    /// A plan a request names in `plan_id`, which must exist and not be archived
    /// (`InvalidInput` on `plan_id` otherwise).
    async fn active_plan(&self, id: PlanId) -> Result<Plan> {
        let plan = self.store.get_plan(id).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => invalid("plan_id", format!("plan `{id}` does not exist")),
            _ => e,
        })?;
        if !plan.active {
            return Err(invalid(
                "plan_id",
                format!("plan `{}` is archived", plan.id),
            ));
        }
        Ok(plan)
    }

    /// Subscribes the tenant to a plan: with a trial (nothing charged until it ends),
    /// or with the first period's fees invoiced now (prorated up to the anchor day
    /// when one is given).
    pub async fn create_subscription(
        &self,
        tenant: TenantId,
        input: NewSubscription,
        idem: Option<&Idempotency>,
    ) -> Result<SubscriptionChange> {
        // Validated inside the transaction's attempt, after the saved response of the
        // key is looked up: a retry replays it even if the request would no longer
        // validate (the plan was archived since, time moved on).
        let input = &input;
        self.transact(tenant, idem, || async move {
            let plan = &self.subscribable_plan(input).await?;
            let mut customer = self.customer_for_billing(tenant).await?;
            if customer.currency != plan.currency {
                return Err(invalid(
                    "plan_id",
                    format!(
                        "plan `{}` is priced in {} but the customer is billed in {}",
                        plan.id, plan.currency, customer.currency
                    ),
                ));
            }
            let now = match input.backdate_start_date {
                Some(start) => start,
                None => self.now(),
            };
            let trial_days = input.trial_days.unwrap_or(plan.trial_days).min(730);
            let paid_from = now + Duration::days(i64::from(trial_days));
            let anchor = match input.billing_anchor_day {
                Some(day) => next_anchor_day(paid_from, day)?,
                None => paid_from,
            };
            let id = SubscriptionId::new();
            let mut sub = Subscription {
                id,
                tenant_id: tenant,
                plan_id: plan.id,
                quantity: input.quantity,
                status: SubscriptionStatus::Active,
                anchor,
                current_period: next_period(anchor, plan.interval, now)?,
                trial_end: None,
                cancel_at_period_end: false,
                canceled_at: None,
                ended_at: None,
                paused_at: None,
                scheduled_change: None,
                fee_invoiced: trial_days == 0,
                open: true,
                latest_invoice_id: None,
                version: 1,
                created_at: now,
            };
            let mut changes = Changes::default();
            let mut invoice = None;
            if trial_days > 0 {
                sub.status = SubscriptionStatus::Trialing;
                sub.trial_end = Some(paid_from);
                sub.current_period = Period::new(now, paid_from)?;
            } else {
                let lines = fee_lines(plan, sub.quantity, anchor, sub.current_period)?;
                let inv = self.new_invoice(
                    &mut customer,
                    &sub,
                    BillingReason::SubscriptionCreate,
                    format!("sub:{id}:create"),
                    lines,
                    &mut changes,
                )?;
                sub.latest_invoice_id = inv.as_ref().map(|i| i.id);
                invoice = inv;
            }
            changes
                .events
                .insert(0, self.event(tenant, "subscription.created", id, &sub)?);
            changes.subscriptions.push(Write::Insert(sub.clone()));
            Ok((
                changes,
                SubscriptionChange {
                    subscription: sub,
                    invoice,
                },
            ))
        })
        .await
    }

    /// Builds an invoice of `lines` for `sub` (none when there are no lines),
    /// finalizing it when configured, and adds it, the customer and their events to
    /// `changes`.
    fn new_invoice(
        &self,
        customer: &mut Customer,
        sub: &Subscription,
        reason: BillingReason,
        billing_key: String,
        lines: Vec<InvoiceLine>,
        changes: &mut Changes,
    ) -> Result<Option<Invoice>> {
        if lines.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let mut invoice = InvoiceDraft {
            tenant: sub.tenant_id,
            subscription: Some(sub.id),
            reason,
            billing_key,
            currency: customer.currency,
            tax_rate: customer.tax_rate,
            lines,
        }
        .build(now)?;
        changes
            .events
            .push(self.event(sub.tenant_id, "invoice.created", invoice.id, &invoice)?);
        if self.config.auto_finalize {
            self.finalize_into(&mut invoice, customer, changes)?;
        }
        changes.invoices.push(Write::Insert(invoice.clone()));
        Ok(Some(invoice))
    }

    /// Finalizes `invoice` against `customer` and records the customer write and the
    /// events in `changes`.
    fn finalize_into(
        &self,
        invoice: &mut Invoice,
        customer: &mut Customer,
        changes: &mut Changes,
    ) -> Result<()> {
        let now = self.now();
        finalize(invoice, customer, now)?;
        if self.payments.is_some() && invoice.status == InvoiceStatus::Open {
            invoice.next_payment_attempt = Some(now);
        }
        if changes.customer.is_none() {
            customer.version += 1;
        }
        changes.customer = Some(Write::Update(customer.clone()));
        changes.events.push(self.event(
            invoice.tenant_id,
            "invoice.finalized",
            invoice.id,
            &*invoice,
        )?);
        if invoice.status == InvoiceStatus::Paid {
            changes.events.push(self.event(
                invoice.tenant_id,
                "invoice.paid",
                invoice.id,
                &*invoice,
            )?);
        }
        Ok(())
    }

    /// A subscription.
    pub async fn subscription(&self, tenant: TenantId, id: SubscriptionId) -> Result<Subscription> {
        self.store.get_subscription(tenant, id).await
    }

    /// The tenant's subscriptions.
    pub async fn subscriptions(&self, tenant: TenantId) -> Result<Vec<Subscription>> {
        self.store.list_subscriptions(tenant).await
    }

    /// The proration lines a change made now would invoice (nothing is written).
    pub async fn preview_change(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        change: &PlanChange,
    ) -> Result<Vec<InvoiceLine>> {
        let sub = self.store.get_subscription(tenant, id).await?;
        let (old, new, quantity) = self.change_plans(&sub, change).await?;
        proration_lines(&sub, &old, &new, quantity, self.now())
    }

    async fn change_plans(
        &self,
        sub: &Subscription,
        change: &PlanChange,
    ) -> Result<(Plan, Plan, u32)> {
        if !sub.open || sub.status == SubscriptionStatus::Canceled {
            return Err(Error::Conflict(format!(
                "subscription `{}` is canceled",
                sub.id
            )));
        }
        let quantity = change.quantity.unwrap_or(sub.quantity);
        check_quantity(quantity)?;
        let old = self.store.get_plan(sub.plan_id).await?;
        let new = match change.plan_id {
            Some(p) if p != old.id => self.active_plan(p).await?,
            _ => old.clone(),
        };
        if new.currency != old.currency || new.interval != old.interval {
            return Err(invalid(
                "plan_id",
                "the new plan must have the same currency and interval; cancel and subscribe again to change them",
            ));
        }
        Ok((old, new, quantity))
    }

    /// Changes the plan or quantity: now (prorated, on an invoice of its own; a net
    /// credit goes to the customer's balance) or at the end of the period.
    pub async fn change_plan(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        change: PlanChange,
        idem: Option<&Idempotency>,
    ) -> Result<SubscriptionChange> {
        let change = &change;
        self.transact(tenant, idem, || async move {
            let mut sub = self.store.get_subscription(tenant, id).await?;
            let (old, new, quantity) = self.change_plans(&sub, change).await?;
            let mut changes = Changes::default();
            let mut invoice = None;
            let before = sub.clone();
            sub.version += 1;
            match change.effective {
                Effective::PeriodEnd => {
                    sub.scheduled_change = Some(ScheduledChange {
                        plan_id: new.id,
                        quantity,
                    });
                }
                Effective::Now => {
                    sub.scheduled_change = None;
                    if sub.status != SubscriptionStatus::Trialing {
                        let lines = proration_lines(&before, &old, &new, quantity, self.now())?;
                        let mut customer = self.customer_for_billing(tenant).await?;
                        invoice = self.new_invoice(
                            &mut customer,
                            &sub,
                            BillingReason::SubscriptionUpdate,
                            format!("sub:{id}:change:{}", sub.version),
                            lines,
                            &mut changes,
                        )?;
                        if let Some(i) = &invoice {
                            sub.latest_invoice_id = Some(i.id);
                        }
                    }
                    sub.plan_id = new.id;
                    sub.quantity = quantity;
                }
            }
            changes
                .events
                .insert(0, self.event(tenant, "subscription.updated", id, &sub)?);
            changes.subscriptions.push(Write::Update(sub.clone()));
            Ok((
                changes,
                SubscriptionChange {
                    subscription: sub,
                    invoice,
                },
            ))
        })
        .await
    }

    /// Cancels: at the period end (reactivatable until then) or now. A subscription
    /// canceled now still has its current period closed at its end, for the usage.
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        how: Cancel,
        idem: Option<&Idempotency>,
    ) -> Result<SubscriptionChange> {
        self.transact(tenant, idem, || async move {
            let mut sub = self.store.get_subscription(tenant, id).await?;
            if sub.status == SubscriptionStatus::Canceled {
                return Err(Error::Conflict(format!(
                    "subscription `{id}` is canceled already"
                )));
            }
            let now = self.now();
            let mut changes = Changes::default();
            let mut invoice = None;
            sub.version += 1;
            sub.canceled_at = Some(now);
            if how.at_period_end {
                sub.cancel_at_period_end = true;
            } else {
                if how.prorate && sub.fee_invoiced && sub.status != SubscriptionStatus::Trialing {
                    let plan = self.store.get_plan(sub.plan_id).await?;
                    let lines = fee_credit_lines(&sub, &plan, now)?;
                    let mut customer = self.customer_for_billing(tenant).await?;
                    invoice = self.new_invoice(
                        &mut customer,
                        &sub,
                        BillingReason::SubscriptionUpdate,
                        format!("sub:{id}:change:{}", sub.version),
                        lines,
                        &mut changes,
                    )?;
                }
                sub.status = SubscriptionStatus::Canceled;
                sub.cancel_at_period_end = false;
                sub.ended_at = Some(now);
                sub.scheduled_change = None;
            }
            if let Some(i) = &invoice {
                sub.latest_invoice_id = Some(i.id);
            }
            let kind = if how.at_period_end {
                "subscription.updated"
            } else {
                "subscription.canceled"
            };
            changes
                .events
                .insert(0, self.event(tenant, kind, id, &sub)?);
            changes.subscriptions.push(Write::Update(sub.clone()));
            Ok((
                changes,
                SubscriptionChange {
                    subscription: sub,
                    invoice,
                },
            ))
        })
        .await
    }

    /// Undoes a cancellation at period end before the period ends.
    pub async fn reactivate(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        idem: Option<&Idempotency>,
    ) -> Result<Subscription> {
        self.update_subscription(tenant, id, idem, "subscription.updated", |sub| {
            if !sub.cancel_at_period_end {
                return Err(Error::Conflict(format!(
                    "subscription `{}` is not set to cancel",
                    sub.id
                )));
            }
            sub.cancel_at_period_end = false;
            sub.canceled_at = None;
            Ok(())
        })
        .await
    }

    /// Pauses: no fees are invoiced for the periods that start while paused.
    pub async fn pause(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        idem: Option<&Idempotency>,
    ) -> Result<Subscription> {
        let now = self.now();
        self.update_subscription(tenant, id, idem, "subscription.paused", |sub| {
            if !matches!(
                sub.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) {
                return Err(Error::Conflict(format!(
                    "subscription `{}` is {}; only active subscriptions pause",
                    sub.id,
                    sub.status.as_str()
                )));
            }
            sub.status = SubscriptionStatus::Paused;
            sub.paused_at = Some(now);
            Ok(())
        })
        .await
    }

    /// Resumes a paused subscription: fees are invoiced again from the next period.
    pub async fn resume(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        idem: Option<&Idempotency>,
    ) -> Result<Subscription> {
        self.update_subscription(tenant, id, idem, "subscription.resumed", |sub| {
            if sub.status != SubscriptionStatus::Paused {
                return Err(Error::Conflict(format!(
                    "subscription `{}` is not paused",
                    sub.id
                )));
            }
            sub.status = SubscriptionStatus::Active;
            sub.paused_at = None;
            Ok(())
        })
        .await
    }

    async fn update_subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        idem: Option<&Idempotency>,
        kind: &str,
        edit: impl Fn(&mut Subscription) -> Result<()>,
    ) -> Result<Subscription> {
        let edit = &edit;
        self.transact(tenant, idem, || async move {
            let mut sub = self.store.get_subscription(tenant, id).await?;
            edit(&mut sub)?;
            sub.version += 1;
            let changes = Changes {
                events: vec![self.event(tenant, kind, id, &sub)?],
                subscriptions: vec![Write::Update(sub.clone())],
                ..Changes::default()
            };
            Ok((changes, sub))
        })
        .await
    }

    // ---- billing cycle ----

    /// Closes every period due now (at most `limit`): see the module documentation.
    /// Failures are logged and counted; the period stays due.
    pub async fn run_due(&self, limit: u32) -> Result<CycleReport> {
        let due = self
            .store
            .due(DueKind::PeriodEnd, self.now(), limit)
            .await?;
        let plans = PlanCache::default();
        let plans = &plans;
        // A tenant's periods share its customer record (invoice numbers): one close
        // per tenant goes into a batch; further ones of the same tenant close alone.
        let mut seen = std::collections::HashSet::new();
        let (batched, alone): (Vec<Due>, Vec<Due>) =
            due.into_iter().partition(|d| seen.insert(d.tenant_id));
        let mut report = CycleReport::default();
        let prepared: Vec<_> = futures_util::stream::iter(batched)
            .map(|item| async move {
                let id = SubscriptionId::from_uuid(item.id);
                (item, self.prepare_close(item.tenant_id, id, plans).await)
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut ready = Vec::with_capacity(prepared.len());
        for (item, outcome) in prepared {
            match outcome {
                Ok(Some(close)) => ready.push((item, close)),
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    tracing::warn!(tenant = %item.tenant_id, subscription = %item.id, error = %e, "closing a billing period failed");
                    report.failed += 1;
                }
            }
        }
        // Batches hold distinct tenants, so they commit concurrently too.
        let mut batches: Vec<CommitBatch> = Vec::new();
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let (changes, items) = ready
                .by_ref()
                .take(COMMIT_BATCH)
                .map(|(item, close)| {
                    let invoiced = close.result.invoice.is_some();
                    ((item.tenant_id, close.changes), (item, invoiced))
                })
                .unzip();
            batches.push((changes, items));
        }
        let committed: Vec<_> = futures_util::stream::iter(batches)
            .map(|(batch, items)| async move { (self.store.commit_batch(&batch).await, items) })
            .buffer_unordered(
                self.config
                    .concurrency
                    .min(self.store.write_concurrency())
                    .max(1),
            )
            .collect()
            .await;
        let mut retry = Vec::new();
        for (outcome, items) in committed {
            match outcome {
                Ok(()) => {
                    for (_, invoiced) in items {
                        report.closed += 1;
                        report.invoiced += usize::from(invoiced);
                    }
                }
                // Some close of the batch lost a race (or failed): each is tried alone.
                Err(e) => {
                    tracing::debug!(error = %e, "a batch of period closes is retried one by one");
                    retry.extend(items.into_iter().map(|(item, _)| item));
                }
            }
        }
        retry.extend(alone);
        for item in retry {
            let id = SubscriptionId::from_uuid(item.id);
            match self.close_period_with(item.tenant_id, id, plans).await {
                Ok(Some(closed)) => {
                    report.closed += 1;
                    report.invoiced += usize::from(closed.invoice.is_some());
                }
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    tracing::warn!(tenant = %item.tenant_id, subscription = %item.id, error = %e, "closing a billing period failed");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Closes the current period of one subscription if it has ended: `None` when it
    /// is not due (or another scheduler closed it first).
    pub async fn close_period(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Option<SubscriptionChange>> {
        self.close_period_with(tenant, id, &PlanCache::default())
            .await
    }

    async fn close_period_with(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        plans: &PlanCache,
    ) -> Result<Option<SubscriptionChange>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_close_period(tenant, id, plans).await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < ATTEMPTS => {}
                other => return other,
            }
        }
    }

    async fn try_close_period(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        plans: &PlanCache,
    ) -> Result<Option<SubscriptionChange>> {
        let Some(close) = self.prepare_close(tenant, id, plans).await? else {
            return Ok(None);
        };
        match self.store.commit(tenant, &close.changes).await {
            Ok(()) => Ok(Some(close.result)),
            Err(e) => self.lost_close(tenant, id, close.closed, e).await,
        }
    }

    /// After a failed commit of a period close: `None` when another scheduler closed
    /// the period (or changed the subscription) first, else the error.
    async fn lost_close(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        closed: Period,
        e: Error,
    ) -> Result<Option<SubscriptionChange>> {
        if !matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) {
            return Err(e);
        }
        let now_stored = self.store.get_subscription(tenant, id).await?;
        if now_stored.current_period != closed || !now_stored.open {
            Ok(None)
        } else {
            Err(e)
        }
    }

    /// Reads what closing the current period of a subscription needs and builds the
    /// change (nothing written); `None` when the period has not ended.
    async fn prepare_close(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        plans: &PlanCache,
    ) -> Result<Option<PreparedClose>> {
        let mut sub = self.store.get_subscription(tenant, id).await?;
        let now = self.now();
        if sub.next_action_at().is_none_or(|at| at > now) {
            return Ok(None);
        }
        let mut plan = plans.get(self.store.as_ref(), sub.plan_id).await?;
        let closed = sub.current_period;
        let was_trial = sub.status == SubscriptionStatus::Trialing;
        let mut lines = if was_trial {
            Vec::new()
        } else {
            self.usage_lines(tenant, &plan, closed).await?
        };
        let ending = sub.status == SubscriptionStatus::Canceled || sub.cancel_at_period_end;
        let reason = if ending {
            sub.status = SubscriptionStatus::Canceled;
            sub.ended_at.get_or_insert(closed.end);
            sub.cancel_at_period_end = false;
            sub.open = false;
            BillingReason::Final
        } else {
            if let Some(change) = sub.scheduled_change.take() {
                plan = plans.get(self.store.as_ref(), change.plan_id).await?;
                sub.plan_id = plan.id;
                sub.quantity = change.quantity;
            }
            if was_trial {
                sub.status = SubscriptionStatus::Active;
            }
            sub.current_period = next_period(sub.anchor, plan.interval, closed.end)?;
            sub.fee_invoiced = sub.status != SubscriptionStatus::Paused;
            if sub.fee_invoiced {
                lines.extend(fee_lines(
                    &plan,
                    sub.quantity,
                    sub.anchor,
                    sub.current_period,
                )?);
            }
            BillingReason::SubscriptionCycle
        };
        sub.version += 1;
        let mut changes = Changes::default();
        let mut customer = self.customer_for_billing(tenant).await?;
        let key = format!("sub:{id}:{}", closed.start.timestamp_micros());
        let invoice = self.new_invoice(&mut customer, &sub, reason, key, lines, &mut changes)?;
        if let Some(i) = &invoice {
            sub.latest_invoice_id = Some(i.id);
        }
        let kind = if ending {
            "subscription.ended"
        } else {
            "subscription.renewed"
        };
        changes
            .events
            .insert(0, self.event(tenant, kind, id, &sub)?);
        changes.subscriptions.push(Write::Update(sub.clone()));
        Ok(Some(PreparedClose {
            changes,
            closed,
            result: SubscriptionChange {
                subscription: sub,
                invoice,
            },
        }))
    }

    async fn usage_lines(
        &self,
        tenant: TenantId,
        plan: &Plan,
        period: Period,
    ) -> Result<Vec<InvoiceLine>> {
        let metered: Vec<&Price> = plan.prices.iter().filter(|p| p.meter().is_some()).collect();
        if metered.is_empty() {
            return Ok(Vec::new());
        }
        let meters: Vec<String> = metered
            .iter()
            .filter_map(|p| p.meter().map(str::to_owned))
            .collect();
        let totals = self.usage.totals(tenant, period, &meters).await?;
        metered
            .into_iter()
            .map(|price| {
                let meter = price.meter().unwrap_or_default();
                let quantity = totals.get(meter).copied().unwrap_or_default();
                Ok(InvoiceLine {
                    kind: LineKind::Usage,
                    description: price.description.clone(),
                    price_id: Some(price.id),
                    meter: Some(meter.to_owned()),
                    quantity,
                    period,
                    amount: price.amount(quantity, plan.currency)?.minor,
                    tax: 0,
                })
            })
            .collect()
    }

    // ---- invoices ----

    /// An invoice.
    pub async fn invoice(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice> {
        self.store.get_invoice(tenant, id).await
    }

    /// The tenant's invoices matching `filter` (at most `limit`, 1–1,000).
    pub async fn invoices(
        &self,
        tenant: TenantId,
        filter: &InvoiceFilter,
        limit: u32,
    ) -> Result<Vec<Invoice>> {
        if !(1..=1_000).contains(&limit) {
            return Err(invalid("limit", "must be 1–1000"));
        }
        self.store.list_invoices(tenant, filter, limit).await
    }

    async fn update_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        idem: Option<&Idempotency>,
        edit: impl Fn(&Billing, &mut Invoice, &mut Changes) -> Result<()>,
    ) -> Result<Invoice> {
        let edit = &edit;
        self.transact(tenant, idem, || async move {
            let mut invoice = self.store.get_invoice(tenant, id).await?;
            let mut changes = Changes::default();
            edit(self, &mut invoice, &mut changes)?;
            invoice.version += 1;
            changes.invoices.push(Write::Update(invoice.clone()));
            Ok((changes, invoice))
        })
        .await
    }

    /// Finalizes a draft: numbered (no gaps per tenant), immutable, owed.
    pub async fn finalize_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        idem: Option<&Idempotency>,
    ) -> Result<Invoice> {
        self.transact(tenant, idem, || async move {
            let mut invoice = self.store.get_invoice(tenant, id).await?;
            let mut customer = self.customer_for_billing(tenant).await?;
            let mut changes = Changes::default();
            self.finalize_into(&mut invoice, &mut customer, &mut changes)?;
            invoice.version += 1;
            changes.invoices.push(Write::Update(invoice.clone()));
            Ok((changes, invoice))
        })
        .await
    }

    /// Voids a draft or open invoice (kept, owed no more; paid invoices are corrected
    /// with credit notes instead).
    pub async fn void_invoice(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        idem: Option<&Idempotency>,
    ) -> Result<Invoice> {
        let now = self.now();
        self.update_invoice(tenant, id, idem, |b, invoice, changes| {
            if !matches!(invoice.status, InvoiceStatus::Draft | InvoiceStatus::Open) {
                return Err(Error::Conflict(format!(
                    "invoice `{}` is {}; only drafts and open invoices are voided",
                    invoice.id,
                    invoice.status.as_str()
                )));
            }
            invoice.status = InvoiceStatus::Void;
            invoice.closed_at = Some(now);
            invoice.next_payment_attempt = None;
            changes
                .events
                .push(b.event(tenant, "invoice.voided", invoice.id, &*invoice)?);
            Ok(())
        })
        .await
    }

    /// Marks an open invoice paid (by an operator, or when the payment provider says
    /// so), and a past-due subscription active again.
    pub async fn mark_paid(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        provider_payment_id: Option<String>,
        idem: Option<&Idempotency>,
    ) -> Result<Invoice> {
        self.settle_paid(tenant, id, provider_payment_id, idem, None)
            .await
    }

    async fn settle_paid(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        provider_payment_id: Option<String>,
        idem: Option<&Idempotency>,
        provider_event: Option<&ProviderEvent>,
    ) -> Result<Invoice> {
        let payment = &provider_payment_id;
        self.transact(tenant, idem, || async move {
            let mut invoice = self.store.get_invoice(tenant, id).await?;
            if invoice.status == InvoiceStatus::Paid {
                let changes = Changes {
                    provider_event: provider_event.cloned(),
                    ..Changes::default()
                };
                return Ok((changes, invoice));
            }
            if !matches!(
                invoice.status,
                InvoiceStatus::Open | InvoiceStatus::Uncollectible
            ) {
                return Err(Error::Conflict(format!(
                    "invoice `{id}` is {}; only open invoices are paid",
                    invoice.status.as_str()
                )));
            }
            let now = self.now();
            invoice.amount_paid = invoice.amount_due;
            invoice.status = InvoiceStatus::Paid;
            invoice.paid_at = Some(now);
            invoice.next_payment_attempt = None;
            if payment.is_some() {
                invoice.provider_payment_id.clone_from(payment);
            }
            invoice.version += 1;
            let mut changes = Changes {
                provider_event: provider_event.cloned(),
                ..Changes::default()
            };
            changes
                .events
                .push(self.event(tenant, "invoice.paid", id, &invoice)?);
            if let Some(sid) = invoice.subscription_id {
                let mut sub = self.store.get_subscription(tenant, sid).await?;
                if sub.status == SubscriptionStatus::PastDue {
                    sub.status = SubscriptionStatus::Active;
                    sub.version += 1;
                    changes
                        .events
                        .push(self.event(tenant, "subscription.updated", sid, &sub)?);
                    changes.subscriptions.push(Write::Update(sub));
                }
            }
            changes.invoices.push(Write::Update(invoice.clone()));
            Ok((changes, invoice))
        })
        .await
    }

    /// Records a failed payment of an open invoice (dunning): the subscription becomes
    /// past due and the next attempt is scheduled per [`BillingConfig::retry_schedule`];
    /// after the last one, [`BillingConfig::after_retries`] applies.
    pub async fn payment_failed(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        reason: &str,
        idem: Option<&Idempotency>,
    ) -> Result<Invoice> {
        self.settle_failed(tenant, id, reason, None, idem, None)
            .await
    }

    /// Records a failed payment attempt. With `stale_check`, a report about another
    /// payment than the invoice's latest (a late report of an older attempt) changes
    /// nothing.
    async fn settle_failed(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        reason: &str,
        stale_check: Option<&str>,
        idem: Option<&Idempotency>,
        provider_event: Option<&ProviderEvent>,
    ) -> Result<Invoice> {
        self.transact(tenant, idem, || async move {
            let mut invoice = self.store.get_invoice(tenant, id).await?;
            let stale = stale_check.is_some_and(|p| {
                invoice
                    .provider_payment_id
                    .as_deref()
                    .is_some_and(|current| current != p)
            });
            if invoice.status != InvoiceStatus::Open || stale {
                let changes = Changes {
                    provider_event: provider_event.cloned(),
                    ..Changes::default()
                };
                return Ok((changes, invoice));
            }
            let now = self.now();
            invoice.payment_attempts += 1;
            let retry = usize::try_from(invoice.payment_attempts - 1)
                .ok()
                .and_then(|i| self.config.retry_schedule.get(i));
            invoice.next_payment_attempt = retry.map(|d| now + *d);
            let mut changes = Changes {
                provider_event: provider_event.cloned(),
                ..Changes::default()
            };
            changes.events.push(self.event(
                tenant,
                "invoice.payment_failed",
                id,
                &serde_json::json!({ "invoice": &invoice, "reason": reason }),
            )?);
            let exhausted = retry.is_none();
            if exhausted && self.config.after_retries == AfterRetries::MarkUncollectible {
                invoice.status = InvoiceStatus::Uncollectible;
                invoice.closed_at = Some(now);
                changes.events.push(self.event(
                    tenant,
                    "invoice.marked_uncollectible",
                    id,
                    &invoice,
                )?);
            }
            if let Some(sid) = invoice.subscription_id {
                let mut sub = self.store.get_subscription(tenant, sid).await?;
                let before = sub.clone();
                if exhausted && self.config.after_retries == AfterRetries::CancelSubscription {
                    if sub.status != SubscriptionStatus::Canceled {
                        sub.status = SubscriptionStatus::Canceled;
                        sub.canceled_at = Some(now);
                        sub.ended_at = Some(now);
                        sub.cancel_at_period_end = false;
                        sub.scheduled_change = None;
                    }
                } else if matches!(
                    sub.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Trialing
                ) {
                    sub.status = SubscriptionStatus::PastDue;
                }
                if sub != before {
                    sub.version += 1;
                    let kind = if sub.status == SubscriptionStatus::Canceled {
                        "subscription.canceled"
                    } else {
                        "subscription.updated"
                    };
                    changes.events.push(self.event(tenant, kind, sid, &sub)?);
                    changes.subscriptions.push(Write::Update(sub));
                }
            }
            invoice.version += 1;
            changes.invoices.push(Write::Update(invoice.clone()));
            Ok((changes, invoice))
        })
        .await
    }

    /// The credit notes of an invoice, oldest first (`NotFound` for an unknown
    /// invoice).
    pub async fn credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>> {
        self.store.get_invoice(tenant, invoice).await?;
        self.store.list_credit_notes(tenant, invoice).await
    }

    /// Issues a credit note against an open or paid invoice: it lowers what an open
    /// invoice owes, or credits the customer's balance for a paid one. The credited
    /// total never exceeds the invoice's total.
    pub async fn create_credit_note(
        &self,
        tenant: TenantId,
        invoice_id: InvoiceId,
        input: NewCreditNote,
        idem: Option<&Idempotency>,
    ) -> Result<CreditNote> {
        check_name("reason", &input.reason)?;
        if input.lines.is_empty() || input.lines.len() > 100 {
            return Err(invalid("lines", "a credit note has 1–100 lines"));
        }
        if input
            .lines
            .iter()
            .any(|l| l.amount <= 0 || l.description.trim().is_empty())
        {
            return Err(invalid(
                "lines",
                "each line has a description and a positive amount",
            ));
        }
        let total = input
            .lines
            .iter()
            .try_fold(0i64, |a, l| a.checked_add(l.amount))
            .ok_or_else(|| invalid("lines", "the total is out of range"))?;
        let input = &input;
        self.transact(tenant, idem, || async move {
            let mut invoice = self.store.get_invoice(tenant, invoice_id).await?;
            let number = invoice.number.clone().ok_or_else(|| {
                Error::Conflict(format!(
                    "invoice `{invoice_id}` is a draft; edit or void it instead"
                ))
            })?;
            if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Paid) {
                return Err(Error::Conflict(format!(
                    "invoice `{invoice_id}` is {}",
                    invoice.status.as_str()
                )));
            }
            if invoice.credited + total > invoice.total {
                return Err(invalid(
                    "lines",
                    format!(
                        "the credit {} would exceed what is left to credit on the invoice ({})",
                        Money::new(total, invoice.currency),
                        Money::new(invoice.total - invoice.credited, invoice.currency)
                    ),
                ));
            }
            let notes = self.store.list_credit_notes(tenant, invoice_id).await?;
            let now = self.now();
            let mut changes = Changes::default();
            let outcome = if invoice.status == InvoiceStatus::Open {
                invoice.credited += total;
                invoice.amount_due =
                    (invoice.total - invoice.balance_applied - invoice.credited).max(0);
                if invoice.amount_due == 0 {
                    invoice.status = InvoiceStatus::Paid;
                    invoice.paid_at = Some(now);
                    invoice.next_payment_attempt = None;
                    changes.events.push(self.event(
                        tenant,
                        "invoice.paid",
                        invoice_id,
                        &invoice,
                    )?);
                }
                CreditOutcome::ReducedAmountDue
            } else {
                invoice.credited += total;
                let mut customer = self.customer_for_billing(tenant).await?;
                customer.balance = customer
                    .balance
                    .checked_add(total)
                    .ok_or_else(|| invalid("lines", "the balance is out of range"))?;
                customer.version += 1;
                changes.customer = Some(Write::Update(customer));
                CreditOutcome::CustomerBalance
            };
            let note = CreditNote {
                id: crate::ids::CreditNoteId::new(),
                tenant_id: tenant,
                invoice_id,
                number: format!("{number}-CN{}", notes.len() + 1),
                reason: input.reason.clone(),
                lines: input.lines.clone(),
                total,
                outcome,
                created_at: now,
            };
            invoice.version += 1;
            changes
                .events
                .push(self.event(tenant, "credit_note.created", note.id, &note)?);
            changes.invoices.push(Write::Update(invoice));
            changes.credit_notes.push(note.clone());
            Ok((changes, note))
        })
        .await
    }
    // ---- payments ----

    /// Charges every open invoice whose payment attempt is due (at most `limit`)
    /// through the payment provider: see [`Billing::collect`]. Failures are logged
    /// and counted; the invoice is tried again later.
    pub async fn collect_due(&self, limit: u32) -> Result<PaymentReport> {
        let mut report = PaymentReport::default();
        if self.payments.is_none() {
            return Ok(report);
        }
        for item in self
            .store
            .due(DueKind::PaymentRetry, self.now(), limit)
            .await?
        {
            let id = InvoiceId::from_uuid(item.id);
            match self.collect(item.tenant_id, id).await {
                Ok(Some(ChargeOutcome::Succeeded { .. })) => report.succeeded += 1,
                Ok(Some(ChargeOutcome::Pending { .. })) => report.pending += 1,
                Ok(Some(ChargeOutcome::Failed { .. })) => report.failed += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tenant = %item.tenant_id, invoice = %id, error = %e, "collecting an invoice failed");
                    report.errors += 1;
                }
            }
        }
        Ok(report)
    }

    /// Charges an open invoice's amount due now (`None` when there is nothing to
    /// charge, or no provider). The charge's idempotency key is the invoice and the
    /// attempt number, so a crash and a retry never charge twice. Succeeded: the
    /// invoice is paid; pending: it waits for the provider's webhook (or an
    /// operator); failed: dunning. The tenant gets a customer at the provider on its
    /// first charge. A provider error (unreachable) leaves the invoice due again in 15
    /// minutes.
    pub async fn collect(&self, tenant: TenantId, id: InvoiceId) -> Result<Option<ChargeOutcome>> {
        let Some(provider) = self.payments.clone() else {
            return Ok(None);
        };
        let invoice = self.store.get_invoice(tenant, id).await?;
        if invoice.status != InvoiceStatus::Open || invoice.amount_due <= 0 {
            return Ok(None);
        }
        let customer = self.provider_customer(tenant, provider.as_ref()).await?;
        let attempt = invoice.payment_attempts + 1;
        let request = ChargeRequest {
            tenant,
            invoice: id,
            customer,
            amount: Money::new(invoice.amount_due, invoice.currency),
            description: format!("Invoice {}", invoice.number.as_deref().unwrap_or_default()),
            idempotency_key: format!("{id}-{attempt}"),
        };
        let outcome = match provider.charge(&request).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let retry = self.now() + Duration::minutes(15);
                self.update_invoice(tenant, id, None, |_, invoice, _| {
                    invoice.next_payment_attempt = Some(retry);
                    Ok(())
                })
                .await?;
                return Err(e);
            }
        };
        match &outcome {
            ChargeOutcome::Succeeded {
                provider_payment_id,
            } => {
                self.settle_paid(tenant, id, Some(provider_payment_id.clone()), None, None)
                    .await?;
            }
            ChargeOutcome::Pending {
                provider_payment_id,
            } => {
                let payment = provider_payment_id.clone();
                self.update_invoice(tenant, id, None, move |_, invoice, _| {
                    invoice.provider_payment_id = Some(payment.clone());
                    invoice.next_payment_attempt = None;
                    Ok(())
                })
                .await?;
            }
            ChargeOutcome::Failed {
                provider_payment_id,
                reason,
                ..
            } => {
                if let Some(p) = provider_payment_id {
                    let payment = p.clone();
                    self.update_invoice(tenant, id, None, move |_, invoice, _| {
                        invoice.provider_payment_id = Some(payment.clone());
                        Ok(())
                    })
                    .await?;
                }
                self.settle_failed(tenant, id, reason, None, None, None)
                    .await?;
            }
        }
        Ok(Some(outcome))
    }

    /// The tenant's customer id at the provider, created there (and saved) on first use.
    async fn provider_customer(
        &self,
        tenant: TenantId,
        provider: &dyn PaymentProvider,
    ) -> Result<ProviderCustomerId> {
        let customer = self.customer_for_billing(tenant).await?;
        if let Some(id) = &customer.provider_customer_id {
            return Ok(ProviderCustomerId::new(id.clone()));
        }
        let request = CustomerRequest {
            name: customer.name.clone(),
            email: tenancy_core::identity::Email::parse(&customer.email).ok(),
        };
        let created = provider.create_customer(tenant, &request).await?;
        let id = created.as_str().to_owned();
        let id = &id;
        self.transact(tenant, None, || async move {
            let mut c = self.store.get_customer(tenant).await?;
            c.provider_customer_id = Some(id.clone());
            c.version += 1;
            Ok((
                Changes {
                    customer: Some(Write::Update(c.clone())),
                    ..Changes::default()
                },
                c,
            ))
        })
        .await?;
        Ok(created)
    }

    /// Applies a verified payment-provider event (see [`crate::provider_events`]):
    /// once per event id, whatever the order events arrive in.
    pub async fn apply_payment_event(&self, event: &PaymentEvent) -> Result<PaymentEventOutcome> {
        let (Some(tenant), Some(invoice)) = (event.tenant, event.invoice) else {
            return Ok(PaymentEventOutcome::Ignored);
        };
        let record = ProviderEvent {
            provider: event.provider.clone(),
            event_id: event.event_id.clone(),
        };
        let applied = match &event.kind {
            PaymentEventKind::Succeeded { payment_id } => {
                self.settle_paid(
                    tenant,
                    invoice,
                    Some(payment_id.clone()),
                    None,
                    Some(&record),
                )
                .await
            }
            PaymentEventKind::Failed { payment_id, reason } => {
                self.settle_failed(
                    tenant,
                    invoice,
                    reason,
                    Some(payment_id),
                    None,
                    Some(&record),
                )
                .await
            }
            PaymentEventKind::Other(_) => return Ok(PaymentEventOutcome::Ignored),
        };
        match applied {
            Ok(_) => Ok(PaymentEventOutcome::Applied),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PaymentEventOutcome::Duplicate),
            // Not one of our invoices (or another tenant's): nothing to do, and nothing a
            // redelivery would change.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(PaymentEventOutcome::Ignored),
            Err(e) => Err(e),
        }
    }
}

/// What a [`Billing::collect_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaymentReport {
    /// Invoices paid.
    pub succeeded: usize,
    /// Charges waiting for the provider or an operator.
    pub pending: usize,
    /// Charges the provider refused (dunning goes on).
    pub failed: usize,
    /// Charges that could not be made (tried again later).
    pub errors: usize,
}

fn check_name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        Err(invalid(
            field,
            "must have 1–200 characters and no control characters",
        ))
    } else {
        Ok(())
    }
}

fn check_quantity(q: u32) -> Result<()> {
    if (1..=1_000_000).contains(&q) {
        Ok(())
    } else {
        Err(invalid("quantity", format!("`{q}` is not 1–1000000")))
    }
}

/// The period that starts at `t` on the calendar anchored at `anchor`: up to the
/// anchor when `t` is before it (a prorated first period), else the anchored period
/// containing `t`.
pub fn next_period(anchor: DateTime<Utc>, interval: Interval, t: DateTime<Utc>) -> Result<Period> {
    if t < anchor {
        return Period::new(t, anchor);
    }
    let p = period_containing(anchor, interval, t)?;
    Period::new(t, p.end)
}

/// The fee lines of `plan` for `period`: each fee's full-period amount prorated to
/// the part of its anchored period that `period` covers.
pub fn fee_lines(
    plan: &Plan,
    quantity: u32,
    anchor: DateTime<Utc>,
    period: Period,
) -> Result<Vec<InvoiceLine>> {
    let full = period_containing(anchor, plan.interval, period.start)?;
    plan.prices
        .iter()
        .filter(|p| p.kind == PriceKind::Fee)
        .map(|price| {
            let whole = price.amount(Decimal::from(quantity), plan.currency)?;
            let amount = if full == period {
                whole
            } else {
                prorate(whole, full, period.start, period.end, price.rounding)?
            };
            Ok(InvoiceLine {
                kind: LineKind::Fee,
                description: price.description.clone(),
                price_id: Some(price.id),
                meter: None,
                quantity: Decimal::from(quantity),
                period,
                amount: amount.minor,
                tax: 0,
            })
        })
        .collect()
}

/// Credits for the unused time `[at, period end)` of the fees of `sub` on `plan`.
fn fee_credit_lines(
    sub: &Subscription,
    plan: &Plan,
    at: DateTime<Utc>,
) -> Result<Vec<InvoiceLine>> {
    proration_pieces(sub, plan, sub.quantity, at, LineKind::ProrationCredit)
}

fn proration_pieces(
    sub: &Subscription,
    plan: &Plan,
    quantity: u32,
    at: DateTime<Utc>,
    kind: LineKind,
) -> Result<Vec<InvoiceLine>> {
    let period = sub.current_period;
    if at >= period.end {
        return Ok(Vec::new());
    }
    let at = at.max(period.start);
    let full = period_containing(sub.anchor, plan.interval, period.start)?;
    let rest = Period::new(at, period.end)?;
    let sign = if kind == LineKind::ProrationCredit {
        -1
    } else {
        1
    };
    plan.prices
        .iter()
        .filter(|p| p.kind == PriceKind::Fee)
        .map(|price| {
            let whole = price.amount(Decimal::from(quantity), plan.currency)?;
            let part = prorate(whole, full, rest.start, rest.end, price.rounding)?;
            let what = if sign < 0 {
                "Unused time"
            } else {
                "Remaining time"
            };
            Ok(InvoiceLine {
                kind,
                description: format!("{what} on {} × {}", quantity, price.description),
                price_id: Some(price.id),
                meter: None,
                quantity: Decimal::from(quantity),
                period: rest,
                amount: sign * part.minor,
                tax: 0,
            })
        })
        .collect()
}

/// The proration of changing `sub` from `old` to `new` × `quantity` at `at`: a credit
/// for the unused time of the old fees and a charge for the rest of the period of the
/// new ones.
pub fn proration_lines(
    sub: &Subscription,
    old: &Plan,
    new: &Plan,
    quantity: u32,
    at: DateTime<Utc>,
) -> Result<Vec<InvoiceLine>> {
    // No fee was charged for the period (trial, or it started while paused): nothing to
    // credit, and the new fees start with the next period too.
    if sub.status == SubscriptionStatus::Trialing || !sub.fee_invoiced {
        return Ok(Vec::new());
    }
    let mut lines = proration_pieces(sub, old, sub.quantity, at, LineKind::ProrationCredit)?;
    lines.extend(proration_pieces(
        sub,
        new,
        quantity,
        at,
        LineKind::ProrationCharge,
    )?);
    lines.retain(|l| l.amount != 0);
    Ok(lines)
}

/// A period close ready to commit.
struct PreparedClose {
    changes: Changes,
    closed: Period,
    result: SubscriptionChange,
}

/// A batch of period closes to commit, and each close's due item and whether it
/// made an invoice.
type CommitBatch = (Vec<(TenantId, Changes)>, Vec<(Due, bool)>);

/// Period closes committed in one transaction by a scheduler pass.
const COMMIT_BATCH: usize = 50;

/// Plans read during a scheduler pass (plans change rarely; a pass reads each once).
#[derive(Default)]
struct PlanCache(std::sync::Mutex<HashMap<PlanId, Arc<Plan>>>);

impl PlanCache {
    async fn get(&self, store: &dyn BillingStore, id: PlanId) -> Result<Arc<Plan>> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let plan = Arc::new(store.get_plan(id).await?);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, plan.clone());
        Ok(plan)
    }
}
