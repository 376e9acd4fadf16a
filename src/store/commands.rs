//! Every change the daemon makes to its database, one type per verb.
//!
//! A command is plain domain data; [`Command::Output`] says what it answers, so a caller gets
//! exactly that type back from [`super::Store::write`] and never matches on an answer it
//! cannot get. How a command is applied to SQLite lives in `writer.rs` ([`super::Apply`]); a
//! second backend would implement its own application for the same types.

use super::deployments::{Deployed, NewDeploymentVersion};
use super::events::NewEvent;
use super::events::{AttemptRow, DueEvent, EventUpdate};
use super::keys::{KeyRecord, Revocation};
use super::runs::{FinishedRun, NewRun, RunFinish, StepRow};

/// A change to the store, and what it answers once committed.
pub trait Command: Send + 'static {
    type Output: Send + 'static;
}

macro_rules! outputs {
    ($($command:ty => $output:ty),+ $(,)?) => {$(
        impl Command for $command {
            type Output = $output;
        }
    )+};
}

/// Stores an admitted run (`queued` or `running`).
#[derive(Debug, Clone)]
pub struct InsertRun(pub NewRun);

/// Stores a rerun (`NewRun::rerun_of` set) together with the trace lines it takes over
/// from the earlier run, already marked `reused` and carrying the new run's id.
#[derive(Debug, Clone)]
pub struct InsertRerun {
    pub run: NewRun,
    pub reused: Vec<StepRow>,
}

/// Stores a child run (SPEC §10) with its parent's `waiting` trace line, which names it,
/// in one transaction.
#[derive(Debug, Clone)]
pub struct InsertChildRun {
    pub run: NewRun,
    pub step: StepRow,
}

/// A queued run takes its slot. Answers false when the run is missing or already ended.
#[derive(Debug, Clone)]
pub struct MarkRunning {
    pub request_id: String,
    pub started_at: i64,
}

/// One line of a run's trace (replaces the line with the same step and start).
#[derive(Debug, Clone)]
pub struct RecordStep(pub StepRow);

/// A trace line and the lifecycle event reporting it (SPEC §11), in one transaction. Answers
/// whether the event is due now; `false`: it is `held` behind the run's earlier events.
#[derive(Debug, Clone)]
pub struct RecordStepEvent {
    pub step: StepRow,
    pub event: NewEvent,
    pub at: i64,
}

/// The answer to a waiting approval step. Answers false when the run is not running, the
/// step is not waiting, or it already has an answer.
#[derive(Debug, Clone)]
pub struct AnswerApproval {
    pub request_id: String,
    pub step_id: String,
    /// The step's output: `{"choice": {"value", "label"}}` or `{"text"}`.
    pub response_json: String,
    pub at: i64,
}

/// A run's terminal state, with its outbox event. Answers false when the run had already
/// ended (a cancel won the race); the event is then not stored.
#[derive(Debug, Clone)]
pub struct FinishRun(pub FinishedRun);

/// A new version of a deployment (creating the deployment if needed).
#[derive(Debug, Clone)]
pub struct PutDeployment(pub NewDeploymentVersion);

/// Removes a deployment with its versions. Answers whether it existed.
#[derive(Debug, Clone)]
pub struct DeleteDeployment {
    pub key: String,
}

/// The current secret becomes the previous one (valid until `previous_until`). Answers
/// whether the deployment exists.
#[derive(Clone)]
pub struct RotateSecret {
    pub key: String,
    pub new_secret: String,
    pub previous_until: i64,
}

// Signing secrets must never reach a log through `{:?}`.
impl std::fmt::Debug for RotateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateSecret")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Stores a new API key (its hash).
#[derive(Debug, Clone)]
pub struct InsertKey(pub KeyRecord);

/// Gives a live key a new secret. Answers whether the key exists and is not revoked.
#[derive(Debug, Clone)]
pub struct RotateKey {
    pub id: String,
    pub key_hash: String,
    pub key_prefix: String,
    /// Until when the old secret keeps working (Unix ms); `None`: not at all.
    pub previous_until: Option<i64>,
}

/// Revokes a key, unless it is the last active admin key. Answers what it did.
#[derive(Debug, Clone)]
pub struct RevokeKey {
    pub id: String,
    pub at: i64,
}

/// Records when a key was last used.
#[derive(Debug, Clone)]
pub struct TouchKey {
    pub id: String,
    pub at: i64,
}

/// One delivery attempt, and the event's state after it.
#[derive(Debug, Clone)]
pub struct RecordAttempt {
    pub attempt: AttemptRow,
    pub update: EventUpdate,
}

/// A new attempt series for one of the run's events (`event_id`), or its last one (its end
/// once it ended). Answers the event, due now, or `None` when there is no such event (the run
/// has none yet, or no callback) or it is `held` behind the run's earlier events.
#[derive(Debug, Clone)]
pub struct Redeliver {
    pub request_id: String,
    pub event_id: Option<String>,
    pub at: i64,
}

/// Deletes up to `limit` finished runs that ended before `ended_before` (Unix ms), with
/// everything recorded about them; answers how many went. Callers repeat it until fewer than
/// `limit` go, so other writes get their turn between batches.
#[derive(Debug, Clone)]
pub struct PurgeRuns {
    pub ended_before: i64,
    pub limit: usize,
    pub at: i64,
}

/// The first response to a request with an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct SaveIdempotent {
    pub api_key_id: String,
    pub idempotency_key: String,
    pub request_id: String,
    pub response: String,
    pub at: i64,
}

outputs! {
    InsertRun => (),
    InsertRerun => (),
    InsertChildRun => (),
    MarkRunning => bool,
    RecordStep => (),
    AnswerApproval => bool,
    FinishRun => RunFinish,
    RecordStepEvent => bool,
    PutDeployment => Deployed,
    DeleteDeployment => bool,
    RotateSecret => bool,
    InsertKey => (),
    RotateKey => bool,
    RevokeKey => Revocation,
    TouchKey => (),
    RecordAttempt => Option<DueEvent>,
    Redeliver => Option<DueEvent>,
    PurgeRuns => usize,
    SaveIdempotent => (),
}
