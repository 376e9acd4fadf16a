//! The step loop: runs a validated workflow's steps in order with `when`, `retries` and
//! `on_error`, a template scope that grows as steps finish, the workflow `timeout_ms`, and
//! the output.
//!
//! The engine knows nothing about storage or actors: the caller passes `on_step`, which is
//! called once per step as it ends (completed, failed or skipped) so the trace can be
//! recorded. The returned future is `!Send`; it runs on an actix (single-thread) runtime.
//!
//! An `approval` step without an answer ends the execution with [`Execution::Paused`]: the
//! caller keeps the run aside, and once the step has an answer (or timed out) calls
//! [`execute`] again with a [`Resume`] holding what is already done and the answer. The same
//! [`Resume`], rebuilt from the stored trace, lets a run interrupted by a restart continue
//! after its last finished step instead of starting over. The trace and resume types live in
//! [`super::trace`], the approval answers in [`super::approval`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use super::approval;
use super::definition::{
    ApprovalChoice, BranchCase, Definition, OnError, StepDef, StepKind, DEFAULT_ITEM_NAME,
    DEFAULT_MAX_ITERATIONS,
};
use super::deltas::DeltaSink;
use super::steps::workflow::ChildRuns;
use super::steps::{self, StepError, StepOutput, StepResult};
use super::template;
use super::trace::passes_key;

// Callers name these through `workflow::engine::…`; they moved to their own modules.
pub use super::approval::{approval_output, Approval, ApprovalAnswer};
pub use super::trace::{ChildLink, DoneStep, Resume, RunFailure, StepRecord, StepStatus};

/// One OpenAI-compatible endpoint named by prompt steps.
#[derive(Clone)]
pub struct ProviderConfig {
    /// E.g. `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Already resolved by the caller from `api_key_env`.
    pub api_key: Option<String>,
    /// USD per million tokens, by model (see [`crate::usage`]).
    pub prices: HashMap<String, crate::usage::Price>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What steps may use: the HTTP client, the providers, and the command-step switch.
#[derive(Clone)]
pub struct Environment {
    pub http: awc::Client,
    pub providers: HashMap<String, ProviderConfig>,
    pub allow_command_steps: bool,
    /// Where streamed prompt steps publish their text deltas (see [`super::deltas`]).
    pub deltas: DeltaSink,
    /// Starts and awaits the child runs of `workflow` steps; `None` where there is no run
    /// machinery (those steps then fail).
    pub children: Option<Rc<dyn ChildRuns>>,
    /// Provider limits prompt steps wait for (SPEC §12); `None`: no limits.
    pub capacity: Option<Rc<dyn super::capacity::ProviderCapacity>>,
}

/// The per-run values in the template scope.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub request_id: String,
    /// Checked start inputs (see `check_inputs`).
    pub inputs: Map<String, Value>,
    /// The chosen variant's `vars`.
    pub vars: Map<String, Value>,
    /// What earlier executions of this run already did; empty for a fresh run.
    pub resume: Resume,
}

/// How one execution ended.
#[derive(Debug)]
pub enum Execution {
    /// The run ended: its output or why it failed.
    Finished(Result<Value, RunFailure>),
    /// An approval step waits for an answer; the run is not over.
    Paused(Box<Pause>),
}

/// An approval step waiting for an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    /// The step's trace line: status `waiting`, output `{"question", "choices", "timeout_at"}`.
    /// Not passed to `on_step`: the caller stores it (durably) itself.
    pub record: StepRecord,
    /// The rendered question.
    pub question: Option<String>,
    pub choices: Vec<ApprovalChoice>,
    /// When the step times out (Unix ms), if it has a `timeout_ms`.
    pub timeout_at_ms: Option<i64>,
    /// What to pass back, with the answer added, to continue the run.
    pub resume: Resume,
}

/// A step being executed, so a workflow timeout can say which ones it cut short.
struct Running {
    token: u64,
    id: String,
    index: usize,
    parent: Option<String>,
    passes: Vec<u32>,
    step_type: &'static str,
    started_at_ms: i64,
    started: Instant,
    attempts: u32,
    /// The child run a `workflow` step started.
    child_request_id: Option<String>,
}

/// What every step list of one execution shares: the environment, the trace callback, the
/// steps now running, and what earlier executions already finished.
struct Shared<'a> {
    env: &'a Environment,
    /// For the live stream's `step.started`.
    request_id: String,
    on_step: RefCell<&'a mut dyn FnMut(&StepRecord)>,
    running: RefCell<Vec<Running>>,
    next_token: Cell<u64>,
    /// Each step's `step_index` (depth first), by id.
    indexes: HashMap<String, usize>,
    /// What earlier executions finished, by step id and loop passes.
    earlier: HashMap<(String, String), DoneStep>,
    /// What this run has finished so far, earlier executions included (for a pause).
    done: RefCell<Vec<DoneStep>>,
    approvals: RefCell<HashMap<String, Approval>>,
    /// Children that `workflow` steps started in earlier executions, not yet seen end.
    children: RefCell<HashMap<(String, String), ChildLink>>,
}

impl Shared<'_> {
    fn report(&self, record: &StepRecord) {
        (self.on_step.borrow_mut())(record);
    }

    fn start_running(&self, mut running: Running) -> u64 {
        self.env.deltas.step_started(
            &self.request_id,
            &running.id,
            running.step_type,
            running.started_at_ms,
        );
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        running.token = token;
        self.running.borrow_mut().push(running);
        token
    }

    fn stop_running(&self, token: u64) {
        self.running.borrow_mut().retain(|r| r.token != token);
    }

    fn set_attempts(&self, token: u64, attempts: u32) {
        if let Some(r) = self
            .running
            .borrow_mut()
            .iter_mut()
            .find(|r| r.token == token)
        {
            r.attempts = attempts;
        }
    }

    fn set_child(&self, token: u64, child: &str) {
        if let Some(r) = self
            .running
            .borrow_mut()
            .iter_mut()
            .find(|r| r.token == token)
        {
            r.child_request_id = Some(child.to_owned());
        }
    }

    fn child_of(&self, token: u64) -> Option<String> {
        self.running
            .borrow()
            .iter()
            .find(|r| r.token == token)
            .and_then(|r| r.child_request_id.clone())
    }

    /// The `waiting` trace line of the step running as `token`.
    fn waiting_record(&self, token: u64) -> Option<StepRecord> {
        let running = self.running.borrow();
        let r = running.iter().find(|r| r.token == token)?;
        Some(StepRecord {
            step_id: r.id.clone(),
            index: r.index,
            parent: r.parent.clone(),
            passes: r.passes.clone(),
            step_type: r.step_type,
            status: StepStatus::Waiting,
            started_at_ms: r.started_at_ms,
            duration_ms: 0,
            output: None,
            error: None,
            attempts: r.attempts,
            usage: None,
            reason: Some("child_run".to_owned()),
            child_request_id: None,
        })
    }

    fn earlier(&self, step_id: &str, passes: &str) -> Option<&DoneStep> {
        self.earlier.get(&(step_id.to_owned(), passes.to_owned()))
    }
}

