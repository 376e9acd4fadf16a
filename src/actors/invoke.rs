//! Admission. The InvokeActor assigns request ids, counts run slots, keeps the queue of
//! async runs waiting for a slot, and answers only after the run row is durable. Runs it
//! starts report back with `RunEnded`, which frees the slot for the next queued run. The
//! queue ([`FlowQueue`]) orders runs by priority and holds back those whose concurrency key
//! is at its limit (SPEC §12).
//!
//! It also keeps the runs paused at an approval step (`RunPaused`) in its `Approvals` book:
//! they hold no slot, stay `running` in the store, and go back to the front of the queue when
//! their step is answered (`Respond`) or times out.
//!
//! It answers in its own terms (`AdmitError`, `RespondError`); `api/` maps them to HTTP.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use super::approvals::{Approvals, PausedRun, Respond, RespondError};
use super::children::{ActorChildren, StartChild, WatchRun};
use super::flow::FlowQueue;
use super::lifecycle::{
    cancelled_approval_step, finish, AdmittedRun, Ending, PreparedRun, Reporting, RunEnded,
    RunOutcome, RunPaused,
};
use super::recovery::Recovered;
use super::retry::Enqueue;
use super::run::{CancelRun, RunActor};
use crate::config::Config;
use crate::deployments::Deployments;
use crate::ids;
use crate::live::Hub;
use crate::store::{
    Advance, AnswerApproval, FireSchedule, InsertChildRun, InsertRerun, InsertRun, MarkRunning,
    NewRun, RecordStep, RunStatus, StepRow, Store, StoreError,
};
use crate::workflow;
use crate::workflow::engine::{ApprovalAnswer, Resume};

/// How the caller waits for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The HTTP call waits for the output.
    Sync,
    /// The caller gets the request id at once; the result goes to `callback_url`.
    Async,
}

/// Admits a run: stores its row, then starts it, or queues it when no slot is free. Answers
/// once the row is durable.
#[derive(Message)]
#[rtype(result = "Result<Admitted, AdmitError>")]
pub struct Admit {
    pub run: PreparedRun,
    pub mode: Mode,
    /// Set when the run reruns an earlier one.
    pub rerun: Option<Rerun>,
}

/// What a rerun takes over from the run it reruns (see
/// [`rerun_lines`](super::recovery::rerun_lines)).
pub struct Rerun {
    /// The earlier run's request id (`rerun_of`).
    pub of: String,
    /// Its trace lines the rerun takes over, marked `reused`; stored with the new run's id,
    /// its admission time as their start and no attempts, in the same transaction as the
    /// run itself.
    pub reused: Vec<StepRow>,
    /// Where the rerun starts: after the reused steps.
    pub resume: Resume,
}

/// Why a run was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// Every run slot is taken (or the daemon is draining) and a sync caller cannot wait.
    #[error("every run slot is in use")]
    ConcurrencyLimit,
    /// No slot is free and the queue of async runs is full.
    #[error("the run queue is full ({max_queued} runs waiting)")]
    QueueFull {
        max_queued: usize,
        /// When a slot is likely to be free again.
        retry_after: Duration,
    },
    /// The run row could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Admitted {
    pub request_id: String,
    pub status: RunStatus,
    /// For sync calls: resolves when the run has ended and its result is durable.
    pub completion: Option<oneshot::Receiver<RunOutcome>>,
}

/// Ends a queued or running run as `cancelled`. Answers false when it is not live.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Cancel {
    pub request_id: String,
}

/// Stops starting queued runs; resolves when no run is running.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// How busy the InvokeActor is, for metrics.
#[derive(Message)]
#[rtype(result = "LoadStats")]
pub struct Load;

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadStats {
    /// Runs holding a run slot (running, or being written before they start).
    pub slots_in_use: usize,
    /// Async runs waiting for a slot.
    pub queued: usize,
    /// Runs paused at an approval step (they hold no slot).
    pub waiting_approval: usize,
}

