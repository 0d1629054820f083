//! [`StripeProvider`]: the [`PaymentProvider`] over Stripe's REST API (feature
//! `stripe`).
//!
//! Requests are form-encoded with Stripe's bracket syntax (`metadata[tenant_id]=…`),
//! authenticated with `Authorization: Bearer <secret key>`, pinned to API version
//! [`StripeProvider::API_VERSION`] with the `Stripe-Version` header, and the ones that
//! create something carry an `Idempotency-Key`. The calls:
//!
//! | method | requests |
//! |---|---|
//! | `create_customer` | `POST /v1/customers` (`name`, `email`, `metadata[tenant_id]`), key `tenancy-customer-<tenant id>` |
//! | `attach_payment_method` | `POST /v1/payment_methods/{pm}/attach` (`customer`), then `POST /v1/customers/{id}` (`invoice_settings[default_payment_method]`) |
//! | `charge` | `GET /v1/customers/{id}` for the default payment method, then `POST /v1/payment_intents` (`amount` in minor units, lowercase `currency`, `customer`, `payment_method`, `confirm=true`, `off_session=true`, redirects off, `description`, `metadata[tenant_id]`, `metadata[invoice_id]`), the request's key |
//! | `refund` | `POST /v1/refunds` (`payment_intent`, `amount`, `metadata[tenant_id]`), the request's key |
//!
//! Stripe does not charge a customer's default payment method for invoices by itself
//! when a PaymentIntent is confirmed, hence the `GET` before each charge; a customer
//! without one gets [`ChargeOutcome::Failed`] with code `no_default_payment_method`.
//! A retry of a charge with the same key after the default payment method changed
//! sends other parameters: Stripe refuses it (`Conflict`); start a new attempt with a
//! new key.
//!
//! Answers map onto the contract of [`crate::payment`]: a PaymentIntent `succeeded` is
//! [`ChargeOutcome::Succeeded`]; `processing`, `requires_action`, `requires_capture`
//! and states this module does not know are [`ChargeOutcome::Pending`];
//! `requires_payment_method` and `canceled`, and a `402` (`card_error`) are
//! [`ChargeOutcome::Failed`] with the `decline_code` (else the error `code`). Errors:
//! transport failures, timeouts, `429` and `5xx` are `Unavailable` (retry with the
//! same key); `400` is `Internal` (we sent a bad request) except an
//! `idempotency_error`, which is a `Conflict` like `409`; `401` is `Unauthenticated`
//! and `403` `PermissionDenied` (Stripe refuses the key: a configuration problem, not
//! the end user's); `404` is `NotFound`; a `402` outside a charge is `InvalidInput` on
//! `payment_method`. Stripe's message is quoted in each.
//!
//! Amounts are sent in the minor units of [`Money`](crate::Money), which follow ISO
//! 4217. Stripe agrees for almost every currency; for the few it treats specially
//! (e.g. `HUF`, `TWD` payouts, three-decimal currencies whose last digit must be `0`)
//! it refuses an amount it cannot take, which surfaces as `Internal`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tenancy_core::{Error, Result, TenantId};

use crate::payment::{
    ChargeOutcome, ChargeRequest, CustomerRequest, PaymentProvider, ProviderCustomerId,
    RefundOutcome, RefundRequest,
};

/// The largest answer read from Stripe, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The code of [`ChargeOutcome::Failed`] for a customer without a default payment
/// method.
pub const NO_DEFAULT_PAYMENT_METHOD: &str = "no_default_payment_method";

