//! Payment providers: where an invoice's money is collected.
//!
//! A [`PaymentProvider`] keeps a customer per tenant, a default payment method per
//! customer, and charges and refunds amounts for invoices. Billing holds it as
//! `Arc<dyn PaymentProvider>` and never learns which provider it talks to. Two ship
//! here: [`ManualProvider`] (an operator collects the money, e.g. by bank transfer,
//! and marks the invoice paid) and, with feature `stripe`, `stripe::StripeProvider`.
//!
//! # The contract
//!
//! - **Outcomes, not errors, for the payer's side.** A charge the provider refuses for
//!   a reason of the payer (card declined, insufficient funds, no payment method) is
//!   `Ok(`[`ChargeOutcome::Failed`]`)`, with the provider's reason and code for
//!   dunning; one that waits for the payer or an operator (3-D Secure, a transfer) is
//!   `Ok(`[`ChargeOutcome::Pending`]`)` and settles later (webhook or operator).
//! - **Errors for everything else**, by kind: `Unavailable` when the provider cannot be
//!   reached or fails (network, timeout, 5xx, rate limit): the outcome is unknown and
//!   the caller retries **with the same idempotency key**; `InvalidInput` for a request
//!   that fails validation here (nothing was sent); `NotFound` for a customer, payment
//!   method or payment the provider does not know; `Conflict` when an idempotency key
//!   is reused with different parameters (or concurrently); `Unauthenticated` /
//!   `PermissionDenied` when the provider refuses our credentials; `Internal` when the
//!   provider refuses a request as malformed (a bug of ours).
//! - **Idempotency.** [`charge`](PaymentProvider::charge) and
//!   [`refund`](PaymentProvider::refund) carry an idempotency key: the same key with
//!   the same request returns the same outcome and moves money at most once, for as
//!   long as the provider remembers keys (Stripe: 24 hours). Derive it from what the
//!   attempt is about (e.g. the `PaymentId` of the attempt), never at random per call.
//!   [`create_customer`](PaymentProvider::create_customer) derives its key from the
//!   tenant: a retry returns the same customer. Store the returned id and create a
//!   customer only when none is stored.
//! - **Tenancy.** Every call names the tenant (the customer's, for the calls on a
//!   customer); providers tag what they create with it (Stripe: `metadata[tenant_id]`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenancy_core::identity::Email;
use tenancy_core::{Error, Result, TenantId};

use crate::ids::InvoiceId;
use crate::money::Money;

/// The longest idempotency key accepted (Stripe's limit), in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The longest customer name accepted, in characters.
pub const MAX_CUSTOMER_NAME_LEN: usize = 256;

/// The longest charge description accepted, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;

/// A customer's identifier at a payment provider (Stripe: `cus_…`; the manual
/// provider: `manual_<tenant id>`). Serialized as the bare string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderCustomerId(String);

impl ProviderCustomerId {
    /// Wraps an identifier the provider returned (or one read back from storage).
    /// Providers check its form before they use it.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identifier.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderCustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is billed: what a provider records about a tenant's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRequest {
    /// The name on invoices and receipts (1 to [`MAX_CUSTOMER_NAME_LEN`] characters).
    pub name: String,
    /// Where the provider sends receipts, if anywhere.
    pub email: Option<Email>,
}

impl CustomerRequest {
    /// `InvalidInput` on field `name` when it is blank, too long or has control
    /// characters.
    pub fn validate(&self) -> Result<()> {
        check_text("name", &self.name, MAX_CUSTOMER_NAME_LEN)?;
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be blank"));
        }
        Ok(())
    }
}

/// One attempt to collect an invoice's amount from a customer's default payment
/// method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The tenant billed.
    pub tenant: TenantId,
    /// The invoice paid.
    pub invoice: InvoiceId,
    /// The tenant's customer at the provider.
    pub customer: ProviderCustomerId,
    /// How much: positive, in minor units.
    pub amount: Money,
    /// Shown on the payer's statement and receipt (at most [`MAX_DESCRIPTION_LEN`]
    /// characters; may be empty).
    pub description: String,
    /// Makes a retry of this attempt return its first outcome (1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters).
    pub idempotency_key: String,
}

