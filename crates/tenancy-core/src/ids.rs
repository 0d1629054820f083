//! Identifiers: UUID v7 newtypes, one per kind of thing, so a tenant id can never be
//! passed where a user id is expected.

use crate::error::Error;

/// Defines an identifier newtype over a UUID v7, like [`TenantId`]: `new`, `from_uuid`,
/// `as_uuid`, `parse_field`, `Display`/`Debug`/`FromStr`, serde as the bare UUID.
/// `$what` names the kind in errors (`"invoice"` → field `invoice_id`). Domain crates
/// use it for their own ids; the calling crate needs `serde` and `uuid` as
/// dependencies.
#[macro_export]
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) identifier.
            #[must_use]
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID (as read from storage or the wire).
            #[must_use]
            pub const fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }

            /// Parses an identifier, naming `field` in the error when it is not a UUID.
            pub fn parse_field(field: &str, value: &str) -> ::std::result::Result<Self, $crate::Error> {
                ::uuid::Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| $crate::Error::invalid(field, format!("`{value}` is not a valid {} id", $what)))
            }
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Self::parse_field(concat!($what, "_id"), s)
            }
        }

        impl ::std::convert::From<::uuid::Uuid> for $name {
            fn from(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::std::convert::From<$name> for ::uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

id_type!(
    /// Identifies a tenant (an organization): the unit of isolation of all tenant data.
    TenantId,
    "tenant"
);
impl TenantId {
    /// Checks that a record naming tenant `named` may be written by a call scoped to
    /// `self`: `InvalidInput` on field `tenant_id` when they differ.
    pub fn check_scope(self, named: TenantId) -> Result<(), Error> {
        if self == named {
            Ok(())
        } else {
            Err(Error::invalid(
                "tenant_id",
                format!("record names tenant `{named}` but the call is scoped to `{self}`"),
            ))
        }
    }
}

id_type!(
    /// Identifies a user: a global identity that may belong to many tenants.
    UserId,
    "user"
);
id_type!(
    /// Identifies a membership of a user in a tenant.
    MembershipId,
    "membership"
);
id_type!(
    /// Identifies an invitation to join a tenant.
    InvitationId,
    "invitation"
);
id_type!(
    /// Identifies an email-verification request.
    VerificationId,
    "verification"
);

id_type!(
    /// Identifies an OAuth2 client (an application that asks for tokens).
    ClientId,
    "client"
);
id_type!(
    /// Identifies a grant: one authorization of a client by a user (or a client for
    /// itself), the family every token issued from it belongs to, revoked as a whole.
    GrantId,
    "grant"
);

id_type!(
    /// Identifies an event: its idempotency key. A consumer that has applied an event
    /// with this id ignores every redelivery of it.
    EventId,
    "event"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_display_and_from_str() {
        let id = TenantId::new();
        let parsed: TenantId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn bad_id_error_names_the_value_and_field() {
        let err = "not-a-uuid".parse::<UserId>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`not-a-uuid`"), "{msg}");
        assert!(msg.contains("user_id"), "{msg}");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = UserId::new();
        let b = UserId::new();
        assert!(a < b);
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = MembershipId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: MembershipId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
