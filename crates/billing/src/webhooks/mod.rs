//! Outgoing webhooks (feature `webhooks`): each tenant registers HTTPS endpoints, and
//! every billing event of that tenant ([`BILLING_TOPIC`]) is POSTed to each of its
//! enabled endpoints whose filter matches, signed like Stripe's webhooks, retried with
//! backoff, each delivery and every attempt recorded.
//!
//! - [`WebhookEndpoint`]: where a tenant wants its events, which ones
//!   ([`WebhookEndpoint::event_types`]) and the secret they are signed with (shown
//!   when the endpoint is created and when the secret is rolled, never when read).
//! - [`WebhookDelivery`]: one event on its way to one endpoint, with its attempts.
//! - [`WebhookStore`]: their storage ([`MemoryWebhookStore`], and SQLite and
//!   PostgreSQL in [`sql`]), with its conformance suite in `conformance`.
//! - [`Webhooks`]: endpoint management with validation, on any store.
//! - [`WebhookDispatcher`]: consumes [`BILLING_TOPIC`] as consumer group
//!   [`WEBHOOK_GROUP`], records one delivery per matching endpoint (idempotent on the
//!   event id, so a redelivered bus event is delivered once), and sends the due ones.
//!
//! A request to an endpoint is a `POST` of the event's CloudEvents JSON exactly as
//! published on the bus, with these headers:
//!
//! ```text
//! Content-Type: application/json
//! Tenancy-Signature: t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! Tenancy-Event-Id: 0190…
//! Tenancy-Event-Type: tenancy.billing.invoice.finalized
//! ```
//!
//! `Tenancy-Signature` is [`signature::sign`] of the raw body with the endpoint's
//! secret (while a rolled secret overlaps, one `v1` per secret), so any Stripe library
//! verifies it: `stripe.webhooks.constructEvent(body, header, secret)`. A `2xx` answer
//! is a success; anything else, a timeout or a connection error is retried after each
//! delay of [`DispatcherConfig::retry_schedule`] in turn, then the delivery fails.
//! Delivery is at least once (an answer lost before it is recorded is sent again):
//! receivers should skip an event id they have already processed. Deliveries of one
//! tenant are not ordered; each event carries its `time`.
//!
//! ```
//! use std::sync::Arc;
//! use tenancy_billing::webhooks::{MemoryWebhookStore, NewWebhookEndpoint, Webhooks};
//! use tenancy_core::TenantId;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenancy_core::Result<()> {
//! let webhooks = Webhooks::new(Arc::new(MemoryWebhookStore::new()));
//! let tenant = TenantId::new();
//! let mut input = NewWebhookEndpoint::new("https://example.com/hooks/billing");
//! input.event_types = vec!["tenancy.billing.invoice.*".into()];
//! let created = webhooks.create_endpoint(tenant, input).await?;
//! // Shown once: the tenant stores it to verify signatures.
//! assert!(created.secret.as_deref().is_some_and(|s| s.starts_with("whsec_")));
//! // Reading the endpoint again never shows it.
//! let read = webhooks.get_endpoint(tenant, created.id).await?;
//! assert_eq!(read.secret, None);
//! assert!(read.matches("tenancy.billing.invoice.finalized"));
//! assert!(!read.matches("tenancy.billing.subscription.created"));
//! # Ok(())
//! # }
//! ```
//!
//! [`BILLING_TOPIC`]: crate::store::BILLING_TOPIC
//! [`signature::sign`]: crate::signature::sign

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tenancy_core::clock::{Clock, SystemClock};
use tenancy_core::events::Event;
use tenancy_core::ids::EventId;
use tenancy_core::{Error, Result, TenantId};

use crate::ids::{WebhookDeliveryId, WebhookEndpointId};

#[cfg(feature = "conformance")]
pub mod conformance;
mod dispatcher;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;

pub use dispatcher::{DispatcherConfig, SendReport, WebhookDispatcher};
pub use memory::MemoryWebhookStore;

