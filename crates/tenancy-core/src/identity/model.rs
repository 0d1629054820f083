//! The identity model: validated value types and the records the stores keep.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::password::PasswordHash;
use super::token::TokenHash;
use crate::error::{Error, Result};
use crate::ids::{InvitationId, MembershipId, TenantId, UserId, VerificationId};

/// Largest JSON document accepted as tenant metadata or user attributes, in bytes.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// Most roles one membership may carry.
pub const MAX_ROLES: usize = 32;

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_value!(
    /// A tenant's URL-safe handle: 3 to 63 characters of `a-z`, `0-9` and `-`, starting
    /// with a letter, not ending with `-`. Unique across tenants.
    Slug
);

impl Slug {
    /// Validates a slug.
    pub fn parse(s: &str) -> Result<Self> {
        let len = s.chars().count();
        if !(3..=63).contains(&len) {
            return Err(Error::invalid(
                "slug",
                format!("`{s}` must be 3 to 63 characters long"),
            ));
        }
        let valid_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts_with_letter = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !valid_chars || !starts_with_letter || s.ends_with('-') {
            return Err(Error::invalid(
                "slug",
                format!(
                    "`{s}` must use only lowercase letters, digits and `-`, start with a letter and not end with `-`"
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(
    /// An email address as the user typed it. Equality of accounts is case-insensitive:
    /// compare [`Email::normalized`].
    Email
);

impl Email {
    /// Validates an email address (a pragmatic subset of RFC 5321: one `@`, a non-empty
    /// local part of at most 64 bytes, a dotted domain of letters, digits and `-`, at
    /// most 254 bytes in all, no spaces or control characters).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("email", format!("`{s}` {why}"));
        if s.is_empty() {
            return Err(Error::invalid("email", "must not be empty"));
        }
        if s.len() > 254 {
            return Err(bad("is longer than 254 bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(bad("is missing `@`"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(bad("has an invalid local part"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(bad("has an invalid domain"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The form used for uniqueness and lookups: lowercased.
    #[must_use]
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

string_value!(
    /// A role name within a tenant: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`, `:`,
    /// starting with a letter.
    RoleName
);

impl RoleName {
    /// Validates a role name.
    pub fn parse(s: &str) -> Result<Self> {
        let len = s.len();
        let ok = (1..=64).contains(&len)
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | ':')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::invalid(
                "roles",
                format!(
                    "`{s}` must be 1 to 64 characters of lowercase letters, digits, `_`, `-`, `.` or `:`, starting with a letter"
                ),
            ))
        }
    }

    /// Validates a list of role names: each valid, at most [`MAX_ROLES`]; the result is
    /// sorted and free of duplicates.
    pub fn parse_all<S: AsRef<str>>(roles: &[S]) -> Result<Vec<Self>> {
        if roles.len() > MAX_ROLES {
            return Err(Error::invalid(
                "roles",
                format!("at most {MAX_ROLES} roles are allowed, got {}", roles.len()),
            ));
        }
        let mut parsed = roles
            .iter()
            .map(|r| Self::parse(r.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(parsed)
    }
}

string_value!(
    /// A human-readable name: 1 to 200 characters, trimmed, no control characters.
    DisplayName
);

impl DisplayName {
    /// Validates a display name (surrounding whitespace is trimmed).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::invalid("display_name", "must not be empty"));
        }
        if t.chars().count() > 200 {
            return Err(Error::invalid(
                "display_name",
                "must be at most 200 characters long",
            ));
        }
        if t.chars().any(char::is_control) {
            return Err(Error::invalid(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(t.to_owned()))
    }
}

/// Validates a free-form JSON document (tenant metadata, user attributes): an object of
/// at most [`MAX_JSON_BYTES`] bytes. `Null` becomes the empty object.
pub fn validate_json_object(field: &str, value: serde_json::Value) -> Result<serde_json::Value> {
    let value = match value {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        v @ serde_json::Value::Object(_) => v,
        _ => return Err(Error::invalid(field, "must be a JSON object")),
    };
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_JSON_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_JSON_BYTES} bytes of JSON, got {size}"),
        ));
    }
    Ok(value)
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stable text form (as stored and sent on the wire).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Error::invalid("status", format!("`{other}` is not a known status"))),
                }
            }
        }
    };
}