impl ChargeRequest {
    /// `InvalidInput` on `amount` when not positive, on `description` when too long or
    /// with control characters, on `idempotency_key` when empty, too long or not
    /// visible ASCII.
    pub fn validate(&self) -> Result<()> {
        check_positive(self.amount)?;
        check_text("description", &self.description, MAX_DESCRIPTION_LEN)?;
        check_token("idempotency_key", &self.idempotency_key)
    }
}

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChargeOutcome {
    /// The money is collected.
    Succeeded {
        /// The provider's payment (Stripe: the PaymentIntent `pi_…`).
        provider_payment_id: String,
    },
    /// The payment waits for the payer (authentication) or an operator (a transfer);
    /// it settles later.
    Pending {
        /// The provider's payment, to match its later settlement.
        provider_payment_id: String,
    },
    /// The provider refused the payment for a reason of the payer: nothing was
    /// collected. Retry later or with another payment method (dunning).
    Failed {
        /// The provider's payment, when it created one.
        provider_payment_id: Option<String>,
        /// Why, in the provider's words (fit to show the payer).
        reason: String,
        /// The provider's machine-readable reason (Stripe: the `decline_code`, else
        /// the error `code`, e.g. `insufficient_funds`).
        code: Option<String>,
    },
}

impl ChargeOutcome {
    /// The provider's payment id, if the provider created a payment.
    #[must_use]
    pub fn provider_payment_id(&self) -> Option<&str> {
        match self {
            Self::Succeeded {
                provider_payment_id,
            }
            | Self::Pending {
                provider_payment_id,
            } => Some(provider_payment_id),
            Self::Failed {
                provider_payment_id,
                ..
            } => provider_payment_id.as_deref(),
        }
    }
}

/// Giving back (part of) a collected payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The tenant refunded.
    pub tenant: TenantId,
    /// The provider's payment refunded (from [`ChargeOutcome::provider_payment_id`]).
    pub provider_payment_id: String,
    /// How much: positive, at most what is left of the payment (the billing service
    /// tracks that; the provider refuses more if it knows).
    pub amount: Money,
    /// Makes a retry of this refund return its first outcome (1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters).
    pub idempotency_key: String,
}

impl RefundRequest {
    /// `InvalidInput` on `amount` when not positive, on `provider_payment_id` or
    /// `idempotency_key` when empty, too long or not visible ASCII.
    pub fn validate(&self) -> Result<()> {
        check_positive(self.amount)?;
        check_token("provider_payment_id", &self.provider_payment_id)?;
        check_token("idempotency_key", &self.idempotency_key)
    }
}

/// What became of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundOutcome {
    /// The money is on its way back.
    Succeeded {
        /// The provider's refund (Stripe: `re_…`).
        provider_refund_id: String,
    },
    /// The refund waits on the provider or the payer's bank; it settles later.
    Pending {
        /// The provider's refund, to match its later settlement.
        provider_refund_id: String,
    },
    /// The refund failed; nothing was given back.
    Failed {
        /// The provider's refund, when it created one.
        provider_refund_id: Option<String>,
        /// Why, in the provider's words.
        reason: String,
    },
}

/// A payment provider. See the [module documentation](self) for the contract every
/// implementation keeps: outcomes for the payer's side, error kinds for the rest,
/// idempotency keys, tenant tagging.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// A short stable name: `manual`, `stripe`.
    fn name(&self) -> &str;

    /// Creates the customer of `tenant` (tagged with its id) and returns its id. The
    /// idempotency key derives from `tenant`: a retry returns the same customer (a
    /// retry with a different `request` is a `Conflict` while the provider remembers
    /// the key).
    async fn create_customer(
        &self,
        tenant: TenantId,
        request: &CustomerRequest,
    ) -> Result<ProviderCustomerId>;

    /// Attaches `payment_method` (a provider token, Stripe: `pm_…`, collected by the
    /// provider's client-side form) to `customer` and makes it the default for
    /// invoices, which [`charge`](Self::charge) uses. Repeating it is harmless.
    async fn attach_payment_method(
        &self,
        customer: &ProviderCustomerId,
        payment_method: &str,
    ) -> Result<()>;

    /// Charges `request.amount` to the customer's default payment method, off
    /// session (the payer is not there). A refusal for a reason of the payer is
    /// `Ok(ChargeOutcome::Failed)`.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome>;

    /// Refunds `request.amount` of a payment.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome>;
}

/// The provider for money collected outside the system (bank transfer, cheque): no
/// I/O, nothing leaves the process.
///
/// - customers are `manual_<tenant id>`, without state: the id survives restarts;
/// - a charge is [`ChargeOutcome::Pending`] with payment id `manual_<invoice id>`,
///   until an operator marks the invoice paid;
/// - a refund succeeds at once (`manual_refund_<uuid>`): the operator pays it back;
/// - payment methods attached are remembered in memory (see
///   [`default_payment_method`](Self::default_payment_method)) but never used;
/// - idempotency keys are remembered in memory for the life of the value: a key
///   reused with another request is a `Conflict`.
#[derive(Debug, Default)]
pub struct ManualProvider {
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    payment_methods: HashMap<ProviderCustomerId, String>,
    charges: HashMap<String, (ChargeRequest, ChargeOutcome)>,
    refunds: HashMap<String, (RefundRequest, RefundOutcome)>,
}

