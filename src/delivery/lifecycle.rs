//! Lifecycle webhooks (SPEC §11): which events a callback run POSTs (`async.events`), and the
//! bodies of the events that are not its end. Each is an event of its own in the outbox (own
//! `webhook-id`, same signatures, retries and attempt log as the terminal one); the store
//! keeps a run's events in order (see `store::events`).

use serde_json::{json, Map, Value};

use crate::domain::StepStatus;

pub const WORKFLOW_COMPLETED: &str = "workflow.completed";
pub const WORKFLOW_FAILED: &str = "workflow.failed";
pub const WORKFLOW_CANCELLED: &str = "workflow.cancelled";
pub const STEP_COMPLETED: &str = "step.completed";
pub const APPROVAL_REQUESTED: &str = "approval.requested";

/// Every name `async.events` accepts, in the order the set lists them.
pub const NAMES: [&str; 5] = [
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    WORKFLOW_CANCELLED,
    STEP_COMPLETED,
    APPROVAL_REQUESTED,
];

/// What `async.events` left out by default: the run's end only.
const DEFAULT_BITS: u8 = 0b00111;

/// The largest step output a `step.completed` event carries whole, in bytes of its JSON.
pub const STEP_OUTPUT_MAX_BYTES: usize = 64 * 1024;

/// The events a run POSTs to its callback URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u8);

impl Default for EventSet {
    fn default() -> Self {
        EventSet(DEFAULT_BITS)
    }
}

fn bit(name: &str) -> Option<u8> {
    NAMES.iter().position(|n| *n == name).map(|i| 1 << i)
}

impl EventSet {
    /// `async.events` as sent: absent or null is the default; otherwise a non-empty array of
    /// known names (repeats are harmless). `Err` says what is wrong, for the field
    /// `async.events`.
    pub fn parse(value: Option<&Value>) -> Result<EventSet, String> {
        let items = match value {
            None | Some(Value::Null) => return Ok(EventSet::default()),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(format!(
                    "async.events must be an array of event names: {}",
                    NAMES.join(", ")
                ))
            }
        };
        if items.is_empty() {
            // An empty choice would make a callback run that never calls back: more likely a
            // mistake than a wish, and leaving the field out gives the default.
            return Err(format!(
                "async.events must name at least one event (leave it out for the default: {WORKFLOW_COMPLETED}, {WORKFLOW_FAILED}, {WORKFLOW_CANCELLED}); known: {}",
                NAMES.join(", ")
            ));
        }
        let mut bits = 0;
        for item in items {
            let known = item.as_str().and_then(bit);
            match known {
                Some(b) => bits |= b,
                None => {
                    return Err(format!(
                        "async.events: unknown event {item}; known: {}",
                        NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(EventSet(bits))
    }

    pub fn wants(self, name: &str) -> bool {
        bit(name).is_some_and(|b| self.0 & b != 0)
    }

    /// The chosen names, in [`NAMES`] order.
    pub fn names(self) -> Vec<&'static str> {
        NAMES.into_iter().filter(|n| self.wants(n)).collect()
    }

    /// The stored form: a JSON array, or `None` for the default (nothing to store).
    pub fn to_stored(self) -> Option<String> {
        (self != EventSet::default()).then(|| json!(self.names()).to_string())
    }

    /// Reads the stored form back; what cannot be read is the default.
    pub fn from_stored(text: Option<&str>) -> EventSet {
        text.and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|v| EventSet::parse(Some(&v)).ok())
            .unwrap_or_default()
    }
}

/// What every lifecycle event says about its run.
pub struct RunFacts<'a> {
    pub request_id: &'a str,
    pub deployment: &'a str,
    pub variant: &'a str,
    pub metadata: &'a Map<String, Value>,
}

/// The steps whose end `step.completed` reports: not a step that waits, nor one a crash
/// interrupted (it runs again and reports then).
pub fn reports_step(status: StepStatus) -> bool {
    matches!(
        status,
        StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped
    )
}

/// One step's end, as `step.completed` reports it.
pub struct StepFacts<'a> {
    pub step: &'a str,
    pub status: StepStatus,
    pub duration_ms: i64,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
}

