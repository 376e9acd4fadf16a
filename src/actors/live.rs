//! Sync invokes whose caller watches the run over its live stream (SPEC §11).

use actix::prelude::*;

use super::invoke::{Admit, AdmitError, InvokeActor, Mode};
use super::lifecycle::PreparedRun;
use crate::live::{Hub, Subscription};

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
            rerun: None,
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
