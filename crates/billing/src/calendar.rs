//! Billing calendars: intervals, periods anchored on a date, and proration by seconds.
//!
//! A subscription's periods are the anchor shifted by whole intervals, keeping the
//! anchor's time of day and its day of month, clamped to the month's length: an anchor
//! on January 31 gives periods ending February 28 (29 in a leap year), March 31,
//! April 30, …; a yearly anchor on February 29 ends on February 28 in common years and
//! on February 29 again in leap years. Periods never drift: each boundary is computed
//! from the anchor, not from the previous boundary.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result};

use crate::money::{Money, Rounding};

/// How often a plan bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Every calendar month.
    Month,
    /// Every calendar year.
    Year,
}

impl Interval {
    fn months(self) -> i64 {
        match self {
            Self::Month => 1,
            Self::Year => 12,
        }
    }

    /// The name used on the wire (`month`, `year`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

impl std::str::FromStr for Interval {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(Error::invalid(
                "interval",
                format!("`{other}` is not `month` or `year`"),
            )),
        }
    }
}

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// The first instant of the period.
    pub start: DateTime<Utc>,
    /// The first instant after it.
    pub end: DateTime<Utc>,
}

impl Period {
    /// `[start, end)`; `InvalidInput` on `period` unless `start < end`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self> {
        if start < end {
            Ok(Self { start, end })
        } else {
            Err(Error::invalid(
                "period",
                format!("`{start}` is not before `{end}`"),
            ))
        }
    }

    /// Whether `t` lies in the period.
    #[must_use]
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// Its length in whole seconds (sub-second parts count too, as fractions).
    #[must_use]
    pub fn seconds(&self) -> Decimal {
        seconds_between(self.start, self.end)
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX);
    Decimal::new(micros, 6)
}

fn out_of_range() -> Error {
    Error::invalid("period", "the date is out of the supported range")
}

/// The boundary `n` intervals after (or, for negative `n`, before) `anchor`: same time
/// of day, the anchor's day of month clamped to the target month's length.
pub fn shift(anchor: DateTime<Utc>, interval: Interval, n: i64) -> Result<DateTime<Utc>> {
    let months = n.checked_mul(interval.months()).ok_or_else(out_of_range)?;
    let month0 = i64::from(anchor.year()) * 12 + i64::from(anchor.month0());
    let target = month0.checked_add(months).ok_or_else(out_of_range)?;
    let year = i32::try_from(target.div_euclid(12)).map_err(|_| out_of_range())?;
    let month = u32::try_from(target.rem_euclid(12) + 1).map_err(|_| out_of_range())?;
    let day = anchor.day().min(days_in_month(year, month)?);
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(out_of_range)?;
    Ok(Utc.from_utc_datetime(&date.and_time(anchor.time())))
}

/// The number of days of `month` (1–12) of `year`.
pub fn days_in_month(year: i32, month: u32) -> Result<u32> {
    let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(out_of_range)?;
    let next = first
        .checked_add_months(Months::new(1))
        .ok_or_else(out_of_range)?;
    u32::try_from((next - first).num_days()).map_err(|_| out_of_range())
}

/// The period of the calendar anchored on `anchor` that contains `t`.
pub fn period_containing(
    anchor: DateTime<Utc>,
    interval: Interval,
    t: DateTime<Utc>,
) -> Result<Period> {
    let months = (i64::from(t.year()) - i64::from(anchor.year())) * 12
        + (i64::from(t.month0()) - i64::from(anchor.month0()));
    let mut n = months.div_euclid(interval.months());
    // The estimate is off by at most one interval either way.
    for _ in 0..4 {
        let start = shift(anchor, interval, n)?;
        let end = shift(anchor, interval, n + 1)?;
        if t < start {
            n -= 1;
        } else if t >= end {
            n += 1;
        } else {
            return Period::new(start, end);
        }
    }
    Err(out_of_range())
}

/// The first instant at or after `from` whose day of month is `day` (clamped to the
/// month's length) at midnight UTC: the anchor of a calendar billed "on the `day`th".
pub fn next_anchor_day(from: DateTime<Utc>, day: u32) -> Result<DateTime<Utc>> {
    if !(1..=31).contains(&day) {
        return Err(Error::invalid(
            "billing_anchor_day",
            format!("`{day}` is not a day of the month (1–31)"),
        ));
    }
    let mut year = from.year();
    let mut month = from.month();
    for _ in 0..2 {
        let d = day.min(days_in_month(year, month)?);
        let date = NaiveDate::from_ymd_opt(year, month, d).ok_or_else(out_of_range)?;
        let candidate = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).ok_or_else(out_of_range)?);
        if candidate >= from {
            return Ok(candidate);
        }
        (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
    }
    Err(out_of_range())
}

