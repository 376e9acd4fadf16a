//! The store: one SQLite file, one writer thread, a few reader connections.
//!
//! All writes go through [`Store::write`] as domain verbs ([`Write`]); the writer thread drains
//! whatever is waiting into one transaction (group commit), so a burst of invokes costs one
//! fsync. Reads run on pooled connections in blocking threads (WAL lets them run beside the
//! writer). Nothing here knows about HTTP or actors.

pub mod deployments;
pub mod events;
pub mod keys;
mod migrate;
pub mod runs;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use deployments::{DeploymentRecord, NewDeploymentVersion, VersionInfo};
pub use events::{AttemptRow, DueEvent, EventUpdate, NewEvent};
pub use keys::{KeyRecord, Revocation, Role};
pub use runs::{FinishedRun, NewRun, RunRecord, RunStatus, StepRow};
pub use writer::{Write, Written};

use crate::config::{StoreConfig, Synchronous};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database cannot take writes now (disk full, read-only); callers answer 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
    #[error("the store has shut down")]
    Closed,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Disk-full and read-only errors mean "try later", not "bug".
    fn classify(err: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Unavailable(
                "The database disk is full; the request was not stored.".into(),
            ),
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => StoreError::Unavailable(
                "The database is read-only; the request was not stored.".into(),
            ),
            // A write the file system refused (e.g. it was remounted read-only).
            Some(ErrorCode::SystemIoFailure) => StoreError::Unavailable(format!(
                "The database cannot be written ({err}); the request was not stored."
            )),
            _ => StoreError::Sqlite(err),
        }
    }

    /// Like [`StoreError::classify`], but says what the operator has to fix: a file system
    /// that has become read-only (ext4 does that after disk errors), or a full database when
    /// `store.max_size` is set.
    fn classify_at(db_path: Option<&Path>, size_limited: bool, err: rusqlite::Error) -> StoreError {
        if size_limited && err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StoreError::Unavailable(
                "The database is full: it reached store.max_size (or the disk is full); the request was not stored. Free space with `hivelet runs purge` or raise store.max_size."
                    .into(),
            );
        }
        let io_failure = err.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure);
        if io_failure && db_path.is_some_and(file_system_is_read_only) {
            return StoreError::Unavailable(
                "The database is read-only: its file system was remounted read-only; the request was not stored."
                    .into(),
            );
        }
        StoreError::classify(err)
    }
}

/// Whether opening `path` for writing fails because its file system is read-only.
fn file_system_is_read_only(path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        // EROFS is 30 on Linux, macOS and the BSDs (`ErrorKind::ReadOnlyFilesystem` needs a
        // newer Rust than our MSRV).
        .is_err_and(|e| e.raw_os_error() == Some(30))
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Runs deleted per purge transaction (each with its steps, event and attempts).
pub const PURGE_BATCH_RUNS: usize = 500;

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::WriterHandle,
    readers: Mutex<Vec<Connection>>,
}

/// Pragmas every connection gets.
fn configure(conn: &Connection, sync: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed, mode 0600) and migrates the database, then starts the writer.
    pub fn open(path: &Path, options: &StoreConfig) -> StoreResult<Store> {
        create_private_file(path)?;
        let mut conn = Connection::open(path)?;
        configure(&conn, options.synchronous)?;
        migrate::migrate(&mut conn, path)?;
        let size_limited = options.max_size.0 > 0;
        if size_limited {
            // SQLite keeps the larger of this and the current size, so a database already
            // over the limit stays usable for reads and deletes.
            let page_size: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = (options.max_size.0 / page_size).max(1);
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        let writer = writer::spawn(conn, size_limited)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues a write and waits until the batch holding it is committed (durable).
    pub async fn write(&self, cmd: Write) -> StoreResult<Written> {
        self.inner.writer.submit(cmd).await
    }

    /// Queues a write without waiting. It still commits in order with every other write;
    /// used for records whose loss on a crash is acceptable (step traces, last-used times).
    pub fn write_detached(&self, cmd: Write) {
        self.inner.writer.submit_detached(cmd);
    }

    /// Deletes every finished run that ended before `ended_before` (Unix ms), with its steps,
    /// event and attempts, [`PURGE_BATCH_RUNS`] runs per transaction so the writes queued
    /// behind a batch (invokes among them) wait milliseconds, not the whole purge. Runs
    /// whose event still waits for delivery are kept. Returns how many runs went.
    pub async fn purge_runs(&self, ended_before: i64) -> StoreResult<usize> {
        let mut total = 0;
        loop {
            let written = self
                .write(Write::PurgeRuns {
                    ended_before,
                    limit: PURGE_BATCH_RUNS,
                    at: crate::ids::now_ms(),
                })
                .await?;
            let purged = match written {
                Written::Purged(n) => n,
                _ => 0,
            };
            total += purged;
            crate::metrics::get().runs_purged.inc_by(purged as u64);
            if purged < PURGE_BATCH_RUNS {
                return Ok(total);
            }
        }
    }

    /// Runs a read on a pooled connection in a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        actix_web::rt::task::spawn_blocking(move || inner.read_now(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the calling thread (start-up, CLI).
    pub fn read_blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        self.inner.read_now(f)
    }

    /// Waits for every queued write to commit, then stops the writer thread.
    pub fn close(&self) {
        self.inner.writer.close();
    }
}

impl Inner {
    fn read_now<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let pooled = self.readers.lock().expect("reader pool").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn
            }
        };
        let result = f(&conn).map_err(StoreError::from);
        let mut pool = self.readers.lock().expect("reader pool");
        if pool.len() < 8 {
            pool.push(conn);
        }
        result
    }
}

/// Creates the database file with mode 0600 before SQLite does (SQLite gives the WAL and
/// shared-memory files the same mode).
fn create_private_file(path: &Path) -> StoreResult<()> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}
