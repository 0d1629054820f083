//! [`WebhookDispatcher`]: from the bus to deliveries, and from due deliveries to HTTP
//! requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tenancy_core::events::{Delivery, EventBus, Subscription};
use tenancy_core::{Error, ErrorKind, Result, TenantId};
use tokio::sync::watch;

use super::{
    DueDelivery, EVENT_ID_HEADER, EVENT_TYPE_HEADER, MAX_ERROR_LEN, SIGNATURE_HEADER,
    WEBHOOK_GROUP, WebhookAttempt, WebhookDelivery, WebhookEndpoint, Webhooks, check_url,
    is_public_ip, truncate,
};
use crate::signature;
use crate::store::BILLING_TOPIC;

/// The most retries a schedule may hold.
const MAX_RETRIES: usize = 20;
/// The first wait after a failure of the bus or the store.
const FIRST_BACKOFF: StdDuration = StdDuration::from_millis(100);

/// The settings of a [`WebhookDispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// How long a request may take, connecting included, before it counts as failed.
    pub timeout: StdDuration,
    /// The waits before each retry after a failed attempt: the delivery fails after
    /// the attempt that follows the last one (at most 20).
    pub retry_schedule: Vec<Duration>,
    /// The most deliveries one pass of [`WebhookDispatcher::send_due`] claims.
    pub batch_size: u32,
    /// How many requests one pass makes at once.
    pub concurrency: usize,
    /// How long a claimed delivery is held before another pass may claim it again (its
    /// attempt was not recorded: a crash). At least `timeout` times the number of
    /// rounds of a pass (`batch_size / concurrency`, rounded up).
    pub lease: Duration,
    /// How long [`WebhookDispatcher::run`] waits between passes that found little due.
    pub idle: StdDuration,
    /// The most bus events handled per batch.
    pub event_batch: usize,
    /// How long [`WebhookDispatcher::run`] waits for bus events per poll.
    pub poll_timeout: StdDuration,
    /// The longest wait between retries of a failing bus or store.
    pub max_backoff: StdDuration,
}

impl Default for DispatcherConfig {
    /// A 10 s timeout; retries after 1 min, 5 min, 30 min, 2 h and 8 h (six attempts
    /// over about 10.5 hours); passes of 32 deliveries, 8 at once, leased for 5
    /// minutes, every second when idle; bus batches of 100 events.
    fn default() -> Self {
        Self {
            timeout: StdDuration::from_secs(10),
            retry_schedule: vec![
                Duration::minutes(1),
                Duration::minutes(5),
                Duration::minutes(30),
                Duration::hours(2),
                Duration::hours(8),
            ],
            batch_size: 32,
            concurrency: 8,
            lease: Duration::minutes(5),
            idle: StdDuration::from_secs(1),
            event_batch: 100,
            poll_timeout: StdDuration::from_secs(1),
            max_backoff: StdDuration::from_secs(30),
        }
    }
}

impl DispatcherConfig {
    /// `InvalidInput` naming the setting that is out of range.
    fn check(&self) -> Result<()> {
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be above zero"));
        }
        if self.retry_schedule.len() > MAX_RETRIES {
            return Err(Error::invalid(
                "retry_schedule",
                format!("must hold at most {MAX_RETRIES} delays"),
            ));
        }
        if self.retry_schedule.iter().any(|d| *d <= Duration::zero()) {
            return Err(Error::invalid(
                "retry_schedule",
                "every delay must be above zero",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        if self.event_batch == 0 {
            return Err(Error::invalid("event_batch", "must be at least 1"));
        }
        let rounds = usize::try_from(self.batch_size)
            .unwrap_or(usize::MAX)
            .div_ceil(self.concurrency);
        let pass = Duration::from_std(
            self.timeout
                .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX)),
        )
        .unwrap_or(Duration::MAX);
        if self.lease < pass {
            return Err(Error::invalid(
                "lease",
                format!(
                    "must be at least {} seconds: the timeout times the rounds of a pass",
                    pass.num_seconds()
                ),
            ));
        }
        Ok(())
    }
}

/// What one pass of [`WebhookDispatcher::send_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Deliveries claimed.
    pub claimed: usize,
    /// Attempts answered `2xx`.
    pub succeeded: usize,
    /// Failed attempts with a retry scheduled.
    pub retrying: usize,
    /// Failed attempts after which the delivery failed.
    pub failed: usize,
    /// Claimed deliveries with nothing to do (deleted, or recorded by another
    /// dispatcher meanwhile).
    pub skipped: usize,
    /// Deliveries whose attempt could not be recorded (they come due again when
    /// their lease ends).
    pub errors: usize,
}

