//! The in-memory billing store: complete (it passes the conformance suite), for
//! embedding in tests and demos. Its outbox is read by a [`tenancy_core::events::Relay`]
//! through its [`OutboxStore`] implementation.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenancy_core::events::{MemoryOutbox, OutboxEntry, OutboxStore};
use tenancy_core::ids::EventId;
use tenancy_core::{Error, Result, TenantId};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::ids::{InvoiceId, PlanId, ProductId, SubscriptionId};
use crate::model::{CreditNote, Customer, Invoice, Plan, Product, Subscription};
use crate::store::{
    BILLING_TOPIC, BillingStore, Changes, Due, DueKind, IdempotencyRecord, InvoiceFilter, Write,
    check_batch, check_changes,
};

#[derive(Default)]
struct Tables {
    products: BTreeMap<ProductId, Product>,
    plans: BTreeMap<PlanId, Plan>,
    customers: HashMap<TenantId, Customer>,
    subscriptions: BTreeMap<(TenantId, SubscriptionId), Subscription>,
    invoices: BTreeMap<(TenantId, InvoiceId), Invoice>,
    billing_keys: HashSet<(TenantId, String)>,
    numbers: HashSet<(TenantId, String)>,
    credit_notes: Vec<CreditNote>,
    idempotency: HashMap<(TenantId, String), IdempotencyRecord>,
    provider_events: HashSet<(String, String)>,
    outbox: MemoryOutbox,
}

/// The in-memory billing store.
#[derive(Default)]
pub struct MemoryBillingStore {
    tables: RwLock<Tables>,
}

impl MemoryBillingStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

fn not_found(what: &str, id: impl std::fmt::Display) -> Error {
    Error::NotFound(format!("{what} `{id}` not found"))
}

fn conflict(what: &str, id: impl std::fmt::Display) -> Error {
    Error::Conflict(format!(
        "{what} `{id}` was changed by someone else; read it again"
    ))
}

/// Checks one write against `map` (the version contract), changing nothing.
fn check<K: Ord, T>(
    map: &BTreeMap<K, T>,
    key: &K,
    write: &Write<T>,
    version: impl Fn(&T) -> u64,
    what: &str,
    id: impl std::fmt::Display,
) -> Result<()> {
    match (write, map.get(key)) {
        (Write::Insert(_), Some(_)) => Err(Error::AlreadyExists(format!(
            "{what} `{id}` exists already"
        ))),
        (Write::Update(_), None) => Err(not_found(what, id)),
        (Write::Update(r), Some(stored)) if version(stored) + 1 != version(r) => {
            Err(conflict(what, id))
        }
        _ => Ok(()),
    }
}

impl Tables {
    /// Checks every write of `changes`, changing nothing.
    fn check(&self, tenant: TenantId, changes: &Changes) -> Result<()> {
        if let Some(c) = &changes.customer {
            let stored: BTreeMap<TenantId, &Customer> = self
                .customers
                .get(&tenant)
                .map(|c| (tenant, c))
                .into_iter()
                .collect();
            let write = match c {
                Write::Insert(r) => Write::Insert(r),
                Write::Update(r) => Write::Update(r),
            };
            check(
                &stored,
                &tenant,
                &write,
                |c| c.version,
                "customer of tenant",
                tenant,
            )?;
        }
        for s in &changes.subscriptions {
            let r = s.record();
            check(
                &self.subscriptions,
                &(tenant, r.id),
                s,
                |s| s.version,
                "subscription",
                r.id,
            )?;
        }
        let mut numbers = HashSet::new();
        for w in &changes.invoices {
            let r = w.record();
            check(
                &self.invoices,
                &(tenant, r.id),
                w,
                |i| i.version,
                "invoice",
                r.id,
            )?;
            if let Write::Insert(_) = w
                && self.billing_keys.contains(&(tenant, r.billing_key.clone()))
            {
                return Err(Error::AlreadyExists(format!(
                    "an invoice for `{}` exists already",
                    r.billing_key
                )));
            }
            let previous = self
                .invoices
                .get(&(tenant, r.id))
                .and_then(|p| p.number.as_ref());
            if let Some(n) = &r.number
                && previous != Some(n)
                && (self.numbers.contains(&(tenant, n.clone())) || !numbers.insert(n))
            {
                return Err(Error::AlreadyExists(format!(
                    "invoice number `{n}` is taken"
                )));
            }
        }
        if let Some(i) = &changes.idempotency
            && self.idempotency.contains_key(&(tenant, i.key.clone()))
        {
            return Err(Error::AlreadyExists(format!(
                "idempotency key `{}` was used already",
                i.key
            )));
        }
        if let Some(p) = &changes.provider_event
            && self
                .provider_events
                .contains(&(p.provider.clone(), p.event_id.clone()))
        {
            return Err(Error::AlreadyExists(format!(
                "{} event `{}` was applied already",
                p.provider, p.event_id
            )));
        }
        for e in &changes.events {
            if self.outbox.contains(e.id()) {
                return Err(Error::AlreadyExists(format!(
                    "event `{}` is in the outbox already",
                    e.id()
                )));
            }
        }
        Ok(())
    }

