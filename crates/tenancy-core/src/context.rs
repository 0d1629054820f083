//! [`TenantContext`]: who is calling, for which tenant, with which scopes and roles, as
//! established from a verified access token (or an embedding application's own session).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, TenantId, UserId};

/// The party a request acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// A user, signed in through a client.
    User(UserId),
    /// A client acting for itself (the `client_credentials` grant).
    Client(ClientId),
}

/// The verified context of one request: every tenant-scoped call takes it (or its
/// [`TenantId`]) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantContext {
    /// The tenant the request is for.
    pub tenant_id: TenantId,
    /// Who the request acts for.
    pub subject: Subject,
    /// The client the token was issued to.
    pub client_id: ClientId,
    /// The granted scopes.
    pub scopes: BTreeSet<String>,
    /// The user's roles in the tenant (empty for clients).
    pub roles: Vec<String>,
}

impl TenantContext {
    /// Whether the context holds `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}