enum Outcome {
    Succeeded,
    Retrying,
    Failed,
    Skipped,
}

/// Delivers billing events to tenants' webhook endpoints: [`WebhookDispatcher::run`]
/// consumes [`BILLING_TOPIC`] as consumer group [`WEBHOOK_GROUP`] and records a
/// delivery per matching endpoint (acknowledging the events only once committed), and
/// meanwhile sends due deliveries pass after pass ([`WebhookDispatcher::send_due`]).
/// Any number of dispatchers may run on one store: the group shares the events, and
/// each delivery is claimed by one pass at a time.
pub struct WebhookDispatcher {
    webhooks: Webhooks,
    bus: Arc<dyn EventBus>,
    config: DispatcherConfig,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDispatcher")
            .field("webhooks", &self.webhooks)
            .field("bus", &self.bus)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebhookDispatcher {
    /// A dispatcher of `webhooks`' endpoints fed by `bus`. Its HTTP client follows no
    /// redirect, uses no proxy, and, unless
    /// [`super::WebhookConfig::allow_private_destinations`], connects only to public
    /// addresses. `InvalidInput` naming a setting of `config` out of range.
    pub fn new(
        webhooks: Webhooks,
        bus: Arc<dyn EventBus>,
        config: DispatcherConfig,
    ) -> Result<Self> {
        config.check()?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("tenancy-webhooks/", env!("CARGO_PKG_VERSION")));
        if !webhooks.config().allow_private_destinations {
            builder = builder.dns_resolver(PublicResolver);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Internal(format!("cannot build an http client: {e}")))?;
        Ok(Self {
            webhooks,
            bus,
            config,
            client,
        })
    }

