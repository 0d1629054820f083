//! Conversions between the wire types and the library types: library records become
//! messages (`From`), request fields are parsed into library values (bad input is an
//! `InvalidInput` error naming the wire field).

use chrono::{DateTime, Utc};
use tenancy_core::identity::{
    Invitation, Membership, Tenant, TenantStatus, User, UserStatus, validate_json_object,
};
use tenancy_core::page::{Page, PageRequest};
use tenancy_core::{Error, Result};

use crate::proto::common::v1 as common;
use crate::proto::identity::v1 as pb;

/// A timestamp on the wire.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // At most 1_999_999_999 (a leap second), which fits an i32.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(999_999_999),
    }
}

/// A JSON document as text on the wire.
pub(crate) fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// Parses the text of a JSON object sent in `field` (empty text = `{}`).
pub(crate) fn json_object(field: &str, text: &str) -> Result<serde_json::Value> {
    if text.trim().is_empty() {
        return validate_json_object(field, serde_json::Value::Null);
    }
    let value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(field, format!("is not valid JSON: {e}")))?;
    validate_json_object(field, value)
}

/// The library's page request from the wire form (unset = the first page).
pub(crate) fn page_request(page: Option<common::PageRequest>) -> Result<PageRequest> {
    let page = page.unwrap_or_default();
    PageRequest::from_token(&page.page_token, page.page_size)
}

/// Where a list continues, on the wire.
pub(crate) fn page_info<T>(page: &Page<T>) -> common::PageInfo {
    common::PageInfo {
        next_page_token: page.next_token(),
    }
}

/// A token lifetime sent in `field`, or `default` when unset. The library checks the
/// range.
pub(crate) fn ttl(
    field: &str,
    ttl: Option<prost_types::Duration>,
    default: chrono::Duration,
) -> Result<chrono::Duration> {
    let Some(ttl) = ttl else {
        return Ok(default);
    };
    chrono::Duration::try_seconds(ttl.seconds)
        .and_then(|s| s.checked_add(&chrono::Duration::nanoseconds(i64::from(ttl.nanos))))
        .ok_or_else(|| Error::invalid(field, "is out of range"))
}

/// A user status sent as an enum number.
pub(crate) fn user_status(value: i32) -> Result<UserStatus> {
    match pb::UserStatus::try_from(value) {
        Ok(pb::UserStatus::Active) => Ok(UserStatus::Active),
        Ok(pb::UserStatus::Disabled) => Ok(UserStatus::Disabled),
        Ok(pb::UserStatus::Unspecified) | Err(_) => Err(Error::invalid(
            "status",
            format!("`{value}` is not a user status to set"),
        )),
    }
}

impl From<TenantStatus> for pb::TenantStatus {
    fn from(status: TenantStatus) -> Self {
        match status {
            TenantStatus::Active => Self::Active,
            TenantStatus::Suspended => Self::Suspended,
            TenantStatus::Deleted => Self::Deleted,
        }
    }
}

impl From<UserStatus> for pb::UserStatus {
    fn from(status: UserStatus) -> Self {
        match status {
            UserStatus::Active => Self::Active,
            UserStatus::Disabled => Self::Disabled,
        }
    }
}

impl From<Tenant> for pb::Tenant {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            slug: t.slug.as_str().to_owned(),
            display_name: t.display_name.as_str().to_owned(),
            status: pb::TenantStatus::from(t.status).into(),
            metadata_json: json_text(&t.metadata),
            created_at: Some(timestamp(t.created_at)),
            updated_at: Some(timestamp(t.updated_at)),
            version: t.version,
        }
    }
}

impl From<User> for pb::User {
    /// Everything but the password hash, which never leaves the library.
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.as_str().to_owned(),
            email_verified: u.email_verified,
            display_name: u.display_name.as_str().to_owned(),
            attributes_json: json_text(&u.attributes),
            status: pb::UserStatus::from(u.status).into(),
            created_at: Some(timestamp(u.created_at)),
            updated_at: Some(timestamp(u.updated_at)),
            version: u.version,
        }
    }
}

impl From<Membership> for pb::Membership {
    fn from(m: Membership) -> Self {
        Self {
            id: m.id.to_string(),
            tenant_id: m.tenant_id.to_string(),
            user_id: m.user_id.to_string(),
            roles: m.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created_at: Some(timestamp(m.created_at)),
            updated_at: Some(timestamp(m.updated_at)),
            version: m.version,
        }
    }
}

impl From<Invitation> for pb::Invitation {
    /// Everything but the token hash, which never leaves the library.
    fn from(i: Invitation) -> Self {
        Self {
            id: i.id.to_string(),
            tenant_id: i.tenant_id.to_string(),
            email: i.email.as_str().to_owned(),
            roles: i.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created_at: Some(timestamp(i.created_at)),
            expires_at: Some(timestamp(i.expires_at)),
            accepted_at: i.accepted_at.map(timestamp),
            accepted_by_user_id: i.accepted_by.map(|u| u.to_string()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn json_object_names_the_field() {
        assert_eq!(
            json_object("metadata_json", "").unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            json_object("metadata_json", r#"{"plan":"pro"}"#).unwrap(),
            serde_json::json!({"plan": "pro"})
        );
        for bad in ["{", "[1]", "42", "\"x\""] {
            let err = json_object("metadata_json", bad).unwrap_err();
            assert_eq!(err.field(), Some("metadata_json"), "{bad}");
        }
    }

    #[test]
    fn ttl_defaults_and_rejects_overflow() {
        let default = chrono::Duration::hours(1);
        assert_eq!(ttl("ttl", None, default).unwrap(), default);
        let d = prost_types::Duration {
            seconds: 90,
            nanos: 0,
        };
        assert_eq!(
            ttl("ttl", Some(d), default).unwrap(),
            chrono::Duration::seconds(90)
        );
        let huge = prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(
            ttl("ttl", Some(huge), default).unwrap_err().field(),
            Some("ttl")
        );
    }

    #[test]
    fn unspecified_user_status_is_rejected() {
        assert_eq!(user_status(0).unwrap_err().field(), Some("status"));
        assert_eq!(user_status(99).unwrap_err().field(), Some("status"));
        assert_eq!(user_status(2).unwrap(), UserStatus::Disabled);
    }

    #[test]
    fn bad_page_token_names_the_field() {
        let req = common::PageRequest {
            page_size: 2,
            page_token: "%%%".into(),
        };
        assert_eq!(
            page_request(Some(req)).unwrap_err().field(),
            Some("page_token")
        );
        assert_eq!(page_request(None).unwrap(), PageRequest::default());
    }
}
