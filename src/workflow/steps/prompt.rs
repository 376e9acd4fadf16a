//! `prompt` steps: one OpenAI-compatible chat completion (`POST {base_url}/chat/completions`).

use minijinja::Value as JinjaValue;
use serde_json::{json, Map, Value};

use super::{snippet, status_is_retryable, StepError, StepOutput, StepResult};
use crate::workflow::engine::ProviderConfig;
use crate::workflow::template::render_with;

/// Model calls are slow; the workflow's own `timeout_ms` can cut this shorter.
const TIMEOUT_MS: u64 = 300_000;

/// The fields of a prompt step.
pub(crate) struct PromptStep<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub system: Option<&'a str>,
    pub prompt: &'a str,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

pub(crate) async fn run(
    client: &awc::Client,
    provider: Option<&ProviderConfig>,
    step: PromptStep<'_>,
    scope: &JinjaValue,
) -> StepResult {
    let name = step.provider;
    // A provider removed from the configuration since deployment stays missing.
    let provider = provider
        .ok_or_else(|| StepError::permanent(format!("provider {name:?} is not configured")))?;
    let mut messages = Vec::new();
    if let Some(system) = step.system {
        let system = render_with(system, scope).map_err(|e| StepError::template("system", &e))?;
        messages.push(json!({"role": "system", "content": system}));
    }
    let prompt = render_with(step.prompt, scope).map_err(|e| StepError::template("prompt", &e))?;
    messages.push(json!({"role": "user", "content": prompt}));
    let mut body = Map::new();
    body.insert("model".into(), step.model.into());
    body.insert("messages".into(), messages.into());
    if let Some(t) = step.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(m) = step.max_tokens {
        body.insert("max_tokens".into(), m.into());
    }

    let url = format!(
        "{}/chat/completions",
        provider.base_url.trim_end_matches('/')
    );
    let mut req = client
        .post(url.as_str())
        .insert_header(("content-type", "application/json"));
    if let Some(key) = &provider.api_key {
        req = req.insert_header(("authorization", format!("Bearer {key}")));
    }
    let body = Value::Object(body).to_string();
    let (status, bytes) = super::http::send(req, Some(body), TIMEOUT_MS, &url)
        .await
        .map_err(|e| e.context(&format!("provider {name:?}")))?;
    if !status.is_success() {
        let message = format!(
            "provider {name:?}: HTTP {} from {url}: {}",
            status.as_u16(),
            snippet(&bytes, 300)
        );
        return Err(StepError {
            message,
            retryable: status_is_retryable(status),
            code: None,
        });
    }
    // A reply that answered 2xx but is not a completion is the server's fault (a proxy's
    // error page, an overloaded model): worth another attempt.
    let reply: Value = serde_json::from_slice(&bytes).map_err(|_| {
        StepError::retryable(format!(
            "provider {name:?}: the response is not JSON: {}",
            snippet(&bytes, 200)
        ))
    })?;
    let content = reply
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            StepError::retryable(format!(
                "provider {name:?}: the response has no choices[0].message.content"
            ))
        })?;
    Ok(StepOutput {
        output: Value::String(content.to_owned()),
        usage: reply.get("usage").filter(|u| !u.is_null()).cloned(),
    })
}
