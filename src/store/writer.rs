//! The single writer. It blocks for one command, then takes every other command already
//! waiting (up to `MAX_BATCH`) and applies them all in one transaction: the batch grows with
//! the load instead of with a timer, so an idle daemon commits at once and a busy one pays
//! one fsync for many writes. A command of several statements runs inside its own savepoint,
//! so one bad command fails alone.
//!
//! Commands of every type share one channel as boxed [`Job`]s; each keeps its typed reply, so
//! the caller gets its command's own output once the batch has committed.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::commands::*;
use super::deployments;
use super::events;
use super::keys;
use super::runs;
use super::{StoreError, StoreResult};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 2048;

/// How SQLite applies a command.
pub trait Apply: Command {
    /// Whether applying runs more than one data-changing statement. One statement is atomic
    /// on its own (SQLite undoes a failed statement); only commands of several statements
    /// need a savepoint, which costs two more statements.
    const SEVERAL_STATEMENTS: bool;

    fn apply(&self, conn: &Connection) -> rusqlite::Result<Self::Output>;
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Sends a command's result to its caller; a detached command's failure is only logged.
fn send<T>(reply: Option<Reply<T>>, result: StoreResult<T>) {
    match reply {
        Some(reply) => {
            let _ = reply.send(result);
        }
        None => {
            if let Err(err) = result {
                tracing::warn!(%err, "detached write failed");
            }
        }
    }
}

/// A queued command whose type is erased, so one channel carries every kind.
trait Job: Send {
    fn several_statements(&self) -> bool;
    /// Runs the command in the open transaction; its output waits in the returned
    /// [`Applied`] until the batch's fate is known.
    fn apply(self: Box<Self>, conn: &Connection) -> Result<Box<dyn Applied>, Unapplied>;
    /// Answers the error instead: the command was not (or not durably) applied.
    fn refuse(self: Box<Self>, err: StoreError);
}

/// A command applied inside the open transaction.
trait Applied: Send {
    /// Sends the output, or `err` when the command's writes did not last.
    fn settle(self: Box<Self>, err: Option<StoreError>);
}

type Unapplied = (rusqlite::Error, Box<dyn Job>);

struct Pending<C: Command> {
    cmd: C,
    reply: Option<Reply<C::Output>>,
}

struct Done<T> {
    output: T,
    reply: Option<Reply<T>>,
}

impl<C: Apply> Job for Pending<C> {
    fn several_statements(&self) -> bool {
        C::SEVERAL_STATEMENTS
    }

    fn apply(self: Box<Self>, conn: &Connection) -> Result<Box<dyn Applied>, Unapplied> {
        match self.cmd.apply(conn) {
            Ok(output) => Ok(Box::new(Done {
                output,
                reply: self.reply,
            })),
            Err(err) => Err((err, self)),
        }
    }

    fn refuse(self: Box<Self>, err: StoreError) {
        send(self.reply, Err(err));
    }
}

impl<T: Send + 'static> Applied for Done<T> {
    fn settle(self: Box<Self>, err: Option<StoreError>) {
        match err {
            None => send(self.reply, Ok(self.output)),
            Some(err) => send(self.reply, Err(err)),
        }
    }
}

/// A command whose writes will not be committed.
enum Failed {
    /// It failed, or never ran.
    Unapplied(Box<dyn Job>),
    /// It ran, but its savepoint or the transaction did not commit.
    Voided(Box<dyn Applied>),
}

impl Failed {
    fn refuse(self, err: StoreError) {
        match self {
            Failed::Unapplied(job) => job.refuse(err),
            Failed::Voided(applied) => applied.settle(Some(err)),
        }
    }
}

/// Where a command of a committed batch ended up.
enum Slot {
    Applied(Box<dyn Applied>),
    Failed(Failed, StoreError),
}

/// What became of a batch.
enum Batch {
    Committed(Vec<Slot>),
    /// Nothing of it is stored; every command answers why.
    Lost(Vec<Failed>, Lost),
}

