//! Where metered prices get their quantities: [`UsageSource`], implemented over
//! tenancy-metering's period totals ([`MeteringUsage`], feature `metering`) and by a
//! fixed table for embedding and tests ([`FixedUsage`]).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use rust_decimal::Decimal;
use tenancy_core::{Result, TenantId};

use crate::calendar::Period;

/// The usage totals of a tenant's meters over a billing period.
#[async_trait]
pub trait UsageSource: Send + Sync {
    /// The total of each of `meters` over `period` (missing meters count zero). Called
    /// after the period has ended; must be repeatable (the same answer every time
    /// once late events have settled), since a crashed invoice run asks again.
    async fn totals(
        &self,
        tenant: TenantId,
        period: Period,
        meters: &[String],
    ) -> Result<HashMap<String, Decimal>>;
}

/// Usage from a table set by hand: the same total for every period. For embedding,
/// demos and tests.
#[derive(Debug, Default)]
pub struct FixedUsage {
    totals: RwLock<HashMap<(TenantId, String), Decimal>>,
}

impl FixedUsage {
    /// No usage anywhere.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the total of `meter` for `tenant`.
    pub fn set(&self, tenant: TenantId, meter: &str, total: Decimal) {
        self.totals
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((tenant, meter.to_owned()), total);
    }
}

#[async_trait]
impl UsageSource for FixedUsage {
    async fn totals(
        &self,
        tenant: TenantId,
        _period: Period,
        meters: &[String],
    ) -> Result<HashMap<String, Decimal>> {
        let totals = self
            .totals
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(meters
            .iter()
            .map(|m| {
                let v = totals
                    .get(&(tenant, m.clone()))
                    .copied()
                    .unwrap_or_default();
                (m.clone(), v)
            })
            .collect())
    }
}

#[cfg(feature = "metering")]
pub use metering::MeteringUsage;

#[cfg(feature = "metering")]
mod metering {
    use std::collections::HashMap;
    use std::sync::Arc;

    use async_trait::async_trait;
    use rust_decimal::Decimal;
    use tenancy_core::{Result, TenantId};
    use tenancy_metering::Metering;

    use super::UsageSource;
    use crate::calendar::Period;

    /// Usage from tenancy-metering: each priced meter's total over the period, read
    /// from its rollups ([`Metering::period_totals_of`]). Periods must align to a
    /// window the priced meters keep (a meter keeping `day` windows bills periods starting at midnight
    /// UTC; keep `hour` or `minute` for periods anchored at other times).
    pub struct MeteringUsage {
        metering: Arc<Metering>,
    }

    impl MeteringUsage {
        /// Usage read from `metering`.
        #[must_use]
        pub fn new(metering: Arc<Metering>) -> Self {
            Self { metering }
        }
    }

    #[async_trait]
    impl UsageSource for MeteringUsage {
        async fn totals(
            &self,
            tenant: TenantId,
            period: Period,
            meters: &[String],
        ) -> Result<HashMap<String, Decimal>> {
            let keys: Vec<&str> = meters.iter().map(String::as_str).collect();
            let all = self
                .metering
                .period_totals_of(tenant, &keys, period.start, period.end)
                .await?;
            let mut out: HashMap<String, Decimal> =
                meters.iter().map(|m| (m.clone(), Decimal::ZERO)).collect();
            for total in all {
                if let Some(slot) = out.get_mut(total.meter.as_str()) {
                    *slot = total.value.unwrap_or_default();
                }
            }
            Ok(out)
        }
    }
}
