//! The step types' executors. Each takes the step's fields and the run's template scope
//! and returns the step output, or a one-line reason for the failure that the engine
//! records and, depending on `on_error`, turns into a run failure.

pub(crate) mod command;
pub(crate) mod delay;
pub(crate) mod http;
pub(crate) mod prompt;
pub(crate) mod template;

use serde_json::Value;

/// What a successful step produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepOutput {
    pub output: Value,
    /// Token usage reported by a prompt step's provider.
    pub usage: Option<Value>,
}

impl StepOutput {
    pub(crate) fn new(output: Value) -> Self {
        StepOutput {
            output,
            usage: None,
        }
    }
}

/// `Err` holds the reason shown in the step trace and in the run's error message.
pub(crate) type StepResult = Result<StepOutput, String>;

/// Parses a response or program output as JSON when it is JSON, else keeps it as text.
pub(crate) fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// At most `max` bytes of `bytes` as text, for error messages.
pub(crate) fn snippet(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut s = String::from_utf8_lossy(cut).trim().to_owned();
    if bytes.len() > max {
        s.push('…');
    }
    s
}
