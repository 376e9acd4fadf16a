//! API keys, stored as SHA-256 hashes: the key itself is shown once and never kept.

use rusqlite::{Connection, OptionalExtension, Row};
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
    /// The secret a rotation with an overlap replaced: it keeps working until
    /// `previous_key_until` (Unix ms).
    #[serde(skip)]
    pub previous_key_hash: Option<String>,
    pub previous_key_until: Option<i64>,
}

/// What revoking a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// No active key has that id.
    NotFound,
    /// The key is the last active admin key: revoking it would lock every admin out.
    LastAdmin,
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

/// Replaces an active key's secret. With `previous_until`, the old secret stays valid until
/// then (the right-hand sides of an UPDATE read the row as it was); without, it stops at once.
pub(super) fn rotate(
    conn: &Connection,
    id: &str,
    hash: &str,
    prefix: &str,
    previous_until: Option<i64>,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE api_keys
             SET previous_key_hash = CASE WHEN ?4 IS NULL THEN NULL ELSE key_hash END,
                 previous_key_until = ?4,
                 key_hash = ?2, key_prefix = ?3
             WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute((id, hash, prefix, previous_until))?
        == 1)
}

/// Revokes an active key, unless it is the last active admin key. The check is part of the
/// UPDATE itself, inside the writer's transaction, so two revokes cannot both pass it.
pub(super) fn revoke(conn: &Connection, id: &str, at: i64) -> rusqlite::Result<Revocation> {
    let changed = conn
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = ?2, previous_key_hash = NULL, previous_key_until = NULL
             WHERE id = ?1 AND revoked_at IS NULL
               AND (role <> 'admin' OR EXISTS (
                   SELECT 1 FROM api_keys AS other
                   WHERE other.role = 'admin' AND other.revoked_at IS NULL AND other.id <> ?1))",
        )?
        .execute((id, at))?;
    if changed == 1 {
        return Ok(Revocation::Revoked);
    }
    let role: Option<String> = conn
        .prepare_cached("SELECT role FROM api_keys WHERE id = ?1 AND revoked_at IS NULL")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    Ok(match role.as_deref() {
        Some("admin") => Revocation::LastAdmin,
        _ => Revocation::NotFound,
    })
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
        previous_key_hash: row.get(8)?,
        previous_key_until: row.get(9)?,
    })
}

/// Every key, revoked ones included, oldest first.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<KeyRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, key_hash, key_prefix, created_at, last_used_at, revoked_at,
                previous_key_hash, previous_key_until
         FROM api_keys ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}