/// The consumer group the dispatcher reads [`crate::store::BILLING_TOPIC`] as.
pub const WEBHOOK_GROUP: &str = "tenancy-billing-webhooks";
/// The header carrying the signature (`t=…,v1=…`, see [`crate::signature`]).
pub const SIGNATURE_HEADER: &str = "Tenancy-Signature";
/// The header carrying the event id: receivers skip an id they have processed.
pub const EVENT_ID_HEADER: &str = "Tenancy-Event-Id";
/// The header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "Tenancy-Event-Type";
/// How every endpoint secret starts (as Stripe's), followed by 64 hex digits.
pub const SECRET_PREFIX: &str = "whsec_";
/// The prefix of every billing event type, and of every filter but `*`.
pub const EVENT_TYPE_PREFIX: &str = "tenancy.billing.";

/// The most deliveries one page lists.
pub const MAX_PAGE: u32 = 100;
/// The longest error text kept of an attempt, in characters.
pub const MAX_ERROR_LEN: usize = 500;
/// The longest endpoint URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// The longest endpoint description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// The most event type filters of one endpoint.
pub const MAX_EVENT_TYPES: usize = 64;
/// The longest overlap of an old secret with its successor after a roll.
pub const MAX_SECRET_OVERLAP: Duration = Duration::days(7);

/// Input echoed in an error message is cut to this many characters.
const MAX_ECHO: usize = 80;

