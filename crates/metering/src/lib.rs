#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod consumer;
pub mod memory;
pub mod model;
#[cfg(feature = "redis")]
mod redis_quota;
pub mod rollup;
mod service;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod store;

pub use consumer::{ConsumerConfig, ConsumerStats, UsageConsumer};
pub use model::{
    Aggregation, DEFAULT_UNIQUE_BOUND, GroupTotal, IngestReport, MAX_BATCH, MAX_DATA_BYTES,
    MAX_DIMENSION_VALUE_CHARS, MAX_GROUP_BY, MAX_METERS, MAX_QUERY_WINDOWS, MAX_QUOTA_VALUE, Meter,
    MeterChanges, MeterKey, MeterTotal, NewMeter, PropertyPath, QUOTA_SCALE, Quota, QuotaBalance,
    QuotaDecision, QuotaLimit, QuotaMode, QuotaPeriod, Rejection, UsageEvent, UsageQuery, UsageRow,
    Window,
};
#[cfg(feature = "redis")]
pub use redis_quota::RedisQuotaCounter;
pub use service::{Metering, MeteringConfig, TenantDirectory};
pub use store::{Consumed, MeteringStore, QuotaCounter};
pub use tenancy_core::{Error, ErrorKind, Result};
