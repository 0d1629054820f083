//! Prices: how a quantity becomes an amount.
//!
//! Amounts of a price are decimals in **major units** of the plan's currency (`0.0125`
//! USD per call may be finer than a cent); a line is computed exactly and rounded once,
//! with the price's [`Rounding`], to whole minor units. Included units are free: they
//! are taken off the quantity before any model applies.
//!
//! | model | amount for quantity `q` (after included units) |
//! |---|---|
//! | flat | the fixed amount, whatever `q` (a fee) |
//! | per unit | `q × unit_amount` |
//! | graduated | each tier prices the units that fall in it, plus its flat amount when any do |
//! | volume | the tier `q` falls in prices every unit, plus its flat amount |
//! | package | `ceil(q / size) × amount` |

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result};

use crate::ids::PriceId;
use crate::money::{Currency, Money, Rounding};

/// One tier of a graduated or volume price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// The last unit of the tier (inclusive); `None` for the last tier, unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<Decimal>,
    /// The price of each unit in the tier, in major units.
    #[serde(default)]
    pub unit_amount: Decimal,
    /// A fixed amount added when the tier is reached, in major units.
    #[serde(default)]
    pub flat_amount: Decimal,
}

/// How a price turns a quantity into an amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum PriceModel {
    /// A fixed amount per period.
    Flat {
        /// The amount, in major units.
        amount: Decimal,
    },
    /// The same amount for every unit.
    PerUnit {
        /// The price of one unit, in major units.
        unit_amount: Decimal,
    },
    /// Each tier prices the units that fall in it.
    Graduated {
        /// The tiers, in increasing `up_to`; the last one unbounded.
        tiers: Vec<Tier>,
    },
    /// The tier the whole quantity falls in prices every unit.
    Volume {
        /// The tiers, in increasing `up_to`; the last one unbounded.
        tiers: Vec<Tier>,
    },
    /// Units are sold in packages of `size`; a started package is a whole one.
    Package {
        /// Units per package (more than zero).
        size: Decimal,
        /// The price of one package, in major units.
        amount: Decimal,
    },
}

/// What a price is charged for, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PriceKind {
    /// A subscription fee, billed in advance for each period; its quantity is the
    /// subscription's quantity (seats) and it is prorated on changes.
    Fee,
    /// A usage charge, billed in arrears from the period's total of a metering meter.
    Metered {
        /// The meter's key (tenancy-metering).
        meter: String,
    },
}

/// One price of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Its id (a new one when absent on input).
    #[serde(default)]
    pub id: PriceId,
    /// What invoice lines call it (e.g. `API calls`).
    pub description: String,
    /// Fee or metered usage.
    #[serde(flatten)]
    pub kind: PriceKind,
    /// How the quantity is priced.
    pub pricing: PriceModel,
    /// Units that are free each period, taken off the quantity first.
    #[serde(default)]
    pub included_units: Decimal,
    /// How the exact amount becomes minor units.
    #[serde(default)]
    pub rounding: Rounding,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid("prices", reason)
}

fn non_negative(what: &str, d: Decimal) -> Result<()> {
    if d.is_sign_negative() && !d.is_zero() {
        Err(invalid(format!("{what} `{d}` is negative")))
    } else {
        Ok(())
    }
}

fn overflow() -> Error {
    Error::invalid("amount", "the amount is out of range")
}

fn check_tiers(tiers: &[Tier]) -> Result<()> {
    let Some((last, rest)) = tiers.split_last() else {
        return Err(invalid("a tiered price needs at least one tier"));
    };
    if last.up_to.is_some() {
        return Err(invalid("the last tier must be unbounded (no `up_to`)"));
    }
    let mut previous = Decimal::ZERO;
    for tier in rest {
        let Some(up_to) = tier.up_to else {
            return Err(invalid("only the last tier may be unbounded"));
        };
        if up_to <= previous {
            return Err(invalid(format!(
                "tier bounds must increase (`{up_to}` after `{previous}`)"
            )));
        }
        previous = up_to;
    }
    for tier in tiers {
        non_negative("the unit amount", tier.unit_amount)?;
        non_negative("the flat amount", tier.flat_amount)?;
    }
    Ok(())
}

impl PriceModel {
    /// Checks amounts are not negative and tiers are well formed.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Flat { amount } => non_negative("the amount", *amount),
            Self::PerUnit { unit_amount } => non_negative("the unit amount", *unit_amount),
            Self::Graduated { tiers } | Self::Volume { tiers } => check_tiers(tiers),
            Self::Package { size, amount } => {
                if *size <= Decimal::ZERO {
                    return Err(invalid(format!(
                        "the package size `{size}` is not positive"
                    )));
                }
                non_negative("the package amount", *amount)
            }
        }
    }

    /// The exact amount, in major units, for `quantity` billable units.
    pub fn exact_amount(&self, quantity: Decimal) -> Result<Decimal> {
        let mul = |a: Decimal, b: Decimal| a.checked_mul(b).ok_or_else(overflow);
        let add = |a: Decimal, b: Decimal| a.checked_add(b).ok_or_else(overflow);
        match self {
            Self::Flat { amount } => Ok(*amount),
            Self::PerUnit { unit_amount } => mul(quantity, *unit_amount),
            Self::Graduated { tiers } => {
                let mut total = Decimal::ZERO;
                let mut below = Decimal::ZERO;
                for tier in tiers {
                    if quantity <= below {
                        break;
                    }
                    let top = tier.up_to.map_or(quantity, |u| u.min(quantity));
                    let units = top - below;
                    total = add(total, add(mul(units, tier.unit_amount)?, tier.flat_amount)?)?;
                    below = top;
                }
                Ok(total)
            }
            Self::Volume { tiers } => {
                let tier = tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|u| quantity <= u))
                    .ok_or_else(|| invalid("the last tier must be unbounded (no `up_to`)"))?;
                if quantity.is_zero() {
                    return Ok(Decimal::ZERO);
                }
                add(mul(quantity, tier.unit_amount)?, tier.flat_amount)
            }
            Self::Package { size, amount } => {
                let packages = quantity.checked_div(*size).ok_or_else(overflow)?.ceil();
                mul(packages, *amount)
            }
        }
    }
}