/// A tenant's webhook endpoint.
///
/// `secret` and `previous_secret` are what the store keeps; [`Webhooks`] returns them
/// only from [`Webhooks::create_endpoint`] and [`Webhooks::roll_secret`] (the current
/// one), and `None` from every read, so a server shows a secret exactly once. Its
/// `Debug` output never shows them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Its id.
    pub id: WebhookEndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Where events are POSTed: `https://…` (plain `http` only to a loopback host, and
    /// only where [`WebhookConfig::allow_private_destinations`] is set).
    pub url: String,
    /// What the tenant calls it.
    pub description: String,
    /// Which events it receives: exact types (`tenancy.billing.invoice.finalized`),
    /// prefixes (`tenancy.billing.invoice.*`) or `*`; empty means every billing event.
    pub event_types: Vec<String>,
    /// The signing secret (`whsec_` and 64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The secret before the last roll, still signing (next to the new one) until
    /// `previous_secret_expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// Until when the previous secret signs as well.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Whether it receives events: a disabled endpoint gets no new deliveries, and its
    /// pending ones fail without being sent.
    pub enabled: bool,
    /// Optimistic concurrency: 1 when created, plus one per update.
    pub version: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &self.url)
            .field("description", &self.description)
            .field("event_types", &self.event_types)
            .field("secret", &redacted(&self.secret))
            .field("previous_secret", &redacted(&self.previous_secret))
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .field("enabled", &self.enabled)
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl WebhookEndpoint {
    /// Whether its filter lets events of `event_type` through.
    #[must_use]
    pub fn matches(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self.event_types.iter().any(|filter| {
                filter == "*"
                    || match filter.strip_suffix('*') {
                        Some(prefix) => event_type.starts_with(prefix),
                        None => filter == event_type,
                    }
            })
    }

    /// The secrets that sign a request made at `at`: the current one, then the
    /// previous one while it overlaps.
    #[must_use]
    pub fn signing_secrets(&self, at: DateTime<Utc>) -> Vec<&str> {
        let previous = match (&self.previous_secret, self.previous_secret_expires_at) {
            (Some(secret), Some(until)) if at < until => Some(secret.as_str()),
            _ => None,
        };
        self.secret.as_deref().into_iter().chain(previous).collect()
    }

    /// The same endpoint without its secrets, as reads return it.
    #[must_use]
    pub fn without_secrets(mut self) -> Self {
        self.secret = None;
        self.previous_secret = None;
        self
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: the next attempt is due at
    /// [`WebhookDelivery::next_attempt_at`].
    Pending,
    /// An attempt got a `2xx` answer.
    Succeeded,
    /// The last attempt the retry schedule allows failed (or the endpoint was
    /// disabled meanwhile).
    Failed,
}

impl DeliveryStatus {
    /// The name stored and shown.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    /// Which attempt it is: 1 for the first.
    pub number: u32,
    /// When it was made (the signature's timestamp).
    pub at: DateTime<Utc>,
    /// The HTTP status of the answer; `None` when none came (timeout, connection
    /// error) or nothing was sent.
    pub status_code: Option<u16>,
    /// Why it failed (at most [`MAX_ERROR_LEN`] characters); `None` on success.
    pub error: Option<String>,
    /// Whether the endpoint answered `2xx`.
    pub succeeded: bool,
}

/// One event on its way to one endpoint: created once per (endpoint, event id), then
/// changed by each attempt until it succeeds or fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Its id (time-ordered: later deliveries have greater ids).
    pub id: WebhookDeliveryId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The endpoint it goes to.
    pub endpoint_id: WebhookEndpointId,
    /// The event delivered (the receiver's idempotency key).
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due; `None` once it succeeded or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt's answer.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Every attempt, oldest first.
    pub history: Vec<WebhookAttempt>,
    /// The body sent: the event's CloudEvents JSON exactly as published on the bus.
    pub payload: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl WebhookDelivery {
    /// A new pending delivery of `event` to `endpoint`, due at `now` (for
    /// [`WebhookStore::enqueue_deliveries`] implementations).
    pub fn pending(
        tenant: TenantId,
        endpoint: WebhookEndpointId,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        tenant.check_scope(event.tenant_id())?;
        let payload = String::from_utf8(event.encode()?).map_err(|e| {
            Error::Internal(format!("event `{}` is not UTF-8 JSON: {e}", event.id()))
        })?;
        Ok(Self {
            id: WebhookDeliveryId::new(),
            tenant_id: tenant,
            endpoint_id: endpoint,
            event_id: event.id(),
            event_type: event.event_type().to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(now),
            last_status_code: None,
            last_error: None,
            history: Vec::new(),
            payload,
            created_at: now,
            updated_at: now,
        })
    }

    /// Applies `attempt` (for [`WebhookStore::record_attempt`] implementations, so
    /// every backend keeps the same contract): `Conflict` when the delivery is no
    /// longer pending or `attempt.number` is not `attempts + 1` (another dispatcher
    /// recorded it); `InvalidInput` for a successful attempt with a next one. The
    /// delivery succeeds, is retried at `next_attempt_at`, or fails when there is none.
    /// The error text is cut to [`MAX_ERROR_LEN`] characters.
    pub fn record(
        &mut self,
        attempt: &WebhookAttempt,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        if attempt.succeeded && next_attempt_at.is_some() {
            return Err(Error::invalid(
                "next_attempt_at",
                "a successful attempt has no next one",
            ));
        }
        if self.status != DeliveryStatus::Pending {
            return Err(Error::Conflict(format!(
                "delivery `{}` is {} already",
                self.id,
                self.status.as_str()
            )));
        }
        if self.attempts.checked_add(1) != Some(attempt.number) {
            return Err(Error::Conflict(format!(
                "delivery `{}` has had {} attempts, so this is not attempt {}",
                self.id, self.attempts, attempt.number
            )));
        }
        let attempt = WebhookAttempt {
            error: attempt.error.as_deref().map(|e| truncate(e, MAX_ERROR_LEN)),
            ..attempt.clone()
        };
        self.attempts = attempt.number;
        self.status = if attempt.succeeded {
            DeliveryStatus::Succeeded
        } else if next_attempt_at.is_some() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Failed
        };
        self.next_attempt_at = next_attempt_at;
        self.last_status_code = attempt.status_code;
        self.last_error.clone_from(&attempt.error);
        self.updated_at = attempt.at;
        self.history.push(attempt);
        Ok(())
    }
}

