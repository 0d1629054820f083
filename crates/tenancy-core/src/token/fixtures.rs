//! Test fixtures of the token module: a `Vec`-backed [`KeyStore`] (the storage
//! backends have their own conformance suite).

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::store::{KeyRecord, KeyStore};
use crate::error::{Error, Result};

/// Keys in a vector, oldest first.
#[derive(Debug, Default)]
pub(crate) struct VecKeyStore(Mutex<Vec<KeyRecord>>);

impl VecKeyStore {
    pub(crate) fn snapshot(&self) -> Vec<KeyRecord> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl KeyStore for VecKeyStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        Ok(self.snapshot())
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let mut keys = self.0.lock().unwrap();
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(Error::AlreadyExists(format!("key `{}` exists", key.kid)));
        }
        keys.push(key.clone());
        Ok(())
    }

    async fn activate_key(&self, kid: &str, activates_at: DateTime<Utc>) -> Result<()> {
        let mut keys = self.0.lock().unwrap();
        let key = keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::not_found("key", kid))?;
        key.activates_at = activates_at;
        Ok(())
    }

    async fn retire_key(
        &self,
        kid: &str,
        retires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut keys = self.0.lock().unwrap();
        let key = keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::not_found("key", kid))?;
        key.retires_at = Some(retires_at);
        key.expires_at = Some(expires_at);
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut keys = self.0.lock().unwrap();
        let before = keys.len();
        keys.retain(|k| k.expires_at.is_none_or(|e| e >= now));
        Ok((before - keys.len()) as u64)
    }
}