impl Price {
    /// Checks the description, the model and the included units.
    pub fn validate(&self) -> Result<()> {
        if self.description.trim().is_empty() || self.description.len() > 200 {
            return Err(invalid("a price's description must have 1–200 characters"));
        }
        if let PriceKind::Metered { meter } = &self.kind
            && (meter.is_empty() || meter.len() > 64)
        {
            return Err(invalid("a metered price names its meter (1–64 characters)"));
        }
        non_negative("the included units", self.included_units)?;
        self.pricing.validate()
    }

    /// The billable quantity: `quantity` less the included units, never below zero.
    #[must_use]
    pub fn billable(&self, quantity: Decimal) -> Decimal {
        (quantity - self.included_units).max(Decimal::ZERO)
    }

    /// The amount for `quantity` units (before included units are taken off), rounded
    /// to minor units of `currency` with the price's rounding. `InvalidInput` for a
    /// negative quantity or an amount out of range.
    pub fn amount(&self, quantity: Decimal, currency: Currency) -> Result<Money> {
        if quantity.is_sign_negative() && !quantity.is_zero() {
            return Err(Error::invalid(
                "quantity",
                format!("`{quantity}` is negative"),
            ));
        }
        let exact = self.pricing.exact_amount(self.billable(quantity))?;
        Money::from_decimal(exact, currency, self.rounding)
    }

    /// Whether it is billed in arrears from a meter.
    #[must_use]
    pub fn meter(&self) -> Option<&str> {
        match &self.kind {
            PriceKind::Metered { meter } => Some(meter),
            PriceKind::Fee => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                up_to: Some(d("100")),
                unit_amount: d("0.10"),
                flat_amount: d("0"),
            },
            Tier {
                up_to: Some(d("1000")),
                unit_amount: d("0.05"),
                flat_amount: d("1"),
            },
            Tier {
                up_to: None,
                unit_amount: d("0.01"),
                flat_amount: d("0"),
            },
        ]
    }

    fn price(pricing: PriceModel, included: &str) -> Price {
        Price {
            id: PriceId::new(),
            description: "calls".into(),
            kind: PriceKind::Metered {
                meter: "calls".into(),
            },
            pricing,
            included_units: d(included),
            rounding: Rounding::HalfEven,
        }
    }

    #[test]
    fn models_price_quantities() -> Result<()> {
        let usd = Currency::parse("USD")?;
        let jpy = Currency::parse("JPY")?;
        let graduated = price(PriceModel::Graduated { tiers: tiers() }, "0");
        // 100 × 0.10 + (1 + 900 × 0.05) + 500 × 0.01 = 10 + 46 + 5
        assert_eq!(graduated.amount(d("1500"), usd)?.minor, 6_100);
        assert_eq!(graduated.amount(d("0"), usd)?.minor, 0);
        let volume = price(PriceModel::Volume { tiers: tiers() }, "0");
        assert_eq!(volume.amount(d("1500"), usd)?.minor, 1_500);
        assert_eq!(volume.amount(d("500"), usd)?.minor, 2_600);
        let package = price(
            PriceModel::Package {
                size: d("1000"),
                amount: d("2.5"),
            },
            "100",
        );
        assert_eq!(package.amount(d("1100"), usd)?.minor, 250);
        assert_eq!(package.amount(d("1101"), usd)?.minor, 500);
        let per_unit = price(
            PriceModel::PerUnit {
                unit_amount: d("0.4"),
            },
            "10",
        );
        assert_eq!(per_unit.amount(d("13"), jpy)?.minor, 1);
        assert_eq!(per_unit.amount(d("5"), jpy)?.minor, 0);
        assert!(per_unit.amount(d("-1"), jpy).is_err());
        Ok(())
    }

    #[test]
    fn malformed_tiers_are_refused() {
        let mut bad = tiers();
        bad.swap(0, 1);
        assert!(PriceModel::Graduated { tiers: bad }.validate().is_err());
        let mut bounded = tiers();
        bounded.pop();
        assert!(PriceModel::Volume { tiers: bounded }.validate().is_err());
        assert!(PriceModel::Graduated { tiers: vec![] }.validate().is_err());
        assert!(
            PriceModel::Package {
                size: d("0"),
                amount: d("1")
            }
            .validate()
            .is_err()
        );
        assert!(
            PriceModel::PerUnit {
                unit_amount: d("-1")
            }
            .validate()
            .is_err()
        );
    }
}
