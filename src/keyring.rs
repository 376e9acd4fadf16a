//! API keys in memory: each request is authenticated by hashing the presented key and
//! looking the hash up here, without a database read. The store holds the same hashes.
//! A key rotated with an overlap has two entries until the old secret's expiry; the expired
//! one is dropped at its first use after that.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::ids;
use crate::store::{
    InsertKey, KeyRecord, Revocation, RevokeKey, Role, RotateKey, Store, StoreError, TouchKey,
};

/// How often a key's `last_used_at` is written at most.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
}

struct CachedKey {
    id: String,
    role: Role,
    last_touch_ms: i64,
    /// For the old secret of a key rotated with an overlap: valid before this (Unix ms).
    expires_at: Option<i64>,
}

#[derive(Default)]
pub struct KeyRing {
    by_hash: Mutex<HashMap<String, CachedKey>>,
}

/// A freshly made key: the secret is in `key`, shown to the user once.
pub struct IssuedKey {
    pub record: KeyRecord,
    pub key: String,
}

/// A rotated key's new secret, shown once, and until when the old one still works.
pub struct RotatedKey {
    pub key: String,
    pub previous_valid_until: Option<i64>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn masked_prefix(key: &str) -> String {
    key.chars().take(8).collect()
}

impl KeyRing {
    pub fn load(store: &Store) -> Result<KeyRing, StoreError> {
        let ring = KeyRing::default();
        for key in store.list_keys_blocking()? {
            if key.revoked_at.is_none() {
                ring.insert(&key);
            }
        }
        Ok(ring)
    }

    /// Caches the key's secret, and its previous one while that is still valid.
    fn insert(&self, key: &KeyRecord) {
        let mut keys = self.by_hash.lock().expect("keyring");
        let entry = |expires_at| CachedKey {
            id: key.id.clone(),
            role: key.role,
            last_touch_ms: key.last_used_at.unwrap_or(0),
            expires_at,
        };
        keys.insert(key.key_hash.clone(), entry(None));
        if let (Some(hash), Some(until)) = (&key.previous_key_hash, key.previous_key_until) {
            if until > ids::now_ms() {
                keys.insert(hash.clone(), entry(Some(until)));
            }
        }
    }

    /// The id of the active key a secret belongs to, without recording a use.
    pub fn owner(&self, presented: &str) -> Option<String> {
        let now = ids::now_ms();
        self.by_hash
            .lock()
            .expect("keyring")
            .get(&hash_key(presented))
            .filter(|k| !matches!(k.expires_at, Some(until) if now >= until))
            .map(|k| k.id.clone())
    }

    fn remove_id(&self, id: &str) {
        self.by_hash
            .lock()
            .expect("keyring")
            .retain(|_, k| k.id != id);
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.lock().expect("keyring").is_empty()
    }

    /// The caller a presented key belongs to; records its use at most once a minute.
    pub fn authenticate(&self, store: &Store, presented: &str) -> Option<Caller> {
        let hash = hash_key(presented);
        let now = ids::now_ms();
        let mut keys = self.by_hash.lock().expect("keyring");
        if keys
            .get(&hash)?
            .expires_at
            .is_some_and(|until| now >= until)
        {
            keys.remove(&hash);
            return None;
        }
        let key = keys.get_mut(&hash)?;
        if now - key.last_touch_ms > TOUCH_INTERVAL_MS {
            key.last_touch_ms = now;
            store.write_detached(TouchKey {
                id: key.id.clone(),
                at: now,
            });
        }
        Some(Caller {
            key_id: key.id.clone(),
            role: key.role,
        })
    }

    pub async fn create(
        &self,
        store: &Store,
        name: &str,
        role: Role,
    ) -> Result<IssuedKey, StoreError> {
        let key = ids::api_key_secret();
        let record = KeyRecord {
            id: ids::key_id(),
            name: name.to_string(),
            role,
            key_hash: hash_key(&key),
            key_prefix: masked_prefix(&key),
            created_at: ids::now_ms(),
            last_used_at: None,
            revoked_at: None,
            previous_key_hash: None,
            previous_key_until: None,
        };
        store.write(InsertKey(record.clone())).await?;
        self.insert(&record);
        Ok(IssuedKey { record, key })
    }

    /// Replaces a key's secret. The old secret stops working at once, or with `overlap_ms`
    /// keeps working that long beside the new one. `None` when no active key has that id.
    pub async fn rotate(
        &self,
        store: &Store,
        id: &str,
        overlap_ms: Option<i64>,
    ) -> Result<Option<RotatedKey>, StoreError> {
        let key = ids::api_key_secret();
        let previous_until = overlap_ms.filter(|ms| *ms > 0).map(|ms| ids::now_ms() + ms);
        let cmd = RotateKey {
            id: id.to_string(),
            key_hash: hash_key(&key),
            key_prefix: masked_prefix(&key),
            previous_until,
        };
        if !store.write(cmd).await? {
            return Ok(None);
        }
        let record = store.key(id.to_string()).await?;
        self.remove_id(id);
        if let Some(record) = record {
            self.insert(&record);
        }
        Ok(Some(RotatedKey {
            key,
            previous_valid_until: previous_until,
        }))
    }

    /// Revokes a key (and any old secret it still honours), unless it is the last active
    /// admin key.
    pub async fn revoke(&self, store: &Store, id: &str) -> Result<Revocation, StoreError> {
        let revocation = store
            .write(RevokeKey {
                id: id.to_string(),
                at: ids::now_ms(),
            })
            .await?;
        if revocation == Revocation::Revoked {
            self.remove_id(id);
        }
        Ok(revocation)
    }
}
