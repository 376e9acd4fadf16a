//! `prompt` steps: one OpenAI-compatible chat completion (`POST {base_url}/chat/completions`).
//!
//! The request body uses only what OpenAI, Ollama (`/v1`) and llama.cpp's server all accept:
//! `model`, `messages` of `{role, content}` (roles `system`, `user`, `assistant`),
//! `temperature`, `max_tokens`, and `response_format` as `{"type": "json_object"}` or
//! `{"type": "json_schema", "json_schema": {name, schema, strict: true}}`.
//!
//! Errors name the provider and the model, and the HTTP status when there is one. `429` and
//! `5xx` are retryable and carry the provider's `Retry-After`; other statuses fail for good.
//! A reply that is not the JSON asked for (`response_format = "json"`, `json_schema`) fails
//! with `error_code` `invalid_model_output`, retryable: the model may answer better next time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awc::http::StatusCode;
use minijinja::Value as JinjaValue;
use serde_json::{json, Map, Value};

use super::{snippet, status_is_retryable, StepError, StepOutput, StepResult};
use crate::usage::Usage;
use crate::workflow::definition::{ChatRole, Messages, ResponseFormat};
use crate::workflow::deltas::DeltaSink;
use crate::workflow::engine::ProviderConfig;
use crate::workflow::template::render_with;
use crate::workflow::validate::schema_problem;

/// Model calls are slow; the workflow's own `timeout_ms` can cut this shorter.
const TIMEOUT_MS: u64 = 300_000;
/// Replies above this size fail the step instead of filling memory.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// The longest `Retry-After` honoured; a provider asking for more gets retried after this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The `error_code` of a reply that is not the JSON the step asked for.
pub(crate) const INVALID_MODEL_OUTPUT: &str = "invalid_model_output";

/// The fields of a prompt step.
pub(crate) struct PromptStep<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub system: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub messages: Option<&'a Messages>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub response_format: Option<ResponseFormat>,
    pub json_schema: Option<&'a Value>,
    /// `stream = true` (the default): read the provider's SSE stream and publish its text
    /// here as it comes. `None` asks for one JSON reply.
    pub stream: Option<Publish<'a>>,
}

/// Where a streamed step's text deltas go, and under which run and step.
pub(crate) struct Publish<'a> {
    pub sink: &'a DeltaSink,
    pub request_id: Arc<str>,
    pub step: Arc<str>,
}

impl Publish<'_> {
    fn text(&self, text: &str) {
        self.sink.publish_text(&self.request_id, &self.step, text);
    }
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
    let who = format!("provider {name:?} model {:?}", step.model);
    let messages = build_messages(&step, scope)?;
    // Compiled per attempt: cheap next to a model call, and validation proved it compiles.
    let validator = match step.json_schema {
        Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
            StepError::permanent(format!("json_schema: invalid{}", schema_problem(&e)))
        })?),
        None => None,
    };
    let body = request_body(&step, messages);

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
    let (status, retry_after, reply) = send(req, body.to_string(), &url, step.stream.as_ref())
        .await
        .map_err(|e| e.context(&who))?;
    let bytes = match reply {
        Reply::Whole(bytes) => bytes,
        Reply::Streamed { content, usage } => {
            // Counted before the reply is checked: a reply the step refuses was paid for too.
            let usage = account(name, provider, step.model, usage.as_ref());
            let output =
                output_of(&content, &step, validator.as_ref()).map_err(|e| e.context(&who))?;
            return Ok(StepOutput { output, usage });
        }
    };
    if !status.is_success() {
        let mut detail = snippet(&bytes, 300);
        if let Some(key) = provider.api_key.as_deref().filter(|k| k.len() >= 4) {
            // A provider may echo the key it refused; never pass it on.
            detail = detail.replace(key, "<redacted>");
        }
        let message = format!("{who}: HTTP {} from {url}: {detail}", status_text(status));
        let retryable = status_is_retryable(status);
        return Err(StepError {
            retryable,
            retry_after: retry_after.filter(|_| retryable),
            ..StepError::permanent(message)
        });
    }
    // A reply that answered 2xx but is not a completion is the server's fault (a proxy's
    // error page, an overloaded model): worth another attempt. A server that ignores
    // `stream: true` answers this way too.
    let reply: Value = serde_json::from_slice(&bytes).map_err(|_| {
        StepError::retryable(format!(
            "{who}: the response is not JSON: {}",
            snippet(&bytes, 200)
        ))
    })?;
    // Counted before the reply is checked: a reply the step refuses was paid for too.
    let usage = account(name, provider, step.model, reply.get("usage"));
    let message = reply.pointer("/choices/0/message");
    let Some(content) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
    else {
        let refusal = message
            .and_then(|m| m.get("refusal"))
            .and_then(Value::as_str);
        return Err(match refusal {
            // OpenAI's structured outputs: the model declined to fill the schema.
            Some(refusal) => StepError {
                code: Some(INVALID_MODEL_OUTPUT),
                ..StepError::retryable(format!(
                    "{who}: the model refused: {}",
                    snippet(refusal.as_bytes(), 200)
                ))
            },
            None => StepError::retryable(format!(
                "{who}: the response has no choices[0].message.content"
            )),
        });
    };
    let output = output_of(content, &step, validator.as_ref()).map_err(|e| e.context(&who))?;
    Ok(StepOutput { output, usage })
}