pub struct InvokeActor {
    store: Store,
    config: Arc<Config>,
    supervisor: Recipient<Enqueue>,
    /// Built in `started`: awc clients belong to the thread that made them.
    env: Option<Rc<workflow::Environment>>,
    /// Runs holding a slot.
    running: HashMap<String, Addr<RunActor>>,
    /// Slots promised to runs whose row is still being written.
    starting: usize,
    /// Queued runs, by priority and concurrency key (SPEC §12).
    queue: FlowQueue,
    /// Runs waiting at an approval step, by request id; they hold no slot.
    paused: Approvals,
    /// Running runs asked to cancel. A run can hand itself back as paused after its
    /// RunActor stopped taking messages; the cancel is then carried out here.
    cancelling: HashSet<String>,
    draining: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// Where `workflow` steps find the deployments of their child runs.
    deployments: Arc<Deployments>,
    /// Live child runs (running, queued after a restart, or paused), with their parent's
    /// request id. They hold no slot: the parent holds one and waits for them.
    parents: HashMap<String, String>,
    /// Who waits for a run to end (parents of child runs), by request id.
    watchers: HashMap<String, Vec<oneshot::Sender<()>>>,
    /// Where runs publish their live events (SPEC §11).
    live: Hub,
}

impl InvokeActor {
    /// `recovered`: runs found `queued` or `running` at start (see
    /// [`recover`](super::recovery::recover)); they are
    /// queued again and start as slots allow, or wait again at their approval step.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        supervisor: Recipient<Enqueue>,
        deployments: Arc<Deployments>,
        recovered: Recovered,
    ) -> Self {
        // A child waiting at an approval step is live too: its parent's end must cancel it.
        let parents = recovered
            .paused
            .iter()
            .filter_map(|p| {
                let parent = p.run.prepared.parent_request_id.clone()?;
                Some((p.run.request_id.clone(), parent))
            })
            .collect();
        InvokeActor {
            store,
            config,
            supervisor,
            env: None,
            running: HashMap::new(),
            starting: 0,
            queue: FlowQueue::recovered(recovered.runs),
            paused: recovered.paused.into_iter().collect(),
            cancelling: HashSet::new(),
            draining: false,
            drain_waiters: Vec::new(),
            deployments,
            parents,
            watchers: HashMap::new(),
            live: Hub::default(),
        }
    }

    /// Publishes the runs' live events to `hub` (the one the HTTP handlers subscribe to).
    pub fn with_live(mut self, hub: Hub) -> Self {
        self.live = hub;
        self
    }

    /// Tells whoever waits for the run that it has ended (its end is stored, or could not
    /// be), and cancels its children still live: a parent that ended (cancelled, timed out,
    /// failed) no longer waits for them.
    fn run_gone(&mut self, request_id: &str, ctx: &mut Context<Self>) {
        self.parents.remove(request_id);
        for waiter in self.watchers.remove(request_id).unwrap_or_default() {
            let _ = waiter.send(());
        }
        let orphans: Vec<String> = self
            .parents
            .iter()
            .filter(|(_, parent)| parent.as_str() == request_id)
            .map(|(child, _)| child.clone())
            .collect();
        for child in orphans {
            tracing::info!(request_id = %child, parent = %request_id, "cancelling a child run whose parent ended");
            ctx.address().do_send(Cancel { request_id: child });
        }
    }

    /// Whether the run is queued, running or paused here.
    fn holds(&self, request_id: &str) -> bool {
        self.running.contains_key(request_id)
            || self.paused.contains(request_id)
            || self.queue.contains(request_id)
    }

    /// Ends a run waiting at its approval step as cancelled: the trace shows the step failed,
    /// and the returned future stores the end. `None` when the run is not paused.
    fn cancel_paused(
        &mut self,
        request_id: &str,
        ctx: &mut Context<Self>,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let mut paused = self.paused.remove(request_id)?;
        if let Some(timer) = paused.take_timer() {
            ctx.cancel_future(timer);
        }
        self.store
            .write_detached(RecordStep(cancelled_approval_step(
                request_id,
                &paused.waiting,
            )));
        let reporting = self.reporting();
        Some(async move { finish(&reporting, paused.run, Ending::Cancelled).await })
    }

    fn slots_in_use(&self) -> usize {
        let children = self
            .running
            .keys()
            .filter(|id| self.parents.contains_key(*id))
            .count();
        self.running.len() - children + self.starting
    }

    fn reporting(&self) -> Reporting {
        Reporting {
            store: self.store.clone(),
            supervisor: self.supervisor.clone(),
            live: self.live.clone(),
        }
    }

    fn start_run(&mut self, run: AdmittedRun, ctx: &mut Context<Self>) {
        let env = self.env.clone().expect("environment built in started()");
        let request_id = run.request_id.clone();
        if let Some(parent) = &run.prepared.parent_request_id {
            self.parents.insert(request_id.clone(), parent.clone());
        }
        let actor = RunActor::new(
            run,
            env,
            self.reporting(),
            ctx.address().recipient(),
            ctx.address().recipient(),
        )
        .start();
        self.running.insert(request_id, actor);
    }

    /// Fills free slots from the queue: highest priority first, then oldest, skipping runs
    /// whose concurrency key is at its limit. Child runs (queued only when recovered after
    /// a restart) start at once without a slot: their parents, which hold the slots, wait
    /// for them.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        for run in self.queue.take_children() {
            self.start_from_queue(run, ctx);
        }
        while !self.draining && self.slots_in_use() < self.config.file.runs.max_concurrent {
            let Some(run) = self.queue.pop_ready() else {
                break;
            };
            self.queue.hold(&run.request_id, &run.prepared);
            self.start_from_queue(run, ctx);
        }
    }

    /// Starts a run that waited in the queue; a resumed run keeps its first start time.
    fn start_from_queue(&mut self, mut run: AdmittedRun, ctx: &mut Context<Self>) {
        if run.resume.is_none() {
            run.started_at = ids::now_ms();
        }
        self.store.write_detached(MarkRunning {
            request_id: run.request_id.clone(),
            started_at: run.started_at,
        });
        self.start_run(run, ctx);
    }

    /// Answers waiters of a `Drain` once no run holds a slot.
    fn notify_if_idle(&mut self) {
        if self.running.is_empty() && self.starting == 0 {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Arms the timeout of a paused run's approval step (at once when it is already due).
    fn arm_timeout(&mut self, request_id: &str, ctx: &mut Context<Self>) {
        let Some(delay) = self.paused.timeout_in(request_id, ids::now_ms()) else {
            return;
        };
        let id = request_id.to_owned();
        let timer = ctx.run_later(delay, move |act, ctx| {
            if let Some(paused) = act.paused.time_out(&id) {
                tracing::info!(request_id = %id, "approval timed out");
                act.resume_paused(paused, ApprovalAnswer::TimedOut, ctx);
            }
        });
        self.paused.set_timer(request_id, timer);
    }

    /// Puts a run taken out of the book back at the front of the queue with its step's answer.
    fn resume_paused(
        &mut self,
        mut paused: PausedRun,
        answer: ApprovalAnswer,
        ctx: &mut Context<Self>,
    ) {
        if let Some(timer) = paused.take_timer() {
            ctx.cancel_future(timer);
        }
        // It was admitted (and ran) before anything in the queue was.
        self.queue.push_front(paused.answered(answer));
        self.start_queued(ctx);
    }
}

impl Actor for InvokeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let children = ActorChildren {
            store: self.store.clone(),
            deployments: self.deployments.clone(),
            start: ctx.address().recipient(),
            watch: ctx.address().recipient(),
        };
        self.env = Some(Rc::new(workflow_environment(
            &self.config,
            Rc::new(children),
            &self.live,
        )));
        if !self.queue.is_empty() {
            tracing::info!(
                runs = self.queue.len(),
                "resuming runs left queued or running"
            );
        }
        if !self.paused.is_empty() {
            tracing::info!(
                runs = self.paused.len(),
                "runs still wait at an approval step"
            );
        }
        for request_id in self.paused.request_ids() {
            self.arm_timeout(&request_id, ctx);
        }
        self.start_queued(ctx);
    }
}

