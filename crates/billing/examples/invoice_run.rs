//! The invoice run: `SUBS` subscriptions (default 10,000), one per tenant, each on a
//! plan with a seat fee and three metered prices (API calls per unit after a free
//! allowance, storage in graduated tiers, compute in packages) whose usage comes from
//! tenancy-metering's rollups in the same database (ten events per tenant and
//! meter). The clock then moves past the period end and the billing scheduler closes
//! every period: usage priced in arrears, next fee in advance, tax, a gapless invoice
//! number, events through the outbox — one transaction per subscription. Reported:
//! the wall time from the first scheduler pass to the last invoice, for embedded
//! SQLite (a temporary file) and PostgreSQL (a fresh database, as the row-level
//! security role; when `TENANCY_TEST_POSTGRES_URL` is set).
//!
//! ```sh
//! TENANCY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p tenancy-billing --all-features --example invoice_run
//! ```
//!
//! Settings (environment): `SUBS`, `STORES` (comma-separated subset of
//! `sqlite,postgres`), `CONCURRENCY` (periods closed at once, default 8).
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a load program whose setup fails must stop loudly"
)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use futures_util::StreamExt as _;
use rust_decimal::Decimal;
use tenancy_billing::sql::{migrate_postgres, migrate_sqlite};
use tenancy_billing::{
    Billing, BillingConfig, BillingStore, Currency, CustomerInput, InvoiceFilter, MeteringUsage,
    NewPlan, NewProduct, NewSubscription, Price, PriceKind, PriceModel, Rounding, Tier,
};
use tenancy_core::TenantId;
use tenancy_core::clock::ManualClock;
use tenancy_core::conformance::{PgTestDatabase, sqlite_test_store};
use tenancy_metering::{Aggregation, Metering, MeteringStore, NewMeter, UsageEvent, Window};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

/// A store and what must live as long as it.
struct Store {
    name: &'static str,
    billing: Arc<dyn BillingStore>,
    metering: Arc<dyn MeteringStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

async fn sqlite() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        sqlite_test_store(dir.path(), "billing.db", async |s| {
            tenancy_metering::sql::migrate_sqlite(s).await?;
            migrate_sqlite(s).await
        })
        .await,
    );
    Store {
        name: "SQLite",
        billing: store.clone(),
        metering: store,
        _dir: Some(dir),
        pg: None,
    }
}

async fn postgres() -> Option<Store> {
    let db = PgTestDatabase::create().await?;
    let store = Arc::new(
        db.app_store(async |s| {
            tenancy_metering::sql::migrate_postgres(s).await?;
            migrate_postgres(s).await
        })
        .await,
    );
    Some(Store {
        name: "PostgreSQL",
        billing: store.clone(),
        metering: store,
        _dir: None,
        pg: Some(db),
    })
}

fn price(meter: &str, pricing: PriceModel, included: &str) -> Price {
    Price {
        id: tenancy_billing::PriceId::new(),
        description: format!("{meter} usage"),
        kind: PriceKind::Metered {
            meter: meter.into(),
        },
        pricing,
        included_units: dec(included),
        rounding: Rounding::HalfEven,
    }
}

