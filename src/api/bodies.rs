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

/// Async delivery: the final result is POSTed, signed, to `callback_url`.
#[derive(Deserialize, ToSchema)]
pub struct AsyncOptions {
    /// Defaults to true when `callback_url` is given; true needs a `callback_url`.
    pub enabled: Option<bool>,
    /// An absolute http(s) URL.
    pub callback_url: Option<String>,
}

/// `POST /v1/workflow/invoke` (Fetch Hive compatible).
#[derive(Deserialize, ToSchema)]
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
    pub async_options: Option<AsyncOptions>,
    /// Flat: non-empty keys; values string, number, boolean or null (`openapi.rs` adds
    /// these rules, which utoipa's attributes cannot state).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Opaque caller id, stored and filterable.
    pub user: Option<String>,
}

/// An inbound trigger: `{"inputs", "async", "metadata", "user"}`, or a plain object that is
/// itself the inputs (with `async` beside them).
#[derive(Deserialize, ToSchema)]
pub struct TriggerBody {
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(rename = "async")]
    pub async_options: AsyncOptions,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub user: Option<String>,
}

/// The answer to a waiting approval step: `choice` (one of the step's choices) or `text`.
#[derive(Deserialize, ToSchema)]
pub struct RespondBody {
    pub choice: Option<Value>,
    pub text: Option<String>,
}

/// `POST /v1/runs/purge`.
#[derive(Deserialize, ToSchema)]
pub struct PurgeBody {
    /// Finished runs that ended before this time go: RFC 3339 or Unix milliseconds.
    #[schema(value_type = Object, example = "2026-01-01T00:00:00Z")]
    pub before: Value,
}

/// A workflow definition (SPEC §7) as JSON; TOML with `Content-Type: application/toml`.
#[derive(Deserialize, ToSchema)]
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

/// The role of a new key.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Invoke,
    Admin,
}

#[derive(Deserialize, ToSchema)]
pub struct KeyCreateBody {
    /// 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// `invoke` (default) or `admin`.
    pub role: Option<KeyRole>,
}

/// `POST /v1/keys/{id}/rotate`: an optional body.
#[derive(Deserialize, ToSchema)]
pub struct KeyRotateBody {
    /// Seconds the old secret keeps working beside the new one (0 to 604800, 7 days);
    /// absent or 0: it stops working at once. Like Stripe's key roll.
    #[schema(minimum = 0, maximum = 604800)]
    pub expires_in: Option<u32>,
}
