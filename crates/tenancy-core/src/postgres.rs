//! PostgreSQL backend (being written).
use crate::error::{Error, Result};
/// All identity stores in one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore;
impl PgStore {
    /// Opens (creating if absent) the database at `url`.
    pub async fn connect(url: &str) -> Result<Self> { Err(Error::Unavailable(format!("postgres backend not ready: {url}"))) }
    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<()> { Ok(()) }
}
impl PgStore {
    /// Grants the application role `role` the rights it needs on the tables (not
    /// ownership, not BYPASSRLS).
    pub async fn grant_app_role(&self, role: &str) -> Result<()> { Err(Error::Unavailable(role.to_owned())) }
}