fn envelope(event_type: &str, run: &RunFacts<'_>, mut data: Map<String, Value>) -> Vec<u8> {
    data.insert("deployment".into(), json!(run.deployment));
    data.insert("variant".into(), json!(run.variant));
    data.insert("metadata".into(), Value::Object(run.metadata.clone()));
    let body = json!({
        "event_type": event_type,
        "request_id": run.request_id,
        "data": data,
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

/// An output whose JSON is longer than [`STEP_OUTPUT_MAX_BYTES`] becomes the first that
/// many bytes of that JSON text (cut at a character boundary), flagged `truncated`.
fn cut_output(output: Option<&Value>) -> (Value, bool) {
    let Some(output) = output else {
        return (Value::Null, false);
    };
    let text = output.to_string();
    if text.len() <= STEP_OUTPUT_MAX_BYTES {
        return (output.clone(), false);
    }
    let mut end = STEP_OUTPUT_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (Value::String(text[..end].to_string()), true)
}

/// The body of `step.completed`.
pub fn step_completed_body(run: &RunFacts<'_>, step: &StepFacts<'_>) -> Vec<u8> {
    let (output, truncated) = cut_output(step.output);
    let mut data = Map::new();
    data.insert("step".into(), json!(step.step));
    data.insert("status".into(), json!(step.status));
    data.insert("duration_ms".into(), json!(step.duration_ms));
    data.insert("output".into(), output);
    data.insert("truncated".into(), json!(truncated));
    data.insert("error".into(), json!(step.error));
    envelope(STEP_COMPLETED, run, data)
}

/// The body of `approval.requested`: the rendered question and the choices, as the waiting
/// step's trace line shows them.
pub fn approval_requested_body(
    run: &RunFacts<'_>,
    step: &str,
    question: &Value,
    choices: &Value,
) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("step".into(), json!(step));
    data.insert("question".into(), question.clone());
    data.insert("choices".into(), choices.clone());
    envelope(APPROVAL_REQUESTED, run, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_terminal_events_and_is_not_stored() {
        let set = EventSet::parse(None).unwrap();
        assert_eq!(
            set.names(),
            [WORKFLOW_COMPLETED, WORKFLOW_FAILED, WORKFLOW_CANCELLED]
        );
        assert_eq!(set.to_stored(), None);
        assert_eq!(EventSet::from_stored(None), set);
    }

    #[test]
    fn a_choice_round_trips_through_its_stored_form() {
        let set = EventSet::parse(Some(&json!([STEP_COMPLETED, WORKFLOW_COMPLETED]))).unwrap();
        assert!(set.wants(STEP_COMPLETED) && set.wants(WORKFLOW_COMPLETED));
        assert!(!set.wants(WORKFLOW_FAILED) && !set.wants(APPROVAL_REQUESTED));
        let stored = set.to_stored().unwrap();
        assert_eq!(stored, r#"["workflow.completed","step.completed"]"#);
        assert_eq!(EventSet::from_stored(Some(&stored)), set);
    }

    #[test]
    fn unknown_names_empty_arrays_and_other_types_are_refused() {
        for bad in [
            json!(["step.started"]),
            json!([STEP_COMPLETED, 3]),
            json!([]),
            json!("step.completed"),
        ] {
            let err = EventSet::parse(Some(&bad)).unwrap_err();
            assert!(err.contains("async.events"), "{err}");
        }
        let err = EventSet::parse(Some(&json!(["run.done"]))).unwrap_err();
        assert!(err.contains("\"run.done\""), "{err}");
    }

    #[test]
    fn a_large_output_is_cut_and_flagged() {
        let big = json!("é".repeat(STEP_OUTPUT_MAX_BYTES));
        let (cut, truncated) = cut_output(Some(&big));
        assert!(truncated);
        let text = cut.as_str().unwrap();
        assert!(text.len() <= STEP_OUTPUT_MAX_BYTES && text.len() > STEP_OUTPUT_MAX_BYTES - 4);
        let small = json!({"a": 1});
        assert_eq!(cut_output(Some(&small)), (small.clone(), false));
    }
}
