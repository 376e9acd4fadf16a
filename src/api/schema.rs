//! The shapes of request and response bodies, for the OpenAPI document only. Handlers build
//! their JSON directly; `tests/it/ops.rs` checks real responses against these schemas so the
//! two cannot drift apart unnoticed.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

/// The one error envelope of every route (SPEC §2): `error` is an alias of `message`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "Invalid access.", "message": "Invalid access.", "error_code": "unauthorized"}))]
pub struct ErrorEnvelope {
    pub error: String,
    pub message: String,
    /// Stable machine-readable code, e.g. `unauthorized`, `validation_error`, `not_found`,
    /// `queue_full`, `concurrency_limit`.
    pub error_code: String,
    /// The field at fault, for validation errors (`inputs.name`, `async.callback_url`, …).
    pub field: Option<String>,
}

/// A sync run that ended in failure (HTTP 502): the envelope plus the run's id and state.
#[derive(Serialize, ToSchema)]
pub struct RunFailedEnvelope {
    pub error: String,
    pub message: String,
    /// `step_failed`, `timeout`, `cancelled`, …
    pub error_code: String,
    pub request_id: String,
    /// `failed` or `cancelled`.
    pub run_status: String,
    /// The step that failed, if one did.
    pub step: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `stopping` (with HTTP 503) while the daemon shuts down.
    pub status: String,
    pub version: Option<String>,
}

/// Async delivery: the final result is POSTed, signed, to `callback_url`.
#[derive(Serialize, ToSchema)]
pub struct AsyncOptions {
    /// Defaults to true when `callback_url` is given.
    pub enabled: Option<bool>,
    /// An absolute http(s) URL.
    pub callback_url: Option<String>,
}

/// `POST /v1/workflow/invoke` (Fetch Hive compatible).
#[derive(Serialize, ToSchema)]
pub struct InvokeBody {
    /// An existing deployment key.
    pub deployment: String,
    /// Defaults to `default`.
    pub variant: Option<String>,
    /// Start inputs, checked against the workflow's declared types before anything runs.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(rename = "async")]
    pub async_options: Option<AsyncOptions>,
    /// Flat: string keys, values string, number, boolean or null.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Opaque caller id, stored and filterable.
    pub user: Option<String>,
}

/// A sync run that completed.
#[derive(Serialize, ToSchema)]
pub struct InvokeCompleted {
    pub request_id: String,
    /// `completed`.
    pub run_status: String,
    /// The workflow's output: text or any JSON value.
    pub output: Value,
}

/// An async run, accepted and durable.
#[derive(Serialize, ToSchema)]
pub struct InvokeAccepted {
    pub request_id: String,
    /// `running`, or `queued` when every run slot is busy.
    pub run_status: String,
}

/// An inbound trigger: `{"inputs", "async", "metadata", "user"}`, or a plain object that is
/// itself the inputs (with `async` beside them).
#[derive(Serialize, ToSchema)]
pub struct TriggerBody {
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(rename = "async")]
    pub async_options: AsyncOptions,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub user: Option<String>,
}

/// One run in a list.
#[derive(Serialize, ToSchema)]
pub struct RunSummary {
    pub request_id: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub run_status: String,
    pub deployment: String,
    pub variant: String,
    pub version: i64,
    /// `api`, `webhook`, `cli` or `ui`.
    pub source: String,
    /// `direct` or `callback`.
    pub delivery: String,
    #[serde(rename = "async")]
    pub is_async: bool,
    pub callback_url: Option<String>,
    /// The event's delivery state (`not_started` before the run ends); null for direct runs.
    pub delivery_state: Option<String>,
    pub attempt_count: Option<i64>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One line of a run's step trace.
#[derive(Serialize, ToSchema)]
pub struct Step {
    pub id: String,
    pub index: i64,
    #[serde(rename = "type")]
    pub step_type: String,
    /// `completed`, `failed`, `skipped`, `waiting` or `interrupted`.
    pub status: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: i64,
    pub output: Value,
    pub error: Option<String>,
    pub attempts: i64,
    /// Token usage of a `prompt` step.
    pub usage: Value,
}

/// One HTTP POST of a run's event to its callback URL.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    pub attempt_id: String,
    /// 1-based over the event's whole life.
    pub attempt: i64,
    /// 1 + redeliveries.
    pub series: i64,
    pub url: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    /// `timeout`, `connect`, `dns`, `tls`, `too_large`, `redirect`, `http_status`, `denied`.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: String,
    /// The headers sent (never a secret).
    #[schema(value_type = Object)]
    pub request_headers: Value,
    #[schema(value_type = Option<Object>)]
    pub response_headers: Option<Value>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    pub request_id: String,
    pub attempts: Vec<Attempt>,
}

/// The async configuration of a callback run and its delivery.
#[derive(Serialize, ToSchema)]
pub struct AsyncDetail {
    pub enabled: bool,
    pub callback_url: String,
    /// `evt_…`: the `webhook-id`, stable across retries; null until the run ends.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// `not_started`, `pending`, `sending`, `retrying`, `delivered` or `failed`.
    pub delivery_state: String,
    pub attempt_count: Option<i64>,
    pub series: Option<i64>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// e.g. `gone`, `exhausted`, `denied`.
    pub failure_reason: Option<String>,
    pub attempts: Vec<Attempt>,
}

/// Everything about one run.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    pub request_id: String,
    pub run_status: String,
    pub deployment: String,
    pub variant: String,
    pub version: i64,
    pub source: String,
    pub delivery: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user: Option<String>,
    pub output: Value,
    /// `{"message", "error_code", "step"}` for failed and cancelled runs.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub steps: Vec<Step>,
    /// Only for callback runs.
    #[serde(rename = "async")]
    pub async_detail: Option<AsyncDetail>,
}

