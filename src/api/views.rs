//! The response bodies: each type here is what a handler serializes and what `/openapi.json`
//! describes (through `ToSchema`), so the document cannot drift from the wire. Field order is
//! the order on the wire (`serde_json` keeps it); a field is left out only where the contract
//! leaves it out (`skip_serializing_if`), everywhere else an absent value is `null`.
//!
//! Each view is built from store records or live deployments by a `from_*` constructor here,
//! so the handlers only choose which view to answer.

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::deployments::LiveDeployment;
use crate::ids;
use crate::store::events::EventRecord;
use crate::store::runs::RunListItem;
use crate::store::VersionInfo;
use crate::store::{AttemptRow, KeyRecord, RunRecord, StepRow};

/// Stored JSON text as a value; `null` when absent or unreadable.
fn json_or_null(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// Stored JSON object text as a value; `{}` when unreadable.
fn parse_obj(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

/// One HTTP POST of a run's event to its callback URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub attempt_id: String,
    /// The event this attempt sent (a run with lifecycle events has several).
    pub event_id: String,
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

impl Attempt {
    pub fn from_row(a: &AttemptRow) -> Attempt {
        Attempt {
            attempt_id: a.attempt_id.clone(),
            event_id: a.event_id.clone(),
            attempt: a.attempt_number,
            series: a.series,
            url: a.url.clone(),
            started_at: ids::rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error_kind: a.error_kind.map(|kind| kind.to_string()),
            error: a.error_message.clone(),
            outcome: a.outcome.to_string(),
            request_headers: parse_obj(&a.request_headers_json),
            response_headers: a.response_headers_json.as_deref().map(parse_obj),
            response_body: a.response_body.clone(),
            next_attempt_at: a.next_attempt_at.map(ids::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub request_id: String,
    pub attempts: Vec<Attempt>,
}

/// One run in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    pub request_id: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub run_status: String,
    pub deployment: String,
    pub variant: String,
    pub version: i64,
    /// `api`, `webhook`, `cli`, `ui` or `workflow` (a child run).
    pub source: String,
    /// The run whose `workflow` step started this one; null for other runs.
    pub parent_request_id: Option<String>,
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
    /// The summed token usage of its prompt steps (`prompt_tokens`, `completion_tokens`,
    /// `total_tokens`, and `cost_usd` when a priced model ran); null until the run ends, and
    /// when no prompt step ran.
    #[schema(value_type = Option<Object>)]
    pub usage: Value,
    /// The run this one reruns; null otherwise.
    pub rerun_of: Option<String>,
    /// The `sch_…` schedule that started the run (source `schedule`).
    pub schedule_id: Option<String>,
    /// The due time the run serves; null for a schedule's trigger.
    #[schema(format = DateTime)]
    pub scheduled_for: Option<String>,
    /// 0–9: queued runs start highest first, then oldest (SPEC §12).
    pub priority: u8,
    /// The deployment's `[concurrency] key` as rendered for this run; null without one.
    pub concurrency_key: Option<String>,
}

impl RunSummary {
    pub fn from_item(item: &RunListItem) -> RunSummary {
        let run = &item.run;
        RunSummary {
            request_id: run.request_id.clone(),
            run_status: run.status.as_str().to_string(),
            deployment: run.deployment_key.clone(),
            variant: run.variant.clone(),
            version: run.version,
            source: run.source.to_string(),
            parent_request_id: run.parent_request_id.clone(),
            delivery: run.delivery.to_string(),
            is_async: run.callback_url.is_some(),
            callback_url: run.callback_url.clone(),
            // A callback run without an event has not ended yet.
            delivery_state: item
                .delivery_state
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| run.callback_url.as_ref().map(|_| "not_started".to_string())),
            attempt_count: item.attempts,
            metadata: parse_obj(&run.metadata_json),
            user: run.user.clone(),
            created_at: ids::rfc3339(run.created_at),
            started_at: run.started_at.map(ids::rfc3339),
            ended_at: run.ended_at.map(ids::rfc3339),
            duration_ms: run.duration_ms,
            usage: json_or_null(&run.usage_json),
            rerun_of: run.rerun_of.clone(),
            schedule_id: run.schedule_id.clone(),
            scheduled_for: run.scheduled_for.map(ids::rfc3339),
            priority: run.priority,
            concurrency_key: run.concurrency_key.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One line of a run's step trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct Step {
    pub id: String,
    pub index: i64,
    #[serde(rename = "type")]
    pub step_type: String,
    /// `completed`, `failed`, `skipped`, `waiting`, `interrupted`, or `reused` (a rerun took
    /// the earlier run's line over; `reason` then says how that step had ended).
    pub status: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: i64,
    pub output: Value,
    pub error: Option<String>,
    pub attempts: i64,
    /// Token usage of a `prompt` step.
    pub usage: Value,
    /// The id of the enclosing `branch` or `loop` step; null at the top level.
    pub parent: Option<String>,
    /// The pass of the innermost enclosing loop (from 0); null outside loops.
    pub pass: Option<i64>,
    /// Every enclosing loop's pass, outermost first, joined with `.` (`2.0`); null outside
    /// loops.
    pub passes: Option<String>,
    /// Why a `waiting` step waits (`approval`, or `child_run` for a `workflow` step whose
    /// child runs); for a `reused` line, how the step had ended in the earlier run
    /// (`completed`, `skipped`, `failed`); null otherwise.
    pub reason: Option<String>,
    /// The child run a `workflow` step started; null for other steps.
    pub child_request_id: Option<String>,
}

impl Step {
    pub fn from_row(step: &StepRow) -> Step {
        Step {
            id: step.step_id.clone(),
            index: step.step_index,
            step_type: step.step_type.clone(),
            status: step.status.to_string(),
            started_at: ids::rfc3339(step.started_at),
            duration_ms: step.duration_ms,
            output: json_or_null(&step.output_json),
            error: step.error.clone(),
            attempts: step.attempts,
            usage: json_or_null(&step.usage_json),
            parent: step.parent.clone(),
            pass: step.pass(),
            passes: (!step.passes.is_empty()).then(|| step.passes.clone()),
            reason: step.reason.clone(),
            child_request_id: step.child_request_id.clone(),
        }
    }
}

/// One event of a callback run (SPEC §11: a run may post lifecycle events before its end).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    /// `evt_…`: the `webhook-id`.
    pub event_id: String,
    pub event_type: String,
    /// Its place in the run's delivery order, from 1.
    pub seq: i64,
    /// `held` (waits for the run's earlier events), `pending`, `retrying`, `delivered` or
    /// `failed`.
    pub delivery_state: String,
    pub attempt_count: i64,
    pub series: i64,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    pub failure_reason: Option<String>,
}

impl EventSummary {
    pub fn from_record(e: &EventRecord) -> EventSummary {
        EventSummary {
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            seq: e.seq,
            delivery_state: e.state.to_string(),
            attempt_count: e.total_attempts,
            series: e.series,
            next_attempt_at: e.next_attempt_at.map(ids::rfc3339),
            failure_reason: e.failure_reason.clone(),
        }
    }
}

/// The async configuration of a callback run and its delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AsyncDetail {
    pub enabled: bool,
    pub callback_url: String,
    /// `async.events`: what the run posts (SPEC §11).
    pub events_chosen: Vec<String>,
    /// Every event the run has posted or will post next, in delivery order; the fields
    /// below describe the last one (the run's end once it ended).
    pub events: Vec<EventSummary>,
    /// `evt_…`: the `webhook-id`, stable across retries; null until the run ends.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// `not_started`, `pending`, `retrying`, `delivered` or `failed`.
    pub delivery_state: String,
    pub attempt_count: Option<i64>,
    pub series: Option<i64>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// e.g. `gone`, `exhausted`, `denied`.
    pub failure_reason: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl AsyncDetail {
    pub fn new(
        callback_url: String,
        chosen: crate::delivery::lifecycle::EventSet,
        events: &[EventRecord],
        attempts: &[AttemptRow],
    ) -> AsyncDetail {
        let event = events.last();
        AsyncDetail {
            enabled: true,
            callback_url,
            events_chosen: chosen.names().into_iter().map(str::to_string).collect(),
            events: events.iter().map(EventSummary::from_record).collect(),
            event_id: event.map(|e| e.event_id.clone()),
            event_type: event.map(|e| e.event_type.clone()),
            // No event yet means the run has not ended; delivery starts when it does.
            delivery_state: event
                .map(|e| e.state.to_string())
                .unwrap_or_else(|| "not_started".into()),
            attempt_count: event.map(|e| e.total_attempts),
            series: event.map(|e| e.series),
            next_attempt_at: event.and_then(|e| e.next_attempt_at).map(ids::rfc3339),
            failure_reason: event.and_then(|e| e.failure_reason.clone()),
            attempts: attempts.iter().map(Attempt::from_row).collect(),
        }
    }
}

/// Everything about one run (`GET /v1/runs/{id}`); also the legacy `workflow_run`, which
/// never has `async`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    pub request_id: String,
    pub run_status: String,
    pub deployment: String,
    pub variant: String,
    pub version: i64,
    /// `api`, `webhook`, `cli`, `ui` or `workflow` (a child run).
    pub source: String,
    /// The run whose `workflow` step started this one; null for other runs.
    pub parent_request_id: Option<String>,
    pub delivery: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user: Option<String>,
    /// The workflow's output: text or any JSON value; null until it completes.
    pub output: Value,
    /// `{"message", "error_code", "step"}` for failed and cancelled runs.
    #[schema(value_type = Option<Object>)]
    pub error: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// The summed token usage of its prompt steps (`prompt_tokens`, `completion_tokens`,
    /// `total_tokens`, and `cost_usd` when a priced model ran); null until the run ends, and
    /// when no prompt step ran.
    #[schema(value_type = Option<Object>)]
    pub usage: Value,
    /// The run this one reruns; null otherwise.
    pub rerun_of: Option<String>,
    /// The `sch_…` schedule that started the run (source `schedule`).
    pub schedule_id: Option<String>,
    /// The due time the run serves (RFC 3339); null for a schedule's trigger.
    #[schema(format = DateTime)]
    pub scheduled_for: Option<String>,
    /// 0–9: queued runs start highest first, then oldest (SPEC §12).
    pub priority: u8,
    /// The deployment's `[concurrency] key` as rendered for this run; null without one.
    pub concurrency_key: Option<String>,
    pub steps: Vec<Step>,
    /// Only for callback runs, and never in the legacy shape.
    #[serde(rename = "async", skip_serializing_if = "Option::is_none")]
    pub async_detail: Option<AsyncDetail>,
    /// The run's last event (its end once it ended) with its exact body; only for callback
    /// runs that have an event, never in the legacy shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventBody>,
}

/// An event and the bytes POSTed for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub event_id: String,
    pub event_type: String,
    /// The body exactly as sent (its bytes as a string).
    pub body: String,
}

impl RunDetail {
    pub fn new(run: &RunRecord, steps: &[StepRow], async_detail: Option<AsyncDetail>) -> Self {
        RunDetail {
            request_id: run.request_id.clone(),
            run_status: run.status.as_str().to_string(),
            deployment: run.deployment_key.clone(),
            variant: run.variant.clone(),
            version: run.version,
            source: run.source.to_string(),
            parent_request_id: run.parent_request_id.clone(),
            delivery: run.delivery.to_string(),
            inputs: parse_obj(&run.inputs_json),
            metadata: parse_obj(&run.metadata_json),
            user: run.user.clone(),
            output: json_or_null(&run.output_json),
            error: json_or_null(&run.error_json),
            created_at: ids::rfc3339(run.created_at),
            started_at: run.started_at.map(ids::rfc3339),
            ended_at: run.ended_at.map(ids::rfc3339),
            duration_ms: run.duration_ms,
            usage: json_or_null(&run.usage_json),
            rerun_of: run.rerun_of.clone(),
            schedule_id: run.schedule_id.clone(),
            scheduled_for: run.scheduled_for.map(ids::rfc3339),
            priority: run.priority,
            concurrency_key: run.concurrency_key.clone(),
            steps: steps.iter().map(Step::from_row).collect(),
            async_detail,
            event: None,
        }
    }
}

/// The legacy shape: the run without its async details, under `workflow_run`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyRun {
    pub workflow_run: RunDetail,
}

/// `metadata` of the Fetch Hive SDK's request shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRequestMetadata {
    pub deployment: String,
    pub variant: String,
    pub version: i64,
    pub source: String,
    pub duration_ms: Option<i64>,
}

