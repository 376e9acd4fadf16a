//! Approval steps (SPEC §7): a step that waits for a human answer. The engine pauses the
//! run at such a step (see [`super::engine::Pause`]); the answer comes back as an
//! [`Approval`] in the run's [`super::Resume`].
//!
//! Everything here is pure: checking a response against the step's choices, and the shapes
//! of the waiting step's output and of its timeout.

use serde_json::{json, Value};

use super::definition::ApprovalChoice;

/// The answer to an approval step that was waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// When the step started waiting (Unix ms); the trace keeps it as the step's start.
    pub waiting_since_ms: i64,
    pub answer: ApprovalAnswer,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalAnswer {
    /// The step's output, `{"choice": {"value", "label"}}` or `{"text"}` (see
    /// [`approval_output`]).
    Given(Value),
    /// Nobody answered within the step's `timeout_ms`: the step fails and `on_error` decides.
    TimedOut,
}

/// Checks a response to an approval step against its `choices` and gives the step's output:
/// with choices, `{"choice": value}` (a string, or `{"value": …}`) naming one of them gives
/// `{"choice": {"value", "label"}}`; without, `{"text": string}` gives `{"text"}`.
/// `Err` holds the field at fault and a message for the caller.
pub fn approval_output(
    choices: &[ApprovalChoice],
    body: &Value,
) -> Result<Value, (&'static str, String)> {
    let Some(obj) = body.as_object() else {
        return Err((
            "choice",
            "The response must be a JSON object with `choice` or `text`.".into(),
        ));
    };
    let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    let allowed = || {
        choices
            .iter()
            .map(|c| format!("{:?}", c.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if present("choice") && present("text") {
        return Err(("choice", "Send either `choice` or `text`, not both.".into()));
    }
    if choices.is_empty() {
        return match obj.get("text") {
            Some(Value::String(text)) => Ok(json!({ "text": text })),
            Some(v) if !v.is_null() => Err(("text", "`text` must be a string.".into())),
            _ if present("choice") => Err((
                "choice",
                "This step has no choices; answer with free text: {\"text\": \"…\"}.".into(),
            )),
            _ => Err(("text", "Missing required field: text".into())),
        };
    }
    let value = match obj.get("choice") {
        Some(Value::String(v)) => v.as_str(),
        Some(Value::Object(o)) => match o.get("value") {
            Some(Value::String(v)) => v.as_str(),
            _ => return Err(("choice", "`choice.value` must be a string.".into())),
        },
        Some(v) if !v.is_null() => {
            return Err((
                "choice",
                format!("`choice` must be a string, one of {}.", allowed()),
            ))
        }
        _ if present("text") => {
            return Err((
                "choice",
                format!(
                    "This step takes a choice, not free text: one of {}.",
                    allowed()
                ),
            ))
        }
        _ => {
            return Err((
                "choice",
                format!("Missing required field: choice (one of {}).", allowed()),
            ))
        }
    };
    match choices.iter().find(|c| c.value == value) {
        Some(c) => Ok(json!({ "choice": { "value": c.value, "label": c.label } })),
        None => Err((
            "choice",
            format!(
                "Invalid choice {value:?}: allowed values are {}.",
                allowed()
            ),
        )),
    }
}

/// When a step that started waiting at `waiting_since_ms` (Unix ms) times out, if it has a
/// `timeout_ms`. Saturates instead of overflowing on absurd timeouts.
pub(crate) fn timeout_at(waiting_since_ms: i64, timeout_ms: Option<u64>) -> Option<i64> {
    timeout_ms.map(|ms| waiting_since_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// The output a waiting step shows in the trace: `{"question", "choices", "timeout_at"}`.
pub(crate) fn waiting_output(
    question: Option<&str>,
    choices: &[ApprovalChoice],
    timeout_at_ms: Option<i64>,
) -> Value {
    json!({
        "question": question,
        "choices": choices,
        "timeout_at": timeout_at_ms.map(crate::ids::rfc3339),
    })
}

/// The error of a step nobody answered in time; `on_error` then decides.
pub(crate) fn timed_out_message(timeout_ms: Option<u64>) -> String {
    match timeout_ms {
        Some(ms) => format!("approval timed out after {ms} ms"),
        None => "approval timed out".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_output_checks_choices_and_shape() {
        let choices = vec![
            ApprovalChoice {
                value: "yes".into(),
                label: "Yes".into(),
            },
            ApprovalChoice {
                value: "no".into(),
                label: "No".into(),
            },
        ];
        assert_eq!(
            approval_output(&choices, &json!({"choice": "yes"})).unwrap(),
            json!({"choice": {"value": "yes", "label": "Yes"}})
        );
        assert_eq!(
            approval_output(&choices, &json!({"choice": {"value": "no"}})).unwrap(),
            json!({"choice": {"value": "no", "label": "No"}})
        );
        let (field, msg) = approval_output(&choices, &json!({"choice": "maybe"})).unwrap_err();
        assert_eq!(field, "choice");
        assert!(msg.contains("\"yes\", \"no\""), "{msg}");
        assert!(msg.contains("maybe"), "{msg}");
        for bad in [
            json!({}),
            json!({"text": "yes"}),
            json!({"choice": 1}),
            json!({"choice": "yes", "text": "x"}),
            json!([1]),
        ] {
            assert!(approval_output(&choices, &bad).is_err(), "{bad}");
        }
        assert_eq!(
            approval_output(&[], &json!({"text": "ok", "choice": null})).unwrap(),
            json!({"text": "ok"})
        );
        for bad in [json!({}), json!({"choice": "yes"}), json!({"text": 3})] {
            assert!(approval_output(&[], &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn waiting_shape_and_timeout() {
        assert_eq!(timeout_at(1_000, Some(500)), Some(1_500));
        assert_eq!(timeout_at(1_000, None), None);
        assert_eq!(timeout_at(i64::MAX - 1, Some(u64::MAX)), Some(i64::MAX));
        let choices = [ApprovalChoice {
            value: "no".into(),
            label: "No way".into(),
        }];
        let shown = waiting_output(Some("Pay?"), &choices, Some(0));
        assert_eq!(shown["question"], "Pay?");
        assert_eq!(
            shown["choices"],
            json!([{"value": "no", "label": "No way"}])
        );
        assert_eq!(shown["timeout_at"], crate::ids::rfc3339(0));
        assert_eq!(
            waiting_output(None, &[], None),
            json!({"question": null, "choices": [], "timeout_at": null})
        );
        assert_eq!(
            timed_out_message(Some(60_000)),
            "approval timed out after 60000 ms"
        );
        assert_eq!(timed_out_message(None), "approval timed out");
    }
}
