//! `POST /v1/workflow/invoke`, Fetch Hive compatible: validate everything before anything is
//! stored, then either wait for the run (sync) or answer 202 once the run is durable (async).

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use super::extract::{Authed, JsonBody};
use super::{endpoint, AppState};
use crate::actors::{Admit, Mode, PreparedRun};
use crate::error::ApiError;
use crate::ids;
use crate::store::{RunSource, RunStatus, SaveIdempotent};
use crate::workflow::inputs::check_inputs;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/workflow/invoke").post(invoke));
}

/// The invoke body after shape checks (SPEC §2).
#[derive(Debug, Default, PartialEq)]
pub struct InvokeRequest {
    pub deployment: String,
    pub variant: String,
    pub inputs: Map<String, Value>,
    /// Set when async delivery was asked for.
    pub callback_url: Option<String>,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
}

/// Checks the body's shape and the rules that need no deployment.
pub fn parse_invoke(body: &Value) -> Result<InvokeRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object.".into()))?;
    let missing = || {
        ApiError::field(
            "deployment",
            "Missing required field: deployment or variant",
        )
    };
    let deployment = match obj.get("deployment") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None => return Err(missing()),
        Some(_) => return Err(ApiError::field("deployment", "deployment must be a string")),
    };
    let variant = match obj.get("variant") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) if s.is_empty() => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("variant", "variant must be a string")),
    };
    let inputs = match obj.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::field("inputs", "inputs must be an object")),
    };
    let callback_url = parse_async(obj.get("async"))?;
    let metadata = parse_metadata(obj.get("metadata"))?;
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::field("user", "user must be a string")),
    };
    Ok(InvokeRequest {
        deployment,
        variant,
        inputs,
        callback_url,
        metadata,
        user,
    })
}

/// The `async` object: `Some(url)` when async delivery is on. A `callback_url` without
/// `enabled` counts as enabled, as in Fetch Hive's trigger examples.
pub fn parse_async(value: Option<&Value>) -> Result<Option<String>, ApiError> {
    let obj =
        match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(obj)) => obj,
            Some(_) => return Err(ApiError::field(
                "async",
                "async must be an object like {\"enabled\": true, \"callback_url\": \"https://…\"}",
            )),
        };
    let url = match obj.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            return Err(ApiError::field(
                "async.callback_url",
                "callback_url must be a valid URL",
            ))
        }
    };
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => url.is_some(),
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::field(
                "async.enabled",
                "async.enabled must be true or false",
            ))
        }
    };
    if !enabled {
        return Ok(None);
    }
    let url = url.ok_or_else(|| {
        ApiError::field(
            "async.callback_url",
            "callback_url is required when async is enabled",
        )
    })?;
    if !is_valid_callback_url(&url) {
        return Err(ApiError::field(
            "async.callback_url",
            "callback_url must be a valid URL",
        ));
    }
    Ok(Some(url))
}

/// An absolute http(s) URL with a host.
pub fn is_valid_callback_url(text: &str) -> bool {
    url::Url::parse(text)
        .map(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .unwrap_or(false)
}

/// Metadata is flat: non-empty string keys, scalar values.
pub fn parse_metadata(value: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(ApiError::field(
                "metadata",
                "metadata must be an object of scalar values",
            ))
        }
    };
    for (key, value) in obj {
        if key.is_empty() {
            return Err(ApiError::field(
                "metadata",
                "metadata keys must be non-empty strings",
            ));
        }
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            return Err(ApiError::field(
                format!("metadata.{key}"),
                format!("metadata.{key} must be a string, number, boolean or null (metadata is flat; nested values are not allowed)"),
            ));
        }
    }
    Ok(obj.clone())
}

/// Finds the deployment and variant and checks the inputs: everything that needs the
/// deployment, still before anything is stored.
pub fn prepare(
    state: &AppState,
    req: InvokeRequest,
    source: RunSource,
    api_key_id: Option<String>,
) -> Result<PreparedRun, ApiError> {
    let deployment = state
        .deployments
        .get(&req.deployment)
        .ok_or_else(|| ApiError::NotFound("Deployment not found.".into()))?;
    if deployment.vars(&req.variant).is_none() {
        return Err(ApiError::NotFound("Variant not found.".into()));
    }
    let inputs = check_inputs(&deployment.definition, &req.inputs)
        .map_err(|e| ApiError::field(e.field, e.message))?;
    if req.callback_url.is_none() && deployment.definition.requires_async() {
        return Err(ApiError::field(
            "async",
            "This workflow must be invoked asynchronously (it is async_only or has an approval step): send \"async\": {\"enabled\": true, \"callback_url\": \"…\"}",
        ));
    }
    Ok(PreparedRun {
        deployment,
        variant: req.variant,
        inputs,
        metadata: req.metadata,
        user: req.user,
        callback_url: req.callback_url,
        source,
        api_key_id,
    })
}

