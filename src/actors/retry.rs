//! The RetrySupervisor owns the schedule of events waiting for delivery. It keeps them in
//! memory ordered by due time (rebuilt from SQLite at start), enforces per-destination
//! concurrency and the circuit breaker, and hands due events to DeliveryActors. SQLite stays
//! the record: an event leaves the store's due set only when an attempt says so.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix::prelude::*;

use super::delivery::{AttemptFinished, Deliver, DeliveryActor};
use crate::config::Config;
use crate::delivery::policy::Breaker;
use crate::deployments::Deployments;
use crate::ids;
use crate::store::{DueEvent, Store};

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
    pub waiting: usize,
    pub in_flight: usize,
    pub paused_destinations: usize,
}

/// One (scheme, host, port): its attempts in flight, its breaker, and its waiting events.
#[derive(Default)]
struct Destination {
    in_flight: usize,
    breaker: Breaker,
    /// (due time, event id) of the events waiting for this destination, earliest first.
    due: BTreeSet<(i64, String)>,
}

impl Destination {
    fn head(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }
}

pub struct RetrySupervisor {
    store: Store,
    config: Arc<Config>,
    deployments: Arc<Deployments>,
    /// Waiting events by id, with their destination key.
    events: HashMap<String, (String, DueEvent)>,
    destinations: HashMap<String, Destination>,
    /// (earliest due time, destination key) of every destination with waiting events, so a
    /// pump looks at destinations, not at every event stuck behind a busy one.
    heads: BTreeSet<(i64, String)>,
    deliverers: Vec<Addr<DeliveryActor>>,
    next_deliverer: usize,
    wakeup: Option<(i64, SpawnHandle)>,
}

/// `scheme://host:port` of a callback URL: the unit of concurrency and circuit breaking.
pub fn destination_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

impl RetrySupervisor {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        deployments: Arc<Deployments>,
        pending: Vec<DueEvent>,
    ) -> Self {
        let mut sup = RetrySupervisor {
            store,
            config,
            deployments,
            events: HashMap::new(),
            destinations: HashMap::new(),
            heads: BTreeSet::new(),
            deliverers: Vec::new(),
            next_deliverer: 0,
            wakeup: None,
        };
        for event in pending {
            sup.insert(event);
        }
        sup
    }

    fn insert(&mut self, event: DueEvent) {
        self.remove_waiting(&event.event_id);
        let key = destination_key(&event.callback_url);
        let dest = self.destinations.entry(key.clone()).or_default();
        let before = dest.head();
        dest.due
            .insert((event.next_attempt_at, event.event_id.clone()));
        let after = dest.head();
        Self::move_head(&mut self.heads, &key, before, after);
        self.events.insert(event.event_id.clone(), (key, event));
    }

    /// Takes an event out of the waiting set (a redelivery replaces a waiting retry).
    fn remove_waiting(&mut self, event_id: &str) -> Option<DueEvent> {
        let (key, event) = self.events.remove(event_id)?;
        if let Some(dest) = self.destinations.get_mut(&key) {
            let before = dest.head();
            dest.due
                .remove(&(event.next_attempt_at, event.event_id.clone()));
            let after = dest.head();
            Self::move_head(&mut self.heads, &key, before, after);
        }
        Some(event)
    }

    /// Keeps `heads` in step with a destination's earliest due time.
    fn move_head(
        heads: &mut BTreeSet<(i64, String)>,
        key: &str,
        before: Option<i64>,
        after: Option<i64>,
    ) {
        if before == after {
            return;
        }
        if let Some(at) = before {
            heads.remove(&(at, key.to_string()));
        }
        if let Some(at) = after {
            heads.insert((at, key.to_string()));
        }
    }

    /// The signing secrets for an event: the current one, then a rotated-out one still valid.
    fn secrets(&self, deployment_key: &str, now_ms: i64) -> Result<Vec<String>, String> {
        let dep = self.deployments.get(deployment_key).ok_or_else(|| {
            format!("deployment {deployment_key} was deleted, so there is no secret to sign with")
        })?;
        Ok(dep
            .valid_secrets(now_ms)
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// Sends every due event whose destination has room; schedules the next wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = ids::now_ms();
        let per_host = self.config.file.delivery.per_host_concurrency;
        let mut next_wake: Option<i64> = self.heads.iter().map(|(at, _)| *at).find(|at| *at > now);
        let due_destinations: Vec<(i64, String)> = self
            .heads
            .iter()
            .take_while(|(at, _)| *at <= now)
            .cloned()
            .collect();
        let mut ready = Vec::new();
        for (head, key) in due_destinations {
            let dest = self
                .destinations
                .get_mut(&key)
                .expect("heads name known destinations");
            if let Some(until) = dest.breaker.paused_until(now) {
                // Paused: its events wait without using up attempts.
                next_wake = Some(next_wake.map_or(until, |w| w.min(until)));
                continue;
            }
            // A destination at its limit is pumped again by its next AttemptFinished.
            while dest.in_flight < per_host {
                match dest.due.first() {
                    Some((at, _)) if *at <= now => {
                        let (_, id) = dest.due.pop_first().expect("first exists");
                        dest.in_flight += 1;
                        ready.push(id);
                    }
                    Some((at, _)) => {
                        next_wake = Some(next_wake.map_or(*at, |w| w.min(*at)));
                        break;
                    }
                    None => break,
                }
            }
            let after = dest.head();
            Self::move_head(&mut self.heads, &key, Some(head), after);
        }
        for id in ready {
            let (_, event) = self.events.remove(&id).expect("due events are indexed");
            let secrets = self.secrets(&event.deployment_key, now);
            let deliverer = &self.deliverers[self.next_deliverer % self.deliverers.len()];
            self.next_deliverer = self.next_deliverer.wrapping_add(1);
            deliverer.do_send(Deliver {
                event,
                secrets,
                reply_to: ctx.address().recipient(),
            });
        }
        self.schedule_wakeup(next_wake, ctx);
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
        let delay = std::time::Duration::from_millis((at - ids::now_ms()).max(0) as u64);
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
        if !self.events.is_empty() {
            tracing::info!(events = self.events.len(), "resuming deliveries");
        }
        self.pump(ctx);
    }
}

impl Handler<Enqueue> for RetrySupervisor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.insert(msg.0);
        self.pump(ctx);
    }
}

impl Handler<AttemptFinished> for RetrySupervisor {
    type Result = ();

    fn handle(&mut self, msg: AttemptFinished, ctx: &mut Context<Self>) {
        let now = ids::now_ms();
        let dest = self
            .destinations
            .entry(destination_key(&msg.event.callback_url))
            .or_default();
        dest.in_flight = dest.in_flight.saturating_sub(1);
        if let Some(success) = msg.counts_for_breaker {
            dest.breaker.record(success, now);
        }
        if let Some(next_at) = msg.retry_at {
            let mut event = msg.event;
            event.next_attempt_at = next_at;
            self.insert(event);
        }
        self.pump(ctx);
    }
}

impl Handler<GetStats> for RetrySupervisor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let now = ids::now_ms();
        MessageResult(SupervisorStats {
            waiting: self.events.len(),
            in_flight: self.destinations.values().map(|d| d.in_flight).sum(),
            paused_destinations: self
                .destinations
                .values()
                .filter(|d| d.breaker.paused_until(now).is_some())
                .count(),
        })
    }
}
