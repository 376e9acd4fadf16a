//! Runs a validated workflow: steps in order with `when`, `retries` and `on_error`, a
//! template scope that grows as steps finish, the workflow `timeout_ms`, and the output.
//!
//! The engine knows nothing about storage or actors: the caller passes `on_step`, which is
//! called once per step as it ends (completed, failed or skipped) so the trace can be
//! recorded. The returned future is `!Send`; it runs on an actix (single-thread) runtime.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::definition::{Definition, OnError, StepDef, StepKind};
use super::steps::{self, StepOutput, StepResult};
use super::template;

/// One OpenAI-compatible endpoint named by prompt steps.
#[derive(Clone)]
pub struct ProviderConfig {
    /// E.g. `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Already resolved by the caller from `api_key_env`.
    pub api_key: Option<String>,
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
}

/// The per-run values in the template scope.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub request_id: String,
    /// Checked start inputs (see `check_inputs`).
    pub inputs: Map<String, Value>,
    /// The chosen variant's `vars`.
    pub vars: Map<String, Value>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Completed,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the step trace, passed to `on_step` when the step ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub step_id: String,
    /// 0-based position in the definition.
    pub index: usize,
    pub step_type: &'static str,
    pub status: StepStatus,
    /// Unix milliseconds when the step started.
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// How many times the step ran (0 when skipped or its `when` failed).
    pub attempts: u32,
    /// Token usage of a prompt step, as the provider reported it.
    pub usage: Option<Value>,
}

/// Why a run failed; serializes as the `data.error` object of a `workflow.failed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunFailure {
    pub message: String,
    /// `step_failed`, `timeout`, `template_error` or `approval_requires_async`.
    pub error_code: String,
    pub step: Option<String>,
}