/// The legacy shape: the run without its async details, under `workflow_run`.
#[derive(Serialize, ToSchema)]
pub struct LegacyRun {
    pub workflow_run: RunDetail,
}

/// The Fetch Hive SDK's request shape.
#[derive(Serialize, ToSchema)]
pub struct PublicRequest {
    pub id: String,
    pub request_id: String,
    pub status: String,
    /// Always `workflow`.
    pub request_type: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// deployment, variant, version, source, duration_ms.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The invoke's `metadata`.
    #[schema(value_type = Object)]
    pub user_metadata: Value,
    /// `{"run_status", "output", "error"}`.
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(Serialize, ToSchema)]
pub struct CancelReply {
    pub request_id: String,
    /// `cancelled`.
    pub run_status: String,
}

#[derive(Serialize, ToSchema)]
pub struct RedeliverReply {
    pub request_id: String,
    pub event_id: String,
    pub series: i64,
    /// `pending`.
    pub delivery_state: String,
}

/// The answer to a waiting approval step: `choice` (one of the step's choices) or `text`.
#[derive(Serialize, ToSchema)]
pub struct RespondBody {
    pub choice: Option<Value>,
    pub text: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RespondReply {
    pub request_id: String,
    pub step: String,
    pub step_status: String,
    /// `{"text"}` or `{"choice": {"value", "label"}}`.
    pub output: Value,
    pub run_status: String,
}

/// `POST /v1/runs/purge`.
#[derive(Serialize, ToSchema)]
pub struct PurgeBody {
    /// Finished runs that ended before this time go: RFC 3339 or Unix milliseconds.
    #[schema(value_type = String, example = "2026-01-01T00:00:00Z")]
    pub before: Value,
}

#[derive(Serialize, ToSchema)]
pub struct PurgeReply {
    /// Runs deleted, with their steps, events and attempts.
    pub purged: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Variant {
    pub name: String,
    #[schema(value_type = Object)]
    pub vars: Value,
}

#[derive(Serialize, ToSchema)]
pub struct StepSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub step_type: String,
}

/// A deployment; `signing_secret` only for admin keys.
#[derive(Serialize, ToSchema)]
pub struct Deployment {
    pub key: String,
    /// `dep_…`
    pub id: String,
    pub description: Option<String>,
    /// The current version.
    pub version: i64,
    pub variants: Vec<Variant>,
    /// The start inputs: `{"name", "type", "required", …}`.
    #[schema(value_type = Vec<Object>)]
    pub inputs: Vec<Value>,
    pub steps: Vec<StepSummary>,
    /// True when the workflow can only be invoked asynchronously.
    pub async_only: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `whsec_…`: signs callbacks and authenticates inbound triggers (admin keys only).
    pub signing_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Version {
    pub version: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A deployment with its version history and its current definition.
#[derive(Serialize, ToSchema)]
pub struct DeploymentDetail {
    #[schema(inline)]
    #[serde(flatten)]
    pub deployment: Deployment,
    pub versions: Vec<Version>,
    /// The current definition (SPEC §7).
    #[schema(value_type = Object)]
    pub definition: Value,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
}

/// A workflow definition (SPEC §7) as JSON; TOML with `Content-Type: application/toml`.
#[derive(Serialize, ToSchema)]
pub struct Definition {
    pub key: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub inputs: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub steps: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub variants: Option<Value>,
    pub timeout_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentDeleted {
    pub key: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SecretRotated {
    pub key: String,
    pub signing_secret: String,
    /// The previous secret keeps signing and authenticating until then.
    #[schema(format = DateTime)]
    pub previous_secret_valid_until: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Snippet {
    pub deployment: String,
    pub variant: String,
    #[serde(rename = "async")]
    pub is_async: bool,
    /// The ready cURL command.
    pub curl: String,
    /// For async snippets.
    pub callback_url: Option<String>,
    /// For async snippets: the secret to verify the callback with.
    pub signing_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreateBody {
    /// 1 to 200 characters.
    pub name: String,
    /// `invoke` (default) or `admin`.
    pub role: Option<String>,
}

/// An API key, masked.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    pub name: String,
    /// `invoke` or `admin`.
    pub role: String,
    pub masked_key: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub revoked: bool,
}

/// A new key: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    #[schema(inline)]
    #[serde(flatten)]
    pub record: ApiKey,
    /// `hvk_…`
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRotated {
    pub id: String,
    /// The new secret, shown this once.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRevoked {
    pub id: String,
    pub revoked: bool,
}

// ---------------------------------------------------------------------------------------
// Error responses shared by many routes, all in the envelope.
// ---------------------------------------------------------------------------------------

/// Any valid key (invoke or admin) is needed.
#[derive(IntoResponses)]
pub enum NeedsKey {
    /// No key, or an unknown or revoked one: `Invalid access.`
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
}

/// An admin key is needed.
#[derive(IntoResponses)]
pub enum NeedsAdmin {
    /// No key, or an unknown or revoked one: `Invalid access.`
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// An `invoke` key: the route needs an admin key.
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
}

/// A body that could not be read as asked.
#[derive(IntoResponses)]
pub enum BadBody {
    /// Malformed JSON, or not an object.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// Larger than `limits.invoke_body`.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// Not `application/json` (or `application/toml` where TOML is accepted).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorEnvelope),
    /// A field is invalid; `field` names it.
    #[response(status = 422)]
    Validation(ErrorEnvelope),
}
