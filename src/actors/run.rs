//! One RunActor per run: it executes the workflow's steps, records each step as it ends,
//! writes the terminal state (with the completion event for callback runs, in the same
//! transaction), hands the event to the RetrySupervisor, and tells the InvokeActor its slot
//! is free. A `CancelRun` stops the steps where they are.
//!
//! When an approval step waits, the RunActor stores the step as `waiting` (durably), hands
//! the run back to the InvokeActor with `RunPaused` (the run keeps no slot while it waits)
//! and stops; the run continues in a new RunActor once the step has an answer.

use std::collections::HashMap;
use std::rc::Rc;

use actix::prelude::*;
use serde_json::{json, Value};

use super::invoke::{AdmittedRun, RunEnded, RunPaused};
use super::retry::Enqueue;
use crate::delivery::event::{self, EventFacts};
use crate::ids;
use crate::store::{
    DueEvent, FinishRun, FinishedRun, NewEvent, RecordStep, RunStatus, StepRow, Store,
};
use crate::workflow::engine::{
    Approval, ApprovalAnswer, DoneStep, Execution, Pause, Resume, StepStatus,
};
use crate::workflow::{self, Definition, OnError, RunContext, RunFailure, StepKind, StepRecord};

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
    paused: Recipient<RunPaused>,
    steps: Option<SpawnHandle>,
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
        let Pause {
            record,
            timeout_at_ms,
            resume,
            ..
        } = pause;
        ctx.spawn(
            async move { store.write(RecordStep(row)).await }
                .into_actor(self)
                .map(move |written, act, ctx| {
                    if let Err(err) = written {
                        // The run still waits in memory; after a restart it runs up to
                        // this step again and waits there.
                        tracing::error!(request_id = %request_id, %err, "could not store the waiting approval step");
                    }
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
                    act.paused.do_send(RunPaused { run, waiting });
                    ctx.stop();
                }),
        );
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
    }
}