/// The engine's view of the configuration: HTTP client, providers, command policy.
fn workflow_environment(
    config: &Config,
    children: Rc<dyn workflow::ChildRuns>,
    live: &Hub,
) -> workflow::Environment {
    let providers = config
        .file
        .providers
        .iter()
        .map(|(name, p)| {
            let api_key = p
                .api_key_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok())
                .filter(|k| !k.is_empty());
            (
                name.clone(),
                workflow::ProviderConfig {
                    base_url: p.base_url.clone(),
                    api_key,
                    prices: p
                        .prices
                        .iter()
                        .map(|(m, price)| (m.clone(), *price))
                        .collect(),
                },
            )
        })
        .collect();
    workflow::Environment {
        http: awc::Client::builder().disable_redirects().finish(),
        providers,
        allow_command_steps: config.file.security.allow_command_steps,
        deltas: workflow::DeltaSink::new(live.clone()),
        children: Some(children),
        capacity: Some(Rc::new(crate::flow::ProviderLimits::new(
            &config.file.providers,
        ))),
    }
}

impl Handler<Admit> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<Admitted, AdmitError>>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.admit(msg, None).map(|admitted, _, _| {
            admitted.map(|a| a.expect("a run without a schedule is always stored"))
        }))
    }
}

/// Admits a run a schedule starts (async, no caller waits): its row is stored by the
/// schedule's fire ([`FireSchedule`]), in the same transaction as the schedule's next fire.
/// Answers `None` when the fire was not stored because the schedule changed meanwhile.
#[derive(Message)]
#[rtype(result = "Result<Option<Admitted>, AdmitError>")]
pub struct AdmitScheduled {
    pub run: PreparedRun,
    pub fire: ScheduledFire,
}

