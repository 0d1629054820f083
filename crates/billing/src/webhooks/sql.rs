//! [`WebhookStore`] for tenancy-core's `SqliteStore` and `PgStore`, in the tables of
//! migration 3002 (applied by [`crate::sql::migrate_sqlite`] /
//! [`crate::sql::migrate_postgres`] with the other billing migrations).
//!
//! Endpoints and deliveries are JSON documents next to the columns that carry their
//! keys, versions and unique constraints; each method is one transaction (SQLite:
//! `BEGIN IMMEDIATE` for writes; PostgreSQL: with `app.tenant_id` set, so row-level
//! security applies). A delivery is unique per (tenant, endpoint, event id), so a
//! redelivered event inserts nothing (`ON CONFLICT DO NOTHING`). The schedule
//! (`webhook_schedule`, no tenant data but ids and due times) has no row-level
//! security: claiming reads it across tenants, in PostgreSQL with `FOR UPDATE SKIP
//! LOCKED` so concurrent dispatchers claim different rows.
//!
//! Lock order: enqueueing holds its endpoint row (`FOR SHARE`) while inserting, and
//! deleting an endpoint deletes its row first, then its deliveries, so a delivery is
//! never inserted for an endpoint whose deletion committed.
//!
//! [`WebhookStore`]: super::WebhookStore

use chrono::{DateTime, Utc};
use tenancy_core::{Error, Result};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Internal(format!("stored time `{us}` is out of range")))
}

/// A unique violation as `AlreadyExists` with `message`.
fn write_error(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    if let sqlx::Error::Database(d) = &e
        && d.is_unique_violation()
    {
        return Error::AlreadyExists(message());
    }
    Error::from(e)
}

