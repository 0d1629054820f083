//! Money: integer minor units of an ISO 4217 currency, checked arithmetic, decimal
//! unit prices rounded with an explicit [`Rounding`], and exact allocation of a total
//! over parts (largest remainder), so invoice lines always add up to the total.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result};

/// An ISO 4217 currency this crate knows: its alphabetic code and the number of
/// digits of its minor unit (JPY 0, USD 2, KWD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

/// The currencies of [`Currency::parse`], with their minor-unit digits (ISO 4217).
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

impl Currency {
    /// The currency with alphabetic code `code` (upper case, e.g. `EUR`);
    /// `InvalidInput` on field `currency` for a code this crate does not know.
    pub fn parse(code: &str) -> Result<Self> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, exponent)| Self { code, exponent })
            .ok_or_else(|| {
                Error::invalid(
                    "currency",
                    format!("`{code}` is not a supported ISO 4217 currency code"),
                )
            })
    }

    /// The alphabetic code, e.g. `USD`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        self.code
    }

    /// Digits of the minor unit: 2 for USD (cents), 0 for JPY, 3 for KWD.
    #[must_use]
    pub const fn exponent(self) -> u32 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// How a decimal amount becomes whole minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest unit, ties to the even one (banker's rounding): unbiased over
    /// many lines. The default.
    #[default]
    HalfEven,
    /// To the nearest unit, ties away from zero (the usual commercial rounding).
    HalfUp,
    /// Away from zero: never undercharges.
    Up,
    /// Toward zero: never overcharges.
    Down,
}

impl Rounding {
    const fn strategy(self) -> RoundingStrategy {
        match self {
            Self::HalfEven => RoundingStrategy::MidpointNearestEven,
            Self::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Self::Up => RoundingStrategy::AwayFromZero,
            Self::Down => RoundingStrategy::ToZero,
        }
    }
}

/// An amount of money: whole minor units (cents, yen, fils) of one currency. Never a
/// float; arithmetic is checked (overflow and mixed currencies are errors, never a
/// wrap or a silent conversion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in minor units (may be negative: credits).
    pub minor: i64,
    /// Its currency.
    pub currency: Currency,
}

fn overflow(what: &str) -> Error {
    Error::invalid("amount", format!("{what} is out of range"))
}

impl Money {
    /// `minor` units of `currency`.
    #[must_use]
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Nothing, in `currency`.
    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// A decimal amount in major units (e.g. `12.345` USD) rounded to minor units
    /// with `rounding`. `InvalidInput` on `amount` when out of range.
    pub fn from_decimal(amount: Decimal, currency: Currency, rounding: Rounding) -> Result<Self> {
        let scaled = amount
            .checked_mul(Decimal::from(10i64.pow(currency.exponent)))
            .ok_or_else(|| overflow("the amount"))?
            .round_dp_with_strategy(0, rounding.strategy());
        let minor = i64::try_from(scaled).map_err(|_| overflow("the amount"))?;
        Ok(Self::new(minor, currency))
    }

