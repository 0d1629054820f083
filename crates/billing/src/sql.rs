//! Billing stores in tenancy-core's SQL databases: [`BillingStore`] for
//! `tenancy_core::sqlite::SqliteStore` and `tenancy_core::postgres::PgStore`, so one
//! database (and one pool) serves identity, metering and billing. Call
//! [`migrate_sqlite`] / [`migrate_postgres`] once, after the identity migrations
//! (billing owns versions 3001–3999).
//!
//! Records are JSON documents next to the columns that carry their keys, versions and
//! unique constraints. [`BillingStore::commit`] is one transaction (SQLite: `BEGIN
//! IMMEDIATE`; PostgreSQL: with `app.tenant_id` set, so row-level security applies):
//! versioned `UPDATE … WHERE version = $previous` (no row: `Conflict`, or `NotFound`),
//! inserts whose unique violations become `AlreadyExists`, the scheduling index
//! upserts, and the events into tenancy-core's outbox. Writes take rows in one order
//! (customer, subscriptions, invoices), so concurrent commits of a tenant queue on the
//! customer row instead of deadlocking.
//!
//! [`BillingStore`]: crate::BillingStore
//! [`BillingStore::commit`]: crate::BillingStore::commit

use chrono::{DateTime, Utc};
use tenancy_core::{Error, Result};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Internal(format!("stored time `{us}` is out of range")))
}

/// A unique violation as `AlreadyExists` with `taken(constraint or message)`.
fn write_error(e: sqlx::Error, taken: impl FnOnce(&str) -> String) -> Error {
    if let sqlx::Error::Database(d) = &e
        && d.is_unique_violation()
    {
        let which = d.constraint().unwrap_or_else(|| d.message()).to_owned();
        return Error::AlreadyExists(taken(&which));
    }
    Error::from(e)
}