status_enum!(
    /// The life-cycle state of a tenant.
    TenantStatus {
        /// In use.
        Active => "active",
        /// Temporarily blocked (e.g. unpaid); its data is kept.
        Suspended => "suspended",
        /// Deleted (soft): kept for audit, no longer usable.
        Deleted => "deleted",
    }
);

status_enum!(
    /// The life-cycle state of a user.
    UserStatus {
        /// May sign in.
        Active => "active",
        /// May not sign in; memberships are kept.
        Disabled => "disabled",
    }
);

/// A tenant (an organization): the unit of isolation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Identifier.
    pub id: TenantId,
    /// Unique handle.
    pub slug: Slug,
    /// Name shown to people.
    pub display_name: DisplayName,
    /// Life-cycle state.
    pub status: TenantStatus,
    /// Free-form JSON object owned by the embedding application.
    pub metadata: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version: 1 on creation, +1 on every update.
    pub version: i64,
}

/// A user: a global identity that may belong to many tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Email address; unique case-insensitively.
    pub email: Email,
    /// Whether the user proved they receive mail at `email`.
    pub email_verified: bool,
    /// Name shown to people.
    pub display_name: DisplayName,
    /// Free-form profile attributes (JSON object).
    pub attributes: serde_json::Value,
    /// Life-cycle state.
    pub status: UserStatus,
    /// The argon2id hash of the password, if the user has one.
    #[serde(skip)]
    pub password_hash: Option<PasswordHash>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// A user's membership in a tenant, with the roles they hold there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// Identifier.
    pub id: MembershipId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The member.
    pub user_id: UserId,
    /// Roles held in the tenant, sorted, without duplicates.
    pub roles: Vec<RoleName>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// An invitation for an email address to join a tenant with some roles. Only the hash of
/// its token is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    /// Identifier.
    pub id: InvitationId,
    /// The inviting tenant.
    pub tenant_id: TenantId,
    /// Who is invited.
    pub email: Email,
    /// Roles the membership gets on acceptance.
    pub roles: Vec<RoleName>,
    /// SHA-256 of the single-use token.
    #[serde(skip_serializing)]
    pub token_hash: TokenHash,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// After this instant it can no longer be accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was accepted, if it was.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Who accepted it, if anyone did.
    pub accepted_by: Option<UserId>,
}

/// A request to prove that a user receives mail at an address. Only the hash of its
/// token is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailVerification {
    /// Identifier.
    pub id: VerificationId,
    /// The user.
    pub user_id: UserId,
    /// The address being verified (the user's address when the request was made).
    pub email: Email,
    /// SHA-256 of the single-use token.
    #[serde(skip_serializing)]
    pub token_hash: TokenHash,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// After this instant it can no longer be confirmed.
    pub expires_at: DateTime<Utc>,
    /// When it was confirmed, if it was.
    pub consumed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["acme", "a-1", "acme-corp-2024"] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Acme",
            "1acme",
            "acme-",
            "ac me",
            "acme_corp",
            &"a".repeat(64),
        ] {
            let err = Slug::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("slug"), "{bad}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "Alice.Smith+x@Example.COM", "ü@bücher.de"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a b@c.de", "a@b..co", "a@-b.co",
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("email"), "{bad}");
        }
        assert_eq!(Email::parse("Bob@X.Org").unwrap().normalized(), "bob@x.org");
    }

    #[test]
    fn roles_are_validated_sorted_and_deduplicated() {
        let roles = RoleName::parse_all(&["viewer", "admin", "viewer"]).unwrap();
        assert_eq!(
            roles.iter().map(RoleName::as_str).collect::<Vec<_>>(),
            ["admin", "viewer"]
        );
        assert_eq!(
            RoleName::parse_all(&["Admin"]).unwrap_err().field(),
            Some("roles")
        );
        let many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
        assert!(RoleName::parse_all(&many).is_err());
    }

    #[test]
    fn display_names_and_json() {
        assert_eq!(DisplayName::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
        assert!(validate_json_object("metadata", serde_json::json!([1])).is_err());
        assert_eq!(
            validate_json_object("metadata", serde_json::Value::Null).unwrap(),
            serde_json::json!({})
        );
        let big = serde_json::json!({ "k": "x".repeat(MAX_JSON_BYTES) });
        assert_eq!(
            validate_json_object("metadata", big).unwrap_err().field(),
            Some("metadata")
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Deleted,
        ] {
            assert_eq!(s.as_str().parse::<TenantStatus>().unwrap(), s);
        }
        assert!("gone".parse::<UserStatus>().is_err());
    }
}