/// A pending delivery whose attempt is due, from [`WebhookStore::claim_due_deliveries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueDelivery {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The delivery.
    pub delivery_id: WebhookDeliveryId,
    /// When it was due.
    pub due_at: DateTime<Utc>,
}

/// Storage of webhook endpoints and deliveries.
///
/// Everything but the schedule is tenant data: each method names its tenant and never
/// sees, changes or counts another tenant's records (PostgreSQL enforces it with
/// row-level security as well); a record of another tenant is `NotFound`, like an
/// absent one. Each method is one transaction. A delivery's place in the schedule
/// ([`WebhookStore::claim_due_deliveries`]) is written in the transaction that writes
/// the delivery: exactly the pending deliveries are scheduled.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds an endpoint: `version` 1 and a `secret` (`InvalidInput` otherwise);
    /// `AlreadyExists` for an id the tenant has.
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()>;
    /// An endpoint of the tenant, with its secrets. `NotFound` when absent.
    async fn get_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint>;
    /// The tenant's endpoints, oldest first, with their secrets.
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>>;
    /// Replaces an endpoint whose stored version is `endpoint.version − 1` (else
    /// `Conflict`: someone changed it since it was read); `NotFound` when absent;
    /// `InvalidInput` without a `secret`.
    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()>;
    /// Deletes an endpoint with all its deliveries (pending ones are not sent).
    /// `NotFound` when absent.
    async fn delete_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<()>;

    /// Records a pending delivery of `event` (of `tenant`, else `InvalidInput`), due at
    /// `now`, to each of `endpoints` that has none of it yet, and returns those
    /// created. Idempotent on (endpoint, event id): an event enqueued again (a bus
    /// redelivery) creates nothing. Endpoints the tenant does not have (deleted
    /// meanwhile, or another tenant's) are skipped.
    async fn enqueue_deliveries(
        &self,
        tenant: TenantId,
        event: &Event,
        endpoints: &[WebhookEndpointId],
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookDelivery>>;
    /// A delivery of the tenant. `NotFound` when absent.
    async fn get_delivery(
        &self,
        tenant: TenantId,
        id: WebhookDeliveryId,
    ) -> Result<WebhookDelivery>;
    /// The deliveries to one endpoint of the tenant, newest first (by id), only those
    /// older than `before` when given, at most `limit`.
    async fn list_deliveries(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookDeliveryId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;
    /// Claims up to `limit` pending deliveries due at or before `now`, of every
    /// tenant, earliest first: each is rescheduled to `lease_until` in the same
    /// transaction, so concurrent dispatchers claim different ones, and one whose
    /// attempt is never recorded (a crash) comes due again then.
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>>;
    /// Records an attempt as [`WebhookDelivery::record`] does (`Conflict` for a
    /// delivery no longer pending or an attempt recorded already), schedules the next
    /// one at `next_attempt_at` or unschedules it, and returns the delivery.
    /// `NotFound` when absent.
    async fn record_attempt(
        &self,
        tenant: TenantId,
        id: WebhookDeliveryId,
        attempt: &WebhookAttempt,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<WebhookDelivery>;
}

/// What every store checks of an endpoint it writes: a secret, and the version
/// contract (a new one at 1, an update above 1).
pub(crate) fn check_stored_endpoint(endpoint: &WebhookEndpoint, new: bool) -> Result<()> {
    if endpoint.secret.as_deref().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "secret",
            "a stored endpoint needs its secret",
        ));
    }
    match (new, endpoint.version) {
        (true, 1) | (false, 2..) => Ok(()),
        (true, _) => Err(Error::invalid(
            "version",
            "a new endpoint starts at version 1",
        )),
        (false, _) => Err(Error::invalid(
            "version",
            "an updated endpoint has a version above 1",
        )),
    }
}