impl RunFailure {
    fn new(error_code: &str, step: Option<&str>, message: String) -> Self {
        RunFailure {
            message,
            error_code: error_code.to_owned(),
            step: step.map(str::to_owned),
        }
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunFailure {}

/// The step being executed, so a workflow timeout can say which one it cut short.
struct Running {
    id: String,
    index: usize,
    step_type: &'static str,
    started_at_ms: i64,
    started: Instant,
    attempts: u32,
}

/// Runs `def` to its output. `on_step` sees every step as it ends.
pub async fn execute(
    def: &Definition,
    ctx: RunContext,
    env: &Environment,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<Value, RunFailure> {
    let running = RefCell::new(None::<Running>);
    let Some(timeout_ms) = def.timeout_ms else {
        return run_steps(def, ctx, env, &mut *on_step, &running).await;
    };
    let result = actix_rt::time::timeout(
        Duration::from_millis(timeout_ms),
        run_steps(def, ctx, env, &mut *on_step, &running),
    )
    .await;
    match result {
        Ok(r) => r,
        Err(_) => {
            let message = format!("workflow timed out after {timeout_ms} ms");
            let cut = running.borrow_mut().take();
            let step = cut.as_ref().map(|r| r.id.clone());
            if let Some(r) = cut {
                on_step(&StepRecord {
                    step_id: r.id,
                    index: r.index,
                    step_type: r.step_type,
                    status: StepStatus::Failed,
                    started_at_ms: r.started_at_ms,
                    duration_ms: elapsed_ms(r.started),
                    output: None,
                    error: Some(message.clone()),
                    attempts: r.attempts,
                    usage: None,
                });
            }
            Err(RunFailure {
                message,
                error_code: "timeout".to_owned(),
                step,
            })
        }
    }
}

async fn run_steps(
    def: &Definition,
    ctx: RunContext,
    env: &Environment,
    on_step: &mut dyn FnMut(&StepRecord),
    running: &RefCell<Option<Running>>,
) -> Result<Value, RunFailure> {
    let mut scope = initial_scope(ctx);
    let mut last_output: Option<Value> = None;

    for (index, step) in def.steps.iter().enumerate() {
        let step_type = step.kind.type_name();
        let started = Instant::now();
        let started_at_ms = unix_ms();
        *running.borrow_mut() = Some(Running {
            id: step.id.clone(),
            index,
            step_type,
            started_at_ms,
            started,
            attempts: 0,
        });
        let record = |status, output, error, attempts, usage| StepRecord {
            step_id: step.id.clone(),
            index,
            step_type,
            status,
            started_at_ms,
            duration_ms: elapsed_ms(started),
            output,
            error,
            attempts,
            usage,
        };

        let jinja_scope = template::to_context(&Value::Object(scope.clone()));
        let outcome = match &step.when {
            None => Ok(true),
            Some(cond) => {
                template::eval_bool_with(cond, &jinja_scope).map_err(|e| format!("when: {e}"))
            }
        };
        let result = match outcome {
            Ok(false) => {
                on_step(&record(StepStatus::Skipped, None, None, 0, None));
                running.borrow_mut().take();
                record_in_scope(
                    &mut scope,
                    step,
                    index,
                    StepStatus::Skipped,
                    Value::Null,
                    None,
                );
                continue;
            }
            Err(e) => Err((e, 0)),
            Ok(true) => {
                if let StepKind::Approval { .. } = step.kind {
                    let reason = "approval steps need an async run".to_owned();
                    on_step(&record(StepStatus::Failed, None, Some(reason), 0, None));
                    running.borrow_mut().take();
                    return Err(RunFailure::new(
                        "approval_requires_async",
                        Some(&step.id),
                        format!(
                            "step {} is an approval step, which only runs asynchronously",
                            step.id
                        ),
                    ));
                }
                run_with_retries(step, env, &scope, &jinja_scope, running).await
            }
        };
        running.borrow_mut().take();

        match result {
            Ok((out, attempts)) => {
                on_step(&record(
                    StepStatus::Completed,
                    Some(out.output.clone()),
                    None,
                    attempts,
                    out.usage,
                ));
                record_in_scope(
                    &mut scope,
                    step,
                    index,
                    StepStatus::Completed,
                    out.output.clone(),
                    None,
                );
                last_output = Some(out.output);
            }
            Err((reason, attempts)) => {
                on_step(&record(
                    StepStatus::Failed,
                    None,
                    Some(reason.clone()),
                    attempts,
                    None,
                ));
                if step.on_error == OnError::Terminate {
                    return Err(RunFailure::new(
                        "step_failed",
                        Some(&step.id),
                        format!("step {} failed: {reason}", step.id),
                    ));
                }
                record_in_scope(
                    &mut scope,
                    step,
                    index,
                    StepStatus::Failed,
                    Value::Null,
                    Some(reason),
                );
                last_output = Some(Value::Null);
            }
        }
    }

    match &def.output {
        Some(out) => template::render(&out.template, &Value::Object(scope))
            .map(Value::String)
            .map_err(|e| RunFailure::new("template_error", None, format!("output template: {e}"))),
        None => Ok(last_output.unwrap_or(Value::Null)),
    }
}

/// Runs a step up to `1 + retries` times; returns the outcome and the attempts made.
async fn run_with_retries(
    step: &StepDef,
    env: &Environment,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
    running: &RefCell<Option<Running>>,
) -> Result<(StepOutput, u32), (String, u32)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(r) = running.borrow_mut().as_mut() {
            r.attempts = attempts;
        }
        match run_once(&step.kind, env, scope, jinja_scope).await {
            Ok(out) => return Ok((out, attempts)),
            Err(e) if attempts > step.retries => return Err((e, attempts)),
            Err(e) => {
                tracing::debug!(step = %step.id, attempt = attempts, error = %e, "step failed, retrying");
                if let Some(pause) = retry_pause(&step.kind, attempts) {
                    actix_rt::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Backoff before another attempt; only steps that talk to something outside wait.
fn retry_pause(kind: &StepKind, attempts: u32) -> Option<Duration> {
    match kind {
        StepKind::Http { .. } | StepKind::Prompt { .. } | StepKind::Command { .. } => {
            let ms = 100u64.saturating_mul(1 << attempts.min(5).saturating_sub(1));
            Some(Duration::from_millis(ms.min(2_000)))
        }
        _ => None,
    }
}

async fn run_once(
    kind: &StepKind,
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
            temperature,
            max_tokens,
        } => {
            let step = steps::prompt::PromptStep {
                provider,
                model,
                system: system.as_deref(),
                prompt,
                temperature: *temperature,
                max_tokens: *max_tokens,
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
                return Err(
                    "command steps are disabled (set security.allow_command_steps = true)"
                        .to_owned(),
                );
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
        // Handled before any attempt; kept here so the match stays exhaustive.
        StepKind::Approval { .. } => Err("approval steps need an async run".to_owned()),
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

/// Makes a finished step visible as `{id}` and `step_{n}` (1-based).
fn record_in_scope(
    scope: &mut Map<String, Value>,
    step: &StepDef,
    index: usize,
    status: StepStatus,
    output: Value,
    error: Option<String>,
) {
    let entry = json!({ "output": output, "status": status.as_str(), "error": error });
    scope.insert(format!("step_{}", index + 1), entry.clone());
    scope.insert(step.id.clone(), entry);
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}
