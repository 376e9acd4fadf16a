//! `POST /v1/runs/{id}/steps/{step}/respond` (admin): answers the approval step a run waits
//! at (SPEC §7) with `{"choice": value}` (one of the step's choices) or `{"text": "…"}` (a
//! step without choices). The answer is stored before the reply, then the run continues.

use actix_web::{web, HttpResponse};

use super::extract::{Admin, JsonBody};
use super::requests::load_run;
use super::routing::endpoint;
use super::state::AppState;
use super::views::RespondReply;
use crate::actors::Respond;
use crate::error::ApiError;
use crate::store::RunStatus;
use crate::workflow::engine::approval_output;
use crate::workflow::StepKind;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/runs/{id}/steps/{step}/respond").post(respond));
}

/// Answers the approval step a run waits at; the run then continues.
#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/respond", operation_id = "respond_to_step", tag = "runs",
    request_body = super::bodies::RespondBody,
    params(
        ("id" = String, Path, description = "The run's `req_…` id"),
        ("step" = String, Path, description = "The approval step's id"),
    ),
    responses(
        (status = 202, description = "The answer is stored; the run continues", body = RespondReply),
        (status = 404, description = "`Run not found.`, or no such step", body = crate::error::ErrorEnvelope),
        (status = 409, description = "The step is not waiting (not reached, answered, or the run ended)", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn respond(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    path: web::Path<(String, String)>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (id, step_id) = path.into_inner();
    let (run, steps) = load_run(&state, &caller, id, "Run not found.").await?;

    // The definition the run was admitted with (a blocking read when it is not the live one).
    let deployments = state.deployments.clone();
    let store = state.store.clone();
    let (key, version) = (run.deployment_key.clone(), run.version);
    let deployment = web::block(move || deployments.at_version(&store, &key, version))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "The run's deployment {} was deleted, so the run cannot continue.",
                run.deployment_key
            ))
        })?;
    let step = deployment
        .definition
        .steps
        .iter()
        .find(|s| s.id == step_id)
        .ok_or_else(|| ApiError::NotFound(format!("Run has no step {step_id:?}.")))?;
    let StepKind::Approval { choices, .. } = &step.kind else {
        return Err(ApiError::Conflict(format!(
            "Step {step_id} is a {} step; only a waiting approval step takes a response.",
            step.kind.type_name()
        )));
    };

    // The trace's latest line for the step says whether it waits.
    let state_now = steps
        .iter()
        .filter(|s| s.step_id == step_id)
        .max_by_key(|s| s.started_at)
        .map(|s| s.status.as_str());
    if run.status != RunStatus::Running || state_now != Some("waiting") {
        let why = match (run.status, state_now) {
            (RunStatus::Running | RunStatus::Queued, None) => "it has not been reached yet".into(),
            (RunStatus::Running | RunStatus::Queued, Some(s)) => format!("it is {s}"),
            (status, _) => format!("the run is {}", status.as_str()),
        };
        return Err(ApiError::Conflict(format!(
            "Step {step_id} is not waiting for a response: {why}."
        )));
    }

    let output =
        approval_output(choices, &body.0).map_err(|(field, msg)| ApiError::field(field, msg))?;
    state
        .invoker
        .send(Respond {
            request_id: run.request_id.clone(),
            step_id: step_id.clone(),
            output: output.clone(),
        })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))??;
    Ok(HttpResponse::Accepted().json(RespondReply {
        request_id: run.request_id,
        step: step_id,
        step_status: "completed".into(),
        output,
        run_status: "running".into(),
    }))
}
