//! The HTTP edge: parse, authenticate, validate, hand work to the actors, shape responses.
//! One file per resource; business rules live in the actors, the store and `workflow/`.
//!
//! This file only declares the modules and registers the routes. What the handler modules
//! share lives in modules that import none of them (`state`, `routing`, `extract`, `views`,
//! `invoke_body`, `admit`, `params`), so no module here imports one that imports it back.

pub mod access_log;
mod actor_errors;
pub mod admit;
pub mod approvals;
pub mod bodies;
pub mod deployments;
pub mod extract;
pub mod health;
pub mod invoke;
pub mod invoke_body;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod requests;
pub mod rerun;
pub mod responses;
pub mod routing;
pub mod runs;
pub mod schedules;
pub mod state;
pub mod stats;
pub mod stream;
pub mod triggers;
pub mod views;

use actix_web::web;

pub(crate) use routing::resource;
pub use routing::{not_found, served_routes};
pub use state::AppState;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    metrics::configure(cfg);
    openapi::configure(cfg);
    approvals::configure(cfg);
    invoke::configure(cfg);
    deployments::configure(cfg);
    keys::configure(cfg);
    // Before `requests`: `/v1/runs/purge` must not be taken for `/v1/runs/{id}`.
    rerun::configure(cfg);
    runs::configure(cfg);
    stats::configure(cfg);
    stream::configure(cfg);
    requests::configure(cfg);
    triggers::configure(cfg);
    schedules::configure(cfg);
}
