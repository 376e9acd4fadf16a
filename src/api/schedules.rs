//! Schedules (SPEC §12), admin only: create, list, show, edit (pause and resume are
//! `{"active": false|true}`), delete, and trigger one run now.

use actix_web::{web, HttpResponse};

use super::extract::{Admin, JsonBody};
use super::routing::endpoint;
use super::state::AppState;
use super::views::{ScheduleList, ScheduleTriggered, ScheduleView};
use crate::actors::scheduler::Wake;
use crate::actors::{AdmitScheduled, ScheduledFire};
use crate::error::ApiError;
use crate::ids;
use crate::schedules;
use crate::store::{DeleteSchedule, InsertSchedule, ScheduleRecord, UpdateSchedule};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/schedules").get(list).post(create));
    cfg.service(
        endpoint("/v1/schedules/{id}")
            .get(show)
            .route(actix_web::http::Method::PATCH, edit)
            .delete(delete),
    );
    cfg.service(endpoint("/v1/schedules/{id}/trigger").post(trigger));
}

async fn find(state: &AppState, id: &str) -> Result<ScheduleRecord, ApiError> {
    state
        .store
        .schedule(id.to_string())
        .await?
        .ok_or_else(|| ApiError::NotFound("Schedule not found.".into()))
}

/// Every schedule, oldest first, with its next fire and last run.
#[utoipa::path(get, path = "/v1/schedules", operation_id = "list_schedules", tag = "schedules",
    responses(
        (status = 200, description = "The schedules", body = ScheduleList),
        super::responses::NeedsAdmin,
    ))]
async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let schedules = state.store.schedules().await?;
    Ok(HttpResponse::Ok().json(ScheduleList {
        schedules: schedules.iter().map(ScheduleView::from_record).collect(),
    }))
}

/// Creates a schedule: `cron` (5 fields, in `timezone`) or `every` (a duration, at least
/// 1 s, on a grid from now). Nothing is stored when a field is wrong (422 naming it).
#[utoipa::path(post, path = "/v1/schedules", operation_id = "create_schedule", tag = "schedules",
    request_body = super::bodies::ScheduleBody,
    responses(
        (status = 201, description = "The new schedule", body = ScheduleView),
        (status = 422, description = "A field is wrong (`field` names it): invalid cron, unknown time zone, `every` under 1 s, unknown deployment or variant, inputs that do not match", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let draft = schedules::check(&body.0, &state.deployments)?;
    let (record, _) = draft.record(None, None, ids::now_ms());
    state.store.write(InsertSchedule(record.clone())).await?;
    state.scheduler.do_send(Wake);
    tracing::info!(schedule_id = %record.schedule_id, deployment = %record.deployment_key, "schedule created");
    Ok(HttpResponse::Created().json(ScheduleView::from_record(&record)))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{id}", operation_id = "show_schedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's `sch_…` id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "`Schedule not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn show(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = find(&state, &id).await?;
    Ok(HttpResponse::Ok().json(ScheduleView::from_record(&record)))
}

/// Edits a schedule: the fields given replace the stored ones (`cron` and `every` replace
/// each other). `{"active": false}` pauses it, `{"active": true}` resumes it from now
/// (fires missed while paused are not caught up).
#[utoipa::path(patch, path = "/v1/schedules/{id}", operation_id = "edit_schedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's `sch_…` id")),
    request_body = super::bodies::SchedulePatch,
    responses(
        (status = 200, description = "The schedule as edited", body = ScheduleView),
        (status = 404, description = "`Schedule not found.`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "A field is wrong; `field` names it", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn edit(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let stored = find(&state, &id).await?;
    let merged = schedules::merge_patch(&stored, &body.0)?;
    let draft = schedules::check(&merged, &state.deployments)?;
    let (record, reset_next) = draft.record(Some(&stored), None, ids::now_ms());
    let found = state
        .store
        .write(UpdateSchedule {
            schedule: record,
            reset_next,
        })
        .await?;
    if !found {
        return Err(ApiError::NotFound("Schedule not found.".into()));
    }
    state.scheduler.do_send(Wake);
    let record = find(&state, &id).await?;
    Ok(HttpResponse::Ok().json(ScheduleView::from_record(&record)))
}

/// Deletes a schedule; the runs it started stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", operation_id = "delete_schedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's `sch_…` id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`Schedule not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn delete(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let existed = state
        .store
        .write(DeleteSchedule {
            schedule_id: id.to_string(),
        })
        .await?;
    if !existed {
        return Err(ApiError::NotFound("Schedule not found.".into()));
    }
    state.scheduler.do_send(Wake);
    Ok(HttpResponse::NoContent().finish())
}

/// Starts one run of the schedule now (also while paused); its `scheduled_for` is null and
/// the schedule's next fire does not move.
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", operation_id = "trigger_schedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's `sch_…` id")),
    responses(
        (status = 202, description = "The run was stored (running or queued)", body = ScheduleTriggered),
        (status = 404, description = "`Schedule not found.`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "The schedule's deployment, variant or inputs no longer fit", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`queue_full`", body = crate::error::ErrorEnvelope),
        (status = 503, description = "The daemon is stopping, or the database cannot take writes", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn trigger(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = find(&state, &id).await?;
    if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "hivelet is shutting down; try again shortly.".into(),
        ));
    }
    let run = schedules::prepared_run(&record, &state.deployments)
        .map_err(|e| ApiError::field("deployment", e))?;
    let fire = ScheduledFire {
        schedule_id: record.schedule_id.clone(),
        scheduled_for: None,
        advance: None,
    };
    let admitted = state
        .invoker
        .send(AdmitScheduled { run, fire })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))??
        .ok_or_else(|| ApiError::NotFound("Schedule not found.".into()))?;
    Ok(HttpResponse::Accepted().json(ScheduleTriggered {
        request_id: admitted.request_id,
        run_status: admitted.status.as_str().to_string(),
        schedule_id: record.schedule_id,
    }))
}