/// Runs `def` to its output, or until an approval step waits. `on_step` sees every step
/// as it ends, nested ones included (not the steps taken over from `ctx.resume`, nor a
/// waiting step).
///
/// The workflow's `timeout_ms` bounds each execution; the time a run spends paused at an
/// approval step does not count (that step has its own `timeout_ms`).
pub async fn execute(
    def: &Definition,
    mut ctx: RunContext,
    env: &Environment,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Execution {
    let Resume {
        done,
        approvals,
        children,
    } = std::mem::take(&mut ctx.resume);
    let shared = Shared {
        env,
        request_id: ctx.request_id.clone(),
        on_step: RefCell::new(on_step),
        running: RefCell::new(Vec::new()),
        next_token: Cell::new(0),
        indexes: def.step_indexes(),
        earlier: done
            .iter()
            .map(|d| ((d.step_id.clone(), d.passes.clone()), d.clone()))
            .collect(),
        done: RefCell::new(done),
        approvals: RefCell::new(approvals),
        children: RefCell::new(children),
    };
    let flow = match def.timeout_ms {
        None => run_top(def, ctx, &shared).await,
        Some(timeout_ms) => match actix_rt::time::timeout(
            Duration::from_millis(timeout_ms),
            run_top(def, ctx, &shared),
        )
        .await
        {
            Ok(flow) => flow,
            Err(_) => Err(workflow_timed_out(timeout_ms, &shared)),
        },
    };
    match flow {
        Ok(Flow::Output(output)) => Execution::Finished(Ok(output)),
        Ok(Flow::Paused(pause)) => Execution::Paused(pause),
        Err(failure) => Execution::Finished(Err(failure)),
    }
}

/// Records the steps a workflow timeout cut short (innermost first) and says why the run
/// failed, naming the step started last.
fn workflow_timed_out(timeout_ms: u64, shared: &Shared<'_>) -> RunFailure {
    let message = format!("workflow timed out after {timeout_ms} ms");
    let cut = std::mem::take(&mut *shared.running.borrow_mut());
    let step = cut.last().map(|r| r.id.clone());
    for r in cut.into_iter().rev() {
        shared.report(&StepRecord {
            step_id: r.id,
            index: r.index,
            parent: r.parent,
            passes: r.passes,
            step_type: r.step_type,
            status: StepStatus::Failed,
            started_at_ms: r.started_at_ms,
            duration_ms: elapsed_ms(r.started),
            output: None,
            error: Some(message.clone()),
            attempts: r.attempts,
            usage: None,
            reason: None,
            child_request_id: r.child_request_id,
        });
    }
    RunFailure {
        message,
        error_code: "timeout".to_owned(),
        step,
    }
}

/// How `run_top` ended when the run did not fail.
enum Flow {
    Output(Value),
    Paused(Box<Pause>),
}

/// Runs the top-level steps, then builds the output.
async fn run_top(
    def: &Definition,
    ctx: RunContext,
    shared: &Shared<'_>,
) -> Result<Flow, RunFailure> {
    let scope = initial_scope(ctx);
    let nesting = Nesting {
        parent: None,
        passes: Vec::new(),
        reuse: true,
    };
    let done = match run_list(shared, &def.steps, scope, nesting).await {
        Ok(ListEnd::Done(done)) => done,
        Ok(ListEnd::Paused(pause)) => return Ok(Flow::Paused(pause)),
        Err(failed) => {
            return Err(RunFailure::new(
                failed.error.error_code(),
                Some(&failed.step),
                format!("step {} failed: {}", failed.step, failed.error.message),
            ))
        }
    };
    match &def.output {
        Some(out) => template::render(&out.template, &Value::Object(done.scope))
            .map(|s| Flow::Output(Value::String(s)))
            .map_err(|e| RunFailure::new("template_error", None, format!("output template: {e}"))),
        None => Ok(Flow::Output(done.last_output.unwrap_or(Value::Null))),
    }
}

/// Where a step list runs.
#[derive(Debug, Clone)]
struct Nesting {
    /// The enclosing `branch`/`loop` step; `None` for the workflow's own steps.
    parent: Option<String>,
    /// The enclosing loops' passes, outermost first.
    passes: Vec<u32>,
    /// Whether finished steps of an earlier execution may be taken over here: false once
    /// an enclosing list ran a step again (what follows it may see other values).
    reuse: bool,
}

/// How a step list ended when it did not fail.
enum ListEnd {
    Done(ListDone),
    Paused(Box<Pause>),
}

struct ListDone {
    /// The scope after the list's last step.
    scope: Map<String, Value>,
    /// The output of the last step that was not skipped (`null` for a failed one).
    last_output: Option<Value>,
    /// The scope entries of the steps that finished in the list, nested ones included, so
    /// the enclosing list sees them by id too.
    finished: Vec<(String, Value)>,
}

/// A step that failed with `on_error = "terminate"`, ending its list.
struct Failed {
    step: String,
    error: StepError,
}

impl Failed {
    /// What the enclosing `branch`/`loop` fails with: the same code, never retried.
    fn into_step_error(self, context: Option<String>) -> StepError {
        let message = format!("step {} failed: {}", self.step, self.error.message);
        StepError {
            message: match context {
                Some(c) => format!("{c}: {message}"),
                None => message,
            },
            retryable: false,
            code: self.error.code,
            retry_after: None,
        }
    }
}

/// What a step produced, beyond its output: a branch's case and the nested steps' scope
/// entries.
struct Outcome {
    out: StepOutput,
    attempts: u32,
    /// `Some` for a branch: the case index taken, `"default"`, or null.
    case: Option<Value>,
    finished: Vec<(String, Value)>,
}

impl Outcome {
    fn leaf((out, attempts): (StepOutput, u32)) -> Self {
        Outcome {
            out,
            attempts,
            case: None,
            finished: Vec::new(),
        }
    }
}

/// Runs one step list (the workflow's, a branch case's, or one loop pass) in order, with
/// `when`, `retries` and `on_error`, taking over what an earlier execution finished.
fn run_list<'s>(
    shared: &'s Shared<'_>,
    steps: &'s [StepDef],
    mut scope: Map<String, Value>,
    nesting: Nesting,
) -> LocalBoxFuture<'s, Result<ListEnd, Failed>> {
    Box::pin(async move {
        let top = nesting.parent.is_none();
        let passes_key = passes_key(&nesting.passes);
        let mut last_output: Option<Value> = None;
        let mut finished: Vec<(String, Value)> = Vec::new();
        let mut reuse = nesting.reuse;

        for (position, step) in steps.iter().enumerate() {
            let position = top.then_some(position);
            let index = shared.indexes.get(&step.id).copied().unwrap_or_default();
            // A branch or loop reached while still reusing is entered reusing: it continues
            // inside, at its first unfinished nested step or pass.
            let entered_reusing = reuse;
            if reuse {
                if let Some(d) = shared.earlier(&step.id, &passes_key) {
                    let case = match &step.kind {
                        StepKind::Branch { cases, default } => {
                            Some(resumed_case(shared, cases, default.as_deref(), &passes_key))
                        }
                        _ => None,
                    };
                    let entry = scope_entry(d.status, d.output.clone(), d.error.clone(), case);
                    record_in_scope(&mut scope, &step.id, position, entry.clone());
                    finished.push((step.id.clone(), entry));
                    if d.status != StepStatus::Skipped {
                        last_output = Some(d.output.clone());
                    }
                    continue;
                }
                reuse = false;
            }

            let step_type = step.kind.type_name();
            let started = Instant::now();
            // An answered approval step keeps the start of its wait, so its trace line (same
            // start) replaces the `waiting` one and its duration covers the wait.
            let answer = match step.kind {
                StepKind::Approval { .. } => shared.approvals.borrow_mut().remove(&step.id),
                _ => None,
            };
            let waited_since = answer.as_ref().map(|a| a.waiting_since_ms);
            // A `workflow` step re-attaching to its child keeps the start of its `waiting`
            // line too, so its end line replaces it.
            let attached_since = match step.kind {
                StepKind::Workflow { .. } => shared
                    .children
                    .borrow()
                    .get(&(step.id.clone(), passes_key.clone()))
                    .map(|c| c.since_ms),
                _ => None,
            };
            let started_at_ms = waited_since.or(attached_since).unwrap_or_else(unix_ms);
            let token = shared.start_running(Running {
                token: 0,
                id: step.id.clone(),
                index,
                parent: nesting.parent.clone(),
                passes: nesting.passes.clone(),
                step_type,
                started_at_ms,
                started,
                attempts: 0,
                child_request_id: None,
            });
            let record = |status, output, error, attempts, usage| StepRecord {
                step_id: step.id.clone(),
                index,
                parent: nesting.parent.clone(),
                passes: nesting.passes.clone(),
                step_type,
                status,
                started_at_ms,
                duration_ms: match waited_since.or(attached_since) {
                    Some(since) => (unix_ms() - since).max(0),
                    None => elapsed_ms(started),
                },
                output,
                error,
                attempts,
                usage,
                reason: None,
                child_request_id: None,
            };
            let done = |status, output: &Value, error: Option<String>| DoneStep {
                step_id: step.id.clone(),
                passes: passes_key.clone(),
                status,
                output: output.clone(),
                error,
            };

            let jinja_scope = template::to_context(&Value::Object(scope.clone()));
            let outcome = match &step.when {
                None => Ok(true),
                Some(cond) => template::eval_bool_with(cond, &jinja_scope)
                    .map_err(|e| StepError::permanent(format!("when: {e}"))),
            };
            let result = match outcome {
                Ok(false) => {
                    shared.stop_running(token);
                    shared.report(&record(StepStatus::Skipped, None, None, 0, None));
                    let case = matches!(step.kind, StepKind::Branch { .. }).then_some(Value::Null);
                    let entry = scope_entry(StepStatus::Skipped, Value::Null, None, case);
                    record_in_scope(&mut scope, &step.id, position, entry.clone());
                    finished.push((step.id.clone(), entry));
                    shared
                        .done
                        .borrow_mut()
                        .push(done(StepStatus::Skipped, &Value::Null, None));
                    continue;
                }
                Err(e) => Err((e, 0)),
                Ok(true) => match (&step.kind, answer) {
                    (StepKind::Approval { timeout_ms, .. }, Some(approval)) => {
                        match approval.answer {
                            ApprovalAnswer::Given(output) => {
                                Ok(Outcome::leaf((StepOutput::new(output), 1)))
                            }
                            ApprovalAnswer::TimedOut => Err((
                                StepError::permanent(approval::timed_out_message(*timeout_ms)),
                                1,
                            )),
                        }
                    }
                    (
                        StepKind::Approval {
                            question,
                            choices,
                            timeout_ms,
                        },
                        None,
                    ) if top => {
                        let rendered = question
                            .as_deref()
                            .map(|q| template::render_with(q, &jinja_scope))
                            .transpose();
                        match rendered {
                            Err(e) => Err((StepError::permanent(format!("question: {e}")), 0)),
                            Ok(question) => {
                                shared.stop_running(token);
                                let timeout_at_ms =
                                    approval::timeout_at(started_at_ms, *timeout_ms);
                                let output = approval::waiting_output(
                                    question.as_deref(),
                                    choices,
                                    timeout_at_ms,
                                );
                                let mut waiting =
                                    record(StepStatus::Waiting, Some(output), None, 0, None);
                                waiting.reason = Some("approval".to_owned());
                                return Ok(ListEnd::Paused(Box::new(Pause {
                                    record: waiting,
                                    question,
                                    choices: choices.clone(),
                                    timeout_at_ms,
                                    resume: Resume {
                                        done: shared.done.borrow().clone(),
                                        approvals: std::mem::take(
                                            &mut *shared.approvals.borrow_mut(),
                                        ),
                                        // Every child started before a top-level step
                                        // has ended.
                                        children: HashMap::new(),
                                    },
                                })));
                            }
                        }
                    }
                    (StepKind::Approval { .. }, None) => Err((
                        StepError::permanent("approval steps cannot be nested in a branch or loop"),
                        0,
                    )),
                    (StepKind::Branch { cases, default }, _) => {
                        let inner = Nesting {
                            parent: Some(step.id.clone()),
                            passes: nesting.passes.clone(),
                            reuse: entered_reusing,
                        };
                        run_branch(
                            shared,
                            cases,
                            default.as_deref(),
                            &scope,
                            &jinja_scope,
                            inner,
                        )
                        .await
                    }
                    (
                        StepKind::Loop {
                            for_each,
                            as_name,
                            until,
                            steps,
                            max_iterations,
                            concurrency,
                        },
                        _,
                    ) => {
                        let inner = Nesting {
                            parent: Some(step.id.clone()),
                            passes: nesting.passes.clone(),
                            reuse: entered_reusing,
                        };
                        let spec = LoopSpec {
                            for_each: for_each.as_deref(),
                            as_name: as_name.as_deref().unwrap_or(DEFAULT_ITEM_NAME),
                            until: until.as_deref(),
                            steps,
                            max_iterations: max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS),
                            concurrency: concurrency.unwrap_or(1),
                        };
                        run_loop(shared, &spec, &scope, &jinja_scope, inner).await
                    }
                    _ => run_with_retries(step, shared.env, &scope, &jinja_scope, shared, token)
                        .await
                        .map(Outcome::leaf),
                },
            };
            let child = shared.child_of(token);
            shared.stop_running(token);
            let record = |status, output, error, attempts, usage| StepRecord {
                child_request_id: child.clone(),
                ..record(status, output, error, attempts, usage)
            };

            match result {
                Ok(outcome) => {
                    let output = outcome.out.output;
                    shared.report(&record(
                        StepStatus::Completed,
                        Some(output.clone()),
                        None,
                        outcome.attempts,
                        outcome.out.usage,
                    ));
                    for (id, entry) in outcome.finished {
                        scope.insert(id.clone(), entry.clone());
                        finished.push((id, entry));
                    }
                    let entry =
                        scope_entry(StepStatus::Completed, output.clone(), None, outcome.case);
                    record_in_scope(&mut scope, &step.id, position, entry.clone());
                    finished.push((step.id.clone(), entry));
                    shared
                        .done
                        .borrow_mut()
                        .push(done(StepStatus::Completed, &output, None));
                    last_output = Some(output);
                }
                Err((error, attempts)) => {
                    shared.report(&record(
                        StepStatus::Failed,
                        None,
                        Some(error.message.clone()),
                        attempts,
                        None,
                    ));
                    if step.on_error == OnError::Terminate {
                        return Err(Failed {
                            step: step.id.clone(),
                            error,
                        });
                    }
                    let reason = error.message;
                    let case = matches!(step.kind, StepKind::Branch { .. }).then_some(Value::Null);
                    let entry =
                        scope_entry(StepStatus::Failed, Value::Null, Some(reason.clone()), case);
                    record_in_scope(&mut scope, &step.id, position, entry.clone());
                    finished.push((step.id.clone(), entry));
                    shared.done.borrow_mut().push(done(
                        StepStatus::Failed,
                        &Value::Null,
                        Some(reason),
                    ));
                    last_output = Some(Value::Null);
                }
            }
        }
        Ok(ListEnd::Done(ListDone {
            scope,
            last_output,
            finished,
        }))
    })
}