/// Which schedule a run serves.
#[derive(Debug, Clone)]
pub struct ScheduledFire {
    pub schedule_id: String,
    /// The due time; `None` for a trigger.
    pub scheduled_for: Option<i64>,
    /// How the schedule's next fire moves; `None` for a trigger.
    pub advance: Option<Advance>,
}

impl Handler<AdmitScheduled> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<Option<Admitted>, AdmitError>>;

    fn handle(&mut self, msg: AdmitScheduled, _ctx: &mut Context<Self>) -> Self::Result {
        let admit = Admit {
            run: msg.run,
            mode: Mode::Async,
            rerun: None,
        };
        self.admit(admit, Some(msg.fire))
    }
}

impl InvokeActor {
    fn admit(
        &mut self,
        msg: Admit,
        fire: Option<ScheduledFire>,
    ) -> ResponseActFuture<Self, Result<Option<Admitted>, AdmitError>> {
        let limits = &self.config.file.runs;
        // A run whose concurrency key is at its limit waits like one without a slot.
        let slot_free = !self.draining
            && self.slots_in_use() < limits.max_concurrent
            && self.queue.has_room(&msg.run);
        let status = match (msg.mode, slot_free) {
            (_, true) => RunStatus::Running,
            (Mode::Sync, false) => return Box::pin(fut::ready(Err(AdmitError::ConcurrencyLimit))),
            (Mode::Async, false) if self.queue.len() >= limits.max_queued => {
                return Box::pin(fut::ready(Err(AdmitError::QueueFull {
                    max_queued: limits.max_queued,
                    retry_after: Duration::from_secs(1),
                })))
            }
            (Mode::Async, false) => RunStatus::Queued,
        };
        let request_id = ids::request_id();
        let now = ids::now_ms();
        let run = &msg.run;
        let row = NewRun {
            request_id: request_id.clone(),
            deployment_key: run.deployment.key.clone(),
            variant: run.variant.clone(),
            version: run.deployment.version,
            status,
            source: run.source,
            callback_url: run.callback_url.clone(),
            api_key_id: run.api_key_id.clone(),
            inputs_json: Value::Object(run.inputs.clone()).to_string(),
            metadata_json: Value::Object(run.metadata.clone()).to_string(),
            user: run.user.clone(),
            created_at: now,
            started_at: (status == RunStatus::Running).then_some(now),
            rerun_of: msg.rerun.as_ref().map(|r| r.of.clone()),
            parent_request_id: run.parent_request_id.clone(),
            schedule_id: fire.as_ref().map(|f| f.schedule_id.clone()),
            scheduled_for: fire.as_ref().and_then(|f| f.scheduled_for),
            events_json: run.events.to_stored(),
            priority: run.priority,
            concurrency_key: run.concurrency_key.clone(),
        };
        let (completion_tx, completion_rx) = match msg.mode {
            Mode::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Mode::Async => (None, None),
        };
        let mut admitted = AdmittedRun {
            request_id: request_id.clone(),
            prepared: msg.run,
            completion: completion_tx,
            started_at: now,
            resume: None,
            takeover: None,
            usage: None,
        };
        // A rerun's run row and the lines it takes over go in one transaction: a crash
        // keeps both (recovery then continues after the reused steps) or neither.
        let reused = msg.rerun.map(|rerun| {
            admitted.takeover = Some(rerun.resume);
            rerun
                .reused
                .into_iter()
                // Taken over as the rerun starts, without running: the new run's timeline
                // starts at its admission, not at the earlier run's.
                .map(|line| StepRow {
                    request_id: request_id.clone(),
                    started_at: now,
                    duration_ms: 0,
                    attempts: 0,
                    ..line
                })
                .collect::<Vec<_>>()
        });
        if status == RunStatus::Running {
            self.starting += 1;
            // Counted now: another run with the same key admitted meanwhile must see it.
            self.queue.hold(&request_id, &admitted.prepared);
        }
        let store = self.store.clone();
        Box::pin(
            async move { store_admitted(&store, row, reused, fire, now).await }
                .into_actor(self)
                .map(move |stored, act, ctx| {
                    if status == RunStatus::Running {
                        act.starting -= 1;
                    }
                    // The run's concurrency key was held for it before the write.
                    let stored = match stored {
                        Ok(stored) => stored,
                        Err(err) => {
                            act.queue.release(&request_id);
                            act.start_queued(ctx);
                            return Err(err.into());
                        }
                    };
                    if !stored {
                        act.queue.release(&request_id);
                        act.start_queued(ctx);
                        act.notify_if_idle();
                        return Ok(None);
                    }
                    let mode = match completion_rx {
                        Some(_) => "sync",
                        None => "async",
                    };
                    crate::metrics::get()
                        .runs_admitted
                        .get_or_create(&crate::metrics::ModeLabel { mode })
                        .inc();
                    // The row is durable: now the caller may be told, and the run may start.
                    match status {
                        RunStatus::Running => act.start_run(admitted, ctx),
                        _ => {
                            act.queue.push_back(admitted);
                            act.start_queued(ctx);
                        }
                    }
                    Ok(Some(Admitted {
                        request_id,
                        status,
                        completion: completion_rx,
                    }))
                }),
        )
    }
}

