//! The store: one SQLite file, one writer thread, a few reader connections.
//!
//! All writes go through [`Store::write`] as domain verbs, one type per command
//! ([`commands`]), each answering its own output type; the writer thread drains whatever is
//! waiting into one transaction (group commit), so a burst of invokes costs one fsync. Reads
//! are typed queries ([`Store::list_runs`], [`Store::attempts_for_run`]…) run on pooled
//! connections in blocking threads (WAL lets them run beside the writer). Nothing here knows
//! about HTTP or actors.
//!
//! This interface is the contract a second backend (PostgreSQL is planned) implements: domain
//! verbs in, domain records out. No rusqlite type appears in it; SQLite stays inside this
//! module (`writer.rs` applies the commands, the table files hold the SQL, `states.rs` maps
//! the [`crate::domain`] states to text).

mod backup;
pub mod commands;
pub mod deployments;
pub mod events;
pub mod keys;
mod migrate;
pub mod runs;
pub mod schedules;
mod states;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use backup::{backup, BackupError};
pub use commands::*;
pub use deployments::{Deployed, DeploymentRecord, NewDeploymentVersion, VersionInfo};
pub use events::{AttemptRow, DueEvent, EventRecord, EventUpdate, NewEvent};
pub use keys::{KeyRecord, Revocation, Role};
pub use runs::{
    FinishedRun, NewRun, RunFilter, RunFinish, RunListItem, RunRecord, StepRow, StoredTrace,
};
pub use schedules::{
    Advance, DeleteSchedule, FireSchedule, InsertSchedule, ScheduleRecord, UpdateSchedule,
};
pub use writer::Apply;

