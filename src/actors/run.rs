//! One RunActor per run: it executes the workflow's steps, records each step as it ends,
//! writes the terminal state, then tells the InvokeActor its slot is free.

use std::rc::Rc;

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::invoke::{AdmittedRun, RunEnded};
use crate::ids;
use crate::store::{FinishedRun, RunStatus, StepRow, Store, Write};
use crate::workflow::{self, RunContext, RunFailure, StepRecord};

/// How a run ended, for the caller waiting on it.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub request_id: String,
    pub status: RunStatus,
    pub output: Value,
    pub failure: Option<RunFailure>,
}

pub struct RunActor {
    run: Option<AdmittedRun>,
    env: Rc<workflow::Environment>,
    store: Store,
    ended: Recipient<RunEnded>,
}

impl RunActor {
    pub(super) fn new(
        run: AdmittedRun,
        env: Rc<workflow::Environment>,
        store: Store,
        ended: Recipient<RunEnded>,
    ) -> Self {
        RunActor {
            run: Some(run),
            env,
            store,
            ended,
        }
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
        let run = self.run.take().expect("a RunActor starts once");
        let AdmittedRun {
            request_id,
            prepared,
            completion,
        } = run;
        let env = self.env.clone();
        let store = self.store.clone();
        let definition = prepared.deployment.definition.clone();
        let vars = prepared
            .deployment
            .vars(&prepared.variant)
            .cloned()
            .unwrap_or_default();
        let context = RunContext {
            request_id: request_id.clone(),
            inputs: prepared.inputs,
            vars,
        };
        let span = tracing::info_span!("run", request_id = %request_id, deployment = %prepared.deployment.key);
        let work = async move {
            let mut on_step = |rec: &StepRecord| {
                store.write_detached(Write::RecordStep(Box::new(step_row(&request_id, rec))));
            };
            let result = workflow::execute(&definition, context, &env, &mut on_step).await;
            finish(&store, &request_id, result, completion).await;
            request_id
        };
        ctx.spawn(
            tracing::Instrument::instrument(work, span)
                .into_actor(self)
                .map(|request_id, act, ctx| {
                    act.ended.do_send(RunEnded { request_id });
                    ctx.stop();
                }),
        );
    }
}

/// Stores the terminal state (durably), then hands the outcome to a waiting caller.
async fn finish(
    store: &Store,
    request_id: &str,
    result: Result<Value, RunFailure>,
    completion: Option<oneshot::Sender<RunOutcome>>,
) {
    let ended_at = ids::now_ms();
    let (status, output, failure) = match result {
        Ok(output) => (RunStatus::Completed, output, None),
        Err(failure) => (RunStatus::Failed, Value::Null, Some(failure)),
    };
    let error_json = failure.as_ref().map(|f| {
        json!({"message": f.message, "error_code": f.error_code, "step": f.step}).to_string()
    });
    let done = FinishedRun {
        request_id: request_id.to_string(),
        status,
        output_json: (status == RunStatus::Completed).then(|| output.to_string()),
        error_json,
        ended_at,
    };
    match &failure {
        None => tracing::info!("run completed"),
        Some(f) => tracing::info!(step = ?f.step, error = %f.message, "run failed"),
    }
    if let Err(err) = store.write(Write::FinishRun(Box::new(done))).await {
        tracing::error!(%err, "could not store the run's end; it will be re-run at the next start");
    }
    if let Some(tx) = completion {
        let _ = tx.send(RunOutcome {
            request_id: request_id.to_string(),
            status,
            output,
            failure,
        });
    }
}
