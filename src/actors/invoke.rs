//! Admission. The InvokeActor assigns request ids, counts run slots, keeps the queue of
//! async runs waiting for a slot, and answers only after the run row is durable. Runs it
//! starts report back with `RunEnded`, which frees the slot for the next queued run.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::retry::Enqueue;
use super::run::{self, CancelRun, Ending, Reporting, RunActor, RunOutcome};
use crate::config::Config;
use crate::deployments::LiveDeployment;
use crate::error::ApiError;
use crate::ids;
use crate::store::{NewRun, RunStatus, Store, Write};
use crate::workflow;

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
    pub source: &'static str,
    pub api_key_id: Option<String>,
}

/// A run admitted and waiting for its slot, or running.
pub struct AdmittedRun {
    pub request_id: String,
    pub prepared: PreparedRun,
    pub completion: Option<oneshot::Sender<RunOutcome>>,
    /// When the run (last) started, Unix ms.
    pub started_at: i64,
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

/// Slots in use and queue length.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Load;

/// Sent by a RunActor when its run has ended (and its terminal state is stored).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RunEnded {
    pub request_id: String,
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
    draining: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl InvokeActor {
    /// `recovered`: runs found `queued` or `running` at start, oldest first; they are queued
    /// again and start as slots allow.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        supervisor: Recipient<Enqueue>,
        recovered: Vec<AdmittedRun>,
    ) -> Self {
        InvokeActor {
            store,
            config,
            supervisor,
            env: None,
            running: HashMap::new(),
            starting: 0,
            queue: recovered.into(),
            draining: false,
            drain_waiters: Vec::new(),
        }
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
        let actor = RunActor::new(run, env, self.reporting(), ctx.address().recipient()).start();
        self.running.insert(request_id, actor);
    }

    /// Fills free slots from the queue, oldest first.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        while !self.draining && self.slots_in_use() < self.config.file.runs.max_concurrent {
            let Some(mut run) = self.queue.pop_front() else {
                break;
            };
            run.started_at = ids::now_ms();
            self.store.write_detached(Write::MarkRunning {
                request_id: run.request_id.clone(),
                started_at: run.started_at,
            });
            self.start_run(run, ctx);
        }
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
        };
        if status == RunStatus::Running {
            self.starting += 1;
        }
        let store = self.store.clone();
        Box::pin(
            async move { store.write(Write::InsertRun(Box::new(row))).await }
                .into_actor(self)
                .map(move |stored, act, ctx| {
                    if status == RunStatus::Running {
                        act.starting -= 1;
                    }
                    stored?;
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
        self.start_queued(ctx);
        if self.running.is_empty() && self.starting == 0 {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Handler<Cancel> for InvokeActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Cancel, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(actor) = self.running.get(&msg.request_id) {
            actor.do_send(CancelRun);
            return Box::pin(fut::ready(true));
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
        MessageResult((self.slots_in_use(), self.queue.len()))
    }
}

/// Rebuilds the runs a previous process left `queued` or `running`, oldest first, each with
/// the deployment version it was admitted with. Their earlier step records stay in the trace.
pub fn recover(
    store: &Store,
    deployments: &crate::deployments::Deployments,
) -> Result<Vec<AdmittedRun>, crate::store::StoreError> {
    use crate::store::{self, FinishedRun};
    let unfinished = store.read_blocking(store::runs::load_unfinished)?;
    let mut recovered = Vec::with_capacity(unfinished.len());
    for run in unfinished {
        let deployment = match deployments.at_version(store, &run.deployment_key, run.version) {
            Some(dep) => dep,
            None => {
                tracing::error!(request_id = %run.request_id, deployment = %run.deployment_key, "cannot resume: the deployment version is gone");
                let error = serde_json::json!({"message": "The deployment was deleted before the run could resume.", "error_code": "deployment_deleted", "step": null});
                store.write_detached(Write::FinishRun(Box::new(FinishedRun {
                    request_id: run.request_id,
                    status: RunStatus::Failed,
                    output_json: None,
                    error_json: Some(error.to_string()),
                    ended_at: ids::now_ms(),
                    event: None,
                })));
                continue;
            }
        };
        let as_map = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let source = match run.source.as_str() {
            "webhook" => "webhook",
            "cli" => "cli",
            "ui" => "ui",
            _ => "api",
        };
        recovered.push(AdmittedRun {
            request_id: run.request_id,
            prepared: PreparedRun {
                deployment,
                variant: run.variant,
                inputs: as_map(&run.inputs_json),
                metadata: as_map(&run.metadata_json),
                user: run.user,
                callback_url: run.callback_url,
                source,
                api_key_id: run.api_key_id,
            },
            completion: None,
            started_at: run.started_at.unwrap_or(run.created_at),
        });
    }
    Ok(recovered)
}