/// A [`PaymentProvider`] over Stripe's API. See the [module documentation](self) for
/// the requests it sends and how answers map onto outcomes and errors.
#[derive(Clone)]
pub struct StripeProvider {
    client: reqwest::Client,
    api_key: String,
    base_url: String,
    timeout: Duration,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StripeProvider {
    /// Stripe's API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.stripe.com";

    /// The API version every request is pinned to (`Stripe-Version`). The fields read
    /// here (PaymentIntent and refund `status`, the customer's
    /// `invoice_settings.default_payment_method`, the error object) are the same in
    /// every version since.
    pub const API_VERSION: &'static str = "2024-06-20";

    /// How long a request may take, by default, before it is `Unavailable`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A provider calling `base_url` (normally [`Self::DEFAULT_BASE_URL`]; a local
    /// stub in tests) with the secret key `api_key` (`sk_live_…`, `sk_test_…` or a
    /// restricted `rk_…` key).
    ///
    /// # Errors
    ///
    /// `InvalidInput` on `api_key` when it is empty or not visible ASCII, on `base_url`
    /// when it is not an absolute `https` URL (plain `http` only on a loopback host,
    /// for a stub) or has a query or fragment; `Internal` when no HTTP client can be
    /// built.
    pub fn new(api_key: impl Into<String>, base_url: &str) -> Result<Self> {
        let api_key = api_key.into();
        if api_key.is_empty() || !api_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "api_key",
                "must be a non-empty key of visible ascii characters",
            ));
        }
        let invalid = |reason: &str| {
            Error::invalid(
                "base_url",
                format!("`{}` {reason}", base_url.escape_default()),
            )
        };
        let url = Url::parse(base_url).map_err(|_| invalid("is not an absolute url"))?;
        let loopback = url.host_str().is_some_and(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(
                    "must use https (plain http only on a loopback host)",
                ));
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or fragment"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("cannot build an http client: {e}")))?;
        Ok(Self {
            client,
            api_key,
            base_url: url.as_str().trim_end_matches('/').to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// The same provider with requests timing out after `timeout` instead of
    /// [`Self::DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL requests go to (without a trailing `/`).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A request to `path` (starting with `/`), authenticated and pinned.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Stripe-Version", Self::API_VERSION)
            .timeout(self.timeout)
    }

    /// Sends `request` and reads the answer: the object on success, Stripe's error on
    /// a 4xx other than 429; `Unavailable` on transport failures, 429 and 5xx.
    async fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        request: RequestBuilder,
    ) -> Result<Reply<T>> {
        let unavailable = |reason: String| {
            Error::Unavailable(format!("stripe is unavailable ({what}): {reason}"))
        };
        let mut response = request.send().await.map_err(|e| {
            if e.is_builder() {
                Error::Internal(format!("cannot build the stripe request ({what}): {e}"))
            } else {
                unavailable(e.to_string())
            }
        })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Error::Internal(format!(
                    "stripe answered {what} with more than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&body).map(Reply::Done).map_err(|e| {
                Error::Internal(format!(
                    "stripe answered {what} with an unexpected body: {e}"
                ))
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_default();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!(
                "status {}: {}",
                status.as_u16(),
                error.describe()
            )));
        }
        Ok(Reply::Refused { status, error })
    }

    /// [`Self::send`], with a refusal turned into its error.
    async fn call<T: DeserializeOwned>(&self, what: &str, request: RequestBuilder) -> Result<T> {
        match self.send(what, request).await? {
            Reply::Done(value) => Ok(value),
            Reply::Refused { status, error } => Err(refusal(what, status, &error)),
        }
    }

    /// The customer's default payment method for invoices, if it has one.
    async fn default_payment_method(
        &self,
        customer: &ProviderCustomerId,
    ) -> Result<Option<String>> {
        let path = format!("/v1/customers/{customer}");
        let found: Customer = self
            .call(&format!("GET {path}"), self.request(Method::GET, &path))
            .await?;
        if found.deleted {
            return Err(Error::not_found("customer", customer));
        }
        Ok(found
            .invoice_settings
            .and_then(|settings| settings.default_payment_method))
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &str {
        "stripe"
    }

    async fn create_customer(
        &self,
        tenant: TenantId,
        request: &CustomerRequest,
    ) -> Result<ProviderCustomerId> {
        request.validate()?;
        let mut form = vec![
            ("name", request.name.clone()),
            ("metadata[tenant_id]", tenant.to_string()),
        ];
        if let Some(email) = &request.email {
            form.push(("email", email.to_string()));
        }
        let created: Created = self
            .call(
                "POST /v1/customers",
                self.request(Method::POST, "/v1/customers")
                    .header("Idempotency-Key", customer_idempotency_key(tenant))
                    .form(&form),
            )
            .await?;
        Ok(ProviderCustomerId::new(created.id))
    }

    async fn attach_payment_method(
        &self,
        customer: &ProviderCustomerId,
        payment_method: &str,
    ) -> Result<()> {
        check_object_id("customer", customer.as_str())?;
        check_object_id("payment_method", payment_method)?;
        let attach = format!("/v1/payment_methods/{payment_method}/attach");
        let _: Created = self
            .call(
                &format!("POST {attach}"),
                self.request(Method::POST, &attach)
                    .form(&[("customer", customer.as_str())]),
            )
            .await?;
        let update = format!("/v1/customers/{customer}");
        let _: Created = self
            .call(
                &format!("POST {update}"),
                self.request(Method::POST, &update)
                    .form(&[("invoice_settings[default_payment_method]", payment_method)]),
            )
            .await?;
        Ok(())
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome> {
        request.validate()?;
        check_object_id("customer", request.customer.as_str())?;
        let Some(payment_method) = self.default_payment_method(&request.customer).await? else {
            return Ok(ChargeOutcome::Failed {
                provider_payment_id: None,
                reason: "the customer has no default payment method".into(),
                code: Some(NO_DEFAULT_PAYMENT_METHOD.into()),
            });
        };
        let mut form = vec![
            ("amount", request.amount.minor.to_string()),
            (
                "currency",
                request.amount.currency.code().to_ascii_lowercase(),
            ),
            ("customer", request.customer.to_string()),
            ("payment_method", payment_method),
            ("confirm", "true".into()),
            ("off_session", "true".into()),
            ("automatic_payment_methods[enabled]", "true".into()),
            ("automatic_payment_methods[allow_redirects]", "never".into()),
            ("metadata[tenant_id]", request.tenant.to_string()),
            ("metadata[invoice_id]", request.invoice.to_string()),
        ];
        if !request.description.is_empty() {
            form.push(("description", request.description.clone()));
        }
        let what = "POST /v1/payment_intents";
        let reply: Reply<PaymentIntent> = self
            .send(
                what,
                self.request(Method::POST, "/v1/payment_intents")
                    .header("Idempotency-Key", &request.idempotency_key)
                    .form(&form),
            )
            .await?;
        match reply {
            Reply::Done(intent) => Ok(intent.outcome()),
            Reply::Refused { status, error } if status == StatusCode::PAYMENT_REQUIRED => {
                Ok(ChargeOutcome::Failed {
                    provider_payment_id: error.payment_intent.as_ref().map(|pi| pi.id.clone()),
                    reason: error
                        .message
                        .clone()
                        .unwrap_or_else(|| "the payment was declined".into()),
                    code: error.decline_code.or(error.code),
                })
            }
            Reply::Refused { status, error } => Err(refusal(what, status, &error)),
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome> {
        request.validate()?;
        let form = [
            ("payment_intent", request.provider_payment_id.clone()),
            ("amount", request.amount.minor.to_string()),
            ("metadata[tenant_id]", request.tenant.to_string()),
        ];
        let refund: Refund = self
            .call(
                "POST /v1/refunds",
                self.request(Method::POST, "/v1/refunds")
                    .header("Idempotency-Key", &request.idempotency_key)
                    .form(&form),
            )
            .await?;
        Ok(refund.outcome())
    }
}

/// The idempotency key of the customer of `tenant`.
fn customer_idempotency_key(tenant: TenantId) -> String {
    format!("tenancy-customer-{tenant}")
}

/// `InvalidInput` on `field` unless `id` looks like a Stripe object id (`cus_…`,
/// `pm_…`: letters, digits and `_`), so it is safe in a URL path.
fn check_object_id(field: &str, id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{}` is not a stripe object id", id.escape_default()),
        ))
    }
}

/// The error of a refused request (a 4xx other than 429).
fn refusal(what: &str, status: StatusCode, error: &ApiError) -> Error {
    let detail = error.describe();
    match status.as_u16() {
        400 if error.kind.as_deref() == Some("idempotency_error") => Error::Conflict(format!(
            "stripe refused {what}: the idempotency key was used with other parameters: {detail}"
        )),
        401 => Error::Unauthenticated(format!("stripe refused the api key ({what}): {detail}")),
        402 => Error::invalid("payment_method", format!("stripe refused it: {detail}")),
        403 => Error::PermissionDenied(format!("the stripe api key may not do {what}: {detail}")),
        404 => Error::NotFound(format!(
            "stripe does not know the object of {what}: {detail}"
        )),
        409 => Error::Conflict(format!(
            "stripe refused {what} as conflicting with a concurrent request: {detail}"
        )),
        code => Error::Internal(format!(
            "stripe refused {what} with status {code}: {detail}"
        )),
    }
}

/// What [`StripeProvider::send`] read.
enum Reply<T> {
    /// A 2xx with the object.
    Done(T),
    /// A 4xx (other than 429) with Stripe's error object (empty if unreadable).
    Refused { status: StatusCode, error: ApiError },
}

/// Any object, by id.
#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Customer {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    invoice_settings: Option<InvoiceSettings>,
}

#[derive(Debug, Deserialize)]
struct InvoiceSettings {
    #[serde(default)]
    default_payment_method: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    last_payment_error: Option<ApiError>,
    #[serde(default)]
    cancellation_reason: Option<String>,
}

impl PaymentIntent {
    fn outcome(self) -> ChargeOutcome {
        match self.status.as_str() {
            "succeeded" => ChargeOutcome::Succeeded {
                provider_payment_id: self.id,
            },
            "requires_payment_method" => {
                let error = self.last_payment_error.unwrap_or_default();
                ChargeOutcome::Failed {
                    provider_payment_id: Some(self.id),
                    reason: error
                        .message
                        .unwrap_or_else(|| "the payment method was refused".into()),
                    code: error.decline_code.or(error.code),
                }
            }
            "canceled" => ChargeOutcome::Failed {
                provider_payment_id: Some(self.id),
                reason: "the payment was canceled".into(),
                code: self.cancellation_reason,
            },
            // processing, requires_action, requires_confirmation, requires_capture and
            // states added later: settled by a webhook or an operator.
            _ => ChargeOutcome::Pending {
                provider_payment_id: self.id,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
}

impl Refund {
    fn outcome(self) -> RefundOutcome {
        match self.status.as_deref() {
            Some("succeeded") => RefundOutcome::Succeeded {
                provider_refund_id: self.id,
            },
            Some(status @ ("failed" | "canceled")) => RefundOutcome::Failed {
                reason: self
                    .failure_reason
                    .unwrap_or_else(|| format!("the refund was {status}")),
                provider_refund_id: Some(self.id),
            },
            _ => RefundOutcome::Pending {
                provider_refund_id: self.id,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// Stripe's error object.
#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    payment_intent: Option<Created>,
}

impl ApiError {
    /// Stripe's message, code and parameter, for an error message.
    fn describe(&self) -> String {
        let mut out = match &self.message {
            Some(message) => format!("`{message}`"),
            None => "no message".to_owned(),
        };
        if let Some(code) = &self.code {
            out.push_str(&format!(" (code `{code}`)"));
        }
        if let Some(param) = &self.param {
            out.push_str(&format!(" on `{param}`"));
        }
        out
    }
}
