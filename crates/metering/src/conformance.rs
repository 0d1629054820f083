//! The metering conformance suite (feature `conformance`): plain async functions that
//! every [`MeteringStore`] and [`QuotaCounter`] backend runs with a fresh store —
//! meters, rollups of every aggregation with late events and group-by, deduplication
//! forever, bad input, two-tenant isolation, several tenants in one ingest call, the
//! duplicate storm, the unique-count
//! bound, quota rules and the quota race. They panic (like any test) when a backend
//! breaks the contract documented on the traits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite reports failures by panicking"
)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use tenancy_core::clock::ManualClock;
use tenancy_core::{ErrorKind, TenantId};
use uuid::Uuid;

use crate::model::{
    Aggregation, MAX_BATCH, MeterChanges, MeterKey, NewMeter, QuotaLimit, QuotaMode, QuotaPeriod,
    UsageEvent, UsageQuery, UsageRow, Window,
};
use crate::service::{Metering, MeteringConfig};
use crate::store::{MeteringStore, QuotaCounter};

/// The suite's fixed "now": 2026-03-10 12:30 UTC.
#[must_use]
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 30, 0).unwrap()
}

fn at(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, h, m, s).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Metering over `store` with the suite's clock.
#[must_use]
pub fn metering(store: Arc<dyn MeteringStore>) -> (Metering, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now()));
    (Metering::new(store).with_clock(clock.clone()), clock)
}

/// An event of `tenant`.
#[must_use]
pub fn event(
    tenant: TenantId,
    event_type: &str,
    time: DateTime<Utc>,
    data: serde_json::Value,
) -> UsageEvent {
    UsageEvent {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        event_type: event_type.into(),
        source: "conformance".into(),
        subject: "subject-1".into(),
        time,
        data,
    }
}

fn meter(
    key: &str,
    event_type: &str,
    aggregation: Aggregation,
    value: Option<&str>,
    group_by: &[&str],
    windows: &[Window],
) -> NewMeter {
    NewMeter {
        key: key.into(),
        event_type: event_type.into(),
        aggregation,
        value_property: value.map(Into::into),
        group_by: group_by.iter().map(|s| (*s).into()).collect(),
        windows: windows.to_vec(),
        description: format!("{key} meter"),
    }
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(r: tenancy_core::Result<T>, kind: ErrorKind) {
    match r {
        Err(e) => assert_eq!(e.kind(), kind, "expected {kind:?}, got {e}"),
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
    }
}

#[track_caller]
fn assert_field<T: std::fmt::Debug>(r: tenancy_core::Result<T>, field: &str) {
    match r {
        Err(e) => assert_eq!(e.field(), Some(field), "expected field `{field}`: {e}"),
        Ok(v) => panic!("expected invalid `{field}`, got Ok({v:?})"),
    }
}

fn query(key: &str, from: DateTime<Utc>, to: DateTime<Utc>, window: Window) -> UsageQuery {
    UsageQuery {
        meter: key.into(),
        from,
        to,
        window,
        group_by: Vec::new(),
        filter: BTreeMap::new(),
    }
}

/// `(window start, group as "k=v,…", value, events)` of each row, to compare.
fn rows(r: &[UsageRow]) -> Vec<(DateTime<Utc>, String, Decimal, u64)> {
    r.iter()
        .map(|row| {
            let group = row
                .group
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            (row.window_start, group, row.value.normalize(), row.events)
        })
        .collect()
}

/// Meters: create, read, list (sorted), versioned update and delete; a duplicate key
/// is `AlreadyExists`, a stale version `Conflict`; the store refuses a record naming
/// another tenant.
pub async fn meters_crud(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store.clone());
    let t = TenantId::new();
    let tokens = meter(
        "tokens",
        "llm.completion",
        Aggregation::Sum,
        Some("usage.tokens"),
        &["model"],
        &[Window::Day, Window::Hour],
    );
    let created = m.create_meter(t, tokens.clone()).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.windows, [Window::Hour, Window::Day], "finest first");
    assert_kind(m.create_meter(t, tokens).await, ErrorKind::AlreadyExists);
    m.create_meter(
        t,
        meter(
            "api",
            "api.request",
            Aggregation::Count,
            None,
            &[],
            &[Window::Minute],
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.meter(t, "tokens").await.unwrap(), created);
    let keys: Vec<String> = m
        .list_meters(t)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.key.to_string())
        .collect();
    assert_eq!(keys, ["api", "tokens"]);
    assert_kind(m.meter(t, "nope").await, ErrorKind::NotFound);

    let changes = MeterChanges {
        description: Some("tokens by model and region".into()),
        group_by: Some(vec!["model".into(), "region".into()]),
        windows: None,
    };
    let updated = m
        .update_meter(t, "tokens", 1, changes.clone())
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.group_by.len(), 2);
    assert_eq!(m.meter(t, "tokens").await.unwrap(), updated);
    assert_kind(
        m.update_meter(t, "tokens", 1, changes).await,
        ErrorKind::Conflict,
    );
    // The store itself refuses a stale write.
    let mut stale = created.clone();
    stale.version = 2;
    assert_kind(store.update_meter(t, &stale).await, ErrorKind::Conflict);
    let mut foreign = updated.clone();
    foreign.tenant_id = TenantId::new();
    assert_kind(
        store.insert_meter(t, &foreign).await,
        ErrorKind::InvalidInput,
    );

    assert_kind(m.delete_meter(t, "tokens", 1).await, ErrorKind::Conflict);
    m.delete_meter(t, "tokens", 2).await.unwrap();
    assert_kind(m.meter(t, "tokens").await, ErrorKind::NotFound);
    assert_kind(m.delete_meter(t, "tokens", 2).await, ErrorKind::NotFound);
    assert_eq!(m.list_meters(t).await.unwrap().len(), 1);
}

