//! The single writer. It blocks for one command, then takes every other command already
//! waiting (up to `MAX_BATCH`) and applies them all in one transaction: the batch grows with
//! the load instead of with a timer, so an idle daemon commits at once and a busy one pays
//! one fsync for many writes. Each command runs inside its own savepoint, so one bad command
//! fails alone.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::deployments::{self, NewDeploymentVersion};
use super::events::{self, AttemptRow, DueEvent, EventUpdate};
use super::keys::{self, KeyRecord};
use super::runs::{self, FinishedRun, NewRun, StepRow};
use super::{StoreError, StoreResult};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 2048;

/// Every change the daemon makes to its database.
#[derive(Debug)]
pub enum Write {
    InsertRun(Box<NewRun>),
    MarkRunning {
        request_id: String,
        started_at: i64,
    },
    RecordStep(Box<StepRow>),
    /// The answer to a waiting approval step; answers `Found(false)` when the run is not
    /// running, the step is not waiting, or it already has an answer.
    AnswerApproval {
        request_id: String,
        step_id: String,
        /// The step's output: `{"choice": {"value", "label"}}` or `{"text"}`.
        response_json: String,
        at: i64,
    },
    FinishRun(Box<FinishedRun>),
    PutDeployment(Box<NewDeploymentVersion>),
    DeleteDeployment {
        key: String,
    },
    /// The current secret becomes the previous one (valid until `previous_until`).
    RotateSecret {
        key: String,
        new_secret: String,
        previous_until: i64,
    },
    InsertKey(Box<KeyRecord>),
    RotateKey {
        id: String,
        key_hash: String,
        key_prefix: String,
        /// Until when the old secret keeps working (Unix ms); `None`: not at all.
        previous_until: Option<i64>,
    },
    RevokeKey {
        id: String,
        at: i64,
    },
    TouchKey {
        id: String,
        at: i64,
    },
    RecordAttempt(Box<AttemptRow>, EventUpdate),
    /// A new attempt series for the run's event; answers `Redelivered`.
    Redeliver {
        request_id: String,
        at: i64,
    },
    /// Deletes up to `limit` finished runs that ended before `ended_before` (Unix ms), with
    /// everything recorded about them; answers `Purged(n)`. Callers repeat it until fewer
    /// than `limit` go, so other writes get their turn between batches.
    PurgeRuns {
        ended_before: i64,
        limit: usize,
        at: i64,
    },
    SaveIdempotent {
        api_key_id: String,
        idempotency_key: String,
        request_id: String,
        response: String,
        at: i64,
    },
}

impl Write {
    /// Whether applying the command runs more than one data-changing statement.
    fn has_several_statements(&self) -> bool {
        matches!(
            self,
            Write::FinishRun(_)
                | Write::PutDeployment(_)
                | Write::RecordAttempt(..)
                | Write::Redeliver { .. }
                | Write::PurgeRuns { .. }
                | Write::AnswerApproval { .. }
        )
    }
}

/// What a write reports back.
#[derive(Debug, Clone)]
pub enum Written {
    Done,
    /// The version a deploy created, and the deployment's signing secret.
    Deployed {
        version: i64,
        created: bool,
    },
    /// Whether the row the command named existed.
    Found(bool),
    /// The event due again after a redelivery, if the run had one.
    Redelivered(Option<DueEvent>),
    /// How many runs a purge deleted.
    Purged(usize),
    /// What revoking a key did.
    Revoked(keys::Revocation),
}

impl Written {
    pub fn found(&self) -> bool {
        matches!(self, Written::Found(true))
    }
}

type Reply = oneshot::Sender<StoreResult<Written>>;

/// A write and, unless detached, where its result goes.
type Queued = (Write, Option<Reply>);

pub(super) struct WriterHandle {
    tx: Mutex<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// `size_limited`: `store.max_size` is set, so "full" may mean that limit.
pub(super) fn spawn(conn: Connection, size_limited: bool) -> StoreResult<WriterHandle> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer_loop(conn, rx, size_limited))
        .map_err(|source| StoreError::Io {
            path: "store-writer thread".into(),
            source,
        })?;
    Ok(WriterHandle {
        tx: Mutex::new(Some(tx)),
        thread: Mutex::new(Some(thread)),
    })
}

