//! The in-memory webhook store: complete (it passes the conformance suite), for tests
//! and demos.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenancy_core::events::Event;
use tenancy_core::ids::EventId;
use tenancy_core::{Error, Result, TenantId};
use tokio::sync::RwLock;

use super::{
    DueDelivery, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookStore,
    check_stored_endpoint,
};
use crate::ids::{WebhookDeliveryId, WebhookEndpointId};

#[derive(Default)]
struct Tables {
    endpoints: BTreeMap<(TenantId, WebhookEndpointId), WebhookEndpoint>,
    deliveries: BTreeMap<(TenantId, WebhookDeliveryId), WebhookDelivery>,
    by_event: HashSet<(TenantId, WebhookEndpointId, EventId)>,
    schedule: BTreeMap<(TenantId, WebhookDeliveryId), DateTime<Utc>>,
}

/// The in-memory webhook store.
#[derive(Default)]
pub struct MemoryWebhookStore {
    tables: RwLock<Tables>,
}

impl MemoryWebhookStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

fn endpoint_not_found(id: WebhookEndpointId) -> Error {
    Error::NotFound(format!("webhook endpoint `{id}` not found"))
}

fn delivery_not_found(id: WebhookDeliveryId) -> Error {
    Error::NotFound(format!("webhook delivery `{id}` not found"))
}

#[async_trait]
impl WebhookStore for MemoryWebhookStore {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
        check_stored_endpoint(endpoint, true)?;
        let mut t = self.tables.write().await;
        let key = (endpoint.tenant_id, endpoint.id);
        if t.endpoints.contains_key(&key) {
            return Err(Error::AlreadyExists(format!(
                "webhook endpoint `{}` exists already",
                endpoint.id
            )));
        }
        t.endpoints.insert(key, endpoint.clone());
        Ok(())
    }

    async fn get_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint> {
        self.tables
            .read()
            .await
            .endpoints
            .get(&(tenant, id))
            .cloned()
            .ok_or_else(|| endpoint_not_found(id))
    }

    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>> {
        let t = self.tables.read().await;
        Ok(t.endpoints
            .range((tenant, WebhookEndpointId::from_uuid(uuid::Uuid::nil()))..)
            .take_while(|((owner, _), _)| *owner == tenant)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()> {
        check_stored_endpoint(endpoint, false)?;
        let mut t = self.tables.write().await;
        let stored = t
            .endpoints
            .get_mut(&(endpoint.tenant_id, endpoint.id))
            .ok_or_else(|| endpoint_not_found(endpoint.id))?;
        if stored.version.checked_add(1) != Some(endpoint.version) {
            return Err(Error::Conflict(format!(
                "webhook endpoint `{}` was changed by someone else; read it again",
                endpoint.id
            )));
        }
        *stored = endpoint.clone();
        Ok(())
    }

    async fn delete_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<()> {
        let mut t = self.tables.write().await;
        t.endpoints
            .remove(&(tenant, id))
            .ok_or_else(|| endpoint_not_found(id))?;
        let gone: Vec<(TenantId, WebhookDeliveryId)> = t
            .deliveries
            .iter()
            .filter(|((owner, _), d)| *owner == tenant && d.endpoint_id == id)
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            if let Some(d) = t.deliveries.remove(&key) {
                t.by_event.remove(&(tenant, id, d.event_id));
            }
            t.schedule.remove(&key);
        }
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
        let mut t = self.tables.write().await;
        let mut created = Vec::new();
        for &endpoint in endpoints {
            if !t.endpoints.contains_key(&(tenant, endpoint))
                || t.by_event.contains(&(tenant, endpoint, event.id()))
            {
                continue;
            }
            let delivery = WebhookDelivery::pending(tenant, endpoint, event, now)?;
            t.by_event.insert((tenant, endpoint, event.id()));
            t.schedule.insert((tenant, delivery.id), now);
            t.deliveries.insert((tenant, delivery.id), delivery.clone());
            created.push(delivery);
        }
        Ok(created)
    }

    async fn get_delivery(
        &self,
        tenant: TenantId,
        id: WebhookDeliveryId,
    ) -> Result<WebhookDelivery> {
        self.tables
            .read()
            .await
            .deliveries
            .get(&(tenant, id))
            .cloned()
            .ok_or_else(|| delivery_not_found(id))
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookDeliveryId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        let t = self.tables.read().await;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(t.deliveries
            .iter()
            .rev()
            .filter(|((owner, id), d)| {
                *owner == tenant && d.endpoint_id == endpoint && before.is_none_or(|b| *id < b)
            })
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        let mut t = self.tables.write().await;
        let mut due: Vec<DueDelivery> = t
            .schedule
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(&(tenant_id, delivery_id), &due_at)| DueDelivery {
                tenant_id,
                delivery_id,
                due_at,
            })
            .collect();
        due.sort_by_key(|d| (d.due_at, d.delivery_id));
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for d in &due {
            t.schedule.insert((d.tenant_id, d.delivery_id), lease_until);
        }
        Ok(due)
    }

    async fn record_attempt(
        &self,
        tenant: TenantId,
        id: WebhookDeliveryId,
        attempt: &WebhookAttempt,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<WebhookDelivery> {
        let mut t = self.tables.write().await;
        let stored = t
            .deliveries
            .get_mut(&(tenant, id))
            .ok_or_else(|| delivery_not_found(id))?;
        let mut delivery = stored.clone();
        delivery.record(attempt, next_attempt_at)?;
        *stored = delivery.clone();
        match next_attempt_at {
            Some(at) => t.schedule.insert((tenant, id), at),
            None => t.schedule.remove(&(tenant, id)),
        };
        Ok(delivery)
    }
}
