//! Where entities come from besides the request: an [`EntityProvider`] an embedding
//! application implements to load resources, and [`IdentityEntities`], which loads
//! principals (`User::"<user id>"`) and their roles from tenancy-core's identity
//! store.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use cedar_policy::{Entity, EntityId, EntityUid, RestrictedExpression};
use tenancy_core::identity::Identity;
use tenancy_core::{Error, ErrorKind, Result, TenantId, UserId};

/// Loads entities for authorization requests. Called once per request (once per batch)
/// with the principals and resources it names; returns the entities it knows among
/// them (and any ancestors worth adding). Entities it returns replace request-supplied
/// entities with the same uid: the provider is the authority.
#[async_trait]
pub trait EntityProvider: Send + Sync {
    /// The entities for `uids` in `tenant` that this provider knows.
    async fn entities(&self, tenant: TenantId, uids: &[EntityUid]) -> Result<Vec<Entity>>;
}

/// Loads `User::"<user id>"` principals from the identity store: their email,
/// verification and display name as attributes, and their roles in the tenant as
/// parents `Role::"<role>"`. A user who is not a member of the tenant gets no entity
/// (so no roles); uids of other types are left to other providers.
#[derive(Debug, Clone)]
pub struct IdentityEntities {
    identity: Identity,
}

impl IdentityEntities {
    /// The provider over `identity`.
    #[must_use]
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

/// The entity type of users.
pub const USER_TYPE: &str = "User";
/// The entity type of roles.
pub const ROLE_TYPE: &str = "Role";

fn uid(type_name: &str, id: &str) -> Result<EntityUid> {
    let t = crate::names::type_name(type_name)
        .ok_or_else(|| Error::Internal(format!("bad built-in entity type `{type_name}`")))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

#[async_trait]
impl EntityProvider for IdentityEntities {
    async fn entities(&self, tenant: TenantId, uids: &[EntityUid]) -> Result<Vec<Entity>> {
        let mut out = Vec::new();
        let mut roles = HashSet::new();
        for principal in uids {
            if principal.type_name().to_string() != USER_TYPE {
                continue;
            }
            let Ok(user_id) = UserId::from_str(principal.id().unescaped()) else {
                continue;
            };
            let membership = match self.identity.membership(tenant, user_id).await {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let user = self.identity.user(user_id).await?;
            let mut parents = HashSet::new();
            for role in &membership.roles {
                let role_uid = uid(ROLE_TYPE, role.as_str())?;
                roles.insert(role_uid.clone());
                parents.insert(role_uid);
            }
            let attrs = HashMap::from([
                (
                    "email".to_owned(),
                    RestrictedExpression::new_string(user.email.to_string()),
                ),
                (
                    "email_verified".to_owned(),
                    RestrictedExpression::new_bool(user.email_verified),
                ),
                (
                    "display_name".to_owned(),
                    RestrictedExpression::new_string(user.display_name.to_string()),
                ),
            ]);
            let entity = Entity::new(principal.clone(), attrs, parents)
                .map_err(|e| Error::Internal(format!("cannot build user entity: {e}")))?;
            out.push(entity);
        }
        out.extend(
            roles
                .into_iter()
                .map(|r| Entity::new_no_attrs(r, HashSet::new())),
        );
        Ok(out)
    }
}
