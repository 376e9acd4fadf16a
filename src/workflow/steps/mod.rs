//! The step types' executors. Each takes the step's fields and the run's template scope
//! and returns the step output, or a [`StepError`]: a one-line reason that the engine
//! records and, depending on `on_error`, turns into a run failure, and whether another
//! attempt could succeed.
//!
//! The retry rule, applied by each executor: an error is *retryable* when it comes from
//! the world outside and may be gone on the next attempt (a connection that failed, a
//! timeout, an HTTP 5xx, 408 or 429, a provider's malformed reply, a command that ran and
//! failed). It is *permanent* when the same attempt must fail the same way (a template that
//! does not render, an unknown provider, a command step that is refused or whose program
//! cannot be started, a request that cannot be built, any other 4xx): the engine then fails
//! the step at once instead of spending its `retries` with backoff.

pub(crate) mod command;
pub(crate) mod delay;
pub(crate) mod http;
pub(crate) mod prompt;
pub(crate) mod template;
pub mod workflow;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::template::TemplateError;

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

/// Why one attempt of a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// One line, shown in the step trace and in the run's error message.
    pub message: String,
    /// Whether another attempt could succeed (see the module comment for the rule).
    pub retryable: bool,
    /// The run's `error_code` when this failure ends the run, where SPEC §10 names one
    /// (`invalid_model_output`, `iteration_limit_exceeded`, `workflow_depth_exceeded`);
    /// `None` means `step_failed`.
    pub code: Option<&'static str>,
    /// How long the other side asked to wait before another attempt (a provider's
    /// `Retry-After`); the engine waits at least this long, up to its cap, before retrying.
    pub retry_after: Option<Duration>,
}

impl StepError {
    /// A failure another attempt may not repeat.
    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            code: None,
            retry_after: None,
        }
    }

    /// A failure every attempt would repeat.
    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
            code: None,
            retry_after: None,
        }
    }

    /// A template field that did not render: `{field}: {error}`. Rendering is
    /// deterministic, so this is permanent.
    pub(crate) fn template(field: &str, e: &TemplateError) -> Self {
        Self::permanent(format!("{field}: {e}"))
    }

    /// The run's `error_code` should this failure end the run.
    pub(crate) fn error_code(&self) -> &'static str {
        self.code.unwrap_or("step_failed")
    }

    /// Puts `prefix` before the message, keeping whether it is retryable.
    pub(crate) fn context(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}

pub(crate) type StepResult = Result<StepOutput, StepError>;

/// Whether an HTTP status that failed an attempt may be different next time: server errors,
/// `408 Request Timeout` and `429 Too Many Requests`. Other statuses (4xx, and 3xx since
/// redirects are not followed) answer the request itself, which a retry sends unchanged.
pub(crate) fn status_is_retryable(status: awc::http::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use awc::http::StatusCode;

    #[test]
    fn only_server_errors_timeouts_and_throttling_are_retried() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(
                status_is_retryable(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [301, 302, 400, 401, 403, 404, 409, 410, 422] {
            assert!(
                !status_is_retryable(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = StepError::retryable("HTTP 503").context("provider \"local\"");
        assert_eq!(e.message, "provider \"local\": HTTP 503");
        assert!(e.retryable);
        assert!(!StepError::permanent("x").context("y").retryable);
    }
}