    /// The amount in major units, exactly (e.g. `12.35` for 1,235 cents).
    #[must_use]
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent)
    }

    fn same_currency(self, other: Self) -> Result<()> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(Error::invalid(
                "currency",
                format!(
                    "cannot combine `{}` with `{}`",
                    self.currency, other.currency
                ),
            ))
        }
    }

    /// `self + other`; `InvalidInput` for different currencies or on overflow.
    pub fn checked_add(self, other: Self) -> Result<Self> {
        self.same_currency(other)?;
        self.minor
            .checked_add(other.minor)
            .map(|minor| Self::new(minor, self.currency))
            .ok_or_else(|| overflow("the sum"))
    }

    /// `self - other`; `InvalidInput` for different currencies or on overflow.
    pub fn checked_sub(self, other: Self) -> Result<Self> {
        self.same_currency(other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Self::new(minor, self.currency))
            .ok_or_else(|| overflow("the difference"))
    }

    /// `self × n`; `InvalidInput` on overflow.
    pub fn checked_mul(self, n: i64) -> Result<Self> {
        self.minor
            .checked_mul(n)
            .map(|minor| Self::new(minor, self.currency))
            .ok_or_else(|| overflow("the product"))
    }

    /// The sum of `amounts` in `currency` (0 for none); `InvalidInput` for another
    /// currency or on overflow.
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Self>) -> Result<Self> {
        amounts
            .into_iter()
            .try_fold(Self::zero(currency), Self::checked_add)
    }

    /// `self` split over parts in proportion to `weights`, exactly: the parts add up
    /// to `self` to the minor unit. Each part gets the floor of its exact share;
    /// the units left over go one each to the parts with the largest remainders
    /// (ties: the earlier part), so no part is off its exact share by a unit or more.
    /// `InvalidInput` on field `weights` when there are none, one is negative or all
    /// are zero.
    pub fn allocate(self, weights: &[Decimal]) -> Result<Vec<Self>> {
        if weights.is_empty() {
            return Err(Error::invalid("weights", "at least one weight is needed"));
        }
        if weights.iter().any(Decimal::is_sign_negative) {
            return Err(Error::invalid("weights", "weights must not be negative"));
        }
        let total = weights
            .iter()
            .try_fold(Decimal::ZERO, |acc, w| acc.checked_add(*w))
            .ok_or_else(|| overflow("the sum of the weights"))?;
        if total.is_zero() {
            return Err(Error::invalid(
                "weights",
                "at least one weight must be positive",
            ));
        }
        let sign = if self.minor < 0 { -1 } else { 1 };
        let amount = Decimal::from(self.minor.unsigned_abs());
        let mut parts = Vec::with_capacity(weights.len());
        let mut remainders = Vec::with_capacity(weights.len());
        let mut given: i64 = 0;
        for (index, weight) in weights.iter().enumerate() {
            let exact = amount
                .checked_mul(*weight)
                .and_then(|p| p.checked_div(total))
                .ok_or_else(|| overflow("a share"))?;
            let floor = exact.floor();
            let whole = i64::try_from(floor).map_err(|_| overflow("a share"))?;
            given = given
                .checked_add(whole)
                .ok_or_else(|| overflow("a share"))?;
            parts.push(whole);
            remainders.push((exact - floor, index));
        }
        let mut left =
            i64::try_from(self.minor.unsigned_abs()).map_err(|_| overflow("the amount"))? - given;
        // Largest remainder first; the earlier part wins a tie.
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, index) in remainders {
            if left <= 0 {
                break;
            }
            if let Some(part) = parts.get_mut(index) {
                *part += 1;
                left -= 1;
            }
        }
        Ok(parts
            .into_iter()
            .map(|p| Self::new(sign * p, self.currency))
            .collect())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(usd().exponent(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        let err = Currency::parse("usd").unwrap_err();
        assert!(err.to_string().contains("`usd`"), "{err}");
        assert!(Currency::parse("XXX").is_err());
        let json = serde_json::to_string(&Money::new(1234, usd())).unwrap();
        assert_eq!(json, r#"{"minor":1234,"currency":"USD"}"#);
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"ABC"}"#).is_err());
    }

    #[test]
    fn decimals_round_as_asked() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let at = |s: &str, c: &str, r: Rounding| {
            Money::from_decimal(d(s), Currency::parse(c).unwrap(), r)
                .unwrap()
                .minor
        };
        assert_eq!(at("12.345", "USD", Rounding::HalfEven), 1234);
        assert_eq!(at("12.355", "USD", Rounding::HalfEven), 1236);
        assert_eq!(at("12.345", "USD", Rounding::HalfUp), 1235);
        assert_eq!(at("12.341", "USD", Rounding::Up), 1235);
        assert_eq!(at("12.349", "USD", Rounding::Down), 1234);
        assert_eq!(at("-12.345", "USD", Rounding::HalfUp), -1235);
        assert_eq!(at("1234.5", "JPY", Rounding::HalfEven), 1234);
        assert_eq!(at("1.2345", "KWD", Rounding::HalfUp), 1235);
        assert_eq!(Money::new(1235, usd()).to_decimal(), d("12.35"));
        assert_eq!(Money::new(1235, usd()).to_string(), "12.35 USD");
        assert!(Money::from_decimal(Decimal::MAX, usd(), Rounding::HalfEven).is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        let eur = Currency::parse("EUR").unwrap();
        let err = Money::new(1, usd())
            .checked_add(Money::new(1, eur))
            .unwrap_err();
        assert!(err.to_string().contains("`USD`"), "{err}");
        assert!(
            Money::new(i64::MAX, usd())
                .checked_add(Money::new(1, usd()))
                .is_err()
        );
        assert!(
            Money::new(i64::MIN, usd())
                .checked_sub(Money::new(1, usd()))
                .is_err()
        );
        assert!(Money::new(i64::MAX / 2 + 1, usd()).checked_mul(2).is_err());
        assert_eq!(
            Money::sum(usd(), [Money::new(5, usd()), Money::new(-2, usd())]).unwrap(),
            Money::new(3, usd())
        );
    }

    #[test]
    fn allocation_uses_the_largest_remainders() {
        let thirds = [Decimal::ONE; 3];
        let parts: Vec<i64> = Money::new(100, usd())
            .allocate(&thirds)
            .unwrap()
            .iter()
            .map(|m| m.minor)
            .collect();
        assert_eq!(parts, [34, 33, 33]);
        let parts: Vec<i64> = Money::new(-100, usd())
            .allocate(&thirds)
            .unwrap()
            .iter()
            .map(|m| m.minor)
            .collect();
        assert_eq!(parts, [-34, -33, -33]);
        let weights = [Decimal::new(1, 0), Decimal::new(2, 0), Decimal::new(7, 0)];
        let parts: Vec<i64> = Money::new(999, usd())
            .allocate(&weights)
            .unwrap()
            .iter()
            .map(|m| m.minor)
            .collect();
        // Exact shares 99.9, 199.8, 699.3: floors 99, 199, 699 leave 2 units for the
        // two largest remainders (0.9 and 0.8).
        assert_eq!(parts, [100, 200, 699]);
        assert!(Money::new(1, usd()).allocate(&[]).is_err());
        assert!(Money::new(1, usd()).allocate(&[Decimal::ZERO]).is_err());
        assert!(
            Money::new(1, usd())
                .allocate(&[Decimal::NEGATIVE_ONE, Decimal::TWO])
                .is_err()
        );
    }

    proptest! {
        /// Parts always add up to the total, and each is within one unit of its exact
        /// share.
        #[test]
        fn allocation_is_exact(
            minor in -1_000_000_000_000i64..1_000_000_000_000,
            weights in proptest::collection::vec(0u32..10_000, 1..40),
        ) {
            prop_assume!(weights.iter().any(|w| *w > 0));
            let weights: Vec<Decimal> = weights.into_iter().map(Decimal::from).collect();
            let parts = Money::new(minor, usd()).allocate(&weights).unwrap();
            let sum: i64 = parts.iter().map(|p| p.minor).sum();
            prop_assert_eq!(sum, minor);
            let total: Decimal = weights.iter().copied().sum();
            for (part, weight) in parts.iter().zip(&weights) {
                let exact = Decimal::from(minor) * weight / total;
                prop_assert!((Decimal::from(part.minor) - exact).abs() < Decimal::ONE);
            }
        }
    }
}
