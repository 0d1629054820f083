//! Outgoing webhooks: the webhook store conformance suite and the dispatcher end to
//! end (events on an in-process bus, a local HTTP receiver on 127.0.0.1, a manual
//! clock) on memory, SQLite and PostgreSQL as the application role (when
//! `TENANCY_TEST_POSTGRES_URL` is set), row-level security of the webhook tables, and
//! endpoint management through the `Webhooks` service.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgPoolOptions;
use tenancy_billing::signature::{self, DEFAULT_TOLERANCE};
use tenancy_billing::store::BILLING_TOPIC;
use tenancy_billing::webhooks::{
    DeliveryStatus, DispatcherConfig, EVENT_ID_HEADER, EVENT_TYPE_HEADER, MemoryWebhookStore,
    NewWebhookEndpoint, SIGNATURE_HEADER, WebhookConfig, WebhookDelivery, WebhookDispatcher,
    WebhookEndpoint, WebhookEndpointChange, WebhookStore, Webhooks, conformance,
};
use tenancy_billing::{BillingStore, MemoryBillingStore};
use tenancy_core::clock::{Clock, ManualClock};
use tenancy_core::conformance::{PgTestDatabase, sqlite_test_store};
use tenancy_core::events::{
    Event, EventBus, EventBusExt, InProcessBus, OutboxStore, Relay, Subscription,
};
use tenancy_core::{ErrorKind, TenantId};

use super::stores::{migrate_postgres_all, migrate_sqlite_all};

pub struct Backend {
    webhooks: Arc<dyn WebhookStore>,
    billing: Arc<dyn BillingStore>,
    outbox: Arc<dyn OutboxStore>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgTestDatabase>,
}

impl Backend {
    async fn finish(self) {
        drop(self.webhooks);
        drop(self.billing);
        drop(self.outbox);
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

async fn memory() -> Option<Backend> {
    let billing = Arc::new(MemoryBillingStore::new());
    Some(Backend {
        webhooks: Arc::new(MemoryWebhookStore::new()),
        billing: billing.clone(),
        outbox: billing,
        _dir: None,
        pg: None,
    })
}

async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(sqlite_test_store(dir.path(), "webhooks.db", migrate_sqlite_all).await);
    Some(Backend {
        webhooks: store.clone(),
        billing: store.clone(),
        outbox: store,
        _dir: Some(dir),
        pg: None,
    })
}

/// A database of its own, used by a role that owns nothing and cannot bypass
/// row-level security.
async fn postgres() -> Option<Backend> {
    let db = PgTestDatabase::create().await?;
    let store = Arc::new(db.app_store(migrate_postgres_all).await);
    Some(Backend {
        webhooks: store.clone(),
        billing: store.clone(),
        outbox: store,
        _dir: None,
        pg: Some(db),
    })
}

// ---------------------------------------------------------------------------------
// A local receiver: records every request, answers from a per-path script.

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<HashMap<String, Vec<Received>>>,
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    delays: Mutex<HashMap<String, StdDuration>>,
}

struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    state
        .received
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(Received {
            headers,
            body: body.to_vec(),
        });
    let delay = state.delays.lock().unwrap().get(&path).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let code = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The statuses `path` answers, in order (200 once they are used up).
    fn script(&self, path: &str, codes: &[u16]) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.into(), codes.iter().copied().collect());
    }

    fn delay(&self, path: &str, delay: StdDuration) {
        self.state.delays.lock().unwrap().insert(path.into(), delay);
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------
// The dispatcher on a backend, a bus, a receiver and a manual clock.

struct Harness {
    backend: Backend,
    clock: Arc<ManualClock>,
    webhooks: Webhooks,
    bus: Arc<InProcessBus>,
    dispatcher: WebhookDispatcher,
    /// The harness's member of the dispatcher's group (`None` once it left).
    subscription: Option<Box<dyn Subscription>>,
    receiver: Receiver,
}

fn test_config() -> DispatcherConfig {
    DispatcherConfig {
        timeout: StdDuration::from_secs(5),
        retry_schedule: vec![
            Duration::minutes(1),
            Duration::minutes(5),
            Duration::minutes(30),
        ],
        idle: StdDuration::from_millis(20),
        poll_timeout: StdDuration::from_millis(50),
        ..DispatcherConfig::default()
    }
}

impl Harness {
    async fn new(backend: Backend, config: DispatcherConfig) -> Self {
        let clock = Arc::new(ManualClock::new(conformance::start()));
        let webhooks = Webhooks::new(backend.webhooks.clone())
            .with_clock(clock.clone())
            .with_config(WebhookConfig {
                allow_private_destinations: true,
                ..WebhookConfig::default()
            });
        let bus = Arc::new(InProcessBus::new());
        let dispatcher = WebhookDispatcher::new(webhooks.clone(), bus.clone(), config).unwrap();
        let subscription = dispatcher.subscribe().await.unwrap();
        Self {
            backend,
            clock,
            webhooks,
            bus,
            dispatcher,
            subscription: Some(subscription),
            receiver: Receiver::start().await,
        }
    }

    async fn endpoint(&self, tenant: TenantId, path: &str, types: &[&str]) -> WebhookEndpoint {
        let mut input = NewWebhookEndpoint::new(self.receiver.url(path));
        input.event_types = types.iter().map(|t| (*t).to_owned()).collect();
        self.webhooks.create_endpoint(tenant, input).await.unwrap()
    }

    async fn publish(&self, event: &Event) {
        self.bus.publish_event(BILLING_TOPIC, event).await.unwrap();
    }

    /// Consumes until the bus has nothing more.
    async fn consume_all(&mut self) -> usize {
        let mut total = 0;
        loop {
            let n = self
                .dispatcher
                .consume(
                    &mut **self.subscription.as_mut().unwrap(),
                    StdDuration::from_millis(100),
                )
                .await
                .unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn deliveries(
        &self,
        tenant: TenantId,
        endpoint: &WebhookEndpoint,
    ) -> Vec<WebhookDelivery> {
        self.webhooks
            .list_deliveries(tenant, endpoint.id, None, 100)
            .await
            .unwrap()
    }

    async fn finish(self) {
        drop(self.dispatcher);
        drop(self.webhooks);
        self.backend.finish().await;
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Checks a request as a receiver would: signed with `secret` over the raw body, at
/// `now`; returns the event.
fn verified(r: &Received, secret: &str, now: DateTime<Utc>) -> Event {
    assert_eq!(header(r, "content-type"), "application/json");
    let t = signature::verify(
        header(r, SIGNATURE_HEADER),
        &r.body,
        &[secret],
        now.timestamp(),
        DEFAULT_TOLERANCE,
    )
    .unwrap();
    assert_eq!(t, now.timestamp());
    let event = Event::decode(&r.body).unwrap();
    assert_eq!(header(r, EVENT_ID_HEADER), event.id().to_string());
    assert_eq!(header(r, EVENT_TYPE_HEADER), event.event_type());
    event
}

fn billing_event(tenant: TenantId, kind: &str) -> Event {
    Event::new(
        tenant,
        format!("tenancy.billing.{kind}"),
        "/tenancy/billing",
        "in_42",
        serde_json::json!({ "id": "in_42", "total": 1299, "lines": [{ "amount": 1299 }] }),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------
// End to end.

/// An event on the bus reaches the endpoint as a POST of the exact bus JSON, signed
/// with the endpoint's secret; the delivery records one successful attempt.
async fn signed_delivery(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let tenant = TenantId::new();
    let endpoint = h.endpoint(tenant, "/hooks/all", &[]).await;
    let secret = endpoint.secret.clone().unwrap();
    let event = billing_event(tenant, "invoice.finalized");
    h.publish(&event).await;
    assert_eq!(h.consume_all().await, 1);
    // Recorded, not sent yet.
    let [pending] = &h.deliveries(tenant, &endpoint).await[..] else {
        panic!("one delivery expected")
    };
    assert_eq!(pending.status, DeliveryStatus::Pending);
    assert!(h.receiver.received("/hooks/all").is_empty());

    let report = h.dispatcher.send_due(h.now()).await.unwrap();
    assert_eq!((report.claimed, report.succeeded), (1, 1));
    let received = h.receiver.received("/hooks/all");
    let [request] = &received[..] else {
        panic!("one request expected, got {}", received.len())
    };
    assert_eq!(
        request.body,
        event.encode().unwrap(),
        "the body is the bus JSON"
    );
    assert_eq!(verified(request, &secret, h.now()), event);
    // Another secret does not verify it.
    let other = h
        .endpoint(tenant, "/hooks/other", &["tenancy.billing.customer.*"])
        .await;
    assert!(
        signature::verify(
            header(request, SIGNATURE_HEADER),
            &request.body,
            &[other.secret.unwrap()],
            h.now().timestamp(),
            DEFAULT_TOLERANCE
        )
        .is_err()
    );

    let done = h.webhooks.get_delivery(tenant, pending.id).await.unwrap();
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.last_status_code, Some(200));
    assert_eq!(done.next_attempt_at, None);
    assert_eq!(done.history.len(), 1);
    assert_eq!(done.history[0].at, h.now());
    // Nothing is due any more, even much later.
    h.clock.advance(Duration::days(1));
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    assert_eq!(h.receiver.received("/hooks/all").len(), 1);
    h.finish().await;
}

/// 500, 500, then 200: three attempts at the configured backoff, delivered once.
async fn retries_with_backoff(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let tenant = TenantId::new();
    let endpoint = h.endpoint(tenant, "/flaky", &[]).await;
    let secret = endpoint.secret.clone().unwrap();
    h.receiver.script("/flaky", &[500, 500, 200]);
    let event = billing_event(tenant, "invoice.payment_failed");
    h.publish(&event).await;
    h.consume_all().await;
    let t0 = h.now();

    let report = h.dispatcher.send_due(t0).await.unwrap();
    assert_eq!((report.claimed, report.retrying), (1, 1));
    let [d] = &h.deliveries(tenant, &endpoint).await[..] else {
        panic!("one delivery expected")
    };
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status_code, Some(500));
    assert_eq!(d.last_error.as_deref(), Some("the endpoint answered 500"));
    assert_eq!(d.next_attempt_at, Some(t0 + Duration::minutes(1)));

    // Not due before the first delay has passed.
    h.clock.advance(Duration::seconds(59));
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    h.clock.advance(Duration::seconds(1));
    let t1 = h.now();
    assert_eq!(h.dispatcher.send_due(t1).await.unwrap().retrying, 1);
    let d = h.webhooks.get_delivery(tenant, d.id).await.unwrap();
    assert_eq!(d.attempts, 2);
    assert_eq!(d.next_attempt_at, Some(t1 + Duration::minutes(5)));

    h.clock.advance(Duration::minutes(4));
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    h.clock.advance(Duration::minutes(1));
    let t2 = h.now();
    assert_eq!(h.dispatcher.send_due(t2).await.unwrap().succeeded, 1);
    let d = h.webhooks.get_delivery(tenant, d.id).await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.last_status_code, Some(200));
    assert_eq!(d.last_error, None);
    assert_eq!(d.next_attempt_at, None);
    let codes: Vec<_> = d.history.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    let times: Vec<_> = d.history.iter().map(|a| a.at).collect();
    assert_eq!(times, [t0, t1, t2]);

    // Three requests of the same event, each signed when it was sent.
    let received = h.receiver.received("/flaky");
    assert_eq!(received.len(), 3);
    for (request, at) in received.iter().zip([t0, t1, t2]) {
        assert_eq!(verified(request, &secret, at), event);
    }
    h.clock.advance(Duration::days(1));
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    assert_eq!(h.receiver.received("/flaky").len(), 3);
    h.finish().await;
}

/// An endpoint that keeps failing (an error status, a timeout, a closed port) gets
/// the first attempt and one per delay of the schedule, then the delivery fails.
async fn gives_up_after_schedule(b: Backend) {
    let config = DispatcherConfig {
        timeout: StdDuration::from_millis(300),
        retry_schedule: vec![Duration::minutes(1), Duration::minutes(5)],
        lease: Duration::minutes(1),
        ..test_config()
    };
    let mut h = Harness::new(b, config).await;
    let tenant = TenantId::new();
    let broken = h.endpoint(tenant, "/broken", &[]).await;
    h.receiver.script("/broken", &[503; 10]);
    let slow = h.endpoint(tenant, "/slow", &[]).await;
    h.receiver.delay("/slow", StdDuration::from_secs(3));
    // A port that was open a moment ago and is closed now.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone", listener.local_addr().unwrap())
    };
    let refused = h
        .webhooks
        .create_endpoint(tenant, NewWebhookEndpoint::new(closed))
        .await
        .unwrap();
    h.publish(&billing_event(tenant, "invoice.finalized")).await;
    h.consume_all().await;

    let mut reports = Vec::new();
    for wait in [Duration::zero(), Duration::minutes(1), Duration::minutes(5)] {
        h.clock.advance(wait);
        reports.push(h.dispatcher.send_due(h.now()).await.unwrap());
    }
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.claimed, r.retrying, r.failed))
            .collect::<Vec<_>>(),
        [(3, 3, 0), (3, 3, 0), (3, 0, 3)]
    );
    for (endpoint, code, error) in [
        (&broken, Some(503), "the endpoint answered 503"),
        (&slow, None, "no answer within 300 ms"),
        (&refused, None, "connect"),
    ] {
        let [d] = &h.deliveries(tenant, endpoint).await[..] else {
            panic!("one delivery expected")
        };
        assert_eq!(d.status, DeliveryStatus::Failed, "{}", endpoint.url);
        assert_eq!(d.attempts, 3);
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(d.last_status_code, code);
        let last = d.last_error.as_deref().unwrap();
        assert!(last.contains(error), "{last}");
        assert!(d.history.iter().all(|a| !a.succeeded));
    }
    assert_eq!(h.receiver.received("/broken").len(), 3);
    h.clock.advance(Duration::days(1));
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    h.finish().await;
}