/// The share of `amount` (the price of the whole `period`) for `[from, to)`, clamped to
/// the period: `amount × seconds(from, to) / seconds(period)`, rounded with
/// `rounding`. Splitting a period into `n` pieces and prorating each gives pieces whose
/// sum is within `n − 1` minor units of `amount` (half-even rounding: within `n / 2`).
pub fn prorate(
    amount: Money,
    period: Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rounding: Rounding,
) -> Result<Money> {
    let from = from.clamp(period.start, period.end);
    let to = to.clamp(period.start, period.end);
    if to <= from {
        return Ok(Money::zero(amount.currency));
    }
    let share = seconds_between(from, to)
        .checked_div(period.seconds())
        .ok_or_else(out_of_range)?;
    let exact = amount
        .to_decimal()
        .checked_mul(share)
        .ok_or_else(out_of_range)?;
    Money::from_decimal(exact, amount.currency, rounding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Result<DateTime<Utc>> {
        s.parse::<DateTime<Utc>>()
            .map_err(|e| Error::invalid("t", e.to_string()))
    }

    #[test]
    fn month_ends_clamp_and_come_back() -> Result<()> {
        let anchor = at("2024-01-31T10:00:00Z")?;
        let ends: Vec<_> = (1..=4)
            .map(|n| shift(anchor, Interval::Month, n))
            .collect::<Result<_>>()?;
        assert_eq!(
            ends,
            vec![
                at("2024-02-29T10:00:00Z")?,
                at("2024-03-31T10:00:00Z")?,
                at("2024-04-30T10:00:00Z")?,
                at("2024-05-31T10:00:00Z")?,
            ]
        );
        assert_eq!(
            shift(at("2023-01-31T00:00:00Z")?, Interval::Month, 1)?,
            at("2023-02-28T00:00:00Z")?
        );
        assert_eq!(
            shift(anchor, Interval::Month, -2)?,
            at("2023-11-30T10:00:00Z")?
        );
        Ok(())
    }

    #[test]
    fn leap_day_yearly_anchor() -> Result<()> {
        let anchor = at("2024-02-29T00:00:00Z")?;
        assert_eq!(
            shift(anchor, Interval::Year, 1)?,
            at("2025-02-28T00:00:00Z")?
        );
        assert_eq!(
            shift(anchor, Interval::Year, 4)?,
            at("2028-02-29T00:00:00Z")?
        );
        Ok(())
    }

    #[test]
    fn period_containing_finds_the_right_period() -> Result<()> {
        let anchor = at("2024-01-31T10:00:00Z")?;
        let p = period_containing(anchor, Interval::Month, at("2024-03-01T00:00:00Z")?)?;
        assert_eq!(p.start, at("2024-02-29T10:00:00Z")?);
        assert_eq!(p.end, at("2024-03-31T10:00:00Z")?);
        let p = period_containing(anchor, Interval::Month, at("2024-03-31T10:00:00Z")?)?;
        assert_eq!(p.start, at("2024-03-31T10:00:00Z")?);
        let p = period_containing(anchor, Interval::Month, at("2023-12-31T09:59:59Z")?)?;
        assert_eq!(p.start, at("2023-11-30T10:00:00Z")?);
        Ok(())
    }

    #[test]
    fn anchor_day_clamps() -> Result<()> {
        assert_eq!(
            next_anchor_day(at("2025-02-10T12:00:00Z")?, 31)?,
            at("2025-02-28T00:00:00Z")?
        );
        assert_eq!(
            next_anchor_day(at("2025-02-10T12:00:00Z")?, 1)?,
            at("2025-03-01T00:00:00Z")?
        );
        assert!(next_anchor_day(at("2025-02-10T12:00:00Z")?, 0).is_err());
        Ok(())
    }

    #[test]
    fn prorate_by_seconds() -> Result<()> {
        let usd = crate::Currency::parse("USD")?;
        let period = Period::new(at("2024-04-01T00:00:00Z")?, at("2024-05-01T00:00:00Z")?)?;
        let half = prorate(
            Money::new(3_000, usd),
            period,
            at("2024-04-16T00:00:00Z")?,
            period.end,
            Rounding::HalfEven,
        )?;
        assert_eq!(half.minor, 1_500);
        let none = prorate(
            Money::new(3_000, usd),
            period,
            period.end,
            period.end,
            Rounding::HalfEven,
        )?;
        assert_eq!(none.minor, 0);
        Ok(())
    }
}
