//! API keys, stored as SHA-256 hashes: the key itself is shown once and never kept.

use rusqlite::{Connection, Row};
use serde::Serialize;

pub use crate::domain::Role;

#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub key_hash: String,
    /// The first characters of the key, for masked display (`hvk_Ab12…`).
    pub key_prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub(super) fn insert(conn: &Connection, key: &KeyRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, name, role, key_hash, key_prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        &key.id,
        &key.name,
        key.role,
        &key.key_hash,
        &key.key_prefix,
        key.created_at,
    ))?;
    Ok(())
}

pub(super) fn rotate(
    conn: &Connection,
    id: &str,
    hash: &str,
    prefix: &str,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE api_keys SET key_hash = ?2, key_prefix = ?3 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute((id, hash, prefix))?
        == 1)
}

pub(super) fn revoke(conn: &Connection, id: &str, at: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute((id, at))?
        == 1)
}

pub(super) fn touch(conn: &Connection, id: &str, at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
        .execute((id, at))?;
    Ok(())
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        key_hash: row.get(3)?,
        key_prefix: row.get(4)?,
        created_at: row.get(5)?,
        last_used_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

/// Every key, revoked ones included, oldest first.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<KeyRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, key_hash, key_prefix, created_at, last_used_at, revoked_at
         FROM api_keys ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}
