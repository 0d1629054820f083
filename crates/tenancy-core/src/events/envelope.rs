//! The event envelope: the CloudEvents 1.0 attributes (`specversion`, `id`, `source`,
//! `type`, `subject`, `time`) plus the extension `tenant_id`, and the JSON `data`.

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::ids::{EventId, TenantId};

/// The CloudEvents version of the envelope, `specversion` on the wire.
pub const SPEC_VERSION: &str = "1.0";

const MAX_TYPE_LEN: usize = 256;
const MAX_URI_LEN: usize = 2048;

/// One event: what happened (`type`), where (`source`), to what (`subject`), when
/// (`time`), in which tenant (`tenant_id`), with its payload (`data`). Its `id` is the
/// idempotency key: every consumer applies an event at most once per id, so the
/// at-least-once delivery of the bus has exactly-once effects.
///
/// On the wire it is a CloudEvents 1.0 JSON object:
///
/// ```json
/// {"specversion": "1.0", "id": "0190…", "source": "/tenancy/gateway",
///  "type": "tenancy.usage.recorded", "subject": "api-calls",
///  "time": "2025-01-01T12:00:00Z", "tenant_id": "0190…", "data": {"quantity": 1}}
/// ```
///
/// [`Event::decode`] validates every attribute; attributes it does not know are
/// ignored, so producers may add CloudEvents extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    id: EventId,
    event_type: String,
    source: String,
    subject: String,
    time: DateTime<Utc>,
    tenant_id: TenantId,
    data: Value,
}

/// The serialized form, in CloudEvents attribute order.
#[derive(Serialize)]
struct Wire<'a> {
    specversion: &'static str,
    id: EventId,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: DateTime<Utc>,
    tenant_id: TenantId,
    data: &'a Value,
}

impl Event {
    /// A new event of `tenant`: a fresh UUID v7 id, `time` now. `event_type` names
    /// what happened (reverse-DNS style, e.g. `tenancy.usage.recorded`), `source` the
    /// producer (a URI reference, e.g. `/tenancy/gateway`), `subject` the thing it
    /// happened to. `InvalidInput` naming the attribute when one is empty, too long or
    /// holds whitespace (`type`, `source`) or control characters.
    pub fn new(
        tenant: TenantId,
        event_type: impl Into<String>,
        source: impl Into<String>,
        subject: impl Into<String>,
        data: Value,
    ) -> Result<Self> {
        let event = Self {
            id: EventId::new(),
            event_type: event_type.into(),
            source: source.into(),
            subject: subject.into(),
            time: SystemClock.now(),
            tenant_id: tenant,
            data,
        };
        event.validate()?;
        Ok(event)
    }

    /// The same event with `time` replaced (for producers that know when the thing
    /// happened, and for tests).
    #[must_use]
    pub fn with_time(mut self, time: DateTime<Utc>) -> Self {
        self.time = time;
        self
    }

    /// The idempotency key.
    #[must_use]
    pub fn id(&self) -> EventId {
        self.id
    }

    /// What happened (`type`).
    #[must_use]
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// Who produced it (`source`).
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What it happened to (`subject`).
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When it happened (`time`).
    #[must_use]
    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }

    /// The tenant it belongs to (`tenant_id`), also the key it is published under.
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The payload (`data`).
    #[must_use]
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The payload, by value.
    #[must_use]
    pub fn into_data(self) -> Value {
        self.data
    }

    /// The JSON object of the event.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::Internal(format!("cannot serialize event `{}`: {e}", self.id)))
    }

    /// The event as JSON bytes, as published on the bus.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::Internal(format!("cannot serialize event `{}`: {e}", self.id)))
    }

    /// Decodes and validates JSON bytes: `InvalidInput` on field `event` when they are
    /// not a JSON object, otherwise naming the attribute that is missing or invalid.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid("event", format!("not JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Validates a JSON object as an event, naming the attribute that is missing or
    /// invalid.
    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(mut map) = value else {
            return Err(Error::invalid("event", "must be a JSON object"));
        };
        let version = take_string(&mut map, "specversion")?;
        if version != SPEC_VERSION {
            return Err(Error::invalid(
                "specversion",
                format!("`{version}` is not supported, expected `{SPEC_VERSION}`"),
            ));
        }
        let id = take_uuid(&mut map, "id")?;
        let time = take_string(&mut map, "time")?;
        let time = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| Error::invalid("time", format!("`{time}` is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc);
        let event = Self {
            id: EventId::from_uuid(id),
            event_type: take_string(&mut map, "type")?,
            source: take_string(&mut map, "source")?,
            subject: take_string(&mut map, "subject")?,
            time,
            tenant_id: TenantId::from_uuid(take_uuid(&mut map, "tenant_id")?),
            data: map
                .remove("data")
                .ok_or_else(|| Error::invalid("data", "is missing"))?,
        };
        event.validate()?;
        Ok(event)
    }

    fn validate(&self) -> Result<()> {
        check_text("type", &self.event_type, MAX_TYPE_LEN, false)?;
        check_text("source", &self.source, MAX_URI_LEN, false)?;
        check_text("subject", &self.subject, MAX_URI_LEN, true)
    }
}

