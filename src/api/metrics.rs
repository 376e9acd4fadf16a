//! `GET /metrics`: Prometheus (OpenMetrics) text, no auth, like `/healthz`. It exposes counts
//! and timings only, never ids, keys or payloads. Bind to loopback (the default) or put a
//! proxy in front if the port is reachable from elsewhere.

use actix_web::{web, HttpResponse};

use super::routing::endpoint;
use super::state::AppState;
use crate::actors::invoke::Load;
use crate::actors::retry::GetStats;
use crate::metrics::{self, LiveState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/metrics").get(scrape));
}

/// Runs by state, queue depth, run slots, run durations, deliveries by outcome, attempt
/// latency, events waiting, paused destinations, store batch sizes and commit latency.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", security(()),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    // The gauges describe the present, so they are read from the actors now.
    let load = state.invoker.send(Load).await.unwrap_or_default();
    let deliveries = state.supervisor.send(GetStats).await.unwrap_or_default();
    let registry = metrics::get();
    registry.set_live(&LiveState {
        slots_in_use: load.slots_in_use,
        slots_max: state.config.file.runs.max_concurrent,
        queued: load.queued,
        waiting_approval: load.waiting_approval,
        events_waiting: deliveries.waiting,
        events_waiting_peak: deliveries.waiting_peak,
        deliveries_in_flight: deliveries.in_flight,
        destinations_paused: deliveries.paused_destinations,
    });
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(registry.encode())
}