/// What an invoke answers: status and JSON body (kept for idempotent replays).
pub struct InvokeReply {
    pub status: StatusCode,
    pub body: Value,
}

impl InvokeReply {
    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body)
    }
}

/// Admits a prepared run and shapes the answer: 202 for async, the output for sync.
pub async fn admit(state: &AppState, run: PreparedRun) -> Result<HttpResponse, ApiError> {
    admit_reply(state, run)
        .await
        .map(InvokeReply::into_response)
}

async fn admit_reply(state: &AppState, run: PreparedRun) -> Result<InvokeReply, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "hivelet is shutting down; try again shortly.".into(),
        ));
    }
    let mode = if run.callback_url.is_some() {
        Mode::Async
    } else {
        Mode::Sync
    };
    let admitted = state
        .invoker
        .send(Admit { run, mode })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))??;
    let Some(completion) = admitted.completion else {
        return Ok(InvokeReply {
            status: StatusCode::ACCEPTED,
            body: json!({"request_id": admitted.request_id, "run_status": admitted.status.as_str()}),
        });
    };
    let outcome = completion
        .await
        .map_err(|_| ApiError::internal("the run ended without reporting its outcome"))?;
    match (outcome.status, outcome.failure) {
        (RunStatus::Completed, _) => Ok(InvokeReply {
            status: StatusCode::OK,
            body: json!({
                "request_id": outcome.request_id,
                "run_status": "completed",
                "output": outcome.output,
            }),
        }),
        (status, failure) => {
            let failure = failure.unwrap_or_else(|| crate::workflow::RunFailure {
                message: "The run was cancelled.".into(),
                error_code: "cancelled".into(),
                step: None,
            });
            let err = ApiError::RunFailed {
                request_id: outcome.request_id,
                message: failure.message,
                error_code: failure.error_code,
                step: failure.step,
                run_status: status.as_str(),
            };
            Ok(InvokeReply {
                status: err.status_code(),
                body: err.body(),
            })
        }
    }
}

/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The `Idempotency-Key` header, at most 255 characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::field("Idempotency-Key", "Idempotency-Key must be printable ASCII"))?
        .trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::field(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// Releases an in-flight idempotency claim however the request ends.
struct Claim<'a> {
    state: &'a AppState,
    key: (String, String),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.state
            .idempotency_in_flight
            .lock()
            .expect("idempotency set")
            .remove(&self.key);
    }
}

/// Starts a run of a deployment (Fetch Hive compatible). Sync: waits and answers the output.
/// Async (`async.enabled` with a `callback_url`): answers 202 once the run is durable and
/// POSTs the signed result to the callback URL later.
#[utoipa::path(post, path = "/v1/workflow/invoke", operation_id = "invoke_workflow", tag = "invoke",
    request_body = super::schema::InvokeBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A repeat with the same key and API key within 24 h returns the first response (`Idempotent-Replayed: true`) and starts nothing; at most 255 characters")),
    responses(
        (status = 200, description = "A sync run completed", body = super::schema::InvokeCompleted),
        (status = 202, description = "An async run was accepted (running or queued)", body = super::schema::InvokeAccepted),
        (status = 404, description = "`Deployment not found.` or `Variant not found.`", body = super::schema::ErrorEnvelope),
        (status = 409, description = "A request with this Idempotency-Key is still in progress", body = super::schema::ErrorEnvelope),
        (status = 429, description = "`concurrency_limit` (sync, every slot busy) or `queue_full` (with `Retry-After`)", body = super::schema::ErrorEnvelope),
        (status = 502, description = "A sync run failed or was cancelled", body = super::schema::RunFailedEnvelope),
        (status = 503, description = "The daemon is stopping, or the database cannot take writes", body = super::schema::ErrorEnvelope),
        super::schema::NeedsKey,
        super::schema::BadBody,
    ))]