/// The settings of [`Webhooks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The most endpoints one tenant may have (16, as Stripe).
    pub max_endpoints: usize,
    /// Whether endpoints may point to loopback, private, link-local and other
    /// non-public addresses (and plain `http` to a loopback host): only for tests and
    /// closed networks. When unset (the default) such URLs are refused, and the
    /// dispatcher connects only to public addresses a name resolves to, so a tenant
    /// cannot make the server call its own network.
    pub allow_private_destinations: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_endpoints: 16,
            allow_private_destinations: false,
        }
    }
}

/// A new endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWebhookEndpoint {
    /// See [`WebhookEndpoint::url`].
    pub url: String,
    /// See [`WebhookEndpoint::description`].
    #[serde(default)]
    pub description: String,
    /// See [`WebhookEndpoint::event_types`].
    #[serde(default)]
    pub event_types: Vec<String>,
    /// See [`WebhookEndpoint::enabled`]; `true` when absent.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl NewWebhookEndpoint {
    /// An enabled endpoint at `url` receiving every billing event.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            description: String::new(),
            event_types: Vec::new(),
            enabled: true,
        }
    }
}

/// Changes to an endpoint: each field given replaces the stored one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointChange {
    /// The version the change was made against (`Conflict` when the stored one
    /// differs).
    pub version: u64,
    /// A new URL.
    #[serde(default)]
    pub url: Option<String>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// A new filter.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Enables or disables it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Webhook endpoint management with validation, on any [`WebhookStore`]. Cloning
