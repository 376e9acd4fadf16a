//! The request bodies as the OpenAPI document describes them. Handlers read bodies by hand
//! (`serde_json::Value`), because each refusal must name its field and say what is wanted in
//! the contract's words; these types state the same rules as a schema (required fields,
//! `minLength`, enums, patterns), and the schemathesis test (`tests/it/schemathesis.rs`) fails
//! when the two disagree in either direction.

// Described, never built.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/workflow/invoke` (Fetch Hive compatible).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"deployment": "hello", "inputs": {"name": "Ada"}, "metadata": {"order": 7}}))]
pub struct InvokeBody {
    /// An existing deployment key.
    #[schema(min_length = 1, pattern = r"\S")]
    pub deployment: String,
    /// Defaults to `default`.
    pub variant: Option<String>,
    /// Start inputs, checked against the workflow's declared types before anything runs.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(rename = "async")]
    #[schema(value_type = Option<super::params::AsyncOptions>)]
    pub async_options: Option<Value>,
    #[schema(value_type = Option<super::params::Metadata>)]
    pub metadata: Option<Value>,
    /// Opaque caller id, stored and filterable.
    pub user: Option<String>,
    /// Sync only: answer `text/event-stream` with the run's live events (SPEC §11) instead
    /// of one JSON reply. Refused with `async` or an `Idempotency-Key`.
    pub stream: Option<bool>,
    /// 0–9, default 5: queued runs start highest priority first, then oldest first.
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
}

/// An inbound trigger: `{"inputs", "async", "metadata", "user"}`, or a plain object that is
/// itself the inputs (with `async` beside them).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"inputs": {"name": "Ada"}, "async": {"callback_url": "https://your-app.example/webhooks/hivelet"}}))]
pub struct TriggerBody {
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(rename = "async")]
    #[schema(value_type = super::params::AsyncOn)]
    pub async_options: Value,
    #[schema(value_type = Option<super::params::Metadata>)]
    pub metadata: Option<Value>,
    pub user: Option<String>,
}

/// The answer to a waiting approval step: `choice` (one of the step's choices) or `text`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"choice": "yes"}))]
pub struct RespondBody {
    pub choice: Option<Value>,
    pub text: Option<String>,
}

/// `POST /v1/runs/purge`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"before": "2026-01-01T00:00:00Z"}))]
pub struct PurgeBody {
    /// Finished runs that ended before this time go: RFC 3339 or Unix milliseconds.
    #[schema(value_type = super::params::Timestamp, example = "2026-01-01T00:00:00Z")]
    pub before: Value,
}

/// A start input of a definition.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InputKind,
    pub required: Option<bool>,
    pub description: Option<String>,
    /// Used when the input is not given; of the input's type.
    pub default: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Text,
    Number,
    Boolean,
    Array,
    Object,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepType {
    Template,
    Http,
    Prompt,
    Command,
    Delay,
    Approval,
    Branch,
    Loop,
    /// Starts a child run: `deployment`, optional `variant` and `inputs`.
    Workflow,
}

/// One step; its other fields depend on its `type` (SPEC §7, §10: `branch` and `loop` hold
/// nested `steps` of the same shape; `workflow` starts a child run of `deployment`).
#[derive(Deserialize, ToSchema)]
pub struct StepDoc {
    /// Unique in the workflow; later steps refer to its output by it.
    #[schema(min_length = 1)]
    pub id: String,
    #[serde(rename = "type")]
    pub step_type: StepType,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantDoc {
    #[schema(value_type = Option<Object>)]
    pub vars: Option<Value>,
}

/// A workflow definition (SPEC §7) as JSON; TOML with `Content-Type: application/toml`.
/// Its shape is stated here; whether it is a workflow (templates compile, steps refer to
/// steps before them, each step has the fields of its type) is checked on deploy (422).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "Greets", "inputs": [{"name": "name", "type": "text", "required": true}], "steps": [{"id": "greet", "type": "template", "template": "Hello, {{ name }}."}]}))]
pub struct Definition {
    /// The URL's deployment key, if given.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub key: Option<String>,
    pub description: Option<String>,
    pub inputs: Option<Vec<InputDef>>,
    #[schema(min_items = 1)]
    pub steps: Vec<StepDoc>,
    /// `{"template": "…"}`; the last step's output by default.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub variants: Option<std::collections::HashMap<String, VariantDoc>>,
    /// 1 to 2^64 - 1.
    #[schema(schema_with = timeout_ms_schema)]
    pub timeout_ms: Option<u64>,
    /// Only asynchronous invokes (with a callback).
    pub async_only: Option<bool>,
}

/// The role of a new key.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Invoke,
    Admin,
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "my app", "role": "invoke"}))]
pub struct KeyCreateBody {
    /// 1 to 200 characters, not only spaces.
    // `\x1c-\x1f` count as spaces to Python's `\s` but not to Rust's `trim`.
    #[schema(min_length = 1, max_length = 200, pattern = r"[\S\x1c-\x1f]")]
    pub name: String,
    /// `invoke` (default) or `admin`.
    pub role: Option<KeyRole>,
}

