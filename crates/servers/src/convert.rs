//! Conversions between the wire types and the library types: library records become
//! messages (`From`), request fields are parsed into library values (bad input is an
//! `InvalidInput` error naming the wire field).

use chrono::{DateTime, Utc};
use tenancy_authz::{
    Decision, EvaluationError, PolicyDiagnostic, PolicyDocument, PolicyVersion, SchemaDocument,
    TemplateLink, VersionInfo,
};
use tenancy_core::identity::{
    Invitation, Membership, Tenant, TenantStatus, User, UserStatus, validate_json_object,
};
use tenancy_core::page::{Page, PageRequest};
use tenancy_core::{Error, Result};

use crate::proto::common::v1 as common;
use crate::proto::identity::v1 as pb;
use crate::proto::policy::v1 as policy_pb;

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

/// Parses JSON text sent in `field` (empty text = `null`); what it must hold is left to
/// the library.
pub(crate) fn json_value(field: &str, text: &str) -> Result<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Error::invalid(field, format!("is not valid JSON: {e}")))
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

// ----- policy -----

impl From<VersionInfo> for policy_pb::VersionInfo {
    fn from(v: VersionInfo) -> Self {
        Self {
            version: v.version,
            created_at: Some(timestamp(v.created_at)),
            change: v.change,
        }
    }
}

impl From<EvaluationError> for policy_pb::EvaluationError {
    fn from(e: EvaluationError) -> Self {
        Self {
            policy_id: e.policy_id,
            message: e.message,
        }
    }
}

impl From<Decision> for policy_pb::Decision {
    fn from(d: Decision) -> Self {
        Self {
            allowed: d.allowed,
            determining_policies: d.determining_policies,
            errors: d.errors.into_iter().map(Into::into).collect(),
            policy_version: d.policy_version,
        }
    }
}

impl From<Decision> for policy_pb::CheckPermissionResponse {
    fn from(d: Decision) -> Self {
        Self {
            allowed: d.allowed,
            determining_policies: d.determining_policies,
            errors: d.errors.into_iter().map(Into::into).collect(),
            policy_version: d.policy_version,
        }
    }
}

impl From<PolicyDiagnostic> for policy_pb::Diagnostic {
    fn from(d: PolicyDiagnostic) -> Self {
        Self {
            policy_id: d.policy_id,
            line: d.line.unwrap_or(0),
            column: d.column.unwrap_or(0),
            message: d.message,
        }
    }
}

impl From<Option<SchemaDocument>> for policy_pb::Schema {
    fn from(schema: Option<SchemaDocument>) -> Self {
        use policy_pb::schema::Text;
        Self {
            text: schema.map(|s| match s {
                SchemaDocument::Cedar(text) => Text::CedarText(text),
                SchemaDocument::Json(text) => Text::JsonText(text),
            }),
        }
    }
}

/// The schema a [`policy_pb::Schema`] carries (`None` when its text is unset).
pub(crate) fn schema_document(schema: policy_pb::Schema) -> Option<SchemaDocument> {
    use policy_pb::schema::Text;
    schema.text.map(|text| match text {
        Text::CedarText(text) => SchemaDocument::Cedar(text),
        Text::JsonText(text) => SchemaDocument::Json(text),
    })
}

impl From<PolicyDocument> for policy_pb::Policy {
    fn from(p: PolicyDocument) -> Self {
        Self {
            policy_id: p.id,
            text: p.text,
            description: p.description,
        }
    }
}

impl From<policy_pb::Policy> for PolicyDocument {
    fn from(p: policy_pb::Policy) -> Self {
        Self {
            id: p.policy_id,
            text: p.text,
            description: p.description,
        }
    }
}

impl From<PolicyDocument> for policy_pb::Template {
    fn from(t: PolicyDocument) -> Self {
        Self {
            template_id: t.id,
            text: t.text,
            description: t.description,
        }
    }
}

impl From<policy_pb::Template> for PolicyDocument {
    fn from(t: policy_pb::Template) -> Self {
        Self {
            id: t.template_id,
            text: t.text,
            description: t.description,
        }
    }
}

impl From<TemplateLink> for policy_pb::TemplateLink {
    fn from(l: TemplateLink) -> Self {
        Self {
            policy_id: l.id,
            template_id: l.template_id,
            principal: l.principal,
            resource: l.resource,
            description: l.description,
        }
    }
}

impl From<PolicyVersion> for policy_pb::GetVersionResponse {
    fn from(v: PolicyVersion) -> Self {
        let doc = v.document;
        Self {
            info: Some(policy_pb::VersionInfo {
                version: v.version,
                // Version 0 (nothing written yet) has no time.
                created_at: (v.version > 0).then(|| timestamp(v.created_at)),
                change: v.change,
            }),
            schema: Some(doc.schema.into()),
            policies: doc.policies.into_values().map(Into::into).collect(),
            templates: doc.templates.into_values().map(Into::into).collect(),
            links: doc.links.into_values().map(Into::into).collect(),
        }
    }
}