/// shares the store and clock.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    clock: Arc<dyn Clock>,
    config: WebhookConfig,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Webhooks on `store`, the system clock and the default [`WebhookConfig`].
    #[must_use]
    pub fn new(store: Arc<dyn WebhookStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            config: WebhookConfig::default(),
        }
    }

    /// The same on another clock (tests, simulations).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same with `config`.
    #[must_use]
    pub fn with_config(mut self, config: WebhookConfig) -> Self {
        self.config = config;
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// The current time of its clock.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Creates an endpoint with a new secret and returns it with the secret (the
    /// only time it is shown besides [`Webhooks::roll_secret`]). `InvalidInput` naming
    /// the field for a bad URL, description or filter; `QuotaExceeded` when the tenant
    /// has [`WebhookConfig::max_endpoints`] already.
    pub async fn create_endpoint(
        &self,
        tenant: TenantId,
        input: NewWebhookEndpoint,
    ) -> Result<WebhookEndpoint> {
        let url = check_url(&input.url, self.config.allow_private_destinations)?;
        check_description(&input.description)?;
        let event_types = check_event_types(input.event_types)?;
        let existing = self.store.list_endpoints(tenant).await?.len();
        if existing >= self.config.max_endpoints {
            return Err(Error::QuotaExceeded(format!(
                "a tenant has at most {} webhook endpoints",
                self.config.max_endpoints
            )));
        }
        let now = self.now();
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::new(),
            tenant_id: tenant,
            url: url.into(),
            description: input.description,
            event_types,
            secret: Some(new_secret()?),
            previous_secret: None,
            previous_secret_expires_at: None,
            enabled: input.enabled,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.store.create_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    /// An endpoint, without its secrets. `NotFound` when absent.
    pub async fn get_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint> {
        Ok(self.store.get_endpoint(tenant, id).await?.without_secrets())
    }

    /// The tenant's endpoints, oldest first, without their secrets.
    pub async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>> {
        Ok(self
            .store
            .list_endpoints(tenant)
            .await?
            .into_iter()
            .map(WebhookEndpoint::without_secrets)
            .collect())
    }

    /// Applies `change` and returns the endpoint (without its secrets). `Conflict`
    /// when `change.version` is not the stored version, `NotFound` when absent,
    /// `InvalidInput` as for [`Webhooks::create_endpoint`].
    pub async fn update_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
        change: WebhookEndpointChange,
    ) -> Result<WebhookEndpoint> {
        let mut endpoint = self.current(tenant, id, change.version).await?;
        if let Some(url) = change.url {
            endpoint.url = check_url(&url, self.config.allow_private_destinations)?.into();
        }
        if let Some(description) = change.description {
            check_description(&description)?;
            endpoint.description = description;
        }
        if let Some(event_types) = change.event_types {
            endpoint.event_types = check_event_types(event_types)?;
        }
        if let Some(enabled) = change.enabled {
            endpoint.enabled = enabled;
        }
        let endpoint = self.save(endpoint).await?;
        Ok(endpoint.without_secrets())
    }

    /// Replaces the endpoint's secret with a new one and returns the endpoint with it
    /// (shown this once). Requests keep being signed with the old secret as well for
    /// `overlap` (at most [`MAX_SECRET_OVERLAP`]; zero ends it at once), so receivers
    /// can switch without refusing any. `Conflict` when `version` is not the stored
    /// version, `NotFound` when absent.
    pub async fn roll_secret(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
        version: u64,
        overlap: Duration,
    ) -> Result<WebhookEndpoint> {
        if overlap < Duration::zero() || overlap > MAX_SECRET_OVERLAP {
            return Err(Error::invalid(
                "overlap",
                format!(
                    "must be between 0 and {} hours",
                    MAX_SECRET_OVERLAP.num_hours()
                ),
            ));
        }
        let mut endpoint = self.current(tenant, id, version).await?;
        let now = self.now();
        let old = endpoint.secret.replace(new_secret()?);
        if overlap > Duration::zero() {
            endpoint.previous_secret = old;
            endpoint.previous_secret_expires_at = Some(now + overlap);
        } else {
            endpoint.previous_secret = None;
            endpoint.previous_secret_expires_at = None;
        }
        let mut endpoint = self.save(endpoint).await?;
        endpoint.previous_secret = None;
        Ok(endpoint)
    }

    /// Deletes an endpoint and its deliveries. `NotFound` when absent.
    pub async fn delete_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<()> {
        self.store.delete_endpoint(tenant, id).await
    }

    /// A delivery. `NotFound` when absent.
    pub async fn get_delivery(
        &self,
        tenant: TenantId,
        id: WebhookDeliveryId,
    ) -> Result<WebhookDelivery> {
        self.store.get_delivery(tenant, id).await
    }

    /// The deliveries to an endpoint, newest first, older than `before` when given,
    /// at most `limit` (1 to [`MAX_PAGE`]). `NotFound` for an absent endpoint.
    pub async fn list_deliveries(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpointId,
        before: Option<WebhookDeliveryId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        self.store.get_endpoint(tenant, endpoint).await?;
        self.store
            .list_deliveries(tenant, endpoint, before, limit)
            .await
    }

    /// Records a delivery of `event` to each enabled endpoint of its tenant whose
    /// filter matches, due now; returns those created (none for an event enqueued
    /// before).
    pub async fn enqueue(&self, event: &Event) -> Result<Vec<WebhookDelivery>> {
        let endpoints = self.store.list_endpoints(event.tenant_id()).await?;
        self.enqueue_to(event, &endpoints).await
    }

    /// [`Webhooks::enqueue`] with the tenant's endpoints already read.
    pub(crate) async fn enqueue_to(
        &self,
        event: &Event,
        endpoints: &[WebhookEndpoint],
    ) -> Result<Vec<WebhookDelivery>> {
        let targets: Vec<WebhookEndpointId> = endpoints
            .iter()
            .filter(|e| e.enabled && e.matches(event.event_type()))
            .map(|e| e.id)
            .collect();
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        self.store
            .enqueue_deliveries(event.tenant_id(), event, &targets, self.now())
            .await
    }

    /// The stored endpoint if its version is `version`.
    async fn current(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
        version: u64,
    ) -> Result<WebhookEndpoint> {
        let endpoint = self.store.get_endpoint(tenant, id).await?;
        if endpoint.version != version {
            return Err(Error::Conflict(format!(
                "webhook endpoint `{id}` is at version {}, not {version}; read it again",
                endpoint.version
            )));
        }
        Ok(endpoint)
    }

    /// Stores the next version of `endpoint`.
    async fn save(&self, mut endpoint: WebhookEndpoint) -> Result<WebhookEndpoint> {
        endpoint.version = endpoint
            .version
            .checked_add(1)
            .ok_or_else(|| Error::Internal("endpoint version overflow".into()))?;
        endpoint.updated_at = self.now();
        self.store.update_endpoint(&endpoint).await?;
        Ok(endpoint)
    }
}