fn step_row(request_id: &str, rec: &StepRecord) -> StepRow {
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
        attempts: rec.attempts as i64,
        usage_json: rec.usage.as_ref().map(Value::to_string),
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let run = self.run.as_ref().expect("a RunActor starts with its run");
        let resume = run.resume.clone().unwrap_or_default();
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
        let steps = async move {
            let mut on_step = |rec: &StepRecord| {
                store.write_detached(RecordStep(step_row(&request_id, rec)));
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
        self.end(Ending::Cancelled, ctx);
    }
}

/// Writes a run's end, retrying while the database cannot take writes (disk full, read-only):
/// the end carries the outbox event, so giving up would lose an accepted run's webhook until
/// the next start. Other errors are returned at once.
async fn write_until_stored(
    store: &crate::store::Store,
    request_id: &str,
    done: FinishedRun,
) -> Result<bool, crate::store::StoreError> {
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
        });
        NewEvent {
            event_id: ids::event_id(),
            deployment_key: prepared.deployment.key.clone(),
            event_type: event::event_type(status).to_string(),
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
    // In the run's span, like the lines its steps logged.
    let span =
        tracing::info_span!("run", request_id = %request_id, deployment = %prepared.deployment.key);
    span.in_scope(|| match &failure {
        None => tracing::info!(status = status.as_str(), "run ended"),
        Some(f) => tracing::info!(step = ?f.step, error = %f.message, "run failed"),
    });
    match write_until_stored(&reporting.store, &request_id, done).await {
        Ok(true) => {
            let ran_ms = u64::try_from(ended_at - started_at).unwrap_or(0);
            crate::metrics::get()
                .run_ended(status.as_str(), std::time::Duration::from_millis(ran_ms));
            if let Some(due) = due {
                reporting.supervisor.do_send(Enqueue(due));
            }
        }
        Ok(false) => {
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

/// A run's place in its workflow, rebuilt from its stored trace and approval answers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TracePoint {
    /// What to continue from.
    pub resume: Resume,
    /// Set when the run waits at an approval step that has no answer yet.
    pub waiting: Option<Waiting>,
}

/// Rebuilds where a run stands from its trace (`rows`, ordered by step and start, as
/// `store::runs::get_steps` reads them) and its approval answers (step id, output JSON).
///
/// The steps that finished (completed, skipped, or failed with `on_error = "continue"`) up
/// to the first that did not are done; a `waiting` approval step after them is answered (an
/// answer is stored) or still waiting. Anything else (a step cut off by a crash, a lost trace
/// line) runs again.
pub(super) fn trace_point(
    def: &Definition,
    rows: &[StepRow],
    answers: &[(String, String)],
) -> TracePoint {
    // The latest line of each step: a step that ran again after a restart has several.
    let mut latest: HashMap<i64, &StepRow> = HashMap::new();
    for row in rows {
        match latest.get(&row.step_index) {
            Some(seen) if seen.started_at > row.started_at => {}
            _ => {
                latest.insert(row.step_index, row);
            }
        }
    }
    let answers: HashMap<&str, &str> = answers
        .iter()
        .map(|(step, response)| (step.as_str(), response.as_str()))
        .collect();
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    };
    let mut point = TracePoint {
        resume: Resume::default(),
        waiting: None,
    };
    for (index, step) in def.steps.iter().enumerate() {
        let Some(row) = latest.get(&(index as i64)).filter(|r| r.step_id == step.id) else {
            break;
        };
        let status = match row.status {
            StepStatus::Completed => StepStatus::Completed,
            StepStatus::Skipped => StepStatus::Skipped,
            StepStatus::Failed if step.on_error == OnError::Continue => StepStatus::Failed,
            StepStatus::Waiting if matches!(step.kind, StepKind::Approval { .. }) => {
                match answers.get(step.id.as_str()) {
                    Some(response) => {
                        let output = serde_json::from_str(response).unwrap_or(Value::Null);
                        point.resume.approvals.insert(
                            step.id.clone(),
                            Approval {
                                waiting_since_ms: row.started_at,
                                answer: ApprovalAnswer::Given(output),
                            },
                        );
                    }
                    None => {
                        let timeout_ms = match step.kind {
                            StepKind::Approval { timeout_ms, .. } => timeout_ms,
                            _ => None,
                        };
                        point.waiting = Some(Waiting {
                            step_id: step.id.clone(),
                            step_index: index,
                            since_ms: row.started_at,
                            timeout_at_ms: timeout_ms.map(|ms| {
                                row.started_at
                                    .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
                            }),
                        });
                    }
                }
                break;
            }
            _ => break,
        };
        point.resume.done.push(DoneStep {
            step_id: step.id.clone(),
            status,
            output: parse(&row.output_json),
            error: row.error.clone(),
        });
    }
    point
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &str = r#"
key = "t"
[[steps]]
id = "a"
type = "template"
template = "x"
[[steps]]
id = "b"
type = "template"
template = "x"
on_error = "continue"
[[steps]]
id = "c"
type = "template"
template = "x"
when = "false"
[[steps]]
id = "ok"
type = "approval"
timeout_ms = 1000
[[steps]]
id = "d"
type = "template"
template = "x"
"#;

    fn def() -> Definition {
        let mut def = Definition::from_toml_str(DEF).unwrap();
        def.validate(&workflow::ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        })
        .unwrap();
        def
    }

    fn row(
        index: i64,
        id: &str,
        status: StepStatus,
        started_at: i64,
        output: Option<&str>,
    ) -> StepRow {
        StepRow {
            request_id: "req_1".into(),
            step_index: index,
            step_id: id.into(),
            step_type: "template".into(),
            status,
            started_at,
            duration_ms: 1,
            output_json: output.map(str::to_owned),
            error: (status == StepStatus::Failed).then(|| "boom".to_owned()),
            attempts: 1,
            usage_json: None,
        }
    }

    fn trace() -> Vec<StepRow> {
        vec![
            row(0, "a", StepStatus::Failed, 10, None),
            row(0, "a", StepStatus::Completed, 20, Some("\"A\"")),
            row(1, "b", StepStatus::Failed, 30, None),
            row(2, "c", StepStatus::Skipped, 40, None),
            row(
                3,
                "ok",
                StepStatus::Waiting,
                50,
                Some("{\"question\": null}"),
            ),
        ]
    }

    #[test]
    fn done_steps_then_waiting_approval() {
        let point = trace_point(&def(), &trace(), &[]);
        let done: Vec<_> = point
            .resume
            .done
            .iter()
            .map(|d| (d.step_id.as_str(), d.status, d.output.clone()))
            .collect();
        assert_eq!(
            done,
            [
                ("a", StepStatus::Completed, json!("A")),
                ("b", StepStatus::Failed, Value::Null),
                ("c", StepStatus::Skipped, Value::Null),
            ]
        );
        assert_eq!(point.resume.done[1].error.as_deref(), Some("boom"));
        assert!(point.resume.approvals.is_empty());
        assert_eq!(
            point.waiting,
            Some(Waiting {
                step_id: "ok".into(),
                step_index: 3,
                since_ms: 50,
                timeout_at_ms: Some(1050),
            })
        );
    }

    #[test]
    fn answered_approval_and_interrupted_steps() {
        let answers = vec![("ok".to_owned(), "{\"text\": \"fine\"}".to_owned())];
        let point = trace_point(&def(), &trace(), &answers);
        assert_eq!(point.waiting, None);
        assert_eq!(point.resume.done.len(), 3);
        assert_eq!(
            point.resume.approvals["ok"],
            Approval {
                waiting_since_ms: 50,
                answer: ApprovalAnswer::Given(json!({"text": "fine"})),
            }
        );

        // A failed step that terminates the run runs again; nothing after it is reused.
        let mut rows = trace();
        rows[1] = row(0, "a", StepStatus::Failed, 20, None);
        let point = trace_point(&def(), &rows, &answers);
        assert!(
            point.resume.is_empty() && point.waiting.is_none(),
            "{point:?}"
        );

        // A trace line lost in a crash ends the reuse there.
        let rows: Vec<_> = trace().into_iter().filter(|r| r.step_id != "b").collect();
        let point = trace_point(&def(), &rows, &answers);
        assert_eq!(point.resume.done.len(), 1);
        assert!(point.resume.approvals.is_empty() && point.waiting.is_none());
    }
}