/// The case a branch took in an earlier execution, told by which case's first step has a
/// trace line: its index, `"default"`, or null when none did.
fn resumed_case(
    shared: &Shared<'_>,
    cases: &[BranchCase],
    default: Option<&[StepDef]>,
    passes_key: &str,
) -> Value {
    let ran = |list: &[StepDef]| {
        list.first()
            .is_some_and(|s| shared.earlier(&s.id, passes_key).is_some())
    };
    if let Some(i) = cases.iter().position(|c| ran(&c.steps)) {
        return json!(i);
    }
    match default {
        Some(d) if ran(d) => json!("default"),
        _ => Value::Null,
    }
}

/// Runs the first case whose `when` holds (or `default`). After a restart it continues in
/// the case it had taken.
async fn run_branch(
    shared: &Shared<'_>,
    cases: &[BranchCase],
    default: Option<&[StepDef]>,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
    inner: Nesting,
) -> Result<Outcome, (StepError, u32)> {
    let passes = passes_key(&inner.passes);
    let resumed = match resumed_case(shared, cases, default, &passes) {
        _ if !inner.reuse => None,
        Value::Null => None,
        Value::String(_) => default.map(|d| (json!("default"), d)),
        case => {
            let i = case.as_u64().and_then(|i| usize::try_from(i).ok());
            i.and_then(|i| cases.get(i))
                .map(|c| (case, c.steps.as_slice()))
        }
    };
    let taken = match resumed {
        Some(taken) => Some(taken),
        None => {
            let mut found = None;
            for (i, case) in cases.iter().enumerate() {
                match template::eval_bool_with(&case.when, jinja_scope) {
                    Ok(true) => {
                        found = Some((json!(i), case.steps.as_slice()));
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err((StepError::permanent(format!("cases[{i}].when: {e}")), 1))
                    }
                }
            }
            found.or_else(|| default.map(|d| (json!("default"), d)))
        }
    };
    let Some((case, steps)) = taken else {
        return Ok(Outcome {
            out: StepOutput::new(Value::Null),
            attempts: 1,
            case: Some(Value::Null),
            finished: Vec::new(),
        });
    };
    match run_list(shared, steps, scope.clone(), inner).await {
        Ok(ListEnd::Done(done)) => Ok(Outcome {
            out: StepOutput::new(done.last_output.unwrap_or(Value::Null)),
            attempts: 1,
            case: Some(case),
            finished: done.finished,
        }),
        Ok(ListEnd::Paused(_)) => Err((nested_pause(), 1)),
        Err(failed) => Err((failed.into_step_error(None), 1)),
    }
}

fn nested_pause() -> StepError {
    StepError::permanent("approval steps cannot be nested in a branch or loop")
}

/// A loop step's fields, defaults applied.
struct LoopSpec<'a> {
    for_each: Option<&'a str>,
    as_name: &'a str,
    until: Option<&'a str>,
    steps: &'a [StepDef],
    max_iterations: u32,
    concurrency: u32,
}

fn iteration_limit(message: String) -> StepError {
    StepError {
        code: Some("iteration_limit_exceeded"),
        ..StepError::permanent(message)
    }
}

/// The elements a `for_each` expression gives, refused when it is not an array or has more
/// than `max` elements. The length is checked before any element is converted, and an
/// iterable of unknown length is read only up to `max + 1` elements, so a huge array costs
/// no memory here.
fn for_each_items(
    expr: &str,
    jinja_scope: &minijinja::Value,
    max: u32,
) -> Result<Vec<Value>, StepError> {
    use minijinja::value::ValueKind;
    let value = template::eval_value_with(expr, jinja_scope)
        .map_err(|e| StepError::template("for_each", &e))?;
    let max = max as usize;
    let word = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => None,
        ValueKind::Undefined => Some("nothing (an undefined name)"),
        ValueKind::None => Some("null"),
        ValueKind::Bool => Some("a boolean"),
        ValueKind::Number => Some("a number"),
        ValueKind::String => Some("text"),
        ValueKind::Map => Some("an object"),
        _ => Some("a value that is not an array"),
    };
    if let Some(word) = word {
        return Err(StepError::permanent(format!(
            "for_each must give an array, got {word}"
        )));
    }
    let too_many = |len: String| {
        iteration_limit(format!(
            "for_each gave {len} elements, more than max_iterations = {max}"
        ))
    };
    if let Some(len) = value.len() {
        if len > max {
            return Err(too_many(len.to_string()));
        }
    }
    let iter = value
        .try_iter()
        .map_err(|e| StepError::template("for_each", &e.into()))?;
    let mut items = Vec::new();
    for (i, element) in iter.enumerate() {
        if i >= max {
            return Err(too_many("more than".to_owned() + &format!(" {max}")));
        }
        let element = serde_json::to_value(&element)
            .map_err(|e| StepError::permanent(format!("for_each: element {i} is not JSON: {e}")))?;
        items.push(element);
    }
    Ok(items)
}

/// Runs one loop pass (`pass`) with `scope` (the loop's scope plus the pass variables).
async fn run_pass(
    shared: &Shared<'_>,
    steps: &[StepDef],
    scope: Map<String, Value>,
    inner: &Nesting,
    pass: u32,
) -> Result<ListDone, StepError> {
    let mut nesting = inner.clone();
    nesting.passes.push(pass);
    match run_list(shared, steps, scope, nesting).await {
        Ok(ListEnd::Done(done)) => Ok(done),
        Ok(ListEnd::Paused(_)) => Err(nested_pause()),
        Err(failed) => Err(failed.into_step_error(Some(format!("pass {pass}")))),
    }
}

