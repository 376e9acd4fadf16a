//! A consistent copy of a database file with SQLite's `VACUUM INTO`. It needs no open
//! [`super::Store`]: the copy is one read transaction, so a running daemon (WAL) goes on
//! writing meanwhile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long to wait for a lock the daemon holds (a checkpoint, a schema change).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a backup failed; the message names the file to look at.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup path must be valid UTF-8")]
    NotUtf8,
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the copy in {} failed its check: {problem}", path.display())]
    Check { path: PathBuf, problem: String },
}

/// Copies the database `db` into the new file `file` (which may exist but be empty), then
/// checks the copy opens and is sound. Returns how many runs the copy holds.
pub fn backup(db: &Path, file: &Path) -> Result<u64, BackupError> {
    let target = file.to_str().ok_or(BackupError::NotUtf8)?;
    let open = |source| BackupError::Open {
        path: db.to_path_buf(),
        source,
    };
    let copy = |source| BackupError::Copy {
        from: db.to_path_buf(),
        to: file.to_path_buf(),
        source,
    };
    // Read-write without create: a missing database is an error, not a new empty one.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(copy)?;
    drop(conn);
    let check = |problem: String| BackupError::Check {
        path: file.to_path_buf(),
        problem,
    };
    let copied = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| check(e.to_string()))?;
    let verdict: String = copied
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| check(e.to_string()))?;
    if verdict != "ok" {
        return Err(check(verdict));
    }
    let runs: i64 = copied
        .query_row("SELECT count(*) FROM runs", [], |row| row.get(0))
        .map_err(|e| check(e.to_string()))?;
    Ok(runs.max(0) as u64)
}