/// The step's `usage` as the trace keeps it (`{prompt_tokens, completion_tokens,
/// total_tokens}`, with `cost_usd` when the model has a price), counted in
/// `hivelet_tokens_total` at once. `None` when the provider reported no usage. Only a
/// successful attempt's usage reaches the trace (and the run's sum); the metric counts
/// every reply's.
fn account(
    provider_name: &str,
    provider: &ProviderConfig,
    model: &str,
    reported: Option<&Value>,
) -> Option<Value> {
    let usage = Usage::from_provider(reported?)?.priced(provider.prices.get(model));
    crate::metrics::get().tokens_used(provider_name, model, &usage);
    Some(usage.to_json())
}

/// `429 Too Many Requests`, `500 Internal Server Error`, …
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The chat messages: `system` first when set, then the `prompt` as the user's message or the
/// rendered `messages`.
fn build_messages(step: &PromptStep<'_>, scope: &JinjaValue) -> Result<Vec<Value>, StepError> {
    let mut messages = Vec::new();
    if let Some(system) = step.system {
        let system = render_with(system, scope).map_err(|e| StepError::template("system", &e))?;
        messages.push(message(ChatRole::System, system));
    }
    if let Some(prompt) = step.prompt {
        let prompt = render_with(prompt, scope).map_err(|e| StepError::template("prompt", &e))?;
        messages.push(message(ChatRole::User, prompt));
    }
    match step.messages {
        None => {}
        Some(Messages::List(list)) => {
            for (i, m) in list.iter().enumerate() {
                let content = render_with(&m.content, scope)
                    .map_err(|e| StepError::template(&format!("messages[{i}].content"), &e))?;
                messages.push(message(m.role, content));
            }
        }
        Some(Messages::Template(src)) => {
            let rendered =
                render_with(src, scope).map_err(|e| StepError::template("messages", &e))?;
            // Rendering is deterministic: a history of the wrong shape stays wrong.
            let history = parse_history(&rendered)
                .map_err(|m| StepError::permanent(format!("messages: {m}")))?;
            messages.extend(history);
        }
    }
    if messages.is_empty() {
        return Err(StepError::permanent(
            "messages: no message to send (the rendered history is empty)",
        ));
    }
    Ok(messages)
}

fn message(role: ChatRole, content: String) -> Value {
    json!({"role": role.as_str(), "content": content})
}

/// A rendered `messages` template: a JSON array of `{role, content}` objects. Other keys of
/// each object (ids, timestamps of a chat UI) are left out of the request.
fn parse_history(rendered: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(rendered.trim()).map_err(|e| {
        format!(
            "the template must render to a JSON array of {{role, content}} objects (try `{{{{ history | tojson }}}}`), but its output is not JSON ({e}): {}",
            snippet(rendered.as_bytes(), 100)
        )
    })?;
    let Value::Array(items) = value else {
        return Err(format!(
            "the template must render to a JSON array of {{role, content}} objects, got {}",
            crate::workflow::InputType::name_of(&value)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let role = item.get("role").and_then(Value::as_str).ok_or_else(|| {
                format!("[{i}].role: missing, or not text (expected system, user or assistant)")
            })?;
            let role = ChatRole::parse(role).ok_or_else(|| {
                format!("[{i}].role: unknown role {role:?} (expected system, user or assistant)")
            })?;
            let content = item
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("[{i}].content: missing, or not text"))?;
            Ok(message(role, content.to_owned()))
        })
        .collect()
}

