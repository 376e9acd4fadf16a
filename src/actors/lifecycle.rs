//! The run lifecycle both actors share. The InvokeActor admits a run (`AdmittedRun`) and
//! hands it to a RunActor; the RunActor hands it back when it ends (`RunEnded`) or waits at
//! an approval step (`RunPaused`, `Waiting`). `finish` stores a run's end, whoever ends it: a
//! RunActor after its steps, or the InvokeActor for a run cancelled while queued or paused.
//!
//! This module imports neither actor, so both can import it without importing each other.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::retry::Enqueue;
use crate::delivery::event::{self, EventFacts};
use crate::delivery::lifecycle::EventSet;
use crate::deployments::LiveDeployment;
use crate::ids;
use crate::store::{
    DueEvent, FinishRun, FinishedRun, NewEvent, RunFinish, RunSource, RunStatus, StepRow,
    StepStatus, Store,
};
use crate::usage::Usage;
use crate::workflow::engine::Resume;
use crate::workflow::RunFailure;

/// A validated invoke, ready to be stored and run.
pub struct PreparedRun {
    pub deployment: Arc<LiveDeployment>,
    pub variant: String,
    pub inputs: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    pub callback_url: Option<String>,
    /// What is POSTed to `callback_url` (SPEC §11 `async.events`).
    pub events: EventSet,
    pub source: RunSource,
    pub api_key_id: Option<String>,
    /// The run whose `workflow` step started this one (a child run, SPEC §10).
    pub parent_request_id: Option<String>,
    /// 0–9 (SPEC §12): queued runs start highest first, then oldest.
    pub priority: u8,
    /// The deployment's `[concurrency] key` as rendered for this run.
    pub concurrency_key: Option<String>,
}

/// A run admitted and waiting for its slot, or running.
pub struct AdmittedRun {
    pub request_id: String,
    pub prepared: PreparedRun,
    pub completion: Option<oneshot::Sender<RunOutcome>>,
    /// When the run (last) started, Unix ms.
    pub started_at: i64,
    /// `None` for a run that never started. Otherwise what its earlier executions did (it
    /// ran before a restart, or waited at an approval step): it continues from there and
    /// keeps its first `started_at`.
    pub resume: Option<Resume>,
    /// For a rerun that has not started yet: the steps it takes over from the earlier run.
    /// Kept apart from `resume` so that the run still counts as never started (its
    /// `started_at` is set when it gets a slot).
    pub takeover: Option<Resume>,
    /// The token usage of the steps its earlier executions ran (not those a rerun reused).
    pub usage: Option<Usage>,
}

/// Sent by a RunActor when its run has ended (and its terminal state is stored).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunEnded {
    pub request_id: String,
}

/// Sent by a RunActor when its run waits at an approval step (the `waiting` trace line is
/// stored). The run, with its `resume` filled in, comes back to the InvokeActor, which frees
/// its slot and arms the step's timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunPaused {
    pub run: AdmittedRun,
    pub waiting: Waiting,
}

/// How a run ended, for the caller waiting on it.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub request_id: String,
    pub status: RunStatus,
    pub output: Value,
    pub failure: Option<RunFailure>,
}

/// How the steps ended.
pub(super) enum Ending {
    Completed(Value),
    Failed(RunFailure),
    Cancelled,
}

/// Where a finished run reports.
#[derive(Clone)]
pub(super) struct Reporting {
    pub store: Store,
    pub supervisor: Recipient<Enqueue>,
    /// Live streams of the run get its final event once the end is stored.
    pub live: crate::live::Hub,
}

/// The trace line of an approval step whose run was cancelled while it waited.
pub(super) fn cancelled_approval_step(request_id: &str, waiting: &Waiting) -> StepRow {
    StepRow {
        request_id: request_id.to_string(),
        step_index: waiting.step_index as i64,
        step_id: waiting.step_id.clone(),
        step_type: "approval".into(),
        status: StepStatus::Failed,
        started_at: waiting.since_ms,
        duration_ms: (ids::now_ms() - waiting.since_ms).max(0),
        output_json: None,
        error: Some("the run was cancelled while the step waited for a response".into()),
        attempts: 0,
        usage_json: None,
        parent: None,
        passes: String::new(),
        reason: None,
        child_request_id: None,
    }
}

