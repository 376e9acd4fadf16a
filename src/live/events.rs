//! The events of a run's live stream, framed for SSE, and their ids.
//!
//! An id is `c × 2³² + k`, where `c` counts the steps the run had finished (in the order they
//! finished) when the event happened:
//! - `step.completed` of the `c`-th finished step is exactly `c × 2³²`;
//! - the events between two completions (`step.started`, `output.delta`) count up from
//!   `c × 2³² + 3`;
//! - `approval.requested` is the last id of its block, `c × 2³² + 2³² − 1` (the run stops
//!   there);
//! - `run.status` is `1` for `queued`, `2` for `running`;
//! - the final event is always [`FINAL_ID`].
//!
//! Finished steps, the waiting approval and the final event are thus the same ids whether
//! they are sent live or replayed from the store for a client that comes later, and a client
//! that resumes with `Last-Event-ID` gets exactly the events with a greater id.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::store::runs::{RunRecord, StepRow};
use crate::store::{RunStatus, StepStatus};

/// The id of a run's final event (`run.completed`, `run.failed`, `run.cancelled`): above every
/// other id, and still exact as a JavaScript number.
pub const FINAL_ID: u64 = (1 << 53) - 1;

/// A step's `output` in `step.completed` is cut to this many bytes (`truncated: true`).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

const BLOCK: u64 = 1 << 32;

/// The id of the `c`-th finished step's `step.completed`.
pub fn completed_id(c: u64) -> u64 {
    c * BLOCK
}

/// The id of the `k`-th event after the `c`-th finished step (`k` ≥ 1). They start at 3,
/// after the `run.status` ids of block 0.
pub fn between_id(c: u64, k: u64) -> u64 {
    c * BLOCK + k.saturating_add(2).clamp(3, BLOCK - 2)
}

/// The id of the approval a run waits for after its `c`-th finished step.
pub fn approval_id(c: u64) -> u64 {
    c * BLOCK + BLOCK - 1
}

/// The id of a `run.status` event.
pub fn status_id(status: RunStatus) -> u64 {
    match status {
        RunStatus::Queued => 1,
        _ => 2,
    }
}

/// One SSE message, framed once and shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub bytes: Bytes,
    /// The run's final event: the stream ends after it.
    pub last: bool,
}

impl Frame {
    pub fn new(id: u64, event: &str, data: &Value) -> Frame {
        // serde_json escapes newlines inside strings, so the JSON is one `data:` line.
        Frame {
            id,
            bytes: Bytes::from(format!("id: {id}\nevent: {event}\ndata: {data}\n\n")),
            last: id == FINAL_ID,
        }
    }
}

pub fn run_status(request_id: &str, status: RunStatus) -> Frame {
    Frame::new(
        status_id(status),
        "run.status",
        &json!({"request_id": request_id, "run_status": status.as_str()}),
    )
}

/// `started_at` is beyond SPEC §11's `{step, type}`: a client that joins while the step runs
/// can show how long it has been running.
pub fn step_started(id: u64, step: &str, step_type: &str, at_ms: i64) -> Frame {
    Frame::new(
        id,
        "step.started",
        &json!({"step": step, "type": step_type, "started_at": crate::ids::rfc3339(at_ms)}),
    )
}

pub fn delta(id: u64, step: &str, text: &str) -> Frame {
    Frame::new(id, "output.delta", &json!({"step": step, "text": text}))
}

/// What `step.completed` says about a finished step.
pub struct Completed<'a> {
    pub step: &'a str,
    pub step_type: &'a str,
    pub status: StepStatus,
    pub duration_ms: i64,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub parent: Option<&'a str>,
    pub passes: &'a str,
}

pub fn step_completed(id: u64, c: &Completed<'_>) -> Frame {
    let mut data = Map::new();
    data.insert("step".into(), c.step.into());
    data.insert("type".into(), c.step_type.into());
    data.insert("status".into(), c.status.as_str().into());
    data.insert("duration_ms".into(), c.duration_ms.into());
    let (output, truncated) = cut_output(c.output.unwrap_or(&Value::Null));
    data.insert("output".into(), output);
    if truncated {
        data.insert("truncated".into(), true.into());
    }
    if let Some(error) = c.error {
        data.insert("error".into(), error.into());
    }
    if let Some(parent) = c.parent {
        data.insert("parent".into(), parent.into());
    }
    if !c.passes.is_empty() {
        data.insert("passes".into(), c.passes.into());
    }
    Frame::new(id, "step.completed", &Value::Object(data))
}

/// A step output of at most [`OUTPUT_LIMIT`] bytes of JSON, and whether it was cut. A cut
/// string keeps its first bytes; any other value becomes the first bytes of its JSON text.
fn cut_output(output: &Value) -> (Value, bool) {
    if let Value::String(s) = output {
        if s.len() <= OUTPUT_LIMIT {
            return (output.clone(), false);
        }
        return (Value::String(prefix(s, OUTPUT_LIMIT).to_owned()), true);
    }
    let text = output.to_string();
    if text.len() <= OUTPUT_LIMIT {
        return (output.clone(), false);
    }
    (Value::String(prefix(&text, OUTPUT_LIMIT).to_owned()), true)
}

fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `approval.requested` from the waiting step's output (`{"question", "choices", …}`).
pub fn approval_requested(id: u64, step: &str, waiting_output: &Value) -> Frame {
    Frame::new(
        id,
        "approval.requested",
        &json!({
            "step": step,
            "question": waiting_output.get("question").cloned().unwrap_or(Value::Null),
            "choices": waiting_output.get("choices").cloned().unwrap_or_else(|| json!([])),
        }),
    )
}

