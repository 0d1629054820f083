//! The webhook store conformance suite (feature `conformance`): plain async functions
//! that every [`WebhookStore`] backend runs with a fresh store — endpoint CRUD and
//! version conflicts, two-tenant isolation, idempotent enqueueing (also under
//! concurrency), claiming and recording attempts, and deleting an endpoint with its
//! deliveries. They panic (like any test) when a backend breaks the contract
//! documented on the trait.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite reports failures by panicking"
)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tenancy_core::events::Event;
use tenancy_core::{ErrorKind, Result, TenantId};

use super::{
    DeliveryStatus, DueDelivery, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookStore,
};
use crate::ids::{WebhookDeliveryId, WebhookEndpointId};

/// The suite's start: 2026-03-01 09:00 UTC.
#[must_use]
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

/// An enabled endpoint of `tenant` at `url` receiving every event (version 1, with a
/// secret), as a store receives it.
#[must_use]
pub fn endpoint(tenant: TenantId, url: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: WebhookEndpointId::new(),
        tenant_id: tenant,
        url: url.into(),
        description: "test endpoint".into(),
        event_types: Vec::new(),
        secret: Some(format!("whsec_{}", uuid::Uuid::now_v7().simple())),
        previous_secret: None,
        previous_secret_expires_at: None,
        enabled: true,
        version: 1,
        created_at: start(),
        updated_at: start(),
    }
}

/// A billing event of `tenant` of type `tenancy.billing.{kind}`.
#[must_use]
pub fn event(tenant: TenantId, kind: &str) -> Event {
    Event::new(
        tenant,
        format!("tenancy.billing.{kind}"),
        "/tenancy/billing",
        "in_1",
        serde_json::json!({ "id": "in_1", "total": 4200, "note": "ünïcode \"quoted\"" }),
    )
    .unwrap()
    .with_time(start())
}

fn kind<T: std::fmt::Debug>(result: Result<T>) -> ErrorKind {
    result.unwrap_err().kind()
}

fn failure(number: u32, at: DateTime<Utc>, code: u16) -> WebhookAttempt {
    WebhookAttempt {
        number,
        at,
        status_code: Some(code),
        error: Some(format!("the endpoint answered {code}")),
        succeeded: false,
    }
}

fn success(number: u32, at: DateTime<Utc>) -> WebhookAttempt {
    WebhookAttempt {
        number,
        at,
        status_code: Some(200),
        error: None,
        succeeded: true,
    }
}

fn ids(due: &[DueDelivery]) -> HashSet<WebhookDeliveryId> {
    due.iter().map(|d| d.delivery_id).collect()
}