/// `POST /v1/keys/{id}/rotate`: an optional body.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"expires_in": 3600}))]
pub struct KeyRotateBody {
    /// Seconds the old secret keeps working beside the new one (0 to 604800, 7 days);
    /// absent or 0: it stops working at once. Like Stripe's key roll.
    #[schema(minimum = 0, maximum = 604800)]
    pub expires_in: Option<u32>,
}

/// `status` of `GET /v1/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatusFilter {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Running, paused at an approval step that has no answer yet.
    Waiting,
}

/// `delivery_state` of `GET /v1/runs`: the state of the run's last event. `paused`: it is
/// held behind the run's earlier events (circuit-breaker pauses are not stored).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStateParam {
    NotStarted,
    Pending,
    Retrying,
    Paused,
    Delivered,
    Failed,
}

/// `window` of `GET /v1/stats`.
#[derive(Deserialize, ToSchema)]
pub enum StatsWindow {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

/// `delivery` of `GET /v1/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFilter {
    Callback,
    Direct,
}

/// `source` of `GET /v1/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFilter {
    Api,
    Webhook,
    Cli,
    Ui,
    /// Child runs started by `workflow` steps.
    Workflow,
    /// Runs started by a schedule.
    Schedule,
}

/// `timeout_ms` as the definition parser reads it: any `u64` but 0. Stated by hand because
/// utoipa describes a `u64` as `int64`, which would make the values above `i64::MAX` look
/// invalid.
fn timeout_ms_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Integer, Type::Null]))
        .minimum(Some(1))
        .maximum(Some(u64::MAX as f64))
        .description(Some("The whole run's time limit, in milliseconds."))
        .build()
}

/// `POST /v1/schedules`: exactly one of `cron` and `every`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"deployment": "hello", "inputs": {"name": "Ada"}, "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"}))]
pub struct ScheduleBody {
    /// An existing deployment key.
    pub deployment: String,
    /// Defaults to `default`.
    pub variant: Option<String>,
    /// Start inputs, checked against the workflow's declared types now and at each fire.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[schema(value_type = Option<super::params::Metadata>)]
    pub metadata: Option<Value>,
    pub user: Option<String>,
    /// 5 fields: minute hour day-of-month month day-of-week (`"0 9 * * MON-FRI"`).
    pub cron: Option<String>,
    /// A duration of at least 1 s (`"15m"`, `"1h30m"`), on a grid from the creation time.
    pub every: Option<String>,
    /// An IANA zone name; defaults to the machine's.
    pub timezone: Option<String>,
    /// Where each run's result is POSTed (signed); none: no delivery.
    #[schema(value_type = Option<super::params::CallbackUrl>)]
    pub callback_url: Option<String>,
    /// Defaults to true; false: paused.
    pub active: Option<bool>,
    /// Fires missed while hivelet was down or the machine slept: `skip`, `once` (default:
    /// one run for the latest) or `all` (one run each, the latest 100).
    pub catch_up: Option<CatchUpMode>,
}

/// `PATCH /v1/schedules/{id}`: any fields of a schedule; those given replace the stored ones.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"active": false}))]
pub struct SchedulePatch {
    pub deployment: Option<String>,
    pub variant: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[schema(value_type = Option<super::params::Metadata>)]
    pub metadata: Option<Value>,
    pub user: Option<String>,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Option<super::params::CallbackUrl>)]
    pub callback_url: Option<String>,
    pub active: Option<bool>,
    pub catch_up: Option<CatchUpMode>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpMode {
    Skip,
    Once,
    All,
}
