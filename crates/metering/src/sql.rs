//! Metering stores in tenancy-core's SQL databases: [`MeteringStore`] and
//! [`QuotaCounter`] for `tenancy_core::sqlite::SqliteStore` and
//! `tenancy_core::postgres::PgStore`, so one database (and one pool) serves identity,
//! policies and metering. Call [`migrate_sqlite`] / [`migrate_postgres`] once, after
//! the identity migrations (metering owns versions 2001–2999). In PostgreSQL every
//! table has row-level security on `app.tenant_id` like every tenant table.
//!
//! Ingestion writes a batch in one transaction: the events with one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING id` (PostgreSQL: `UNNEST` arrays), and
//! one rollup upsert per touched (meter, window, group) cell from the newly inserted
//! events only. PostgreSQL sends both in one statement (the upserts run only when
//! every event was new; otherwise the statement goes again with the new events'
//! deltas) and adds the decimals in SQL (`numeric`); SQLite, whose arithmetic is
//! floating point, reads the touched rows and adds them up in Rust under its write
//! lock.
//!
//! [`MeteringStore`]: crate::MeteringStore
//! [`QuotaCounter`]: crate::QuotaCounter

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::str::FromStr;

use rust_decimal::Decimal;
use tenancy_core::{Error, Result};

/// A decimal read back from the database.
fn stored_decimal(text: &str) -> Result<Decimal> {
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|e| {
            Error::Internal(format!(
                "stored value `{text}` is not a decimal in range: {e}"
            ))
        })
}

/// A stored quota field that no longer parses is a storage fault.
fn stored_quota<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| Error::Internal(format!("stored quota is invalid: {e}")))
}

