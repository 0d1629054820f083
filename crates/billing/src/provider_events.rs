//! Incoming payment-provider webhooks: a Stripe event, verified on its raw bytes
//! ([`crate::signature`]), becomes a [`PaymentEvent`] that
//! [`crate::Billing::apply_payment_event`] applies once (idempotent by event id, and
//! safe out of order: a late failure of an older attempt or of a paid invoice changes
//! nothing).
//!
//! | Stripe event | effect |
//! |---|---|
//! | `payment_intent.succeeded`, `invoice.paid` | the invoice is paid (a past-due subscription is active again) |
//! | `payment_intent.payment_failed` | a failed attempt: dunning (past due, retry schedule) |
//! | anything else | acknowledged and ignored |
//!
//! The invoice and tenant come from the object's `metadata` (`invoice_id`,
//! `tenant_id`), which [`crate::stripe::StripeProvider`] sets on every charge;
//! events of objects without them are not ours and are ignored.

use std::time::Duration;

use serde::Deserialize;
use tenancy_core::{Error, Result, TenantId};

use crate::ids::InvoiceId;
use crate::signature;

/// What a provider says happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// The payment succeeded.
    Succeeded {
        /// The provider's payment id.
        payment_id: String,
    },
    /// The payment failed.
    Failed {
        /// The provider's payment id.
        payment_id: String,
        /// Why, in the provider's words.
        reason: String,
    },
    /// Something billing does not act on (its event type).
    Other(String),
}

/// A verified provider event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider (`stripe`).
    pub provider: String,
    /// The provider's event id (the idempotency key).
    pub event_id: String,
    /// The provider's event type.
    pub event_type: String,
    /// What happened.
    pub kind: PaymentEventKind,
    /// The tenant, from the object's metadata.
    pub tenant: Option<TenantId>,
    /// The invoice, from the object's metadata.
    pub invoice: Option<InvoiceId>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentEventOutcome {
    /// The invoice was updated (or already in that state; the event is recorded).
    Applied,
    /// The event was applied before: nothing changed.
    Duplicate,
    /// Not an event billing acts on, or not about one of its invoices.
    Ignored,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: RawObject,
}

#[derive(Deserialize)]
struct RawObject {
    #[serde(default)]
    id: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    /// On invoice objects: their PaymentIntent.
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    last_payment_error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

/// Verifies a Stripe webhook (`Stripe-Signature` over the raw body, against any of
/// `secrets`, within `tolerance` of `now`) and reads its event. `Unauthenticated`
/// for a missing or bad signature; `InvalidInput` on `body` for a verified body that
/// is not a Stripe event.
pub fn verify_stripe_event<S: AsRef<[u8]>>(
    header: Option<&str>,
    raw_body: &[u8],
    secrets: &[S],
    now: i64,
    tolerance: Duration,
) -> Result<PaymentEvent> {
    let header = header.ok_or(signature::SignatureError::MissingHeader)?;
    signature::verify(header, raw_body, secrets, now, tolerance)?;
    parse_stripe_event(raw_body)
}

/// Reads a Stripe event (already verified).
pub fn parse_stripe_event(raw_body: &[u8]) -> Result<PaymentEvent> {
    let raw: RawEvent = serde_json::from_slice(raw_body)
        .map_err(|e| Error::invalid("body", format!("not a Stripe event: {e}")))?;
    let object = raw.data.object;
    let tenant = object
        .metadata
        .get("tenant_id")
        .and_then(|t| TenantId::parse_field("tenant_id", t).ok());
    let invoice = object
        .metadata
        .get("invoice_id")
        .and_then(|i| InvoiceId::parse_field("invoice_id", i).ok());
    let kind = match raw.event_type.as_str() {
        "payment_intent.succeeded" => PaymentEventKind::Succeeded {
            payment_id: object.id,
        },
        "invoice.paid" => PaymentEventKind::Succeeded {
            payment_id: object.payment_intent.unwrap_or(object.id),
        },
        "payment_intent.payment_failed" => {
            let error = object.last_payment_error;
            let reason = error
                .as_ref()
                .and_then(|e| {
                    e.message
                        .clone()
                        .or_else(|| e.decline_code.clone())
                        .or_else(|| e.code.clone())
                })
                .unwrap_or_else(|| "the payment failed".into());
            PaymentEventKind::Failed {
                payment_id: object.id,
                reason,
            }
        }
        other => PaymentEventKind::Other(other.to_owned()),
    };
    Ok(PaymentEvent {
        provider: "stripe".into(),
        event_id: raw.id,
        event_type: raw.event_type,
        kind,
        tenant,
        invoice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_verifies_events() -> Result<()> {
        let tenant = TenantId::new();
        let invoice = InvoiceId::new();
        let body = serde_json::json!({
            "id": "evt_1",
            "type": "payment_intent.payment_failed",
            "data": { "object": {
                "id": "pi_1",
                "metadata": { "tenant_id": tenant.to_string(), "invoice_id": invoice.to_string() },
                "last_payment_error": { "message": "Your card was declined.", "code": "card_declined" }
            } }
        })
        .to_string();
        let header = signature::sign("whsec_test", 1_000, body.as_bytes());
        let event = verify_stripe_event(
            Some(&header),
            body.as_bytes(),
            &["whsec_test"],
            1_010,
            signature::DEFAULT_TOLERANCE,
        )?;
        assert_eq!(event.tenant, Some(tenant));
        assert_eq!(event.invoice, Some(invoice));
        assert_eq!(
            event.kind,
            PaymentEventKind::Failed {
                payment_id: "pi_1".into(),
                reason: "Your card was declined.".into()
            }
        );
        let bad = verify_stripe_event(
            Some(&header),
            b"{}",
            &["whsec_test"],
            1_010,
            signature::DEFAULT_TOLERANCE,
        );
        assert_eq!(
            bad.map(|_| ()).map_err(|e| e.kind()),
            Err(tenancy_core::ErrorKind::Unauthenticated)
        );
        let missing = verify_stripe_event(
            None,
            body.as_bytes(),
            &["whsec_test"],
            1_010,
            signature::DEFAULT_TOLERANCE,
        );
        assert!(missing.is_err());
        let signed_garbage = signature::sign("whsec_test", 1_000, b"[1]");
        let garbage = verify_stripe_event(
            Some(&signed_garbage),
            b"[1]",
            &["whsec_test"],
            1_000,
            signature::DEFAULT_TOLERANCE,
        );
        assert_eq!(
            garbage.map(|_| ()).map_err(|e| e.kind()),
            Err(tenancy_core::ErrorKind::InvalidInput)
        );
        Ok(())
    }
}