/// Runs a loop's passes: one per `for_each` element (up to `concurrency` at a time, the
/// outputs kept in element order), or until `until` holds. After a restart, the passes
/// that had finished are taken over from the trace instead of running again.
async fn run_loop(
    shared: &Shared<'_>,
    spec: &LoopSpec<'_>,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
    inner: Nesting,
) -> Result<Outcome, (StepError, u32)> {
    let mut outputs = Vec::new();
    let mut last_finished = Vec::new();
    if let Some(expr) = spec.for_each {
        let items = for_each_items(expr, jinja_scope, spec.max_iterations).map_err(|e| (e, 1))?;
        let count = items.len();
        let passes = items.into_iter().enumerate().map(|(i, item)| {
            let mut pass_scope = scope.clone();
            pass_scope.insert(spec.as_name.to_owned(), item);
            pass_scope.insert(
                "loop".to_owned(),
                json!({"index": i, "first": i == 0, "last": i + 1 == count, "length": count}),
            );
            let pass = u32::try_from(i).unwrap_or(u32::MAX);
            run_pass(shared, spec.steps, pass_scope, &inner, pass)
        });
        let mut passes = stream::iter(passes).buffered(spec.concurrency.max(1) as usize);
        outputs.reserve(count);
        while let Some(pass) = passes.next().await {
            let done = pass.map_err(|e| (e, 1))?;
            outputs.push(done.last_output.unwrap_or(Value::Null));
            last_finished = done.finished;
        }
    } else {
        let until = spec.until.unwrap_or("true");
        let mut pass: u32 = 0;
        loop {
            if pass >= spec.max_iterations {
                return Err((
                    iteration_limit(format!(
                        "until did not hold after {} passes (max_iterations = {})",
                        spec.max_iterations, spec.max_iterations
                    )),
                    1,
                ));
            }
            let mut pass_scope = scope.clone();
            pass_scope.insert(
                "loop".to_owned(),
                json!({"index": pass, "first": pass == 0}),
            );
            let done = run_pass(shared, spec.steps, pass_scope, &inner, pass)
                .await
                .map_err(|e| (e, 1))?;
            outputs.push(done.last_output.unwrap_or(Value::Null));
            // `until` sees the pass just finished: `loop.index` and its steps' outputs.
            let holds = template::eval_bool(until, &Value::Object(done.scope))
                .map_err(|e| (StepError::permanent(format!("until: {e}")), 1))?;
            last_finished = done.finished;
            if holds {
                break;
            }
            pass += 1;
        }
    }
    Ok(Outcome {
        out: StepOutput::new(Value::Array(outputs)),
        attempts: 1,
        case: None,
        finished: last_finished,
    })
}

/// Runs a step up to `1 + retries` times; returns the outcome and the attempts made. An
/// error that is not retryable (see [`StepError`]) ends the step at once, and the trace
/// counts only the attempts actually made.
async fn run_with_retries(
    step: &StepDef,
    env: &Environment,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
    shared: &Shared<'_>,
    token: u64,
) -> Result<(StepOutput, u32), (StepError, u32)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        shared.set_attempts(token, attempts);
        let outcome = match &step.kind {
            StepKind::Workflow {
                deployment,
                variant,
                inputs,
            } => {
                let key = (step.id.clone(), passes_key(&running_passes(shared, token)));
                // Only the first attempt of this execution re-attaches: a retry after a
                // failed child starts a new one.
                let attach = shared
                    .children
                    .borrow_mut()
                    .remove(&key)
                    .map(|c| c.request_id);
                let waiting = shared
                    .waiting_record(token)
                    .expect("a running step has its entry");
                let parent = scope
                    .get("run")
                    .and_then(|r| r.get("request_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let step_fields = steps::workflow::WorkflowStep {
                    deployment,
                    variant: variant.as_deref(),
                    inputs,
                };
                steps::workflow::run(
                    env.children.as_ref(),
                    step_fields,
                    jinja_scope,
                    attach,
                    waiting,
                    &parent,
                    &mut |child| shared.set_child(token, child),
                )
                .await
            }
            StepKind::Prompt { provider, .. } => {
                let permit = provider_permit(env, provider, shared, token).await;
                let outcome = run_once(&step.kind, &step.id, env, scope, jinja_scope).await;
                if let (Some(permit), Ok(out)) = (&permit, &outcome) {
                    permit.charge(out.usage.as_ref());
                }
                outcome
            }
            _ => run_once(&step.kind, &step.id, env, scope, jinja_scope).await,
        };
        match outcome {
            Ok(out) => return Ok((out, attempts)),
            Err(e) if attempts > step.retries => return Err((e, attempts)),
            Err(e) if !e.retryable => {
                tracing::debug!(step = %step.id, attempt = attempts, error = %e, "step failed; a retry cannot help");
                return Err((e, attempts));
            }
            Err(e) => {
                tracing::debug!(step = %step.id, attempt = attempts, error = %e, "step failed, retrying");
                if let Some(pause) = retry_pause(&step.kind, attempts, e.retry_after) {
                    actix_rt::time::sleep(pause).await;
                }
            }
        }
    }
}

/// A permit to call `provider`, when the daemon limits it. While the provider is at its
/// limit the step's trace shows `waiting` with reason `provider_capacity`; its end line
/// replaces that one.
async fn provider_permit(
    env: &Environment,
    provider: &str,
    shared: &Shared<'_>,
    token: u64,
) -> Option<super::capacity::CapacityPermit> {
    let capacity = env.capacity.as_ref()?;
    if let Some(permit) = capacity.try_acquire(provider) {
        return Some(permit);
    }
    if let Some(mut line) = shared.waiting_record(token) {
        line.reason = Some("provider_capacity".to_owned());
        shared.report(&line);
    }
    Some(capacity.acquire(provider).await)
}

/// The loop passes of the step running as `token`.
fn running_passes(shared: &Shared<'_>, token: u64) -> Vec<u32> {
    shared
        .running
        .borrow()
        .iter()
        .find(|r| r.token == token)
        .map(|r| r.passes.clone())
        .unwrap_or_default()
}

/// Backoff before another attempt; only steps that talk to something outside wait. A
/// `Retry-After` the failed attempt brought back (a provider's 429 or 5xx, already capped by
/// the step) lengthens the pause to at least that.
fn retry_pause(kind: &StepKind, attempts: u32, asked: Option<Duration>) -> Option<Duration> {
    match kind {
        StepKind::Http { .. } | StepKind::Prompt { .. } | StepKind::Command { .. } => {
            let ms = 100u64.saturating_mul(1 << attempts.min(5).saturating_sub(1));
            let backoff = Duration::from_millis(ms.min(2_000));
            Some(asked.map_or(backoff, |asked| asked.max(backoff)))
        }
        _ => None,
    }
}