/// Why a whole batch was lost: every command in it answers this.
struct Lost {
    message: String,
    unavailable: bool,
}

impl Lost {
    fn error(&self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable(self.message.clone())
        } else {
            StoreError::Refused(self.message.clone())
        }
    }
}

pub(super) struct WriterHandle {
    tx: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
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
    pub(super) async fn submit<C: Apply>(&self, cmd: C) -> StoreResult<C::Output> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Box::new(Pending {
            cmd,
            reply: Some(reply_tx),
        }))?;
        reply_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Sends the command at once; the returned future waits for its result.
    pub(super) fn submit_queued<C: Apply>(
        &self,
        cmd: C,
    ) -> impl std::future::Future<Output = StoreResult<C::Output>> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent = self.send(Box::new(Pending {
            cmd,
            reply: Some(reply_tx),
        }));
        async move {
            sent?;
            reply_rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    pub(super) fn submit_detached<C: Apply>(&self, cmd: C) {
        if let Err(err) = self.send(Box::new(Pending { cmd, reply: None })) {
            tracing::warn!(%err, "write dropped");
        }
    }

    fn send(&self, job: Box<dyn Job>) -> StoreResult<()> {
        let guard = self.tx.lock().expect("writer sender");
        let tx = guard.as_ref().ok_or(StoreError::Closed)?;
        tx.send(job).map_err(|_| StoreError::Closed)
    }

    /// Drops the sender so the thread finishes its queue and exits, then joins it.
    pub(super) fn close(&self) {
        self.tx.lock().expect("writer sender").take();
        if let Some(thread) = self.thread.lock().expect("writer thread").take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Box<dyn Job>>, size_limited: bool) {
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
        let size = batch.len();
        let clock = std::time::Instant::now();
        let outcome = commit_batch(&mut conn, batch.drain(..), &failures);
        crate::metrics::get().store_commit(size, clock.elapsed());
        match outcome {
            Batch::Committed(slots) => {
                for slot in slots {
                    match slot {
                        Slot::Applied(applied) => applied.settle(None),
                        Slot::Failed(failed, err) => failed.refuse(err),
                    }
                }
            }
            Batch::Lost(failed, lost) => {
                for failed in failed {
                    failed.refuse(lost.error());
                }
            }
        }
    }
}

/// What the writer needs to explain a failed write (see [`StoreError::classify_at`]).
struct Failures {
    db_path: Option<std::path::PathBuf>,
    size_limited: bool,
}

impl Failures {
    fn classify(&self, err: rusqlite::Error) -> StoreError {
        StoreError::classify_at(self.db_path.as_deref(), self.size_limited, err)
    }

    fn lose(&self, err: rusqlite::Error) -> Lost {
        let err = self.classify(err);
        Lost {
            unavailable: matches!(err, StoreError::Unavailable(_)),
            message: err.to_string(),
        }
    }
}

/// Applies a batch in one transaction; every command gets its own result.
fn commit_batch(
    conn: &mut Connection,
    mut batch: impl Iterator<Item = Box<dyn Job>>,
    failures: &Failures,
) -> Batch {
    let mut slots = Vec::with_capacity(batch.size_hint().0);
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(err) => return lose(slots, batch.map(Failed::Unapplied), failures.lose(err)),
    };
    while let Some(job) = batch.next() {
        let outcome = if job.several_statements() {
            apply_in_savepoint(&mut tx, job)
        } else {
            job.apply(&tx)
                .map_err(|(err, job)| (err, Failed::Unapplied(job)))
        };
        match outcome {
            Ok(applied) => slots.push(Slot::Applied(applied)),
            // Some errors (SQLITE_FULL, I/O errors, out of memory) make SQLite roll back the
            // whole transaction: the commands before this one are gone, and the ones after
            // would run outside any transaction. Nothing in the batch is stored.
            Err((err, failed)) if tx.is_autocommit() => {
                let rest = std::iter::once(failed).chain(batch.map(Failed::Unapplied));
                return lose(slots, rest, failures.lose(err));
            }
            Err((err, failed)) => slots.push(Slot::Failed(failed, failures.classify(err))),
        }
    }
    match tx.commit() {
        Ok(()) => Batch::Committed(slots),
        Err(err) => lose(slots, std::iter::empty(), failures.lose(err)),
    }
}

