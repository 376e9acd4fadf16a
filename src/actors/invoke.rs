//! Admission. The InvokeActor assigns request ids, counts run slots, keeps the queue of
//! async runs waiting for a slot, and answers only after the run row is durable. Runs it
//! starts report back with `RunEnded`, which frees the slot for the next queued run.
//!
//! It also keeps the runs paused at an approval step (`RunPaused`): they hold no slot, stay
//! `running` in the store, and go back to the front of the queue when their step is answered
//! (`Respond`) or times out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::retry::Enqueue;
use super::run::{self, CancelRun, Ending, Reporting, RunActor, RunOutcome, Waiting};
use crate::config::Config;
use crate::deployments::LiveDeployment;
use crate::error::ApiError;
use crate::ids;
use crate::store::{
    AnswerApproval, FinishRun, InsertRun, MarkRunning, NewRun, RecordStep, RunSource, RunStatus,
    StepStatus, Store,
};
use crate::workflow;
use crate::workflow::engine::{Approval, ApprovalAnswer, Resume};

/// How the caller waits for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The HTTP call waits for the output.
    Sync,
    /// The caller gets the request id at once; the result goes to `callback_url`.
    Async,
}

/// A validated invoke, ready to be stored and run.
pub struct PreparedRun {
    pub deployment: Arc<LiveDeployment>,
    pub variant: String,
    pub inputs: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    pub callback_url: Option<String>,
    pub source: RunSource,
    pub api_key_id: Option<String>,
}

/// A run admitted and waiting for its slot, or running.
pub struct AdmittedRun {
    pub request_id: String,
    pub prepared: PreparedRun,
    pub completion: Option<oneshot::Sender<RunOutcome>>,
    /// When the run (last) started, Unix ms.
    pub started_at: i64,
    /// `None` for a run that never started. Otherwise what its earlier executions did (it
    /// ran before a restart, or waited at an approval step): it continues from there and
    /// keeps its first `started_at`.
    pub resume: Option<Resume>,
}

#[derive(Message)]
#[rtype(result = "Result<Admitted, ApiError>")]
pub struct Admit {
    pub run: PreparedRun,
    pub mode: Mode,
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

/// Sent by a RunActor when its run has ended (and its terminal state is stored).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunEnded {
    pub request_id: String,
}

/// Sent by a RunActor when its run waits at an approval step (the `waiting` trace line is
/// stored). The run, with its `resume` filled in, comes back to the InvokeActor, which frees
/// its slot and arms the step's timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunPaused {
    pub run: AdmittedRun,
    pub waiting: Waiting,
}

/// Answers the approval step a run waits at, with the step's output (already checked
/// against the step's choices, see `workflow::engine::approval_output`). The answer is
/// stored durably, then the run continues. Errors: `Conflict` when the run does not wait at
/// that step (any more), or the store's error.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Respond {
    pub request_id: String,
    pub step_id: String,
    pub output: Value,
}

/// A run waiting at an approval step.
pub struct PausedRun {
    pub run: AdmittedRun,
    pub waiting: Waiting,
    /// An answer is being stored: a second answer and the timeout give way to it.
    answering: bool,
    timer: Option<SpawnHandle>,
}

/// What a previous process left unfinished, found at start.
pub struct Recovered {
    /// Runs to queue again, oldest first.
    pub runs: Vec<AdmittedRun>,
    /// Runs waiting at an approval step without an answer.
    pub paused: Vec<PausedRun>,
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
    queue: VecDeque<AdmittedRun>,
    /// Runs waiting at an approval step, by request id; they hold no slot.
    paused: HashMap<String, PausedRun>,
    /// Running runs asked to cancel. A run can hand itself back as paused after its
    /// RunActor stopped taking messages; the cancel is then carried out here.
    cancelling: HashSet<String>,
    draining: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl InvokeActor {
    /// `recovered`: runs found `queued` or `running` at start (see [`recover`]); they are
    /// queued again and start as slots allow, or wait again at their approval step.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        supervisor: Recipient<Enqueue>,
        recovered: Recovered,
    ) -> Self {
        InvokeActor {
            store,
            config,
            supervisor,
            env: None,
            running: HashMap::new(),
            starting: 0,
            queue: recovered.runs.into(),
            paused: recovered
                .paused
                .into_iter()
                .map(|p| (p.run.request_id.clone(), p))
                .collect(),
            cancelling: HashSet::new(),
            draining: false,
            drain_waiters: Vec::new(),
        }
    }