async fn run_once(
    kind: &StepKind,
    step_id: &str,
    env: &Environment,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
) -> StepResult {
    match kind {
        StepKind::Template { template, json } => steps::template::run(template, *json, jinja_scope),
        StepKind::Http {
            method,
            url,
            headers,
            body,
            timeout_ms,
        } => {
            let step = steps::http::HttpStep {
                method,
                url,
                headers,
                body: body.as_deref(),
                timeout_ms: *timeout_ms,
            };
            steps::http::run(&env.http, step, jinja_scope).await
        }
        StepKind::Prompt {
            provider,
            model,
            system,
            prompt,
            messages,
            temperature,
            max_tokens,
            response_format,
            json_schema,
            stream,
        } => {
            let step = steps::prompt::PromptStep {
                provider,
                model,
                system: system.as_deref(),
                prompt: prompt.as_deref(),
                messages: messages.as_ref(),
                temperature: *temperature,
                max_tokens: *max_tokens,
                response_format: *response_format,
                json_schema: json_schema.as_ref(),
                // Streamed text goes to the run's live stream, tagged with run and step.
                stream: stream.then(|| steps::prompt::Publish {
                    sink: &env.deltas,
                    request_id: scope
                        .get("run")
                        .and_then(|r| r.get("request_id"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    step: step_id.into(),
                }),
            };
            steps::prompt::run(&env.http, env.providers.get(provider), step, jinja_scope).await
        }
        StepKind::Command {
            program,
            args,
            stdin,
            timeout_ms,
        } => {
            if !env.allow_command_steps {
                return Err(StepError::permanent(
                    "command steps are disabled (set security.allow_command_steps = true)",
                ));
            }
            let step = steps::command::CommandStep {
                program,
                args,
                stdin: stdin.as_deref(),
                timeout_ms: *timeout_ms,
            };
            let scope_json = Value::Object(scope.clone());
            steps::command::run(step, jinja_scope, &scope_json).await
        }
        StepKind::Delay { ms } => steps::delay::run(*ms).await,
        // `run_list` answers approval steps and runs branches and loops itself, and
        // `run_with_retries` starts child runs; kept so the match stays exhaustive.
        StepKind::Workflow { .. } => Err(StepError::permanent(
            "workflow steps need their run's context to start a child run",
        )),
        StepKind::Approval { .. } => {
            Err(StepError::permanent("approval steps are answered, not run"))
        }
        StepKind::Branch { .. } | StepKind::Loop { .. } => Err(StepError::permanent(
            "branch and loop steps run their nested steps, not run_once",
        )),
    }
}

/// Inputs by name at the top, then the reserved names (which validation keeps distinct).
fn initial_scope(ctx: RunContext) -> Map<String, Value> {
    let mut scope = Map::new();
    for (name, value) in &ctx.inputs {
        scope.insert(name.clone(), value.clone());
    }
    scope.insert("inputs".into(), Value::Object(ctx.inputs));
    scope.insert("vars".into(), Value::Object(ctx.vars));
    scope.insert("run".into(), json!({ "request_id": ctx.request_id }));
    scope
}

/// A finished step's scope entry: `{output, status, error}`, and `case` for a branch.
fn scope_entry(
    status: StepStatus,
    output: Value,
    error: Option<String>,
    case: Option<Value>,
) -> Value {
    let mut entry = json!({ "output": output, "status": status.as_str(), "error": error });
    if let (Some(case), Value::Object(map)) = (case, &mut entry) {
        map.insert("case".to_owned(), case);
    }
    entry
}

/// Makes a finished step visible as `{id}` and, for a top-level step, `step_{n}` (1-based).
fn record_in_scope(
    scope: &mut Map<String, Value>,
    id: &str,
    position: Option<usize>,
    entry: Value,
) {
    if let Some(position) = position {
        scope.insert(format!("step_{}", position + 1), entry.clone());
    }
    scope.insert(id.to_owned(), entry);
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::ValidateOptions;
    use std::sync::mpsc;

    fn environment(providers: HashMap<String, ProviderConfig>) -> Environment {
        crate::install_crypto_provider();
        Environment {
            http: awc::Client::default(),
            providers,
            allow_command_steps: true,
            deltas: DeltaSink::default(),
            children: None,
            capacity: None,
        }
    }

    fn definition(src: &str) -> Definition {
        let mut def = Definition::from_toml_str(src).unwrap();
        let providers = vec!["local".to_owned()];
        def.validate(&ValidateOptions {
            allow_command_steps: true,
            providers: &providers,
        })
        .unwrap();
        def
    }

    async fn run_with(
        def: &Definition,
        inputs: Value,
        vars: Value,
        env: &Environment,
    ) -> (Result<Value, RunFailure>, Vec<StepRecord>) {
        let ctx = RunContext {
            request_id: "req_0123".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            vars: vars.as_object().cloned().unwrap_or_default(),
            resume: Resume::default(),
        };
        let (execution, records) = execute_with(def, ctx, env).await;
        match execution {
            Execution::Finished(result) => (result, records),
            Execution::Paused(p) => panic!("unexpected pause at {}", p.record.step_id),
        }
    }

    async fn execute_with(
        def: &Definition,
        ctx: RunContext,
        env: &Environment,
    ) -> (Execution, Vec<StepRecord>) {
        let mut records = Vec::new();
        let execution = execute(def, ctx, env, &mut |r| records.push(r.clone())).await;
        (execution, records)
    }

    async fn run(src: &str, inputs: Value) -> (Result<Value, RunFailure>, Vec<StepRecord>) {
        let def = definition(src);
        let vars = def.variants["default"].vars.clone();
        run_with(
            &def,
            inputs,
            Value::Object(vars),
            &environment(HashMap::new()),
        )
        .await
    }

    const HELLO: &str = r#"
key = "hello"
[[inputs]]
name = "name"
type = "text"
required = true
[[steps]]
id = "greet"
type = "template"
template = "Hello, {{ name }}{{ vars.suffix }}"
[output]
template = "{{ greet.output }}"
[variants.default]
vars = { suffix = "." }
[variants.loud]
vars = { suffix = "!!!" }
"#;

    #[actix_rt::test]
    async fn hello_example_with_variants() {
        let def = definition(HELLO);
        let env = environment(HashMap::new());
        for (variant, expected) in [("default", "Hello, Ada."), ("loud", "Hello, Ada!!!")] {
            let vars = Value::Object(def.variants[variant].vars.clone());
            let (out, records) = run_with(&def, json!({"name": "Ada"}), vars, &env).await;
            assert_eq!(out.unwrap(), json!(expected));
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].status, StepStatus::Completed);
            assert_eq!(records[0].step_type, "template");
            assert_eq!(records[0].attempts, 1);
            assert_eq!(records[0].output, Some(json!(expected)));
        }
    }

    #[actix_rt::test]
    async fn template_scope() {
        let src = r#"
key = "scope"
[[inputs]]
name = "name"
type = "text"
[[steps]]
id = "greet"
type = "template"
template = "{{ name }}|{{ inputs.name }}|{{ vars.suffix }}|{{ run.request_id }}|{{ vars.unset }}{{ nothing.at.all }}"
[[steps]]
id = "second"
type = "template"
template = "{{ step_1.output }} / {{ greet.output }} / {{ greet.status }}"
[variants.default]
vars = { suffix = "!" }
"#;
        let (out, records) = run(src, json!({"name": "Ada"})).await;
        assert_eq!(records[0].output, Some(json!("Ada|Ada|!|req_0123|")));
        assert_eq!(
            out.unwrap(),
            json!("Ada|Ada|!|req_0123| / Ada|Ada|!|req_0123| / completed")
        );
    }

    #[actix_rt::test]
    async fn when_skips_and_output_defaults_to_last_run_step() {
        let src = r#"
key = "when"
[[inputs]]
name = "n"
type = "number"
[[steps]]
id = "first"
type = "template"
template = "one"
when = "n == 1"
[[steps]]
id = "second"
type = "template"
template = "[{{ first.output }}][{{ first.output.deep }}]"
when = "{{ n > 0 }}"
[[steps]]
id = "third"
type = "template"
template = "three"
when = "n > 5"
"#;
        let (out, records) = run(src, json!({"n": 2})).await;
        let statuses: Vec<_> = records.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                StepStatus::Skipped,
                StepStatus::Completed,
                StepStatus::Skipped
            ]
        );
        assert_eq!(records[0].attempts, 0);
        assert_eq!(records[0].output, None);
        assert_eq!(records[2].index, 2);
        assert_eq!(out.unwrap(), json!("[][]"));

        let (out, _) = run(src, json!({"n": 1})).await;
        assert_eq!(out.unwrap(), json!("[one][]"));
    }

    #[actix_rt::test]
    async fn json_template_step() {
        let src = r#"
key = "json"
[[steps]]
id = "data"
type = "template"
template = '{"a": {{ 40 + 2 }}, "b": [1, 2]}'
json = true
[[steps]]
id = "use"
type = "template"
template = "{{ data.output.a }}-{{ data.output.b | length }}"
"#;
        let (out, records) = run(src, json!({})).await;
        assert_eq!(records[0].output, Some(json!({"a": 42, "b": [1, 2]})));
        assert_eq!(out.unwrap(), json!("42-2"));
    }

    #[actix_rt::test]
    async fn output_without_template_keeps_json() {
        let src = "key = \"k\"\n[[steps]]\nid = \"d\"\ntype = \"template\"\ntemplate = '{\"x\": 1}'\njson = true\n";
        let (out, _) = run(src, json!({})).await;
        assert_eq!(out.unwrap(), json!({"x": 1}));

        // An output template always gives a string, even when it renders JSON.
        let src = format!("{src}[output]\ntemplate = \"{{{{ d.output | tojson }}}}\"\n");
        let (out, _) = run(&src, json!({})).await;
        assert_eq!(out.unwrap(), json!("{\"x\":1}"));
    }

    #[actix_rt::test]
    async fn on_error_continue_and_terminate() {
        let src = r#"
key = "errors"
[[steps]]
id = "bad"
type = "template"
template = "not json"
json = true
on_error = "continue"
[[steps]]
id = "after"
type = "template"
template = "bad={{ bad.output }} status={{ bad.status }}"
"#;
        let (out, records) = run(src, json!({})).await;
        assert_eq!(records[0].status, StepStatus::Failed);
        assert!(records[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not valid JSON"));
        assert_eq!(out.unwrap(), json!("bad= status=failed"));

        let src = src.replace("on_error = \"continue\"", "");
        let (out, records) = run(&src, json!({})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "step_failed");
        assert_eq!(failure.step.as_deref(), Some("bad"));
        assert!(
            failure.message.starts_with("step bad failed: "),
            "{failure}"
        );
        assert_eq!(records.len(), 1);
    }

    #[actix_rt::test]
    async fn retries_count_attempts() {
        let marker = std::env::temp_dir().join(format!(
            "hivelet-wf-retry-{}-{}",
            std::process::id(),
            unix_ms()
        ));
        let src = format!(
            r#"
key = "retry"
[[steps]]
id = "flaky"
type = "command"
program = "/bin/sh"
args = ["-c", "if [ -f \"$0\" ]; then echo '{{\"ok\": true}}'; else touch \"$0\"; echo boom >&2; exit 3; fi", "{}"]
retries = 2
"#,
            marker.display()
        );
        let (out, records) = run(&src, json!({})).await;
        let _ = std::fs::remove_file(&marker);
        assert_eq!(out.unwrap(), json!({"ok": true}));
        assert_eq!(records[0].attempts, 2);

        let src = "key = \"k\"\n[[steps]]\nid = \"fail\"\ntype = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo oops >&2; exit 3\"]\nretries = 2\n";
        let (out, records) = run(src, json!({})).await;
        let failure = out.unwrap_err();
        assert_eq!(records[0].attempts, 3);
        assert_eq!(records[0].status, StepStatus::Failed);
        assert!(failure.message.contains("oops"), "{failure}");
        assert!(failure.message.contains('3'), "{failure}");
    }

    #[actix_rt::test]
    async fn command_gets_scope_on_stdin() {
        let src = r#"
key = "cmd"
[[inputs]]
name = "name"
type = "text"
[[steps]]
id = "echo"
type = "command"
program = "/bin/cat"
[[steps]]
id = "templated"
type = "command"
program = "/bin/sh"
args = ["-c", "tr a-z A-Z; echo \" $0\"", "{{ name }}"]
stdin = "hi {{ name }}"
"#;
        let (out, records) = run(src, json!({"name": "ada"})).await;
        let scope = records[0].output.clone().unwrap();
        assert_eq!(scope["name"], "ada");
        assert_eq!(scope["inputs"]["name"], "ada");
        assert_eq!(scope["run"]["request_id"], "req_0123");
        assert_eq!(out.unwrap(), json!("HI ADA\n ada".replace('\n', "")));
    }

    #[actix_rt::test]
    async fn errors_a_retry_cannot_fix_use_one_attempt() {
        // A template that does not render, output that is not JSON, a program that does not
        // exist, an unknown provider: each would fail the same way again.
        let cases = [
            (
                "type = \"template\"\ntemplate = \"{% include 'nope' %}\"",
                "template: ",
            ),
            (
                "type = \"template\"\ntemplate = \"not json\"\njson = true",
                "not valid JSON",
            ),
            (
                "type = \"command\"\nprogram = \"/nonexistent/hivelet-test\"",
                "cannot start",
            ),
            (
                "type = \"http\"\nurl = \"ftp://127.0.0.1/x\"",
                "request to ftp://127.0.0.1/x failed",
            ),
            (
                "type = \"prompt\"\nprovider = \"local\"\nmodel = \"m\"\nprompt = \"hi\"",
                "provider \"local\" is not configured",
            ),
        ];
        for (step, error) in cases {
            let src = format!("key = \"k\"\n[[steps]]\nid = \"s\"\nretries = 3\n{step}\n");
            let (out, records) = run(&src, json!({})).await;
            let failure = out.unwrap_err();
            assert_eq!(records.len(), 1, "{step}");
            assert_eq!(records[0].status, StepStatus::Failed, "{step}");
            assert_eq!(records[0].attempts, 1, "{step}: {failure}");
            assert!(
                records[0].error.as_deref().unwrap().contains(error),
                "{step}: {:?}",
                records[0].error
            );
            assert_eq!(
                failure.message,
                format!("step s failed: {}", records[0].error.as_deref().unwrap())
            );
        }

        let src = "key = \"k\"\n[[steps]]\nid = \"c\"\ntype = \"command\"\nprogram = \"/bin/true\"\nretries = 3\n";
        let def = definition(src);
        let mut env = environment(HashMap::new());
        env.allow_command_steps = false;
        let (_, records) = run_with(&def, json!({}), json!({}), &env).await;
        assert_eq!(records[0].attempts, 1, "a refused command step");
    }

    #[actix_rt::test]
    async fn http_client_errors_are_not_retried_server_errors_are() {
        let (base, rx) = serve(vec![(404, "no such thing"), (503, "busy"), (503, "busy")]);
        let src = format!(
            "key = \"k\"\n[[steps]]\nid = \"gone\"\ntype = \"http\"\nurl = \"{base}/gone\"\nretries = 3\non_error = \"continue\"\n[[steps]]\nid = \"busy\"\ntype = \"http\"\nurl = \"{base}/busy\"\nretries = 1\n"
        );
        let def = definition(&src);
        let env = environment(HashMap::new());
        let (out, records) = run_with(&def, json!({}), json!({}), &env).await;
        assert!(out.unwrap_err().message.contains("HTTP 503"));
        assert_eq!(records[0].attempts, 1, "404: {:?}", records[0].error);
        assert!(records[0].error.as_deref().unwrap().contains("HTTP 404"));
        assert_eq!(records[1].attempts, 2, "503: {:?}", records[1].error);
        let paths: Vec<_> = rx.try_iter().map(|seen| seen.url).collect();
        assert_eq!(paths, ["/gone", "/busy", "/busy"]);
    }

    #[actix_rt::test]
    async fn command_timeout_and_disabled() {
        let src = "key = \"k\"\n[[steps]]\nid = \"slow\"\ntype = \"command\"\nprogram = \"/bin/sleep\"\nargs = [\"5\"]\ntimeout_ms = 200\n";
        let started = Instant::now();
        let (out, _) = run(src, json!({})).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let failure = out.unwrap_err();
        assert!(
            failure.message.contains("timed out after 200 ms"),
            "{failure}"
        );

        let def = definition(src);
        let mut env = environment(HashMap::new());
        env.allow_command_steps = false;
        let (out, _) = run_with(&def, json!({}), json!({}), &env).await;
        assert!(out.unwrap_err().message.contains("disabled"));
    }

    #[actix_rt::test]
    async fn workflow_timeout_names_running_step() {
        let src = "key = \"k\"\ntimeout_ms = 100\n[[steps]]\nid = \"quick\"\ntype = \"delay\"\nms = 1\n[[steps]]\nid = \"wait\"\ntype = \"delay\"\nms = 5000\n";
        let started = Instant::now();
        let (out, records) = run(src, json!({})).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "timeout");
        assert_eq!(failure.step.as_deref(), Some("wait"));
        assert_eq!(failure.message, "workflow timed out after 100 ms");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].output, Some(Value::Null));
        assert_eq!(records[1].status, StepStatus::Failed);
        assert_eq!(records[1].step_id, "wait");
    }

    #[actix_rt::test]
    async fn output_template_errors() {
        let mut def = definition("key = \"k\"\n[[steps]]\nid = \"d\"\ntype = \"delay\"\nms = 1\n");
        def.output = Some(crate::workflow::definition::OutputDef {
            template: "{% include 'missing' %}".into(),
        });
        let (out, _) = run_with(&def, json!({}), json!({}), &environment(HashMap::new())).await;
        assert_eq!(out.unwrap_err().error_code, "template_error");
    }

    const APPROVAL: &str = r#"
