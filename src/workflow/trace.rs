//! The step trace and what a run resumes from: how each step ended ([`StepRecord`],
//! [`StepStatus`]), why a run failed ([`RunFailure`]), and the steps an earlier execution
//! already finished ([`Resume`], [`DoneStep`]).
//!
//! These are plain data shared by the engine, which produces them, and the run actor, which
//! stores the trace and rebuilds a [`Resume`] from it after a pause or a restart.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::approval::Approval;

/// How a step ended: one of the domain's step states.
pub use crate::domain::StepStatus;

/// One line of the step trace, passed to `on_step` when the step ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub step_id: String,
    /// 0-based position in the definition, counted depth first (nested steps included).
    pub index: usize,
    /// The enclosing `branch`/`loop` step's id; `None` at the top level.
    pub parent: Option<String>,
    /// The pass indexes of the enclosing loops, outermost first (empty outside loops).
    pub passes: Vec<u32>,
    pub step_type: &'static str,
    pub status: StepStatus,
    /// Unix milliseconds when the step started.
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// How many times the step ran (0 when skipped or its `when` failed).
    pub attempts: u32,
    /// Token usage of a prompt step, as the provider reported it.
    pub usage: Option<Value>,
    /// Why a `waiting` step waits (`approval`, or `child_run` for a `workflow` step whose
    /// child runs).
    pub reason: Option<String>,
    /// The child run a `workflow` step started.
    pub child_request_id: Option<String>,
}

impl StepRecord {
    /// The innermost enclosing loop's pass, if any.
    pub fn pass(&self) -> Option<u32> {
        self.passes.last().copied()
    }

    /// `passes` as stored: `3.0` (outermost first), empty outside loops.
    pub fn passes_key(&self) -> String {
        passes_key(&self.passes)
    }
}

/// Loop passes as stored in the trace: joined with `.`, outermost first.
pub fn passes_key(passes: &[u32]) -> String {
    let mut key = String::new();
    for (i, p) in passes.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.push_str(&p.to_string());
    }
    key
}

/// Why a run failed; serializes as the `data.error` object of a `workflow.failed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunFailure {
    pub message: String,
    /// `step_failed`, `timeout`, `template_error` or `approval_requires_async` (an approval
    /// step reached by a sync run, which cannot wait).
    pub error_code: String,
    pub step: Option<String>,
}

impl RunFailure {
    pub(super) fn new(error_code: &str, step: Option<&str>, message: String) -> Self {
        RunFailure {
            message,
            error_code: error_code.to_owned(),
            step: step.map(str::to_owned),
        }
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunFailure {}

/// Where a run continues from: the steps an earlier execution finished and the answers to
/// its approval steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// Steps that already ended, nested ones included (by step id and loop passes; a later
    /// entry for the same step and passes replaces an earlier one). In each step list the
    /// engine puts their outputs in scope instead of running them again, up to the first step
    /// without an entry; everything after it runs again. A `branch` or `loop` without an
    /// entry of its own is entered, and its finished nested steps and loop passes reused.
    pub done: Vec<DoneStep>,
    /// Answers to approval steps, by step id.
    pub approvals: HashMap<String, Approval>,
    /// Child runs that `workflow` steps started and had not seen end, by step id and loop
    /// passes: the step waits for that child again instead of starting another.
    pub children: HashMap<(String, String), ChildLink>,
}

impl Resume {
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.approvals.is_empty() && self.children.is_empty()
    }
}

/// A child run a `workflow` step started, as its `waiting` trace line records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildLink {
    pub request_id: String,
    /// When the step started (Unix ms): the step's end line keeps it, so it replaces the
    /// `waiting` line.
    pub since_ms: i64,
}

/// A step an earlier execution finished: completed, skipped, or failed with
/// `on_error = "continue"`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneStep {
    pub step_id: String,
    /// The enclosing loops' passes, as stored (`3.0`; empty outside loops).
    pub passes: String,
    pub status: StepStatus,
    pub output: Value,
    pub error: Option<String>,
}
