//! `template` steps: render text, optionally parsed as JSON.
//!
//! Both failures are permanent: the same template and scope render the same text.

use minijinja::Value as JinjaValue;
use serde_json::Value;

use super::{StepError, StepOutput, StepResult};
use crate::workflow::template::render_with;

pub(crate) fn run(template: &str, json: bool, scope: &JinjaValue) -> StepResult {
    let text = render_with(template, scope).map_err(|e| StepError::template("template", &e))?;
    if !json {
        return Ok(StepOutput::new(Value::String(text)));
    }
    serde_json::from_str(&text)
        .map(StepOutput::new)
        .map_err(|e| {
            StepError::permanent(format!(
                "template output is not valid JSON ({e}): {}",
                super::snippet(text.as_bytes(), 200)
            ))
        })
}
