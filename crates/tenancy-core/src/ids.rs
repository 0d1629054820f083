//! Identifiers: UUID v7 newtypes, one per kind of thing, so a tenant id can never be
//! passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) identifier.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (as read from storage or the wire).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses an identifier, naming `field` in the error when it is not a UUID.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, Error> {
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| Error::invalid(field, format!("`{value}` is not a valid {} id", $what)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_field(concat!($what, "_id"), s)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
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
