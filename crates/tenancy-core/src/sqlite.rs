//! SQLite backend (being written).
use crate::error::{Error, Result};
/// All identity stores in one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore;
impl SqliteStore {
    /// Opens (creating if absent) the database at `url`.
    pub async fn connect(url: &str) -> Result<Self> { Err(Error::Unavailable(format!("sqlite backend not ready: {url}"))) }
    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<()> { Ok(()) }
}
