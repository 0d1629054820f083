//! The billing conformance suite (feature `conformance`): plain async functions that
//! every [`BillingStore`] backend runs with a fresh store (and its outbox) — the
//! catalog, a subscription's whole life (trial, cycles with usage, proration, pause,
//! cancellation), gapless invoice numbers, atomic commits and version conflicts,
//! idempotency keys under concurrency, dunning, credit notes, two-tenant isolation,
//! and exactly-once period closing with racing schedulers and injected crashes. They
//! panic (like any test) when a backend breaks the contract documented on the trait.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite reports failures by panicking"
)]

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use tenancy_core::clock::{Clock, ManualClock};
use tenancy_core::events::OutboxStore;
use tenancy_core::{Error, ErrorKind, Result, TenantId};

use crate::calendar::Interval;
use crate::ids::{InvoiceId, PlanId, PriceId, ProductId, SubscriptionId};
use crate::model::{
    BillingReason, CreditNote, CreditNoteLine, Customer, Invoice, InvoiceStatus, LineKind, Plan,
    Product, Subscription, SubscriptionStatus,
};
use crate::money::{Currency, Rounding};
use crate::price::{Price, PriceKind, PriceModel, Tier};
use crate::service::{
    AfterRetries, Billing, BillingConfig, Cancel, CustomerInput, Effective, Idempotency,
    NewCreditNote, NewPlan, NewProduct, NewSubscription, PlanChange,
};
use crate::store::{BillingStore, Changes, Due, DueKind, IdempotencyRecord, InvoiceFilter, Write};
use crate::usage::FixedUsage;

/// The suite's start: 2026-01-31 00:00 UTC (a month end, before a short February).
#[must_use]
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

/// A billing engine over `store` with the suite's clock and fixed usage.
#[must_use]
pub fn billing(store: Arc<dyn BillingStore>) -> (Billing, Arc<ManualClock>, Arc<FixedUsage>) {
    let clock = Arc::new(ManualClock::new(start()));
    let usage = Arc::new(FixedUsage::new());
    let billing = Billing::new(store, usage.clone()).with_clock(clock.clone());
    (billing, clock, usage)
}

/// A fee price.
#[must_use]
pub fn fee(description: &str, amount: &str) -> Price {
    Price {
        id: PriceId::new(),
        description: description.into(),
        kind: PriceKind::Fee,
        pricing: PriceModel::PerUnit {
            unit_amount: dec(amount),
        },
        included_units: Decimal::ZERO,
        rounding: Rounding::HalfEven,
    }
}

/// A metered price of `meter`.
#[must_use]
pub fn metered(meter: &str, pricing: PriceModel, included: &str) -> Price {
    Price {
        id: PriceId::new(),
        description: format!("{meter} usage"),
        kind: PriceKind::Metered {
            meter: meter.into(),
        },
        pricing,
        included_units: dec(included),
        rounding: Rounding::HalfEven,
    }
}