/// Rollups of every aggregation, with group-by, events arriving late (into earlier
/// windows, within the lateness) and out of order; queries by minute, hour and day,
/// grouped, merged and filtered; period totals.
pub async fn rollups_every_aggregation(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store);
    let t = TenantId::new();
    let (h, d) = (Window::Hour, Window::Day);
    for new in [
        meter(
            "requests",
            "api.request",
            Aggregation::Count,
            None,
            &["region"],
            &[h, d],
        ),
        meter(
            "tokens",
            "llm.completion",
            Aggregation::Sum,
            Some("tokens"),
            &["model"],
            &[Window::Minute, h, d],
        ),
        meter(
            "latency_min",
            "api.request",
            Aggregation::Min,
            Some("latency_ms"),
            &[],
            &[h, d],
        ),
        meter(
            "latency_max",
            "api.request",
            Aggregation::Max,
            Some("latency_ms"),
            &[],
            &[d],
        ),
        meter(
            "seats",
            "seats.changed",
            Aggregation::Latest,
            Some("seats"),
            &[],
            &[d],
        ),
        meter(
            "users",
            "api.request",
            Aggregation::UniqueCount,
            Some("user"),
            &["region"],
            &[h, d],
        ),
    ] {
        m.create_meter(t, new).await.unwrap();
    }
    let req = |time, region: &str, latency: serde_json::Value, user: &str| {
        event(
            t,
            "api.request",
            time,
            serde_json::json!({ "region": region, "latency_ms": latency, "user": user }),
        )
    };
    let first = vec![
        req(at(10, 10, 15, 0), "eu", 120.into(), "u1"),
        req(at(10, 10, 45, 0), "eu", 80.into(), "u2"),
        req(at(10, 11, 5, 0), "us", 200.into(), "u1"),
        req(at(10, 12, 10, 0), "us", serde_json::json!(50.5), "u3"),
    ];
    let report = m.ingest(t, &first).await.unwrap();
    assert_eq!(report.accepted, [0, 1, 2, 3]);
    let late = vec![
        req(at(9, 23, 59, 59), "eu", 300.into(), "u1"),
        req(at(7, 8, 0, 0), "us", 10.into(), "u4"),
        req(at(10, 10, 20, 0), "eu", "95.25".into(), "u1"),
        req(at(2, 12, 0, 0), "eu", 1.into(), "u9"),
    ];
    let report = m.ingest(t, &late).await.unwrap();
    assert_eq!(report.accepted, [0, 1, 2]);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].index, 3);
    assert_eq!(report.rejected[0].field, "time", "{:?}", report.rejected[0]);
    assert!(report.rejected[0].reason.contains("7 days"));

    let llm = |time, model: &str, tokens: serde_json::Value| {
        event(
            t,
            "llm.completion",
            time,
            serde_json::json!({ "model": model, "tokens": tokens }),
        )
    };
    let report = m
        .ingest(
            t,
            &[
                llm(at(10, 10, 15, 30), "a", 100.into()),
                llm(at(10, 10, 15, 45), "a", 50.into()),
                llm(at(10, 10, 16, 0), "b", serde_json::json!(25.5)),
                llm(at(9, 9, 0, 0), "a", 1000.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.accepted.len(), 4);
    let seats = |time, n: i64| event(t, "seats.changed", time, serde_json::json!({ "seats": n }));
    m.ingest(t, &[seats(at(10, 9, 0, 0), 5), seats(at(10, 11, 0, 0), 7)])
        .await
        .unwrap();
    m.ingest(t, &[seats(at(10, 10, 0, 0), 3), seats(at(9, 10, 0, 0), 2)])
        .await
        .unwrap();

    let (d3, d1, d0, d_next) = (
        at(7, 0, 0, 0),
        at(9, 0, 0, 0),
        at(10, 0, 0, 0),
        at(11, 0, 0, 0),
    );
    let hour = |hh: u32| at(10, hh, 0, 0);
    let e = String::new;

    // count
    let r = m.query(t, &query("requests", d3, d_next, d)).await.unwrap();
    assert_eq!(
        rows(&r),
        [
            (d3, e(), dec("1"), 1),
            (d1, e(), dec("1"), 1),
            (d0, e(), dec("5"), 5)
        ]
    );
    assert_eq!(r[2].window_end, d_next);
    let mut q = query("requests", d0, d_next, h);
    q.group_by = vec!["region".into()];
    let r = m.query(t, &q).await.unwrap();
    assert_eq!(
        rows(&r),
        [
            (hour(10), "region=eu".into(), dec("3"), 3),
            (hour(11), "region=us".into(), dec("1"), 1),
            (hour(12), "region=us".into(), dec("1"), 1),
        ]
    );
    let mut q = query("requests", d3, d_next, d);
    q.filter.insert("region".into(), "eu".into());
    let r = m.query(t, &q).await.unwrap();
    assert_eq!(rows(&r), [(d1, e(), dec("1"), 1), (d0, e(), dec("3"), 3)]);

    // min and max (a late numeric string lands in its hour)
    let r = m
        .query(t, &query("latency_min", d0, d_next, h))
        .await
        .unwrap();
    assert_eq!(
        rows(&r),
        [
            (hour(10), e(), dec("80"), 3),
            (hour(11), e(), dec("200"), 1),
            (hour(12), e(), dec("50.5"), 1)
        ]
    );
    let r = m
        .query(t, &query("latency_min", d3, d_next, d))
        .await
        .unwrap();
    assert_eq!(
        rows(&r),
        [
            (d3, e(), dec("10"), 1),
            (d1, e(), dec("300"), 1),
            (d0, e(), dec("50.5"), 5)
        ]
    );
    let r = m
        .query(t, &query("latency_max", d3, d_next, d))
        .await
        .unwrap();
    assert_eq!(
        rows(&r),
        [
            (d3, e(), dec("10"), 1),
            (d1, e(), dec("300"), 1),
            (d0, e(), dec("200"), 5)
        ]
    );

    // sum by minute and by day per group
    let r = m
        .query(
            t,
            &query(
                "tokens",
                at(10, 10, 0, 0),
                at(10, 10, 20, 0),
                Window::Minute,
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&r),
        [
            (at(10, 10, 15, 0), e(), dec("150"), 2),
            (at(10, 10, 16, 0), e(), dec("25.5"), 1)
        ]
    );
    let mut q = query("tokens", d1, d_next, d);
    q.group_by = vec!["model".into()];
    let r = m.query(t, &q).await.unwrap();
    assert_eq!(
        rows(&r),
        [
            (d1, "model=a".into(), dec("1000"), 1),
            (d0, "model=a".into(), dec("150"), 2),
            (d0, "model=b".into(), dec("25.5"), 1),
        ]
    );

    // latest: a late event with an earlier time does not replace a later one
    let r = m.query(t, &query("seats", d1, d_next, d)).await.unwrap();
    assert_eq!(rows(&r), [(d1, e(), dec("2"), 1), (d0, e(), dec("7"), 3)]);

    // unique count: merged across groups it counts the union, not the sum
    let r = m.query(t, &query("users", d3, d_next, d)).await.unwrap();
    assert_eq!(
        rows(&r),
        [
            (d3, e(), dec("1"), 1),
            (d1, e(), dec("1"), 1),
            (d0, e(), dec("3"), 5)
        ]
    );
    let mut q = query("users", d0, d_next, d);
    q.group_by = vec!["region".into()];
    let r = m.query(t, &q).await.unwrap();
    assert_eq!(
        rows(&r),
        [
            (d0, "region=eu".into(), dec("2"), 3),
            (d0, "region=us".into(), dec("2"), 2)
        ]
    );
    let mut q = query("users", d0, d_next, h);
    q.filter.insert("region".into(), "eu".into());
    let r = m.query(t, &q).await.unwrap();
    assert_eq!(rows(&r), [(hour(10), e(), dec("2"), 3)]);

    // period totals, read from day rollups
    let totals = m.period_totals(t, d3, d_next).await.unwrap();
    let by_key: BTreeMap<String, _> = totals.iter().map(|x| (x.meter.to_string(), x)).collect();
    assert_eq!(by_key.len(), 6);
    let total = |k: &str| by_key[k].value.map(|v| v.normalize());
    assert_eq!(total("requests"), Some(dec("7")));
    assert_eq!(total("tokens"), Some(dec("1175.5")));
    assert_eq!(total("latency_min"), Some(dec("10")));
    assert_eq!(total("latency_max"), Some(dec("300")));
    assert_eq!(total("seats"), Some(dec("7")));
    assert_eq!(total("users"), Some(dec("4")));
    assert_eq!(by_key["requests"].events, 7);
    assert_eq!(by_key["tokens"].window, Window::Day);
    let groups = |k: &str| -> Vec<(String, Decimal)> {
        by_key[k]
            .groups
            .iter()
            .map(|g| {
                let name = g.group.values().cloned().collect::<Vec<_>>().join(",");
                (name, g.value.normalize())
            })
            .collect()
    };
    assert_eq!(
        groups("requests"),
        [("eu".into(), dec("4")), ("us".into(), dec("3"))]
    );
    assert_eq!(
        groups("tokens"),
        [("a".into(), dec("1150")), ("b".into(), dec("25.5"))]
    );
    assert_eq!(
        groups("users"),
        [("eu".into(), dec("2")), ("us".into(), dec("3"))]
    );

    // an hour-aligned period is read from hour rollups where kept; a meter keeping
    // only days cannot answer it
    assert_field(m.period_totals(t, hour(10), hour(12)).await, "from");
    let empty = m
        .period_totals(t, at(1, 0, 0, 0), at(2, 0, 0, 0))
        .await
        .unwrap();
    let by_key: BTreeMap<String, _> = empty.iter().map(|x| (x.meter.to_string(), x)).collect();
    assert_eq!(by_key["requests"].value, Some(Decimal::ZERO));
    assert_eq!(by_key["latency_min"].value, None);
    assert!(by_key["users"].groups.is_empty());
}

/// An event id is accepted once per tenant forever: again in a later batch (even
/// with other data), twice in one batch, and across meter windows.
pub async fn dedup_forever(store: Arc<dyn MeteringStore>) {
    let (m, clock) = metering(store);
    let t = TenantId::new();
    m.create_meter(
        t,
        meter(
            "tokens",
            "llm",
            Aggregation::Sum,
            Some("n"),
            &[],
            &[Window::Day],
        ),
    )
    .await
    .unwrap();
    let a = event(t, "llm", at(10, 12, 0, 0), serde_json::json!({ "n": 10 }));
    let b = event(t, "llm", at(10, 12, 1, 0), serde_json::json!({ "n": 5 }));
    let r = m
        .ingest(t, &[a.clone(), b.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (vec![0, 1], vec![2]));
    clock.advance(Duration::days(3));
    let mut changed = a.clone();
    changed.data = serde_json::json!({ "n": 1000 });
    changed.time = at(11, 0, 0, 0);
    let c = event(t, "llm", at(12, 0, 0, 0), serde_json::json!({ "n": 1 }));
    let r = m.ingest(t, &[changed, c.clone(), b]).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (vec![1], vec![0, 2]));
    assert!(!m.ingest_event(t, &c).await.unwrap(), "a duplicate");
    let totals = m
        .period_totals(t, at(1, 0, 0, 0), at(20, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(totals[0].value, Some(dec("16")));
    assert_eq!(totals[0].events, 3);
}

/// Bad input is refused naming the field and changes nothing: batches over the
/// limit, events that do not fit their meter (the valid rest is accepted), unknown
/// tenants, invalid meter definitions, queries and quota values.
pub async fn bad_input(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store);
    let t = TenantId::new();
    m.create_meter(
        t,
        meter(
            "tokens",
            "llm",
            Aggregation::Sum,
            Some("usage.tokens"),
            &["model"],
            &[Window::Hour, Window::Day],
        ),
    )
    .await
    .unwrap();
    m.create_meter(
        t,
        meter(
            "users",
            "llm",
            Aggregation::UniqueCount,
            Some("user"),
            &[],
            &[Window::Day],
        ),
    )
    .await
    .unwrap();
    let ok = |n: serde_json::Value| {
        event(
            t,
            "llm",
            at(10, 12, 0, 0),
            serde_json::json!({ "usage": { "tokens": n }, "model": "a", "user": "u1" }),
        )
    };

    let too_many: Vec<UsageEvent> = (0..=MAX_BATCH).map(|_| ok(1.into())).collect();
    assert_field(m.ingest(t, &too_many).await, "events");

    let mut other_tenant = ok(1.into());
    other_tenant.tenant_id = TenantId::new();
    let mut too_late = ok(1.into());
    too_late.time = now() - Duration::days(8);
    let mut future = ok(1.into());
    future.time = now() + Duration::hours(1);
    let mut nil = ok(1.into());
    nil.id = Uuid::nil();
    let mut not_object = ok(1.into());
    not_object.data = serde_json::json!([1, 2]);
    let mut object_group = ok(1.into());
    object_group.data["model"] = serde_json::json!({ "nested": true });
    let mut no_user = ok(1.into());
    no_user.data.as_object_mut().unwrap().remove("user");
    let mut empty_type = ok(1.into());
    empty_type.event_type = String::new();
    let batch = vec![
        ok(1.into()), // 0 ok
        event(
            t,
            "llm",
            at(10, 12, 0, 0),
            serde_json::json!({ "model": "a", "user": "u" }),
        ), // 1 missing value
        ok(true.into()), // 2 wrong type
        ok("twelve".into()), // 3 not numeric
        other_tenant, // 4
        too_late,     // 5
        future,       // 6
        nil,          // 7
        not_object,   // 8
        object_group, // 9
        no_user,      // 10
        ok("2.5".into()), // 11 ok
        empty_type,   // 12
        event(t, "other.type", at(10, 12, 0, 0), serde_json::json!({})), // 13 ok, no meter
    ];
    let r = m.ingest(t, &batch).await.unwrap();
    assert_eq!(r.accepted, [0, 11, 13]);
    assert!(r.duplicates.is_empty());
    let refused: Vec<(usize, &str)> = r
        .rejected
        .iter()
        .map(|x| (x.index, x.field.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (1, "data.usage.tokens"),
            (2, "data.usage.tokens"),
            (3, "data.usage.tokens"),
            (4, "tenant_id"),
            (5, "time"),
            (6, "time"),
            (7, "id"),
            (8, "data"),
            (9, "data.model"),
            (10, "data.user"),
            (12, "type"),
        ]
    );
    assert!(
        r.rejected[0]
            .reason
            .contains("missing value property `usage.tokens` of meter `tokens`"),
        "{}",
        r.rejected[0].reason
    );
    assert!(
        r.rejected[1].reason.contains("got a boolean"),
        "{}",
        r.rejected[1].reason
    );
    let totals = m
        .period_totals(t, at(10, 0, 0, 0), at(11, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(
        totals[0].value,
        Some(dec("3.5")),
        "only the valid events count"
    );
    assert_field(
        m.ingest_event(t, &ok(false.into())).await,
        "data.usage.tokens",
    );

    // An unknown tenant: every event is rejected.
    let identity =
        tenancy_core::identity::Identity::new(Arc::new(tenancy_core::memory::MemoryStore::new()));
    let guarded = m.clone().with_tenants(Arc::new(identity));
    let r = guarded
        .ingest(t, &[ok(1.into()), ok(2.into())])
        .await
        .unwrap();
    assert!(r.accepted.is_empty());
    assert_eq!(r.rejected.len(), 2);
    assert_eq!(r.rejected[1].field, "tenant_id");
    assert!(r.rejected[1].reason.contains("unknown tenant"));

    // Invalid meter definitions name the field.
    let base = meter(
        "m",
        "e",
        Aggregation::Sum,
        Some("v"),
        &["a"],
        &[Window::Day],
    );
    let cases: Vec<(NewMeter, &str)> = vec![
        (
            NewMeter {
                key: "Bad Key".into(),
                ..base.clone()
            },
            "key",
        ),
        (
            NewMeter {
                key: String::new(),
                ..base.clone()
            },
            "key",
        ),
        (
            NewMeter {
                event_type: String::new(),
                ..base.clone()
            },
            "event_type",
        ),
        (
            NewMeter {
                value_property: None,
                ..base.clone()
            },
            "value_property",
        ),
        (
            NewMeter {
                aggregation: Aggregation::Count,
                ..base.clone()
            },
            "value_property",
        ),
        (
            NewMeter {
                value_property: Some("a..b".into()),
                ..base.clone()
            },
            "value_property",
        ),
        (
            NewMeter {
                group_by: vec!["ok".into(), "not ok".into()],
                ..base.clone()
            },
            "group_by[1]",
        ),
        (
            NewMeter {
                group_by: vec!["a".into(), "a".into()],
                ..base.clone()
            },
            "group_by[1]",
        ),
        (
            NewMeter {
                group_by: (0..9).map(|i| format!("g{i}")).collect(),
                ..base.clone()
            },
            "group_by",
        ),
        (
            NewMeter {
                windows: vec![],
                ..base.clone()
            },
            "windows",
        ),
        (
            NewMeter {
                windows: vec![Window::Day, Window::Day],
                ..base.clone()
            },
            "windows",
        ),
        (
            NewMeter {
                description: "x".repeat(2000),
                ..base.clone()
            },
            "description",
        ),
    ];
    for (new, field) in cases {
        assert_field(m.create_meter(t, new).await, field);
    }
    assert_kind(m.meter(t, "m").await, ErrorKind::NotFound);
    assert_field(
        m.update_meter(
            t,
            "tokens",
            1,
            MeterChanges {
                windows: Some(vec![]),
                ..Default::default()
            },
        )
        .await,
        "windows",
    );

    // Queries.
    let d0 = at(10, 0, 0, 0);
    assert_field(
        m.query(t, &query("tokens", d0, at(11, 0, 0, 0), Window::Minute))
            .await,
        "window",
    );
    assert_field(
        m.query(
            t,
            &query("tokens", at(10, 0, 0, 1), at(11, 0, 0, 0), Window::Day),
        )
        .await,
        "from",
    );
    assert_field(
        m.query(t, &query("tokens", d0, at(10, 12, 30, 0), Window::Hour))
            .await,
        "to",
    );
    assert_field(
        m.query(t, &query("tokens", d0, d0, Window::Day)).await,
        "to",
    );
    let mut q = query("tokens", d0, at(11, 0, 0, 0), Window::Day);
    q.group_by = vec!["region".into()];
    assert_field(m.query(t, &q).await, "group_by[0]");
    let mut q = query("tokens", d0, at(11, 0, 0, 0), Window::Day);
    q.filter.insert("region".into(), "eu".into());
    assert_field(m.query(t, &q).await, "filter.region");
    assert_field(
        m.query(t, &query("BAD", d0, at(11, 0, 0, 0), Window::Day))
            .await,
        "meter",
    );
    assert_kind(
        m.query(t, &query("nope", d0, at(11, 0, 0, 0), Window::Day))
            .await,
        ErrorKind::NotFound,
    );

    // Quotas.
    let limit = |l: &str| QuotaLimit {
        period: QuotaPeriod::Day,
        limit: dec(l),
        mode: QuotaMode::Hard,
    };
    assert_field(m.set_quota(t, "tokens", limit("1.00001")).await, "limit");
    assert_field(m.set_quota(t, "tokens", limit("-1")).await, "limit");
    assert_field(
        m.set_quota(t, "tokens", limit("100000000001")).await,
        "limit",
    );
    assert_kind(
        m.set_quota(t, "nope", limit("1")).await,
        ErrorKind::NotFound,
    );
    m.set_quota(t, "tokens", limit("10")).await.unwrap();
    assert_field(m.check_and_consume(t, "tokens", dec("0")).await, "amount");
    assert_field(m.check_and_consume(t, "tokens", dec("-1")).await, "amount");
    assert_field(
        m.check_and_consume(t, "tokens", dec("0.00001")).await,
        "amount",
    );
    assert_eq!(m.balance(t, "tokens").await.unwrap().used, Decimal::ZERO);
}

/// Two tenants with the same meter key and the same event ids: both accepted, each
/// sees only its own meters, rollups and quotas; deleting in one leaves the other.
pub async fn tenant_isolation(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store.clone());
    let (a, b) = (TenantId::new(), TenantId::new());
    let def = meter(
        "api",
        "api.request",
        Aggregation::Count,
        None,
        &[],
        &[Window::Day],
    );
    m.create_meter(a, def.clone()).await.unwrap();
    m.create_meter(b, def).await.unwrap();
    m.create_meter(
        a,
        meter(
            "only_a",
            "api.request",
            Aggregation::UniqueCount,
            Some("user"),
            &[],
            &[Window::Day],
        ),
    )
    .await
    .unwrap();
    let events_a: Vec<UsageEvent> = (0..5)
        .map(|i| {
            event(
                a,
                "api.request",
                at(10, 12, i, 0),
                serde_json::json!({ "user": format!("u{i}") }),
            )
        })
        .collect();
    let events_b: Vec<UsageEvent> = events_a
        .iter()
        .take(3)
        .map(|e| UsageEvent {
            tenant_id: b,
            ..e.clone()
        })
        .collect();
    assert_eq!(m.ingest(a, &events_a).await.unwrap().accepted.len(), 5);
    assert_eq!(
        m.ingest(b, &events_b).await.unwrap().accepted.len(),
        3,
        "the same ids are new in another tenant"
    );
    // A call scoped to one tenant cannot write the other's events.
    let r = m.ingest(a, &events_b).await.unwrap();
    assert_eq!(r.rejected.len(), 3);
    let leaked = store
        .rollups(
            b,
            &MeterKey::parse("meter", "only_a").unwrap(),
            Window::Day,
            0,
            i64::MAX,
        )
        .await
        .unwrap();
    assert!(
        leaked.is_empty(),
        "tenant B reads no rollups of tenant A's meter"
    );

    let api_day = query("api", at(10, 0, 0, 0), at(11, 0, 0, 0), Window::Day);
    let day = |t| m.query(t, &api_day);
    assert_eq!(day(a).await.unwrap()[0].value, dec("5"));
    assert_eq!(day(b).await.unwrap()[0].value, dec("3"));
    assert_kind(m.meter(b, "only_a").await, ErrorKind::NotFound);
    assert_eq!(m.list_meters(b).await.unwrap().len(), 1);
    assert_eq!(
        m.period_totals(b, at(10, 0, 0, 0), at(11, 0, 0, 0))
            .await
            .unwrap()
            .len(),
        1
    );

    let hard = QuotaLimit {
        period: QuotaPeriod::Month,
        limit: dec("2"),
        mode: QuotaMode::Hard,
    };
    m.set_quota(a, "api", hard.clone()).await.unwrap();
    assert!(m.quota(b, "api").await.unwrap().is_none());
    m.set_quota(b, "api", hard).await.unwrap();
    assert!(
        m.check_and_consume(a, "api", dec("2"))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        m.check_and_consume(b, "api", dec("1"))
            .await
            .unwrap()
            .allowed
    );
    assert_eq!(m.balance(b, "api").await.unwrap().used, dec("1"));

    let v = m.meter(a, "api").await.unwrap().version;
    m.delete_meter(a, "api", v).await.unwrap();
    assert_kind(
        m.query(
            a,
            &query("api", at(10, 0, 0, 0), at(11, 0, 0, 0), Window::Day),
        )
        .await,
        ErrorKind::NotFound,
    );
    assert!(m.quota(a, "api").await.unwrap().is_none());
    assert_eq!(day(b).await.unwrap()[0].value, dec("3"));
    assert!(m.quota(b, "api").await.unwrap().is_some());
}

/// Several tenants' batches in one `ingest_many` call (the consumer's path): each
/// batch is reported and counted as its own `ingest` would be (refusals, in-batch and
/// cross-batch duplicates, unique counts), for its tenant only; the same call again
/// counts nothing.
pub async fn ingest_many_tenants(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store.clone());
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let count = meter(
        "api",
        "api.request",
        Aggregation::Count,
        None,
        &["route"],
        &[Window::Day],
    );
    let users = meter(
        "users",
        "api.request",
        Aggregation::UniqueCount,
        Some("user"),
        &[],
        &[Window::Day],
    );
    for t in [a, b, c] {
        m.create_meter(t, count.clone()).await.unwrap();
    }
    m.create_meter(a, users.clone()).await.unwrap();
    m.create_meter(b, users).await.unwrap();
    let call = |t, i: u32, user: &str| {
        event(
            t,
            "api.request",
            at(10, 12, i, 0),
            serde_json::json!({ "route": format!("/r{}", i % 2), "user": user }),
        )
    };
    let a1: Vec<UsageEvent> = vec![call(a, 0, "x"), call(a, 1, "y"), call(a, 2, "x")];
    let mut a2 = vec![a1[0].clone(), call(a, 3, "z")];
    a2.push(a2[1].clone());
    let mut bad = call(b, 5, "x");
    bad.data = serde_json::json!({ "route": "/r1" }); // no `user` for the unique count
    let b1 = vec![call(b, 4, "x"), bad, call(b, 6, "x")];
    let c1: Vec<UsageEvent> = Vec::new();
    // A batch of another tenant's events is refused for the tenant it is filed under.
    let stray = vec![call(a, 7, "w")];
    let batches: Vec<(TenantId, &[UsageEvent])> =
        vec![(a, &a1), (b, &b1), (c, &c1), (a, &a2), (c, &stray)];
    let reports = m.ingest_many(&batches).await.unwrap();
    assert_eq!(reports.len(), 5);
    assert_eq!(
        (&reports[0].accepted, &reports[0].duplicates),
        (&vec![0, 1, 2], &vec![])
    );
    assert_eq!(
        (&reports[1].accepted, &reports[1].duplicates),
        (&vec![0, 2], &vec![])
    );
    assert_eq!(reports[1].rejected.len(), 1);
    assert_eq!(reports[1].rejected[0].index, 1);
    assert_eq!(reports[2], crate::model::IngestReport::default());
    assert_eq!(
        (&reports[3].accepted, &reports[3].duplicates),
        (&vec![1], &vec![0, 2]),
        "a repeat of an earlier batch of the same call, and within the batch"
    );
    assert_eq!(reports[4].rejected.len(), 1);
    assert!(reports[4].accepted.is_empty());

    let day = |key: &str| query(key, at(10, 0, 0, 0), at(11, 0, 0, 0), Window::Day);
    let total = |rows: Vec<UsageRow>| rows.iter().map(|r| r.value).sum::<Decimal>();
    assert_eq!(total(m.query(a, &day("api")).await.unwrap()), dec("4"));
    assert_eq!(total(m.query(b, &day("api")).await.unwrap()), dec("2"));
    assert_eq!(total(m.query(c, &day("api")).await.unwrap()), dec("0"));
    assert_eq!(total(m.query(a, &day("users")).await.unwrap()), dec("3"));
    assert_eq!(total(m.query(b, &day("users")).await.unwrap()), dec("1"));

    // The same call again: every stored event is a duplicate; nothing changes.
    let again = m.ingest_many(&batches).await.unwrap();
    assert!(again.iter().all(|r| r.accepted.is_empty()));
    assert_eq!(again[0].duplicates, vec![0, 1, 2]);
    assert_eq!(again[3].duplicates, vec![0, 1, 2]);
    assert_eq!(total(m.query(a, &day("api")).await.unwrap()), dec("4"));
    assert_eq!(total(m.query(a, &day("users")).await.unwrap()), dec("3"));
    assert_eq!(total(m.query(b, &day("api")).await.unwrap()), dec("2"));

    // Too big a batch fails the whole call before anything is stored.
    let big: Vec<UsageEvent> = (0..=MAX_BATCH)
        .map(|i| call(c, u32::try_from(i % 60).unwrap(), "v"))
        .collect();
    let fresh = vec![call(b, 9, "q")];
    assert_field(
        m.ingest_many(&[(b, fresh.as_slice()), (c, big.as_slice())])
            .await,
        "events",
    );
    assert_eq!(total(m.query(b, &day("api")).await.unwrap()), dec("2"));
}

/// The duplicate storm: the same 10,000 events sent three times, concurrently (30
/// batches of 1,000 in flight): each counted once.
pub async fn duplicate_storm(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store);
    let t = TenantId::new();
    m.create_meter(
        t,
        meter(
            "calls",
            "call",
            Aggregation::Count,
            None,
            &["kind"],
            &[Window::Hour, Window::Day],
        ),
    )
    .await
    .unwrap();
    m.create_meter(
        t,
        meter(
            "units",
            "call",
            Aggregation::Sum,
            Some("n"),
            &[],
            &[Window::Day],
        ),
    )
    .await
    .unwrap();
    let events: Vec<UsageEvent> = (0..10_000_i64)
        .map(|i| {
            event(
                t,
                "call",
                now() - Duration::seconds(i % 7_200),
                serde_json::json!({ "n": i % 7, "kind": if i % 2 == 0 { "even" } else { "odd" } }),
            )
        })
        .collect();
    let expected_sum: i64 = (0..10_000_i64).map(|i| i % 7).sum();
    let batches: Vec<&[UsageEvent]> = events.chunks(MAX_BATCH).collect();
    let mut calls = Vec::new();
    for copy in 0..3 {
        for k in 0..batches.len() {
            // Each copy walks the batches in another order.
            let batch = batches[(k + copy * 3) % batches.len()];
            calls.push(m.ingest(t, batch));
        }
    }
    let reports = join_all(calls).await;
    let (mut accepted, mut duplicates) = (0, 0);
    for r in reports {
        let r = r.unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected.first());
        accepted += r.accepted.len();
        duplicates += r.duplicates.len();
    }
    assert_eq!((accepted, duplicates), (10_000, 20_000));
    let totals = m
        .period_totals(t, at(9, 0, 0, 0), at(11, 0, 0, 0))
        .await
        .unwrap();
    let by_key: BTreeMap<String, _> = totals.iter().map(|x| (x.meter.to_string(), x)).collect();
    assert_eq!(by_key["calls"].value, Some(dec("10000")));
    assert_eq!(by_key["calls"].groups[0].value, dec("5000"));
    assert_eq!(by_key["units"].value, Some(Decimal::from(expected_sum)));
    assert_eq!(by_key["units"].events, 10_000);
    let hours = m
        .query(
            t,
            &query("calls", at(10, 0, 0, 0), at(11, 0, 0, 0), Window::Hour),
        )
        .await
        .unwrap();
    let per_hour: u64 = hours.iter().map(|r| r.events).sum();
    assert_eq!(per_hour, 10_000);
}