    /// Applies checked `changes`.
    fn apply(&mut self, tenant: TenantId, changes: &Changes) -> Result<()> {
        if let Some(c) = &changes.customer {
            self.customers.insert(tenant, c.record().clone());
        }
        for s in &changes.subscriptions {
            let r = s.record();
            self.subscriptions.insert((tenant, r.id), r.clone());
        }
        for w in &changes.invoices {
            let r = w.record();
            self.billing_keys.insert((tenant, r.billing_key.clone()));
            if let Some(n) = &r.number {
                self.numbers.insert((tenant, n.clone()));
            }
            self.invoices.insert((tenant, r.id), r.clone());
        }
        self.credit_notes
            .extend(changes.credit_notes.iter().cloned());
        if let Some(i) = &changes.idempotency {
            self.idempotency.insert((tenant, i.key.clone()), i.clone());
        }
        if let Some(p) = &changes.provider_event {
            self.provider_events
                .insert((p.provider.clone(), p.event_id.clone()));
        }
        for e in &changes.events {
            self.outbox.enqueue(BILLING_TOPIC, e)?;
        }
        Ok(())
    }
}

#[async_trait]
impl BillingStore for MemoryBillingStore {
    async fn insert_product(&self, product: &Product) -> Result<()> {
        let mut t = self.tables.write().await;
        if t.products.contains_key(&product.id) {
            return Err(Error::AlreadyExists(format!(
                "product `{}` exists already",
                product.id
            )));
        }
        t.products.insert(product.id, product.clone());
        Ok(())
    }

