//! `workflow` steps (SPEC §10): start a child run of another deployment and wait for its
//! output.
//!
//! The engine knows nothing of storage or actors, so the run machinery lends it a
//! [`ChildRuns`]: `start` stores the child (with the parent's `waiting` trace line naming
//! it, in one transaction) and starts it like any run; `wait` resolves when it has ended.
//! Splitting the two lets a parent resumed after a crash re-attach to the child it had
//! started (`wait` alone) instead of starting a second one.

use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};

use super::{StepError, StepOutput, StepResult};
use crate::workflow::template;
use crate::workflow::trace::StepRecord;

/// The deepest a run may be in its lineage: the top run is depth 1, so a chain of
/// `workflow` steps stops before a run would be depth 9 (an indirect cycle A → B → A ends
/// here too).
pub const MAX_WORKFLOW_DEPTH: u32 = 8;

/// The `error_code` of a child refused for its depth (SPEC §10); unlike other child
/// failures it is carried up to every ancestor, so the top run says why the chain stopped.
pub const DEPTH_EXCEEDED: &str = "workflow_depth_exceeded";

/// A child run to store and start.
#[derive(Debug, Clone)]
pub struct ChildStart {
    pub parent_request_id: String,
    pub deployment: String,
    pub variant: String,
    /// Rendered; checked against the child's declared inputs by `start`.
    pub inputs: Map<String, Value>,
    /// The parent's trace line for the step, status `waiting`, reason `child_run`; `start`
    /// stores it with the child's id filled in.
    pub waiting: StepRecord,
}

/// How a child run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEnd {
    Completed(Value),
    Failed { message: String, error_code: String },
    Cancelled,
}

/// What the run machinery lends `workflow` steps.
pub trait ChildRuns {
    /// Stores the child run durably (with `start.waiting`), starts it, and answers its
    /// request id. Refusals (unknown deployment or variant, bad inputs, too deep) are
    /// permanent step errors.
    fn start(&self, start: ChildStart) -> LocalBoxFuture<'static, Result<String, StepError>>;

    /// Resolves when the child run `request_id` has ended (at once if it already has).
    fn wait(&self, request_id: String) -> LocalBoxFuture<'static, Result<ChildEnd, StepError>>;
}

/// A `workflow` step's fields.
pub(crate) struct WorkflowStep<'a> {
    pub deployment: &'a str,
    pub variant: Option<&'a str>,
    pub inputs: &'a Map<String, Value>,
}

/// Renders the inputs, starts the child (or takes `attach`, a child an earlier execution
/// started), reports its id through `started`, and waits for its end.
pub(crate) async fn run(
    children: Option<&Rc<dyn ChildRuns>>,
    step: WorkflowStep<'_>,
    jinja_scope: &minijinja::Value,
    attach: Option<String>,
    waiting: StepRecord,
    parent_request_id: &str,
    started: &mut dyn FnMut(&str),
) -> StepResult {
    let Some(children) = children else {
        return Err(StepError::permanent(
            "workflow steps cannot run here (no run machinery to start a child run)",
        ));
    };
    let child = match attach {
        Some(id) => id,
        None => {
            let inputs = render_inputs(step.inputs, jinja_scope)?;
            children
                .start(ChildStart {
                    parent_request_id: parent_request_id.to_owned(),
                    deployment: step.deployment.to_owned(),
                    variant: step.variant.unwrap_or("default").to_owned(),
                    inputs,
                    waiting,
                })
                .await?
        }
    };
    started(&child);
    match children.wait(child.clone()).await? {
        ChildEnd::Completed(output) => Ok(StepOutput::new(output)),
        ChildEnd::Failed {
            message,
            error_code,
        } => {
            let message = format!("child run {child} failed: {message}");
            if error_code == DEPTH_EXCEEDED {
                Err(StepError {
                    code: Some(DEPTH_EXCEEDED),
                    ..StepError::permanent(message)
                })
            } else {
                // The child ran and failed, like a command that ran and failed: another
                // child may not.
                Err(StepError::retryable(message))
            }
        }
        ChildEnd::Cancelled => Err(StepError::permanent(format!(
            "child run {child} was cancelled"
        ))),
    }
}

/// The child's inputs: string values rendered as templates, others passed as they are.
fn render_inputs(
    inputs: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
) -> Result<Map<String, Value>, StepError> {
    inputs
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(src) => Value::String(
                    template::render_with(src, jinja_scope)
                        .map_err(|e| StepError::template(&format!("inputs.{name}"), &e))?,
                ),
                other => other.clone(),
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// The error of a child that would be deeper than [`MAX_WORKFLOW_DEPTH`].
pub fn depth_exceeded(depth: u32) -> StepError {
    StepError {
        code: Some(DEPTH_EXCEEDED),
        ..StepError::permanent(format!(
            "a child run here would be at depth {depth}, deeper than {MAX_WORKFLOW_DEPTH} (a workflow step chain that calls itself?)"
        ))
    }
}
