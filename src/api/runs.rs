//! Acting on one run: cancel it, redeliver its event, list its delivery attempts.

use actix_web::{web, HttpResponse};

use super::extract::{Admin, Authed, JsonBody};
use super::params::{parse_time, time_value, Timestamp};
use super::requests::load_run;
use super::routing::endpoint;
use super::state::AppState;
use super::views::{
    Attempt, AttemptList, CancelReply, PurgeReply, RedeliverReply, RunList, RunSummary,
};
use crate::actors::invoke::Cancel;
use crate::actors::Enqueue;
use crate::error::ApiError;
use crate::ids;
use crate::store::runs::{DeliveryStateFilter, RunFilter};
use crate::store::{Redeliver, Role, RunDelivery, RunSource, RunStatus};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/runs").get(list));
    cfg.service(endpoint("/v1/runs/purge").post(purge));
    cfg.service(endpoint("/v1/runs/{id}/cancel").post(cancel));
    cfg.service(endpoint("/v1/runs/{id}/redeliver").post(redeliver));
    cfg.service(endpoint("/v1/runs/{id}/attempts").get(attempts));
}

/// Ends a queued or running run as `cancelled`.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 202, description = "Cancelled", body = CancelReply),
        (status = 404, description = "`Run not found.`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "The run already ended", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
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
    Ok(HttpResponse::Accepted().json(CancelReply {
        request_id: run.request_id,
        run_status: "cancelled".into(),
    }))
}

/// Starts a new attempt series for the run's event (same `webhook-id`), whatever its state:
/// its last one (the run's end), or the lifecycle event `event_id` names (SPEC §11).
#[utoipa::path(post, path = "/v1/runs/{id}/redeliver", operation_id = "redeliver_run", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id"),
           ("event_id" = Option<String>, Query, description = "One of the run's events (`evt_…`, see `async.events` of the run); left out: its last one")),
    responses(
        (status = 202, description = "Redelivery queued", body = RedeliverReply),
        (status = 404, description = "`Run not found.` / `Event not found.`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "No callback URL, the run has no event yet, or the event still waits for the run's earlier ones", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn redeliver(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    id: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    if run.callback_url.is_none() {
        return Err(ApiError::Conflict(
            "This run has no callback URL, so there is no event to redeliver.".into(),
        ));
    }
    let event_id = query
        .into_inner()
        .into_iter()
        .find(|(name, _)| name == "event_id")
        .map(|(_, value)| value);
    let (events, _) = state.store.events_of_run(run.request_id.clone()).await?;
    let target = match &event_id {
        Some(wanted) => events
            .iter()
            .find(|e| &e.event_id == wanted)
            .ok_or_else(|| ApiError::NotFound("Event not found.".into()))?,
        None => events.last().ok_or_else(|| {
            ApiError::Conflict("The run has not ended yet, so its event does not exist yet.".into())
        })?,
    };
    let held = || {
        ApiError::Conflict(format!(
            "Event {} waits for the run's earlier events and goes out after them; there is nothing to redeliver yet.",
            target.event_id
        ))
    };
    if target.state == crate::store::EventState::Held {
        return Err(held());
    }
    let written = state
        .store
        .write(Redeliver {
            request_id: run.request_id.clone(),
            event_id: Some(target.event_id.clone()),
            at: ids::now_ms(),
        })
        .await?;
    // Its state may have moved since it was read; only `held` refuses.
    let Some(event) = written else {
        return Err(held());
    };
    tracing::info!(request_id = %run.request_id, event_id = %event.event_id, series = event.series, "redelivery requested");
    let body = RedeliverReply {
        request_id: run.request_id,
        event_id: event.event_id.clone(),
        series: event.series,
        delivery_state: "pending".into(),
    };
    state.supervisor.do_send(Enqueue(event));
    Ok(HttpResponse::Accepted().json(body))
}