key = "approve"
[[inputs]]
name = "amount"
type = "number"
[[steps]]
id = "draft"
type = "template"
template = "pay {{ amount }}"
[[steps]]
id = "gone"
type = "template"
template = "never"
when = "false"
[[steps]]
id = "approve"
type = "approval"
question = "Approve {{ draft.output }}?"
choices = ["yes", { value = "no", label = "No way" }]
timeout_ms = 60000
[[steps]]
id = "final"
type = "template"
template = "{{ draft.output }}: {{ approve.output.choice.value }} ({{ approve.output.choice.label }}) {{ approve.status }}"
"#;

    fn context(inputs: Value, resume: Resume) -> RunContext {
        RunContext {
            request_id: "req_0123".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            vars: Map::new(),
            resume,
        }
    }

    /// Executes `def` until it pauses; returns the pause and the records of the steps run.
    async fn pause_of(def: &Definition, inputs: Value) -> (Pause, Vec<StepRecord>) {
        let env = environment(HashMap::new());
        match execute_with(def, context(inputs, Resume::default()), &env).await {
            (Execution::Paused(p), records) => (*p, records),
            (Execution::Finished(r), _) => panic!("expected a pause, got {r:?}"),
        }
    }

    fn answered(mut resume: Resume, step: &str, since: i64, answer: ApprovalAnswer) -> Resume {
        resume.approvals.insert(
            step.to_owned(),
            Approval {
                waiting_since_ms: since,
                answer,
            },
        );
        resume
    }

    #[actix_rt::test]
    async fn approval_pauses_then_resumes_with_the_answer() {
        let def = definition(APPROVAL);
        let before = unix_ms();
        let (pause, records) = pause_of(&def, json!({"amount": 5})).await;
        let statuses: Vec<_> = records.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [StepStatus::Completed, StepStatus::Skipped]);
        assert_eq!(pause.record.step_id, "approve");
        assert_eq!(pause.record.index, 2);
        assert_eq!(pause.record.status, StepStatus::Waiting);
        assert_eq!(pause.record.step_type, "approval");
        assert_eq!(pause.question.as_deref(), Some("Approve pay 5?"));
        assert_eq!(pause.choices.len(), 2);
        let since = pause.record.started_at_ms;
        assert!(since >= before);
        assert_eq!(pause.timeout_at_ms, Some(since + 60_000));
        let shown = pause.record.output.clone().unwrap();
        assert_eq!(shown["question"], "Approve pay 5?");
        assert_eq!(
            shown["choices"][1],
            json!({"value": "no", "label": "No way"})
        );
        assert!(shown["timeout_at"].is_string(), "{shown}");
        assert_eq!(
            pause.resume.done,
            vec![
                DoneStep {
                    step_id: "draft".into(),
                    passes: String::new(),
                    status: StepStatus::Completed,
                    output: json!("pay 5"),
                    error: None,
                },
                DoneStep {
                    step_id: "gone".into(),
                    passes: String::new(),
                    status: StepStatus::Skipped,
                    output: Value::Null,
                    error: None,
                },
            ]
        );

        let output = approval_output(&pause.choices, &json!({"choice": "no"})).unwrap();
        let resume = answered(
            pause.resume,
            "approve",
            since,
            ApprovalAnswer::Given(output),
        );
        let env = environment(HashMap::new());
        let (execution, records) =
            execute_with(&def, context(json!({"amount": 5}), resume), &env).await;
        let Execution::Finished(Ok(out)) = execution else {
            panic!("expected an output, got {execution:?}");
        };
        assert_eq!(out, json!("pay 5: no (No way) completed"));
        // Done steps are not run (nor reported) again.
        let ids: Vec<_> = records.iter().map(|r| r.step_id.as_str()).collect();
        assert_eq!(ids, ["approve", "final"]);
        assert_eq!(records[0].status, StepStatus::Completed);
        assert_eq!(
            records[0].started_at_ms, since,
            "keeps the start of the wait"
        );
        assert_eq!(records[0].attempts, 1);
        assert_eq!(
            records[0].output,
            Some(json!({"choice": {"value": "no", "label": "No way"}}))
        );
    }

    #[actix_rt::test]
    async fn approval_timeout_fails_the_step_and_on_error_decides() {
        let def = definition(APPROVAL);
        let (pause, _) = pause_of(&def, json!({"amount": 1})).await;
        let resume = answered(pause.resume, "approve", 7, ApprovalAnswer::TimedOut);
        let env = environment(HashMap::new());
        let (execution, records) =
            execute_with(&def, context(json!({"amount": 1}), resume.clone()), &env).await;
        let Execution::Finished(Err(failure)) = execution else {
            panic!("expected a failure, got {execution:?}");
        };
        assert_eq!(failure.error_code, "step_failed");
        assert_eq!(failure.step.as_deref(), Some("approve"));
        assert!(
            failure
                .message
                .contains("approval timed out after 60000 ms"),
            "{failure}"
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].status, StepStatus::Failed);
        assert_eq!(records[0].started_at_ms, 7);

        let src = APPROVAL.replace(
            "timeout_ms = 60000",
            "timeout_ms = 60000\non_error = \"continue\"",
        );
        let def = definition(&src);
        let (execution, records) =
            execute_with(&def, context(json!({"amount": 1}), resume), &env).await;
        let Execution::Finished(Ok(out)) = execution else {
            panic!("expected an output, got {execution:?}");
        };
        assert_eq!(out, json!("pay 1:  () failed"));
        assert_eq!(records[0].output, None);
        assert_eq!(
            records[0].error.as_deref(),
            Some("approval timed out after 60000 ms")
        );
    }

    #[actix_rt::test]
    async fn resume_skips_done_steps_up_to_the_first_mismatch() {
        let src = r#"
key = "resume"
[[steps]]
id = "a"
type = "template"
template = "fresh a"
[[steps]]
id = "b"
type = "template"
template = "fresh b"
[[steps]]
id = "c"
type = "template"
template = "{{ a.output }}|{{ b.output }}|{{ b.status }}"
"#;
        let def = definition(src);
        let env = environment(HashMap::new());
        let done = |id: &str, status, output: Value| DoneStep {
            step_id: id.into(),
            passes: String::new(),
            status,
            output,
            error: None,
        };
        let resume = Resume {
            done: vec![
                done("a", StepStatus::Completed, json!("old a")),
                done("b", StepStatus::Failed, Value::Null),
            ],
            approvals: HashMap::new(),
            children: HashMap::new(),
        };
        let (execution, records) = execute_with(&def, context(json!({}), resume), &env).await;
        let Execution::Finished(Ok(out)) = execution else {
            panic!("{execution:?}");
        };
        assert_eq!(out, json!("old a||failed"));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].step_id, "c");

        // An entry that does not match its position ends the reuse there.
        let resume = Resume {
            done: vec![
                done("a", StepStatus::Completed, json!("old a")),
                done("x", StepStatus::Completed, json!("old x")),
                done("c", StepStatus::Completed, json!("old c")),
            ],
            approvals: HashMap::new(),
            children: HashMap::new(),
        };
        let (execution, records) = execute_with(&def, context(json!({}), resume), &env).await;
        let Execution::Finished(Ok(out)) = execution else {
            panic!("{execution:?}");
        };
        assert_eq!(out, json!("old a|fresh b|completed"));
        let ids: Vec<_> = records.iter().map(|r| r.step_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[actix_rt::test]
    async fn free_text_approval_and_question_errors() {
        let src = "key = \"k\"\n[[steps]]\nid = \"ask\"\ntype = \"approval\"\n[[steps]]\nid = \"echo\"\ntype = \"template\"\ntemplate = \"said {{ ask.output.text }}\"\n";
        let def = definition(src);
        let (pause, records) = pause_of(&def, json!({})).await;
        assert!(records.is_empty());
        assert_eq!(pause.question, None);
        assert_eq!(pause.timeout_at_ms, None);
        assert_eq!(
            pause.record.output,
            Some(json!({"question": null, "choices": [], "timeout_at": null}))
        );
        let output = approval_output(&pause.choices, &json!({"text": "fine"})).unwrap();
        assert_eq!(output, json!({"text": "fine"}));
        let resume = answered(pause.resume, "ask", 1, ApprovalAnswer::Given(output));
        let env = environment(HashMap::new());
        let (execution, _) = execute_with(&def, context(json!({}), resume), &env).await;
        let Execution::Finished(Ok(out)) = execution else {
            panic!("{execution:?}");
        };
        assert_eq!(out, json!("said fine"));

        // A question that does not render fails the step like any other step error.
        let src = "key = \"k\"\n[[steps]]\nid = \"ask\"\ntype = \"approval\"\nquestion = \"{% include 'nope' %}\"\n";
        let (out, records) = run(src, json!({})).await;
        assert_eq!(out.unwrap_err().step.as_deref(), Some("ask"));
        assert!(records[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("question: "));
    }

    /// A request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    /// Serves `responses` (status, body) in order, then stops; reports each request.
    fn serve(responses: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<Seen>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok(mut req) = server.recv() else { return };
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut text);
                let _ = tx.send(Seen {
                    method: req.method().to_string(),
                    url: req.url().to_owned(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| {
                            (
                                h.field.to_string().to_ascii_lowercase(),
                                h.value.to_string(),
                            )
                        })
                        .collect(),
                    body: text,
                });
                let _ =
                    req.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        });
        (format!("http://127.0.0.1:{port}"), rx)
    }

    fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
        seen.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[actix_rt::test]
    async fn http_step() {
        let (base, rx) = serve(vec![
            (200, r#"{"id": 7}"#),
            (200, "plain text"),
            (500, "kaputt"),
        ]);
        let src = format!(
            r#"
key = "http"
[[inputs]]
name = "q"
type = "text"
[[steps]]
id = "post"
type = "http"
method = "post"
url = "{base}/items?q={{{{ q }}}}"
headers = {{ "X-Token" = "t-{{{{ vars.token }}}}" }}
body = '{{"q": "{{{{ q }}}}"}}'
[[steps]]
id = "text"
type = "http"
url = "{base}/text/{{{{ post.output.id }}}}"
[[steps]]
id = "broken"
type = "http"
url = "{base}/broken"
"#
        );
        let def = definition(&src);
        let env = environment(HashMap::new());
        let (out, records) =
            run_with(&def, json!({"q": "abc"}), json!({"token": "s3"}), &env).await;

        let first = rx.recv().unwrap();
        assert_eq!(first.method, "POST");
        assert_eq!(first.url, "/items?q=abc");
        assert_eq!(header(&first, "x-token"), Some("t-s3"));
        assert_eq!(header(&first, "content-type"), Some("application/json"));
        assert_eq!(first.body, r#"{"q": "abc"}"#);
        assert_eq!(records[0].output, Some(json!({"id": 7})));

        let second = rx.recv().unwrap();
        assert_eq!(
            (second.method.as_str(), second.url.as_str()),
            ("GET", "/text/7")
        );
        assert_eq!(records[1].output, Some(json!("plain text")));

        let failure = out.unwrap_err();
        assert_eq!(failure.step.as_deref(), Some("broken"));
        assert!(
            failure.message.contains("HTTP 500 from http://"),
            "{failure}"
        );
        assert!(failure.message.contains("kaputt"), "{failure}");
    }

    #[actix_rt::test]
    async fn prompt_step() {
        let reply = r#"{"choices": [{"message": {"role": "assistant", "content": "Hi Ada"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}"#;
        let (base, rx) = serve(vec![
            (200, reply),
            (401, "no key"),
            (200, "{\"choices\": []}"),
        ]);
        let src = r#"
key = "prompt"
[[inputs]]
name = "name"
type = "text"
[[steps]]
id = "ask"
type = "prompt"
provider = "local"
model = "llama3"
system = "Be brief."
prompt = "Greet {{ name }}"
temperature = 0.2
max_tokens = 20
"#;
        let def = definition(src);
        let providers = HashMap::from([(
            "local".to_owned(),
            ProviderConfig {
                base_url: format!("{base}/v1/"),
                api_key: Some("sk-test".into()),
                prices: HashMap::new(),
            },
        )]);
        let env = environment(providers);
        let (out, records) = run_with(&def, json!({"name": "Ada"}), json!({}), &env).await;
        assert_eq!(out.unwrap(), json!("Hi Ada"));
        assert_eq!(records[0].usage.as_ref().unwrap()["total_tokens"], 7);

        let seen = rx.recv().unwrap();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.url, "/v1/chat/completions");
        assert_eq!(header(&seen, "authorization"), Some("Bearer sk-test"));
        let body: Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Greet Ada"}
                ],
                "temperature": 0.2,
                "max_tokens": 20,
                // Streaming is the default; this server answers with one JSON reply anyway.
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );

        let (out, _) = run_with(&def, json!({"name": "Ada"}), json!({}), &env).await;
        let failure = out.unwrap_err();
        assert!(failure.message.contains("provider \"local\""), "{failure}");
        assert!(failure.message.contains("401"), "{failure}");

        let (out, _) = run_with(&def, json!({"name": "Ada"}), json!({}), &env).await;
        assert!(out.unwrap_err().message.contains("choices[0]"));
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;
    use crate::workflow::ValidateOptions;

    fn definition(src: &str) -> Definition {
        let mut def = Definition::from_toml_str(src).unwrap();
        def.validate(&ValidateOptions {
            allow_command_steps: true,
            providers: &[],
        })
        .unwrap();
        def
    }

    fn environment() -> Environment {
        crate::install_crypto_provider();
        Environment {
            http: awc::Client::default(),
            providers: HashMap::new(),
            allow_command_steps: true,
            deltas: DeltaSink::default(),
            children: None,
            capacity: None,
        }
    }

    async fn run_resumed(
        def: &Definition,
        inputs: Value,
        resume: Resume,
    ) -> (Result<Value, RunFailure>, Vec<StepRecord>) {
        let ctx = RunContext {
            request_id: "req_1".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            vars: Map::new(),
            resume,
        };
        let mut records = Vec::new();
        let execution = execute(def, ctx, &environment(), &mut |r| records.push(r.clone())).await;
        match execution {
            Execution::Finished(result) => (result, records),
            Execution::Paused(p) => panic!("unexpected pause at {}", p.record.step_id),
        }
    }

    async fn run(src: &str, inputs: Value) -> (Result<Value, RunFailure>, Vec<StepRecord>) {
        run_resumed(&definition(src), inputs, Resume::default()).await
    }

    const BRANCH: &str = r#"
