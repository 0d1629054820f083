//! The event outbox of the SQL backends (`event_outbox`, migration 3), written once
//! with `$N` placeholders and instantiated per backend by [`sql_outbox_store!`]: an
//! `enqueue` into a transaction the caller holds, and [`crate::events::OutboxStore`].

/// Generates `pub async fn enqueue(tx, topic, event)` (re-exported next to `$store`)
/// and [`crate::events::OutboxStore`] for `$store` over database `$db`, with the same
/// `read`/`write` transactions as [`crate::sql::sql_identity_store!`].
macro_rules! sql_outbox_store {
    ($store:ty, $db:ty) => {
        mod outbox_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use sqlx::types::Json;

            use super::*;
            use crate::error::Result;
            use crate::events::{Event, OutboxEntry, OutboxStore};
            use crate::ids::EventId;
            use crate::sql::{Scope, stored, write_error};

            /// Enqueues `event` for `topic` in `tx`, a transaction the caller holds: the
            /// event is published (by a [`crate::events::Relay`]) if and only if `tx`
            /// commits. `AlreadyExists` when its id is in the outbox already (the
            /// transaction is then unusable on PostgreSQL; roll it back);
            /// `InvalidInput` for an invalid topic name.
            pub async fn enqueue(
                tx: &mut sqlx::Transaction<'_, $db>,
                topic: &str,
                event: &Event,
            ) -> Result<()> {
                crate::events::check_topic(topic)?;
                sqlx::query(
                    "INSERT INTO event_outbox (event_id, topic, tenant_id, payload) VALUES ($1, $2, $3, $4)",
                )
                .bind(event.id().as_uuid())
                .bind(topic)
                .bind(event.tenant_id().as_uuid())
                .bind(Json(event))
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error(
                    e,
                    |_| crate::events::already_enqueued(event.id()).to_string(),
                    || "outbox row not found".into(),
                ))?;
                Ok(())
            }

            /// [`enqueue`] of several events in one statement (one round trip), in
            /// order.
            pub async fn enqueue_all(
                tx: &mut sqlx::Transaction<'_, $db>,
                topic: &str,
                events: &[Event],
            ) -> Result<()> {
                crate::events::check_topic(topic)?;
                // 4 parameters per row, well under every backend's limit per chunk.
                for chunk in events.chunks(500) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO event_outbox (event_id, topic, tenant_id, payload) ",
                    );
                    query.push_values(chunk, |mut row, event| {
                        row.push_bind(event.id().as_uuid())
                            .push_bind(topic)
                            .push_bind(event.tenant_id().as_uuid())
                            .push_bind(Json(event));
                    });
                    query.build().execute(&mut **tx).await.map_err(|e| {
                        write_error(
                            e,
                            |_| "an event is in the outbox already".to_owned(),
                            || "outbox row not found".into(),
                        )
                    })?;
                }
                Ok(())
            }

            #[async_trait]
            impl OutboxStore for $store {
                async fn enqueue(&self, topic: &str, event: &Event) -> Result<()> {
                    let mut tx = self.write(Scope::Global).await?;
                    enqueue(&mut tx, topic, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
                    crate::events::check_limit(limit)?;
                    let mut tx = self.read(Scope::Global).await?;
                    let rows = sqlx::query(
                        "SELECT topic, payload FROM event_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
                    )
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            let payload = row.try_get::<Json<serde_json::Value>, _>("payload")?.0;
                            Ok(OutboxEntry {
                                topic: row.try_get("topic")?,
                                event: stored("event", Event::from_value(payload))?,
                            })
                        })
                        .collect()
                }

                async fn mark_sent(&self, ids: &[EventId], now: DateTime<Utc>) -> Result<u64> {
                    let mut tx = self.write(Scope::Global).await?;
                    let mut marked = 0;
                    for id in ids {
                        marked += sqlx::query(
                            "UPDATE event_outbox SET sent_at = $1 WHERE event_id = $2 AND sent_at IS NULL",
                        )
                        .bind(now)
                        .bind(id.as_uuid())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(marked)
                }

                async fn purge_sent(&self, before: DateTime<Utc>) -> Result<u64> {
                    let mut tx = self.write(Scope::Global).await?;
                    let done = sqlx::query(
                        "DELETE FROM event_outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
            }
        }

        pub use outbox_sql::{enqueue, enqueue_all};
    };
}

pub(crate) use sql_outbox_store;
