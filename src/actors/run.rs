//! One RunActor per run: it executes the workflow's steps, records each step as it ends,
//! writes the terminal state (with the completion event for callback runs, in the same
//! transaction), hands the event to the RetrySupervisor, and tells the InvokeActor its slot
//! is free. A `CancelRun` stops the steps where they are.
//!
//! When an approval step waits, the RunActor stores the step as `waiting` (durably), hands
//! the run back to the InvokeActor with `RunPaused` (the run keeps no slot while it waits)
//! and stops; the run continues in a new RunActor once the step has an answer.

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;
use serde_json::Value;

use super::lifecycle::{
    cancelled_approval_step, finish, AdmittedRun, Ending, Reporting, RunEnded, RunPaused, Waiting,
};
use super::notify::Notifier;
use crate::store::{RecordStep, StepRow};
use crate::usage::Usage;
use crate::workflow::engine::{Execution, Pause, StepStatus};
use crate::workflow::{self, RunContext, RunFailure, StepRecord};

/// Stops the run's steps where they are and ends it as `cancelled`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct CancelRun;

pub struct RunActor {
    run: Option<AdmittedRun>,
    env: Rc<workflow::Environment>,
    reporting: Reporting,
    ended: Recipient<RunEnded>,
    paused: Recipient<RunPaused>,
    steps: Option<SpawnHandle>,
    /// The token usage of the steps this execution ran; added to the run's when it ends
    /// or pauses.
    usage: Rc<RefCell<Option<Usage>>>,
    /// Trace lines of steps waiting for provider capacity that no end line has replaced
    /// yet: a cancel ends them as failed, so none stays `waiting` for good.
    capacity_waits: Rc<RefCell<Vec<StepRow>>>,
}

impl RunActor {
    pub(super) fn new(
        run: AdmittedRun,
        env: Rc<workflow::Environment>,
        reporting: Reporting,
        ended: Recipient<RunEnded>,
        paused: Recipient<RunPaused>,
    ) -> Self {
        RunActor {
            run: Some(run),
            env,
            reporting,
            ended,
            paused,
            steps: None,
            usage: Rc::default(),
            capacity_waits: Rc::default(),
        }
    }

    /// Stores the waiting step durably, then hands the run back to the InvokeActor and stops.
    fn pause(&mut self, pause: Pause, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_ref() else {
            return;
        };
        let request_id = run.request_id.clone();
        let store = self.reporting.store.clone();
        if run.completion.is_some() {
            // A sync caller cannot wait for a person; the invoke API refuses such runs, so
            // this only guards against a definition that changed under a pinned version.
            let mut record = pause.record;
            record.status = StepStatus::Failed;
            record.output = None;
            record.error = Some("approval steps need an async run".into());
            record.reason = None;
            store.write_detached(RecordStep(step_row(&request_id, &record)));
            let failure = RunFailure {
                message: format!(
                    "step {} is an approval step, which only runs asynchronously",
                    record.step_id
                ),
                error_code: "approval_requires_async".into(),
                step: Some(record.step_id),
            };
            self.end(Ending::Failed(failure), ctx);
            return;
        }
        let row = step_row(&request_id, &pause.record);
        let notify = Notifier::for_run(&request_id, &run.prepared, &self.reporting)
            .and_then(|n| n.approval_event(&pause.record).map(|event| (n, event)));
        let Pause {
            record,
            timeout_at_ms,
            resume,
            ..
        } = pause;
        ctx.spawn(
            async move {
                match notify {
                    Some((notifier, event)) => notifier.record(row, event).await,
                    None => store.write(RecordStep(row)).await,
                }
            }
                .into_actor(self)
                .map(move |written, act, ctx| {
                    if let Err(err) = written {
                        // The run still waits in memory; after a restart it runs up to
                        // this step again and waits there.
                        tracing::error!(request_id = %request_id, %err, "could not store the waiting approval step");
                    }
                    // Stored first, so a client that comes now finds it in the trace.
                    act.env.deltas.hub().approval_requested(&request_id, &record);
                    let waiting = Waiting {
                        step_id: record.step_id,
                        step_index: record.index,
                        since_ms: record.started_at_ms,
                        timeout_at_ms,
                    };
                    // A cancel that came meanwhile has taken the run and ends it; the
                    // `waiting` line just stored must not outlive it.
                    let Some(mut run) = act.run.take() else {
                        act.reporting
                            .store
                            .write_detached(RecordStep(cancelled_approval_step(
                                &request_id,
                                &waiting,
                            )));
                        return;
                    };
                    tracing::info!(request_id = %request_id, step = %waiting.step_id, "run waits for an approval");
                    run.resume = Some(resume);
                    act.take_usage(&mut run);
                    act.paused.do_send(RunPaused { run, waiting });
                    ctx.stop();
                }),
        );
    }

