//! Looking up one run: the Fetch Hive SDK's `GET /v1/public/requests/{id}`, the legacy
//! `GET /v1/workflow_runs/{id}`, and the full `GET /v1/runs/{id}` with its step trace.
//! `invoke` keys see only the runs they started.

use actix_web::{web, HttpResponse};

use super::extract::Authed;
use super::routing::endpoint;
use super::state::AppState;
use super::views::{AsyncDetail, LegacyRun, PublicRequest, RunDetail};
use crate::delivery::lifecycle::EventSet;
use crate::error::ApiError;
use crate::ids;
use crate::keyring::Caller;
use crate::store::{Role, RunRecord, StepRow};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/public/requests/{id}").get(public_request));
    cfg.service(endpoint("/v1/workflow_runs/{id}").get(legacy_run));
    cfg.service(endpoint("/v1/runs/{id}").get(run_detail));
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

/// A run in the Fetch Hive SDK's shape (`client.get_request`).
#[utoipa::path(get, path = "/v1/public/requests/{id}", operation_id = "get_request", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The request", body = PublicRequest),
        (status = 404, description = "`Request not found`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn public_request(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Request not found").await?;
    Ok(HttpResponse::Ok().json(PublicRequest::new(&run)))
}

/// A run in the legacy `workflow_run` shape.
#[utoipa::path(get, path = "/v1/workflow_runs/{id}", operation_id = "get_workflow_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The run", body = LegacyRun),
        (status = 404, description = "`Workflow run not found`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn legacy_run(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, steps) = load_run(&state, &caller, id.into_inner(), "Workflow run not found").await?;
    Ok(HttpResponse::Ok().json(LegacyRun {
        workflow_run: RunDetail::new(&run, &steps, None),
    }))
}

/// Everything about a run: inputs, output or error, step trace, and for callback runs the
/// async configuration with every delivery attempt. `invoke` keys see only their own runs.
#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 404, description = "`Run not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn run_detail(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, steps) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    let async_detail = match run.callback_url.clone() {
        Some(url) => {
            let request_id = run.request_id.clone();
            let (events, attempts) = state.store.events_of_run(request_id).await?;
            let chosen = EventSet::from_stored(run.events_json.as_deref());
            Some(AsyncDetail::new(url, chosen, &events, &attempts))
        }
        None => None,
    };
    let mut detail = RunDetail::new(&run, &steps, async_detail);
    if run.callback_url.is_some() {
        detail.event = state
            .store
            .last_event_body(run.request_id.clone())
            .await?
            .map(|(event_id, event_type, body)| super::views::EventBody {
                event_id,
                event_type,
                // Bodies are serialized JSON, so UTF-8.
                body: String::from_utf8_lossy(&body).into_owned(),
            });
    }
    Ok(HttpResponse::Ok().json(detail))
}
