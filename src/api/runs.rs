//! Acting on one run: cancel it, redeliver its event, list its delivery attempts.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::extract::{Admin, Authed};
use super::requests::{load_run, parse_obj};
use super::{resource, AppState};
use crate::actors::invoke::Cancel;
use crate::actors::Enqueue;
use crate::error::ApiError;
use crate::ids;
use crate::store::{self, AttemptRow, RunStatus, Write, Written};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/runs/{id}/cancel").route(web::post().to(cancel)));
    cfg.service(resource("/v1/runs/{id}/redeliver").route(web::post().to(redeliver)));
    cfg.service(resource("/v1/runs/{id}/attempts").route(web::get().to(attempts)));
}

/// One attempt as the log API shows it.
pub fn attempt_json(a: &AttemptRow) -> Value {
    json!({
        "attempt_id": a.attempt_id,
        "attempt": a.attempt_number,
        "series": a.series,
        "url": a.url,
        "started_at": ids::rfc3339(a.started_at),
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "error_kind": a.error_kind,
        "error": a.error_message,
        "outcome": a.outcome,
        "request_headers": parse_obj(&a.request_headers_json),
        "response_headers": a.response_headers_json.as_deref().map(parse_obj),
        "response_body": a.response_body,
        "next_attempt_at": a.next_attempt_at.map(ids::rfc3339),
    })
}

async fn cancel(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
        return Err(ApiError::Conflict(format!(
            "The run already ended ({}); only queued or running runs can be cancelled.",
            run.status.as_str()
        )));
    }
    let cancelled = state
        .invoker
        .send(Cancel {
            request_id: run.request_id.clone(),
        })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))?;
    if !cancelled {
        return Err(ApiError::Conflict(
            "The run is no longer queued or running.".into(),
        ));
    }
    tracing::info!(request_id = %run.request_id, "run cancelled");
    Ok(HttpResponse::Accepted()
        .json(json!({"request_id": run.request_id, "run_status": "cancelled"})))
}

async fn redeliver(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    if run.callback_url.is_none() {
        return Err(ApiError::Conflict(
            "This run has no callback URL, so there is no event to redeliver.".into(),
        ));
    }
    let written = state
        .store
        .write(Write::Redeliver {
            request_id: run.request_id.clone(),
            at: ids::now_ms(),
        })
        .await?;
    let Written::Redelivered(Some(event)) = written else {
        return Err(ApiError::Conflict(
            "The run has not ended yet, so its event does not exist yet.".into(),
        ));
    };
    tracing::info!(request_id = %run.request_id, event_id = %event.event_id, series = event.series, "redelivery requested");
    let body = json!({"request_id": run.request_id, "event_id": event.event_id, "series": event.series, "delivery_state": "pending"});
    state.supervisor.do_send(Enqueue(event));
    Ok(HttpResponse::Accepted().json(body))
}

async fn attempts(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    let request_id = run.request_id.clone();
    let rows = state
        .store
        .read(move |conn| store::events::attempts_for_run(conn, &request_id))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "request_id": run.request_id,
        "attempts": rows.iter().map(attempt_json).collect::<Vec<_>>(),
    })))
}