    /// Adds what this execution's steps used to the run's usage.
    fn take_usage(&self, run: &mut AdmittedRun) {
        if let Some(ran) = self.usage.borrow_mut().take() {
            run.usage.get_or_insert_with(Usage::default).add(&ran);
        }
    }

    /// Records the end, then frees the slot and stops.
    fn end(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.take_usage(&mut run);
        let reporting = self.reporting.clone();
        let ended = self.ended.clone();
        ctx.spawn(
            async move {
                let request_id = run.request_id.clone();
                finish(&reporting, run, ending).await;
                ended.do_send(RunEnded { request_id });
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// The stored form of a trace line.
pub(super) fn step_row(request_id: &str, rec: &StepRecord) -> StepRow {
    StepRow {
        request_id: request_id.to_string(),
        step_index: rec.index as i64,
        step_id: rec.step_id.clone(),
        step_type: rec.step_type.to_string(),
        status: rec.status,
        started_at: rec.started_at_ms,
        duration_ms: rec.duration_ms,
        output_json: rec.output.as_ref().map(Value::to_string),
        error: rec.error.clone(),
        attempts: i64::from(rec.attempts),
        usage_json: rec.usage.as_ref().map(Value::to_string),
        parent: rec.parent.clone(),
        passes: rec.passes_key(),
        reason: rec.reason.clone(),
        child_request_id: rec.child_request_id.clone(),
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let run = self.run.as_ref().expect("a RunActor starts with its run");
        let resume = run
            .resume
            .clone()
            .or_else(|| run.takeover.clone())
            .unwrap_or_default();
        let env = self.env.clone();
        let store = self.reporting.store.clone();
        let request_id = run.request_id.clone();
        let definition = run.prepared.deployment.definition.clone();
        let vars = run
            .prepared
            .deployment
            .vars(&run.prepared.variant)
            .cloned()
            .unwrap_or_default();
        let context = RunContext {
            request_id: request_id.clone(),
            inputs: run.prepared.inputs.clone(),
            vars,
            resume,
        };
        let span = tracing::info_span!("run", request_id = %request_id, deployment = %run.prepared.deployment.key);
        let usage = self.usage.clone();
        let notifier = Notifier::for_run(&request_id, &run.prepared, &self.reporting);
        let recovered = run.resume.is_some();
        let capacity_waits = self.capacity_waits.clone();
        let steps = async move {
            let live = env.deltas.hub().clone();
            crate::live::run_started(&live, &store, &request_id, recovered).await;
            let mut on_step = |rec: &StepRecord| {
                let row = step_row(&request_id, rec);
                track_capacity_wait(&mut capacity_waits.borrow_mut(), &row);
                match notifier
                    .as_ref()
                    .and_then(|n| Some((n, n.step_event(rec)?)))
                {
                    Some((notifier, event)) => notifier.record_detached(row, event),
                    None => store.write_detached(RecordStep(row)),
                }
                if let Some(u) = rec.usage.as_ref().and_then(Usage::from_stored) {
                    usage
                        .borrow_mut()
                        .get_or_insert_with(Usage::default)
                        .add(&u);
                }
                // A step waiting for provider capacity has not completed: its end line
                // comes later.
                if rec.status != StepStatus::Waiting {
                    live.step_completed(&request_id, rec);
                }
            };
            workflow::execute(&definition, context, &env, &mut on_step).await
        };
        let handle = ctx.spawn(
            tracing::Instrument::instrument(steps, span)
                .into_actor(self)
                .map(|execution, act, ctx| match execution {
                    Execution::Finished(Ok(output)) => act.end(Ending::Completed(output), ctx),
                    Execution::Finished(Err(failure)) => act.end(Ending::Failed(failure), ctx),
                    Execution::Paused(pause) => act.pause(*pause, ctx),
                }),
        );
        self.steps = Some(handle);
    }
}

impl Handler<CancelRun> for RunActor {
    type Result = ();

    fn handle(&mut self, _: CancelRun, ctx: &mut Context<Self>) {
        if let Some(handle) = self.steps.take() {
            ctx.cancel_future(handle);
        }
        for row in self.capacity_waits.take() {
            self.reporting.store.write_detached(RecordStep(StepRow {
                status: StepStatus::Failed,
                duration_ms: (crate::ids::now_ms() - row.started_at).max(0),
                error: Some(
                    "the run was cancelled while the step waited for provider capacity".into(),
                ),
                reason: None,
                ..row
            }));
        }
        self.end(Ending::Cancelled, ctx);
    }
}

/// Keeps the `waiting` lines of steps waiting for provider capacity until the same step's
/// next line (same step, passes and start) replaces them.
fn track_capacity_wait(waits: &mut Vec<StepRow>, row: &StepRow) {
    waits.retain(|w| {
        (w.step_index, &w.passes, w.started_at) != (row.step_index, &row.passes, row.started_at)
    });
    if row.status == StepStatus::Waiting && row.reason.as_deref() == Some("provider_capacity") {
        waits.push(row.clone());
    }
}
