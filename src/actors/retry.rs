//! The RetrySupervisor hands due events to DeliveryActors. What is due when, under the
//! per-destination limits and the circuit breaker, is decided by the pure
//! [`Schedule`](crate::delivery::schedule::Schedule), which keeps only a bounded window of the
//! soonest-due events in memory; this actor feeds it pages read from SQLite (off its thread),
//! sets its wake-up timer, and reports attempts back to it. SQLite stays the record: an event
//! leaves the store's due set only when an attempt says so.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::delivery::{AttemptFinished, Deliver, DeliveryActor, NoSecret};
use crate::config::Config;
use crate::delivery::schedule::{PageRequest, Schedule};
use crate::deployments::Deployments;
use crate::ids;
use crate::store::{DueEvent, Store, StoreResult};

pub use crate::delivery::schedule::destination_key;

/// How long to wait before reading a page again after a read failed.
const PAGE_RETRY: Duration = Duration::from_secs(1);

/// An event to deliver now or at its `next_attempt_at`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub DueEvent);

/// Counts for metrics and tests.
#[derive(Message)]
#[rtype(result = "SupervisorStats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, Default)]
pub struct SupervisorStats {
    /// Events held in memory waiting for their time or their destination (the rest of a
    /// backlog waits in the database).
    pub waiting: usize,
    /// The most events held in memory at once since start.
    pub waiting_peak: usize,
    pub in_flight: usize,
    pub paused_destinations: usize,
}

pub struct RetrySupervisor {
    store: Store,
    config: Arc<Config>,
    deployments: Arc<Deployments>,
    schedule: Schedule,
    deliverers: Vec<Addr<DeliveryActor>>,
    next_deliverer: usize,
    wakeup: Option<(i64, SpawnHandle)>,
}

impl RetrySupervisor {
    /// Reads the first page of the events still to deliver (not the whole backlog: start-up
    /// stays quick however many wait); the actor reads the rest as the window empties.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        deployments: Arc<Deployments>,
    ) -> StoreResult<Self> {
        let delivery = &config.file.delivery;
        let mut schedule = Schedule::new(delivery.schedule_window, delivery.per_host_concurrency);
        if let Some(PageRequest::Next { after, limit }) = schedule.next_page() {
            schedule.page_read(store.due_events_after_blocking(after, limit)?);
        }
        Ok(RetrySupervisor {
            store,
            config,
            deployments,
            schedule,
            deliverers: Vec::new(),
            next_deliverer: 0,
            wakeup: None,
        })
    }

    /// The signing secrets for an event: the current one, then a rotated-out one still valid.
    fn secrets(&self, deployment_key: &str, now_ms: i64) -> Result<Vec<String>, NoSecret> {
        let dep = self
            .deployments
            .get(deployment_key)
            .ok_or_else(|| NoSecret {
                deployment_key: deployment_key.to_string(),
            })?;
        Ok(dep
            .valid_secrets(now_ms)
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// Sends every due event whose destination has room; reads the next page when the window
    /// runs low; schedules the next wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = ids::now_ms();
        let due = self.schedule.take_due(now);
        for event in due.events {
            let secrets = self.secrets(&event.deployment_key, now);
            let deliverer = &self.deliverers[self.next_deliverer % self.deliverers.len()];
            self.next_deliverer = self.next_deliverer.wrapping_add(1);
            deliverer.do_send(Deliver {
                event,
                secrets,
                reply_to: ctx.address().recipient(),
            });
        }
        // After taking: the window refills while those attempts run.
        self.read_next_page(ctx);
        self.schedule_wakeup(due.wake_at, ctx);
    }

    /// Reads the next page in a blocking thread, so the actor keeps answering meanwhile.
    fn read_next_page(&mut self, ctx: &mut Context<Self>) {
        let Some(request) = self.schedule.next_page() else {
            return;
        };
        let store = self.store.clone();
        let read = async move {
            match request {
                PageRequest::Next { after, limit } => store.due_events_after(after, limit).await,
                PageRequest::Destination {
                    destination,
                    from,
                    until,
                    limit,
                } => {
                    let of_destination =
                        move |callback_url: &str| destination_key(callback_url) == destination;
                    store
                        .due_events_of(from, until, limit, of_destination)
                        .await
                }
            }
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(page) => {
                act.schedule.page_read(page);
                act.pump(ctx);
            }
            Err(err) => {
                tracing::error!(%err, "cannot read the next events to deliver; trying again");
                ctx.run_later(PAGE_RETRY, |act, ctx| {
                    act.schedule.page_failed();
                    act.pump(ctx);
                });
            }
        }));
    }

    fn schedule_wakeup(&mut self, at: Option<i64>, ctx: &mut Context<Self>) {
        let Some(at) = at else { return };
        if let Some((current, handle)) = self.wakeup.take() {
            if current <= at {
                self.wakeup = Some((current, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis((at - ids::now_ms()).max(0) as u64);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wakeup = None;
            act.pump(ctx);
        });
        self.wakeup = Some((at, handle));
    }
}

impl Actor for RetrySupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Each DeliveryActor owns its HTTP client; one per worker thread spreads the signing.
        let workers = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1)
            .clamp(1, 4);
        for _ in 0..workers {
            let store = self.store.clone();
            let config = self.config.clone();
            let arbiter = Arbiter::new();
            self.deliverers.push(DeliveryActor::start_in_arbiter(
                &arbiter.handle(),
                move |_| DeliveryActor::new(store, config),
            ));
        }
        let waiting = self.schedule.stats(ids::now_ms()).waiting;
        if waiting > 0 {
            tracing::info!(events = waiting, "resuming deliveries");
        }
        self.pump(ctx);
    }
}

impl Handler<Enqueue> for RetrySupervisor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.schedule.insert(msg.0);
        self.pump(ctx);
    }
}

impl Handler<AttemptFinished> for RetrySupervisor {
    type Result = ();

    fn handle(&mut self, msg: AttemptFinished, ctx: &mut Context<Self>) {
        self.schedule.finished(
            msg.event,
            msg.retry_at,
            msg.recorded,
            msg.counts_for_breaker,
            ids::now_ms(),
        );
        if let Some(next) = msg.promoted {
            self.schedule.insert(next);
        }
        self.pump(ctx);
    }
}

impl Handler<GetStats> for RetrySupervisor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let stats = self.schedule.stats(ids::now_ms());
        MessageResult(SupervisorStats {
            waiting: stats.waiting,
            waiting_peak: stats.waiting_peak,
            in_flight: stats.in_flight,
            paused_destinations: stats.paused_destinations,
        })
    }
}
