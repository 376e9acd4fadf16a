//! `delay` steps: wait, output `null`.

use std::time::Duration;

use serde_json::Value;

use super::{StepOutput, StepResult};

pub(crate) async fn run(ms: u64) -> StepResult {
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    Ok(StepOutput::new(Value::Null))
}
