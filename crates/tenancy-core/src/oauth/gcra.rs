//! The generic cell rate algorithm (GCRA) behind every [`super::RateLimiter`]: one
//! stored instant per key, the theoretical arrival time (`tat`) of the next request.
//!
//! With `interval = period / burst`, a request at `now` is allowed when
//! `tat - now <= (burst - 1) * interval` (the burst tolerance: `period - interval` up
//! to rounding to whole microseconds); it then moves `tat` to `max(tat, now) + interval`.
//! A refused request leaves `tat` unchanged and may retry after
//! `tat - now - tolerance`. Times are whole microseconds since the Unix epoch.

use super::store::{Quota, RateDecision};
use crate::error::{Error, Result};

/// The per-quota constants of the algorithm, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval: `period / burst`.
    pub(crate) interval: i64,
    /// How far ahead of `now` the `tat` may be for a request to pass.
    pub(crate) tolerance: i64,
}

impl Gcra {
    /// The constants of `quota`; `InvalidInput` on field `quota` when the burst is zero
    /// or the period leaves less than a microsecond per request.
    pub(crate) fn new(quota: Quota) -> Result<Self> {
        if quota.burst == 0 {
            return Err(Error::invalid("quota", "burst must be at least 1"));
        }
        let period = i64::try_from(quota.period.as_micros())
            .map_err(|_| Error::invalid("quota", "period is too long"))?;
        let interval = period / i64::from(quota.burst);
        if interval < 1 {
            return Err(Error::invalid(
                "quota",
                format!(
                    "a period of {period} µs leaves less than a microsecond per request for a burst of {}",
                    quota.burst
                ),
            ));
        }
        let tolerance = interval.saturating_mul(i64::from(quota.burst) - 1);
        Ok(Self {
            interval,
            tolerance,
        })
    }

    /// Decides a request at `now` given the stored `tat` (none: a new key). Returns the
    /// decision and, when allowed, the `tat` to store.
    pub(crate) fn check(self, tat: Option<i64>, now: i64) -> (RateDecision, Option<i64>) {
        let tat = tat.map_or(now, |t| t.max(now));
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            let wait = ahead.saturating_sub(self.tolerance);
            let retry_after = std::time::Duration::from_micros(u64::try_from(wait).unwrap_or(0));
            (RateDecision::Limited { retry_after }, None)
        } else {
            (
                RateDecision::Allowed,
                Some(tat.saturating_add(self.interval)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quota(burst: u32, ms: u64) -> Quota {
        Quota {
            burst,
            period: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_burst_passes_then_one_interval_must_pass() {
        let gcra = Gcra::new(quota(3, 300)).unwrap();
        assert_eq!(gcra.interval, 100_000);
        let mut tat = None;
        for _ in 0..3 {
            let (decision, next) = gcra.check(tat, 0);
            assert_eq!(decision, RateDecision::Allowed);
            tat = next;
        }
        let (decision, next) = gcra.check(tat, 0);
        assert_eq!(
            decision,
            RateDecision::Limited {
                retry_after: Duration::from_millis(100)
            }
        );
        assert!(next.is_none());
        assert_eq!(gcra.check(tat, 100_000).0, RateDecision::Allowed);
        assert_eq!(
            gcra.check(tat, 99_999).0,
            RateDecision::Limited {
                retry_after: Duration::from_micros(1)
            }
        );
    }

    #[test]
    fn bad_quotas_are_refused() {
        assert_eq!(
            Gcra::new(quota(0, 1000)).unwrap_err().field(),
            Some("quota")
        );
        assert!(
            Gcra::new(Quota {
                burst: 10,
                period: Duration::from_micros(5)
            })
            .is_err()
        );
    }
}
