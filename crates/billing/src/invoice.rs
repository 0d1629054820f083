//! Building and finalizing invoices: tax, exact line shares, numbering, balance.
//!
//! Tax is computed once per invoice: `subtotal × rate / 100`, rounded half away from
//! zero to the minor unit (a credit-only invoice gets a negative tax: the tax of the
//! credited amount comes back too). It is then spread over the lines in proportion to
//! their amounts by largest remainder, so for every invoice
//! `Σ line.amount = subtotal`, `Σ line.tax = tax` and `total = subtotal + tax`, exactly.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use tenancy_core::{Error, Result, TenantId};

use crate::ids::{InvoiceId, SubscriptionId};
use crate::model::{BillingReason, Customer, Invoice, InvoiceLine, InvoiceStatus};
use crate::money::Currency;

fn overflow() -> Error {
    Error::invalid("amount", "the invoice total is out of range")
}

/// The tax of `subtotal` at `rate` percent, rounded half away from zero.
pub fn tax_of(subtotal: i64, rate: Decimal) -> Result<i64> {
    let exact = Decimal::from(subtotal)
        .checked_mul(rate)
        .and_then(|t| t.checked_div(Decimal::ONE_HUNDRED))
        .ok_or_else(overflow)?;
    i64::try_from(exact.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .map_err(|_| overflow())
}

/// Splits `total` over `amounts` in proportion to them (signed), by largest remainder:
/// each part is the floor of its exact share plus at most one unit, and the parts sum
/// to `total`. All zero when the amounts sum to zero and `total` is zero.
pub fn spread(total: i64, amounts: &[i64]) -> Result<Vec<i64>> {
    let sum: i64 = amounts
        .iter()
        .try_fold(0i64, |acc, a| acc.checked_add(*a))
        .ok_or_else(overflow)?;
    if sum == 0 {
        if total == 0 {
            return Ok(vec![0; amounts.len()]);
        }
        return Err(Error::invalid(
            "tax",
            "a non-zero tax needs lines with a non-zero sum",
        ));
    }
    let mut parts = Vec::with_capacity(amounts.len());
    let mut fractions = Vec::with_capacity(amounts.len());
    let mut given = 0i64;
    for (index, amount) in amounts.iter().enumerate() {
        let exact = Decimal::from(*amount)
            .checked_mul(Decimal::from(total))
            .and_then(|p| p.checked_div(Decimal::from(sum)))
            .ok_or_else(overflow)?;
        let floor = exact.floor();
        let whole = i64::try_from(floor).map_err(|_| overflow())?;
        given = given.checked_add(whole).ok_or_else(overflow)?;
        parts.push(whole);
        fractions.push((exact - floor, index));
    }
    // Σ floor ≤ total ≤ Σ floor + n: hand out the rest to the largest fractions.
    let mut left = total - given;
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in fractions {
        if left <= 0 {
            break;
        }
        if let Some(p) = parts.get_mut(index) {
            *p += 1;
            left -= 1;
        }
    }
    Ok(parts)
}

/// What a new invoice is for.
#[derive(Debug, Clone)]
pub struct InvoiceDraft {
    /// The tenant billed.
    pub tenant: TenantId,
    /// The subscription billed.
    pub subscription: Option<SubscriptionId>,
    /// Why.
    pub reason: BillingReason,
    /// Its uniqueness key (see [`Invoice::billing_key`]).
    pub billing_key: String,
    /// Its currency.
    pub currency: Currency,
    /// Tax rate in percent.
    pub tax_rate: Decimal,
    /// Its lines (their `tax` is computed here).
    pub lines: Vec<InvoiceLine>,
}

impl InvoiceDraft {
    /// The draft invoice, with tax computed and spread over the lines.
    pub fn build(self, now: DateTime<Utc>) -> Result<Invoice> {
        let mut lines = self.lines;
        let amounts: Vec<i64> = lines.iter().map(|l| l.amount).collect();
        let subtotal = amounts
            .iter()
            .try_fold(0i64, |acc, a| acc.checked_add(*a))
            .ok_or_else(overflow)?;
        let tax = tax_of(subtotal, self.tax_rate)?;
        for (line, share) in lines.iter_mut().zip(spread(tax, &amounts)?) {
            line.tax = share;
        }
        let total = subtotal.checked_add(tax).ok_or_else(overflow)?;
        Ok(Invoice {
            id: InvoiceId::new(),
            tenant_id: self.tenant,
            subscription_id: self.subscription,
            number: None,
            status: InvoiceStatus::Draft,
            billing_reason: self.reason,
            billing_key: self.billing_key,
            currency: self.currency,
            lines,
            tax_rate: self.tax_rate,
            subtotal,
            tax,
            total,
            balance_applied: 0,
            credited: 0,
            amount_due: total.max(0),
            amount_paid: 0,
            payment_attempts: 0,
            next_payment_attempt: None,
            provider_payment_id: None,
            created_at: now,
            finalized_at: None,
            paid_at: None,
            closed_at: None,
            version: 1,
        })
    }
}

/// Finalizes a draft: gives it the customer's next number, applies the customer's
/// balance (a negative total is added to it), and marks it paid when nothing is
/// owed. Changes `invoice` and `customer` in place; the caller writes both in one
/// commit (the customer's version check keeps numbers gapless and unique).
pub fn finalize(invoice: &mut Invoice, customer: &mut Customer, now: DateTime<Utc>) -> Result<()> {
    if invoice.status != InvoiceStatus::Draft {
        return Err(Error::Conflict(format!(
            "invoice `{}` is {}, not a draft",
            invoice.id,
            invoice.status.as_str()
        )));
    }
    invoice.number = Some(format!(
        "{}-{:04}",
        customer.invoice_prefix, customer.next_invoice_number
    ));
    customer.next_invoice_number += 1;
    let applied = if invoice.total >= 0 {
        customer.balance.clamp(0, invoice.total)
    } else {
        invoice.total
    };
    customer.balance = customer.balance.checked_sub(applied).ok_or_else(overflow)?;
    invoice.balance_applied = applied;
    invoice.amount_due = (invoice.total - applied - invoice.credited).max(0);
    invoice.status = InvoiceStatus::Open;
    invoice.finalized_at = Some(now);
    if invoice.amount_due == 0 {
        invoice.status = InvoiceStatus::Paid;
        invoice.paid_at = Some(now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_exact_and_signed() -> Result<()> {
        let parts = spread(19, &[100, 100, 100])?;
        assert_eq!(parts.iter().sum::<i64>(), 19);
        let parts = spread(-10, &[-3_000, 1_000])?;
        assert_eq!(parts.iter().sum::<i64>(), -10);
        assert_eq!(parts, vec![-15, 5]);
        assert_eq!(spread(0, &[5, -5])?, vec![0, 0]);
        assert!(spread(1, &[5, -5]).is_err());
        Ok(())
    }

    #[test]
    fn tax_rounds_half_away_from_zero() -> Result<()> {
        assert_eq!(tax_of(1_050, Decimal::new(10, 0))?, 105);
        assert_eq!(tax_of(5, Decimal::new(10, 0))?, 1);
        assert_eq!(tax_of(-5, Decimal::new(10, 0))?, -1);
        Ok(())
    }
}
