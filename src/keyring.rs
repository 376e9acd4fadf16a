//! API keys in memory: each request is authenticated by hashing the presented key and
//! looking the hash up here, without a database read. The store holds the same hashes.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::ids;
use crate::store::{InsertKey, KeyRecord, RevokeKey, Role, RotateKey, Store, StoreError, TouchKey};

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

    fn insert(&self, key: &KeyRecord) {
        self.by_hash.lock().expect("keyring").insert(
            key.key_hash.clone(),
            CachedKey {
                id: key.id.clone(),
                role: key.role,
                last_touch_ms: key.last_used_at.unwrap_or(0),
            },
        );
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
        };
        store.write(InsertKey(record.clone())).await?;
        self.insert(&record);
        Ok(IssuedKey { record, key })
    }

    /// Replaces a key's secret; the old secret stops working at once.
    pub async fn rotate(&self, store: &Store, id: &str) -> Result<Option<String>, StoreError> {
        let key = ids::api_key_secret();
        let cmd = RotateKey {
            id: id.to_string(),
            key_hash: hash_key(&key),
            key_prefix: masked_prefix(&key),
        };
        if !store.write(cmd).await? {
            return Ok(None);
        }
        let record = store.key(id.to_string()).await?;
        self.remove_id(id);
        if let Some(record) = record {
            self.insert(&record);
        }
        Ok(Some(key))
    }

    pub async fn revoke(&self, store: &Store, id: &str) -> Result<bool, StoreError> {
        let found = store
            .write(RevokeKey {
                id: id.to_string(),
                at: ids::now_ms(),
            })
            .await?;
        self.remove_id(id);
        Ok(found)
    }
}
