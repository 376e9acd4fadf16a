//! What every handler can reach: the shared [`AppState`]. A module of its own so that the
//! handler modules and the extractors depend on it without depending on `api/mod.rs`, which
//! depends on them.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use actix::Addr;

use crate::actors::{InvokeActor, RetrySupervisor};
use crate::config::Config;
use crate::deployments::Deployments;
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
    /// Woken when a schedule is created, edited or deleted.
    pub scheduler: Addr<crate::actors::scheduler::Scheduler>,
    /// (API key id, Idempotency-Key) of invokes still being answered.
    pub idempotency_in_flight: Mutex<HashSet<(String, String)>>,
    /// Set when a stop was asked for: new work gets 503.
    pub stopping: Arc<AtomicBool>,
    /// Runs' live events, for `GET /v1/runs/{id}/stream` and streamed invokes.
    pub live: crate::live::Hub,
}