/// The same bus event twice (a producer retry) and once more after a redelivery: one
/// delivery, one request.
async fn redelivered_event_once(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let tenant = TenantId::new();
    let endpoint = h.endpoint(tenant, "/once", &[]).await;
    let event = billing_event(tenant, "invoice.paid");
    h.publish(&event).await;
    h.publish(&event).await;
    assert_eq!(h.consume_all().await, 2);
    h.publish(&event).await;
    assert_eq!(h.consume_all().await, 1);
    assert_eq!(h.deliveries(tenant, &endpoint).await.len(), 1);
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().succeeded, 1);
    // After it was sent, the event comes once more: still nothing new.
    h.publish(&event).await;
    h.consume_all().await;
    assert_eq!(h.dispatcher.send_due(h.now()).await.unwrap().claimed, 0);
    assert_eq!(h.deliveries(tenant, &endpoint).await.len(), 1);
    assert_eq!(h.receiver.received("/once").len(), 1);
    h.finish().await;
}

/// Filters pick the events an endpoint gets; a disabled endpoint gets none; another
/// tenant's events reach none of them.
async fn filters_and_disabled(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let all = h.endpoint(tenant, "/all", &["*"]).await;
    let finalized = h
        .endpoint(tenant, "/finalized", &["tenancy.billing.invoice.finalized"])
        .await;
    let subscriptions = h
        .endpoint(
            tenant,
            "/subscriptions",
            &["tenancy.billing.subscription.*"],
        )
        .await;
    let disabled = h.endpoint(tenant, "/disabled", &[]).await;
    h.webhooks
        .update_endpoint(
            tenant,
            disabled.id,
            WebhookEndpointChange {
                version: 1,
                enabled: Some(false),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap();
    let foreign = h.endpoint(other, "/foreign", &[]).await;

    for kind in [
        "invoice.finalized",
        "subscription.created",
        "customer.updated",
        "invoice.paid",
    ] {
        h.publish(&billing_event(tenant, kind)).await;
    }
    h.publish(&billing_event(other, "invoice.finalized")).await;
    h.consume_all().await;
    let report = h.dispatcher.send_due(h.now()).await.unwrap();
    assert_eq!(report.succeeded, 4 + 1 + 1 + 1);

    let types = |path: &str| -> HashSet<String> {
        h.receiver
            .received(path)
            .iter()
            .map(|r| header(r, EVENT_TYPE_HEADER).to_owned())
            .collect()
    };
    assert_eq!(types("/all").len(), 4);
    assert_eq!(
        types("/finalized"),
        HashSet::from(["tenancy.billing.invoice.finalized".into()])
    );
    assert_eq!(
        types("/subscriptions"),
        HashSet::from(["tenancy.billing.subscription.created".into()])
    );
    assert!(h.receiver.received("/disabled").is_empty());
    assert!(h.deliveries(tenant, &disabled).await.is_empty());
    let foreign_received = h.receiver.received("/foreign");
    assert_eq!(foreign_received.len(), 1);
    assert_eq!(
        Event::decode(&foreign_received[0].body)
            .unwrap()
            .tenant_id(),
        other
    );
    assert_eq!(h.deliveries(tenant, &all).await.len(), 4);
    assert_eq!(h.deliveries(tenant, &finalized).await.len(), 1);
    assert_eq!(h.deliveries(tenant, &subscriptions).await.len(), 1);
    assert_eq!(h.deliveries(other, &foreign).await.len(), 1);
    assert_eq!(
        h.webhooks
            .list_deliveries(tenant, foreign.id, None, 10)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // Disabled after its delivery was recorded: it fails without a request.
    h.publish(&billing_event(tenant, "invoice.voided")).await;
    h.consume_all().await;
    h.webhooks
        .update_endpoint(
            tenant,
            all.id,
            WebhookEndpointChange {
                version: 1,
                enabled: Some(false),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap();
    let report = h.dispatcher.send_due(h.now()).await.unwrap();
    assert_eq!((report.claimed, report.failed), (1, 1));
    let latest = &h.deliveries(tenant, &all).await[0];
    assert_eq!(latest.status, DeliveryStatus::Failed);
    assert_eq!(
        latest.last_error.as_deref(),
        Some("the endpoint is disabled: not sent")
    );
    assert_eq!(h.receiver.received("/all").len(), 4);
    h.finish().await;
}

/// The billing engine's own events, through its outbox and the relay, reach the
/// tenant's endpoints.
async fn billing_events_end_to_end(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let tenant = TenantId::new();
    let all = h.endpoint(tenant, "/all", &[]).await;
    let invoices = h
        .endpoint(tenant, "/invoices", &["tenancy.billing.invoice.*"])
        .await;
    let mut observer = h.bus.subscribe(BILLING_TOPIC, "observer").await.unwrap();

    let (billing, _, _) = tenancy_billing::conformance::billing(h.backend.billing.clone());
    let plan = tenancy_billing::conformance::pro_plan(&billing, "Pro", "30", 0).await;
    tenancy_billing::conformance::customer(&billing, tenant, "0").await;
    billing
        .create_subscription(
            tenant,
            tenancy_billing::NewSubscription {
                plan_id: plan.id,
                quantity: 1,
                trial_days: None,
                billing_anchor_day: None,
                backdate_start_date: None,
            },
            None,
        )
        .await
        .unwrap();
    let relay = Relay::new(h.backend.outbox.clone(), h.bus.clone());
    while relay.relay_once().await.unwrap() > 0 {}
    let mut published = Vec::new();
    while let Some(d) = observer.next(StdDuration::from_millis(100)).await.unwrap() {
        published.push(d.into_event());
    }
    assert!(published.len() >= 3, "{published:?}");
    assert!(
        published
            .iter()
            .any(|e| e.event_type() == "tenancy.billing.subscription.created")
    );

    h.consume_all().await;
    h.dispatcher.send_due(h.now()).await.unwrap();
    let secret = all.secret.clone().unwrap();
    let received: Vec<Event> = h
        .receiver
        .received("/all")
        .iter()
        .map(|r| verified(r, &secret, h.now()))
        .collect();
    let ids = |events: &[Event]| events.iter().map(Event::id).collect::<HashSet<_>>();
    assert_eq!(received.len(), published.len());
    assert_eq!(ids(&received), ids(&published));
    let invoice_events: Vec<Event> = published
        .iter()
        .filter(|e| e.event_type().starts_with("tenancy.billing.invoice."))
        .cloned()
        .collect();
    assert!(!invoice_events.is_empty());
    let invoice_secret = invoices.secret.clone().unwrap();
    let got: Vec<Event> = h
        .receiver
        .received("/invoices")
        .iter()
        .map(|r| verified(r, &invoice_secret, h.now()))
        .collect();
    assert_eq!(ids(&got), ids(&invoice_events));
    h.finish().await;
}

/// `run` consumes and sends on its own until shutdown.
async fn run_until_shutdown(b: Backend) {
    let mut h = Harness::new(b, test_config()).await;
    let tenant = TenantId::new();
    let endpoint = h.endpoint(tenant, "/run", &[]).await;
    // The harness leaves the group: `run` joins it and gets every partition.
    h.subscription = None;
    let event = billing_event(tenant, "invoice.finalized");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = h.dispatcher.run(async {
        let _ = stopped.await;
    });
    let drive = async {
        h.publish(&event).await;
        loop {
            let delivered = h.deliveries(tenant, &endpoint).await;
            if delivered
                .first()
                .is_some_and(|d| d.status == DeliveryStatus::Succeeded)
            {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::time::timeout(StdDuration::from_secs(30), async {
        tokio::join!(run, drive)
    })
    .await
    .expect("delivered, and stopped on shutdown, in time");
    ran.unwrap();
    let received = h.receiver.received("/run");
    assert_eq!(received.len(), 1);
    assert_eq!(
        verified(&received[0], endpoint.secret.as_deref().unwrap(), h.now()),
        event
    );
    h.finish().await;
}

macro_rules! webhook_suite {
    ($($backend:ident),+) => {
        $(
            mod $backend {
                use super::*;

                macro_rules! store_test {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            conformance::$name(b.webhooks.clone()).await;
                            b.finish().await;
                        }
                    };
                }

                macro_rules! end_to_end {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            let Some(b) = super::$backend().await else { return };
                            super::$name(b).await;
                        }
                    };
                }

                store_test!(endpoint_crud);
                store_test!(tenant_isolation);
                store_test!(idempotent_enqueue);
                store_test!(attempts_and_schedule);
                store_test!(delete_removes_deliveries);
                end_to_end!(signed_delivery);
                end_to_end!(retries_with_backoff);
                end_to_end!(gives_up_after_schedule);
                end_to_end!(redelivered_event_once);
                end_to_end!(filters_and_disabled);
                end_to_end!(billing_events_end_to_end);
                end_to_end!(run_until_shutdown);
            }
        )+
    };
}

webhook_suite!(memory, sqlite, postgres);

// ---------------------------------------------------------------------------------
// The service and the backends' specifics.

/// Validation, secrets shown only on create and roll, rolled secrets overlapping,
/// version conflicts, the endpoint quota.
#[tokio::test]
async fn endpoint_management() {
    let clock = Arc::new(ManualClock::new(conformance::start()));
    let webhooks = Webhooks::new(Arc::new(MemoryWebhookStore::new()))
        .with_clock(clock.clone())
        .with_config(WebhookConfig {
            max_endpoints: 3,
            ..WebhookConfig::default()
        });
    let tenant = TenantId::new();
    for (url, field) in [
        ("http://hooks.example.com/x", "url"),
        ("https://127.0.0.1/x", "url"),
        ("https://localhost:8443/x", "url"),
        ("https://169.254.169.254/latest", "url"),
        ("not a url", "url"),
    ] {
        let err = webhooks
            .create_endpoint(tenant, NewWebhookEndpoint::new(url))
            .await
            .unwrap_err();
        assert_eq!(err.field(), Some(field), "{url}: {err}");
        assert!(err.to_string().contains('`'), "{err}");
    }
    let mut bad_types = NewWebhookEndpoint::new("https://hooks.example.com/x");
    bad_types.event_types = vec!["tenancy.usage.recorded".into()];
    let err = webhooks
        .create_endpoint(tenant, bad_types)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("event_types"));
    assert_eq!(
        err.to_string(),
        "invalid event_types: `tenancy.usage.recorded` is not `*` nor a billing event type \
         (`tenancy.billing.…`, optionally ending in `.*`)"
    );
    assert!(webhooks.list_endpoints(tenant).await.unwrap().is_empty());

    let mut input = NewWebhookEndpoint::new("https://hooks.example.com/billing");
    input.description = "accounting".into();
    let created = webhooks.create_endpoint(tenant, input).await.unwrap();
    let secret = created.secret.clone().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{secret}"
    );
    assert!(created.enabled);
    assert_eq!(created.version, 1);
    let read = webhooks.get_endpoint(tenant, created.id).await.unwrap();
    assert_eq!(read.secret, None);
    assert_eq!(read, created.clone().without_secrets());
    let json = serde_json::to_string(&read).unwrap();
    assert!(
        !json.contains("whsec_") && !json.contains("\"secret\""),
        "{json}"
    );
    assert!(
        webhooks
            .list_endpoints(tenant)
            .await
            .unwrap()
            .iter()
            .all(|e| e.secret.is_none())
    );

    // Update: version checked, secrets stay hidden and unchanged.
    clock.advance(Duration::minutes(1));
    let updated = webhooks
        .update_endpoint(
            tenant,
            created.id,
            WebhookEndpointChange {
                version: 1,
                url: Some("https://hooks.example.com/v2".into()),
                event_types: Some(vec!["tenancy.billing.invoice.*".into()]),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((updated.version, updated.secret.as_deref()), (2, None));
    assert_eq!(updated.updated_at, clock.now());
    let stale = webhooks
        .update_endpoint(
            tenant,
            created.id,
            WebhookEndpointChange {
                version: 1,
                enabled: Some(false),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    let bad_url = webhooks
        .update_endpoint(
            tenant,
            created.id,
            WebhookEndpointChange {
                version: 2,
                url: Some("ftp://x".into()),
                ..WebhookEndpointChange::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad_url.field(), Some("url"));
    let stored = webhooks
        .store()
        .get_endpoint(tenant, created.id)
        .await
        .unwrap();
    assert_eq!(stored.secret.as_deref(), Some(secret.as_str()));
    assert_eq!(stored.version, 2);

    // Roll with a day of overlap: both secrets sign until it ends.
    let rolled = webhooks
        .roll_secret(tenant, created.id, 2, Duration::days(1))
        .await
        .unwrap();
    let new_secret = rolled.secret.clone().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rolled.previous_secret, None);
    assert_eq!(
        rolled.previous_secret_expires_at,
        Some(clock.now() + Duration::days(1))
    );
    let stored = webhooks
        .store()
        .get_endpoint(tenant, created.id)
        .await
        .unwrap();
    assert_eq!(
        stored.signing_secrets(clock.now()),
        [new_secret.as_str(), secret.as_str()]
    );
    assert_eq!(
        stored.signing_secrets(clock.now() + Duration::days(1)),
        [new_secret.as_str()]
    );
    assert_eq!(
        webhooks
            .roll_secret(tenant, created.id, 3, Duration::days(8))
            .await
            .unwrap_err()
            .field(),
        Some("overlap")
    );
    let rolled_again = webhooks
        .roll_secret(tenant, created.id, 3, Duration::zero())
        .await
        .unwrap();
    let stored = webhooks
        .store()
        .get_endpoint(tenant, created.id)
        .await
        .unwrap();
    assert_eq!(
        stored.signing_secrets(clock.now()),
        [rolled_again.secret.as_deref().unwrap()]
    );

    // Another tenant sees nothing of it.
    let other = TenantId::new();
    assert_eq!(
        webhooks
            .get_endpoint(other, created.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        webhooks
            .roll_secret(other, created.id, 4, Duration::zero())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        webhooks
            .delete_endpoint(other, created.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        webhooks
            .list_deliveries(tenant, created.id, None, 0)
            .await
            .unwrap_err()
            .field(),
        Some("limit")
    );

    // The quota.
    for i in 0..2 {
        webhooks
            .create_endpoint(
                tenant,
                NewWebhookEndpoint::new(format!("https://h{i}.example.com")),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        webhooks
            .create_endpoint(tenant, NewWebhookEndpoint::new("https://h9.example.com"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::QuotaExceeded
    );
    webhooks.delete_endpoint(tenant, created.id).await.unwrap();
    assert_eq!(webhooks.list_endpoints(tenant).await.unwrap().len(), 2);
}

/// With private destinations refused (the default), an endpoint pointing at the
/// server's network that reached the store anyway is never called.
#[tokio::test]
async fn private_destinations_are_not_called() {
    let receiver = Receiver::start().await;
    let clock = Arc::new(ManualClock::new(conformance::start()));
    let store = Arc::new(MemoryWebhookStore::new());
    let webhooks = Webhooks::new(store.clone()).with_clock(clock.clone());
    let bus = Arc::new(InProcessBus::new());
    let dispatcher = WebhookDispatcher::new(webhooks.clone(), bus.clone(), test_config()).unwrap();
    let tenant = TenantId::new();
    // Written past the service's validation, e.g. before the setting changed.
    let endpoint = conformance::endpoint(tenant, &receiver.url("/internal"));
    store.create_endpoint(&endpoint).await.unwrap();
    let event = billing_event(tenant, "invoice.finalized");
    assert_eq!(webhooks.enqueue(&event).await.unwrap().len(), 1);
    let report = dispatcher.send_due(clock.now()).await.unwrap();
    assert_eq!(report.retrying, 1);
    assert!(receiver.received("/internal").is_empty());
    let [d] = &webhooks
        .list_deliveries(tenant, endpoint.id, None, 10)
        .await
        .unwrap()[..]
    else {
        panic!("one delivery expected")
    };
    let error = d.last_error.as_deref().unwrap();
    assert!(
        error.contains("must use https") || error.contains("public"),
        "{error}"
    );
}

#[tokio::test]
async fn dispatcher_settings_are_checked() {
    let webhooks = Webhooks::new(Arc::new(MemoryWebhookStore::new()));
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
    for (config, field) in [
        (
            DispatcherConfig {
                timeout: StdDuration::ZERO,
                ..DispatcherConfig::default()
            },
            "timeout",
        ),
        (
            DispatcherConfig {
                concurrency: 0,
                ..DispatcherConfig::default()
            },
            "concurrency",
        ),
        (
            DispatcherConfig {
                retry_schedule: vec![Duration::minutes(1); 21],
                ..DispatcherConfig::default()
            },
            "retry_schedule",
        ),
    ] {
        let err = WebhookDispatcher::new(webhooks.clone(), bus.clone(), config).unwrap_err();
        assert_eq!(err.field(), Some(field));
    }
}

/// Row-level security on the webhook tables: the application role sees no row
/// without the tenant setting, only its tenant's with it; the schedule holds ids and
/// times only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhook_rls() {
    let Some(b) = postgres().await else { return };
    let (a, other) = (TenantId::new(), TenantId::new());
    for t in [a, other] {
        let endpoint = conformance::endpoint(t, "https://hooks.example.com");
        b.webhooks.create_endpoint(&endpoint).await.unwrap();
        let event = conformance::event(t, "invoice.finalized");
        b.webhooks
            .enqueue_deliveries(t, &event, &[endpoint.id], conformance::start())
            .await
            .unwrap();
    }
    let raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(b.pg.as_ref().unwrap().app_options())
        .await
        .unwrap();
    for table in ["webhook_endpoints", "webhook_deliveries"] {
        let mut tx = crate::stores::rls_visibility(&raw, table, a, other).await;
        // Writing a row of another tenant is refused.
        let forged = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET doc = doc WHERE tenant_id = $1"
        )))
        .bind(other.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(forged, 0);
        tx.rollback().await.unwrap();
    }
    let scheduled: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_schedule")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(scheduled, 2, "the dispatcher's schedule spans tenants");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'webhook_schedule' ORDER BY column_name",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(columns, ["delivery_id", "due_at_us", "tenant_id"]);
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'webhook_deliveries'",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_ne!(owner, PgTestDatabase::APP_ROLE);
    raw.close().await;
    b.finish().await;
}
