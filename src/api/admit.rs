//! Admission, shared by invoke and inbound triggers: find the deployment and variant, check
//! the inputs (still before anything is stored), hand the run to the InvokeActor and shape
//! its answer: 202 for async, the output (or the failure envelope) for sync.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use super::invoke_body::InvokeRequest;
use super::state::AppState;
use super::views::{InvokeAccepted, InvokeCompleted};
use crate::actors::{Admit, Mode, PreparedRun, Rerun};
use crate::error::{ApiError, RunFailedEnvelope};
use crate::store::RunStatus;
use crate::workflow::inputs::check_inputs;

/// Finds the deployment and variant and checks the inputs: everything that needs the
/// deployment, still before anything is stored.
pub fn prepare(
    state: &AppState,
    req: InvokeRequest,
    source: crate::store::RunSource,
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
    let concurrency_key = crate::flow::concurrency_key(
        &deployment.definition,
        &inputs,
        &req.metadata,
        req.user.as_deref(),
        deployment.vars(&req.variant),
    )
    .map_err(|message| ApiError::field("concurrency.key", message))?;
    Ok(PreparedRun {
        deployment,
        variant: req.variant,
        inputs,
        metadata: req.metadata,
        user: req.user,
        callback_url: req.callback_url,
        events: req.events,
        source,
        api_key_id,
        parent_request_id: None,
        priority: req.priority,
        concurrency_key,
    })
}

/// What an invoke answers, one of the three documented bodies.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum InvokeAnswer {
    Completed(InvokeCompleted),
    Accepted(InvokeAccepted),
    Failed(RunFailedEnvelope),
}

/// The status and body of an invoke's answer (kept for idempotent replays).
pub struct InvokeReply {
    pub status: StatusCode,
    pub answer: InvokeAnswer,
}

impl InvokeReply {
    pub fn request_id(&self) -> &str {
        match &self.answer {
            InvokeAnswer::Completed(c) => &c.request_id,
            InvokeAnswer::Accepted(a) => &a.request_id,
            InvokeAnswer::Failed(f) => &f.request_id,
        }
    }

    pub fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.answer)
    }
}

/// Admits a prepared run and shapes the answer: 202 for async, the output for sync.
pub async fn admit(state: &AppState, run: PreparedRun) -> Result<HttpResponse, ApiError> {
    admit_reply(state, run)
        .await
        .map(InvokeReply::into_response)
}

pub async fn admit_reply(state: &AppState, run: PreparedRun) -> Result<InvokeReply, ApiError> {
    let mode = if run.callback_url.is_some() {
        Mode::Async
    } else {
        Mode::Sync
    };
    admit_as(state, run, mode, None).await
}

/// Admits a run the caller waits for (`Mode::Sync`, even with a callback URL, which is
/// still delivered) or not, possibly a rerun, and shapes the answer.
pub async fn admit_as(
    state: &AppState,
    run: PreparedRun,
    mode: Mode,
    rerun: Option<Rerun>,
) -> Result<InvokeReply, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "hivelet is shutting down; try again shortly.".into(),
        ));
    }
    let admitted = state
        .invoker
        .send(Admit { run, mode, rerun })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))??;
    let Some(completion) = admitted.completion else {
        return Ok(InvokeReply {
            status: StatusCode::ACCEPTED,
            answer: InvokeAnswer::Accepted(InvokeAccepted {
                request_id: admitted.request_id,
                run_status: admitted.status.as_str().to_string(),
            }),
        });
    };
    let outcome = completion
        .await
        .map_err(|_| ApiError::internal("the run ended without reporting its outcome"))?;
    match (outcome.status, outcome.failure) {
        (RunStatus::Completed, _) => Ok(InvokeReply {
            status: StatusCode::OK,
            answer: InvokeAnswer::Completed(InvokeCompleted {
                request_id: outcome.request_id,
                run_status: "completed".into(),
                output: outcome.output,
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
            let envelope = err
                .run_failed_envelope()
                .expect("a run failure has its envelope");
            Ok(InvokeReply {
                status: err.status_code(),
                answer: InvokeAnswer::Failed(envelope),
            })
        }
    }
}
