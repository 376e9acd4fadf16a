//! `POST /v1/workflow/invoke`, Fetch Hive compatible: validate everything before anything is
//! stored, then either wait for the run (sync) or answer 202 once the run is durable (async).
//! A repeat with the same `Idempotency-Key` gets the first answer back.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::admit::{admit, admit_reply, prepare};
use super::extract::{Authed, JsonBody};
use super::invoke_body::{parse_invoke, InvokeRequest};
use super::routing::endpoint;
use super::state::AppState;
use crate::error::ApiError;
use crate::ids;
use crate::store::{RunSource, SaveIdempotent};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/workflow/invoke").post(invoke));
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
    request_body = super::bodies::InvokeBody,
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[\t -~]*[!-~][\t -~]*$",
        description = "A repeat with the same key and API key within 24 h returns the first response (`Idempotent-Replayed: true`) and starts nothing; at most 255 characters")),
    responses(
        (status = 200, description = "A sync run completed; with `\"stream\": true`, the run's live events as `text/event-stream` (see `GET /v1/runs/{id}/stream`)", content(
            (super::views::InvokeCompleted = "application/json"),
            (super::stream::StreamEvent = "text/event-stream"),
        )),
        (status = 202, description = "An async run was accepted (running or queued)", body = super::views::InvokeAccepted),
        (status = 404, description = "`Deployment not found.` or `Variant not found.`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "A request with this Idempotency-Key is still in progress", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`concurrency_limit` (sync, every slot busy) or `queue_full` (with `Retry-After`)", body = crate::error::ErrorEnvelope),
        (status = 502, description = "A sync run failed or was cancelled", body = crate::error::RunFailedEnvelope),
        (status = 503, description = "The daemon is stopping, or the database cannot take writes", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
        super::responses::BadBody,
    ))]
async fn invoke(
    state: web::Data<AppState>,
    http: HttpRequest,
    Authed(caller): Authed,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(&http)?;
    let req = parse_invoke(&body.0)?;
    let streamed = super::stream::stream_flag(&body.0)?;
    if streamed {
        check_streamable(&req, idempotency.as_deref())?;
    }
    let run = prepare(
        &state,
        req,
        invoke_source(&http),
        Some(caller.key_id.clone()),
    )?;
    if streamed {
        return super::stream::invoke_streamed(&state, run).await;
    }
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
    let request_id = reply.request_id().to_string();
    let saved = json!({"status": reply.status.as_u16(), "body": reply.answer}).to_string();
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

/// `"stream": true` is for sync calls, and answers events, not a reply to keep for repeats.
fn check_streamable(req: &InvokeRequest, idempotency: Option<&str>) -> Result<(), ApiError> {
    if req.callback_url.is_some() {
        return Err(ApiError::field(
            "stream",
            "stream: true needs a sync invoke; an async run reports to its callback_url \
             (watch it with GET /v1/runs/{request_id}/stream)",
        ));
    }
    if idempotency.is_some() {
        return Err(ApiError::field(
            "stream",
            "stream: true cannot be combined with an Idempotency-Key",
        ));
    }
    Ok(())
}

/// `cli` or `ui` when our own client says so (`X-Hivelet-Source`), else `api`.
pub(super) fn invoke_source(req: &HttpRequest) -> RunSource {
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