/// Generates the backend-independent part of `MeteringStore` and `QuotaCounter` for
/// `$store`; `$begin` opens the backend's tenant-scoped transaction, `$read` a
/// connection that reads one tenant's rows, and `$ingest_many` its write of several
/// tenants' batches in one transaction (a single batch is a list of one).
macro_rules! sql_metering_store {
    ($store:ty, $db:ty, $begin:path, $read:path, $ingest_many:path) => {
        fn db(e: sqlx::Error) -> tenancy_core::Error {
            tenancy_core::Error::from(e)
        }

        fn meter_row(
            row: &<$db as sqlx::Database>::Row,
        ) -> tenancy_core::Result<crate::model::Meter> {
            use sqlx::Row as _;
            let definition: sqlx::types::Json<crate::model::Meter> =
                row.try_get("definition").map_err(db)?;
            Ok(definition.0)
        }

        fn rollup_row(
            row: &<$db as sqlx::Database>::Row,
        ) -> tenancy_core::Result<crate::rollup::RollupRow> {
            use sqlx::Row as _;
            let value: String = row.try_get("value").map_err(db)?;
            Ok(crate::rollup::RollupRow {
                window_start: row.try_get("window_start").map_err(db)?,
                group_key: row.try_get("group_key").map_err(db)?,
                events: row.try_get("events").map_err(db)?,
                value: crate::sql::stored_decimal(&value)?,
                latest_time: row.try_get("latest_time").map_err(db)?,
                latest_id: row.try_get("latest_id").map_err(db)?,
                saturated: row.try_get("saturated").map_err(db)?,
            })
        }

        fn quota_row(
            tenant: tenancy_core::TenantId,
            row: &<$db as sqlx::Database>::Row,
        ) -> tenancy_core::Result<crate::model::Quota> {
            use sqlx::Row as _;
            use crate::sql::stored_quota as stored;
            let key: String = row.try_get("meter_key").map_err(db)?;
            let period: String = row.try_get("period").map_err(db)?;
            let limit: String = row.try_get("quota_limit").map_err(db)?;
            let mode: String = row.try_get("mode").map_err(db)?;
            Ok(crate::model::Quota {
                tenant_id: tenant,
                meter: stored(crate::model::MeterKey::parse("meter", &key))?,
                period: stored(period.parse())?,
                limit: crate::sql::stored_decimal(&limit)?,
                mode: stored(mode.parse())?,
                updated_at: row.try_get("updated_at").map_err(db)?,
            })
        }

        #[async_trait::async_trait]
        impl crate::store::MeteringStore for $store {
            async fn insert_meter(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::Meter,
            ) -> tenancy_core::Result<()> {
                tenant.check_scope(meter.tenant_id)?;
                let mut tx = $begin(self, tenant, true).await?;
                sqlx::query(
                    "INSERT INTO usage_meters (tenant_id, meter_key, version, definition) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant.as_uuid())
                .bind(meter.key.as_str())
                .bind(meter.version)
                .bind(sqlx::types::Json(meter))
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        tenancy_core::Error::AlreadyExists(format!(
                            "meter `{}` already exists",
                            meter.key
                        ))
                    }
                    _ => db(e),
                })?;
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn meter(
                &self,
                tenant: tenancy_core::TenantId,
                key: &crate::model::MeterKey,
            ) -> tenancy_core::Result<crate::model::Meter> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query(
                    "SELECT definition FROM usage_meters WHERE tenant_id = $1 AND meter_key = $2",
                )
                .bind(tenant.as_uuid())
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                row.as_ref()
                    .map(meter_row)
                    .transpose()?
                    .ok_or_else(|| tenancy_core::Error::not_found("meter", key))
            }

            async fn list_meters(
                &self,
                tenant: tenancy_core::TenantId,
            ) -> tenancy_core::Result<Vec<crate::model::Meter>> {
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query("SELECT definition FROM usage_meters WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                let mut meters = rows
                    .iter()
                    .map(meter_row)
                    .collect::<tenancy_core::Result<Vec<_>>>()?;
                meters.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(meters)
            }

            async fn update_meter(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::Meter,
            ) -> tenancy_core::Result<()> {
                tenant.check_scope(meter.tenant_id)?;
                let mut tx = $begin(self, tenant, true).await?;
                let done = sqlx::query(
                    "UPDATE usage_meters SET version = $3, definition = $4 \
                     WHERE tenant_id = $1 AND meter_key = $2 AND version = $5",
                )
                .bind(tenant.as_uuid())
                .bind(meter.key.as_str())
                .bind(meter.version)
                .bind(sqlx::types::Json(meter))
                .bind(meter.version - 1)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if done == 0 {
                    return Err(missing_or_stale(&mut tx, tenant, &meter.key, meter.version - 1).await);
                }
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn delete_meter(
                &self,
                tenant: tenancy_core::TenantId,
                key: &crate::model::MeterKey,
                version: i64,
            ) -> tenancy_core::Result<()> {
                let mut tx = $begin(self, tenant, true).await?;
                let done = sqlx::query(
                    "DELETE FROM usage_meters WHERE tenant_id = $1 AND meter_key = $2 AND version = $3",
                )
                .bind(tenant.as_uuid())
                .bind(key.as_str())
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if done == 0 {
                    return Err(missing_or_stale(&mut tx, tenant, key, version).await);
                }
                for statement in [
                    "DELETE FROM usage_rollups WHERE tenant_id = $1 AND meter_key = $2",
                    "DELETE FROM usage_unique_values WHERE tenant_id = $1 AND meter_key = $2",
                    "DELETE FROM usage_quotas WHERE tenant_id = $1 AND meter_key = $2",
                    "DELETE FROM usage_quota_counters WHERE tenant_id = $1 AND meter_key = $2",
                ] {
                    sqlx::query(statement)
                        .bind(tenant.as_uuid())
                        .bind(key.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn ingest(
                &self,
                tenant: tenancy_core::TenantId,
                batch: &crate::rollup::IngestBatch<'_>,
            ) -> tenancy_core::Result<Vec<bool>> {
                for prepared in &batch.events {
                    tenant.check_scope(prepared.event.tenant_id)?;
                }
                $ingest_many(self, &[(tenant, batch)])
                    .await?
                    .pop()
                    .ok_or_else(|| tenancy_core::Error::Internal("no answer for the batch".into()))
            }

            async fn ingest_many(
                &self,
                batches: &[(tenancy_core::TenantId, &crate::rollup::IngestBatch<'_>)],
            ) -> tenancy_core::Result<Vec<Vec<bool>>> {
                for (tenant, batch) in batches {
                    for prepared in &batch.events {
                        tenant.check_scope(prepared.event.tenant_id)?;
                    }
                }
                $ingest_many(self, batches).await
            }

            async fn rollups_of(
                &self,
                tenant: tenancy_core::TenantId,
                wanted: &[(crate::model::MeterKey, crate::model::Window)],
                from: i64,
                to: i64,
            ) -> tenancy_core::Result<Vec<Vec<crate::rollup::RollupRow>>> {
                use sqlx::Row as _;
                if wanted.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "SELECT meter_key, window_size, window_start, group_key, events, \
                     CAST(value AS TEXT) AS value, latest_time, latest_id, saturated \
                     FROM usage_rollups WHERE tenant_id = ",
                );
                query.push_bind(tenant.as_uuid());
                query.push(" AND window_start >= ");
                query.push_bind(from);
                query.push(" AND window_start < ");
                query.push_bind(to);
                query.push(" AND (");
                for (i, (meter, window)) in wanted.iter().enumerate() {
                    if i > 0 {
                        query.push(" OR ");
                    }
                    query.push("(meter_key = ");
                    query.push_bind(meter.as_str());
                    query.push(" AND window_size = ");
                    query.push_bind(window.as_str());
                    query.push(")");
                }
                query.push(")");
                let mut tx = $read(self, tenant).await?;
                let rows = query.build().fetch_all(&mut *tx).await.map_err(db)?;
                let mut out: Vec<Vec<crate::rollup::RollupRow>> = vec![Vec::new(); wanted.len()];
                for row in &rows {
                    let key: String = row.try_get("meter_key").map_err(db)?;
                    let size: String = row.try_get("window_size").map_err(db)?;
                    let slot = wanted
                        .iter()
                        .position(|(m, w)| m.as_str() == key && w.as_str() == size);
                    if let Some(rows) = slot.and_then(|i| out.get_mut(i)) {
                        rows.push(rollup_row(row)?);
                    }
                }
                for rows in &mut out {
                    rows.sort_by(|a, b| {
                        (a.window_start, &a.group_key).cmp(&(b.window_start, &b.group_key))
                    });
                }
                Ok(out)
            }

            async fn rollups(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::MeterKey,
                window: crate::model::Window,
                from: i64,
                to: i64,
            ) -> tenancy_core::Result<Vec<crate::rollup::RollupRow>> {
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query(
                    "SELECT window_start, group_key, events, CAST(value AS TEXT) AS value, \
                     latest_time, latest_id, saturated FROM usage_rollups \
                     WHERE tenant_id = $1 AND meter_key = $2 AND window_size = $3 \
                     AND window_start >= $4 AND window_start < $5",
                )
                .bind(tenant.as_uuid())
                .bind(meter.as_str())
                .bind(window.as_str())
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                let mut rows = rows
                    .iter()
                    .map(rollup_row)
                    .collect::<tenancy_core::Result<Vec<_>>>()?;
                rows.sort_by(|a, b| {
                    (a.window_start, &a.group_key).cmp(&(b.window_start, &b.group_key))
                });
                Ok(rows)
            }

            async fn unique_values(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::MeterKey,
                window: crate::model::Window,
                from: i64,
                to: i64,
            ) -> tenancy_core::Result<Vec<crate::rollup::UniqueValue>> {
                use sqlx::Row as _;
                let mut tx = $read(self, tenant).await?;
                let rows = sqlx::query(
                    "SELECT window_start, group_key, value FROM usage_unique_values \
                     WHERE tenant_id = $1 AND meter_key = $2 AND window_size = $3 \
                     AND window_start >= $4 AND window_start < $5",
                )
                .bind(tenant.as_uuid())
                .bind(meter.as_str())
                .bind(window.as_str())
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                rows.iter()
                    .map(|r| {
                        Ok(crate::rollup::UniqueValue {
                            window_start: r.try_get("window_start").map_err(db)?,
                            group_key: r.try_get("group_key").map_err(db)?,
                            value: r.try_get("value").map_err(db)?,
                        })
                    })
                    .collect()
            }

            async fn set_quota(
                &self,
                tenant: tenancy_core::TenantId,
                quota: &crate::model::Quota,
            ) -> tenancy_core::Result<()> {
                tenant.check_scope(quota.tenant_id)?;
                let mut tx = $begin(self, tenant, true).await?;
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM usage_meters WHERE tenant_id = $1 AND meter_key = $2",
                )
                .bind(tenant.as_uuid())
                .bind(quota.meter.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                if exists.is_none() {
                    return Err(tenancy_core::Error::not_found("meter", &quota.meter));
                }
                sqlx::query(
                    "INSERT INTO usage_quotas (tenant_id, meter_key, period, quota_limit, mode, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant_id, meter_key) DO UPDATE SET period = excluded.period, \
                     quota_limit = excluded.quota_limit, mode = excluded.mode, \
                     updated_at = excluded.updated_at",
                )
                .bind(tenant.as_uuid())
                .bind(quota.meter.as_str())
                .bind(quota.period.as_str())
                .bind(quota.limit.to_string())
                .bind(quota.mode.as_str())
                .bind(quota.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(())
            }

            async fn quota(
                &self,
                tenant: tenancy_core::TenantId,
                key: &crate::model::MeterKey,
            ) -> tenancy_core::Result<Option<crate::model::Quota>> {
                let mut tx = $read(self, tenant).await?;
                let row = sqlx::query(
                    "SELECT meter_key, period, quota_limit, mode, updated_at FROM usage_quotas \
                     WHERE tenant_id = $1 AND meter_key = $2",
                )
                .bind(tenant.as_uuid())
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                row.as_ref().map(|r| quota_row(tenant, r)).transpose()
            }

            async fn delete_quota(
                &self,
                tenant: tenancy_core::TenantId,
                key: &crate::model::MeterKey,
            ) -> tenancy_core::Result<bool> {
                let mut tx = $begin(self, tenant, true).await?;
                let done = sqlx::query("DELETE FROM usage_quotas WHERE tenant_id = $1 AND meter_key = $2")
                    .bind(tenant.as_uuid())
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected();
                tx.commit().await.map_err(db)?;
                Ok(done > 0)
            }
        }

        /// `NotFound` if the meter is gone, else `Conflict` (its version moved on).
        async fn missing_or_stale(
            tx: &mut sqlx::Transaction<'static, $db>,
            tenant: tenancy_core::TenantId,
            key: &crate::model::MeterKey,
            version: i64,
        ) -> tenancy_core::Error {
            let found: Result<Option<i64>, _> = sqlx::query_scalar(
                "SELECT version FROM usage_meters WHERE tenant_id = $1 AND meter_key = $2",
            )
            .bind(tenant.as_uuid())
            .bind(key.as_str())
            .fetch_optional(&mut **tx)
            .await;
            match found {
                Ok(Some(_)) => tenancy_core::Error::stale("meter", key, version),
                Ok(None) => tenancy_core::Error::not_found("meter", key),
                Err(e) => db(e),
            }
        }

        #[async_trait::async_trait]
        impl crate::store::QuotaCounter for $store {
            async fn consume(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::MeterKey,
                period_start: i64,
                _period_end: i64,
                amount: i64,
                ceiling: i64,
            ) -> tenancy_core::Result<crate::store::Consumed> {
                if amount > ceiling {
                    let used = crate::store::QuotaCounter::used(self, tenant, meter, period_start).await?;
                    return Ok(crate::store::Consumed { consumed: false, used });
                }
                let mut tx = $begin(self, tenant, true).await?;
                let after: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO usage_quota_counters AS c (tenant_id, meter_key, period_start, used) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, meter_key, period_start) \
                     DO UPDATE SET used = c.used + excluded.used WHERE c.used + excluded.used <= $5 \
                     RETURNING used",
                )
                .bind(tenant.as_uuid())
                .bind(meter.as_str())
                .bind(period_start)
                .bind(amount)
                .bind(ceiling)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let outcome = match after {
                    Some(used) => crate::store::Consumed { consumed: true, used },
                    None => {
                        let used: Option<i64> = sqlx::query_scalar(
                            "SELECT used FROM usage_quota_counters \
                             WHERE tenant_id = $1 AND meter_key = $2 AND period_start = $3",
                        )
                        .bind(tenant.as_uuid())
                        .bind(meter.as_str())
                        .bind(period_start)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                        crate::store::Consumed { consumed: false, used: used.unwrap_or(0) }
                    }
                };
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }

            async fn used(
                &self,
                tenant: tenancy_core::TenantId,
                meter: &crate::model::MeterKey,
                period_start: i64,
            ) -> tenancy_core::Result<i64> {
                let mut tx = $read(self, tenant).await?;
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT used FROM usage_quota_counters \
                     WHERE tenant_id = $1 AND meter_key = $2 AND period_start = $3",
                )
                .bind(tenant.as_uuid())
                .bind(meter.as_str())
                .bind(period_start)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                Ok(used.unwrap_or(0))
            }
        }
    };
}
pub(crate) use sql_metering_store;

#[cfg(feature = "postgres")]
pub use postgres::migrate_postgres;
#[cfg(feature = "sqlite")]
pub use sqlite::migrate_sqlite;