/// Writes a run's end, retrying while the database cannot take writes (disk full, read-only):
/// the end carries the outbox event, so giving up would lose an accepted run's webhook until
/// the next start. Other errors are returned at once.
async fn write_until_stored(
    store: &Store,
    request_id: &str,
    done: FinishedRun,
) -> Result<RunFinish, crate::store::StoreError> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match store.write(FinishRun(done.clone())).await {
            Err(crate::store::StoreError::Unavailable(why)) => {
                tracing::warn!(request_id = %request_id, %why, retry_in = ?delay, "cannot store the run's end yet; retrying");
                actix_rt::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Stores the terminal state and the outbox event in one durable write, hands the event to
/// the supervisor, then answers a waiting caller.
pub(super) async fn finish(reporting: &Reporting, run: AdmittedRun, ending: Ending) {
    let AdmittedRun {
        request_id,
        prepared,
        completion,
        started_at,
        resume: _,
        takeover: _,
        usage,
    } = run;
    let usage = usage.map(|u| u.to_json());
    let ended_at = ids::now_ms();
    let (status, output, failure) = match ending {
        Ending::Completed(output) => (RunStatus::Completed, output, None),
        Ending::Failed(failure) => (RunStatus::Failed, Value::Null, Some(failure)),
        Ending::Cancelled => (RunStatus::Cancelled, Value::Null, None),
    };
    let error = match (&failure, status) {
        (Some(f), _) => {
            Some(json!({"message": f.message, "error_code": f.error_code, "step": f.step}))
        }
        (None, RunStatus::Cancelled) => Some(
            json!({"message": "The run was cancelled.", "error_code": "cancelled", "step": null}),
        ),
        _ => None,
    };
    let event_type = event::event_type(status);
    let wanted = prepared.events.wants(event_type);
    let event = prepared
        .callback_url
        .as_ref()
        .filter(|_| wanted)
        .map(|url| {
            let body = event::render_body(&EventFacts {
                request_id: &request_id,
                run_status: status,
                deployment: &prepared.deployment.key,
                variant: &prepared.variant,
                version: prepared.deployment.version,
                output: &output,
                error: error.clone(),
                metadata: &prepared.metadata,
                user: prepared.user.as_deref(),
                started_at_ms: started_at,
                ended_at_ms: ended_at,
                usage: usage.as_ref(),
            });
            NewEvent {
                event_id: ids::event_id(),
                deployment_key: prepared.deployment.key.clone(),
                event_type: event_type.to_string(),
                callback_url: url.clone(),
                body,
            }
        });
    let due = event.as_ref().map(|e| DueEvent {
        event_id: e.event_id.clone(),
        request_id: request_id.clone(),
        deployment_key: e.deployment_key.clone(),
        callback_url: e.callback_url.clone(),
        body: e.body.clone().into(),
        series: 1,
        attempts: 0,
        total_attempts: 0,
        next_attempt_at: ended_at,
    });
    let done = FinishedRun {
        request_id: request_id.clone(),
        status,
        output_json: (status == RunStatus::Completed).then(|| output.to_string()),
        error_json: error.as_ref().map(Value::to_string),
        ended_at,
        usage_json: usage.as_ref().map(Value::to_string),
        event,
    };
    // In the run's span, like the lines its steps logged.
    let span =
        tracing::info_span!("run", request_id = %request_id, deployment = %prepared.deployment.key);
    span.in_scope(|| match &failure {
        None => tracing::info!(status = status.as_str(), "run ended"),
        Some(f) => tracing::info!(step = ?f.step, error = %f.message, "run failed"),
    });
    let stored = write_until_stored(&reporting.store, &request_id, done).await;
    match &stored {
        Ok(RunFinish {
            ended: true,
            event_due,
        }) => {
            let ran_ms = u64::try_from(ended_at - started_at).unwrap_or(0);
            crate::metrics::get()
                .run_ended(status.as_str(), std::time::Duration::from_millis(ran_ms));
            // A `held` event goes out when the run's earlier events are done.
            if let Some(due) = due.filter(|_| *event_due) {
                reporting.supervisor.do_send(Enqueue(due));
            }
        }
        Ok(RunFinish { ended: false, .. }) => {
            tracing::info!(request_id = %request_id, "run had already ended (cancelled); result dropped");
        }
        Err(err) => {
            tracing::error!(request_id = %request_id, %err, "could not store the run's end; it will run again at the next start");
        }
    }
    // Not when a cancel ended the run first: that one announces its own end.
    if !matches!(stored, Ok(RunFinish { ended: false, .. })) {
        reporting.live.run_ended(&request_id, || {
            crate::live::events::finished(
                &request_id,
                status,
                &output,
                error.as_ref(),
                usage.as_ref(),
            )
        });
    }
    if let Some(tx) = completion {
        let _ = tx.send(RunOutcome {
            request_id,
            status,
            output,
            failure,
        });
    }
}

/// Where a paused run waits: its approval step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub step_id: String,
    pub step_index: usize,
    /// When the step started waiting (Unix ms), as its trace line records.
    pub since_ms: i64,
    /// When the step times out (Unix ms), if it has a `timeout_ms`.
    pub timeout_at_ms: Option<i64>,
}