impl WriterHandle {
    pub(super) async fn submit(&self, cmd: Write) -> StoreResult<Written> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(cmd, Some(reply_tx))?;
        reply_rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) fn submit_detached(&self, cmd: Write) {
        if let Err(err) = self.send(cmd, None) {
            tracing::warn!(%err, "write dropped");
        }
    }

    fn send(&self, cmd: Write, reply: Option<Reply>) -> StoreResult<()> {
        let guard = self.tx.lock().expect("writer sender");
        let tx = guard.as_ref().ok_or(StoreError::Closed)?;
        tx.send((cmd, reply)).map_err(|_| StoreError::Closed)
    }

    /// Drops the sender so the thread finishes its queue and exits, then joins it.
    pub(super) fn close(&self) {
        self.tx.lock().expect("writer sender").take();
        if let Some(thread) = self.thread.lock().expect("writer thread").take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Queued>, size_limited: bool) {
    let failures = Failures {
        db_path: conn.path().map(std::path::PathBuf::from),
        size_limited,
    };
    let mut batch = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let clock = std::time::Instant::now();
        let results = commit_batch(&mut conn, &batch, &failures);
        crate::metrics::get().store_commit(batch.len(), clock.elapsed());
        for ((_, reply), result) in batch.drain(..).zip(results) {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            } else if let Err(err) = result {
                tracing::warn!(%err, "detached write failed");
            }
        }
    }
}

/// What the writer needs to explain a failed write (see [`StoreError::classify_at`]).
struct Failures {
    db_path: Option<std::path::PathBuf>,
    size_limited: bool,
}

/// Applies a batch in one transaction; every command gets its own result.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Queued],
    failures: &Failures,
) -> Vec<StoreResult<Written>> {
    let classify =
        |err| StoreError::classify_at(failures.db_path.as_deref(), failures.size_limited, err);
    let failed_all = |err: rusqlite::Error| {
        let err = classify(err);
        let msg = err.to_string();
        let unavailable = matches!(err, StoreError::Unavailable(_));
        (0..batch.len())
            .map(|_| {
                Err(if unavailable {
                    StoreError::Unavailable(msg.clone())
                } else {
                    StoreError::Refused(msg.clone())
                })
            })
            .collect::<Vec<_>>()
    };
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(err) => return failed_all(err),
    };
    let mut results = Vec::with_capacity(batch.len());
    for (cmd, _) in batch {
        // One statement is atomic on its own (SQLite undoes a failed statement); only
        // commands of several statements need a savepoint, which costs two more statements.
        let outcome = if cmd.has_several_statements() {
            tx.savepoint().and_then(|mut sp| match apply(&sp, cmd) {
                Ok(written) => sp.commit().map(|_| written),
                Err(err) => {
                    let _ = sp.rollback();
                    Err(err)
                }
            })
        } else {
            apply(&tx, cmd)
        };
        match outcome {
            Ok(written) => results.push(Ok(written)),
            // Some errors (SQLITE_FULL, I/O errors, out of memory) make SQLite roll back the
            // whole transaction: the commands before this one are gone, and the ones after
            // would run outside any transaction. Nothing in the batch is stored.
            Err(err) if tx.is_autocommit() => return failed_all(err),
            Err(err) => results.push(Err(classify(err))),
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(err) => failed_all(err),
    }
}

fn apply(conn: &Connection, cmd: &Write) -> rusqlite::Result<Written> {
    match cmd {
        Write::InsertRun(run) => runs::insert(conn, run).map(|_| Written::Done),
        Write::MarkRunning {
            request_id,
            started_at,
        } => runs::mark_running(conn, request_id, *started_at).map(Written::Found),
        Write::RecordStep(step) => runs::record_step(conn, step).map(|_| Written::Done),
        Write::AnswerApproval {
            request_id,
            step_id,
            response_json,
            at,
        } => {
            runs::answer_approval(conn, request_id, step_id, response_json, *at).map(Written::Found)
        }
        Write::FinishRun(done) => runs::finish(conn, done).map(Written::Found),
        Write::PutDeployment(dep) => deployments::put(conn, dep),
        Write::DeleteDeployment { key } => deployments::delete(conn, key).map(Written::Found),
        Write::RotateSecret {
            key,
            new_secret,
            previous_until,
        } => deployments::rotate_secret(conn, key, new_secret, *previous_until).map(Written::Found),
        Write::InsertKey(key) => keys::insert(conn, key).map(|_| Written::Done),
        Write::RotateKey {
            id,
            key_hash,
            key_prefix,
            previous_until,
        } => keys::rotate(conn, id, key_hash, key_prefix, *previous_until).map(Written::Found),
        Write::RevokeKey { id, at } => keys::revoke(conn, id, *at).map(Written::Revoked),
        Write::TouchKey { id, at } => keys::touch(conn, id, *at).map(|_| Written::Done),
        Write::RecordAttempt(attempt, update) => {
            events::record_attempt(conn, attempt, update).map(|_| Written::Done)
        }
        Write::Redeliver { request_id, at } => {
            events::redeliver(conn, request_id, *at).map(Written::Redelivered)
        }
        Write::PurgeRuns {
            ended_before,
            limit,
            at,
        } => runs::purge_finished(conn, *ended_before, *limit, *at).map(Written::Purged),
        Write::SaveIdempotent {
            api_key_id,
            idempotency_key,
            request_id,
            response,
            at,
        } => runs::save_idempotent(conn, api_key_id, idempotency_key, request_id, response, *at)
            .map(|_| Written::Done),
    }
}