    async fn get_product(&self, id: ProductId) -> Result<Product> {
        let t = self.tables.read().await;
        t.products
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("product", id))
    }

    async fn list_products(&self) -> Result<Vec<Product>> {
        Ok(self
            .tables
            .read()
            .await
            .products
            .values()
            .cloned()
            .collect())
    }

    async fn insert_plan(&self, plan: &Plan) -> Result<()> {
        let mut t = self.tables.write().await;
        check(
            &t.plans,
            &plan.id,
            &Write::Insert(plan.clone()),
            |p| p.version,
            "plan",
            plan.id,
        )?;
        t.plans.insert(plan.id, plan.clone());
        Ok(())
    }

    async fn update_plan(&self, plan: &Plan) -> Result<()> {
        let mut t = self.tables.write().await;
        let stored: BTreeMap<PlanId, &Plan> = t
            .plans
            .get(&plan.id)
            .map(|p| (plan.id, p))
            .into_iter()
            .collect();
        check(
            &stored,
            &plan.id,
            &Write::Update(plan),
            |p| p.version,
            "plan",
            plan.id,
        )?;
        t.plans.insert(plan.id, plan.clone());
        Ok(())
    }

    async fn get_plan(&self, id: PlanId) -> Result<Plan> {
        let t = self.tables.read().await;
        t.plans
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("plan", id))
    }

    async fn list_plans(&self) -> Result<Vec<Plan>> {
        Ok(self.tables.read().await.plans.values().cloned().collect())
    }

    async fn commit(&self, tenant: TenantId, changes: &Changes) -> Result<()> {
        check_changes(tenant, changes)?;
        let mut t = self.tables.write().await;
        t.check(tenant, changes)?;
        t.apply(tenant, changes)
    }

    async fn commit_batch(&self, batch: &[(TenantId, Changes)]) -> Result<()> {
        check_batch(batch)?;
        let mut t = self.tables.write().await;
        // One change per tenant: they touch disjoint records, except the global
        // provider events, checked across the batch too.
        let mut events = HashSet::new();
        for (tenant, changes) in batch {
            t.check(*tenant, changes)?;
            if let Some(p) = &changes.provider_event
                && !events.insert((p.provider.clone(), p.event_id.clone()))
            {
                return Err(Error::AlreadyExists(format!(
                    "{} event `{}` was applied already",
                    p.provider, p.event_id
                )));
            }
        }
        for (tenant, changes) in batch {
            t.apply(*tenant, changes)?;
        }
        Ok(())
    }

    async fn get_customer(&self, tenant: TenantId) -> Result<Customer> {
        let t = self.tables.read().await;
        t.customers
            .get(&tenant)
            .cloned()
            .ok_or_else(|| not_found("customer of tenant", tenant))
    }

    async fn get_subscription(&self, tenant: TenantId, id: SubscriptionId) -> Result<Subscription> {
        let t = self.tables.read().await;
        t.subscriptions
            .get(&(tenant, id))
            .cloned()
            .ok_or_else(|| not_found("subscription", id))
    }

    async fn list_subscriptions(&self, tenant: TenantId) -> Result<Vec<Subscription>> {
        let t = self.tables.read().await;
        Ok(t.subscriptions
            .range(
                (tenant, SubscriptionId::from_uuid(Uuid::nil()))
                    ..=(tenant, SubscriptionId::from_uuid(Uuid::max())),
            )
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn get_invoice(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice> {
        let t = self.tables.read().await;
        t.invoices
            .get(&(tenant, id))
            .cloned()
            .ok_or_else(|| not_found("invoice", id))
    }

    async fn list_invoices(
        &self,
        tenant: TenantId,
        filter: &InvoiceFilter,
        limit: u32,
    ) -> Result<Vec<Invoice>> {
        let t = self.tables.read().await;
        Ok(t.invoices
            .range(
                (tenant, InvoiceId::from_uuid(Uuid::nil()))
                    ..=(tenant, InvoiceId::from_uuid(Uuid::max())),
            )
            .map(|(_, i)| i)
            .filter(|i| {
                filter
                    .subscription
                    .is_none_or(|s| i.subscription_id == Some(s))
            })
            .filter(|i| filter.status.is_none_or(|s| i.status == s))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn list_credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>> {
        let t = self.tables.read().await;
        Ok(t.credit_notes
            .iter()
            .filter(|n| n.tenant_id == tenant && n.invoice_id == invoice)
            .cloned()
            .collect())
    }

    async fn get_idempotency(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let t = self.tables.read().await;
        Ok(t.idempotency.get(&(tenant, key.to_owned())).cloned())
    }

    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut t = self.tables.write().await;
        let n = t.idempotency.len();
        t.idempotency.retain(|_, r| r.created_at >= before);
        Ok(u64::try_from(n - t.idempotency.len()).unwrap_or(0))
    }

    async fn due(&self, kind: DueKind, now: DateTime<Utc>, limit: u32) -> Result<Vec<Due>> {
        let t = self.tables.read().await;
        let mut due: Vec<Due> = match kind {
            DueKind::PeriodEnd => t
                .subscriptions
                .values()
                .filter_map(|s| {
                    s.next_action_at().filter(|at| *at <= now).map(|at| Due {
                        tenant_id: s.tenant_id,
                        id: s.id.as_uuid(),
                        due_at: at,
                    })
                })
                .collect(),
            DueKind::PaymentRetry => t
                .invoices
                .values()
                .filter_map(|i| {
                    i.next_action_at().filter(|at| *at <= now).map(|at| Due {
                        tenant_id: i.tenant_id,
                        id: i.id.as_uuid(),
                        due_at: at,
                    })
                })
                .collect(),
        };
        due.sort_by_key(|d| (d.due_at, d.id));
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(due)
    }
}

#[async_trait]
impl OutboxStore for MemoryBillingStore {
    async fn enqueue(&self, topic: &str, event: &tenancy_core::events::Event) -> Result<()> {
        self.tables.write().await.outbox.enqueue(topic, event)
    }

    async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        self.tables.read().await.outbox.pending(limit)
    }

    async fn mark_sent(&self, ids: &[EventId], now: DateTime<Utc>) -> Result<u64> {
        Ok(self.tables.write().await.outbox.mark_sent(ids, now))
    }

    async fn purge_sent(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(self.tables.write().await.outbox.purge_sent(before))
    }
}