/// `data` of the Fetch Hive SDK's request shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRequestData {
    pub run_status: String,
    pub output: Value,
    #[schema(value_type = Option<Object>)]
    pub error: Value,
}

/// The Fetch Hive SDK's request shape.
#[derive(Debug, Serialize, ToSchema)]
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
    pub metadata: PublicRequestMetadata,
    /// The invoke's `metadata`.
    #[schema(value_type = Object)]
    pub user_metadata: Value,
    pub data: PublicRequestData,
}

impl PublicRequest {
    pub fn new(run: &RunRecord) -> PublicRequest {
        PublicRequest {
            id: run.request_id.clone(),
            request_id: run.request_id.clone(),
            status: run.status.as_str().to_string(),
            request_type: "workflow".into(),
            started_at: run.started_at.map(ids::rfc3339),
            ended_at: run.ended_at.map(ids::rfc3339),
            metadata: PublicRequestMetadata {
                deployment: run.deployment_key.clone(),
                variant: run.variant.clone(),
                version: run.version,
                source: run.source.to_string(),
                duration_ms: run.duration_ms,
            },
            user_metadata: parse_obj(&run.metadata_json),
            data: PublicRequestData {
                run_status: run.status.as_str().to_string(),
                output: json_or_null(&run.output_json),
                error: json_or_null(&run.error_json),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelReply {
    pub request_id: String,
    /// `cancelled`.
    pub run_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverReply {
    pub request_id: String,
    pub event_id: String,
    pub series: i64,
    /// `pending`.
    pub delivery_state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RespondReply {
    pub request_id: String,
    pub step: String,
    /// `completed`.
    pub step_status: String,
    /// `{"text"}` or `{"choice": {"value", "label"}}`.
    #[schema(value_type = Object)]
    pub output: Value,
    /// `running`.
    pub run_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeReply {
    /// Runs deleted, with their steps, events and attempts.
    pub purged: u64,
}

// ---------------------------------------------------------------------------------------
// Invoke
// ---------------------------------------------------------------------------------------

/// A sync run that completed.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeCompleted {
    pub request_id: String,
    /// `completed`.
    pub run_status: String,
    /// The workflow's output: text or any JSON value.
    pub output: Value,
}

/// An async run, accepted and durable.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeAccepted {
    pub request_id: String,
    /// `running`, or `queued` when every run slot is busy.
    pub run_status: String,
}

// ---------------------------------------------------------------------------------------
// Deployments
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Variant {
    pub name: String,
    #[schema(value_type = Object)]
    pub vars: serde_json::Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub step_type: String,
}

/// A deployment; `signing_secret` only for admin keys.
#[derive(Debug, Serialize, ToSchema)]
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
    pub inputs: Vec<crate::workflow::definition::InputSpec>,
    pub steps: Vec<StepSummary>,
    /// True when the workflow can only be invoked asynchronously.
    pub async_only: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `whsec_…`: signs callbacks and authenticates inbound triggers (admin keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

impl Deployment {
    pub fn new(dep: &LiveDeployment, with_secret: bool) -> Deployment {
        let def = &dep.definition;
        Deployment {
            key: dep.key.clone(),
            id: dep.id.clone(),
            description: def.description.clone(),
            version: dep.version,
            variants: def
                .variants
                .iter()
                .map(|(name, v)| Variant {
                    name: name.clone(),
                    vars: v.vars.clone(),
                })
                .collect(),
            inputs: def.inputs.clone(),
            steps: def
                .steps
                .iter()
                .map(|s| StepSummary {
                    id: s.id.clone(),
                    step_type: s.kind.type_name().to_string(),
                })
                .collect(),
            async_only: def.requires_async(),
            created_at: ids::rfc3339(dep.created_at),
            updated_at: ids::rfc3339(dep.updated_at),
            signing_secret: with_secret.then(|| dep.signing_secret.clone()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    pub version: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A deployment with its version history and its current definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentDetail {
    #[schema(inline)]
    #[serde(flatten)]
    pub deployment: Deployment,
    pub versions: Vec<Version>,
    /// The current definition (SPEC §7).
    #[schema(value_type = Object)]
    pub definition: Value,
}

impl DeploymentDetail {
    pub fn new(dep: &LiveDeployment, with_secret: bool, versions: &[VersionInfo]) -> Self {
        DeploymentDetail {
            deployment: Deployment::new(dep, with_secret),
            versions: versions
                .iter()
                .map(|v| Version {
                    version: v.version,
                    created_at: ids::rfc3339(v.created_at),
                })
                .collect(),
            definition: serde_json::to_value(&*dep.definition).unwrap_or(Value::Null),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentDeleted {
    pub key: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretRotated {
    pub key: String,
    pub signing_secret: String,
    /// The previous secret keeps signing and authenticating until then.
    #[schema(format = DateTime)]
    pub previous_secret_valid_until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Snippet {
    pub deployment: String,
    pub variant: String,
    #[serde(rename = "async")]
    pub is_async: bool,
    /// The ready cURL command.
    pub curl: String,
    /// Async snippets only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Async snippets only: the secret to verify the callback with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// An API key, masked.
#[derive(Debug, Serialize, ToSchema)]
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

impl ApiKey {
    pub fn from_record(key: &KeyRecord) -> ApiKey {
        ApiKey {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.as_str().to_string(),
            masked_key: format!("{}…", key.key_prefix),
            created_at: ids::rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(ids::rfc3339),
            revoked_at: key.revoked_at.map(ids::rfc3339),
            revoked: key.revoked_at.is_some(),
        }
    }
}

/// A new key: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    #[schema(inline)]
    #[serde(flatten)]
    pub record: ApiKey,
    /// `hvk_…`
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRotated {
    pub id: String,
    /// The new secret, shown this once.
    pub key: String,
    /// Only when `expires_in` was given: the old secret keeps working until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub previous_key_valid_until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRevoked {
    pub id: String,
    pub revoked: bool,
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `stopping` (with HTTP 503) while the daemon shuts down.
    pub status: String,
    /// While serving only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out_only_where_the_contract_says() {
        let key = KeyRotated {
            id: "key_1".into(),
            key: "hvk_x".into(),
            previous_key_valid_until: None,
        };
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            r#"{"id":"key_1","key":"hvk_x"}"#
        );
        let health = Health {
            status: "stopping".into(),
            version: None,
        };
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            r#"{"status":"stopping"}"#
        );
        let summary = AttemptList {
            request_id: "req_1".into(),
            attempts: vec![],
        };
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            json!({"request_id": "req_1", "attempts": []})
        );
    }

    #[test]
    fn a_created_key_is_the_masked_key_then_the_secret() {
        let created = KeyCreated {
            record: ApiKey {
                id: "key_1".into(),
                name: "app".into(),
                role: "invoke".into(),
                masked_key: "hvk_Ab12…".into(),
                created_at: "2026-01-01T00:00:00.000Z".into(),
                last_used_at: None,
                revoked_at: None,
                revoked: false,
            },
            key: "hvk_Ab12secret".into(),
        };
        let keys: Vec<String> = serde_json::to_value(&created)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "role",
                "masked_key",
                "created_at",
                "last_used_at",
                "revoked_at",
                "revoked",
                "key"
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------

/// A schedule's last run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleLastRun {
    pub request_id: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// One schedule (SPEC §12).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// `sch_…`
    pub id: String,
    /// Set for the `[[schedules]]` of a workflow file.
    pub name: Option<String>,
    pub deployment: String,
    pub variant: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user: Option<String>,
    pub cron: Option<String>,
    pub every: Option<String>,
    /// IANA zone name.
    pub timezone: String,
    pub callback_url: Option<String>,
    pub active: bool,
    /// `skip`, `once` or `all`.
    pub catch_up: String,
    /// The next fire; null while paused.
    #[schema(format = DateTime)]
    pub next_run_at: Option<String>,
    pub last_run: Option<ScheduleLastRun>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl ScheduleView {
    pub fn from_record(s: &crate::store::ScheduleRecord) -> ScheduleView {
        ScheduleView {
            id: s.schedule_id.clone(),
            name: s.name.clone(),
            deployment: s.deployment_key.clone(),
            variant: s.variant.clone(),
            inputs: parse_obj(&s.inputs_json),
            metadata: parse_obj(&s.metadata_json),
            user: s.user.clone(),
            cron: s.cron.clone(),
            every: s.every.clone(),
            timezone: s.timezone.clone(),
            callback_url: s.callback_url.clone(),
            active: s.active,
            catch_up: s.catch_up.clone(),
            next_run_at: s.next_run_at.filter(|_| s.active).map(ids::rfc3339),
            last_run: s
                .last_request_id
                .clone()
                .zip(s.last_run_at)
                .map(|(request_id, at)| ScheduleLastRun {
                    request_id,
                    at: ids::rfc3339(at),
                }),
            created_at: ids::rfc3339(s.created_at),
            updated_at: ids::rfc3339(s.updated_at),
        }
    }
}

/// `GET /v1/schedules`
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `POST /v1/schedules/{id}/trigger`: the run was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleTriggered {
    pub request_id: String,
    /// `running`, or `queued` when every run slot is busy.
    pub run_status: String,
    pub schedule_id: String,
}
