//! Live runs (SPEC §11): the hub that carries a run's events to the clients watching it, and
//! the events themselves.
//!
//! The [`Hub`] keeps one small feed per run that is executing (or paused, or watched): the
//! number of steps it has finished and the steps it is inside, so event ids stay consistent,
//! and the subscribers. Publishing to a run nobody watches only updates those counters;
//! deltas are skipped before any lookup when nobody watches any run. Each subscriber has a
//! bounded queue; one that falls behind (its client reads too slowly) is dropped, its stream
//! cut, rather than allowed to grow the daemon's memory.
//!
//! A client that connects late gets the finished steps from the store ([`events::replay`]),
//! then the live events; ids are chosen so both agree (see [`events`]), which is what lets a
//! client resume with `Last-Event-ID` and skip what it already saw.

pub mod events;
mod hub;

pub use events::{Frame, FINAL_ID};
pub use hub::{Closed, Hub, Seen, Subscription};

/// Tells the hub a run's steps start. A run recovered at start (or resumed after its
/// approval in another process) counts its finished steps from the stored trace, so the
/// ids of its next events follow those a client may already have seen.
pub async fn run_started(hub: &Hub, store: &crate::store::Store, request_id: &str, resumed: bool) {
    let mut finished = 0;
    if resumed && !hub.is_running(request_id) {
        match store.run_with_steps(request_id.to_owned()).await {
            Ok(Some((_, steps))) => finished = events::finished_count(&steps),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(request_id = %request_id, %err, "cannot count the run's finished steps for its live stream");
            }
        }
    }
    hub.run_started(request_id, finished);
}