/// Every delivery attempt of a callback run, oldest first.
#[utoipa::path(get, path = "/v1/runs/{id}/attempts", operation_id = "list_attempts", tag = "runs",
    params(("id" = String, Path, description = "The run's `req_…` id")),
    responses(
        (status = 200, description = "The attempts", body = AttemptList),
        (status = 404, description = "`Run not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn attempts(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (run, _) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    let rows = state.store.attempts_for_run(run.request_id.clone()).await?;
    Ok(HttpResponse::Ok().json(AttemptList {
        request_id: run.request_id,
        attempts: rows.iter().map(Attempt::from_row).collect(),
    }))
}

/// `GET /v1/runs`: newest first, cursor pagination, the filters of SPEC §5.
/// `meta.<key>` (the key exists) and `meta.<key>=<value>` (equals that scalar) filter on
/// metadata. `invoke` keys see only the runs they started.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs",
    params(
        ("deployment" = Option<String>, Query),
        ("variant" = Option<String>, Query),
        ("status" = Option<super::bodies::RunStatusFilter>, Query),
        ("delivery" = Option<super::bodies::DeliveryFilter>, Query),
        ("source" = Option<super::bodies::SourceFilter>, Query),
        ("api_key" = Option<String>, Query, description = "The `key_…` id that started the runs"),
        ("user" = Option<String>, Query),
        ("schedule" = Option<String>, Query, description = "The `sch_…` id of the schedule that started the runs"),
        ("parent" = Option<String>, Query, pattern = r"^req_[0-9a-f]{32}$", description = "The `req_…` id of a run: its child runs (started by its `workflow` steps)"),
        ("delivery_state" = Option<super::bodies::DeliveryStateParam>, Query, description = "The state of the run's last event: `not_started` (a callback run that has not ended), `pending`, `retrying`, `paused` (held behind the run's earlier events), `delivered`, `failed`"),
        ("since" = Option<Timestamp>, Query, description = "Created at or after: RFC 3339 or Unix ms"),
        ("until" = Option<Timestamp>, Query, description = "Created before: RFC 3339 or Unix ms"),
        ("q" = Option<String>, Query, pattern = r"^(req|evt)_[0-9a-f]{32}$", description = "A full `req_…` id jumps to that run; an `evt_…` id to the run whose event it is"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, pattern = r"^req_[0-9a-f]{32}$", description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of runs", body = RunList),
        (status = 404, description = "`q` names a run or event that does not exist (or another key's)", body = crate::error::ErrorEnvelope),
        (status = 422, description = "An unknown filter or a bad value; `field` names it", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn list(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = RunFilter {
        limit: 50,
        ..Default::default()
    };
    for (name, value) in query.into_inner() {
        let value = value.trim().to_string();
        match name.as_str() {
            "deployment" => filter.deployment = Some(value),
            "variant" => filter.variant = Some(value),
            "status" if value == "waiting" => {
                filter.status = None;
                filter.waiting = true;
            }
            "status" => {
                let Some(status) = RunStatus::parse(&value) else {
                    return Err(ApiError::field(
                        "status",
                        "status must be one of queued, running, waiting, completed, failed, cancelled",
                    ));
                };
                filter.status = Some(status);
                filter.waiting = false;
            }
            "delivery_state" => {
                let Some(wanted) = DeliveryStateFilter::parse(&value) else {
                    return Err(ApiError::field(
                        "delivery_state",
                        format!(
                            "delivery_state must be one of {}",
                            DeliveryStateFilter::NAMES.join(", ")
                        ),
                    ));
                };
                filter.delivery_state = Some(wanted);
            }
            "parent" => {
                if !ids::is_request_id(&value) {
                    return Err(ApiError::field("parent", "parent must be a run's req_… id"));
                }
                filter.parent = Some(value);
            }
            "delivery" => {
                let Some(delivery) = RunDelivery::parse(&value) else {
                    return Err(ApiError::field(
                        "delivery",
                        "delivery must be callback or direct",
                    ));
                };
                filter.delivery = Some(delivery);
            }
            "source" => {
                let Some(source) = RunSource::parse(&value) else {
                    return Err(ApiError::field(
                        "source",
                        "source must be one of api, webhook, cli, ui, workflow, schedule",
                    ));
                };
                filter.source = Some(source);
            }
            "api_key" => filter.api_key_id = Some(value),
            "user" => filter.user = Some(value),
            "schedule" => filter.schedule_id = Some(value),
            "since" => filter.since_ms = Some(parse_time("since", &value)?),
            "until" => filter.until_ms = Some(parse_time("until", &value)?),
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=200).contains(n))
                    .ok_or_else(|| {
                        ApiError::field("limit", "limit must be a number from 1 to 200")
                    })?;
            }
            "cursor" => {
                if !ids::is_request_id(&value) {
                    return Err(ApiError::field(
                        "cursor",
                        "cursor must be the next_cursor of a previous page",
                    ));
                }
                filter.before_request_id = Some(value);
            }
            "q" => {
                // An event id stands for the run it belongs to.
                let value = if ids::is_event_id(&value) {
                    state
                        .store
                        .run_of_event(value)
                        .await?
                        .ok_or_else(|| ApiError::NotFound("Run not found.".into()))?
                } else {
                    value
                };
                // A full request id jumps straight to that run.
                if ids::is_request_id(&value) {
                    let (run, _) = load_run(&state, &caller, value, "Run not found.").await?;
                    // Read as a list row, so it carries its delivery state like any other.
                    let items = state
                        .store
                        .list_runs(RunFilter {
                            request_id: Some(run.request_id),
                            limit: 1,
                            ..Default::default()
                        })
                        .await?;
                    return Ok(HttpResponse::Ok().json(RunList {
                        runs: items.iter().take(1).map(RunSummary::from_item).collect(),
                        next_cursor: None,
                    }));
                }
                return Err(ApiError::field(
                    "q",
                    "q must be a full request id (req_…) or event id (evt_…)",
                ));
            }
            other => match other.strip_prefix("meta.") {
                Some(key) if !key.is_empty() => filter
                    .meta
                    .push((key.to_string(), (!value.is_empty()).then_some(value))),
                _ => return Err(ApiError::field(other, format!("unknown filter: {other}"))),
            },
        }
    }
    // `invoke` keys see only the runs they started.
    if caller.role != Role::Admin {
        filter.api_key_id = Some(caller.key_id.clone());
    }
    let limit = filter.limit;
    let mut items = state.store.list_runs(filter).await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.run.request_id.clone())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(RunList {
        runs: items.iter().map(RunSummary::from_item).collect(),
        next_cursor,
    }))
}

/// Deletes finished runs that ended before `before`, with their steps, events and attempts,
/// in small transactions so invokes keep flowing. Runs whose event still waits for delivery
/// are kept.
#[utoipa::path(post, path = "/v1/runs/purge", operation_id = "purge_runs", tag = "runs",
    request_body = super::bodies::PurgeBody,
    responses(
        (status = 200, description = "How many runs were deleted", body = PurgeReply),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn purge(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let before = time_value("before", body.0.get("before"))?.ok_or_else(|| {
        ApiError::field(
            "before",
            "before is required: an RFC 3339 time or Unix milliseconds",
        )
    })?;
    let purged = state.store.purge_runs(before).await?;
    // Milliseconds, not `ids::rfc3339`: a `before` past year 9999 has no RFC 3339 form.
    tracing::info!(purged, before_ms = before, "runs purged");
    Ok(HttpResponse::Ok().json(PurgeReply {
        purged: purged as u64,
    }))
}