/// The prefix of every id the manual provider hands out.
const MANUAL_PREFIX: &str = "manual_";

impl ManualProvider {
    /// A provider with nothing remembered.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The manual customer of `tenant`: `manual_<tenant id>`.
    #[must_use]
    pub fn customer_id(tenant: TenantId) -> ProviderCustomerId {
        ProviderCustomerId(format!("{MANUAL_PREFIX}{tenant}"))
    }

    /// The payment method last attached to `customer` in this process, if any.
    pub fn default_payment_method(&self, customer: &ProviderCustomerId) -> Result<Option<String>> {
        Ok(self.state()?.payment_methods.get(customer).cloned())
    }

    fn state(&self) -> Result<MutexGuard<'_, ManualState>> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("the manual payment provider's state is poisoned".into()))
    }

    /// `NotFound` unless `customer` is a manual customer id.
    fn check_customer(customer: &ProviderCustomerId) -> Result<TenantId> {
        customer
            .as_str()
            .strip_prefix(MANUAL_PREFIX)
            .and_then(|tenant| tenant.parse().ok())
            .ok_or_else(|| Error::not_found("customer", customer))
    }
}

/// The outcome remembered under an idempotency key, or `Conflict` when the key was
/// used for another request.
fn replay<R: PartialEq, O: Clone>(
    remembered: Option<&(R, O)>,
    request: &R,
    key: &str,
) -> Result<Option<O>> {
    match remembered {
        None => Ok(None),
        Some((first, outcome)) if first == request => Ok(Some(outcome.clone())),
        Some(_) => Err(Error::Conflict(format!(
            "idempotency key `{key}` was used for another request"
        ))),
    }
}

#[async_trait]
impl PaymentProvider for ManualProvider {
    fn name(&self) -> &str {
        "manual"
    }

    async fn create_customer(
        &self,
        tenant: TenantId,
        request: &CustomerRequest,
    ) -> Result<ProviderCustomerId> {
        request.validate()?;
        Ok(Self::customer_id(tenant))
    }

    async fn attach_payment_method(
        &self,
        customer: &ProviderCustomerId,
        payment_method: &str,
    ) -> Result<()> {
        Self::check_customer(customer)?;
        check_token("payment_method", payment_method)?;
        self.state()?
            .payment_methods
            .insert(customer.clone(), payment_method.to_owned());
        Ok(())
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome> {
        request.validate()?;
        let owner = Self::check_customer(&request.customer)?;
        if owner != request.tenant {
            return Err(Error::invalid(
                "customer",
                format!(
                    "`{}` is not the customer of tenant `{}`",
                    request.customer, request.tenant
                ),
            ));
        }
        let mut state = self.state()?;
        let key = &request.idempotency_key;
        if let Some(outcome) = replay(state.charges.get(key), request, key)? {
            return Ok(outcome);
        }
        let outcome = ChargeOutcome::Pending {
            provider_payment_id: format!("{MANUAL_PREFIX}{}", request.invoice),
        };
        state
            .charges
            .insert(key.clone(), (request.clone(), outcome.clone()));
        Ok(outcome)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome> {
        request.validate()?;
        if !request.provider_payment_id.starts_with(MANUAL_PREFIX) {
            return Err(Error::not_found("payment", &request.provider_payment_id));
        }
        let mut state = self.state()?;
        let key = &request.idempotency_key;
        if let Some(outcome) = replay(state.refunds.get(key), request, key)? {
            return Ok(outcome);
        }
        let outcome = RefundOutcome::Succeeded {
            provider_refund_id: format!("{MANUAL_PREFIX}refund_{}", uuid::Uuid::now_v7()),
        };
        state
            .refunds
            .insert(key.clone(), (request.clone(), outcome.clone()));
        Ok(outcome)
    }
}

/// `InvalidInput` on `amount` unless positive.
fn check_positive(amount: Money) -> Result<()> {
    if amount.minor > 0 {
        Ok(())
    } else {
        Err(Error::invalid(
            "amount",
            format!("`{amount}` must be positive"),
        ))
    }
}

/// `InvalidInput` on `field` when `text` is longer than `max` characters or has
/// control characters.
fn check_text(field: &str, text: &str, max: usize) -> Result<()> {
    if text.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// `InvalidInput` on `field` unless `token` is 1 to [`MAX_IDEMPOTENCY_KEY_LEN`]
/// visible ASCII characters (safe in a header and a form).
pub(crate) fn check_token(field: &str, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if token.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters long"),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            format!(
                "`{}` must be visible ascii characters only",
                token.escape_default()
            ),
        ));
    }
    Ok(())
}