async fn invoke(
    state: web::Data<AppState>,
    http: HttpRequest,
    Authed(caller): Authed,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(&http)?;
    let req = parse_invoke(&body.0)?;
    let run = prepare(
        &state,
        req,
        invoke_source(&http),
        Some(caller.key_id.clone()),
    )?;
    let Some(key) = idempotency else {
        return admit(&state, run).await;
    };
    // A repeat within 24 h gets the first answer and starts nothing.
    let since = ids::now_ms() - IDEMPOTENCY_WINDOW_MS;
    let saved = state
        .store
        .find_idempotent(caller.key_id.clone(), key.clone(), since)
        .await?;
    if let Some(saved) = saved {
        return Ok(replay(&saved));
    }
    let claim_key = (caller.key_id.clone(), key.clone());
    if !state
        .idempotency_in_flight
        .lock()
        .expect("idempotency set")
        .insert(claim_key.clone())
    {
        return Err(ApiError::Conflict(
            "A request with this Idempotency-Key is still in progress.".into(),
        ));
    }
    let _claim = Claim {
        state: &state,
        key: claim_key,
    };
    let reply = admit_reply(&state, run).await?;
    let request_id = reply.body["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let saved = json!({"status": reply.status.as_u16(), "body": reply.body}).to_string();
    state
        .store
        .write(SaveIdempotent {
            api_key_id: caller.key_id,
            idempotency_key: key,
            request_id,
            response: saved,
            at: ids::now_ms(),
        })
        .await?;
    Ok(reply.into_response())
}

/// `cli` or `ui` when our own client says so (`X-Hivelet-Source`), else `api`.
fn invoke_source(req: &HttpRequest) -> RunSource {
    match req
        .headers()
        .get("x-hivelet-source")
        .and_then(|v| v.to_str().ok())
    {
        Some("cli") => RunSource::Cli,
        Some("ui") => RunSource::Ui,
        _ => RunSource::Api,
    }
}

/// The stored first response, marked as a replay.
fn replay(saved: &str) -> HttpResponse {
    let saved: Value = serde_json::from_str(saved).unwrap_or(Value::Null);
    let status = saved["status"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .insert_header(("Idempotent-Replayed", "true"))
        .json(&saved["body"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: Value) -> Value {
        parse_invoke(&body).unwrap_err().body()
    }

    #[test]
    fn deployment_is_required_with_the_fetch_hive_message() {
        let body = err(json!({"inputs": {}}));
        assert_eq!(
            body["message"],
            "Missing required field: deployment or variant"
        );
        assert_eq!(body["error_code"], "validation_error");
    }

    #[test]
    fn async_rules_follow_the_contract() {
        assert_eq!(
            err(json!({"deployment": "d", "async": {"enabled": true}}))["message"],
            "callback_url is required when async is enabled"
        );
        assert_eq!(
            err(
                json!({"deployment": "d", "async": {"enabled": true, "callback_url": "not a url"}})
            )["message"],
            "callback_url must be a valid URL"
        );
        assert_eq!(
            err(
                json!({"deployment": "d", "async": {"enabled": true, "callback_url": "ftp://x/y"}})
            )["message"],
            "callback_url must be a valid URL"
        );
        let implied = parse_invoke(
            &json!({"deployment": "d", "async": {"callback_url": "http://127.0.0.1:9/cb"}}),
        )
        .unwrap();
        assert_eq!(
            implied.callback_url.as_deref(),
            Some("http://127.0.0.1:9/cb")
        );
        let off = parse_invoke(
            &json!({"deployment": "d", "async": {"enabled": false, "callback_url": "http://x/cb"}}),
        )
        .unwrap();
        assert_eq!(off.callback_url, None);
    }

    #[test]
    fn metadata_must_be_flat_and_names_the_key() {
        let body = err(json!({"deployment": "d", "metadata": {"order": {"id": 1}}}));
        assert_eq!(body["field"], "metadata.order");
        assert!(body["message"].as_str().unwrap().contains("metadata.order"));
        let ok = parse_invoke(
            &json!({"deployment": "d", "metadata": {"a": 1, "b": "x", "c": null, "d": true}}),
        )
        .unwrap();
        assert_eq!(ok.metadata.len(), 4);
    }

    #[test]
    fn variant_defaults_to_default() {
        assert_eq!(
            parse_invoke(&json!({"deployment": "d"})).unwrap().variant,
            "default"
        );
    }
}
