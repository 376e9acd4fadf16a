//! `http` steps: one templated HTTP request; the response body is the output.
//!
//! Also holds the small request helper the `prompt` step shares.

use std::collections::BTreeMap;
use std::time::Duration;

use awc::error::{PayloadError, SendRequestError};
use awc::http::{Method, StatusCode};
use minijinja::Value as JinjaValue;
use serde_json::Value;

use super::{json_or_text, snippet, status_is_retryable, StepError, StepOutput, StepResult};
use crate::workflow::template::render_with;

/// Used when the step sets no `timeout_ms`.
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Responses above this size fail the step instead of filling memory.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The rendered parts of an HTTP step.
pub(crate) struct HttpStep<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Option<&'a str>,
    pub timeout_ms: Option<u64>,
}

pub(crate) async fn run(
    client: &awc::Client,
    step: HttpStep<'_>,
    scope: &JinjaValue,
) -> StepResult {
    let url = render_with(step.url, scope).map_err(|e| StepError::template("url", &e))?;
    let url = url.trim().to_owned();
    let method = Method::from_bytes(step.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| StepError::permanent(format!("invalid HTTP method {:?}", step.method)))?;
    let mut req = client.request(method, url.as_str());
    let mut has_content_type = false;
    for (name, value) in step.headers {
        let value = render_with(value, scope)
            .map_err(|e| StepError::template(&format!("headers.{name}"), &e))?;
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        req = req.insert_header((name.as_str(), value));
    }
    let body = match step.body {
        Some(b) => Some(render_with(b, scope).map_err(|e| StepError::template("body", &e))?),
        None => None,
    };
    if let (Some(b), false) = (&body, has_content_type) {
        // A body that is JSON is almost always meant as JSON.
        let ct = if serde_json::from_str::<Value>(b).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        req = req.insert_header(("content-type", ct));
    }
    let timeout_ms = step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    let (status, bytes) = send(req, body, timeout_ms, &url).await?;
    if !status.is_success() {
        let message = format!(
            "HTTP {} from {url}: {}",
            status.as_u16(),
            snippet(&bytes, 200)
        );
        return Err(StepError {
            retryable: status_is_retryable(status),
            ..StepError::permanent(message)
        });
    }
    let output = if bytes.is_empty() {
        Value::Null
    } else {
        json_or_text(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(StepOutput::new(output))
}

/// Sends `req` and reads the whole response body, all within `timeout_ms`. A request that
/// cannot be built (a bad URL or header) or a response over the size limit fails for good;
/// any other failed exchange may be retried.
pub(crate) async fn send(
    req: awc::ClientRequest,
    body: Option<String>,
    timeout_ms: u64,
    url: &str,
) -> Result<(StatusCode, Vec<u8>), StepError> {
    let limit = Duration::from_millis(timeout_ms);
    let exchange = async {
        let req = req.timeout(limit);
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| {
            let message = format!("request to {url} failed: {e}");
            match e {
                SendRequestError::Url(_) | SendRequestError::Http(_) => {
                    StepError::permanent(message)
                }
                _ => StepError::retryable(message),
            }
        })?;
        let bytes = resp.body().limit(MAX_RESPONSE_BYTES).await.map_err(|e| {
            let message = format!("reading the response from {url} failed: {e}");
            // An answer over the size limit comes back as large; a cut one may not.
            match e {
                PayloadError::Overflow => StepError::permanent(message),
                _ => StepError::retryable(message),
            }
        })?;
        Ok((resp.status(), bytes.to_vec()))
    };
    match actix_rt::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(StepError::retryable(format!(
            "request to {url} timed out after {timeout_ms} ms"
        ))),
    }
}