/// The JSON body of the chat completion request.
fn request_body(step: &PromptStep<'_>, messages: Vec<Value>) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), step.model.into());
    body.insert("messages".into(), messages.into());
    if let Some(t) = step.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(m) = step.max_tokens {
        body.insert("max_tokens".into(), m.into());
    }
    if step.stream.is_some() {
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(schema) = step.json_schema {
        body.insert(
            "response_format".into(),
            json!({
                "type": "json_schema",
                "json_schema": {"name": schema_name(schema), "schema": schema, "strict": true},
            }),
        );
    } else if step.response_format == Some(ResponseFormat::Json) {
        body.insert("response_format".into(), json!({"type": "json_object"}));
    }
    Value::Object(body)
}

/// The `json_schema.name` OpenAI requires (`^[a-zA-Z0-9_-]{1,64}$`): the schema's `title`
/// when it fits, else `output`.
fn schema_name(schema: &Value) -> &str {
    schema
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .unwrap_or("output")
}

/// The step's output from the reply text: the text itself, or the JSON it holds when the
/// step asked for JSON (checked against `json_schema` when there is one).
fn output_of(
    content: &str,
    step: &PromptStep<'_>,
    validator: Option<&jsonschema::Validator>,
) -> Result<Value, StepError> {
    if validator.is_none() && step.response_format != Some(ResponseFormat::Json) {
        return Ok(Value::String(content.to_owned()));
    }
    let invalid = |message: String| StepError {
        code: Some(INVALID_MODEL_OUTPUT),
        ..StepError::retryable(message)
    };
    let value: Value = serde_json::from_str(strip_code_fence(content)).map_err(|e| {
        invalid(format!(
            "invalid model output: the reply is not JSON ({e}): {}",
            snippet(content.as_bytes(), 200)
        ))
    })?;
    if let Some(validator) = validator {
        if let Err(e) = validator.validate(&value) {
            return Err(invalid(format!(
                "invalid model output: the reply does not match json_schema{}",
                schema_problem(&e)
            )));
        }
    }
    Ok(value)
}

/// Small local models often wrap JSON in a Markdown code fence (```json … ```).
fn strip_code_fence(content: &str) -> &str {
    let t = content.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some(rest) = rest.strip_suffix("```") else {
        return t;
    };
    // Drop the info string (`json`) on the opening line.
    rest.split_once('\n').map_or(rest, |(_, body)| body).trim()
}

/// What came back from the provider.
enum Reply {
    /// A whole body: a completion, or an error.
    Whole(Vec<u8>),
    /// A `text/event-stream` of completion chunks, assembled.
    Streamed {
        content: String,
        usage: Option<Value>,
    },
}

/// Sends the request and reads the reply within [`TIMEOUT_MS`]: its status, its
/// `Retry-After` and its body, read from the SSE stream when the provider streams.
async fn send(
    req: awc::ClientRequest,
    body: String,
    url: &str,
    publish: Option<&Publish<'_>>,
) -> Result<(StatusCode, Option<Duration>, Reply), StepError> {
    use awc::error::{PayloadError, SendRequestError};
    let limit = Duration::from_millis(TIMEOUT_MS);
    let exchange = async {
        let mut resp = req.timeout(limit).send_body(body).await.map_err(|e| {
            let message = format!("request to {url} failed: {e}");
            match e {
                SendRequestError::Url(_) | SendRequestError::Http(_) => {
                    StepError::permanent(message)
                }
                _ => StepError::retryable(message),
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        if let (true, true, Some(publish)) = (status.is_success(), is_sse, publish) {
            let (content, usage) = read_stream(resp, url, publish).await?;
            return Ok((status, retry_after, Reply::Streamed { content, usage }));
        }
        let bytes = resp.body().limit(MAX_REPLY_BYTES).await.map_err(|e| {
            let message = format!("reading the response from {url} failed: {e}");
            match e {
                PayloadError::Overflow => StepError::permanent(message),
                _ => StepError::retryable(message),
            }
        })?;
        Ok((status, retry_after, Reply::Whole(bytes.to_vec())))
    };
    match actix_rt::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(StepError::retryable(format!(
            "request to {url} timed out after {TIMEOUT_MS} ms"
        ))),
    }
}

/// Reads an OpenAI-style SSE stream (`data: {chunk}` … `data: [DONE]`): the text of every
/// `choices[0].delta.content`, published as it comes, and the `usage` of the last chunk
/// (`stream_options.include_usage`). At most [`MAX_REPLY_BYTES`] are read: a stream that
/// never ends runs into that or the timeout.
async fn read_stream<S>(
    resp: S,
    url: &str,
    publish: &Publish<'_>,
) -> Result<(String, Option<Value>), StepError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    let mut read = 0usize;
    let capped = resp.map(move |chunk| {
        let chunk = chunk?;
        read += chunk.len();
        if read > MAX_REPLY_BYTES {
            return Err(awc::error::PayloadError::Overflow);
        }
        Ok(chunk)
    });
    let mut events = capped.eventsource();
    let mut content = String::new();
    let mut usage = None;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| {
            let message = format!("reading the stream from {url} failed: {e}");
            match e {
                eventsource_stream::EventStreamError::Transport(
                    awc::error::PayloadError::Overflow,
                ) => StepError::permanent(format!(
                    "the stream from {url} is over {} MiB",
                    MAX_REPLY_BYTES / (1024 * 1024)
                )),
                _ => StepError::retryable(message),
            }
        })?;
        let data = event.data.trim();
        if data == "[DONE]" {
            break;
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| {
            StepError::retryable(format!(
                "the stream sent an event that is not JSON: {}",
                snippet(data.as_bytes(), 200)
            ))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(StepError::retryable(format!(
                "the stream reported an error: {}",
                snippet(error.to_string().as_bytes(), 300)
            )));
        }
        if let Some(text) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            content.push_str(text);
            publish.text(text);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
    }
    Ok((content, usage))
}

/// A `Retry-After` value (seconds or an HTTP date), capped at [`MAX_RETRY_AFTER`].
fn retry_after(value: &str) -> Option<Duration> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::delivery::policy::parse_retry_after(value, now).map(|d| d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::definition::Message;

    fn step<'a>() -> PromptStep<'a> {
        PromptStep {
            provider: "local",
            model: "m",
            system: None,
            prompt: Some("hi"),
            messages: None,
            temperature: None,
            max_tokens: None,
            response_format: None,
            json_schema: None,
            stream: None,
        }
    }

    fn scope(v: Value) -> JinjaValue {
        crate::workflow::template::to_context(&v)
    }

    #[test]
    fn messages_list_is_rendered_after_the_system_message() {
        let list = Messages::List(vec![
            Message {
                role: ChatRole::Assistant,
                content: "Earlier: {{ a }}".into(),
            },
            Message {
                role: ChatRole::User,
                content: "Now {{ b }}".into(),
            },
        ]);
        let s = PromptStep {
            system: Some("Be {{ tone }}"),
            prompt: None,
            messages: Some(&list),
            ..step()
        };
        let got = build_messages(&s, &scope(json!({"a": 1, "b": "two", "tone": "brief"}))).unwrap();
        assert_eq!(
            got,
            vec![
                json!({"role": "system", "content": "Be brief"}),
                json!({"role": "assistant", "content": "Earlier: 1"}),
                json!({"role": "user", "content": "Now two"}),
            ]
        );
    }

    #[test]
    fn a_history_template_must_render_to_role_content_objects() {
        let t = Messages::Template("{{ history | tojson }}".into());
        let s = PromptStep {
            prompt: None,
            messages: Some(&t),
            ..step()
        };
        let history = json!([
            {"role": "user", "content": "hi", "id": 7},
            {"role": "assistant", "content": "hello"}
        ]);
        let got = build_messages(&s, &scope(json!({ "history": history }))).unwrap();
        assert_eq!(
            got,
            vec![
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": "hello"}),
            ]
        );
        for (bad, needle) in [
            (json!("not a list"), "got text"),
            (json!({"role": "user"}), "got object"),
            (
                json!([{"role": "robot", "content": "x"}]),
                "[0].role: unknown role",
            ),
            (json!([{"role": "user", "content": 3}]), "[0].content"),
            (json!([]), "no message to send"),
        ] {
            let e = build_messages(&s, &scope(json!({ "history": bad }))).unwrap_err();
            assert!(!e.retryable, "{e}");
            assert!(e.message.starts_with("messages: "), "{e}");
            assert!(e.message.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn response_format_shapes() {
        let body = request_body(&step(), vec![]);
        assert!(body.get("response_format").is_none(), "{body}");

        let s = PromptStep {
            response_format: Some(ResponseFormat::Json),
            ..step()
        };
        assert_eq!(
            request_body(&s, vec![])["response_format"],
            json!({"type": "json_object"})
        );

        let schema = json!({"title": "Person", "type": "object"});
        let s = PromptStep {
            json_schema: Some(&schema),
            ..step()
        };
        assert_eq!(
            request_body(&s, vec![])["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "Person", "schema": schema, "strict": true}})
        );
        assert_eq!(schema_name(&json!({"title": "a person"})), "output");
        assert_eq!(schema_name(&json!({})), "output");
    }

    #[test]
    fn json_replies_are_parsed_and_checked() {
        let s = PromptStep {
            response_format: Some(ResponseFormat::Json),
            ..step()
        };
        assert_eq!(output_of("{\"a\": 1}", &s, None).unwrap(), json!({"a": 1}));
        assert_eq!(
            output_of("```json\n{\"a\": 1}\n```", &s, None).unwrap(),
            json!({"a": 1})
        );
        let e = output_of("Sure! {\"a\": 1}", &s, None).unwrap_err();
        assert_eq!(e.error_code(), INVALID_MODEL_OUTPUT);
        assert!(e.retryable);

        let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]});
        let v = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(
            output_of("{\"age\": 3}", &step(), Some(&v)).unwrap(),
            json!({"age": 3})
        );
        let e = output_of("{\"age\": \"three\"}", &step(), Some(&v)).unwrap_err();
        assert_eq!(e.error_code(), INVALID_MODEL_OUTPUT);
        assert!(e.message.contains("/age"), "{e}");
        assert!(e.message.contains("does not match json_schema"), "{e}");

        // Plain text stays text.
        assert_eq!(
            output_of("{\"a\": 1}", &step(), None).unwrap(),
            json!("{\"a\": 1}")
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let soon = SystemTime::now() + Duration::from_secs(30);
        let got = retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            got > Duration::from_secs(25) && got <= Duration::from_secs(30),
            "{got:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    fn chunks(
        parts: &[&str],
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin
    {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from((*p).to_owned())))
            .collect();
        futures_util::stream::iter(parts)
    }

    #[actix_rt::test]
    async fn a_stream_is_assembled_and_its_deltas_published() {
        let sink = DeltaSink::default();
        sink.hub().run_started("req_1", 0);
        let mut sub = sink.hub().subscribe("req_1");
        let publish = Publish {
            sink: &sink,
            request_id: "req_1".into(),
            step: "ask".into(),
        };
        // An event split across reads, a keep-alive comment, usage in the last chunk.
        let stream = chunks(&[
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            ": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel",
            "lo\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" Ada\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        ]);
        let (content, usage) = read_stream(stream, "http://x", &publish).await.unwrap();
        assert_eq!(content, "Hello Ada");
        assert_eq!(usage.unwrap()["total_tokens"], 5);
        let mut got = Vec::new();
        for _ in 0..2 {
            let frame = sub.next().await.unwrap();
            let text = std::str::from_utf8(&frame.bytes).unwrap();
            let data: Value =
                serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["step"], "ask");
            got.push(data["text"].as_str().unwrap().to_owned());
        }
        assert_eq!(got, vec!["Hello", " Ada"]);

        let e = read_stream(chunks(&["data: <html>oops\n\n"]), "http://x", &publish)
            .await
            .unwrap_err();
        assert!(e.retryable && e.message.contains("not JSON"), "{e}");
        let e = read_stream(
            chunks(&["data: {\"error\":{\"message\":\"overloaded\"}}\n\n"]),
            "http://x",
            &publish,
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("overloaded"), "{e}");
    }

    #[test]
    fn stream_asks_for_usage() {
        let sink = DeltaSink::default();
        let s = PromptStep {
            stream: Some(Publish {
                sink: &sink,
                request_id: "r".into(),
                step: "s".into(),
            }),
            ..step()
        };
        let body = request_body(&s, vec![]);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert!(request_body(&step(), vec![]).get("stream").is_none());
    }
}