    /// Joins consumer group [`WEBHOOK_GROUP`] of [`BILLING_TOPIC`] (for driving the
    /// dispatcher step by step with [`WebhookDispatcher::consume`]).
    pub async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        self.bus.subscribe(BILLING_TOPIC, WEBHOOK_GROUP).await
    }

    /// Takes one batch of events from `subscription` (waiting at most `timeout` for
    /// the first), records their deliveries, then acknowledges them; returns how many
    /// events it took. On error nothing is acknowledged: the events come again.
    pub async fn consume(
        &self,
        subscription: &mut dyn Subscription,
        timeout: StdDuration,
    ) -> Result<usize> {
        let deliveries = subscription
            .next_batch(self.config.event_batch, timeout)
            .await?;
        if deliveries.is_empty() {
            return Ok(0);
        }
        self.enqueue_all(&deliveries).await?;
        subscription.ack_batch(&deliveries).await?;
        Ok(deliveries.len())
    }

    /// One pass: claims the deliveries due at `now` (up to
    /// [`DispatcherConfig::batch_size`]) and makes an attempt of each, up to
    /// [`DispatcherConfig::concurrency`] at once, recording every attempt. Each
    /// attempt is stamped (signature timestamp, record, next attempt) with the clock's
    /// time when it is made. An error is returned only when claiming fails; an
    /// attempt that cannot be recorded is counted in [`SendReport::errors`].
    pub async fn send_due(&self, now: DateTime<Utc>) -> Result<SendReport> {
        let lease_until = now + self.config.lease;
        let due = self
            .webhooks
            .store()
            .claim_due_deliveries(now, lease_until, self.config.batch_size)
            .await?;
        let mut report = SendReport {
            claimed: due.len(),
            ..SendReport::default()
        };
        let mut attempts = futures_util::stream::iter(due)
            .map(|due| async move { (due, self.attempt(due).await) })
            .buffer_unordered(self.config.concurrency);
        while let Some((due, outcome)) = attempts.next().await {
            match outcome {
                Ok(Outcome::Succeeded) => report.succeeded += 1,
                Ok(Outcome::Retrying) => report.retrying += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Ok(Outcome::Skipped) => report.skipped += 1,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(
                        %error,
                        tenant = %due.tenant_id,
                        delivery = %due.delivery_id,
                        "recording a webhook attempt failed: it comes due again after its lease"
                    );
                }
            }
        }
        Ok(report)
    }

    /// Subscribes, then until `shutdown` completes both consumes bus events (as
    /// [`WebhookDispatcher::consume`]) and sends due deliveries (as
    /// [`WebhookDispatcher::send_due`] at the clock's time, again at once after a full
    /// pass, else after [`DispatcherConfig::idle`]). Failures of the bus or the store
    /// are logged and retried with backoff, never returned; a batch of events is
    /// acknowledged only after its deliveries are committed. On shutdown the pass in
    /// progress finishes (bounded by the timeout). Errors: those of
    /// [`EventBus::subscribe`].
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut subscription = self.subscribe().await?;
        tracing::info!(
            topic = BILLING_TOPIC,
            group = WEBHOOK_GROUP,
            "webhook dispatcher started"
        );
        let (stop, stopped) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(
            self.consume_loop(&mut *subscription, stopped.clone()),
            self.send_loop(stopped),
            signal,
        );
        tracing::info!(group = WEBHOOK_GROUP, "webhook dispatcher stopped");
        Ok(())
    }

    async fn consume_loop(
        &self,
        subscription: &mut dyn Subscription,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            let polled = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                polled = subscription.next_batch(self.config.event_batch, self.config.poll_timeout) => polled,
            };
            let deliveries = match polled {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    tracing::warn!(%error, "receiving billing events failed: retrying");
                    if !backoff.wait(&mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Backoff::new(self.config.max_backoff);
            if deliveries.is_empty() {
                continue;
            }
            while let Err(error) = self.enqueue_all(&deliveries).await {
                tracing::warn!(%error, events = deliveries.len(), "recording webhook deliveries failed: retrying");
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
            while let Err(error) = subscription.ack_batch(&deliveries).await {
                tracing::warn!(%error, "acknowledging billing events failed: retrying");
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
            backoff = Backoff::new(self.config.max_backoff);
        }
    }

    async fn send_loop(&self, mut stop: watch::Receiver<bool>) {
        let full = usize::try_from(self.config.batch_size).unwrap_or(usize::MAX);
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.send_due(self.webhooks.now()).await {
                Ok(report) if report.claimed >= full => StdDuration::ZERO,
                Ok(_) => self.config.idle,
                Err(error) => {
                    tracing::warn!(%error, "claiming due webhook deliveries failed");
                    self.config.idle
                }
            };
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Records the deliveries of a batch of bus events, reading each tenant's
    /// endpoints once.
    async fn enqueue_all(&self, deliveries: &[Delivery]) -> Result<()> {
        let mut endpoints: HashMap<TenantId, Vec<WebhookEndpoint>> = HashMap::new();
        for delivery in deliveries {
            let event = delivery.event();
            let tenant = event.tenant_id();
            let of_tenant = match endpoints.get(&tenant) {
                Some(list) => list,
                None => {
                    let list = self.webhooks.store().list_endpoints(tenant).await?;
                    endpoints.entry(tenant).or_insert(list)
                }
            };
            let created = self.webhooks.enqueue_to(event, of_tenant).await?;
            if !created.is_empty() {
                tracing::debug!(
                    tenant = %tenant,
                    event = %event.id(),
                    deliveries = created.len(),
                    "webhook deliveries recorded"
                );
            }
        }
        Ok(())
    }

    /// One attempt of a claimed delivery.
    async fn attempt(&self, due: DueDelivery) -> Result<Outcome> {
        let store = self.webhooks.store();
        let delivery = match store.get_delivery(due.tenant_id, due.delivery_id).await {
            Ok(d) if d.status == super::DeliveryStatus::Pending => d,
            Ok(_) => return Ok(Outcome::Skipped),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Skipped),
            Err(e) => return Err(e),
        };
        let endpoint = match store
            .get_endpoint(due.tenant_id, delivery.endpoint_id)
            .await
        {
            Ok(endpoint) => Some(endpoint),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let at = self.webhooks.now();
        let number = delivery.attempts.saturating_add(1);
        let (status_code, error, retry) = match &endpoint {
            None => (None, Some("the endpoint was deleted".to_owned()), false),
            Some(e) if !e.enabled => (
                None,
                Some("the endpoint is disabled: not sent".to_owned()),
                false,
            ),
            Some(endpoint) => match self.post(endpoint, &delivery, at).await {
                Ok(code) if (200..300).contains(&code) => (Some(code), None, false),
                Ok(code) => (
                    Some(code),
                    Some(format!("the endpoint answered {code}")),
                    true,
                ),
                Err(error) => (None, Some(error), true),
            },
        };
        let succeeded = status_code.is_some_and(|c| (200..300).contains(&c));
        let next = if retry {
            usize::try_from(delivery.attempts)
                .ok()
                .and_then(|i| self.config.retry_schedule.get(i))
                .map(|delay| at + *delay)
        } else {
            None
        };
        let attempt = WebhookAttempt {
            number,
            at,
            status_code,
            error,
            succeeded,
        };
        match store
            .record_attempt(due.tenant_id, due.delivery_id, &attempt, next)
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                tracing::debug!(error = %e, delivery = %due.delivery_id, "webhook attempt not recorded");
                return Ok(Outcome::Skipped);
            }
            Err(e) => return Err(e),
        }
        if succeeded {
            return Ok(Outcome::Succeeded);
        }
        let error = attempt.error.as_deref().unwrap_or_default();
        if next.is_some() {
            tracing::info!(
                tenant = %due.tenant_id,
                delivery = %due.delivery_id,
                attempt = number,
                error,
                "webhook attempt failed: retrying"
            );
            Ok(Outcome::Retrying)
        } else {
            tracing::warn!(
                tenant = %due.tenant_id,
                delivery = %due.delivery_id,
                attempt = number,
                error,
                "webhook delivery failed"
            );
            Ok(Outcome::Failed)
        }
    }

    /// POSTs the delivery's payload, signed at `at`: the answer's status, or why none
    /// came.
    async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
        at: DateTime<Utc>,
    ) -> Result<u16, String> {
        let url = check_url(
            &endpoint.url,
            self.webhooks.config().allow_private_destinations,
        )
        .map_err(|e| e.to_string())?;
        let header = signature_header(
            &endpoint.signing_secrets(at),
            at.timestamp(),
            delivery.payload.as_bytes(),
        )
        .ok_or_else(|| "the endpoint has no secret".to_owned())?;
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, header)
            .header(EVENT_ID_HEADER, delivery.event_id.to_string())
            .header(EVENT_TYPE_HEADER, delivery.event_type.as_str())
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) if e.is_timeout() => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
            Err(e) => Err(truncate(&error_chain(&e.without_url()), MAX_ERROR_LEN)),
        }
    }
}

