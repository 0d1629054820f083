//! The policy model: what a tenant's policy store holds, as plain documents. Each write
//! produces a new immutable [`PolicyVersion`] holding the whole [`PolicySetDocument`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenancy_core::{Error, Result, TenantId};

/// Longest accepted policy, template or schema text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most static policies plus template links one tenant may hold.
pub const MAX_POLICIES: usize = 10_000;

/// A tenant's schema, in either of Cedar's two formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", content = "text", rename_all = "snake_case")]
pub enum SchemaDocument {
    /// Cedar schema syntax (`entity Document { owner: User };`).
    Cedar(String),
    /// Cedar's JSON schema format, as JSON text.
    Json(String),
}

impl SchemaDocument {
    /// The schema source text.
    #[must_use]
    pub fn text(&self) -> &str {
        match self {
            Self::Cedar(t) | Self::Json(t) => t,
        }
    }
}

/// A static policy or a template: Cedar source text with an id and a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// Identifier, unique among the tenant's policies, templates and links.
    pub id: String,
    /// Cedar source text of exactly one policy (or template).
    pub text: String,
    /// What the policy is for.
    #[serde(default)]
    pub description: String,
}

/// A template-linked policy: a template with its `?principal` / `?resource` slots
/// filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLink {
    /// Identifier of the linked policy.
    pub id: String,
    /// The template it instantiates.
    pub template_id: String,
    /// The entity for `?principal`, as `Type::"id"`, if the template has that slot.
    pub principal: Option<String>,
    /// The entity for `?resource`, as `Type::"id"`, if the template has that slot.
    pub resource: Option<String>,
    /// What the link is for.
    #[serde(default)]
    pub description: String,
}

/// Everything a tenant's policy store holds at one version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicySetDocument {
    /// The schema policies are validated against (plus the built-in RBAC fragment).
    /// Without one, policies are only parsed.
    pub schema: Option<SchemaDocument>,
    /// Static policies by id.
    pub policies: BTreeMap<String, PolicyDocument>,
    /// Templates by id.
    pub templates: BTreeMap<String, PolicyDocument>,
    /// Template links by id.
    pub links: BTreeMap<String, TemplateLink>,
}

/// One immutable version of a tenant's policy store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The tenant.
    pub tenant_id: TenantId,
    /// 1 for the first write, +1 for every write after it.
    pub version: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// What the write did (`create policy \`p1\``, `rollback to version 3`, …).
    pub change: String,
    /// The whole policy set at this version.
    pub document: PolicySetDocument,
}

impl PolicyVersion {
    /// The summary of this version, without its document.
    #[must_use]
    pub fn info(&self) -> VersionInfo {
        VersionInfo {
            tenant_id: self.tenant_id,
            version: self.version,
            created_at: self.created_at,
            change: self.change.clone(),
        }
    }
}

/// A version's summary, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The version number.
    pub version: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// What the write did.
    pub change: String,
}

/// One problem Cedar found in a policy, template or schema, where it found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDiagnostic {
    /// The policy (or template, link, `schema`) it concerns.
    pub policy_id: String,
    /// 1-based line in that policy's text, when Cedar points at a place.
    pub line: Option<u32>,
    /// 1-based column in that line.
    pub column: Option<u32>,
    /// Cedar's message.
    pub message: String,
}

impl std::fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.policy_id)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " at {line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Checks an id of a policy, template or link: 1 to 128 characters of letters,
/// digits, `_`, `-`, `.`, `:`.
pub fn validate_policy_id(field: &str, id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{id}` must be 1 to 128 characters of letters, digits, `_`, `-`, `.` or `:`"),
        ))
    }
}

/// Checks the size of a source text.
pub fn validate_text(field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_TEXT_BYTES} bytes, got {}", text.len()),
        ));
    }
    Ok(())
}