/// A product and a monthly USD plan: a 30.00 per-seat fee, API calls at 0.001 each
/// after 1,000 free, storage in graduated tiers.
pub async fn pro_plan(billing: &Billing, name: &str, seat: &str, trial_days: u32) -> Plan {
    let product = billing
        .create_product(NewProduct {
            name: "Platform".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    billing
        .create_plan(NewPlan {
            product_id: product.id,
            name: name.into(),
            currency: usd(),
            interval: Interval::Month,
            trial_days,
            prices: vec![
                fee("Seats", seat),
                metered(
                    "api_calls",
                    PriceModel::PerUnit {
                        unit_amount: dec("0.001"),
                    },
                    "1000",
                ),
                metered(
                    "storage_gb",
                    PriceModel::Graduated {
                        tiers: vec![
                            Tier {
                                up_to: Some(dec("10")),
                                unit_amount: dec("0"),
                                flat_amount: dec("0"),
                            },
                            Tier {
                                up_to: None,
                                unit_amount: dec("0.5"),
                                flat_amount: dec("0"),
                            },
                        ],
                    },
                    "0",
                ),
            ],
        })
        .await
        .unwrap()
}

/// The customer profile of `tenant` (USD, `tax` percent).
pub async fn customer(billing: &Billing, tenant: TenantId, tax: &str) -> Customer {
    billing
        .put_customer(
            tenant,
            CustomerInput {
                name: "Acme".into(),
                email: "billing@acme.test".into(),
                address: crate::model::Address::default(),
                currency: usd(),
                tax_rate: dec(tax),
                provider_customer_id: None,
                invoice_prefix: Some("ACME".into()),
            },
            None,
        )
        .await
        .unwrap()
}

fn subscribe(plan: PlanId) -> NewSubscription {
    NewSubscription {
        plan_id: plan,
        quantity: 1,
        trial_days: None,
        billing_anchor_day: None,
        backdate_start_date: None,
    }
}

async fn all_invoices(billing: &Billing, tenant: TenantId) -> Vec<Invoice> {
    billing
        .invoices(tenant, &InvoiceFilter::default(), 1_000)
        .await
        .unwrap()
}

/// Closes every due period (several passes, as a scheduler would).
pub async fn run_until_idle(billing: &Billing) {
    for _ in 0..100 {
        let report = billing.run_due(500).await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        if report.closed == 0 && report.skipped == 0 {
            return;
        }
    }
    panic!("periods stay due");
}

fn check_invoice_arithmetic(invoice: &Invoice) {
    let lines: i64 = invoice.lines.iter().map(|l| l.amount).sum();
    let tax: i64 = invoice.lines.iter().map(|l| l.tax).sum();
    assert_eq!(lines, invoice.subtotal, "{invoice:?}");
    assert_eq!(tax, invoice.tax, "{invoice:?}");
    assert_eq!(invoice.subtotal + invoice.tax, invoice.total, "{invoice:?}");
}

/// Products and plans: create, read, list, archive with a version check; invalid
/// plans are refused and change nothing.
pub async fn catalog(store: Arc<dyn BillingStore>) {
    let (billing, _, _) = billing(store.clone());
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    assert_eq!(store.get_plan(plan.id).await.unwrap(), plan);
    assert_eq!(
        store.get_product(plan.product_id).await.unwrap().name,
        "Platform"
    );
    assert_eq!(store.list_plans().await.unwrap(), vec![plan.clone()]);
    assert_eq!(store.list_products().await.unwrap().len(), 1);
    let archived = billing
        .set_plan_active(plan.id, false, Some(1))
        .await
        .unwrap();
    assert!(!archived.active);
    assert_eq!(archived.version, 2);
    let stale = billing
        .set_plan_active(plan.id, true, Some(1))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    let mut racing = archived.clone();
    racing.version = 2;
    assert_eq!(
        store.update_plan(&racing).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.get_plan(PlanId::new()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.insert_plan(&plan).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );

    let bad = |prices: Vec<Price>| NewPlan {
        product_id: plan.product_id,
        name: "Bad".into(),
        currency: usd(),
        interval: Interval::Month,
        trial_days: 0,
        prices,
    };
    for prices in [
        vec![],
        vec![
            metered(
                "a",
                PriceModel::PerUnit {
                    unit_amount: dec("1")
                },
                "0"
            );
            2
        ],
        vec![fee("Seats", "-1")],
        vec![metered("a", PriceModel::Graduated { tiers: vec![] }, "0")],
    ] {
        let err = billing.create_plan(bad(prices)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let mut orphan = bad(vec![fee("Seats", "1")]);
    orphan.product_id = ProductId::new();
    assert_eq!(
        billing.create_plan(orphan).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(store.list_plans().await.unwrap().len(), 1);
}

/// A subscription from its trial to its end: no charge in the trial, then fees in
/// advance and usage in arrears every period, tax spread exactly, gapless numbers, a downgrade at period end, cancellation at
/// period end with a final usage invoice; every change emits events via the outbox.
pub async fn subscription_lifecycle(store: Arc<dyn BillingStore>, outbox: Arc<dyn OutboxStore>) {
    let (billing, clock, usage) = billing(store.clone());
    let tenant = TenantId::new();
    let pro = pro_plan(&billing, "Pro", "30", 14).await;
    let basic = pro_plan(&billing, "Basic", "10", 0).await;
    customer(&billing, tenant, "19").await;

    let created = billing
        .create_subscription(tenant, subscribe(pro.id), None)
        .await
        .unwrap();
    let sub = created.subscription;
    assert_eq!(sub.status, SubscriptionStatus::Trialing);
    assert!(
        created.invoice.is_none(),
        "a trial charges nothing up front"
    );
    assert_eq!(sub.current_period.end, start() + Duration::days(14));

    // The trial ends: the first paid period starts, no usage is billed for the trial.
    usage.set(tenant, "api_calls", dec("5000"));
    clock.advance(Duration::days(14));
    run_until_idle(&billing).await;
    let sub = billing.subscription(tenant, sub.id).await.unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    let invoices = all_invoices(&billing, tenant).await;
    assert_eq!(invoices.len(), 1);
    let first = &invoices[0];
    assert_eq!(first.billing_reason, BillingReason::SubscriptionCycle);
    assert_eq!(first.lines.len(), 1, "{first:?}");
    assert_eq!(first.lines[0].kind, LineKind::Fee);
    assert_eq!(first.subtotal, 3_000);
    assert_eq!(first.tax, 570);
    assert_eq!(first.amount_due, 3_570);
    assert_eq!(first.number.as_deref(), Some("ACME-0001"));
    assert_eq!(first.status, InvoiceStatus::Open);
    check_invoice_arithmetic(first);

    // Downgrade at period end, then the period closes: usage at Pro's prices, fee at
    // Basic's.
    billing
        .change_plan(
            tenant,
            sub.id,
            PlanChange {
                plan_id: Some(basic.id),
                quantity: Some(2),
                effective: Effective::PeriodEnd,
            },
            None,
        )
        .await
        .unwrap();
    usage.set(tenant, "storage_gb", dec("12.5"));
    clock.advance(Duration::days(31));
    run_until_idle(&billing).await;
    let invoices = all_invoices(&billing, tenant).await;
    assert_eq!(invoices.len(), 2);
    let second = &invoices[1];
    assert_eq!(second.number.as_deref(), Some("ACME-0002"));
    let usage_lines: BTreeMap<_, _> = second
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Usage)
        .map(|l| (l.meter.clone().unwrap(), l.amount))
        .collect();
    assert_eq!(
        usage_lines["api_calls"], 400,
        "4,000 billable calls at 0.001"
    );
    assert_eq!(
        usage_lines["storage_gb"], 125,
        "2.5 GB above the free tier at 0.5"
    );
    let fee_line = second
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Fee)
        .unwrap();
    assert_eq!(fee_line.amount, 2_000, "two Basic seats");
    assert_eq!(second.subtotal, 2_525);
    check_invoice_arithmetic(second);
    let sub = billing.subscription(tenant, sub.id).await.unwrap();
    assert_eq!(sub.plan_id, basic.id);
    assert_eq!(sub.quantity, 2);
    assert!(sub.scheduled_change.is_none());

    // Cancel at period end, reactivate, cancel again; the period closes with usage
    // only and the subscription ends.
    billing
        .cancel(
            tenant,
            sub.id,
            Cancel {
                at_period_end: true,
                prorate: false,
            },
            None,
        )
        .await
        .unwrap();
    let back = billing.reactivate(tenant, sub.id, None).await.unwrap();
    assert!(!back.cancel_at_period_end);
    billing
        .cancel(
            tenant,
            sub.id,
            Cancel {
                at_period_end: true,
                prorate: false,
            },
            None,
        )
        .await
        .unwrap();
    clock.advance(Duration::days(31));
    run_until_idle(&billing).await;
    let sub = billing.subscription(tenant, sub.id).await.unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Canceled);
    assert!(!sub.open);
    let invoices = all_invoices(&billing, tenant).await;
    assert_eq!(invoices.len(), 3);
    let last = &invoices[2];
    assert_eq!(last.billing_reason, BillingReason::Final);
    assert!(last.lines.iter().all(|l| l.kind == LineKind::Usage));
    assert_eq!(last.number.as_deref(), Some("ACME-0003"));
    let err = billing.reactivate(tenant, sub.id, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // Nothing more is due, ever.
    clock.advance(Duration::days(400));
    assert_eq!(billing.run_due(100).await.unwrap().closed, 0);

    let types: Vec<String> = outbox
        .pending(1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.tenant_id() == tenant)
        .map(|e| e.event.event_type().to_owned())
        .collect();
    for expected in [
        "tenancy.billing.customer.updated",
        "tenancy.billing.subscription.created",
        "tenancy.billing.subscription.renewed",
        "tenancy.billing.invoice.created",
        "tenancy.billing.invoice.finalized",
        "tenancy.billing.subscription.ended",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "no {expected} in {types:?}"
        );
    }
}

/// Fees start at once without a trial (prorated to an anchor day), an upgrade now is
/// prorated on an invoice of its own, a downgrade now credits the balance, which pays
/// the next invoice; pause skips fees; month ends clamp.
pub async fn proration_and_balance(store: Arc<dyn BillingStore>) {
    let (billing, clock, _) = billing(store.clone());
    let tenant = TenantId::new();
    let pro = pro_plan(&billing, "Pro", "60", 0).await;
    let basic = pro_plan(&billing, "Basic", "30", 0).await;
    customer(&billing, tenant, "0").await;

    // Subscribed on January 31, billed on the 1st: the first period is one day of a
    // 31-day January period (December 1 → January 1 is the anchor's previous span).
    let mut input = subscribe(basic.id);
    input.billing_anchor_day = Some(1);
    let created = billing
        .create_subscription(tenant, input, None)
        .await
        .unwrap();
    let sub = created.subscription;
    assert_eq!(
        sub.current_period.end,
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
    );
    let invoice = created.invoice.unwrap();
    assert_eq!(invoice.billing_reason, BillingReason::SubscriptionCreate);
    assert_eq!(invoice.subtotal, 97, "3,000 × 1/31 of January");
    clock.advance(Duration::days(1));
    run_until_idle(&billing).await;
    let sub = billing.subscription(tenant, sub.id).await.unwrap();
    assert_eq!(
        sub.current_period.end,
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    );

    // Halfway through February (28 days), upgrade now: -15.00 + 30.00.
    clock.advance(Duration::days(14));
    let preview = billing
        .preview_change(
            tenant,
            sub.id,
            &PlanChange {
                plan_id: Some(pro.id),
                quantity: None,
                effective: Effective::Now,
            },
        )
        .await
        .unwrap();
    let change = billing
        .change_plan(
            tenant,
            sub.id,
            PlanChange {
                plan_id: Some(pro.id),
                quantity: None,
                effective: Effective::Now,
            },
            None,
        )
        .await
        .unwrap();
    let up = change.invoice.unwrap();
    assert_eq!(up.lines, preview);
    assert_eq!(up.billing_reason, BillingReason::SubscriptionUpdate);
    let amounts: Vec<(LineKind, i64)> = up.lines.iter().map(|l| (l.kind, l.amount)).collect();
    assert_eq!(
        amounts,
        vec![
            (LineKind::ProrationCredit, -1_500),
            (LineKind::ProrationCharge, 3_000)
        ]
    );
    // And straight back down: the credit exceeds the charge; the net goes to the
    // balance and the upgrade-then-downgrade nets out over the two invoices.
    let down = billing
        .change_plan(
            tenant,
            sub.id,
            PlanChange {
                plan_id: Some(basic.id),
                quantity: None,
                effective: Effective::Now,
            },
            None,
        )
        .await
        .unwrap()
        .invoice
        .unwrap();
    assert_eq!(down.total, -1_500);
    assert_eq!(up.total + down.total, 0);
    assert_eq!(down.amount_due, 0);
    assert_eq!(down.status, InvoiceStatus::Paid);
    assert_eq!(billing.customer(tenant).await.unwrap().balance, 1_500);

    // The next cycle's 30.00 fee is paid 15.00 from the balance.
    clock.advance(Duration::days(14));
    run_until_idle(&billing).await;
    let cycle = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(cycle.billing_reason, BillingReason::SubscriptionCycle);
    assert_eq!(cycle.balance_applied, 1_500);
    assert_eq!(cycle.amount_due, cycle.total - 1_500);
    assert_eq!(billing.customer(tenant).await.unwrap().balance, 0);

    // Paused: the next cycle bills usage only (no fee).
    billing.pause(tenant, sub.id, None).await.unwrap();
    clock.advance(Duration::days(31));
    run_until_idle(&billing).await;
    let paused = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .last()
        .unwrap();
    assert!(
        paused.lines.iter().all(|l| l.kind == LineKind::Usage),
        "{paused:?}"
    );
    billing.resume(tenant, sub.id, None).await.unwrap();
    assert_eq!(
        billing
            .resume(tenant, sub.id, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );

    // Resumed mid-period: this period's fee was never charged, so nothing is credited
    // on a change; the next period bills the fee again.
    clock.advance(Duration::days(10));
    let none = billing
        .preview_change(
            tenant,
            sub.id,
            &PlanChange {
                plan_id: Some(pro.id),
                quantity: None,
                effective: Effective::Now,
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    clock.advance(Duration::days(25));
    run_until_idle(&billing).await;
    let resumed = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .last()
        .unwrap();
    assert!(resumed.lines.iter().any(|l| l.kind == LineKind::Fee));

    // Cancel now with proration on May 11 (the period is May 1 – June 1): a credit for
    // the 21 unused days, then a final usage invoice when the period ends.
    clock.advance(Duration::days(5));
    let canceled = billing
        .cancel(
            tenant,
            sub.id,
            Cancel {
                at_period_end: false,
                prorate: true,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(canceled.subscription.status, SubscriptionStatus::Canceled);
    let credit = canceled.invoice.unwrap();
    assert_eq!(credit.lines.len(), 1);
    assert_eq!(credit.total, -2_032, "-3,000 × 21/31");
    clock.advance(Duration::days(31));
    run_until_idle(&billing).await;
    let last = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(last.billing_reason, BillingReason::Final);
    let numbers: Vec<String> = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .filter_map(|i| i.number)
        .collect();
    let expected: Vec<String> = (1..=numbers.len())
        .map(|n| format!("ACME-{n:04}"))
        .collect();
    assert_eq!(numbers, expected, "numbers are gapless");
}

/// A commit is all or nothing, and versions are checked: a stale write is a
/// `Conflict` that changes nothing (not even the other records of its commit).
pub async fn atomic_commits(store: Arc<dyn BillingStore>, outbox: Arc<dyn OutboxStore>) {
    let (billing, _, _) = billing(store.clone());
    let tenant = TenantId::new();
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, tenant, "0").await;
    let sub = billing
        .create_subscription(tenant, subscribe(plan.id), None)
        .await
        .unwrap()
        .subscription;
    let pending_before = outbox.pending(10_000).await.unwrap().len();

    let mut newer = sub.clone();
    newer.quantity = 7;
    newer.version += 1;
    let mut stale_invoice = all_invoices(&billing, tenant).await.remove(0);
    stale_invoice.status = InvoiceStatus::Void;
    // Version 1 → claiming 3 skips one: stale.
    stale_invoice.version += 2;
    let event = tenancy_core::events::Event::new(
        tenant,
        "tenancy.billing.test",
        "/test",
        "x",
        serde_json::json!({}),
    )
    .unwrap();
    let changes = Changes {
        subscriptions: vec![Write::Update(newer.clone())],
        invoices: vec![Write::Update(stale_invoice.clone())],
        events: vec![event],
        idempotency: Some(IdempotencyRecord {
            key: "atomic".into(),
            fingerprint: "f".into(),
            response: serde_json::json!({}),
            created_at: start(),
        }),
        ..Changes::default()
    };
    let err = store.commit(tenant, &changes).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        billing.subscription(tenant, sub.id).await.unwrap().quantity,
        1
    );
    assert!(
        store
            .get_idempotency(tenant, "atomic")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(outbox.pending(10_000).await.unwrap().len(), pending_before);

    // The same subscription write alone commits; repeating it is stale.
    let alone = Changes {
        subscriptions: vec![Write::Update(newer.clone())],
        ..Changes::default()
    };
    store.commit(tenant, &alone).await.unwrap();
    assert_eq!(
        store.commit(tenant, &alone).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let mut ghost = newer.clone();
    ghost.id = SubscriptionId::new();
    let missing = Changes {
        subscriptions: vec![Write::Update(ghost)],
        ..Changes::default()
    };
    assert_eq!(
        store.commit(tenant, &missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Inserts start at version 1; records must be the tenant's.
    let mut twice = newer.clone();
    twice.id = SubscriptionId::new();
    let bad_version = Changes {
        subscriptions: vec![Write::Insert(twice.clone())],
        ..Changes::default()
    };
    assert_eq!(
        store.commit(tenant, &bad_version).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    twice.version = 1;
    let other = Changes {
        subscriptions: vec![Write::Insert(twice)],
        ..Changes::default()
    };
    assert_eq!(
        store
            .commit(TenantId::new(), &other)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // A batch is all or nothing across tenants, one change per tenant.
    let other = TenantId::new();
    customer(&billing, other, "0").await;
    let theirs = billing
        .create_subscription(other, subscribe(plan.id), None)
        .await
        .unwrap()
        .subscription;
    let mut theirs_next = theirs.clone();
    theirs_next.quantity = 3;
    theirs_next.version += 1;
    let mine = billing.subscription(tenant, sub.id).await.unwrap();
    let mut stale_mine = mine.clone();
    stale_mine.version += 2;
    let batch = vec![
        (
            other,
            Changes {
                subscriptions: vec![Write::Update(theirs_next.clone())],
                ..Changes::default()
            },
        ),
        (
            tenant,
            Changes {
                subscriptions: vec![Write::Update(stale_mine)],
                ..Changes::default()
            },
        ),
    ];
    assert_eq!(
        store.commit_batch(&batch).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        billing
            .subscription(other, theirs.id)
            .await
            .unwrap()
            .quantity,
        1
    );
    let twice = vec![
        (
            other,
            Changes {
                subscriptions: vec![Write::Update(theirs_next.clone())],
                ..Changes::default()
            },
        ),
        (other, Changes::default()),
    ];
    assert_eq!(
        store.commit_batch(&twice).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let mut mine_next = mine.clone();
    mine_next.quantity = 4;
    mine_next.version += 1;
    let good = vec![
        (
            other,
            Changes {
                subscriptions: vec![Write::Update(theirs_next)],
                ..Changes::default()
            },
        ),
        (
            tenant,
            Changes {
                subscriptions: vec![Write::Update(mine_next)],
                ..Changes::default()
            },
        ),
    ];
    store.commit_batch(&good).await.unwrap();
    assert_eq!(
        billing
            .subscription(other, theirs.id)
            .await
            .unwrap()
            .quantity,
        3
    );
    assert_eq!(
        billing.subscription(tenant, sub.id).await.unwrap().quantity,
        4
    );
    store.commit_batch(&[]).await.unwrap();

    // A second invoice with a taken billing key is refused.
    let mut dup = all_invoices(&billing, tenant).await.remove(0);
    dup.id = InvoiceId::new();
    dup.number = None;
    dup.version = 1;
    let taken = Changes {
        invoices: vec![Write::Insert(dup)],
        ..Changes::default()
    };
    assert_eq!(
        store.commit(tenant, &taken).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
}

/// Stripe's idempotency semantics under concurrency: 20 parallel creates with one key
/// make one subscription and all get the same answer; the key with other parameters
/// is a `Conflict`; keys are scoped by tenant; expired keys are purged.
pub async fn idempotency(store: Arc<dyn BillingStore>) {
    let (billing, _, _) = billing(store.clone());
    let billing = Arc::new(billing);
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, tenant, "10").await;
    customer(&billing, other, "10").await;

    let key = Idempotency::new("create-sub-1", "POST /v1/subscriptions {plan}").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (billing, key) = (billing.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            billing
                .create_subscription(tenant, subscribe(plan.id), Some(&key))
                .await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every request gets the saved response"
    );
    assert_eq!(billing.subscriptions(tenant).await.unwrap().len(), 1);
    assert_eq!(all_invoices(&billing, tenant).await.len(), 1);

    let other_params = Idempotency::new("create-sub-1", "POST /v1/subscriptions {other}").unwrap();
    let err = billing
        .create_subscription(tenant, subscribe(plan.id), Some(&other_params))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // The same key in another tenant is another key.
    billing
        .create_subscription(other, subscribe(plan.id), Some(&key))
        .await
        .unwrap();
    assert_eq!(billing.subscriptions(other).await.unwrap().len(), 1);
    assert!(Idempotency::new("", "x").is_err());
    assert!(Idempotency::new("with space", "x").is_err());

    assert_eq!(
        store
            .purge_idempotency(start() - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_idempotency(start() + Duration::hours(25))
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .get_idempotency(tenant, "create-sub-1")
            .await
            .unwrap()
            .is_none()
    );
}

/// Two tenants never see each other's records; the same key can live in both.
pub async fn tenant_isolation(store: Arc<dyn BillingStore>) {
    let (billing, clock, _) = billing(store.clone());
    let (a, b) = (TenantId::new(), TenantId::new());
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, a, "0").await;
    customer(&billing, b, "0").await;
    let sa = billing
        .create_subscription(a, subscribe(plan.id), None)
        .await
        .unwrap();
    let sb = billing
        .create_subscription(b, subscribe(plan.id), None)
        .await
        .unwrap();
    // Both start their numbering at 1.
    assert_eq!(
        sa.invoice.as_ref().unwrap().number.as_deref(),
        Some("ACME-0001")
    );
    assert_eq!(
        sb.invoice.as_ref().unwrap().number.as_deref(),
        Some("ACME-0001")
    );
    let ia = sa.invoice.unwrap().id;
    assert_eq!(
        billing
            .subscription(b, sa.subscription.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        billing.invoice(b, ia).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(all_invoices(&billing, b).await.len(), 1);
    assert_eq!(
        billing.subscriptions(a).await.unwrap(),
        vec![sa.subscription.clone()]
    );
    assert!(store.list_credit_notes(b, ia).await.unwrap().is_empty());
    assert_eq!(
        billing.void_invoice(b, ia, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        billing.invoice(a, ia).await.unwrap().status,
        InvoiceStatus::Open
    );
    // The scheduler sees both tenants' due periods.
    clock.advance(Duration::days(31));
    let due: Vec<Due> = store
        .due(DueKind::PeriodEnd, clock.now(), 10)
        .await
        .unwrap();
    let tenants: std::collections::HashSet<TenantId> = due.iter().map(|d| d.tenant_id).collect();
    assert_eq!(tenants.len(), 2);
    run_until_idle(&billing).await;
    assert_eq!(all_invoices(&billing, a).await.len(), 2);
    assert_eq!(all_invoices(&billing, b).await.len(), 2);
}

/// Failed payments: past due, retries scheduled per the configuration (the
/// scheduler's `PaymentRetry` index), then the subscription is canceled after the
/// last; a payment brings a past-due subscription back; uncollectible as configured.
pub async fn dunning(store: Arc<dyn BillingStore>) {
    let (billing, clock, _) = billing(store.clone());
    let tenant = TenantId::new();
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, tenant, "0").await;
    let created = billing
        .create_subscription(tenant, subscribe(plan.id), None)
        .await
        .unwrap();
    let (sub, invoice) = (created.subscription, created.invoice.unwrap());

    let failed = billing
        .payment_failed(tenant, invoice.id, "card_declined", None)
        .await
        .unwrap();
    assert_eq!(failed.payment_attempts, 1);
    assert_eq!(
        failed.next_payment_attempt,
        Some(clock.now() + Duration::days(1))
    );
    assert_eq!(
        billing.subscription(tenant, sub.id).await.unwrap().status,
        SubscriptionStatus::PastDue
    );
    assert!(
        store
            .due(DueKind::PaymentRetry, clock.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(Duration::days(1));
    let due = store
        .due(DueKind::PaymentRetry, clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![invoice.id.as_uuid()]
    );

    // Paid on the retry: active again, nothing due.
    let paid = billing
        .mark_paid(tenant, invoice.id, Some("pi_1".into()), None)
        .await
        .unwrap();
    assert_eq!(paid.status, InvoiceStatus::Paid);
    assert_eq!(paid.amount_paid, paid.amount_due);
    assert_eq!(
        billing.subscription(tenant, sub.id).await.unwrap().status,
        SubscriptionStatus::Active
    );
    assert!(
        store
            .due(DueKind::PaymentRetry, clock.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        billing
            .void_invoice(tenant, invoice.id, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );

    // The next invoice fails four times: three retries, then cancellation.
    clock.advance(Duration::days(30));
    run_until_idle(&billing).await;
    let next = all_invoices(&billing, tenant)
        .await
        .into_iter()
        .last()
        .unwrap();
    for _ in 0..4 {
        billing
            .payment_failed(tenant, next.id, "card_declined", None)
            .await
            .unwrap();
    }
    let next = billing.invoice(tenant, next.id).await.unwrap();
    assert_eq!(next.payment_attempts, 4);
    assert_eq!(next.next_payment_attempt, None);
    assert_eq!(next.status, InvoiceStatus::Open);
    assert_eq!(
        billing.subscription(tenant, sub.id).await.unwrap().status,
        SubscriptionStatus::Canceled
    );

    // Configured to give up on the invoice instead.
    let (strict, _, _) = billing_with(
        store.clone(),
        BillingConfig {
            retry_schedule: vec![Duration::hours(1)],
            after_retries: AfterRetries::MarkUncollectible,
            ..BillingConfig::default()
        },
    );
    let t2 = TenantId::new();
    customer(&strict, t2, "0").await;
    let inv = strict
        .create_subscription(t2, subscribe(plan.id), None)
        .await
        .unwrap()
        .invoice
        .unwrap();
    strict
        .payment_failed(t2, inv.id, "expired_card", None)
        .await
        .unwrap();
    let gone = strict
        .payment_failed(t2, inv.id, "expired_card", None)
        .await
        .unwrap();
    assert_eq!(gone.status, InvoiceStatus::Uncollectible);
    assert_eq!(
        strict
            .mark_paid(t2, inv.id, None, None)
            .await
            .unwrap()
            .status,
        InvoiceStatus::Paid
    );
}

fn billing_with(
    store: Arc<dyn BillingStore>,
    config: BillingConfig,
) -> (Billing, Arc<ManualClock>, Arc<FixedUsage>) {
    let (b, clock, usage) = billing(store);
    (b.with_config(config), clock, usage)
}

/// Drafts (auto-finalize off) are numbered only when finalized; credit notes lower an
/// open invoice's amount due, or credit the balance for a paid one, and never exceed
/// the total; voided invoices are kept.
pub async fn drafts_and_credit_notes(store: Arc<dyn BillingStore>) {
    let (billing, _, _) = billing_with(
        store.clone(),
        BillingConfig {
            auto_finalize: false,
            ..BillingConfig::default()
        },
    );
    let tenant = TenantId::new();
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, tenant, "10").await;
    let draft = billing
        .create_subscription(tenant, subscribe(plan.id), None)
        .await
        .unwrap()
        .invoice
        .unwrap();
    assert_eq!(draft.status, InvoiceStatus::Draft);
    assert!(draft.number.is_none());
    let note = NewCreditNote {
        reason: "goodwill".into(),
        lines: vec![CreditNoteLine {
            description: "sorry".into(),
            amount: 500,
        }],
    };
    assert_eq!(
        billing
            .create_credit_note(tenant, draft.id, note.clone(), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    let open = billing
        .finalize_invoice(tenant, draft.id, None)
        .await
        .unwrap();
    assert_eq!(open.number.as_deref(), Some("ACME-0001"));
    assert_eq!(open.amount_due, 3_300);
    assert_eq!(
        billing
            .finalize_invoice(tenant, draft.id, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );

    let cn: CreditNote = billing
        .create_credit_note(tenant, open.id, note.clone(), None)
        .await
        .unwrap();
    assert_eq!(cn.number, "ACME-0001-CN1");
    assert_eq!(
        billing.invoice(tenant, open.id).await.unwrap().amount_due,
        2_800
    );
    let too_much = NewCreditNote {
        reason: "x".into(),
        lines: vec![CreditNoteLine {
            description: "all".into(),
            amount: 3_000,
        }],
    };
    let err = billing
        .create_credit_note(tenant, open.id, too_much, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let paid = billing
        .mark_paid(tenant, open.id, None, None)
        .await
        .unwrap();
    assert_eq!(paid.amount_paid, 2_800);
    let after = billing
        .create_credit_note(tenant, open.id, note, None)
        .await
        .unwrap();
    assert_eq!(after.number, "ACME-0001-CN2");
    assert_eq!(billing.customer(tenant).await.unwrap().balance, 500);
    assert_eq!(
        store
            .list_credit_notes(tenant, open.id)
            .await
            .unwrap()
            .len(),
        2
    );

    // A second draft voided: kept, owed nothing, never numbered.
    let second = billing
        .create_subscription(tenant, subscribe(plan.id), None)
        .await
        .unwrap()
        .invoice
        .unwrap();
    let void = billing.void_invoice(tenant, second.id, None).await.unwrap();
    assert_eq!(void.status, InvoiceStatus::Void);
    assert!(void.number.is_none());
    assert_eq!(all_invoices(&billing, tenant).await.len(), 2);
    let filtered = billing
        .invoices(
            tenant,
            &InvoiceFilter {
                status: Some(InvoiceStatus::Void),
                subscription: None,
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
}

/// A store that fails commits on demand: before the inner commit (a crash before the
/// transaction committed) or after it (a crash before the caller heard of it).
pub struct CrashingStore {
    inner: Arc<dyn BillingStore>,
    commits: AtomicU64,
    every: u64,
}

impl CrashingStore {
    /// Fails every `every`th commit, alternating before and after the inner commit.
    #[must_use]
    pub fn new(inner: Arc<dyn BillingStore>, every: u64) -> Self {
        Self {
            inner,
            commits: AtomicU64::new(0),
            every,
        }
    }
}

impl CrashingStore {
    /// Runs `commit`, except every `every`th time: then a crash is reported, before the
    /// commit runs or after it, in turn.
    async fn crash_around(
        &self,
        commit: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if !n.is_multiple_of(self.every) {
            return commit.await;
        }
        if (n / self.every).is_multiple_of(2) {
            commit.await?;
        }
        Err(Error::Unavailable("injected crash".into()))
    }
}

#[async_trait]
impl BillingStore for CrashingStore {
    async fn insert_product(&self, p: &Product) -> Result<()> {
        self.inner.insert_product(p).await
    }
    async fn get_product(&self, id: ProductId) -> Result<Product> {
        self.inner.get_product(id).await
    }
    async fn list_products(&self) -> Result<Vec<Product>> {
        self.inner.list_products().await
    }
    async fn insert_plan(&self, p: &Plan) -> Result<()> {
        self.inner.insert_plan(p).await
    }
    async fn update_plan(&self, p: &Plan) -> Result<()> {
        self.inner.update_plan(p).await
    }
    async fn get_plan(&self, id: PlanId) -> Result<Plan> {
        self.inner.get_plan(id).await
    }
    async fn list_plans(&self) -> Result<Vec<Plan>> {
        self.inner.list_plans().await
    }
    async fn commit(&self, tenant: TenantId, changes: &Changes) -> Result<()> {
        self.crash_around(self.inner.commit(tenant, changes)).await
    }
    fn write_concurrency(&self) -> usize {
        self.inner.write_concurrency()
    }
    async fn commit_batch(&self, batch: &[(TenantId, Changes)]) -> Result<()> {
        self.crash_around(self.inner.commit_batch(batch)).await
    }
    async fn get_customer(&self, t: TenantId) -> Result<Customer> {
        self.inner.get_customer(t).await
    }
    async fn get_subscription(&self, t: TenantId, id: SubscriptionId) -> Result<Subscription> {
        self.inner.get_subscription(t, id).await
    }
    async fn list_subscriptions(&self, t: TenantId) -> Result<Vec<Subscription>> {
        self.inner.list_subscriptions(t).await
    }
    async fn get_invoice(&self, t: TenantId, id: InvoiceId) -> Result<Invoice> {
        self.inner.get_invoice(t, id).await
    }
    async fn list_invoices(&self, t: TenantId, f: &InvoiceFilter, l: u32) -> Result<Vec<Invoice>> {
        self.inner.list_invoices(t, f, l).await
    }
    async fn list_credit_notes(&self, t: TenantId, i: InvoiceId) -> Result<Vec<CreditNote>> {
        self.inner.list_credit_notes(t, i).await
    }
    async fn get_idempotency(&self, t: TenantId, k: &str) -> Result<Option<IdempotencyRecord>> {
        self.inner.get_idempotency(t, k).await
    }
    async fn purge_idempotency(&self, b: DateTime<Utc>) -> Result<u64> {
        self.inner.purge_idempotency(b).await
    }
    async fn due(&self, k: DueKind, n: DateTime<Utc>, l: u32) -> Result<Vec<Due>> {
        self.inner.due(k, n, l).await
    }
}

/// Each period is invoiced exactly once: 30 subscriptions over three tenants, three
/// months, closed by two schedulers at once over a store that crashes every few
/// commits (before or after the commit) and scheduler tasks aborted mid-flight;
/// afterwards every subscription has one invoice per closed period, and numbers are
/// gapless per tenant.
pub async fn exactly_once_cycles(store: Arc<dyn BillingStore>) {
    let (setup, clock, usage) = billing(store.clone());
    let plan = pro_plan(&setup, "Pro", "30", 0).await;
    let tenants = [TenantId::new(), TenantId::new(), TenantId::new()];
    let mut subs = Vec::new();
    for t in tenants {
        customer(&setup, t, "7.5").await;
        usage.set(t, "api_calls", dec("123456"));
        for _ in 0..10 {
            subs.push((
                t,
                setup
                    .create_subscription(t, subscribe(plan.id), None)
                    .await
                    .unwrap()
                    .subscription
                    .id,
            ));
        }
    }
    let crashing: Arc<dyn BillingStore> = Arc::new(CrashingStore::new(store.clone(), 7));
    let scheduler = |s: Arc<dyn BillingStore>| {
        Arc::new(Billing::new(s, usage.clone()).with_clock(clock.clone()))
    };
    let (one, two) = (scheduler(crashing.clone()), scheduler(crashing));
    for month in 0u64..3 {
        clock.advance(Duration::days(31));
        // A scheduler task aborted in flight, then two racing to the end.
        let aborted = {
            let one = one.clone();
            tokio::spawn(async move { one.run_due(1_000).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(month * 3 + 1)).await;
        aborted.abort();
        let _ = aborted.await;
        for _ in 0..50 {
            let (a, b) = tokio::join!(one.run_due(1_000), two.run_due(1_000));
            let (a, b) = (a.unwrap(), b.unwrap());
            if a.closed + a.skipped + a.failed + b.closed + b.skipped + b.failed == 0 {
                break;
            }
        }
    }
    assert!(
        store
            .due(DueKind::PeriodEnd, clock.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    for (tenant, id) in &subs {
        let invoices = setup
            .invoices(
                *tenant,
                &InvoiceFilter {
                    subscription: Some(*id),
                    status: None,
                },
                100,
            )
            .await
            .unwrap();
        // One at creation, one per closed period.
        assert_eq!(invoices.len(), 4, "subscription {id}: {invoices:#?}");
        let mut keys: Vec<&str> = invoices.iter().map(|i| i.billing_key.as_str()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 4);
        for i in &invoices {
            check_invoice_arithmetic(i);
        }
    }
    for t in tenants {
        let mut numbers: Vec<u64> = all_invoices(&setup, t)
            .await
            .iter()
            .map(|i| {
                i.number
                    .as_ref()
                    .unwrap()
                    .trim_start_matches("ACME-")
                    .parse()
                    .unwrap()
            })
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=40).collect::<Vec<u64>>());
        let per_sub: HashMap<_, usize> =
            all_invoices(&setup, t)
                .await
                .iter()
                .fold(HashMap::new(), |mut m, i| {
                    *m.entry(i.subscription_id).or_default() += 1;
                    m
                });
        assert!(per_sub.values().all(|n| *n == 4));
    }
}

/// A subscription backdated 40 days: the first period's fee is invoiced at once and
/// the period that has already ended is closed by the next scheduler pass; a start in
/// the future or over a year ago is refused.
pub async fn backdated_subscription(store: Arc<dyn BillingStore>) {
    let (billing, _, usage) = billing(store.clone());
    let tenant = TenantId::new();
    let plan = pro_plan(&billing, "Pro", "30", 0).await;
    customer(&billing, tenant, "0").await;
    usage.set(tenant, "api_calls", dec("3000"));
    let mut input = subscribe(plan.id);
    input.backdate_start_date = Some(start() - Duration::days(40));
    let created = billing
        .create_subscription(tenant, input.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        created.subscription.current_period.start,
        start() - Duration::days(40)
    );
    assert_eq!(created.invoice.unwrap().subtotal, 3_000);
    run_until_idle(&billing).await;
    let invoices = all_invoices(&billing, tenant).await;
    assert_eq!(invoices.len(), 2);
    let usage_line = invoices[1]
        .lines
        .iter()
        .find(|l| l.meter.as_deref() == Some("api_calls"))
        .unwrap();
    assert_eq!(usage_line.amount, 200);
    let sub = billing
        .subscription(tenant, created.subscription.id)
        .await
        .unwrap();
    assert!(sub.current_period.contains(start()));
    for bad in [start() + Duration::days(1), start() - Duration::days(400)] {
        input.backdate_start_date = Some(bad);
        let err = billing
            .create_subscription(tenant, input.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(billing.subscriptions(tenant).await.unwrap().len(), 1);
}

/// A payment provider following a script of outcomes, recording its charges.
pub struct ScriptedProvider {
    script: std::sync::Mutex<Vec<Result<crate::payment::ChargeOutcome>>>,
    /// The idempotency keys of the charges made, in order.
    pub keys: std::sync::Mutex<Vec<String>>,
}

impl ScriptedProvider {
    /// A provider answering charges with `script`, in order (then `Succeeded`).
    #[must_use]
    pub fn new(script: Vec<Result<crate::payment::ChargeOutcome>>) -> Self {
        Self {
            script: std::sync::Mutex::new(script),
            keys: std::sync::Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl crate::payment::PaymentProvider for ScriptedProvider {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn create_customer(
        &self,
        tenant: TenantId,
        _request: &crate::payment::CustomerRequest,
    ) -> Result<crate::payment::ProviderCustomerId> {
        Ok(crate::payment::ProviderCustomerId::new(format!(
            "cus_{}",
            tenant.as_uuid().simple()
        )))
    }

    async fn attach_payment_method(
        &self,
        _customer: &crate::payment::ProviderCustomerId,
        _method: &str,
    ) -> Result<()> {
        Ok(())
    }

    async fn charge(
        &self,
        request: &crate::payment::ChargeRequest,
    ) -> Result<crate::payment::ChargeOutcome> {
        self.keys
            .lock()
            .unwrap()
            .push(request.idempotency_key.clone());
        let mut script = self.script.lock().unwrap();
        if script.is_empty() {
            return Ok(crate::payment::ChargeOutcome::Succeeded {
                provider_payment_id: format!("pi_{}", request.idempotency_key),
            });
        }
        script.remove(0)
    }

    async fn refund(
        &self,
        _request: &crate::payment::RefundRequest,
    ) -> Result<crate::payment::RefundOutcome> {
        Err(Error::Unavailable("refunds are not scripted".into()))
    }
}

/// Payment collection and provider events: the manual provider leaves invoices
/// pending; a provider failing then succeeding drives dunning and recovery with one
/// idempotency key per attempt; an unreachable provider is retried in 15 minutes;
/// provider events apply once, out of order, and only to the tenant's invoices.
pub async fn payments(store: Arc<dyn BillingStore>) {
    use crate::payment::{ChargeOutcome, ManualProvider};
    use crate::provider_events::{PaymentEvent, PaymentEventKind, PaymentEventOutcome};

    // Manual: the charge is pending until an operator (or a webhook) settles it.
    let (manual, clock, _) = billing(store.clone());
    let manual = manual.with_payments(Arc::new(ManualProvider::new()));
    let plan = pro_plan(&manual, "Pro", "30", 0).await;
    let tenant = TenantId::new();
    customer(&manual, tenant, "0").await;
    let invoice = manual
        .create_subscription(tenant, subscribe(plan.id), None)
        .await
        .unwrap()
        .invoice
        .unwrap();
    assert_eq!(invoice.next_payment_attempt, Some(clock.now()));
    let report = manual.collect_due(100).await.unwrap();
    assert_eq!(report.pending, 1, "{report:?}");
    let pending = manual.invoice(tenant, invoice.id).await.unwrap();
    assert_eq!(pending.status, InvoiceStatus::Open);
    assert!(pending.provider_payment_id.is_some());
    assert_eq!(pending.next_payment_attempt, None);
    assert!(
        manual
            .customer(tenant)
            .await
            .unwrap()
            .provider_customer_id
            .is_some()
    );
    assert_eq!(
        manual.collect_due(100).await.unwrap(),
        crate::service::PaymentReport::default()
    );

    // The provider's events: paid once; the same event again is a duplicate; a late
    // failure of the paid invoice changes nothing; other tenants' and unknown
    // invoices are ignored.
    let paid = PaymentEvent {
        provider: "stripe".into(),
        event_id: format!("evt_{}", invoice.id.as_uuid().simple()),
        event_type: "payment_intent.succeeded".into(),
        kind: PaymentEventKind::Succeeded {
            payment_id: pending.provider_payment_id.clone().unwrap(),
        },
        tenant: Some(tenant),
        invoice: Some(invoice.id),
    };
    assert_eq!(
        manual.apply_payment_event(&paid).await.unwrap(),
        PaymentEventOutcome::Applied
    );
    assert_eq!(
        manual.invoice(tenant, invoice.id).await.unwrap().status,
        InvoiceStatus::Paid
    );
    assert_eq!(
        manual.apply_payment_event(&paid).await.unwrap(),
        PaymentEventOutcome::Duplicate
    );
    let late = PaymentEvent {
        event_id: format!("evt_late_{}", invoice.id.as_uuid().simple()),
        event_type: "payment_intent.payment_failed".into(),
        kind: PaymentEventKind::Failed {
            payment_id: "pi_old".into(),
            reason: "declined".into(),
        },
        ..paid.clone()
    };
    assert_eq!(
        manual.apply_payment_event(&late).await.unwrap(),
        PaymentEventOutcome::Applied
    );
    let after = manual.invoice(tenant, invoice.id).await.unwrap();
    assert_eq!(
        (after.status, after.payment_attempts),
        (InvoiceStatus::Paid, 0)
    );
    let foreign = PaymentEvent {
        event_id: "evt_foreign".into(),
        tenant: Some(TenantId::new()),
        ..paid.clone()
    };
    assert_eq!(
        manual.apply_payment_event(&foreign).await.unwrap(),
        PaymentEventOutcome::Ignored
    );
    let unrelated = PaymentEvent {
        event_id: "evt_none".into(),
        tenant: None,
        invoice: None,
        ..paid.clone()
    };
    assert_eq!(
        manual.apply_payment_event(&unrelated).await.unwrap(),
        PaymentEventOutcome::Ignored
    );

    // Declined, then unreachable, then succeeded.
    let provider = Arc::new(ScriptedProvider::new(vec![
        Ok(ChargeOutcome::Failed {
            provider_payment_id: Some("pi_a".into()),
            reason: "card_declined".into(),
            code: None,
        }),
        Err(Error::Unavailable("provider down".into())),
    ]));
    let (scripted, clock, _) = billing(store.clone());
    let scripted = scripted.with_payments(provider.clone());
    let t2 = TenantId::new();
    customer(&scripted, t2, "0").await;
    let created = scripted
        .create_subscription(t2, subscribe(plan.id), None)
        .await
        .unwrap();
    let (sub, invoice) = (created.subscription, created.invoice.unwrap());
    assert_eq!(scripted.collect_due(100).await.unwrap().failed, 1);
    assert_eq!(
        scripted.subscription(t2, sub.id).await.unwrap().status,
        SubscriptionStatus::PastDue
    );
    let failed = scripted.invoice(t2, invoice.id).await.unwrap();
    assert_eq!(failed.payment_attempts, 1);
    assert_eq!(failed.provider_payment_id.as_deref(), Some("pi_a"));
    // A failure report of another payment than the latest is stale.
    let stale = PaymentEvent {
        provider: "stripe".into(),
        event_id: "evt_stale".into(),
        event_type: "payment_intent.payment_failed".into(),
        kind: PaymentEventKind::Failed {
            payment_id: "pi_other".into(),
            reason: "declined".into(),
        },
        tenant: Some(t2),
        invoice: Some(invoice.id),
    };
    scripted.apply_payment_event(&stale).await.unwrap();
    assert_eq!(
        scripted
            .invoice(t2, invoice.id)
            .await
            .unwrap()
            .payment_attempts,
        1
    );
    assert_eq!(
        scripted.collect_due(100).await.unwrap().succeeded,
        0,
        "not due before the retry"
    );
    clock.advance(Duration::days(1));
    assert_eq!(scripted.collect_due(100).await.unwrap().errors, 1);
    let waiting = scripted.invoice(t2, invoice.id).await.unwrap();
    assert_eq!(
        waiting.next_payment_attempt,
        Some(clock.now() + Duration::minutes(15))
    );
    assert_eq!(
        waiting.payment_attempts, 1,
        "an unreachable provider is no failed attempt"
    );
    clock.advance(Duration::minutes(15));
    assert_eq!(scripted.collect_due(100).await.unwrap().succeeded, 1);
    let paid = scripted.invoice(t2, invoice.id).await.unwrap();
    assert_eq!(paid.status, InvoiceStatus::Paid);
    assert_eq!(
        scripted.subscription(t2, sub.id).await.unwrap().status,
        SubscriptionStatus::Active
    );
    let keys = provider.keys.lock().unwrap().clone();
    assert_eq!(
        keys,
        vec![
            format!("{}-1", invoice.id),
            format!("{}-2", invoice.id),
            format!("{}-2", invoice.id)
        ]
    );
    assert_eq!(
        scripted.customer(t2).await.unwrap().provider_customer_id,
        Some(format!("cus_{}", t2.as_uuid().simple()))
    );
}