/// The final event of an ended run. `error` is the stored error object.
pub fn finished(
    request_id: &str,
    status: RunStatus,
    output: &Value,
    error: Option<&Value>,
    usage: Option<&Value>,
) -> Frame {
    let name = match status {
        RunStatus::Completed => "run.completed",
        RunStatus::Cancelled => "run.cancelled",
        _ => "run.failed",
    };
    let mut data = Map::new();
    data.insert("request_id".into(), request_id.into());
    data.insert("run_status".into(), status.as_str().into());
    match status {
        RunStatus::Completed => data.insert("output".into(), output.clone()),
        _ => data.insert("error".into(), error.cloned().unwrap_or(Value::Null)),
    };
    data.insert("usage".into(), usage.cloned().unwrap_or(Value::Null));
    Frame::new(FINAL_ID, name, &Value::Object(data))
}

/// How many steps of a stored trace have finished (everything but a `waiting` line).
pub fn finished_count(steps: &[StepRow]) -> u64 {
    steps
        .iter()
        .filter(|s| s.status != StepStatus::Waiting)
        .count() as u64
}

/// Where a stored step comes in the order steps finished: end time, nesting depth (deeper
/// first), position in the definition, loop passes.
type FinishOrder = (i64, std::cmp::Reverse<usize>, i64, Vec<u64>);

/// The events of a stored run for a client that comes now: its status,
/// every finished step in the order they finished, the approval it waits for, and the final
/// event of an ended run. Sorted by id.
pub fn replay(run: &RunRecord, steps: &[StepRow]) -> Vec<Frame> {
    let mut frames = vec![run_status(&run.request_id, run.status)];
    let parents: HashMap<&str, Option<&str>> = steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.parent.as_deref()))
        .collect();
    let depth = |s: &StepRow| {
        let mut depth = 0usize;
        let mut at = s.parent.as_deref();
        while let Some(p) = at {
            depth += 1;
            if depth > parents.len() {
                break;
            }
            at = parents.get(p).copied().flatten();
        }
        depth
    };
    // The order they finished: by end time; in the same millisecond a nested step before its
    // parent, then siblings and loop passes in the order they run.
    let mut done: Vec<(&StepRow, FinishOrder)> = steps
        .iter()
        .filter(|s| s.status != StepStatus::Waiting)
        .map(|s| {
            let passes = s.passes.split('.').filter_map(|p| p.parse().ok()).collect();
            let key = (
                s.started_at + s.duration_ms,
                std::cmp::Reverse(depth(s)),
                s.step_index,
                passes,
            );
            (s, key)
        })
        .collect();
    done.sort_by(|a, b| a.1.cmp(&b.1));
    for (n, (row, _)) in done.iter().enumerate() {
        let output = row
            .output_json
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok());
        frames.push(step_completed(
            completed_id(n as u64 + 1),
            &Completed {
                step: &row.step_id,
                step_type: &row.step_type,
                status: row.status,
                duration_ms: row.duration_ms,
                output: output.as_ref(),
                error: row.error.as_deref(),
                parent: row.parent.as_deref(),
                passes: &row.passes,
            },
        ));
    }
    if run.status.is_live() {
        if let Some(waiting) = steps.iter().find(|s| s.status == StepStatus::Waiting) {
            let output = waiting
                .output_json
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            frames.push(approval_requested(
                approval_id(done.len() as u64),
                &waiting.step_id,
                &output,
            ));
        }
    } else {
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
        };
        let output = parse(&run.output_json).unwrap_or(Value::Null);
        let error = parse(&run.error_json);
        let usage = parse(&run.usage_json);
        frames.push(finished(
            &run.request_id,
            run.status,
            &output,
            error.as_ref(),
            usage.as_ref(),
        ));
    }
    frames.sort_by_key(|f| f.id);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_blocks() {
        assert!(status_id(RunStatus::Running) < between_id(0, 1));
        assert!(between_id(0, u64::MAX) < approval_id(0));
        assert!(approval_id(0) < completed_id(1));
        assert!(completed_id(1) < between_id(1, 1));
        assert!(completed_id(1 << 20) < FINAL_ID);
    }

    #[test]
    fn long_outputs_are_cut_on_a_char_boundary() {
        let long = "é".repeat(OUTPUT_LIMIT);
        let (cut, truncated) = cut_output(&Value::String(long));
        assert!(truncated);
        let cut = cut.as_str().unwrap();
        assert!(cut.len() <= OUTPUT_LIMIT && cut.len() > OUTPUT_LIMIT - 2);
        let (cut, truncated) = cut_output(&json!({"a": "x".repeat(OUTPUT_LIMIT)}));
        assert!(truncated && cut.as_str().unwrap().starts_with("{\"a\":\"xx"));
        assert_eq!(cut_output(&json!({"a": 1})), (json!({"a": 1}), false));
    }

    #[test]
    fn frames_are_one_sse_message() {
        let f = delta(7, "ask", "line one\nline two");
        let text = std::str::from_utf8(&f.bytes).unwrap();
        assert_eq!(
            text,
            "id: 7\nevent: output.delta\ndata: {\"step\":\"ask\",\"text\":\"line one\\nline two\"}\n\n"
        );
        assert!(!f.last);
        assert!(finished("r", RunStatus::Cancelled, &Value::Null, None, None).last);
    }
}
