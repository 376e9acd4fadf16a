//! Live runs over Server-Sent Events (SPEC §11): `GET /v1/runs/{id}/stream`, and the answer
//! of a sync invoke with `"stream": true`.
//!
//! A client subscribes to the run's feed first, then reads the stored run: the finished
//! steps (and the final event of an ended run) are replayed from the store, then the live
//! events follow, those already sent (same id) skipped. `Last-Event-ID` skips everything up
//! to that id. Ids are explained in [`crate::live::events`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::extract::Authed;
use super::requests::load_run;
use super::routing::endpoint;
use super::state::AppState;
use crate::actors::lifecycle::PreparedRun;
use crate::actors::live::AdmitStreamed;
use crate::error::ApiError;
use crate::keyring::Caller;
use crate::live::{events, Closed, Frame, Subscription};
use crate::store::runs::{RunRecord, StepRow};
use crate::store::RunStatus;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/runs/{id}/stream").get(stream));
}

/// One message of a live stream, as an SSE reader sees it (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, never built: the frames are written by `live::events`
pub struct StreamEvent {
    /// The event's sequence number in its run (see the README's Streaming section).
    #[schema(pattern = r"^[0-9]+$")]
    id: String,
    #[schema(
        pattern = r"^(run\.status|step\.started|output\.delta|step\.completed|approval\.requested|run\.completed|run\.failed|run\.cancelled)$"
    )]
    event: String,
    /// The event's JSON object, on one line.
    data: String,
}

/// How often an idle stream gets a `: keep-alive` comment. `HIVELET_STREAM_KEEPALIVE_MS`
/// shortens it for tests.
fn keep_alive() -> Duration {
    static EVERY: OnceLock<Duration> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("HIVELET_STREAM_KEEPALIVE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .filter(|ms| *ms > 0)
            .map_or(Duration::from_secs(15), Duration::from_millis)
    })
}

/// The run's events as SSE: the finished steps first (not old deltas), then live events
/// until the run ends.
#[utoipa::path(get, path = "/v1/runs/{id}/stream", operation_id = "stream_run", tag = "runs",
    params(
        ("id" = String, Path, description = "The run's `req_…` id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id: only events with a greater id are sent"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `run.status`, `step.started`, `output.delta`, `step.completed`, `approval.requested`, then `run.completed` / `run.failed` / `run.cancelled`; `: keep-alive` every 15 s", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "`Run not found.`", body = crate::error::ErrorEnvelope),
        (status = 503, description = "The daemon is stopping", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn stream(
    state: web::Data<AppState>,
    http: HttpRequest,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "hivelet is shutting down; reconnect shortly.".into(),
        ));
    }
    let after = last_event_id(&http);
    let id = id.into_inner();
    if !crate::ids::is_request_id(&id) {
        return Err(ApiError::NotFound("Run not found.".into()));
    }
    // Subscribed before reading the store: nothing that happens in between is lost.
    let mut sub = state.live.subscribe(&id);
    let (mut run, steps) = stored_run(&state, &caller, &id, &sub).await?;
    if run.status == RunStatus::Queued && sub.seen().running {
        run.status = RunStatus::Running;
    }
    let mut frames = events::replay(&run, &steps);
    if run.status.is_live() {
        frames.extend(sub.take_open());
        frames.sort_by_key(|f| f.id);
    }
    Ok(sse(sub, frames, after))
}

/// The stored run, once its trace shows at least what the hub had seen when `sub`
/// subscribed (a step's trace line is written just after its event is published).
async fn stored_run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    sub: &Subscription,
) -> Result<(RunRecord, Vec<StepRow>), ApiError> {
    let seen = sub.seen();
    let mut tries = 0;
    loop {
        let (run, steps) = load_run(state, caller, id.to_owned(), "Run not found.").await?;
        let caught_up = !run.status.is_live()
            || (events::finished_count(&steps) >= seen.finished
                && (!seen.waiting
                    || steps
                        .iter()
                        .any(|s| s.status == crate::store::StepStatus::Waiting)));
        tries += 1;
        if caught_up || tries >= 100 {
            return Ok((run, steps));
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `Last-Event-ID` as a number; anything else counts as none.
fn last_event_id(http: &HttpRequest) -> u64 {
    http.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What the response body still has to send.
struct Pump {
    sub: Subscription,
    pending: VecDeque<Frame>,
    /// The greatest id sent (or the client's `Last-Event-ID`): live events up to it are
    /// skipped.
    sent: u64,
    done: bool,
}

impl Pump {
    fn emit(&mut self, frame: Frame) -> Bytes {
        self.sent = frame.id;
        self.done = frame.last;
        frame.bytes
    }

    /// `frame` and every live event already waiting behind it, as one chunk: a reader of a
    /// busy run then costs one write per wake-up instead of one per event.
    fn emit_with_waiting(&mut self, frame: Frame) -> Bytes {
        let first = self.emit(frame);
        if self.done {
            return first;
        }
        let mut chunk: Option<BytesMut> = None;
        while let Some(next) = self.sub.try_next() {
            if next.id <= self.sent {
                continue;
            }
            let bytes = self.emit(next);
            chunk
                .get_or_insert_with(|| BytesMut::from(&first[..]))
                .extend_from_slice(&bytes);
            if self.done {
                break;
            }
        }
        chunk.map_or(first, BytesMut::freeze)
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        while let Some(frame) = self.pending.pop_front() {
            if frame.id > self.sent {
                return Some(Ok(self.emit(frame)));
            }
        }
        loop {
            match actix_rt::time::timeout(keep_alive(), self.sub.next()).await {
                Err(_) => return Some(Ok(Bytes::from_static(b": keep-alive\n\n"))),
                Ok(Ok(frame)) if frame.id > self.sent => {
                    return Some(Ok(self.emit_with_waiting(frame)))
                }
                Ok(Ok(_)) => {} // already sent, from the store
                Ok(Err(Closed::Ended)) => return None,
                Ok(Err(Closed::TooSlow)) => {
                    // An error, not an end: the connection is closed, not finished politely
                    // for a client that is not reading anyway.
                    self.done = true;
                    tracing::info!(request_id = %self.sub.request_id(), "live stream cut: the client reads too slowly");
                    return Some(Err(std::io::Error::other("the client reads too slowly")));
                }
            }
        }
    }
}

/// The `text/event-stream` response: `frames` (sorted by id) first, then live events.
fn sse(sub: Subscription, frames: Vec<Frame>, after: u64) -> HttpResponse {
    let pump = Pump {
        sub,
        pending: frames.into(),
        sent: after,
        done: false,
    };
    let body = futures_util::stream::unfold(pump, |mut pump| async move {
        let chunk = pump.next_chunk().await?;
        Some((chunk, pump))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// `"stream"` of an invoke body: absent, null or a boolean.
pub fn stream_flag(body: &Value) -> Result<bool, ApiError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::field("stream", "stream must be a boolean")),
    }
}

/// A sync invoke with `"stream": true`: the new run's events as SSE, from its `run.status`
/// to its final event.
pub async fn invoke_streamed(state: &AppState, run: PreparedRun) -> Result<HttpResponse, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable(
            "hivelet is shutting down; try again shortly.".into(),
        ));
    }
    let (request_id, sub) = state
        .invoker
        .send(AdmitStreamed {
            run,
            hub: state.live.clone(),
        })
        .await
        .map_err(|e| ApiError::internal(format!("invoke actor unavailable: {e}")))??;
    // Subscribed before the run's steps started: every event is live; the first names the run.
    let first = events::run_status(&request_id, RunStatus::Running);
    Ok(sse(sub, vec![first], 0))
}