/// Stores an admitted run: on its own, with the lines a rerun takes over, or by its schedule's
/// fire (a scheduled run is never a rerun). Answers false when the fire
/// was not stored (the schedule changed meanwhile).
async fn store_admitted(
    store: &Store,
    row: NewRun,
    reused: Option<Vec<StepRow>>,
    fire: Option<ScheduledFire>,
    at: i64,
) -> Result<bool, StoreError> {
    match (fire, reused) {
        (None, None) => store.write(InsertRun(row)).await.map(|()| true),
        (None, Some(reused)) => store
            .write(InsertRerun { run: row, reused })
            .await
            .map(|()| true),
        (Some(fire), _) => {
            store
                .write(FireSchedule {
                    schedule_id: fire.schedule_id,
                    advance: fire.advance,
                    run: Some(row),
                    at,
                })
                .await
        }
    }
}

impl Handler<RunEnded> for InvokeActor {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.request_id);
        self.queue.release(&msg.request_id);
        self.cancelling.remove(&msg.request_id);
        self.run_gone(&msg.request_id, ctx);
        self.start_queued(ctx);
        self.notify_if_idle();
    }
}

impl Handler<RunPaused> for InvokeActor {
    type Result = ();

    fn handle(&mut self, msg: RunPaused, ctx: &mut Context<Self>) {
        let request_id = msg.run.request_id.clone();
        self.running.remove(&request_id);
        self.queue.release(&request_id);
        self.paused.insert(msg.run, msg.waiting);
        if self.cancelling.remove(&request_id) {
            if let Some(cancelled) = self.cancel_paused(&request_id, ctx) {
                let id = request_id.clone();
                ctx.spawn(
                    cancelled
                        .into_actor(self)
                        .map(move |(), act, ctx| act.run_gone(&id, ctx)),
                );
            }
        } else {
            self.arm_timeout(&request_id, ctx);
        }
        self.start_queued(ctx);
        self.notify_if_idle();
    }
}

