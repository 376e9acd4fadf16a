//! Schema versions. `schema.sql` is the whole schema of version 1; each later change appends
//! one migration here. `PRAGMA user_version` records what a database has; all pending steps
//! apply in one transaction, and a database newer than this binary is refused.

use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, StoreResult};

const SCHEMA: &str = include_str!("../../schema.sql");

/// Migrations after version 1, in order: `MIGRATIONS[0]` takes a database to version 2.
const MIGRATIONS: &[&str] = &[
    // 2: a key rotated with an overlap (`expires_in`) keeps its old secret until then.
    "ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
     ALTER TABLE api_keys ADD COLUMN previous_key_until INTEGER;",
];

/// The schema version this binary writes.
pub const LATEST_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > LATEST_VERSION {
        return Err(StoreError::Refused(format!(
            "the database {} has schema version {current}, newer than this hivelet {} understands \
             (version {LATEST_VERSION}); run a newer hivelet, or restore a backup made by this version",
            path.display(),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    if current == LATEST_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    // A new database gets version 1 from `schema.sql`, then every step like an old one.
    if current == 0 {
        tx.execute_batch(SCHEMA)?;
    }
    for step in &MIGRATIONS[(current.max(1) - 1) as usize..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", LATEST_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_columns(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('api_keys')")
            .unwrap();
        let names = stmt.query_map([], |row| row.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_new_and_a_version_1_database_end_the_same() {
        let path = Path::new("test.db");
        let mut fresh = Connection::open_in_memory().unwrap();
        migrate(&mut fresh, path).unwrap();

        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        migrate(&mut old, path).unwrap();

        for conn in [&fresh, &old] {
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .unwrap();
            assert_eq!(version, LATEST_VERSION);
            let columns = key_columns(conn);
            assert!(
                columns.iter().any(|c| c == "previous_key_until"),
                "{columns:?}"
            );
        }
        assert_eq!(key_columns(&fresh), key_columns(&old));
        // Up to date: nothing to do, nothing fails.
        migrate(&mut fresh, path).unwrap();
    }
}
