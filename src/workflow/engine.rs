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

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::approval;
use super::definition::{ApprovalChoice, Definition, OnError, StepDef, StepKind};
use super::steps::{self, StepError, StepOutput, StepResult};
use super::template;

// Callers name these through `workflow::engine::…`; they moved to their own modules.
pub use super::approval::{approval_output, Approval, ApprovalAnswer};
pub use super::trace::{DoneStep, Resume, RunFailure, StepRecord, StepStatus};

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

/// The step being executed, so a workflow timeout can say which one it cut short.
struct Running {
    id: String,
    index: usize,
    step_type: &'static str,
    started_at_ms: i64,
    started: Instant,
    attempts: u32,
}

/// Runs `def` to its output, or until an approval step waits. `on_step` sees every step
/// as it ends (not the steps taken over from `ctx.resume`, nor a waiting step).
///
/// The workflow's `timeout_ms` bounds each execution; the time a run spends paused at an
/// approval step does not count (that step has its own `timeout_ms`).
pub async fn execute(
    def: &Definition,
    ctx: RunContext,
    env: &Environment,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Execution {
    let running = RefCell::new(None::<Running>);
    let flow = match def.timeout_ms {
        None => run_steps(def, ctx, env, &mut *on_step, &running).await,
        Some(timeout_ms) => match actix_rt::time::timeout(
            Duration::from_millis(timeout_ms),
            run_steps(def, ctx, env, &mut *on_step, &running),
        )
        .await
        {
            Ok(flow) => flow,
            Err(_) => Err(workflow_timed_out(timeout_ms, &running, on_step)),
        },
    };
    match flow {
        Ok(Flow::Output(output)) => Execution::Finished(Ok(output)),
        Ok(Flow::Paused(pause)) => Execution::Paused(pause),
        Err(failure) => Execution::Finished(Err(failure)),
    }
}

/// Records the step a workflow timeout cut short and says why the run failed.
fn workflow_timed_out(
    timeout_ms: u64,
    running: &RefCell<Option<Running>>,
    on_step: &mut dyn FnMut(&StepRecord),
) -> RunFailure {
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
    RunFailure {
        message,
        error_code: "timeout".to_owned(),
        step,
    }
}

/// How `run_steps` ended when the run did not fail.
enum Flow {
    Output(Value),
    Paused(Box<Pause>),
}

async fn run_steps(
    def: &Definition,
    mut ctx: RunContext,
    env: &Environment,
    on_step: &mut dyn FnMut(&StepRecord),
    running: &RefCell<Option<Running>>,
) -> Result<Flow, RunFailure> {
    let Resume {
        done: earlier,
        mut approvals,
    } = std::mem::take(&mut ctx.resume);
    let mut scope = initial_scope(ctx);
    let mut last_output: Option<Value> = None;
    // What this run has finished so far, earlier executions included (for a pause).
    let mut done: Vec<DoneStep> = Vec::with_capacity(def.steps.len());
    let mut reuse = true;

    for (index, step) in def.steps.iter().enumerate() {
        if reuse {
            match earlier.get(index) {
                Some(d) if d.step_id == step.id => {
                    record_in_scope(
                        &mut scope,
                        step,
                        index,
                        d.status,
                        d.output.clone(),
                        d.error.clone(),
                    );
                    if d.status != StepStatus::Skipped {
                        last_output = Some(d.output.clone());
                    }
                    done.push(d.clone());
                    continue;
                }
                _ => reuse = false,
            }
        }

        let step_type = step.kind.type_name();
        let started = Instant::now();
        // An answered approval step keeps the start of its wait, so its trace line (same
        // start) replaces the `waiting` one and its duration covers the wait.
        let answer = match step.kind {
            StepKind::Approval { .. } => approvals.remove(&step.id),
            _ => None,
        };
        let waited_since = answer.as_ref().map(|a| a.waiting_since_ms);
        let started_at_ms = waited_since.unwrap_or_else(unix_ms);
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
            duration_ms: match waited_since {
                Some(since) => (unix_ms() - since).max(0),
                None => elapsed_ms(started),
            },
            output,
            error,
            attempts,
            usage,
        };

        let jinja_scope = template::to_context(&Value::Object(scope.clone()));
        let outcome = match &step.when {
            None => Ok(true),
            Some(cond) => template::eval_bool_with(cond, &jinja_scope)
                .map_err(|e| StepError::permanent(format!("when: {e}"))),
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
                done.push(DoneStep {
                    step_id: step.id.clone(),
                    status: StepStatus::Skipped,
                    output: Value::Null,
                    error: None,
                });
                continue;
            }
            Err(e) => Err((e, 0)),
            Ok(true) => match (&step.kind, answer) {
                (StepKind::Approval { timeout_ms, .. }, Some(approval)) => match approval.answer {
                    ApprovalAnswer::Given(output) => Ok((StepOutput::new(output), 1)),
                    ApprovalAnswer::TimedOut => Err((
                        StepError::permanent(approval::timed_out_message(*timeout_ms)),
                        1,
                    )),
                },
                (
                    StepKind::Approval {
                        question,
                        choices,
                        timeout_ms,
                    },
                    None,
                ) => {
                    let rendered = question
                        .as_deref()
                        .map(|q| template::render_with(q, &jinja_scope))
                        .transpose();
                    match rendered {
                        Err(e) => Err((StepError::permanent(format!("question: {e}")), 0)),
                        Ok(question) => {
                            running.borrow_mut().take();
                            let timeout_at_ms = approval::timeout_at(started_at_ms, *timeout_ms);
                            let output = approval::waiting_output(
                                question.as_deref(),
                                choices,
                                timeout_at_ms,
                            );
                            return Ok(Flow::Paused(Box::new(Pause {
                                record: record(StepStatus::Waiting, Some(output), None, 0, None),
                                question,
                                choices: choices.clone(),
                                timeout_at_ms,
                                resume: Resume { done, approvals },
                            })));
                        }
                    }
                }
                _ => run_with_retries(step, env, &scope, &jinja_scope, running).await,
            },
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
                done.push(DoneStep {
                    step_id: step.id.clone(),
                    status: StepStatus::Completed,
                    output: out.output.clone(),
                    error: None,
                });
                last_output = Some(out.output);
            }
            Err((error, attempts)) => {
                let code = error.error_code();
                let reason = error.message;
                on_step(&record(
                    StepStatus::Failed,
                    None,
                    Some(reason.clone()),
                    attempts,
                    None,
                ));
                if step.on_error == OnError::Terminate {
                    return Err(RunFailure::new(
                        code,
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
                    Some(reason.clone()),
                );
                done.push(DoneStep {
                    step_id: step.id.clone(),
                    status: StepStatus::Failed,
                    output: Value::Null,
                    error: Some(reason),
                });
                last_output = Some(Value::Null);
            }
        }
    }

    match &def.output {
        Some(out) => template::render(&out.template, &Value::Object(scope))
            .map(|s| Flow::Output(Value::String(s)))
            .map_err(|e| RunFailure::new("template_error", None, format!("output template: {e}"))),
        None => Ok(Flow::Output(last_output.unwrap_or(Value::Null))),
    }
}