    /// Ends a run waiting at its approval step as cancelled: the trace shows the step failed,
    /// and the returned future stores the end. `None` when the run is not paused.
    fn cancel_paused(
        &mut self,
        request_id: &str,
        ctx: &mut Context<Self>,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let paused = self.paused.remove(request_id)?;
        if let Some(timer) = paused.timer {
            ctx.cancel_future(timer);
        }
        self.store
            .write_detached(RecordStep(run::cancelled_approval_step(
                request_id,
                &paused.waiting,
            )));
        let reporting = self.reporting();
        Some(async move { run::finish(&reporting, paused.run, Ending::Cancelled).await })
    }

    fn slots_in_use(&self) -> usize {
        self.running.len() + self.starting
    }

    fn reporting(&self) -> Reporting {
        Reporting {
            store: self.store.clone(),
            supervisor: self.supervisor.clone(),
        }
    }

    fn start_run(&mut self, run: AdmittedRun, ctx: &mut Context<Self>) {
        let env = self.env.clone().expect("environment built in started()");
        let request_id = run.request_id.clone();
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

    /// Fills free slots from the queue, oldest first.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        while !self.draining && self.slots_in_use() < self.config.file.runs.max_concurrent {
            let Some(mut run) = self.queue.pop_front() else {
                break;
            };
            if run.resume.is_none() {
                run.started_at = ids::now_ms();
            }
            self.store.write_detached(MarkRunning {
                request_id: run.request_id.clone(),
                started_at: run.started_at,
            });
            self.start_run(run, ctx);
        }
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
        let Some(paused) = self.paused.get_mut(request_id) else {
            return;
        };
        let Some(at) = paused.waiting.timeout_at_ms else {
            return;
        };
        let delay = Duration::from_millis(u64::try_from(at - ids::now_ms()).unwrap_or(0));
        let id = request_id.to_owned();
        paused.timer = Some(ctx.run_later(delay, move |act, ctx| {
            let timed_out = act.paused.get_mut(&id).is_some_and(|p| {
                p.timer = None;
                !p.answering
            });
            if timed_out {
                tracing::info!(request_id = %id, "approval timed out");
                act.resume_paused(&id, ApprovalAnswer::TimedOut, ctx);
            }
        }));
    }

    /// Puts a paused run back at the front of the queue with its step's answer.
    fn resume_paused(&mut self, request_id: &str, answer: ApprovalAnswer, ctx: &mut Context<Self>) {
        let Some(paused) = self.paused.remove(request_id) else {
            return;
        };
        if let Some(timer) = paused.timer {
            ctx.cancel_future(timer);
        }
        let PausedRun {
            mut run, waiting, ..
        } = paused;
        run.resume
            .get_or_insert_with(Resume::default)
            .approvals
            .insert(
                waiting.step_id,
                Approval {
                    waiting_since_ms: waiting.since_ms,
                    answer,
                },
            );
        // It was admitted (and ran) before anything in the queue was.
        self.queue.push_front(run);
        self.start_queued(ctx);
    }
}

impl Actor for InvokeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.env = Some(Rc::new(workflow_environment(&self.config)));
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
        let paused: Vec<String> = self.paused.keys().cloned().collect();
        for request_id in paused {
            self.arm_timeout(&request_id, ctx);
        }
        self.start_queued(ctx);
    }
}

/// The engine's view of the configuration: HTTP client, providers, command policy.
fn workflow_environment(config: &Config) -> workflow::Environment {
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
                },
            )
        })
        .collect();
    workflow::Environment {
        http: awc::Client::builder().disable_redirects().finish(),
        providers,
        allow_command_steps: config.file.security.allow_command_steps,
    }
}

