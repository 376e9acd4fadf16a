//! Child runs (SPEC §10): what a `workflow` step asks of the run machinery.
//!
//! [`ActorChildren`] implements the engine's [`ChildRuns`]: it refuses a child that would be
//! too deep, finds the deployment and variant and checks the inputs (as an invoke does),
//! then has the InvokeActor store the child together with the parent's `waiting` trace line
//! (`StartChild`) and start it like any run, so the child is crash-safe, listed and logged
//! like every other run. Waiting (`WatchRun`) asks the InvokeActor to say when the child
//! has ended, then reads how it ended from the store, which also covers a child that ended
//! before anyone watched it (a parent re-attaching after a restart).
//!
//! It talks to the InvokeActor through `Recipient`s, so this module does not import it.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::lifecycle::PreparedRun;
use super::run::step_row;
use crate::deployments::Deployments;
use crate::store::{RunSource, RunStatus, StepRow, Store, StoreError};
use crate::workflow::inputs::check_inputs;
use crate::workflow::steps::workflow::{depth_exceeded, MAX_WORKFLOW_DEPTH};
use crate::workflow::steps::StepError;
use crate::workflow::{ChildEnd, ChildRuns, ChildStart};

/// Stores a child run with its parent's `waiting` trace line (one transaction), then starts
/// it at once: a child holds no run slot, since its parent holds one and waits for it.
/// Answers the child's request id once both are durable.
#[derive(Message)]
#[rtype(result = "Result<String, StoreError>")]
pub struct StartChild {
    pub run: PreparedRun,
    /// The parent's line; its `child_request_id` is filled in with the new id.
    pub waiting: StepRow,
}

/// Resolves (the receiver gets `()`) when the run has ended, or at once when the
/// InvokeActor does not hold it (it has ended already, or never ran in this process).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct WatchRun {
    pub request_id: String,
}

/// The [`ChildRuns`] of the InvokeActor's runs.
pub struct ActorChildren {
    pub store: Store,
    pub deployments: Arc<Deployments>,
    pub start: Recipient<StartChild>,
    pub watch: Recipient<WatchRun>,
}

impl ChildRuns for ActorChildren {
    fn start(&self, start: ChildStart) -> LocalBoxFuture<'static, Result<String, StepError>> {
        let store = self.store.clone();
        let deployments = self.deployments.clone();
        let recipient = self.start.clone();
        Box::pin(async move {
            let parent_depth = store
                .run_depth(start.parent_request_id.clone(), MAX_WORKFLOW_DEPTH + 1)
                .await
                .map_err(|e| {
                    StepError::retryable(format!("could not read the run lineage: {e}"))
                })?;
            if parent_depth + 1 > MAX_WORKFLOW_DEPTH {
                return Err(depth_exceeded(parent_depth + 1));
            }
            let deployment = deployments.get(&start.deployment).ok_or_else(|| {
                StepError::permanent(format!(
                    "deployment {:?} not found (deploy it before running this workflow)",
                    start.deployment
                ))
            })?;
            if deployment.vars(&start.variant).is_none() {
                return Err(StepError::permanent(format!(
                    "deployment {:?} has no variant {:?}",
                    start.deployment, start.variant
                )));
            }
            let inputs = check_inputs(&deployment.definition, &start.inputs).map_err(|e| {
                StepError::permanent(format!("deployment {:?}: {}", start.deployment, e.message))
            })?;
            // The child is on behalf of whoever started the parent: the same invoke key
            // may read it, and it counts for the same user.
            let parent = store
                .run(start.parent_request_id.clone())
                .await
                .map_err(|e| StepError::retryable(format!("could not read the parent run: {e}")))?;
            let (api_key_id, user) = parent.map(|p| (p.api_key_id, p.user)).unwrap_or_default();
            let waiting = step_row(&start.parent_request_id, &start.waiting);
            let run = PreparedRun {
                deployment,
                variant: start.variant,
                inputs,
                metadata: Map::new(),
                user,
                // Only the top run delivers a result; children answer their parent.
                callback_url: None,
                events: Default::default(),
                source: RunSource::Workflow,
                api_key_id,
                parent_request_id: Some(start.parent_request_id),
                // A child takes no slot and waits in no queue: its parent holds the slot.
                priority: crate::flow::DEFAULT_PRIORITY,
                concurrency_key: None,
            };
            match recipient.send(StartChild { run, waiting }).await {
                Ok(Ok(request_id)) => Ok(request_id),
                Ok(Err(e)) => Err(StepError::retryable(format!(
                    "could not start the child run: {e}"
                ))),
                Err(e) => Err(StepError::permanent(format!(
                    "could not start the child run: {e}"
                ))),
            }
        })
    }

    fn wait(&self, request_id: String) -> LocalBoxFuture<'static, Result<ChildEnd, StepError>> {
        let store = self.store.clone();
        let watch = self.watch.clone();
        Box::pin(async move {
            let ended = watch
                .send(WatchRun {
                    request_id: request_id.clone(),
                })
                .await
                .map_err(|e| {
                    StepError::permanent(format!("cannot wait for child run {request_id}: {e}"))
                })?;
            // Dropped only when the InvokeActor stops; the store says how far the child got.
            let _ = ended.await;
            let run = store
                .run(request_id.clone())
                .await
                .map_err(|e| {
                    StepError::retryable(format!("could not read child run {request_id}: {e}"))
                })?
                .ok_or_else(|| StepError::permanent(format!("child run {request_id} is gone")))?;
            let parse = |text: Option<&str>| {
                text.and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .unwrap_or(Value::Null)
            };
            match run.status {
                RunStatus::Completed => Ok(ChildEnd::Completed(parse(run.output_json.as_deref()))),
                RunStatus::Failed => {
                    let error = parse(run.error_json.as_deref());
                    let field = |name: &str| {
                        error
                            .get(name)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    Ok(ChildEnd::Failed {
                        message: field("message"),
                        error_code: field("error_code"),
                    })
                }
                RunStatus::Cancelled => Ok(ChildEnd::Cancelled),
                RunStatus::Queued | RunStatus::Running => {
                    // The child stopped without a stored end (the daemon is stopping, or its
                    // end could not be written): it runs again at the next start, and so
                    // does this step, which must not record an end of its own meanwhile.
                    tracing::warn!(child = %request_id, "child run stopped without a stored end; waiting for the next start");
                    std::future::pending().await
                }
            }
        })
    }
}
