//! Retention (`[retention] runs`): a periodic sweep deletes finished runs older than the
//! configured age, with their steps, events and attempts. Each sweep goes through the store
//! writer in small batches ([`crate::store::PURGE_BATCH_RUNS`]), so invokes queued behind it
//! wait for one batch at most, never for the whole sweep.

use std::time::Duration;

use actix::prelude::*;

use crate::ids;
use crate::store::Store;

/// The first sweep runs this long after start, so start-up work comes first.
const FIRST_SWEEP_DELAY: Duration = Duration::from_secs(1);

/// How often to sweep for a given retention: a tenth of it, between 1 s and 10 min, so a
/// run outlives its retention by at most 10 % (or 10 min).
pub fn sweep_interval(keep: Duration) -> Duration {
    (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

pub struct Retention {
    store: Store,
    /// How long a finished run is kept after it ended.
    keep: Duration,
    /// A sweep is running; the next tick is skipped rather than stacked.
    sweeping: bool,
}

impl Retention {
    pub fn new(store: Store, keep: Duration) -> Self {
        Retention {
            store,
            keep,
            sweeping: false,
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let keep_ms = i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX);
        let ended_before = ids::now_ms().saturating_sub(keep_ms);
        let work = async move { store.purge_runs(ended_before).await };
        ctx.spawn(work.into_actor(self).map(move |result, act, _| {
            act.sweeping = false;
            match result {
                Ok(0) => {}
                Ok(purged) => tracing::info!(
                    purged,
                    ended_before = %ids::rfc3339(ended_before),
                    "retention: old runs deleted"
                ),
                Err(err) => tracing::warn!(%err, "retention: sweep failed; trying again later"),
            }
        }));
    }
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = sweep_interval(self.keep);
        tracing::info!(keep = %humantime::format_duration(self.keep), every = ?every, "retention on");
        ctx.run_later(FIRST_SWEEP_DELAY, Retention::sweep);
        ctx.run_interval(every, Retention::sweep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_often_enough_but_not_too_often() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(sweep_interval(30 * day), Duration::from_secs(600));
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
    }
}