impl Handler<Admit> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<Admitted, ApiError>>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Context<Self>) -> Self::Result {
        let limits = &self.config.file.runs;
        let slot_free = !self.draining && self.slots_in_use() < limits.max_concurrent;
        let status = match (msg.mode, slot_free) {
            (_, true) => RunStatus::Running,
            (Mode::Sync, false) => return Box::pin(fut::ready(Err(ApiError::ConcurrencyLimit))),
            (Mode::Async, false) if self.queue.len() >= limits.max_queued => {
                return Box::pin(fut::ready(Err(ApiError::QueueFull {
                    max_queued: limits.max_queued,
                    retry_after_secs: 1,
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
        };
        let (completion_tx, completion_rx) = match msg.mode {
            Mode::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Mode::Async => (None, None),
        };
        let admitted = AdmittedRun {
            request_id: request_id.clone(),
            prepared: msg.run,
            completion: completion_tx,
            started_at: now,
            resume: None,
        };
        if status == RunStatus::Running {
            self.starting += 1;
        }
        let store = self.store.clone();
        Box::pin(
            async move { store.write(InsertRun(row)).await }
                .into_actor(self)
                .map(move |stored, act, ctx| {
                    if status == RunStatus::Running {
                        act.starting -= 1;
                    }
                    stored?;
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
                    Ok(Admitted {
                        request_id,
                        status,
                        completion: completion_rx,
                    })
                }),
        )
    }
}

impl Handler<RunEnded> for InvokeActor {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.request_id);
        self.cancelling.remove(&msg.request_id);
        self.start_queued(ctx);
        self.notify_if_idle();
    }
}

impl Handler<RunPaused> for InvokeActor {
    type Result = ();

    fn handle(&mut self, msg: RunPaused, ctx: &mut Context<Self>) {
        let request_id = msg.run.request_id.clone();
        self.running.remove(&request_id);
        self.paused.insert(
            request_id.clone(),
            PausedRun {
                run: msg.run,
                waiting: msg.waiting,
                answering: false,
                timer: None,
            },
        );
        if self.cancelling.remove(&request_id) {
            if let Some(cancelled) = self.cancel_paused(&request_id, ctx) {
                ctx.spawn(cancelled.into_actor(self));
            }
        } else {
            self.arm_timeout(&request_id, ctx);
        }
        self.start_queued(ctx);
        self.notify_if_idle();
    }
}

impl Handler<Respond> for InvokeActor {
    type Result = ResponseActFuture<Self, Result<(), ApiError>>;

    fn handle(&mut self, msg: Respond, _ctx: &mut Context<Self>) -> Self::Result {
        let step = msg.step_id.clone();
        let not_waiting =
            move || ApiError::Conflict(format!("Step {step} is not waiting for a response."));
        let Some(paused) = self
            .paused
            .get_mut(&msg.request_id)
            .filter(|p| p.waiting.step_id == msg.step_id)
        else {
            return Box::pin(fut::ready(Err(not_waiting())));
        };
        if paused.answering {
            return Box::pin(fut::ready(Err(ApiError::Conflict(format!(
                "Step {} is already being answered.",
                msg.step_id
            )))));
        }
        paused.answering = true;
        let store = self.store.clone();
        let write = AnswerApproval {
            request_id: msg.request_id.clone(),
            step_id: msg.step_id.clone(),
            response_json: msg.output.to_string(),
            at: ids::now_ms(),
        };
        Box::pin(async move { store.write(write).await }.into_actor(self).map(
            move |written, act, ctx| {
                let still_paused = act
                    .paused
                    .get_mut(&msg.request_id)
                    .filter(|p| p.waiting.step_id == msg.step_id);
                match (written, still_paused) {
                    (Ok(true), Some(_)) => {
                        tracing::info!(request_id = %msg.request_id, step = %msg.step_id, "approval answered");
                        act.resume_paused(&msg.request_id, ApprovalAnswer::Given(msg.output), ctx);
                        Ok(())
                    }
                    // Cancelled while the answer was being stored.
                    (Ok(_), None) => Err(ApiError::Conflict(
                        "The run ended while the response was being saved.".into(),
                    )),
                    (Ok(_), Some(p)) => {
                        p.answering = false;
                        Err(not_waiting())
                    }
                    (Err(err), p) => {
                        if let Some(p) = p {
                            p.answering = false;
                        }
                        Err(err.into())
                    }
                }
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
            return Box::pin(
                async move {
                    cancelled.await;
                    true
                }
                .into_actor(self),
            );
        }
        let Some(pos) = self
            .queue
            .iter()
            .position(|r| r.request_id == msg.request_id)
        else {
            return Box::pin(fut::ready(false));
        };
        let run = self.queue.remove(pos).expect("position is in range");
        let reporting = self.reporting();
        Box::pin(
            async move {
                run::finish(&reporting, run, Ending::Cancelled).await;
                true
            }
            .into_actor(self),
        )
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

/// Rebuilds the runs a previous process left `queued` or `running`, oldest first, each with
/// the deployment version it was admitted with. Their earlier step records stay in the trace.
/// A run that was `running` continues after its last finished step (see
/// `run::trace_point`); one waiting at an approval step without an answer waits again.
/// Marks the step a stopped process was in the middle of as `interrupted`, so the trace shows
/// the cut-off attempt beside the re-run's. The step is the first one after those that ended;
/// a run stopped between steps (or waiting on an approval) has none.
fn record_interrupted_step(
    store: &Store,
    def: &workflow::Definition,
    run: &crate::store::RunRecord,
    rows: &[crate::store::StepRow],
    ended_steps: usize,
) {
    let Some(step) = def.steps.get(ended_steps) else {
        return;
    };
    if matches!(step.kind, workflow::StepKind::Approval { .. }) {
        return;
    }
    // It started when the step before it ended (or when the run started).
    let started_at = rows
        .iter()
        .filter(|r| (r.step_index as usize) < ended_steps)
        .map(|r| r.started_at + r.duration_ms)
        .max()
        .or(run.started_at)
        .unwrap_or(run.created_at);
    if rows
        .iter()
        .any(|r| r.step_index as usize == ended_steps && r.started_at == started_at)
    {
        return; // already marked by an earlier restart
    }
    store.write_detached(RecordStep(crate::store::StepRow {
        request_id: run.request_id.clone(),
        step_index: ended_steps as i64,
        step_id: step.id.clone(),
        step_type: step.kind.type_name().to_string(),
        status: StepStatus::Interrupted,
        started_at,
        duration_ms: 0,
        output_json: None,
        error: Some("interrupted: hivelet stopped while this step ran; the run was resumed at the next start".into()),
        attempts: 1,
        usage_json: None,
    }));
}

pub fn recover(
    store: &Store,
    deployments: &crate::deployments::Deployments,
) -> Result<Recovered, crate::store::StoreError> {
    use crate::store::FinishedRun;
    let unfinished = store.unfinished_runs_blocking()?;
    let mut recovered = Recovered {
        runs: Vec::with_capacity(unfinished.len()),
        paused: Vec::new(),
    };
    for run in unfinished {
        let deployment = match deployments.at_version(store, &run.deployment_key, run.version) {
            Some(dep) => dep,
            None => {
                tracing::error!(request_id = %run.request_id, deployment = %run.deployment_key, "cannot resume: the deployment version is gone");
                let error = serde_json::json!({"message": "The deployment was deleted before the run could resume.", "error_code": "deployment_deleted", "step": null});
                store.write_detached(FinishRun(FinishedRun {
                    request_id: run.request_id,
                    status: RunStatus::Failed,
                    output_json: None,
                    error_json: Some(error.to_string()),
                    ended_at: ids::now_ms(),
                    event: None,
                }));
                continue;
            }
        };
        let as_map = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let point = if run.status == RunStatus::Running {
            let trace = store.trace_blocking(&run.request_id)?;
            let (rows, answers) = (trace.steps, trace.approvals);
            let point = run::trace_point(&deployment.definition, &rows, &answers);
            if point.waiting.is_none() {
                record_interrupted_step(
                    store,
                    &deployment.definition,
                    &run,
                    &rows,
                    point.resume.done.len(),
                );
            }
            Some(point)
        } else {
            None
        };
        let (resume, waiting) = match point {
            Some(p) => (Some(p.resume), p.waiting),
            None => (None, None),
        };
        let admitted = AdmittedRun {
            request_id: run.request_id,
            prepared: PreparedRun {
                deployment,
                variant: run.variant,
                inputs: as_map(&run.inputs_json),
                metadata: as_map(&run.metadata_json),
                user: run.user,
                callback_url: run.callback_url,
                source: run.source,
                api_key_id: run.api_key_id,
            },
            completion: None,
            started_at: run.started_at.unwrap_or(run.created_at),
            resume,
        };
        match waiting {
            Some(waiting) => recovered.paused.push(PausedRun {
                run: admitted,
                waiting,
                answering: false,
                timer: None,
            }),
            None => recovered.runs.push(admitted),
        }
    }
    Ok(recovered)
}