impl Handler<Respond> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<(), RespondError>>;

    fn handle(&mut self, msg: Respond, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = self.paused.begin_answer(&msg.request_id, &msg.step_id) {
            return Box::pin(fut::ready(Err(err)));
        }
        let store = self.store.clone();
        let write = AnswerApproval {
            request_id: msg.request_id.clone(),
            step_id: msg.step_id.clone(),
            response_json: msg.output.to_string(),
            at: ids::now_ms(),
        };
        Box::pin(async move { store.write(write).await }.into_actor(self).map(
            move |written, act, ctx| {
                let stored = written;
                let paused = act
                    .paused
                    .end_answer(&msg.request_id, &msg.step_id, stored)?;
                tracing::info!(request_id = %msg.request_id, step = %msg.step_id, "approval answered");
                act.resume_paused(paused, ApprovalAnswer::Given(msg.output), ctx);
                Ok(())
            },
        ))
    }
}

impl Handler<Cancel> for InvokeActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(actor) = self.running.get(&msg.request_id) {
            actor.do_send(CancelRun);
            self.cancelling.insert(msg.request_id);
            return Box::pin(fut::ready(true));
        }
        if let Some(cancelled) = self.cancel_paused(&msg.request_id, ctx) {
            let request_id = msg.request_id;
            return Box::pin(cancelled.into_actor(self).map(move |(), act, ctx| {
                act.run_gone(&request_id, ctx);
                true
            }));
        }
        let Some(run) = self.queue.remove(&msg.request_id) else {
            return Box::pin(fut::ready(false));
        };
        let reporting = self.reporting();
        let request_id = msg.request_id;
        Box::pin(
            async move { finish(&reporting, run, Ending::Cancelled).await }
                .into_actor(self)
                .map(move |(), act, ctx| {
                    act.run_gone(&request_id, ctx);
                    true
                }),
        )
    }
}

impl Handler<StartChild> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<String, StoreError>>;

    fn handle(&mut self, msg: StartChild, _ctx: &mut Context<Self>) -> Self::Result {
        let request_id = ids::request_id();
        let now = ids::now_ms();
        let run = &msg.run;
        let row = NewRun {
            request_id: request_id.clone(),
            deployment_key: run.deployment.key.clone(),
            variant: run.variant.clone(),
            version: run.deployment.version,
            status: RunStatus::Running,
            source: run.source,
            callback_url: None,
            api_key_id: run.api_key_id.clone(),
            inputs_json: Value::Object(run.inputs.clone()).to_string(),
            metadata_json: Value::Object(run.metadata.clone()).to_string(),
            user: run.user.clone(),
            created_at: now,
            started_at: Some(now),
            rerun_of: None,
            parent_request_id: run.parent_request_id.clone(),
            schedule_id: None,
            scheduled_for: None,
            events_json: None,
            priority: run.priority,
            concurrency_key: None,
        };
        let mut waiting = msg.waiting;
        waiting.child_request_id = Some(request_id.clone());
        let admitted = AdmittedRun {
            request_id: request_id.clone(),
            prepared: msg.run,
            completion: None,
            started_at: now,
            resume: None,
            takeover: None,
            usage: None,
        };
        let store = self.store.clone();
        Box::pin(
            async move {
                store
                    .write(InsertChildRun {
                        run: row,
                        step: waiting,
                    })
                    .await
            }
            .into_actor(self)
            .map(move |stored, act, ctx| {
                stored?;
                tracing::info!(request_id = %request_id, parent = ?admitted.prepared.parent_request_id, "child run started");
                act.start_run(admitted, ctx);
                Ok(request_id)
            }),
        )
    }
}

impl Handler<WatchRun> for InvokeActor {
    type Result = MessageResult<WatchRun>;

    fn handle(&mut self, msg: WatchRun, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.holds(&msg.request_id) {
            self.watchers.entry(msg.request_id).or_default().push(tx);
        } else {
            let _ = tx.send(());
        }
        MessageResult(rx)
    }
}

impl Handler<Drain> for InvokeActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        if self.running.is_empty() && self.starting == 0 {
            return Box::pin(fut::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self),
        )
    }
}

impl Handler<Load> for InvokeActor {
    type Result = MessageResult<Load>;

    fn handle(&mut self, _: Load, _: &mut Context<Self>) -> Self::Result {
        // Paused runs hold no slot and are not queued.
        MessageResult(LoadStats {
            slots_in_use: self.slots_in_use(),
            queued: self.queue.len(),
            waiting_approval: self.paused.len(),
        })
    }
}