/// Generates [`super::WebhookStore`] for `$store` over database `$db`. `$global` opens
/// a transaction outside any tenant (`write` as for `tenant_transaction`); `$share`,
/// `$update` and `$claim` end the `SELECT`s that lock an endpoint row against
/// deletion, a delivery row against a concurrent attempt, and the due schedule rows
/// being claimed (empty in SQLite, whose write transactions are serial).
macro_rules! sql_webhook_store {
    ($store:ty, $db:ty, $global:path, $share:literal, $update:literal, $claim:literal) => {
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use sqlx::Row as _;
        use sqlx::types::Json;
        use tenancy_core::events::Event;
        use tenancy_core::{Error, Result, TenantId};
        use uuid::Uuid;

        use crate::ids::{WebhookDeliveryId, WebhookEndpointId};
        use crate::webhooks::sql::{from_micros, micros, write_error};
        use crate::webhooks::{
            DueDelivery, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookStore,
            check_stored_endpoint,
        };

        fn doc<T: serde::de::DeserializeOwned>(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<T> {
            let Json(value): Json<T> = row.try_get("doc").map_err(Error::from)?;
            Ok(value)
        }

        fn version(v: u64) -> Result<i64> {
            i64::try_from(v).map_err(|_| Error::invalid("version", "out of range"))
        }

        fn endpoint_not_found(id: WebhookEndpointId) -> Error {
            Error::NotFound(format!("webhook endpoint `{id}` not found"))
        }

        fn delivery_not_found(id: WebhookDeliveryId) -> Error {
            Error::NotFound(format!("webhook delivery `{id}` not found"))
        }

        #[async_trait]
        impl WebhookStore for $store {
            async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
                check_stored_endpoint(endpoint, true)?;
                let mut tx = self.tenant_transaction(endpoint.tenant_id, true).await?;
                sqlx::query(
                    "INSERT INTO webhook_endpoints (tenant_id, id, version, doc) VALUES ($1, $2, 1, $3)",
                )
                .bind(endpoint.tenant_id.as_uuid())
                .bind(endpoint.id.as_uuid())
                .bind(Json(endpoint))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    write_error(e, || format!("webhook endpoint `{}` exists already", endpoint.id))
                })?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_endpoint(
                &self,
                tenant: TenantId,
                id: WebhookEndpointId,
            ) -> Result<WebhookEndpoint> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let row = sqlx::query("SELECT doc FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| endpoint_not_found(id))?;
                doc(&row)
            }

            async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let rows = sqlx::query("SELECT doc FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id")
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?;
                rows.iter().map(doc).collect()
            }

            async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
                check_stored_endpoint(endpoint, false)?;
                let v = version(endpoint.version)?;
                let mut tx = self.tenant_transaction(endpoint.tenant_id, true).await?;
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET version = $1, doc = $2 \
                     WHERE tenant_id = $3 AND id = $4 AND version = $5",
                )
                .bind(v)
                .bind(Json(endpoint))
                .bind(endpoint.tenant_id.as_uuid())
                .bind(endpoint.id.as_uuid())
                .bind(v - 1)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    let exists = sqlx::query("SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                        .bind(endpoint.tenant_id.as_uuid())
                        .bind(endpoint.id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    return Err(if exists {
                        Error::Conflict(format!(
                            "webhook endpoint `{}` was changed by someone else; read it again",
                            endpoint.id
                        ))
                    } else {
                        endpoint_not_found(endpoint.id)
                    });
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<()> {
                let mut tx = self.tenant_transaction(tenant, true).await?;
                let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(endpoint_not_found(id));
                }
                sqlx::query(
                    "DELETE FROM webhook_schedule WHERE tenant_id = $1 AND delivery_id IN \
                     (SELECT id FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2)",
                )
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn enqueue_deliveries(
                &self,
                tenant: TenantId,
                event: &Event,
                endpoints: &[WebhookEndpointId],
                now: DateTime<Utc>,
            ) -> Result<Vec<WebhookDelivery>> {
                tenant.check_scope(event.tenant_id())?;
                let mut tx = self.tenant_transaction(tenant, true).await?;
                let mut created = Vec::new();
                for &endpoint in endpoints {
                    let exists = sqlx::query(concat!(
                        "SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                        $share
                    ))
                    .bind(tenant.as_uuid())
                    .bind(endpoint.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                    if !exists {
                        continue;
                    }
                    let delivery = WebhookDelivery::pending(tenant, endpoint, event, now)?;
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, doc) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING",
                    )
                    .bind(tenant.as_uuid())
                    .bind(delivery.id.as_uuid())
                    .bind(endpoint.as_uuid())
                    .bind(event.id().as_uuid())
                    .bind(Json(&delivery))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO webhook_schedule (tenant_id, delivery_id, due_at_us) VALUES ($1, $2, $3)",
                    )
                    .bind(tenant.as_uuid())
                    .bind(delivery.id.as_uuid())
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
                    created.push(delivery);
                }
                tx.commit().await?;
                Ok(created)
            }

            async fn get_delivery(
                &self,
                tenant: TenantId,
                id: WebhookDeliveryId,
            ) -> Result<WebhookDelivery> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let row = sqlx::query("SELECT doc FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| delivery_not_found(id))?;
                doc(&row)
            }

            async fn list_deliveries(
                &self,
                tenant: TenantId,
                endpoint: WebhookEndpointId,
                before: Option<WebhookDeliveryId>,
                limit: u32,
            ) -> Result<Vec<WebhookDelivery>> {
                let mut tx = self.tenant_transaction(tenant, false).await?;
                let rows = sqlx::query(
                    "SELECT doc FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 \
                     AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
                )
                .bind(tenant.as_uuid())
                .bind(endpoint.as_uuid())
                .bind(before.map(|b| b.as_uuid()))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                rows.iter().map(doc).collect()
            }

            async fn claim_due_deliveries(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<DueDelivery>> {
                let mut tx = $global(self, true).await?;
                let rows = sqlx::query(concat!(
                    "SELECT tenant_id, delivery_id, due_at_us FROM webhook_schedule \
                     WHERE due_at_us <= $1 ORDER BY due_at_us, delivery_id LIMIT $2",
                    $claim
                ))
                .bind(micros(now))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                let mut due = Vec::with_capacity(rows.len());
                for row in &rows {
                    let tenant: Uuid = row.try_get("tenant_id").map_err(Error::from)?;
                    let delivery: Uuid = row.try_get("delivery_id").map_err(Error::from)?;
                    let due_at: i64 = row.try_get("due_at_us").map_err(Error::from)?;
                    sqlx::query(
                        "UPDATE webhook_schedule SET due_at_us = $1 WHERE tenant_id = $2 AND delivery_id = $3",
                    )
                    .bind(micros(lease_until))
                    .bind(tenant)
                    .bind(delivery)
                    .execute(&mut *tx)
                    .await?;
                    due.push(DueDelivery {
                        tenant_id: TenantId::from_uuid(tenant),
                        delivery_id: WebhookDeliveryId::from_uuid(delivery),
                        due_at: from_micros(due_at)?,
                    });
                }
                tx.commit().await?;
                Ok(due)
            }

            async fn record_attempt(
                &self,
                tenant: TenantId,
                id: WebhookDeliveryId,
                attempt: &WebhookAttempt,
                next_attempt_at: Option<DateTime<Utc>>,
            ) -> Result<WebhookDelivery> {
                let mut tx = self.tenant_transaction(tenant, true).await?;
                let row = sqlx::query(concat!(
                    "SELECT doc FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2",
                    $update
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| delivery_not_found(id))?;
                let mut delivery: WebhookDelivery = doc(&row)?;
                delivery.record(attempt, next_attempt_at)?;
                sqlx::query("UPDATE webhook_deliveries SET doc = $1 WHERE tenant_id = $2 AND id = $3")
                    .bind(Json(&delivery))
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                match next_attempt_at {
                    Some(at) => {
                        sqlx::query(
                            "INSERT INTO webhook_schedule (tenant_id, delivery_id, due_at_us) VALUES ($1, $2, $3) \
                             ON CONFLICT (tenant_id, delivery_id) DO UPDATE SET due_at_us = excluded.due_at_us",
                        )
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .bind(micros(at))
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM webhook_schedule WHERE tenant_id = $1 AND delivery_id = $2")
                            .bind(tenant.as_uuid())
                            .bind(id.as_uuid())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(delivery)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use tenancy_core::sqlite::SqliteStore;

    async fn global(
        store: &SqliteStore,
        write: bool,
    ) -> tenancy_core::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let tx = if write {
            store.pool().begin_with("BEGIN IMMEDIATE").await
        } else {
            store.pool().begin().await
        };
        tx.map_err(tenancy_core::Error::from)
    }

    sql_webhook_store!(SqliteStore, sqlx::Sqlite, global, "", "", "");
}

#[cfg(feature = "postgres")]
mod postgres {
    use tenancy_core::postgres::PgStore;

    async fn global(
        store: &PgStore,
        _write: bool,
    ) -> tenancy_core::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        store
            .pool()
            .begin()
            .await
            .map_err(tenancy_core::Error::from)
    }

    sql_webhook_store!(
        PgStore,
        sqlx::Postgres,
        global,
        " FOR SHARE",
        " FOR UPDATE",
        " FOR UPDATE SKIP LOCKED"
    );
}