key = "b"
[[inputs]]
name = "n"
type = "number"
[[steps]]
id = "pick"
type = "branch"
[[steps.cases]]
when = "n > 10"
[[steps.cases.steps]]
id = "big"
type = "template"
template = "big {{ n }}"
[[steps.cases]]
when = "n > 5"
[[steps.cases.steps]]
id = "medium"
type = "template"
template = "medium"
[[steps.cases.steps]]
id = "medium2"
type = "template"
template = "{{ medium.output }}!"
[[steps]]
id = "after"
type = "template"
template = "{{ pick.output }}|{{ pick.case }}|{{ medium2.output }}|{{ step_1.case }}"
"#;

    #[actix_rt::test]
    async fn branch_takes_the_first_case_that_holds() {
        let (out, records) = run(BRANCH, json!({"n": 7})).await;
        assert_eq!(out.unwrap(), json!("medium!|1|medium!|1"));
        let lines: Vec<_> = records
            .iter()
            .map(|r| (r.step_id.as_str(), r.index, r.parent.as_deref(), r.pass()))
            .collect();
        assert_eq!(
            lines,
            [
                ("medium", 2, Some("pick"), None),
                ("medium2", 3, Some("pick"), None),
                ("pick", 0, None, None),
                ("after", 4, None, None),
            ]
        );
        assert_eq!(records[2].output, Some(json!("medium!")));

        let (out, _) = run(BRANCH, json!({"n": 11})).await;
        assert_eq!(out.unwrap(), json!("big 11|0||0"));
    }

    #[actix_rt::test]
    async fn branch_without_a_case_gives_null_or_runs_default() {
        let (out, records) = run(BRANCH, json!({"n": 1})).await;
        // No case and no default: output null, `.case` null (renders as nothing).
        assert_eq!(out.unwrap(), json!("|||"));
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].output, Some(Value::Null));

        let src = BRANCH.replace(
            "[[steps]]\nid = \"after\"",
            "[[steps.default]]\nid = \"small\"\ntype = \"template\"\ntemplate = \"small\"\n[[steps]]\nid = \"after\"",
        );
        let (out, _) = run(&src, json!({"n": 1})).await;
        assert_eq!(out.unwrap(), json!("small|default||default"));
    }

    const LOOP: &str = r#"