/// The unique-count bound: a cell keeps at most `unique_bound` distinct values and
/// then saturates (values not stored or counted, events still accepted, rows and
/// totals flagged); other cells are unaffected.
pub async fn unique_bound(store: Arc<dyn MeteringStore>) {
    let (m, _) = metering(store);
    let m = m.with_config(MeteringConfig {
        unique_bound: 5,
        ..MeteringConfig::default()
    });
    let t = TenantId::new();
    m.create_meter(
        t,
        meter(
            "users",
            "login",
            Aggregation::UniqueCount,
            Some("user"),
            &["app"],
            &[Window::Hour, Window::Day],
        ),
    )
    .await
    .unwrap();
    let login = |user: &str, app: &str| {
        event(
            t,
            "login",
            at(10, 12, 0, 0),
            serde_json::json!({ "user": user, "app": app }),
        )
    };
    let r = m
        .ingest(
            t,
            &[
                login("u1", "x"),
                login("u2", "x"),
                login("u3", "x"),
                login("u1", "x"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.accepted.len(), 4);
    let r = m
        .ingest(
            t,
            &[
                login("u3", "x"),
                login("u4", "x"),
                login("u5", "x"),
                login("u6", "x"),
                login("u7", "x"),
                login("u1", "y"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        r.accepted.len(),
        6,
        "events past the bound are still accepted"
    );
    let mut q = query("users", at(10, 0, 0, 0), at(11, 0, 0, 0), Window::Day);
    q.group_by = vec!["app".into()];
    let rows = m.query(t, &q).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].value, rows[0].events, rows[0].saturated),
        (dec("5"), 9, true)
    );
    assert_eq!(
        (rows[1].value, rows[1].events, rows[1].saturated),
        (dec("1"), 1, false)
    );
    let more = m.ingest(t, &[login("u8", "x")]).await.unwrap();
    assert_eq!(more.accepted.len(), 1);
    let totals = m
        .period_totals(t, at(10, 0, 0, 0), at(11, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(
        totals[0].value,
        Some(dec("5")),
        "u1..u5 stored, u1 shared by both apps"
    );
    assert!(totals[0].saturated);
    assert_eq!(totals[0].events, 11);
}

/// Quota rules: hard quotas refuse what would pass the limit (counting nothing),
/// soft quotas count and report; periods roll over; no quota allows everything.
pub async fn quota_rules(store: Arc<dyn MeteringStore>, counter: Arc<dyn QuotaCounter>) {
    let (m, clock) = metering(store);
    let m = m.with_quota_counter(counter);
    let t = TenantId::new();
    for key in ["hard", "soft", "free"] {
        m.create_meter(
            t,
            meter(key, "api", Aggregation::Count, None, &[], &[Window::Day]),
        )
        .await
        .unwrap();
    }
    let hard = QuotaLimit {
        period: QuotaPeriod::Day,
        limit: dec("10"),
        mode: QuotaMode::Hard,
    };
    let set = m.set_quota(t, "hard", hard).await.unwrap();
    assert_eq!(m.quota(t, "hard").await.unwrap(), Some(set));
    let use_ = |k: &'static str, n: &'static str| m.check_and_consume(t, k, dec(n));
    let d = use_("hard", "4").await.unwrap();
    assert!(d.allowed && !d.exceeded);
    assert_eq!(
        (d.used, d.remaining, d.limit),
        (dec("4"), Some(dec("6")), Some(dec("10")))
    );
    assert_eq!(d.period_start, Some(at(10, 0, 0, 0)));
    assert_eq!(d.period_end, Some(at(11, 0, 0, 0)));
    assert!(use_("hard", "4.5").await.unwrap().allowed);
    let refused = use_("hard", "2").await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.used, dec("8.5"), "a refused amount is not counted");
    assert!(use_("hard", "1.5").await.unwrap().allowed);
    let b = m.balance(t, "hard").await.unwrap();
    assert_eq!((b.used, b.remaining), (dec("10"), Decimal::ZERO));
    assert!(!use_("hard", "0.0001").await.unwrap().allowed);

    let soft = QuotaLimit {
        period: QuotaPeriod::Hour,
        limit: dec("1"),
        mode: QuotaMode::Soft,
    };
    m.set_quota(t, "soft", soft).await.unwrap();
    assert!(!use_("soft", "1").await.unwrap().exceeded);
    let over = use_("soft", "2").await.unwrap();
    assert!(over.allowed && over.exceeded);
    assert_eq!((over.used, over.remaining), (dec("3"), Some(Decimal::ZERO)));

    let free = use_("free", "1000").await.unwrap();
    assert!(free.allowed && free.limit.is_none());
    assert_kind(m.balance(t, "free").await, ErrorKind::NotFound);
    assert_kind(use_("nope", "1").await, ErrorKind::NotFound);

    // The next period starts at zero; changing the limit applies at once.
    clock.advance(Duration::days(1));
    assert_eq!(m.balance(t, "hard").await.unwrap().used, Decimal::ZERO);
    let bigger = QuotaLimit {
        period: QuotaPeriod::Day,
        limit: dec("20"),
        mode: QuotaMode::Hard,
    };
    m.set_quota(t, "hard", bigger).await.unwrap();
    assert!(use_("hard", "15").await.unwrap().allowed);
    assert!(m.delete_quota(t, "hard").await.unwrap());
    assert!(!m.delete_quota(t, "hard").await.unwrap());
    assert!(use_("hard", "100").await.unwrap().limit.is_none());
}

/// The quota race: 100 concurrent `check_and_consume` of 1 against a hard limit of
/// 50: exactly 50 succeed and the balance is 50.
pub async fn quota_race(store: Arc<dyn MeteringStore>, counter: Arc<dyn QuotaCounter>) {
    let (m, _) = metering(store);
    let m = m.with_quota_counter(counter);
    let t = TenantId::new();
    m.create_meter(
        t,
        meter(
            "calls",
            "api",
            Aggregation::Count,
            None,
            &[],
            &[Window::Day],
        ),
    )
    .await
    .unwrap();
    let limit = QuotaLimit {
        period: QuotaPeriod::Month,
        limit: dec("50"),
        mode: QuotaMode::Hard,
    };
    m.set_quota(t, "calls", limit).await.unwrap();
    let decisions = join_all((0..100).map(|_| m.check_and_consume(t, "calls", Decimal::ONE))).await;
    let allowed = decisions
        .into_iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(allowed, 50);
    let b = m.balance(t, "calls").await.unwrap();
    assert_eq!((b.used, b.remaining), (dec("50"), Decimal::ZERO));
}
