//! `GET /healthz`: no auth, for service managers and load balancers.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{resource, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)));
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.stopping.load(Ordering::Relaxed) {
        HttpResponse::ServiceUnavailable().json(json!({"status": "stopping"}))
    } else {
        HttpResponse::Ok().json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
    }
}
