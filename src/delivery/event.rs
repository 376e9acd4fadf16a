//! The completion event's body. It is rendered once when the run ends and stored; every
//! attempt sends those exact bytes.

use serde_json::{json, Map, Value};

use crate::domain::RunStatus;
use crate::ids;

/// What the event says about a finished run.
pub struct EventFacts<'a> {
    pub request_id: &'a str,
    /// `completed`, `failed` or `cancelled`.
    pub run_status: RunStatus,
    pub deployment: &'a str,
    pub variant: &'a str,
    pub version: i64,
    pub output: &'a Value,
    /// `{"message", "error_code", "step"}` for failed runs.
    pub error: Option<Value>,
    pub metadata: &'a Map<String, Value>,
    pub user: Option<&'a str>,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// The run's summed token usage; `None` (null) when no prompt step ran.
    pub usage: Option<&'a Value>,
}

/// `workflow.completed`, `workflow.failed` or `workflow.cancelled`.
pub fn event_type(run_status: RunStatus) -> &'static str {
    match run_status {
        RunStatus::Completed => "workflow.completed",
        RunStatus::Cancelled => "workflow.cancelled",
        // A run ends completed, cancelled or failed; an unfinished one has no event.
        RunStatus::Failed | RunStatus::Queued | RunStatus::Running => "workflow.failed",
    }
}

/// The JSON body of SPEC §3.
pub fn render_body(facts: &EventFacts<'_>) -> Vec<u8> {
    let output = if facts.run_status == RunStatus::Completed {
        facts.output.clone()
    } else {
        Value::Null
    };
    let body = json!({
        "event_type": event_type(facts.run_status),
        "request_id": facts.request_id,
        "data": {
            "run_status": facts.run_status,
            "deployment": facts.deployment,
            "variant": facts.variant,
            "version": facts.version,
            "output": output,
            "error": facts.error.clone().unwrap_or(Value::Null),
            "metadata": facts.metadata,
            "user": facts.user,
            "started_at": ids::rfc3339(facts.started_at_ms),
            "ended_at": ids::rfc3339(facts.ended_at_ms),
            "duration_ms": (facts.ended_at_ms - facts.started_at_ms).max(0),
            "usage": facts.usage,
        }
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}
