//! Looking up one run: the Fetch Hive SDK's `GET /v1/public/requests/{id}`, the legacy
//! `GET /v1/workflow_runs/{id}`, and the full `GET /v1/runs/{id}` with its step trace.
//! `invoke` keys see only the runs they started.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::extract::Authed;
use super::{endpoint, AppState};
use crate::error::ApiError;
use crate::ids;
use crate::keyring::Caller;
use crate::store::{Role, RunRecord, StepRow};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/public/requests/{id}").get(public_request));
    cfg.service(endpoint("/v1/workflow_runs/{id}").get(legacy_run));
    cfg.service(endpoint("/v1/runs/{id}").get(run_detail));
}

fn json_or_null(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

pub(super) fn parse_obj(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// Loads a run the caller may see, or the given not-found message.
pub(super) async fn load_run(
    state: &AppState,
    caller: &Caller,
    id: String,
    not_found: &str,
) -> Result<(RunRecord, Vec<StepRow>), ApiError> {
    let not_found = || ApiError::NotFound(not_found.to_string());
    if !ids::is_request_id(&id) {
        return Err(not_found());
    }
    let found = state
        .store
        .run_with_steps(id)
        .await?
        .ok_or_else(not_found)?;
    if caller.role != Role::Admin && found.0.api_key_id.as_deref() != Some(caller.key_id.as_str()) {
        return Err(not_found());
    }
    Ok(found)
}

/// The run's fields common to every shape.
fn run_json(run: &RunRecord) -> Value {
    json!({
        "request_id": run.request_id,
        "run_status": run.status.as_str(),
        "deployment": run.deployment_key,
        "variant": run.variant,
        "version": run.version,
        "source": run.source,
        "delivery": run.delivery,
        "inputs": parse_obj(&run.inputs_json),
        "metadata": parse_obj(&run.metadata_json),
        "user": run.user,
        "output": json_or_null(&run.output_json),
        "error": json_or_null(&run.error_json),
        "created_at": ids::rfc3339(run.created_at),
        "started_at": run.started_at.map(ids::rfc3339),
        "ended_at": run.ended_at.map(ids::rfc3339),
        "duration_ms": run.duration_ms,
    })
}

fn step_json(step: &StepRow) -> Value {
    json!({
        "id": step.step_id,
        "index": step.step_index,
        "type": step.step_type,
        "status": step.status,
        "started_at": ids::rfc3339(step.started_at),
        "duration_ms": step.duration_ms,
        "output": json_or_null(&step.output_json),
        "error": step.error,
        "attempts": step.attempts,
        "usage": json_or_null(&step.usage_json),
    })
}

/// A run in the Fetch Hive SDK's shape (`client.get_request`).
#[utoipa::path(get, path = "/v1/public/requests/{id}", operation_id = "get_request", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The request", body = super::schema::PublicRequest),
        (status = 404, description = "`Request not found`", body = super::schema::ErrorEnvelope),
        super::schema::NeedsKey,
    ))]
async fn public_request(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Request not found").await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": run.request_id,
        "request_id": run.request_id,
        "status": run.status.as_str(),
        "request_type": "workflow",
        "started_at": run.started_at.map(ids::rfc3339),
        "ended_at": run.ended_at.map(ids::rfc3339),
        "metadata": {
            "deployment": run.deployment_key,
            "variant": run.variant,
            "version": run.version,
            "source": run.source,
            "duration_ms": run.duration_ms,
        },
        "user_metadata": parse_obj(&run.metadata_json),
        "data": {
            "run_status": run.status.as_str(),
            "output": json_or_null(&run.output_json),
            "error": json_or_null(&run.error_json),
        },
    })))
}

/// A run in the legacy `workflow_run` shape.
#[utoipa::path(get, path = "/v1/workflow_runs/{id}", operation_id = "get_workflow_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The run", body = super::schema::LegacyRun),
        (status = 404, description = "`Workflow run not found`", body = super::schema::ErrorEnvelope),
        super::schema::NeedsKey,
    ))]
async fn legacy_run(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, steps) = load_run(&state, &caller, id.into_inner(), "Workflow run not found").await?;
    let mut body = run_json(&run);
    body["steps"] = steps.iter().map(step_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "workflow_run": body })))
}

/// Everything about a run: inputs, output or error, step trace, and for callback runs the
/// async configuration with every delivery attempt. `invoke` keys see only their own runs.
#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The run", body = super::schema::RunDetail),
        (status = 404, description = "`Run not found.`", body = super::schema::ErrorEnvelope),
        super::schema::NeedsKey,
    ))]
async fn run_detail(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, steps) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    let mut body = run_json(&run);
    body["steps"] = steps.iter().map(step_json).collect();
    if let Some(url) = run.callback_url.clone() {
        let request_id = run.request_id.clone();
        let (event, attempts) = state.store.delivery_of_run(request_id).await?;
        body["async"] = json!({
            "enabled": true,
            "callback_url": url,
            "event_id": event.as_ref().map(|e| e.event_id.clone()),
            "event_type": event.as_ref().map(|e| e.event_type.clone()),
            // No event yet means the run has not ended; delivery starts when it does.
            "delivery_state": event.as_ref().map_or("not_started", |e| e.state.as_str()),
            "attempt_count": event.as_ref().map(|e| e.total_attempts),
            "series": event.as_ref().map(|e| e.series),
            "next_attempt_at": event.as_ref().and_then(|e| e.next_attempt_at).map(ids::rfc3339),
            "failure_reason": event.as_ref().and_then(|e| e.failure_reason.clone()),
            "attempts": attempts.iter().map(super::runs::attempt_json).collect::<Vec<_>>(),
        });
    }
    Ok(HttpResponse::Ok().json(body))
}