/// Runs a step up to `1 + retries` times; returns the outcome and the attempts made. An
/// error that is not retryable (see [`StepError`]) ends the step at once, and the trace
/// counts only the attempts actually made.
async fn run_with_retries(
    step: &StepDef,
    env: &Environment,
    scope: &Map<String, Value>,
    jinja_scope: &minijinja::Value,
    running: &RefCell<Option<Running>>,
) -> Result<(StepOutput, u32), (StepError, u32)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(r) = running.borrow_mut().as_mut() {
            r.attempts = attempts;
        }
        match run_once(&step.kind, env, scope, jinja_scope).await {
            Ok(out) => return Ok((out, attempts)),
            Err(e) if attempts > step.retries => return Err((e, attempts)),
            Err(e) if !e.retryable => {
                tracing::debug!(step = %step.id, attempt = attempts, error = %e, "step failed; a retry cannot help");
                return Err((e, attempts));
            }
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
        // `run_steps` answers approval steps itself; kept so the match stays exhaustive.
        StepKind::Approval { .. } => {
            Err(StepError::permanent("approval steps are answered, not run"))
        }
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
                    status: StepStatus::Completed,
                    output: json!("pay 5"),
                    error: None,
                },
                DoneStep {
                    step_id: "gone".into(),
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
                "max_tokens": 20
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