key = "l"
[[inputs]]
name = "names"
type = "array"
[[steps]]
id = "each"
type = "loop"
for_each = "names"
as = "name"
[[steps.steps]]
id = "greet"
type = "template"
template = "{{ loop.index }}:{{ name }}:{{ loop.first }}:{{ loop.last }}"
[[steps.steps]]
id = "shout"
type = "template"
template = "{{ greet.output | upper }}"
[[steps]]
id = "after"
type = "template"
json = true
template = "{{ each.output | tojson }}"
"#;

    #[actix_rt::test]
    async fn for_each_runs_a_pass_per_element_with_loop_variables() {
        let (out, records) = run(LOOP, json!({"names": ["a", "b", "c"]})).await;
        assert_eq!(
            out.unwrap(),
            json!(["0:A:TRUE:FALSE", "1:B:FALSE:FALSE", "2:C:FALSE:TRUE"])
        );
        let nested: Vec<_> = records
            .iter()
            .filter(|r| r.parent.is_some())
            .map(|r| (r.step_id.as_str(), r.pass(), r.passes_key()))
            .collect();
        assert_eq!(nested.len(), 6);
        assert_eq!(nested[0], ("greet", Some(0), "0".to_owned()));
        assert_eq!(nested[5], ("shout", Some(2), "2".to_owned()));
        let each = records.iter().find(|r| r.step_id == "each").unwrap();
        assert_eq!(
            (each.parent.as_deref(), each.pass(), each.index),
            (None, None, 0)
        );

        // An empty array runs no pass.
        let (out, records) = run(LOOP, json!({"names": []})).await;
        assert_eq!(out.unwrap(), json!([]));
        assert_eq!(records.len(), 2);
    }

    #[actix_rt::test]
    async fn for_each_refuses_non_arrays_and_too_many_elements_before_running() {
        let (out, records) = run(LOOP, json!({"names": "abc"})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "step_failed");
        assert!(
            failure
                .message
                .contains("for_each must give an array, got text"),
            "{failure}"
        );
        assert_eq!(records.len(), 1);

        let src = LOOP.replace("as = \"name\"", "as = \"name\"\nmax_iterations = 2");
        let (out, records) = run(&src, json!({"names": ["a", "b", "c"]})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "iteration_limit_exceeded");
        assert_eq!(failure.step.as_deref(), Some("each"));
        assert!(failure.message.contains("max_iterations = 2"), "{failure}");
        assert_eq!(records.len(), 1, "no pass ran: {records:?}");

        // An iterable of unknown length is read only up to the limit.
        let src = LOOP.replace("for_each = \"names\"", "for_each = \"range(100000)\"");
        let (out, records) = run(&src, json!({})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "iteration_limit_exceeded");
        assert!(
            failure.message.contains("max_iterations = 100"),
            "{failure}"
        );
        assert_eq!(records.len(), 1);
    }

    #[actix_rt::test]
    async fn until_checks_after_each_pass_and_stops_at_max_iterations() {
        let src = r#"
key = "u"
[[steps]]
id = "count"
type = "loop"
until = "double.output >= 6"
[[steps.steps]]
id = "double"
type = "template"
json = true
template = "{{ loop.index * 2 }}"
"#;
        let (out, records) = run(src, json!({})).await;
        assert_eq!(out.unwrap(), json!([0, 2, 4, 6]));
        assert_eq!(records.len(), 5);

        let src = src
            .replace(">= 6", ">= 600")
            .replace("until", "max_iterations = 3\nuntil");
        let (out, records) = run(&src, json!({})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "iteration_limit_exceeded");
        assert!(failure.message.contains("after 3 passes"), "{failure}");
        assert_eq!(records.len(), 4, "three passes, then the loop");
    }

    #[actix_rt::test]
    async fn concurrent_passes_keep_the_element_order() {
        let src = r#"
key = "c"
[[steps]]
id = "each"
type = "loop"
for_each = "[3, 0, 2, 1]"
concurrency = 4
[[steps.steps]]
id = "nap"
type = "command"
program = "/bin/sh"
args = ["-c", "sleep 0.$0; echo $0", "{{ item }}"]
"#;
        let (out, records) = run(src, json!({})).await;
        assert_eq!(out.unwrap(), json!([3, 0, 2, 1]));
        assert_eq!(records.len(), 5);
    }

    #[actix_rt::test]
    async fn nested_failures_fail_the_loop_with_their_code_unless_it_continues() {
        let src = r#"
key = "f"
[[steps]]
id = "outer"
type = "loop"
for_each = "[1, 2]"
[[steps.steps]]
id = "inner"
type = "loop"
until = "false"
max_iterations = 2
[[steps.steps.steps]]
id = "tick"
type = "template"
template = "t"
[[steps]]
id = "after"
type = "template"
template = "{{ outer.status }}"
"#;
        let (out, records) = run(src, json!({})).await;
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "iteration_limit_exceeded");
        assert_eq!(failure.step.as_deref(), Some("outer"));
        assert!(
            failure
                .message
                .starts_with("step outer failed: pass 0: step inner failed: "),
            "{failure}"
        );
        let ticks: Vec<_> = records
            .iter()
            .filter(|r| r.step_id == "tick")
            .map(StepRecord::passes_key)
            .collect();
        assert_eq!(ticks, ["0.0", "0.1"]);

        let src = src.replace(
            "type = \"loop\"\nfor_each",
            "type = \"loop\"\non_error = \"continue\"\nfor_each",
        );
        let (out, _) = run(&src, json!({})).await;
        assert_eq!(out.unwrap(), json!("failed"));
    }

    #[actix_rt::test]
    async fn resume_continues_at_the_first_unfinished_pass() {
        let def = definition(LOOP);
        let done = |id: &str, passes: &str, output: Value| DoneStep {
            step_id: id.into(),
            passes: passes.into(),
            status: StepStatus::Completed,
            output,
            error: None,
        };
        let resume = Resume {
            done: vec![
                done("greet", "0", json!("old greet 0")),
                done("shout", "0", json!("OLD 0")),
                done("greet", "1", json!("old greet 1")),
                done("shout", "2", json!("OLD 2 (stale: greet 2 never ended)")),
            ],
            approvals: HashMap::new(),
            children: HashMap::new(),
        };
        let (out, records) = run_resumed(&def, json!({"names": ["a", "b", "c"]}), resume).await;
        assert_eq!(
            out.unwrap(),
            json!(["OLD 0", "OLD GREET 1", "2:C:FALSE:TRUE"])
        );
        let ran: Vec<_> = records
            .iter()
            .map(|r| format!("{}@{}", r.step_id, r.passes_key()))
            .collect();
        assert_eq!(ran, ["shout@1", "greet@2", "shout@2", "each@", "after@"]);
    }

    #[actix_rt::test]
    async fn resume_continues_in_the_case_the_branch_took() {
        let def = definition(BRANCH);
        let resume = Resume {
            done: vec![DoneStep {
                step_id: "medium".into(),
                passes: String::new(),
                status: StepStatus::Completed,
                output: json!("earlier medium"),
                error: None,
            }],
            approvals: HashMap::new(),
            children: HashMap::new(),
        };
        // n = 20 would take case 0 now; the run continues in case 1, which it had taken.
        let (out, records) = run_resumed(&def, json!({"n": 20}), resume).await;
        assert_eq!(out.unwrap(), json!("earlier medium!|1|earlier medium!|1"));
        let ran: Vec<_> = records.iter().map(|r| r.step_id.as_str()).collect();
        assert_eq!(ran, ["medium2", "pick", "after"]);
    }

    #[actix_rt::test]
    async fn a_workflow_timeout_inside_a_loop_records_the_cut_off_steps() {
        let src = "key = \"t\"\ntimeout_ms = 100\n[[steps]]\nid = \"each\"\ntype = \"loop\"\nfor_each = \"[1, 2]\"\n[[steps.steps]]\nid = \"wait\"\ntype = \"delay\"\nms = 5000\n";
        let started = Instant::now();
        let (out, records) = run(src, json!({})).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let failure = out.unwrap_err();
        assert_eq!(failure.error_code, "timeout");
        assert_eq!(failure.step.as_deref(), Some("wait"));
        let lines: Vec<_> = records
            .iter()
            .map(|r| (r.step_id.as_str(), r.status, r.parent.as_deref(), r.pass()))
            .collect();
        assert_eq!(
            lines,
            [
                ("wait", StepStatus::Failed, Some("each"), Some(0)),
                ("each", StepStatus::Failed, None, None),
            ]
        );
    }
}
