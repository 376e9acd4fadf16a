//! The Scheduler fires schedules. It sleeps until the earliest next fire (at most
//! [`MAX_SLEEP`], so a clock that jumped or a machine that slept is noticed soon), wakes
//! early on [`Wake`] (a schedule was created, edited or deleted), and then, for each active
//! schedule that is due, starts its runs through the InvokeActor. Each run is stored by the
//! schedule's fire in one transaction with the schedule's next fire ([`FireSchedule`]): a
//! crash neither loses nor doubles a fire, and the fires missed while hivelet was down are
//! found at the first tick, from the stored next fire, and follow `catch_up`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::invoke::{AdmitError, AdmitScheduled, InvokeActor, ScheduledFire};
use crate::deployments::Deployments;
use crate::ids;
use crate::schedules::timing::{plan, CatchUp};
use crate::schedules::{prepared_run, timetable};
use crate::store::{Advance, FireSchedule, ScheduleRecord, Store};

/// The longest sleep between two looks at the schedules.
const MAX_SLEEP: Duration = Duration::from_secs(10);
/// How soon to try again after a fire could not be stored (queue full, store busy).
const RETRY: Duration = Duration::from_secs(1);

/// Look at the schedules now (one was created, edited or deleted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

pub struct Scheduler {
    store: Store,
    deployments: Arc<Deployments>,
    invoker: Addr<InvokeActor>,
    timer: Option<SpawnHandle>,
    busy: bool,
    /// A wake came while a tick was running: tick again right after it.
    again: bool,
}

impl Scheduler {
    pub fn new(store: Store, deployments: Arc<Deployments>, invoker: Addr<InvokeActor>) -> Self {
        Scheduler {
            store,
            deployments,
            invoker,
            timer: None,
            busy: false,
            again: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let store = self.store.clone();
        let deployments = self.deployments.clone();
        let invoker = self.invoker.clone();
        let work = async move { fire_due(&store, &deployments, &invoker).await };
        ctx.spawn(work.into_actor(self).map(|wake_at, act, ctx| {
            act.busy = false;
            if std::mem::take(&mut act.again) {
                act.tick(ctx);
                return;
            }
            let now = ids::now_ms();
            let sleep = wake_at.map_or(MAX_SLEEP, |at| {
                Duration::from_millis((at - now).max(0) as u64).min(MAX_SLEEP)
            });
            act.timer = Some(ctx.run_later(sleep, |act, ctx| {
                act.timer = None;
                act.tick(ctx);
            }));
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
    }
}

impl Handler<Wake> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// Fires every due schedule; answers when to look again (`None`: nothing is scheduled).
async fn fire_due(
    store: &Store,
    deployments: &Deployments,
    invoker: &Addr<InvokeActor>,
) -> Option<i64> {
    let schedules = match store.schedules().await {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot read the schedules");
            return Some(ids::now_ms() + RETRY.as_millis() as i64);
        }
    };
    let mut wake_at: Option<i64> = None;
    let mut soonest = |at: i64| wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
    for schedule in schedules.iter().filter(|s| s.active) {
        let Some(next) = schedule.next_run_at else {
            continue;
        };
        let now = ids::now_ms();
        if next > now {
            soonest(next);
            continue;
        }
        match fire_one(store, deployments, invoker, schedule, next, now).await {
            Ok(Some(at)) => soonest(at),
            Ok(None) => {}
            Err(()) => soonest(now + RETRY.as_millis() as i64),
        }
    }
    wake_at
}

/// Starts the runs of one due schedule; answers its next fire. `Err` when a fire could not
/// be stored and should be tried again soon.
async fn fire_one(
    store: &Store,
    deployments: &Deployments,
    invoker: &Addr<InvokeActor>,
    schedule: &ScheduleRecord,
    next: i64,
    now: i64,
) -> Result<Option<i64>, ()> {
    let id = &schedule.schedule_id;
    let table = match timetable(schedule) {
        Ok(t) => t,
        Err(err) => {
            tracing::warn!(schedule_id = %id, %err, "schedule cannot be read; it does not fire");
            return Ok(None);
        }
    };
    let catch_up = CatchUp::parse(&schedule.catch_up).unwrap_or(CatchUp::Once);
    let plan = plan(&table, next, now, catch_up);
    if plan.fires.is_empty() {
        tracing::info!(schedule_id = %id, catch_up = catch_up.as_str(), "missed fires skipped");
        let advanced = store
            .write(FireSchedule {
                schedule_id: id.clone(),
                advance: Some(Advance {
                    expected_next: next,
                    next_run_at: plan.next_run_at,
                }),
                run: None,
                at: now,
            })
            .await;
        return match advanced {
            Ok(_) => Ok(plan.next_run_at),
            Err(err) => {
                tracing::warn!(schedule_id = %id, %err, "cannot store the schedule's next fire");
                Err(())
            }
        };
    }
    let mut expected = next;
    for (i, due) in plan.fires.iter().enumerate() {
        let next_run_at = plan.fires.get(i + 1).copied().or(plan.next_run_at);
        let advance = Advance {
            expected_next: expected,
            next_run_at,
        };
        let run = match prepared_run(schedule, deployments) {
            Ok(run) => run,
            Err(err) => {
                // Nothing can run now; the fire passes instead of being tried forever.
                tracing::warn!(schedule_id = %id, %err, "scheduled run not started");
                let _ = store
                    .write(FireSchedule {
                        schedule_id: id.clone(),
                        advance: Some(advance),
                        run: None,
                        at: now,
                    })
                    .await;
                return Ok(plan.next_run_at);
            }
        };
        let fire = ScheduledFire {
            schedule_id: id.clone(),
            scheduled_for: Some(*due),
            advance: Some(advance),
        };
        match invoker.send(AdmitScheduled { run, fire }).await {
            Ok(Ok(Some(admitted))) => {
                tracing::info!(schedule_id = %id, request_id = %admitted.request_id,
                    scheduled_for = %ids::rfc3339(*due), "schedule fired");
            }
            // Edited, paused or deleted meanwhile: the next tick reads it again.
            Ok(Ok(None)) => return Ok(Some(now)),
            Ok(Err(AdmitError::QueueFull { .. } | AdmitError::ConcurrencyLimit)) => {
                tracing::warn!(schedule_id = %id, "run queue full; the fire waits");
                return Err(());
            }
            Ok(Err(err)) => {
                tracing::warn!(schedule_id = %id, %err, "scheduled run not stored; the fire waits");
                return Err(());
            }
            Err(err) => {
                tracing::warn!(schedule_id = %id, %err, "invoke actor unavailable");
                return Err(());
            }
        }
        expected = next_run_at.unwrap_or(expected);
    }
    Ok(plan.next_run_at)
}
