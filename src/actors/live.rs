//! The run actor's side of live streams (SPEC §11) that needs the store.

use actix::prelude::*;

use super::invoke::{Admit, AdmitError, InvokeActor, Mode};
use super::lifecycle::PreparedRun;
use crate::live::{Hub, Subscription};
use crate::store::Store;

/// Tells the hub a run's steps start. A run recovered at start (or resumed after its
/// approval in another process) counts its finished steps from the stored trace, so the
/// ids of its next events follow those a client may already have seen.
pub(super) async fn run_started(hub: &Hub, store: &Store, request_id: &str, resumed: bool) {
    let mut finished = 0;
    if resumed && !hub.is_running(request_id) {
        match store.run_with_steps(request_id.to_owned()).await {
            Ok(Some((_, steps))) => finished = crate::live::events::finished_count(&steps),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(request_id = %request_id, %err, "cannot count the run's finished steps for its live stream");
            }
        }
    }
    hub.run_started(request_id, finished);
}

/// Admits a sync run whose caller watches it live: like [`Admit`] in sync mode, and the
/// caller is subscribed to the run before its steps start, so it misses none of its events.
/// Answers the request id and the subscription.
#[derive(Message)]
#[rtype(result = "Result<(String, Subscription), AdmitError>")]
pub struct AdmitStreamed {
    pub run: PreparedRun,
    /// The hub the run publishes to.
    pub hub: Hub,
}

impl Handler<AdmitStreamed> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<(String, Subscription), AdmitError>>;

    fn handle(&mut self, msg: AdmitStreamed, ctx: &mut Context<Self>) -> Self::Result {
        let hub = msg.hub;
        let admit = Admit {
            run: msg.run,
            mode: Mode::Sync,
        };
        // The run's actor is started inside `Admit`'s answer, on this thread; its steps run
        // only once this turn is over, after the subscription below.
        let admitted = <Self as Handler<Admit>>::handle(self, admit, ctx);
        Box::pin(admitted.map(move |admitted, _, _| {
            let admitted = admitted?;
            let sub = hub.subscribe(&admitted.request_id);
            Ok((admitted.request_id, sub))
        }))
    }
}