/// A new secret: [`SECRET_PREFIX`] and 32 random bytes in hex.
fn new_secret() -> Result<String> {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::Internal("the random generator failed".into()))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        crate::signature::lower_hex(&bytes)
    ))
}

/// `s` cut to at most `max` characters.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s.get(..end).unwrap_or(s).to_owned(),
        None => s.to_owned(),
    }
}

/// User input for an error message: cut short, control characters escaped.
fn echo(s: &str) -> String {
    let cut = truncate(s, MAX_ECHO);
    let ellipsis = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{ellipsis}", cut.escape_debug())
}

/// A host's address when it is an IP literal (IPv6 in brackets, as in URLs).
fn host_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Whether `host` (of a URL) names this machine.
fn is_loopback_host(host: &str) -> bool {
    match host_ip(host) {
        Some(ip) => ip.is_loopback() || ip.to_canonical().is_loopback(),
        None => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local,
/// shared (CGNAT), multicast, documentation, benchmarking, reserved or unspecified,
/// nor an IPv6 form (mapped, compatible, NAT64, unique local, site-local) of one.
pub(crate) fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let [s0, s1, s2, s3, s4, s5, s6, s7] = v6.segments();
            let embedded = || {
                let [h0, h1] = s6.to_be_bytes();
                let [l0, l1] = s7.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(h0, h1, l0, l1))
            };
            let compatible = [s0, s1, s2, s3, s4, s5] == [0; 6];
            let nat64 = [s0, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0];
            if (compatible || nat64) && !v6.is_unspecified() && !v6.is_loopback() {
                return is_public_ip(embedded());
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || (s0 & 0xffc0) == 0xfec0
                || (s0 == 0x2001 && s1 == 0x0db8)
                || (s0 == 0x0100 && s1 == 0 && s2 == 0 && s3 == 0))
        }
    }
}