/// Renames the field an `InvalidInput` error names from the library's spelling to the
/// wire's (`rename` returns `None` to keep it); the message follows.
pub(crate) fn wire_field(err: Error, rename: impl FnOnce(&str) -> Option<String>) -> Error {
    match err {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: rename(&field).unwrap_or(field),
            reason,
        },
        other => other,
    }
}

/// The wire name of a library field of a decision request: `context` is sent as
/// `context_json`, `entities` (and `entities[i]`) as `entities_json`.
pub(crate) fn check_field(field: &str) -> Option<String> {
    if field == "context" {
        return Some("context_json".to_owned());
    }
    field
        .strip_prefix("entities")
        .filter(|rest| rest.is_empty() || rest.starts_with('['))
        .map(|rest| format!("entities_json{rest}"))
}

/// A library field `requests[i].<inner>` of a batch, split.
fn batch_item_field(field: &str) -> Option<(&str, &str)> {
    let rest = field.strip_prefix("requests[")?;
    rest.split_once("].")
}

/// The wire name of a library field of a batch: the requests are sent as `items`, and
/// a problem with request `i` as a whole (an action or entity type the schema does
/// not declare for it) is `items[i]`.
pub(crate) fn batch_field(field: &str) -> Option<String> {
    if field == "requests" {
        return Some("items".to_owned());
    }
    match batch_item_field(field) {
        Some((index, "request")) => Some(format!("items[{index}]")),
        Some((index, inner)) => Some(format!(
            "items[{index}].{}",
            check_field(inner).unwrap_or_else(|| inner.to_owned())
        )),
        None => check_field(field),
    }
}

/// The wire name of a library field of an allowed-actions question: the candidate
/// actions are `actions`, and a problem with one of them (or with the request it
/// makes) is `actions[i]`.
pub(crate) fn allowed_actions_field(field: &str) -> Option<String> {
    if field == "requests" {
        return Some("actions".to_owned());
    }
    match batch_item_field(field) {
        Some((index, "action" | "request")) => Some(format!("actions[{index}]")),
        Some((_, inner)) => Some(check_field(inner).unwrap_or_else(|| inner.to_owned())),
        None => check_field(field),
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
    fn json_values_name_the_field() {
        assert_eq!(
            json_value("context_json", " ").unwrap(),
            serde_json::Value::Null
        );
        assert_eq!(
            json_value("context_json", r#"{"hour":9}"#).unwrap(),
            serde_json::json!({"hour": 9})
        );
        let err = json_value("entities_json", "[{").unwrap_err();
        assert_eq!(err.field(), Some("entities_json"));
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn library_fields_become_wire_fields() {
        let renamed = |field: &str, rename: fn(&str) -> Option<String>| {
            wire_field(Error::invalid(field, "is bad"), rename)
                .field()
                .map(ToOwned::to_owned)
                .unwrap()
        };
        assert_eq!(renamed("context", check_field), "context_json");
        assert_eq!(renamed("entities", check_field), "entities_json");
        assert_eq!(renamed("entities[3]", check_field), "entities_json[3]");
        assert_eq!(renamed("entities_x", check_field), "entities_x");
        assert_eq!(renamed("principal", check_field), "principal");
        assert_eq!(renamed("requests", batch_field), "items");
        assert_eq!(
            renamed("requests[2].context", batch_field),
            "items[2].context_json"
        );
        assert_eq!(
            renamed("requests[2].action", batch_field),
            "items[2].action"
        );
        assert_eq!(renamed("requests[2].request", batch_field), "items[2]");
        assert_eq!(renamed("entities[0]", batch_field), "entities_json[0]");
        assert_eq!(renamed("requests", allowed_actions_field), "actions");
        assert_eq!(
            renamed("requests[1].action", allowed_actions_field),
            "actions[1]"
        );
        assert_eq!(
            renamed("requests[1].request", allowed_actions_field),
            "actions[1]"
        );
        assert_eq!(
            renamed("requests[0].principal", allowed_actions_field),
            "principal"
        );
        assert_eq!(
            renamed("requests[0].context", allowed_actions_field),
            "context_json"
        );
        let err = wire_field(
            Error::invalid("context", "must be a JSON object"),
            check_field,
        );
        assert_eq!(
            err.to_string(),
            "invalid context_json: must be a JSON object"
        );
        let kept = wire_field(Error::NotFound("x".into()), check_field);
        assert_eq!(kept.field(), None);
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
