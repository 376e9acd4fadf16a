//! The HTTP edge: parse, authenticate, validate, hand work to the actors, shape responses.
//! One file per resource; business rules live in the actors, the store and `workflow/`.

pub mod approvals;
pub mod deployments;
pub mod extract;
pub mod health;
pub mod invoke;
pub mod keys;
pub mod requests;
pub mod runs;
pub mod triggers;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, Resource};

use crate::actors::{InvokeActor, RetrySupervisor};
use crate::config::Config;
use crate::deployments::Deployments;
use crate::error::ApiError;
use crate::keyring::KeyRing;
use crate::store::Store;

/// What every handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub deployments: Arc<Deployments>,
    pub keys: Arc<KeyRing>,
    pub invoker: Addr<InvokeActor>,
    pub supervisor: Addr<RetrySupervisor>,
    /// (API key id, Idempotency-Key) of invokes still being answered.
    pub idempotency_in_flight: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Set when a stop was asked for: new work gets 503.
    pub stopping: Arc<AtomicBool>,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    approvals::configure(cfg);
    invoke::configure(cfg);
    deployments::configure(cfg);
    keys::configure(cfg);
    requests::configure(cfg);
    runs::configure(cfg);
    triggers::configure(cfg);
}

/// A resource whose wrong methods answer 405 in the envelope.
pub(crate) fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

/// Unknown routes answer 404 in the envelope.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route.".into()))
}