/// Create, read, list (oldest first), versioned update (a stale one is `Conflict`),
/// delete; the version and secret contract of writes.
pub async fn endpoint_crud(store: Arc<dyn WebhookStore>) {
    let tenant = TenantId::new();
    let first = endpoint(tenant, "https://a.example.com/hook");
    store.create_endpoint(&first).await.unwrap();
    assert_eq!(store.get_endpoint(tenant, first.id).await.unwrap(), first);
    assert_eq!(
        kind(store.create_endpoint(&first).await),
        ErrorKind::AlreadyExists
    );
    let mut second = endpoint(tenant, "https://b.example.com/hook");
    second.event_types = vec!["tenancy.billing.invoice.*".into()];
    store.create_endpoint(&second).await.unwrap();
    assert_eq!(
        store.list_endpoints(tenant).await.unwrap(),
        vec![first.clone(), second.clone()]
    );

    let mut bad = endpoint(tenant, "https://c.example.com");
    bad.version = 2;
    assert_eq!(
        kind(store.create_endpoint(&bad).await),
        ErrorKind::InvalidInput
    );
    bad.version = 1;
    bad.secret = None;
    assert_eq!(
        kind(store.create_endpoint(&bad).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(store.get_endpoint(tenant, bad.id).await),
        ErrorKind::NotFound
    );

    let mut updated = first.clone();
    updated.version = 2;
    updated.enabled = false;
    updated.description = "paused".into();
    updated.updated_at = start() + Duration::minutes(1);
    store.update_endpoint(&updated).await.unwrap();
    assert_eq!(store.get_endpoint(tenant, first.id).await.unwrap(), updated);
    // Someone who read version 1 writes version 2 again: refused, nothing changes.
    let mut stale = first.clone();
    stale.version = 2;
    stale.url = "https://stale.example.com".into();
    assert_eq!(
        kind(store.update_endpoint(&stale).await),
        ErrorKind::Conflict
    );
    stale.version = 4;
    assert_eq!(
        kind(store.update_endpoint(&stale).await),
        ErrorKind::Conflict
    );
    assert_eq!(store.get_endpoint(tenant, first.id).await.unwrap(), updated);
    let mut absent = endpoint(tenant, "https://d.example.com");
    absent.version = 2;
    assert_eq!(
        kind(store.update_endpoint(&absent).await),
        ErrorKind::NotFound
    );
    let mut no_secret = updated.clone();
    no_secret.version = 3;
    no_secret.secret = None;
    assert_eq!(
        kind(store.update_endpoint(&no_secret).await),
        ErrorKind::InvalidInput
    );

    store.delete_endpoint(tenant, first.id).await.unwrap();
    assert_eq!(
        kind(store.get_endpoint(tenant, first.id).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(store.delete_endpoint(tenant, first.id).await),
        ErrorKind::NotFound
    );
    assert_eq!(store.list_endpoints(tenant).await.unwrap(), vec![second]);
}

/// Two tenants with the same endpoint URL: neither sees, changes, deletes or enqueues
/// to the other's endpoint, nor sees or records the other's deliveries.
pub async fn tenant_isolation(store: Arc<dyn WebhookStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let url = "https://hooks.example.com/billing";
    let ea = endpoint(a, url);
    let eb = endpoint(b, url);
    store.create_endpoint(&ea).await.unwrap();
    store.create_endpoint(&eb).await.unwrap();
    // The same id may live in both tenants.
    let mut twin = endpoint(b, url);
    twin.id = ea.id;
    store.create_endpoint(&twin).await.unwrap();

    assert_eq!(store.list_endpoints(a).await.unwrap(), vec![ea.clone()]);
    assert_eq!(
        kind(store.get_endpoint(a, eb.id).await),
        ErrorKind::NotFound
    );
    let mut hijack = eb.clone();
    hijack.tenant_id = a;
    hijack.version = 2;
    hijack.url = "https://evil.example.com".into();
    assert_eq!(
        kind(store.update_endpoint(&hijack).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(store.delete_endpoint(a, eb.id).await),
        ErrorKind::NotFound
    );
    assert_eq!(store.get_endpoint(b, eb.id).await.unwrap(), eb);
    // Updating a's endpoint leaves b's twin with the same id alone.
    let mut renamed = ea.clone();
    renamed.version = 2;
    renamed.description = "a's".into();
    store.update_endpoint(&renamed).await.unwrap();
    assert_eq!(store.get_endpoint(b, ea.id).await.unwrap(), twin);

    let now = start();
    let event_b = event(b, "invoice.finalized");
    // An event of b cannot be enqueued in a's name.
    assert_eq!(
        kind(store.enqueue_deliveries(a, &event_b, &[ea.id], now).await),
        ErrorKind::InvalidInput
    );
    // a naming b's endpoint creates nothing.
    let event_a = event(a, "invoice.finalized");
    assert!(
        store
            .enqueue_deliveries(a, &event_a, &[eb.id], now)
            .await
            .unwrap()
            .is_empty()
    );
    let delivered_b = store
        .enqueue_deliveries(b, &event_b, &[eb.id, twin.id], now)
        .await
        .unwrap();
    assert_eq!(delivered_b.len(), 2);
    let db = &delivered_b[0];
    assert_eq!(
        kind(store.get_delivery(a, db.id).await),
        ErrorKind::NotFound
    );
    assert!(
        store
            .list_deliveries(a, eb.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // a's endpoint shares its id with b's twin, yet lists none of b's deliveries.
    assert!(
        store
            .list_deliveries(a, ea.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        kind(store.record_attempt(a, db.id, &success(1, now), None).await),
        ErrorKind::NotFound
    );
    assert_eq!(store.get_delivery(b, db.id).await.unwrap(), *db);
    // Deleting a's endpoint leaves b's twin and its deliveries.
    store.delete_endpoint(a, ea.id).await.unwrap();
    assert_eq!(store.get_endpoint(b, ea.id).await.unwrap(), twin);
    assert_eq!(
        store
            .list_deliveries(b, twin.id, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// One delivery per (endpoint, event): enqueueing the same event again creates
/// nothing, also from concurrent callers; a new endpoint gets its own.
pub async fn idempotent_enqueue(store: Arc<dyn WebhookStore>) {
    let tenant = TenantId::new();
    let (e1, e2, e3) = (
        endpoint(tenant, "https://one.example.com"),
        endpoint(tenant, "https://two.example.com"),
        endpoint(tenant, "https://three.example.com"),
    );
    for e in [&e1, &e2, &e3] {
        store.create_endpoint(e).await.unwrap();
    }
    let now = start();
    let ev = event(tenant, "invoice.finalized");
    let created = store
        .enqueue_deliveries(tenant, &ev, &[e1.id, e2.id], now)
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    for (d, e) in created.iter().zip([&e1, &e2]) {
        assert_eq!(d.endpoint_id, e.id);
        assert_eq!(d.event_id, ev.id());
        assert_eq!(d.event_type, "tenancy.billing.invoice.finalized");
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.next_attempt_at, Some(now));
        assert_eq!(d.payload.as_bytes(), ev.encode().unwrap());
        assert_eq!(store.get_delivery(tenant, d.id).await.unwrap(), *d);
    }
    // The payload reads back byte for byte (a JSON column must not reformat it).
    let stored = store.get_delivery(tenant, created[0].id).await.unwrap();
    assert_eq!(Event::decode(stored.payload.as_bytes()).unwrap(), ev);

    // Redelivered: nothing new, even with a third endpoint named twice.
    assert!(
        store
            .enqueue_deliveries(tenant, &ev, &[e1.id, e2.id], now + Duration::seconds(5))
            .await
            .unwrap()
            .is_empty()
    );
    let third = store
        .enqueue_deliveries(tenant, &ev, &[e1.id, e3.id, e3.id], now)
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].endpoint_id, e3.id);

    // Concurrent redeliveries of a new event: exactly one delivery per endpoint.
    let ev2 = event(tenant, "invoice.paid");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            let ev2 = ev2.clone();
            let targets = [e1.id, e2.id, e3.id];
            tokio::spawn(async move {
                store
                    .enqueue_deliveries(tenant, &ev2, &targets, now)
                    .await
                    .unwrap()
                    .len()
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 3);
    for e in [&e1, &e2, &e3] {
        let listed = store.list_deliveries(tenant, e.id, None, 10).await.unwrap();
        assert_eq!(listed.len(), 2, "two events for {}", e.url);
        // Newest first.
        assert_eq!(listed[0].event_id, ev2.id());
        assert_eq!(listed[1].event_id, ev.id());
    }
    let due = store
        .claim_due_deliveries(now, now + Duration::minutes(5), 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 6);
}

/// Claiming leases due deliveries (concurrent claims get disjoint sets, a lease that
/// runs out makes one due again); recording attempts follows
/// [`WebhookDelivery::record`] and keeps the schedule to the pending deliveries.
pub async fn attempts_and_schedule(store: Arc<dyn WebhookStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let ea = endpoint(a, "https://a.example.com");
    let eb = endpoint(b, "https://b.example.com");
    store.create_endpoint(&ea).await.unwrap();
    store.create_endpoint(&eb).await.unwrap();
    let t0 = start();
    let mut all = Vec::new();
    for i in 0..6 {
        let (tenant, e) = if i % 2 == 0 { (a, &ea) } else { (b, &eb) };
        let ev = event(tenant, "invoice.finalized");
        let at = t0 + Duration::seconds(i);
        all.extend(
            store
                .enqueue_deliveries(tenant, &ev, &[e.id], at)
                .await
                .unwrap(),
        );
    }
    let lease = Duration::minutes(5);
    // Nothing is due before it was enqueued.
    assert!(
        store
            .claim_due_deliveries(t0 - Duration::seconds(1), t0 + lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Earliest first, across tenants, at most `limit`.
    let first = store
        .claim_due_deliveries(t0 + Duration::seconds(2), t0 + lease, 2)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|d| d.delivery_id).collect::<Vec<_>>(),
        vec![all[0].id, all[1].id]
    );
    assert_eq!(first[1].tenant_id, b);
    assert_eq!(first[0].due_at, t0);
    // Concurrent claims of the rest: disjoint, together everything left.
    let now = t0 + Duration::minutes(1);
    let claims: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_due_deliveries(now, now + lease, 2)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = HashSet::new();
    let mut count = 0;
    for c in claims {
        let got = c.await.unwrap();
        count += got.len();
        claimed.extend(ids(&got));
    }
    assert_eq!(count, 4, "a delivery was claimed twice or not at all");
    assert_eq!(
        claimed,
        all[2..].iter().map(|d| d.id).collect::<HashSet<_>>()
    );
    assert!(
        store
            .claim_due_deliveries(now, now + lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The first two were never recorded: their lease runs out at t0 + 5 min.
    let expired = store
        .claim_due_deliveries(t0 + lease, t0 + lease * 2, 10)
        .await
        .unwrap();
    assert_eq!(ids(&expired), ids(&first));
    assert_eq!(expired[0].due_at, t0 + lease);

    // Attempt 1 of delivery 0 fails: pending again, due in a minute.
    let d = all[0].id;
    let at = t0 + lease;
    let after = store
        .record_attempt(a, d, &failure(1, at, 500), Some(at + Duration::minutes(1)))
        .await
        .unwrap();
    assert_eq!(after.status, DeliveryStatus::Pending);
    assert_eq!(after.attempts, 1);
    assert_eq!(after.last_status_code, Some(500));
    assert_eq!(after.next_attempt_at, Some(at + Duration::minutes(1)));
    assert_eq!(store.get_delivery(a, d).await.unwrap(), after);
    // The same attempt recorded again (another dispatcher) is a conflict.
    assert_eq!(
        kind(store.record_attempt(a, d, &failure(1, at, 500), None).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.record_attempt(a, d, &failure(3, at, 500), None).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.record_attempt(a, d, &success(2, at), Some(at)).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(store.get_delivery(a, d).await.unwrap(), after);
    let soon = at + Duration::seconds(30);
    assert!(
        !ids(&store
            .claim_due_deliveries(soon, soon + lease, 10)
            .await
            .unwrap())
        .contains(&d)
    );
    let retry_at = at + Duration::minutes(1);
    let due = store
        .claim_due_deliveries(retry_at, retry_at + lease, 10)
        .await
        .unwrap();
    assert!(ids(&due).contains(&d));
    // Attempt 2 succeeds: done, never due again.
    let long_error = "x".repeat(super::MAX_ERROR_LEN * 2);
    let mut second = success(2, retry_at);
    second.error = None;
    let done = store.record_attempt(a, d, &second, None).await.unwrap();
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.next_attempt_at, None);
    assert_eq!(done.last_status_code, Some(200));
    assert_eq!(done.last_error, None);
    assert_eq!(done.history.len(), 2);
    assert_eq!(done.history[0].status_code, Some(500));
    assert_eq!(
        kind(store.record_attempt(a, d, &failure(3, at, 500), None).await),
        ErrorKind::Conflict
    );
    // Delivery 1 fails for good on its first attempt (no retry left); the error is
    // cut short.
    let d1 = all[1].id;
    let mut timeout = failure(1, at, 0);
    timeout.status_code = None;
    timeout.error = Some(long_error);
    let failed = store.record_attempt(b, d1, &timeout, None).await.unwrap();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.last_status_code, None);
    assert_eq!(
        failed.last_error.as_ref().map(|e| e.chars().count()),
        Some(super::MAX_ERROR_LEN)
    );
    let much_later = t0 + Duration::days(2);
    let left = ids(&store
        .claim_due_deliveries(much_later, much_later + lease, 100)
        .await
        .unwrap());
    assert!(!left.contains(&d) && !left.contains(&d1));
    assert_eq!(left.len(), 4);
}

/// Deleting an endpoint deletes its deliveries and unschedules them; other endpoints'
/// stay.
pub async fn delete_removes_deliveries(store: Arc<dyn WebhookStore>) {
    let tenant = TenantId::new();
    let gone = endpoint(tenant, "https://gone.example.com");
    let kept = endpoint(tenant, "https://kept.example.com");
    store.create_endpoint(&gone).await.unwrap();
    store.create_endpoint(&kept).await.unwrap();
    let now = start();
    let mut deliveries: Vec<WebhookDelivery> = Vec::new();
    for kind in ["invoice.created", "invoice.finalized", "invoice.paid"] {
        let ev = event(tenant, kind);
        deliveries.extend(
            store
                .enqueue_deliveries(tenant, &ev, &[gone.id, kept.id], now)
                .await
                .unwrap(),
        );
    }
    assert_eq!(deliveries.len(), 6);
    // Paging: newest first, then the older ones.
    let page = store
        .list_deliveries(tenant, kept.id, None, 2)
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].event_type, "tenancy.billing.invoice.paid");
    let rest = store
        .list_deliveries(tenant, kept.id, Some(page[1].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event_type, "tenancy.billing.invoice.created");

    store.delete_endpoint(tenant, gone.id).await.unwrap();
    for d in deliveries.iter().filter(|d| d.endpoint_id == gone.id) {
        assert_eq!(
            kind(store.get_delivery(tenant, d.id).await),
            ErrorKind::NotFound
        );
    }
    assert!(
        store
            .list_deliveries(tenant, gone.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = store
        .claim_due_deliveries(now, now + Duration::minutes(5), 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|d| {
        deliveries
            .iter()
            .any(|x| x.id == d.delivery_id && x.endpoint_id == kept.id)
    }));
    // The event enqueued again after the deletion: nothing for the deleted endpoint.
    let ev = event(tenant, "invoice.voided");
    let again = store
        .enqueue_deliveries(tenant, &ev, &[gone.id, kept.id], now)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].endpoint_id, kept.id);
}
