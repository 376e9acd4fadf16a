//! `hivelet backup FILE`: a consistent copy of the database with SQLite's `VACUUM INTO`,
//! taken straight from the data dir. It is safe while the daemon serves: the copy is one
//! read transaction (WAL lets the writer go on meanwhile) and needs no daemon at all.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

use crate::config::Config;

/// How long to wait for a lock the daemon holds (a checkpoint, a schema change).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(config: &Config, file: &Path) -> anyhow::Result<u8> {
    let db = config.paths.database();
    if !db.exists() {
        bail!(
            "there is no database at {} (is --data-dir right?)",
            db.display()
        );
    }
    if std::fs::metadata(file).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} already exists; a backup never overwrites a file, so choose a new name",
            file.display()
        );
    }
    // The copy holds everything the daemon stores, signing secrets included: owner only.
    crate::write_private_file(file, "")
        .with_context(|| format!("cannot create {}", file.display()))?;
    let copied = copy(&db, file);
    if copied.is_err() {
        let _ = std::fs::remove_file(file);
    }
    let runs = copied?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "backed up {} to {} ({runs} runs, {})",
        db.display(),
        file.display(),
        bytesize::ByteSize(bytes).to_string_as(true)
    );
    Ok(0)
}

/// `VACUUM INTO`, then checks the copy opens and counts its runs.
fn copy(db: &Path, file: &Path) -> anyhow::Result<i64> {
    let target = file
        .to_str()
        .context("the backup path must be valid UTF-8")?;
    // Read-write without create: a missing database is an error, not a new empty one.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot copy {} to {}", db.display(), file.display()))?;
    drop(conn);
    let copy = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        bail!("the copy in {} failed its check: {check}", file.display());
    }
    Ok(copy.query_row("SELECT count(*) FROM runs", [], |row| row.get(0))?)
}