/// The signature header of `body` at `timestamp`: `t=…` and one `v1=…` per secret.
fn signature_header(secrets: &[&str], timestamp: i64, body: &[u8]) -> Option<String> {
    let (first, rest) = secrets.split_first()?;
    let mut header = signature::sign(first, timestamp, body);
    for secret in rest {
        let signed = signature::sign(secret, timestamp, body);
        if let Some((_, v1)) = signed.split_once(',') {
            header.push(',');
            header.push_str(v1);
        }
    }
    Some(header)
}

/// An error and its sources, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Completes once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Bounded exponential waits, cut short by shutdown.
struct Backoff {
    next: StdDuration,
    max: StdDuration,
}

impl Backoff {
    fn new(max: StdDuration) -> Self {
        Self {
            next: FIRST_BACKOFF.min(max),
            max,
        }
    }

    /// Waits the next delay: `false` if shutdown came first.
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        tokio::select! {
            biased;
            () = stopped(stop) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Resolves names with the system resolver and keeps only public addresses, so a
/// name pointing into the server's network is refused (checked on every connection,
/// whatever the name resolved to when the endpoint was saved).
struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("`{host}` resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        }) as Pin<Box<_>>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_refuses_private_names() {
        let name: Name = "localhost".parse().unwrap();
        let Err(error) = PublicResolver.resolve(name).await else {
            panic!("localhost resolved to a public address");
        };
        assert!(error.to_string().contains("no public address"), "{error}");
    }

    #[test]
    fn headers_sign_with_every_secret() {
        let body = br#"{"id":"1"}"#;
        let header = signature_header(&["whsec_new", "whsec_old"], 1_700_000_000, body).unwrap();
        assert_eq!(header.matches("v1=").count(), 2);
        for secret in ["whsec_new", "whsec_old"] {
            assert_eq!(
                signature::verify(
                    &header,
                    body,
                    &[secret],
                    1_700_000_000,
                    signature::DEFAULT_TOLERANCE
                ),
                Ok(1_700_000_000)
            );
        }
        assert_eq!(signature_header(&[], 1, body), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(DispatcherConfig::default().check().is_ok());
        let short_lease = DispatcherConfig {
            lease: Duration::seconds(5),
            ..DispatcherConfig::default()
        };
        assert_eq!(short_lease.check().unwrap_err().field(), Some("lease"));
        let negative = DispatcherConfig {
            retry_schedule: vec![Duration::zero()],
            ..DispatcherConfig::default()
        };
        assert_eq!(
            negative.check().unwrap_err().field(),
            Some("retry_schedule")
        );
    }
}
