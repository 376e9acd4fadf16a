//! `GET /healthz`: no auth, for service managers and load balancers.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::routing::endpoint;
use super::state::AppState;
use super::views::Health;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz").get(healthz));
}

/// Liveness: `ok`, or `stopping` with 503 while a shutdown drains.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "Stopping: new work is refused", body = Health),
    ))]
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.stopping.load(Ordering::Relaxed) {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "stopping".into(),
            version: None,
        })
    } else {
        HttpResponse::Ok().json(Health {
            status: "ok".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        })
    }
}