/// The batch whose transaction was lost: `slots` ran before it went, `rest` did not run.
fn lose(slots: Vec<Slot>, rest: impl Iterator<Item = Failed>, lost: Lost) -> Batch {
    let failed = slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Applied(applied) => Failed::Voided(applied),
            Slot::Failed(failed, _) => failed,
        })
        .chain(rest)
        .collect();
    Batch::Lost(failed, lost)
}

/// Applies a command of several statements so that it fails alone.
fn apply_in_savepoint(
    tx: &mut rusqlite::Transaction<'_>,
    job: Box<dyn Job>,
) -> Result<Box<dyn Applied>, (rusqlite::Error, Failed)> {
    let mut sp = match tx.savepoint() {
        Ok(sp) => sp,
        Err(err) => return Err((err, Failed::Unapplied(job))),
    };
    match job.apply(&sp) {
        Ok(applied) => match sp.commit() {
            Ok(()) => Ok(applied),
            Err(err) => Err((err, Failed::Voided(applied))),
        },
        Err((err, job)) => {
            let _ = sp.rollback();
            Err((err, Failed::Unapplied(job)))
        }
    }
}

/// Declares how each command runs; `several` marks those that need a savepoint.
macro_rules! apply {
    ($($command:ty, several: $several:expr, |$cmd:ident, $conn:ident| $body:expr;)+) => {$(
        impl Apply for $command {
            const SEVERAL_STATEMENTS: bool = $several;

            fn apply(&self, $conn: &Connection) -> rusqlite::Result<Self::Output> {
                let $cmd = self;
                $body
            }
        }
    )+};
}

apply! {
    InsertRun, several: false, |c, conn| runs::insert(conn, &c.0);
    InsertRerun, several: true, |c, conn| runs::insert_rerun(conn, &c.run, &c.reused);
    InsertChildRun, several: true, |c, conn| runs::insert_child(conn, &c.run, &c.step);
    MarkRunning, several: false, |c, conn| runs::mark_running(conn, &c.request_id, c.started_at);
    RecordStep, several: false, |c, conn| runs::record_step(conn, &c.0);
    RecordStepEvent, several: true, |c, conn| runs::record_step_event(conn, &c.step, &c.event, c.at);
    AnswerApproval, several: true, |c, conn| {
        runs::answer_approval(conn, &c.request_id, &c.step_id, &c.response_json, c.at)
    };
    FinishRun, several: true, |c, conn| runs::finish(conn, &c.0);
    PutDeployment, several: true, |c, conn| deployments::put(conn, &c.0);
    DeleteDeployment, several: false, |c, conn| deployments::delete(conn, &c.key);
    RotateSecret, several: false, |c, conn| {
        deployments::rotate_secret(conn, &c.key, &c.new_secret, c.previous_until)
    };
    InsertKey, several: false, |c, conn| keys::insert(conn, &c.0);
    RotateKey, several: false, |c, conn| keys::rotate(conn, &c.id, &c.key_hash, &c.key_prefix, c.previous_until);
    RevokeKey, several: false, |c, conn| keys::revoke(conn, &c.id, c.at);
    TouchKey, several: false, |c, conn| keys::touch(conn, &c.id, c.at);
    RecordAttempt, several: true, |c, conn| events::record_attempt(conn, &c.attempt, &c.update);
    Redeliver, several: true, |c, conn| events::redeliver(conn, &c.request_id, c.event_id.as_deref(), c.at);
    PurgeRuns, several: true, |c, conn| {
        runs::purge_finished(conn, c.ended_before, c.limit, c.at)
    };
    SaveIdempotent, several: false, |c, conn| {
        runs::save_idempotent(conn, &c.api_key_id, &c.idempotency_key, &c.request_id, &c.response, c.at)
    };
}