/// Non-empty, at most `max` bytes, no control characters (nor whitespace unless
/// `spaces`).
fn check_text(field: &str, value: &str, max: usize, spaces: bool) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} bytes long"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() || (!spaces && c.is_whitespace()))
    {
        let what = if spaces {
            "control characters"
        } else {
            "whitespace or control characters"
        };
        return Err(Error::invalid(
            field,
            format!("`{}` must not contain {what}", value.escape_debug()),
        ));
    }
    Ok(())
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<String> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::invalid(field, "must be a string")),
        None => Err(Error::invalid(field, "is missing")),
    }
}

fn take_uuid(map: &mut Map<String, Value>, field: &str) -> Result<Uuid> {
    let s = take_string(map, field)?;
    Uuid::parse_str(&s).map_err(|_| Error::invalid(field, format!("`{s}` is not a UUID")))
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        Wire {
            specversion: SPEC_VERSION,
            id: self.id,
            source: &self.source,
            event_type: &self.event_type,
            subject: &self.subject,
            time: self.time,
            tenant_id: self.tenant_id,
            data: &self.data,
        }
        .serialize(serializer)
    }
}

/// Deserializing validates like [`Event::from_value`].
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Self::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use serde_json::json;

    use super::*;

    fn sample() -> Event {
        Event::new(
            TenantId::new(),
            "tenancy.usage.recorded",
            "/tenancy/gateway",
            "api-calls",
            json!({ "quantity": 3 }),
        )
        .unwrap()
    }

    #[test]
    fn new_event_has_a_v7_id_and_round_trips_through_json() {
        let event = sample();
        assert_eq!(event.id().as_uuid().get_version_num(), 7);
        let bytes = event.encode().unwrap();
        let wire: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(wire["specversion"], "1.0");
        assert_eq!(wire["type"], "tenancy.usage.recorded");
        assert_eq!(wire["tenant_id"], event.tenant_id().to_string());
        assert_eq!(wire["data"]["quantity"], 3);
        assert_eq!(Event::decode(&bytes).unwrap(), event);
        let via_serde: Event = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(via_serde, event);
    }

    #[test]
    fn decode_names_the_missing_or_invalid_attribute() {
        let good = sample().to_value().unwrap();
        for field in [
            "specversion",
            "id",
            "type",
            "source",
            "subject",
            "time",
            "tenant_id",
            "data",
        ] {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(field);
            let err = Event::from_value(v).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert!(err.to_string().contains("missing"), "{err}");
        }
        for (field, bad) in [
            ("specversion", json!("0.3")),
            ("id", json!("nope")),
            ("id", json!(7)),
            ("tenant_id", json!("x")),
            ("time", json!("yesterday")),
            ("type", json!("")),
            ("type", json!("has space")),
            ("source", json!("a\nb")),
            ("subject", json!("x\u{7}")),
        ] {
            let mut v = good.clone();
            v[field] = bad.clone();
            let err = Event::from_value(v).unwrap_err();
            assert_eq!(err.field(), Some(field), "{field} = {bad}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn decode_rejects_what_is_not_a_json_object() {
        for bytes in [&b"{"[..], b"[1]", b"\"event\"", b""] {
            let err = Event::decode(bytes).unwrap_err();
            assert_eq!(err.field(), Some("event"), "{err}");
        }
    }

    #[test]
    fn unknown_attributes_are_ignored() {
        let event = sample();
        let mut v = event.to_value().unwrap();
        v["traceparent"] = json!("00-abc");
        assert_eq!(Event::from_value(v).unwrap(), event);
    }

    #[test]
    fn constructor_validates() {
        let err = Event::new(TenantId::new(), "", "/s", "x", Value::Null).unwrap_err();
        assert_eq!(err.field(), Some("type"));
        let err = Event::new(TenantId::new(), "t", "/s", "", Value::Null).unwrap_err();
        assert_eq!(err.field(), Some("subject"));
        let long = "s".repeat(MAX_URI_LEN + 1);
        let err = Event::new(TenantId::new(), "t", long, "x", Value::Null).unwrap_err();
        assert_eq!(err.field(), Some("source"));
    }
}
