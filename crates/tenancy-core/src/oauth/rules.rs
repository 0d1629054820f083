//! Checks every provider backend applies the same way before writing.

use super::model::{Client, RefreshToken};
use super::store::ClientScope;
use crate::error::{Error, Result};
use crate::ids::TenantId;

/// Checks that a client written through `scope` names that scope's tenant.
pub(crate) fn check_client_scope(scope: ClientScope, client: &Client) -> Result<()> {
    if client.tenant_id == scope.tenant() {
        Ok(())
    } else {
        Err(Error::invalid(
            "tenant_id",
            format!(
                "client `{}` names {} but the call is scoped to {}",
                client.id,
                describe(client.tenant_id),
                describe(scope.tenant())
            ),
        ))
    }
}

fn describe(tenant: Option<TenantId>) -> String {
    tenant.map_or_else(|| "no tenant".to_owned(), |t| format!("tenant `{t}`"))
}

/// A rotated token must stay in its family.
pub(crate) fn check_same_family(old: &RefreshToken, new: &RefreshToken) -> Result<()> {
    if old.grant_id == new.grant_id {
        Ok(())
    } else {
        Err(Error::invalid(
            "grant_id",
            format!(
                "the new refresh token names grant `{}` but the old one belongs to `{}`",
                new.grant_id, old.grant_id
            ),
        ))
    }
}
