//! SPEC §7 step types and step options, run against local stand-ins: template, http (a stub
//! API), prompt (a stub OpenAI-compatible server), command (real shell scripts), delay, `when`,
//! `on_error`, `retries`, and the workflow `timeout_ms`.

use serde_json::{json, Value};

use crate::support::*;

/// Deploys `toml` as `key` and invokes it synchronously with `inputs`.
fn run(app: &TestApp, key: &str, toml: &str, inputs: Value) -> Resp {
    app.deploy_ok(key, toml);
    app.invoke(&json!({"deployment": key, "inputs": inputs}))
}

#[track_caller]
fn output_of(r: &Resp) -> Value {
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["run_status"], "completed", "{body}");
    body["output"].clone()
}

#[test]
fn templates_see_inputs_vars_earlier_steps_and_the_request_id() {
    let app = TestApp::start();
    let r = run(
        &app,
        "ctx",
        r#"
key = "ctx"

[[inputs]]
name = "name"
type = "text"
required = true

[[inputs]]
name = "n"
type = "number"
required = true

[[steps]]
id = "first"
type = "template"
template = "{{ name | upper }}"

[[steps]]
id = "second"
type = "template"
template = "{{ first.output }}-{{ step_1.output }}-{{ inputs.n + 1 }}-{{ vars.tag }}"

[[steps]]
id = "me"
type = "template"
template = "{{ run.request_id }}"

[output]
template = "{{ second.output }}|{{ me.output }}"

[variants.default]
vars = { tag = "v1" }
"#,
        json!({"name": "Ada", "n": 2}),
    );
    let body = r.json();
    let out = output_of(&r);
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(out, format!("ADA-ADA-3-v1|{id}"), "{body}");
}

#[test]
fn template_with_json_true_yields_an_object() {
    let app = TestApp::start();
    let r = run(
        &app,
        "calc",
        r#"
key = "calc"

[[inputs]]
name = "n"
type = "number"
required = true

[[steps]]
id = "calc"
type = "template"
json = true
template = '{"total": {{ n * 2 }}, "items": ["a", "b", "c"]}'

[[steps]]
id = "say"
type = "template"
template = "{{ calc.output.total }} in {{ calc.output['items'] | length }}"

[output]
template = "{{ say.output }}"
"#,
        json!({"n": 21}),
    );
    assert_eq!(output_of(&r), "42 in 3");
}