/// Generates [`crate::BillingStore`] for `$store` over database `$db`, which has
/// `$writers` concurrent writers (see `BillingStore::write_concurrency`). `$global`
/// opens a write transaction outside any tenant, `$write` one of a tenant, `$switch`
/// makes it act for another tenant (a batch), `$read` a
/// connection that reads one
/// tenant's rows and `$read_global` one that reads shared rows (each a single round
/// trip where the backend allows), `$purge` a transaction allowed to delete expired
/// idempotency keys of every tenant, and `$enqueue` is tenancy-core's outbox
/// `enqueue` of that backend.
macro_rules! sql_billing_store {
    ($store:ty, $db:ty, $writers:expr, $global:path, $write:path, $switch:path, $read:path, $read_global:path, $purge:path, $enqueue:path) => {
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use sqlx::Row as _;
        use sqlx::types::Json;
        use tenancy_core::{Error, Result, TenantId};
        use uuid::Uuid;

        use crate::ids::{InvoiceId, PlanId, ProductId, SubscriptionId};
        use crate::model::{CreditNote, Customer, Invoice, Plan, Product, Subscription};
        use crate::sql::{from_micros, micros, write_error};
        use crate::store::{
            BILLING_TOPIC, BillingStore, Changes, Due, DueKind, IdempotencyRecord,
            InvoiceFilter, Write, check_batch, check_changes,
        };

        type Tx = sqlx::Transaction<'static, $db>;

        fn doc<T: serde::de::DeserializeOwned>(
            row: &<$db as sqlx::Database>::Row,
            column: &str,
        ) -> Result<T> {
            let Json(value): Json<T> = row.try_get(column).map_err(Error::from)?;
            Ok(value)
        }

        fn not_found(what: &str, id: impl std::fmt::Display) -> Error {
            Error::NotFound(format!("{what} `{id}` not found"))
        }

        /// After an update that matched no row: `NotFound` if the row is absent,
        /// else `Conflict` (its version moved on).
        async fn missed(
            tx: &mut Tx,
            table: &str,
            tenant: TenantId,
            id: Uuid,
            what: &str,
        ) -> Result<Error> {
            let sql = format!("SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2");
            let exists = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_uuid())
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            Ok(if exists {
                Error::Conflict(format!(
                    "{what} `{id}` was changed by someone else; read it again"
                ))
            } else {
                not_found(what, id)
            })
        }

        async fn schedule(
            tx: &mut Tx,
            kind: DueKind,
            tenant: TenantId,
            id: Uuid,
            at: Option<DateTime<Utc>>,
        ) -> Result<()> {
            match at {
                Some(at) => {
                    sqlx::query(
                        "INSERT INTO billing_schedule (kind, tenant_id, object_id, due_at_us) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (kind, tenant_id, object_id) \
                         DO UPDATE SET due_at_us = excluded.due_at_us",
                    )
                    .bind(kind.as_str())
                    .bind(tenant.as_uuid())
                    .bind(id)
                    .bind(micros(at))
                    .execute(&mut **tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "DELETE FROM billing_schedule WHERE kind = $1 AND tenant_id = $2 AND object_id = $3",
                    )
                    .bind(kind.as_str())
                    .bind(tenant.as_uuid())
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Ok(())
        }

        async fn write_customer(tx: &mut Tx, tenant: TenantId, w: &Write<Customer>) -> Result<()> {
            let c = w.record();
            let version = i64::try_from(c.version).map_err(|_| Error::invalid("version", "out of range"))?;
            match w {
                Write::Insert(_) => {
                    sqlx::query("INSERT INTO billing_customers (tenant_id, version, doc) VALUES ($1, $2, $3)")
                        .bind(tenant.as_uuid())
                        .bind(version)
                        .bind(Json(c))
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| write_error(e, |_| format!("customer of tenant `{tenant}` exists already")))?;
                }
                Write::Update(_) => {
                    let done = sqlx::query(
                        "UPDATE billing_customers SET version = $1, doc = $2 WHERE tenant_id = $3 AND version = $4",
                    )
                    .bind(version)
                    .bind(Json(c))
                    .bind(tenant.as_uuid())
                    .bind(version - 1)
                    .execute(&mut **tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        let exists = sqlx::query("SELECT 1 FROM billing_customers WHERE tenant_id = $1")
                            .bind(tenant.as_uuid())
                            .fetch_optional(&mut **tx)
                            .await?
                            .is_some();
                        return Err(if exists {
                            Error::Conflict(format!("customer of tenant `{tenant}` was changed by someone else; read it again"))
                        } else {
                            not_found("customer of tenant", tenant)
                        });
                    }
                }
            }
            Ok(())
        }

        async fn write_subscription(tx: &mut Tx, tenant: TenantId, w: &Write<Subscription>) -> Result<()> {
            let s = w.record();
            let version = i64::try_from(s.version).map_err(|_| Error::invalid("version", "out of range"))?;
            match w {
                Write::Insert(_) => {
                    sqlx::query("INSERT INTO billing_subscriptions (tenant_id, id, version, doc) VALUES ($1, $2, $3, $4)")
                        .bind(tenant.as_uuid())
                        .bind(s.id.as_uuid())
                        .bind(version)
                        .bind(Json(s))
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| write_error(e, |_| format!("subscription `{}` exists already", s.id)))?;
                }
                Write::Update(_) => {
                    let done = sqlx::query(
                        "UPDATE billing_subscriptions SET version = $1, doc = $2 \
                         WHERE tenant_id = $3 AND id = $4 AND version = $5",
                    )
                    .bind(version)
                    .bind(Json(s))
                    .bind(tenant.as_uuid())
                    .bind(s.id.as_uuid())
                    .bind(version - 1)
                    .execute(&mut **tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(missed(tx, "billing_subscriptions", tenant, s.id.as_uuid(), "subscription").await?);
                    }
                }
            }
            if matches!(w, Write::Insert(_)) && s.next_action_at().is_none() {
                return Ok(());
            }
            schedule(tx, DueKind::PeriodEnd, tenant, s.id.as_uuid(), s.next_action_at()).await
        }

        async fn write_invoice(tx: &mut Tx, tenant: TenantId, w: &Write<Invoice>) -> Result<()> {
            let i = w.record();
            let version = i64::try_from(i.version).map_err(|_| Error::invalid("version", "out of range"))?;
            let taken = |which: &str| {
                if which.contains("billing_key") {
                    format!("an invoice for `{}` exists already", i.billing_key)
                } else if which.contains("number") {
                    format!("invoice number `{}` is taken", i.number.as_deref().unwrap_or_default())
                } else {
                    format!("invoice `{}` exists already", i.id)
                }
            };
            match w {
                Write::Insert(_) => {
                    sqlx::query(
                        "INSERT INTO billing_invoices \
                         (tenant_id, id, version, subscription_id, status, billing_key, number, doc) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(tenant.as_uuid())
                    .bind(i.id.as_uuid())
                    .bind(version)
                    .bind(i.subscription_id.map(|s| s.as_uuid()))
                    .bind(i.status.as_str())
                    .bind(&i.billing_key)
                    .bind(i.number.as_deref())
                    .bind(Json(i))
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| write_error(e, taken))?;
                }
                Write::Update(_) => {
                    let done = sqlx::query(
                        "UPDATE billing_invoices SET version = $1, status = $2, number = $3, doc = $4 \
                         WHERE tenant_id = $5 AND id = $6 AND version = $7",
                    )
                    .bind(version)
                    .bind(i.status.as_str())
                    .bind(i.number.as_deref())
                    .bind(Json(i))
                    .bind(tenant.as_uuid())
                    .bind(i.id.as_uuid())
                    .bind(version - 1)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| write_error(e, taken))?;
                    if done.rows_affected() == 0 {
                        return Err(missed(tx, "billing_invoices", tenant, i.id.as_uuid(), "invoice").await?);
                    }
                }
            }
            if matches!(w, Write::Insert(_)) && i.next_action_at().is_none() {
                return Ok(());
            }
            schedule(tx, DueKind::PaymentRetry, tenant, i.id.as_uuid(), i.next_action_at()).await
        }

        async fn apply(tx: &mut Tx, tenant: TenantId, changes: &Changes) -> Result<()> {
            if let Some(c) = &changes.customer {
                write_customer(tx, tenant, c).await?;
            }
            for s in &changes.subscriptions {
                write_subscription(tx, tenant, s).await?;
            }
            for i in &changes.invoices {
                write_invoice(tx, tenant, i).await?;
            }
            for n in &changes.credit_notes {
                sqlx::query("INSERT INTO billing_credit_notes (tenant_id, id, invoice_id, doc) VALUES ($1, $2, $3, $4)")
                    .bind(tenant.as_uuid())
                    .bind(n.id.as_uuid())
                    .bind(n.invoice_id.as_uuid())
                    .bind(Json(n))
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("credit note `{}` exists already", n.id)))?;
            }
            if let Some(i) = &changes.idempotency {
                sqlx::query(
                    "INSERT INTO billing_idempotency (tenant_id, key, fingerprint, response, created_at_us) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant.as_uuid())
                .bind(&i.key)
                .bind(&i.fingerprint)
                .bind(Json(&i.response))
                .bind(micros(i.created_at))
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error(e, |_| format!("idempotency key `{}` was used already", i.key)))?;
            }
            if let Some(p) = &changes.provider_event {
                sqlx::query("INSERT INTO billing_provider_events (provider, event_id, tenant_id) VALUES ($1, $2, $3)")
                    .bind(&p.provider)
                    .bind(&p.event_id)
                    .bind(tenant.as_uuid())
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("{} event `{}` was applied already", p.provider, p.event_id)))?;
            }
            if !changes.events.is_empty() {
                $enqueue(tx, BILLING_TOPIC, &changes.events).await?;
            }
            Ok(())
        }

        #[async_trait]
        impl BillingStore for $store {
            async fn insert_product(&self, product: &Product) -> Result<()> {
                let mut tx = $global(self, true).await?;
                sqlx::query("INSERT INTO billing_products (id, created_at, doc) VALUES ($1, $2, $3)")
                    .bind(product.id.as_uuid())
                    .bind(product.created_at)
                    .bind(Json(product))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("product `{}` exists already", product.id)))?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_product(&self, id: ProductId) -> Result<Product> {
                let mut tx = $read_global(self).await?;
                let row = sqlx::query("SELECT doc FROM billing_products WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| not_found("product", id))?;
                doc(&row, "doc")
            }

            async fn list_products(&self) -> Result<Vec<Product>> {
                let mut tx = $read_global(self).await?;
                let rows = sqlx::query("SELECT doc FROM billing_products ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?;
                rows.iter().map(|r| doc(r, "doc")).collect()
            }

            async fn insert_plan(&self, plan: &Plan) -> Result<()> {
                if plan.version != 1 {
                    return Err(Error::invalid("version", "a new plan starts at version 1"));
                }
                let mut tx = $global(self, true).await?;
                sqlx::query("INSERT INTO billing_plans (id, version, created_at, doc) VALUES ($1, 1, $2, $3)")
                    .bind(plan.id.as_uuid())
                    .bind(plan.created_at)
                    .bind(Json(plan))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, |_| format!("plan `{}` exists already", plan.id)))?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_plan(&self, plan: &Plan) -> Result<()> {
                let version = i64::try_from(plan.version).map_err(|_| Error::invalid("version", "out of range"))?;
                let mut tx = $global(self, true).await?;
                let done = sqlx::query("UPDATE billing_plans SET version = $1, doc = $2 WHERE id = $3 AND version = $4")
                    .bind(version)
                    .bind(Json(plan))
                    .bind(plan.id.as_uuid())
                    .bind(version - 1)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    let exists = sqlx::query("SELECT 1 FROM billing_plans WHERE id = $1")
                        .bind(plan.id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    return Err(if exists {
                        Error::Conflict(format!("plan `{}` was changed by someone else; read it again", plan.id))
                    } else {
                        not_found("plan", plan.id)
                    });
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_plan(&self, id: PlanId) -> Result<Plan> {
                let mut tx = $read_global(self).await?;
                let row = sqlx::query("SELECT doc FROM billing_plans WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| not_found("plan", id))?;
                doc(&row, "doc")
            }

            async fn list_plans(&self) -> Result<Vec<Plan>> {
                let mut tx = $read_global(self).await?;
                let rows = sqlx::query("SELECT doc FROM billing_plans ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?;
                rows.iter().map(|r| doc(r, "doc")).collect()
            }

            async fn commit(&self, tenant: TenantId, changes: &Changes) -> Result<()> {
                check_changes(tenant, changes)?;
                let mut tx = $write(self, tenant).await?;
                apply(&mut tx, tenant, changes).await?;
                tx.commit().await?;
                Ok(())
            }

            fn write_concurrency(&self) -> usize {
                $writers
            }

            async fn commit_batch(&self, batch: &[(TenantId, Changes)]) -> Result<()> {
                check_batch(batch)?;
                let Some(((first, _), _)) = batch.split_first() else {
                    return Ok(());
                };
                let mut tx = $write(self, *first).await?;
                for (tenant, changes) in batch {
                    $switch(&mut tx, *tenant).await?;
                    apply(&mut tx, *tenant, changes).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_customer(&self, tenant: TenantId) -> Result<Customer> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query("SELECT doc FROM billing_customers WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| not_found("customer of tenant", tenant))?;
                doc(&row, "doc")
            }

            async fn get_subscription(&self, tenant: TenantId, id: SubscriptionId) -> Result<Subscription> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query("SELECT doc FROM billing_subscriptions WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| not_found("subscription", id))?;
                doc(&row, "doc")
            }

            async fn list_subscriptions(&self, tenant: TenantId) -> Result<Vec<Subscription>> {
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query("SELECT doc FROM billing_subscriptions WHERE tenant_id = $1 ORDER BY id")
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?;
                rows.iter().map(|r| doc(r, "doc")).collect()
            }

            async fn get_invoice(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query("SELECT doc FROM billing_invoices WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| not_found("invoice", id))?;
                doc(&row, "doc")
            }

            async fn list_invoices(&self, tenant: TenantId, filter: &InvoiceFilter, limit: u32) -> Result<Vec<Invoice>> {
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query(
                    "SELECT doc FROM billing_invoices WHERE tenant_id = $1 \
                     AND ($2 IS NULL OR subscription_id = $2) AND ($3 IS NULL OR status = $3) \
                     ORDER BY id LIMIT $4",
                )
                .bind(tenant.as_uuid())
                .bind(filter.subscription.map(|s| s.as_uuid()))
                .bind(filter.status.map(|s| s.as_str()))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                rows.iter().map(|r| doc(r, "doc")).collect()
            }

            async fn list_credit_notes(&self, tenant: TenantId, invoice: InvoiceId) -> Result<Vec<CreditNote>> {
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query(
                    "SELECT doc FROM billing_credit_notes WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY id",
                )
                .bind(tenant.as_uuid())
                .bind(invoice.as_uuid())
                .fetch_all(&mut *tx)
                .await?;
                rows.iter().map(|r| doc(r, "doc")).collect()
            }

            async fn get_idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query(
                    "SELECT fingerprint, response, created_at_us FROM billing_idempotency WHERE tenant_id = $1 AND key = $2",
                )
                .bind(tenant.as_uuid())
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
                row.map(|r| {
                    Ok(IdempotencyRecord {
                        key: key.to_owned(),
                        fingerprint: r.try_get("fingerprint").map_err(Error::from)?,
                        response: doc(&r, "response")?,
                        created_at: from_micros(r.try_get("created_at_us").map_err(Error::from)?)?,
                    })
                })
                .transpose()
            }

            async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64> {
                let mut tx = $purge(self).await?;
                let done = sqlx::query("DELETE FROM billing_idempotency WHERE created_at_us < $1")
                    .bind(micros(before))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn due(&self, kind: DueKind, now: DateTime<Utc>, limit: u32) -> Result<Vec<Due>> {
                let mut tx = $read_global(self).await?;
                let rows = sqlx::query(
                    "SELECT tenant_id, object_id, due_at_us FROM billing_schedule \
                     WHERE kind = $1 AND due_at_us <= $2 ORDER BY due_at_us, object_id LIMIT $3",
                )
                .bind(kind.as_str())
                .bind(micros(now))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Due {
                            tenant_id: TenantId::from_uuid(r.try_get("tenant_id").map_err(Error::from)?),
                            id: r.try_get("object_id").map_err(Error::from)?,
                            due_at: from_micros(r.try_get("due_at_us").map_err(Error::from)?)?,
                        })
                    })
                    .collect()
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::Sqlite;
    use sqlx::pool::PoolConnection;
    use tenancy_core::sqlite::SqliteStore;

    async fn global(
        store: &SqliteStore,
        _write: bool,
    ) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(store.pool().begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Reads need no transaction in SQLite (a statement sees one snapshot, and there
    /// is no row-level security): a pooled connection saves the `BEGIN` and the
    /// rollback, each a hop to the connection's worker thread.
    async fn write(
        store: &SqliteStore,
        tenant: TenantId,
    ) -> Result<sqlx::Transaction<'static, Sqlite>> {
        store.tenant_transaction(tenant, true).await
    }

    /// No row-level security in SQLite: nothing to switch.
    async fn switch(_tx: &mut sqlx::Transaction<'static, Sqlite>, _tenant: TenantId) -> Result<()> {
        Ok(())
    }

    async fn read(store: &SqliteStore, _tenant: TenantId) -> Result<PoolConnection<Sqlite>> {
        Ok(store.pool().acquire().await?)
    }

    async fn read_global(store: &SqliteStore) -> Result<PoolConnection<Sqlite>> {
        Ok(store.pool().acquire().await?)
    }

    async fn purge(store: &SqliteStore) -> Result<sqlx::Transaction<'static, Sqlite>> {
        global(store, true).await
    }

    sql_billing_store!(
        SqliteStore,
        Sqlite,
        1,
        global,
        write,
        switch,
        read,
        read_global,
        purge,
        tenancy_core::sqlite::enqueue_all
    );

    /// Applies the billing migrations to a SQLite database.
    pub async fn migrate_sqlite(store: &SqliteStore) -> Result<()> {
        let mut m = sqlx::migrate!("./migrations/sqlite");
        m.set_ignore_missing(true);
        store.apply_migrations(&m).await
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::pool::PoolConnection;
    use sqlx::{AssertSqlSafe, Postgres};
    use tenancy_core::postgres::PgStore;

    async fn global(store: &PgStore, _write: bool) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(store.pool().begin().await?)
    }

    /// A transaction with `app.tenant_id` set (for reads and writes), opened in one
    /// round trip (`BEGIN` and
    /// `SET LOCAL` sent together; the tenant id is a formatted UUID, never user text).
    async fn read(
        store: &PgStore,
        tenant: TenantId,
    ) -> Result<sqlx::Transaction<'static, Postgres>> {
        let statement = format!(
            "BEGIN; SET LOCAL app.tenant_id = '{}'",
            tenant.as_uuid().hyphenated()
        );
        Ok(store.pool().begin_with(AssertSqlSafe(statement)).await?)
    }

    async fn write(
        store: &PgStore,
        tenant: TenantId,
    ) -> Result<sqlx::Transaction<'static, Postgres>> {
        read(store, tenant).await
    }

    /// Sets `app.tenant_id` for the rest of the transaction.
    async fn switch(tx: &mut sqlx::Transaction<'static, Postgres>, tenant: TenantId) -> Result<()> {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn read_global(store: &PgStore) -> Result<PoolConnection<Postgres>> {
        Ok(store.pool().acquire().await?)
    }

    async fn purge(store: &PgStore) -> Result<sqlx::Transaction<'static, Postgres>> {
        let mut tx = global(store, true).await?;
        sqlx::query("SELECT set_config('app.billing_purge', 'on', true)")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    sql_billing_store!(
        PgStore,
        Postgres,
        usize::MAX,
        global,
        write,
        switch,
        read,
        read_global,
        purge,
        tenancy_core::postgres::enqueue_all
    );

    /// Applies the billing migrations to a PostgreSQL database.
    pub async fn migrate_postgres(store: &PgStore) -> Result<()> {
        let mut m = sqlx::migrate!("./migrations/postgres");
        m.set_ignore_missing(true);
        store.apply_migrations(&m).await
    }
}

#[cfg(feature = "postgres")]
pub use postgres::migrate_postgres;
#[cfg(feature = "sqlite")]
pub use sqlite::migrate_sqlite;