/// Checks an endpoint URL (see [`WebhookEndpoint::url`] and
/// [`WebhookConfig::allow_private_destinations`]); `InvalidInput` on field `url`.
pub(crate) fn check_url(raw: &str, allow_private: bool) -> Result<Url> {
    let invalid = |reason: &str| Error::invalid("url", format!("`{}` {reason}", echo(raw)));
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(&format!("is longer than {MAX_URL_LEN} bytes")));
    }
    let url = Url::parse(raw).map_err(|e| invalid(&format!("is not an absolute URL: {e}")))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid("has no host"));
    };
    let loopback = is_loopback_host(host);
    match url.scheme() {
        "https" => {}
        "http" if loopback && allow_private => {}
        _ => return Err(invalid("must use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not hold credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment"));
    }
    if !allow_private {
        let private = loopback || host_ip(host).is_some_and(|ip| !is_public_ip(ip));
        if private {
            return Err(invalid("is not a public address"));
        }
    }
    Ok(url)
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(Error::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters long"),
        ));
    }
    if description.chars().any(char::is_control) {
        return Err(Error::invalid(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a filter: `*`, or `tenancy.billing.` and dot-separated words of lowercase
/// letters, digits and `_`, the last of which may be `*`. Duplicates are dropped.
fn check_event_types(types: Vec<String>) -> Result<Vec<String>> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(Error::invalid(
            "event_types",
            format!("must hold at most {MAX_EVENT_TYPES} types"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(types.len());
    for filter in types {
        let valid = filter == "*"
            || filter.strip_prefix(EVENT_TYPE_PREFIX).is_some_and(|rest| {
                let words: Vec<&str> = rest.split('.').collect();
                let last = words.len().saturating_sub(1);
                words.iter().enumerate().all(|(i, word)| {
                    (i == last && *word == "*")
                        || (!word.is_empty()
                            && word
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
                })
            });
        if !valid {
            return Err(Error::invalid(
                "event_types",
                format!(
                    "`{}` is not `*` nor a billing event type (`{EVENT_TYPE_PREFIX}…`, \
                     optionally ending in `.*`)",
                    echo(&filter)
                ),
            ));
        }
        if seen.insert(filter.clone()) {
            out.push(filter);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn public_addresses() {
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public_ip(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public_ip(private.parse().unwrap()), "{private}");
        }
        assert!(!is_public_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_public_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn urls() {
        assert!(check_url("https://hooks.example.com/billing?x=1", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_url("http://[::1]:8080/hook", true).is_ok());
        assert!(check_url("http://localhost/hook", true).is_ok());
        for (bad, allow) in [
            ("http://hooks.example.com/", false),
            ("http://hooks.example.com/", true),
            ("ftp://hooks.example.com/", true),
            ("hooks.example.com/x", true),
            ("https://user:pw@hooks.example.com/", true),
            ("https://hooks.example.com/#frag", true),
            ("https://127.0.0.1/", false),
            ("http://127.0.0.1/", false),
            ("https://localhost/", false),
            ("https://app.localhost./", false),
            ("https://10.0.0.8/", false),
            ("https://[fd00::1]/", false),
            ("https://169.254.169.254/latest/meta-data", false),
        ] {
            let err = check_url(bad, allow).unwrap_err();
            assert_eq!(err.field(), Some("url"), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let message = check_url(&long, false).unwrap_err().to_string();
        assert!(message.contains('…') && message.len() < 200, "{message}");
    }

    #[test]
    fn event_type_filters() {
        let ok = check_event_types(vec![
            "*".into(),
            "tenancy.billing.invoice.finalized".into(),
            "tenancy.billing.invoice.*".into(),
            "tenancy.billing.*".into(),
            "tenancy.billing.invoice.*".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 4);
        for bad in [
            "",
            "**",
            "tenancy.usage.recorded",
            "tenancy.billing.",
            "tenancy.billing.Invoice",
            "tenancy.billing.*.paid",
            "tenancy.billing.invoice..paid",
            "tenancy.billing.invoice paid",
        ] {
            let err = check_event_types(vec![bad.into()]).unwrap_err();
            assert_eq!(err.field(), Some("event_types"), "{bad}");
        }
    }

    #[test]
    fn filters_match() {
        let now = Utc::now();
        let mut endpoint = WebhookEndpoint {
            id: WebhookEndpointId::new(),
            tenant_id: TenantId::new(),
            url: "https://example.com".into(),
            description: String::new(),
            event_types: Vec::new(),
            secret: Some("whsec_a".into()),
            previous_secret: Some("whsec_b".into()),
            previous_secret_expires_at: Some(now + Duration::hours(1)),
            enabled: true,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        assert!(endpoint.matches("tenancy.billing.invoice.paid"));
        endpoint.event_types = vec!["tenancy.billing.invoice.*".into()];
        assert!(endpoint.matches("tenancy.billing.invoice.paid"));
        assert!(!endpoint.matches("tenancy.billing.invoicex"));
        assert!(!endpoint.matches("tenancy.billing.subscription.created"));
        assert_eq!(endpoint.signing_secrets(now), ["whsec_a", "whsec_b"]);
        assert_eq!(
            endpoint.signing_secrets(now + Duration::hours(1)),
            ["whsec_a"]
        );
        let debug = format!("{endpoint:?}");
        assert!(!debug.contains("whsec_"), "{debug}");
        assert_eq!(
            endpoint.without_secrets().signing_secrets(now),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn secrets_and_truncation() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 64);
        assert_ne!(secret, new_secret().unwrap());
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hé", 5), "hé");
    }
}