pub use crate::domain::{
    AttemptOutcome, ErrorKind, EventState, RunDelivery, RunSource, RunStatus, StepStatus,
};

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
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen) => StoreError::Unavailable(
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
    pub async fn write<C: Apply>(&self, cmd: C) -> StoreResult<C::Output> {
        self.inner.writer.submit(cmd).await
    }

    /// Queues a write now, in order with every write queued after it, and answers a future
    /// of its result: for a caller that must not wait but needs the answer.
    pub fn write_queued<C: Apply>(
        &self,
        cmd: C,
    ) -> impl std::future::Future<Output = StoreResult<C::Output>> {
        self.inner.writer.submit_queued(cmd)
    }

    /// Queues a write without waiting. It still commits in order with every other write;
    /// used for records whose loss on a crash is acceptable (step traces, last-used times).
    pub fn write_detached<C: Apply>(&self, cmd: C) {
        self.inner.writer.submit_detached(cmd);
    }

    /// Deletes every finished run that ended before `ended_before` (Unix ms), with its steps,
    /// event and attempts, [`PURGE_BATCH_RUNS`] runs per transaction so the writes queued
    /// behind a batch (invokes among them) wait milliseconds, not the whole purge. Runs
    /// whose event still waits for delivery are kept. Returns how many runs went.
    pub async fn purge_runs(&self, ended_before: i64) -> StoreResult<usize> {
        let mut total = 0;
        loop {
            let purged = self
                .write(PurgeRuns {
                    ended_before,
                    limit: PURGE_BATCH_RUNS,
                    at: crate::ids::now_ms(),
                })
                .await?;
            total += purged;
            crate::metrics::get().runs_purged.inc_by(purged as u64);
            if purged < PURGE_BATCH_RUNS {
                return Ok(total);
            }
        }
    }

    /// A run with its step trace (oldest line first).
    pub async fn run_with_steps(
        &self,
        request_id: String,
    ) -> StoreResult<Option<(RunRecord, Vec<StepRow>)>> {
        self.read(move |conn| {
            let Some(run) = runs::get_run(conn, &request_id)? else {
                return Ok(None);
            };
            let steps = runs::get_steps(conn, &request_id)?;
            Ok(Some((run, steps)))
        })
        .await
    }

    /// A run without its trace.
    pub async fn run(&self, request_id: String) -> StoreResult<Option<RunRecord>> {
        self.read(move |conn| runs::get_run(conn, &request_id))
            .await
    }

    /// How deep a run is in its lineage of `workflow` steps: 1 for a run without a parent,
    /// counted up to `cap`.
    pub async fn run_depth(&self, request_id: String, cap: u32) -> StoreResult<u32> {
        self.read(move |conn| runs::depth(conn, &request_id, cap))
            .await
    }

    /// The children of a run still `queued` or `running`.
    pub async fn live_children(&self, request_id: String) -> StoreResult<Vec<String>> {
        self.read(move |conn| runs::live_children(conn, &request_id))
            .await
    }

    /// A run's event (if it has one yet) and every attempt to deliver it, oldest first.
    pub async fn delivery_of_run(
        &self,
        request_id: String,
    ) -> StoreResult<(Option<EventRecord>, Vec<AttemptRow>)> {
        self.read(move |conn| {
            Ok((
                events::event_for_run(conn, &request_id)?,
                events::attempts_for_run(conn, &request_id)?,
            ))
        })
        .await
    }

    /// Every event of a run in delivery order, and every attempt to deliver them, oldest
    /// first. The events are read first, so the attempts they count are all there.
    pub async fn events_of_run(
        &self,
        request_id: String,
    ) -> StoreResult<(Vec<EventRecord>, Vec<AttemptRow>)> {
        self.read(move |conn| {
            Ok((
                events::events_for_run(conn, &request_id)?,
                events::attempts_for_run(conn, &request_id)?,
            ))
        })
        .await
    }

    /// Every delivery attempt of a run, oldest first.
    pub async fn attempts_for_run(&self, request_id: String) -> StoreResult<Vec<AttemptRow>> {
        self.read(move |conn| events::attempts_for_run(conn, &request_id))
            .await
    }

    /// The run an `evt_…` id belongs to.
    pub async fn run_of_event(&self, event_id: String) -> StoreResult<Option<String>> {
        self.read(move |conn| runs::run_of_event(conn, &event_id))
            .await
    }

    /// The run's last event: id, type and the exact body as sent.
    pub async fn last_event_body(
        &self,
        request_id: String,
    ) -> StoreResult<Option<(String, String, Vec<u8>)>> {
        self.read(move |conn| runs::last_event_body(conn, &request_id))
            .await
    }

    /// The rows `GET /v1/stats` sums up: runs created at or after `since_ms`, at most `cap`
    /// of each kind.
    pub async fn stats_rows(&self, since_ms: i64, cap: usize) -> StoreResult<runs::StatsRows> {
        self.read(move |conn| runs::stats_rows(conn, since_ms, cap))
            .await
    }

    /// The runs matching `filter`, newest first: at most `filter.limit` + 1, so the caller
    /// can tell whether another page exists.
    pub async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunListItem>> {
        self.read(move |conn| runs::list_runs(conn, &filter)).await
    }

    /// The stored first response for an idempotency key, if it was saved at or after `since`.
    pub async fn find_idempotent(
        &self,
        api_key_id: String,
        idempotency_key: String,
        since: i64,
    ) -> StoreResult<Option<String>> {
        self.read(move |conn| runs::find_idempotent(conn, &api_key_id, &idempotency_key, since))
            .await
    }

    /// Every API key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.read(keys::list).await
    }

    /// Like [`Store::list_keys`], on the calling thread (start-up).
    pub fn list_keys_blocking(&self) -> StoreResult<Vec<KeyRecord>> {
        self.read_blocking(keys::list)
    }

    /// One API key, revoked or not.
    pub async fn key(&self, id: String) -> StoreResult<Option<KeyRecord>> {
        self.read(move |conn| Ok(keys::list(conn)?.into_iter().find(|k| k.id == id)))
            .await
    }

    /// Every version of a deployment, oldest first.
    pub async fn deployment_versions(&self, key: String) -> StoreResult<Vec<VersionInfo>> {
        self.read(move |conn| deployments::versions(conn, &key))
            .await
    }

    /// Every deployment with its current definition (start-up).
    pub fn deployments_blocking(&self) -> StoreResult<Vec<DeploymentRecord>> {
        self.read_blocking(deployments::load_all)
    }

    /// The definition (JSON) a deployment had at `version`, on the calling thread.
    pub fn definition_at_blocking(&self, key: &str, version: i64) -> StoreResult<Option<String>> {
        self.read_blocking(|conn| deployments::definition_at(conn, key, version))
    }

    /// Runs left `queued` or `running` by a crash or a stop, oldest first (start-up).
    pub fn unfinished_runs_blocking(&self) -> StoreResult<Vec<RunRecord>> {
        self.read_blocking(runs::load_unfinished)
    }

    /// A run's step trace and its stored approval answers, read together on the calling
    /// thread (start-up).
    pub fn trace_blocking(&self, request_id: &str) -> StoreResult<StoredTrace> {
        self.read_blocking(|conn| {
            Ok(StoredTrace {
                steps: runs::get_steps(conn, request_id)?,
                approvals: runs::approval_responses(conn, request_id)?,
            })
        })
    }

    /// Every schedule, oldest first.
    pub async fn schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.read(schedules::list).await
    }

    /// One schedule.
    pub async fn schedule(&self, id: String) -> StoreResult<Option<ScheduleRecord>> {
        self.read(move |conn| schedules::get(conn, &id)).await
    }

    /// Runs a read on a pooled connection in a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        actix_web::rt::task::spawn_blocking(move || inner.read_now(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the calling thread (start-up).
    fn read_blocking<T, F>(&self, f: F) -> StoreResult<T>
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