#[test]
fn http_step_json_response_is_usable_in_later_templates() {
    let api = StubServer::json(json!({"name": "Grace", "langs": ["COBOL", "FLOW-MATIC"]}));
    let app = TestApp::start();
    let r = run(
        &app,
        "lookup",
        &r#"
key = "lookup"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/users/7?fields=all"

[output]
template = "{{ fetch.output.name }} wrote {{ fetch.output.langs[0] }}"
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    assert_eq!(output_of(&r), "Grace wrote COBOL");
    let seen = api.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/users/7?fields=all");
}

#[test]
fn http_step_sends_templated_headers_and_body() {
    let api = StubServer::start(|req, _| {
        let sent = req.json();
        StubReply::json(201, &json!({"id": 99, "echo": sent["greeting"]}))
    });
    let app = TestApp::start();
    let r = run(
        &app,
        "post",
        &r#"
key = "post"

[[inputs]]
name = "name"
type = "text"
required = true

[[steps]]
id = "create"
type = "http"
method = "POST"
url = "STUB/greetings"
headers = { "Content-Type" = "application/json", "X-Customer" = "c-{{ name }}" }
body = '{"greeting": "hi {{ name }}"}'

[output]
template = "{{ create.output.id }}:{{ create.output.echo }}"
"#
        .replace("STUB", &api.url()),
        json!({"name": "Ada"}),
    );
    assert_eq!(output_of(&r), "99:hi Ada");
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/greetings");
    assert_eq!(
        seen[0].header("X-Customer"),
        Some("c-Ada"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].json(), json!({"greeting": "hi Ada"}));
}

#[test]
fn http_step_url_is_templated() {
    let api = StubServer::json(json!({"state": "shipped"}));
    let app = TestApp::start();
    let r = run(
        &app,
        "byid",
        &r#"
key = "byid"

[[inputs]]
name = "id"
type = "number"
required = true

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/orders/{{ id }}"

[output]
template = "{{ fetch.output.state }}"
"#
        .replace("STUB", &api.url()),
        json!({"id": 1234}),
    );
    assert_eq!(output_of(&r), "shipped");
    assert_eq!(api.requests()[0].path, "/orders/1234");
}

#[test]
fn http_step_text_response_is_text() {
    let api = StubServer::start(|_, _| StubReply::text(200, "plain words"));
    let app = TestApp::start();
    let r = run(
        &app,
        "text",
        &r#"
key = "text"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/text"

[output]
template = "[{{ fetch.output }}]"
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    assert_eq!(output_of(&r), "[plain words]");
}

#[test]
fn http_step_retries_until_success() {
    let api = StubServer::start(|_, n| {
        if n < 2 {
            StubReply::json(500, &json!({"error": "flaky"}))
        } else {
            StubReply::json(200, &json!({"value": "third time"}))
        }
    });
    let app = TestApp::start();
    let r = run(
        &app,
        "flaky",
        &r#"
key = "flaky"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/flaky"
retries = 2

[output]
template = "{{ fetch.output.value }}"
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    assert_eq!(output_of(&r), "third time");
    assert_eq!(api.requests().len(), 3, "one attempt plus two retries");
}

#[test]
fn http_step_fails_the_run_when_retries_run_out() {
    let api = StubServer::start(|_, _| StubReply::json(503, &json!({"error": "down"})));
    let app = TestApp::start();
    let r = run(
        &app,
        "down",
        &r#"
key = "down"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/down"
retries = 1

[output]
template = "{{ fetch.output }}"
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["run_status"], "failed", "{body}");
    assert_eq!(body["step"], "fetch", "{body}");
    assert_eq!(api.requests().len(), 2, "one attempt plus one retry");
}

/// The trace entry of step `id` in a run detail.
#[track_caller]
fn traced_step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("step {id} missing from the trace: {run:#}"))
}

#[test]
fn a_template_error_is_not_retried() {
    let app = TestApp::start();
    let r = run(
        &app,
        "render",
        r#"
key = "render"

[[steps]]
id = "render"
type = "template"
template = "{% include 'missing' %}"
retries = 3
"#,
        json!({}),
    );
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["run_status"], "failed", "{body}");
    let id = body["request_id"].as_str().unwrap();

    let run = run_detail(&app, id);
    let step = traced_step(&run, "render");
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(
        step["attempts"], 1,
        "the same template fails the same way: no retry: {step}"
    );
    let error = step["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("template: "), "{step}");
    assert_eq!(
        run["error"]["message"],
        format!("step render failed: {error}"),
        "{run:#}"
    );
}

#[test]
fn an_http_client_error_is_not_retried() {
    let api = StubServer::start(|_, _| StubReply::json(404, &json!({"error": "no such user"})));
    let app = TestApp::start();
    let r = run(
        &app,
        "missing",
        &r#"
key = "missing"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/users/0"
retries = 2
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    r.expect_status(502);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    assert_eq!(api.requests().len(), 1, "a 404 answers the request itself");
    let run = run_detail(&app, &id);
    let step = traced_step(&run, "fetch");
    assert_eq!(step["attempts"], 1, "{step}");
    assert!(
        step["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 404"),
        "{step}"
    );
}

#[test]
fn on_error_continue_lets_the_run_finish() {
    let api = StubServer::start(|_, _| StubReply::json(500, &json!({"error": "boom"})));
    let app = TestApp::start();
    let r = run(
        &app,
        "tolerant",
        &r#"
key = "tolerant"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/boom"
on_error = "continue"

[[steps]]
id = "after"
type = "template"
template = "after ran"

[output]
template = "{{ after.output }}"
"#
        .replace("STUB", &api.url()),
        json!({}),
    );
    assert_eq!(output_of(&r), "after ran");
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn when_false_skips_the_step() {
    let api = StubServer::json(json!({"ok": true}));
    let app = TestApp::start();
    app.deploy_ok(
        "maybe",
        &r#"
key = "maybe"

[[inputs]]
name = "flag"
type = "boolean"
required = true

[[steps]]
id = "notify"
type = "http"
method = "POST"
url = "STUB/notify"
body = "{}"
when = "flag"

[[steps]]
id = "done"
type = "template"
template = "done"

[output]
template = "{{ done.output }}"
"#
        .replace("STUB", &api.url()),
    );
    let r = app.invoke(&json!({"deployment": "maybe", "inputs": {"flag": false}}));
    assert_eq!(output_of(&r), "done");
    assert_eq!(
        api.requests().len(),
        0,
        "a step whose `when` is false must not run"
    );

    let r = app.invoke(&json!({"deployment": "maybe", "inputs": {"flag": true}}));
    assert_eq!(output_of(&r), "done");
    assert_eq!(api.requests().len(), 1, "a step whose `when` is true runs");
}

fn prompt_config(stub: &StubServer) -> String {
    format!(
        "[providers.stub]\nbase_url = \"{}/v1\"\napi_key_env = \"STUB_KEY\"\n",
        stub.url()
    )
}

const PROMPT_WORKFLOW: &str = r#"
key = "ask"

[[inputs]]
name = "name"
type = "text"
required = true

[[steps]]
id = "ask"
type = "prompt"
provider = "stub"
model = "tiny-1"
system = "You are terse."
prompt = "Say hi to {{ name }}"
temperature = 0.2
max_tokens = 20

[output]
template = "{{ ask.output }}"
"#;

#[test]
fn prompt_step_calls_an_openai_compatible_server() {
    let llm = StubServer::openai("Hi Ada!");
    let app = TestApp::start_with(&prompt_config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let r = run(&app, "ask", PROMPT_WORKFLOW, json!({"name": "Ada"}));
    assert_eq!(output_of(&r), "Hi Ada!");

    let seen = llm.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let call = &seen[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(call.header("Authorization"), Some("Bearer sk-test-123"));
    let body = call.json();
    assert_eq!(body["model"], "tiny-1", "{body}");
    assert_eq!(body["max_tokens"], 20, "{body}");
    let temperature = body["temperature"].as_f64().unwrap_or(-1.0);
    assert!((temperature - 0.2).abs() < 1e-6, "{body}");
    let messages = body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages: {body}"));
    assert!(
        messages.contains(&json!({"role": "system", "content": "You are terse."})),
        "system message missing: {body}"
    );
    assert!(
        messages.contains(&json!({"role": "user", "content": "Say hi to Ada"})),
        "templated user message missing: {body}"
    );
    assert_eq!(
        messages.last().map(|m| m["role"].clone()),
        Some(json!("user")),
        "the user prompt comes last: {body}"
    );
}

#[test]
fn prompt_step_failure_fails_the_run_at_that_step() {
    let llm = StubServer::start(|_, _| {
        StubReply::json(500, &json!({"error": {"message": "model exploded"}}))
    });
    let app = TestApp::start_with(&prompt_config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let r = run(&app, "ask", PROMPT_WORKFLOW, json!({"name": "Ada"}));
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["run_status"], "failed", "{body}");
    assert_eq!(body["step"], "ask", "{body}");
}

fn write_script(app: &TestApp, name: &str, body: &str) -> String {
    let path = app.dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

fn command_workflow(script: &str, extra: &str) -> String {
    r#"
key = "cmd"

[[inputs]]
name = "name"
type = "text"
required = true

[[steps]]
id = "shell"
type = "command"
program = "/bin/sh"
args = ["SCRIPT", "extra-arg"]
EXTRA

[output]
template = "OUTPUT"
"#
    .replace("SCRIPT", script)
    .replace("EXTRA", extra)
}

#[test]
fn command_steps_are_refused_unless_the_config_allows_them() {
    let app = TestApp::start();
    let def = command_workflow("/dev/null", "").replace("OUTPUT", "{{ shell.output }}");
    let r = app.deploy_toml("cmd", &def);
    let body = r.expect_error(422, "validation_error", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allow_command_steps"),
        "the refusal should say which setting allows it: {body}"
    );
    app.admin_get("/v1/deployments/cmd").expect_status(404);
}

#[test]
fn command_step_gets_templated_stdin_and_its_json_stdout_is_the_output() {
    let app = TestApp::start_with("[security]\nallow_command_steps = true\n", &[], &[]);
    let script = write_script(
        &app,
        "shout.sh",
        r#"read -r n || true
upper=$(printf '%s' "$n" | tr 'a-z' 'A-Z')
printf '{"upper": "%s", "arg": "%s"}\n' "$upper" "$1"
"#,
    );
    let def = command_workflow(&script, "stdin = \"{{ name }}\"")
        .replace("OUTPUT", "{{ shell.output.upper }} {{ shell.output.arg }}");
    let r = run(&app, "cmd", &def, json!({"name": "Ada"}));
    assert_eq!(output_of(&r), "ADA extra-arg");
}

#[test]
fn command_step_default_stdin_is_the_run_context() {
    let app = TestApp::start_with("[security]\nallow_command_steps = true\n", &[], &[]);
    let script = write_script(
        &app,
        "look.sh",
        r#"ctx=$(cat)
case "$ctx" in
  *Zelda-42*) printf found ;;
  *) printf 'missing: %s' "$ctx" ;;
esac
"#,
    );
    let def = command_workflow(&script, "").replace("OUTPUT", "{{ shell.output }}");
    let r = run(&app, "cmd", &def, json!({"name": "Zelda-42"}));
    let out = output_of(&r);
    assert_eq!(out.as_str().map(str::trim), Some("found"), "{r}");
}

#[test]
fn command_step_nonzero_exit_fails_the_run() {
    let app = TestApp::start_with("[security]\nallow_command_steps = true\n", &[], &[]);
    let script = write_script(&app, "fail.sh", "echo 'disk on fire' >&2\nexit 3\n");
    let def = command_workflow(&script, "").replace("OUTPUT", "{{ shell.output }}");
    let r = run(&app, "cmd", &def, json!({"name": "Ada"}));
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["run_status"], "failed", "{body}");
    assert_eq!(body["step"], "shell", "{body}");
}

#[test]
fn delay_step_completes() {
    let app = TestApp::start();
    let r = run(
        &app,
        "pause",
        r#"
key = "pause"

[[steps]]
id = "wait"
type = "delay"
ms = 50

[[steps]]
id = "after"
type = "template"
template = "woke up"

[output]
template = "{{ after.output }}"
"#,
        json!({}),
    );
    assert_eq!(output_of(&r), "woke up");
}

#[test]
fn workflow_timeout_fails_a_run_that_takes_too_long() {
    let app = TestApp::start();
    let r = run(
        &app,
        "sleepy",
        r#"
key = "sleepy"
timeout_ms = 300

[[steps]]
id = "nap"
type = "delay"
ms = 5000

[output]
template = "finished"
"#,
        json!({}),
    );
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["run_status"], "failed", "{body}");
    let id = body["request_id"].as_str().unwrap_or_default();
    assert!(is_request_id(id), "{body}");
    let text = body.to_string().to_lowercase();
    assert!(
        text.contains("time"),
        "the error should say the run timed out: {body}"
    );
    let req = app.admin_get(&format!("/v1/public/requests/{id}"));
    assert_eq!(req.json()["status"], "failed", "{req}");
}