async fn run(store: Store, subs: usize, concurrency: usize) {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let clock = Arc::new(ManualClock::new(start + Duration::days(14)));
    let metering = Arc::new(Metering::new(store.metering.clone()).with_clock(clock.clone()));
    let billing = Billing::new(
        store.billing.clone(),
        Arc::new(MeteringUsage::new(metering.clone())),
    )
    .with_clock(clock.clone())
    .with_config(BillingConfig {
        concurrency,
        ..BillingConfig::default()
    });
    let usd = Currency::parse("USD").expect("usd");
    let product = billing
        .create_product(NewProduct {
            name: "Platform".into(),
            description: String::new(),
        })
        .await
        .expect("product");
    let plan = billing
        .create_plan(NewPlan {
            product_id: product.id,
            name: "Pro".into(),
            currency: usd,
            interval: tenancy_billing::Interval::Month,
            trial_days: 0,
            prices: vec![
                Price {
                    id: tenancy_billing::PriceId::new(),
                    description: "Seats".into(),
                    kind: PriceKind::Fee,
                    pricing: PriceModel::PerUnit {
                        unit_amount: dec("30"),
                    },
                    included_units: Decimal::ZERO,
                    rounding: Rounding::HalfEven,
                },
                price(
                    "api_calls",
                    PriceModel::PerUnit {
                        unit_amount: dec("0.02"),
                    },
                    "5",
                ),
                price(
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
                                unit_amount: dec("0.25"),
                                flat_amount: dec("0"),
                            },
                        ],
                    },
                    "0",
                ),
                price(
                    "compute_seconds",
                    PriceModel::Package {
                        size: dec("100"),
                        amount: dec("1.5"),
                    },
                    "0",
                ),
            ],
        })
        .await
        .expect("plan");

    // Setup (not timed): meters, usage, customers and subscriptions created at the
    // start of January, so all periods end on February 1.
    let setup = Instant::now();
    let billing = &billing;
    let metering = &metering;
    let tenants: Vec<TenantId> = futures_util::stream::iter(0..subs)
        .map(|_| async move {
            let tenant = TenantId::new();
            for (key, aggregation, property) in [
                ("api_calls", Aggregation::Count, None),
                ("storage_gb", Aggregation::Max, Some("gb")),
                ("compute_seconds", Aggregation::Sum, Some("seconds")),
            ] {
                metering
                    .create_meter(
                        tenant,
                        NewMeter {
                            key: key.into(),
                            event_type: key.into(),
                            aggregation,
                            value_property: property.map(str::to_owned),
                            windows: vec![Window::Day],
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("meter");
            }
            let events: Vec<UsageEvent> = (0..30)
                .map(|i| {
                    let key = ["api_calls", "storage_gb", "compute_seconds"][i % 3];
                    UsageEvent {
                        id: uuid::Uuid::now_v7(),
                        tenant_id: tenant,
                        event_type: key.into(),
                        source: "invoice_run".into(),
                        subject: "s".into(),
                        time: start
                            + Duration::days(7)
                            + Duration::hours(1 + i64::try_from(i).unwrap_or(0) * 5),
                        data: serde_json::json!({ "gb": 12 + i, "seconds": 37 * i }),
                    }
                })
                .collect();
            metering.ingest(tenant, &events).await.expect("usage");
            billing
                .put_customer(
                    tenant,
                    CustomerInput {
                        name: "Customer".into(),
                        email: "billing@example.com".into(),
                        address: Default::default(),
                        currency: usd,
                        tax_rate: dec("19"),
                        provider_customer_id: None,
                        invoice_prefix: None,
                    },
                    None,
                )
                .await
                .expect("customer");
            billing
                .create_subscription(
                    tenant,
                    NewSubscription {
                        plan_id: plan.id,
                        quantity: 3,
                        trial_days: None,
                        billing_anchor_day: None,
                        backdate_start_date: Some(start),
                    },
                    None,
                )
                .await
                .expect("subscription");
            tenant
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let setup = setup.elapsed();

    // The invoice run: scheduler passes until nothing is due.
    clock.advance(Duration::days(17) + Duration::minutes(1));
    let run = Instant::now();
    let (mut closed, mut passes) = (0, 0);
    loop {
        let report = billing.run_due(1_000).await.expect("run");
        passes += 1;
        assert_eq!(report.failed, 0, "{report:?}");
        if report.closed == 0 {
            break;
        }
        closed += report.closed;
    }
    let elapsed = run.elapsed();
    assert_eq!(closed, subs, "every period closed once");
    // Spot check: a cycle invoice prices the fee, three usages and tax.
    let tenant = *tenants.first().expect("a tenant");
    let invoices = billing
        .invoices(tenant, &InvoiceFilter::default(), 10)
        .await
        .expect("invoices");
    let cycle = invoices.last().expect("an invoice");
    assert_eq!(invoices.len(), 2);
    assert_eq!(cycle.lines.len(), 4, "{cycle:?}");
    assert!(cycle.lines.iter().all(|l| l.amount > 0), "{cycle:?}");
    println!(
        "{:<10} {subs} subscriptions × 3 metered prices: invoice run {:.2} s ({:.0} periods/s, {passes} passes, concurrency {concurrency}); goal ≤ 10 s → {:.2}× the goal (setup {:.1} s)",
        store.name,
        elapsed.as_secs_f64(),
        subs as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / 10.0,
        setup.as_secs_f64(),
    );
    drop(store.billing);
    drop(store.metering);
    if let Some(db) = store.pg {
        db.drop_database().await;
    }
}

#[tokio::main]
async fn main() {
    let subs = setting("SUBS", 10_000);
    let concurrency = setting("CONCURRENCY", 8);
    let stores = std::env::var("STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    for name in stores.split(',') {
        match name.trim() {
            "sqlite" => run(sqlite().await, subs, concurrency).await,
            "postgres" => match postgres().await {
                Some(store) => run(store, subs, concurrency).await,
                None => println!("PostgreSQL skipped: TENANCY_TEST_POSTGRES_URL is unset"),
            },
            other => panic!("unknown store `{other}`"),
        }
    }
}
