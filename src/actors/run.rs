//! One RunActor per run: it executes the workflow's steps, records each step as it ends,
//! writes the terminal state (with the completion event for callback runs, in the same
//! transaction), hands the event to the RetrySupervisor, and tells the InvokeActor its slot
//! is free. A `CancelRun` stops the steps where they are.

use std::rc::Rc;

use actix::prelude::*;
use serde_json::{json, Value};

use super::invoke::{AdmittedRun, RunEnded};
use super::retry::Enqueue;
use crate::delivery::event::{self, EventFacts};
use crate::ids;
use crate::store::{DueEvent, FinishedRun, NewEvent, RunStatus, StepRow, Store, Write};
use crate::workflow::{self, RunContext, RunFailure, StepRecord};

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
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct CancelRun;

pub struct RunActor {
    run: Option<AdmittedRun>,
    env: Rc<workflow::Environment>,
    reporting: Reporting,
    ended: Recipient<RunEnded>,
    steps: Option<SpawnHandle>,
}

impl RunActor {
    pub(super) fn new(
        run: AdmittedRun,
        env: Rc<workflow::Environment>,
        reporting: Reporting,
        ended: Recipient<RunEnded>,
    ) -> Self {
        RunActor {
            run: Some(run),
            env,
            reporting,
            ended,
            steps: None,
        }
    }

    /// Records the end, then frees the slot and stops.
    fn end(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        let Some(run) = self.run.take() else { return };
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

fn step_row(request_id: &str, rec: &StepRecord) -> StepRow {
    StepRow {
        request_id: request_id.to_string(),
        step_index: rec.index as i64,
        step_id: rec.step_id.clone(),
        step_type: rec.step_type.to_string(),
        status: rec.status.as_str().to_string(),
        started_at: rec.started_at_ms,
        duration_ms: rec.duration_ms,
        output_json: rec.output.as_ref().map(Value::to_string),
        error: rec.error.clone(),
        attempts: rec.attempts as i64,
        usage_json: rec.usage.as_ref().map(Value::to_string),
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let run = self.run.as_ref().expect("a RunActor starts with its run");
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
        };
        let span = tracing::info_span!("run", request_id = %request_id, deployment = %run.prepared.deployment.key);
        let steps = async move {
            let mut on_step = |rec: &StepRecord| {
                store.write_detached(Write::RecordStep(Box::new(step_row(&request_id, rec))));
            };
            workflow::execute(&definition, context, &env, &mut on_step).await
        };
        let handle = ctx.spawn(
            tracing::Instrument::instrument(steps, span)
                .into_actor(self)
                .map(|result, act, ctx| {
                    let ending = match result {
                        Ok(output) => Ending::Completed(output),
                        Err(failure) => Ending::Failed(failure),
                    };
                    act.end(ending, ctx);
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
        self.end(Ending::Cancelled, ctx);
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
    } = run;
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
    let event = prepared.callback_url.as_ref().map(|url| {
        let body = event::render_body(&EventFacts {
            request_id: &request_id,
            run_status: status.as_str(),
            deployment: &prepared.deployment.key,
            variant: &prepared.variant,
            version: prepared.deployment.version,
            output: &output,
            error: error.clone(),
            metadata: &prepared.metadata,
            user: prepared.user.as_deref(),
            started_at_ms: started_at,
            ended_at_ms: ended_at,
        });
        NewEvent {
            event_id: ids::event_id(),
            deployment_key: prepared.deployment.key.clone(),
            event_type: event::event_type(status.as_str()).to_string(),
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
        event,
    };
    match &failure {
        None => tracing::info!(request_id = %request_id, status = status.as_str(), "run ended"),
        Some(f) => {
            tracing::info!(request_id = %request_id, step = ?f.step, error = %f.message, "run failed")
        }
    }
    match reporting
        .store
        .write(Write::FinishRun(Box::new(done)))
        .await
    {
        Ok(written) if written.found() => {
            if let Some(due) = due {
                reporting.supervisor.do_send(Enqueue(due));
            }
        }
        Ok(_) => {
            tracing::info!(request_id = %request_id, "run had already ended (cancelled); result dropped")
        }
        Err(err) => {
            tracing::error!(request_id = %request_id, %err, "could not store the run's end; it will run again at the next start")
        }
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
