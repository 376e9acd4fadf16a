//! SPEC §10 rerun: `POST /v1/runs/{id}/rerun` starts a new run (`rerun_of`) of the same
//! deployment version, variant, metadata, user and async configuration, taking over the
//! outputs of the top-level steps before `from_step` (trace status `reused`) without running
//! them again. Checked against a stand-in model provider that counts its calls.

use serde_json::{json, Value};

use crate::support::webhooks::{invoke_async, run_detail, wait_delivery};
use crate::support::*;

fn provider_config(llm: &StubServer) -> String {
    format!("[providers.stub]\nbase_url = \"{}/v1\"\n", llm.url())
}

/// Three prompt steps, each reading the one before; the stand-in answers `reply N` to the
/// Nth call it receives.
const THREE_PROMPTS: &str = r#"
key = "chain"

[[inputs]]
name = "topic"
type = "text"
default = "bees"

[[steps]]
id = "outline"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Outline {{ inputs.topic }}"
stream = false

[[steps]]
id = "draft"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Draft from {{ outline.output }}"
stream = false

[[steps]]
id = "polish"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Polish {{ draft.output }}"
stream = false
"#;

fn counting_provider() -> StubServer {
    StubServer::threaded(|_, n| StubReply::json(200, &chat_completion(&format!("reply {n}"))))
}

fn rerun(app: &TestApp, id: &str, body: &Value) -> Resp {
    app.post_json(&format!("/v1/runs/{id}/rerun"), Some(&app.admin_key), body)
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("step {id}: {run:#}"))
}

fn wait_ended(app: &TestApp, id: &str) -> Value {
    wait_for(&format!("run {id} to end"), || {
        let run = run_detail(app, id);
        (!matches!(run["run_status"].as_str(), Some("queued" | "running"))).then_some(run)
    })
}

/// Accepted with 202 and a new request id; returns it.
#[track_caller]
fn accepted(r: &Resp, old: &str) -> String {
    r.expect_status(202);
    let body = r.json();
    let id = body["request_id"].as_str().unwrap_or_default().to_string();
    assert!(is_request_id(&id) && id != old, "{body}");
    assert!(
        matches!(body["run_status"].as_str(), Some("running" | "queued")),
        "{body}"
    );
    id
}

#[test]
fn a_rerun_from_the_last_step_makes_exactly_one_model_call() {
    let llm = counting_provider();
    let app = TestApp::start_with(&provider_config(&llm), &[], &[]);
    app.deploy_ok("chain", THREE_PROMPTS);
    let r =
        app.invoke(&json!({"deployment": "chain", "metadata": {"ticket": "T-1"}, "user": "ada"}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();
    assert_eq!(llm.requests().len(), 3);

    let id = accepted(
        &rerun(&app, &first, &json!({"from_step": "polish"})),
        &first,
    );
    let run = wait_ended(&app, &id);
    assert_eq!(run["run_status"], "completed", "{run:#}");
    let calls = llm.requests();
    assert_eq!(calls.len(), 4, "exactly one more model call: {calls:?}");
    assert_eq!(
        calls[3].json()["messages"][0]["content"],
        "Polish reply 1",
        "the reused draft's output feeds the step that runs again"
    );
    assert_eq!(run["output"], "reply 3", "{run:#}");
    assert_eq!(run["rerun_of"], first.as_str(), "{run:#}");
    assert_eq!(run["metadata"], json!({"ticket": "T-1"}), "{run:#}");
    assert_eq!(run["user"], "ada", "{run:#}");
    let old = run_detail(&app, &first);
    assert_eq!(run["version"], old["version"]);
    assert_eq!(run["variant"], old["variant"]);
    for reused in ["outline", "draft"] {
        let line = step(&run, reused);
        assert_eq!(line["status"], "reused", "{line}");
        assert_eq!(line["reason"], "completed", "{line}");
        assert_eq!(line["output"], step(&old, reused)["output"], "{line}");
    }
    assert_eq!(step(&run, "polish")["status"], "completed");
    assert_eq!(
        run["steps"].as_array().unwrap().len(),
        3,
        "one line per step: {run:#}"
    );
    // Only the call this run made counts towards its usage.
    assert_eq!(run["usage"]["total_tokens"], 18, "{run:#}");
    assert!(old["rerun_of"].is_null(), "{old:#}");

    let list = app.admin_get("/v1/runs?limit=10");
    list.expect_status(200);
    let row = list.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .cloned()
        .expect("the rerun is listed");
    assert_eq!(row["rerun_of"], first.as_str(), "{row}");
}

#[test]
fn a_rerun_without_from_step_runs_everything_again() {
    let llm = counting_provider();
    let app = TestApp::start_with(&provider_config(&llm), &[], &[]);
    app.deploy_ok("chain", THREE_PROMPTS);
    let r = app.invoke(&json!({"deployment": "chain"}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();

    // No body at all is a rerun from the start.
    let r = app.request(
        "POST",
        &format!("/v1/runs/{first}/rerun"),
        Some(&app.admin_key),
        &[],
        None,
    );
    let id = accepted(&r, &first);
    let run = wait_ended(&app, &id);
    assert_eq!(run["run_status"], "completed", "{run:#}");
    assert_eq!(llm.requests().len(), 6, "every step ran again");
    assert!(
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed"),
        "{run:#}"
    );
    assert_eq!(run["usage"]["total_tokens"], 54, "{run:#}");
}

const TEMPLATES: &str = r#"
key = "greet"

[[inputs]]
name = "name"
type = "text"
required = true

[[inputs]]
name = "suffix"
type = "text"
default = "."

[[steps]]
id = "hello"
type = "template"
template = "Hello {{ inputs.name }}"

[[steps]]
id = "loud"
type = "template"
template = "{{ hello.output }}!"

[[steps]]
id = "each"
type = "loop"
for_each = "[1, 2]"
[[steps.steps]]
id = "inner"
type = "template"
template = "{{ item }}"

[[steps]]
id = "end"
type = "template"
template = "{{ loud.output }}{{ inputs.suffix }}"
"#;

#[test]
fn new_inputs_are_accepted_only_where_no_taken_over_step_read_them() {
    let app = TestApp::start();
    app.deploy_ok("greet", TEMPLATES);
    let r = app.invoke(&json!({"deployment": "greet", "inputs": {"name": "Ada"}}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["output"], "Hello Ada!.");

    // `suffix` is read first by `end`: a rerun from there may change it.
    let id = accepted(
        &rerun(
            &app,
            &first,
            &json!({"from_step": "end", "inputs": {"suffix": "?"}}),
        ),
        &first,
    );
    let run = wait_ended(&app, &id);
    assert_eq!(run["output"], "Hello Ada!?", "{run:#}");
    assert_eq!(
        run["inputs"],
        json!({"name": "Ada", "suffix": "?"}),
        "merged: {run:#}"
    );
    assert_eq!(step(&run, "hello")["status"], "reused");
    let inner: Vec<&Value> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == "inner")
        .collect();
    assert_eq!(
        inner.len(),
        2,
        "the loop's passes are taken over too: {run:#}"
    );
    assert!(inner.iter().all(|s| s["status"] == "reused"), "{run:#}");

    // `name` is read by `hello`, which a rerun from `loud` would take over.
    let body = rerun(
        &app,
        &first,
        &json!({"from_step": "loud", "inputs": {"name": "Bo"}}),
    )
    .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "inputs", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("hello"),
        "names the step: {body}"
    );
    // The same value is no change.
    let same = rerun(
        &app,
        &first,
        &json!({"from_step": "loud", "inputs": {"name": "Ada"}}),
    );
    wait_ended(&app, &accepted(&same, &first));

    // From the step that reads it, or from the start, a new name is fine.
    for body in [
        json!({"from_step": "hello", "inputs": {"name": "Bo"}}),
        json!({"inputs": {"name": "Bo"}}),
    ] {
        let id = accepted(&rerun(&app, &first, &body), &first);
        assert_eq!(wait_ended(&app, &id)["output"], "Hello Bo!.", "{body}");
    }

    // New inputs are checked against the deployment's input spec.
    let body = rerun(&app, &first, &json!({"inputs": {"name": 5}})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert_eq!(body["field"], "inputs.name", "{body}");
}

#[test]
fn bad_reruns_are_refused_in_the_envelope_and_start_nothing() {
    let app = TestApp::start();
    app.deploy_ok("greet", TEMPLATES);
    let r = app.invoke(&json!({"deployment": "greet", "inputs": {"name": "Ada"}}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();
    let runs_before = app.admin_get("/v1/runs").json()["runs"]
        .as_array()
        .unwrap()
        .len();

    let body = rerun(&app, &first, &json!({"from_step": "nope"})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert_eq!(body["field"], "from_step", "{body}");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");

    let body = rerun(&app, &first, &json!({"from_step": "inner"})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert_eq!(body["field"], "from_step", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("top-level"),
        "{body}"
    );

    let body =
        rerun(&app, &first, &json!({"from_step": 3})).expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "from_step", "{body}");
    let body = rerun(&app, &first, &json!({"form_step": "end"})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert!(
        body["message"].as_str().unwrap().contains("form_step"),
        "{body}"
    );

    rerun(&app, "req_00000000000000000000000000000000", &json!({})).expect_error(
        404,
        "not_found",
        Some("Run not found."),
    );

    let after = app.admin_get("/v1/runs").json()["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, runs_before, "nothing was started");

    // A deleted deployment's runs have no definition left to rerun.
    app.delete("/v1/deployments/greet", Some(&app.admin_key))
        .expect_success();
    rerun(&app, &first, &json!({})).expect_error(409, "conflict", None);
}

#[test]
fn a_run_that_has_not_ended_cannot_be_rerun() {
    let hook = StubServer::json(json!({"ok": true}));
    let app = TestApp::start();
    app.deploy_ok(
        "ask",
        "key = \"ask\"\n[[steps]]\nid = \"ok\"\ntype = \"approval\"\nquestion = \"Go?\"\n",
    );
    let id = invoke_async(
        &app,
        json!({"deployment": "ask"}),
        &format!("{}/hook", hook.url()),
    );
    wait_for("the run to wait at its approval step", || {
        let run = run_detail(&app, &id);
        (step_status(&run, "ok") == Some("waiting")).then_some(())
    });
    let body = rerun(&app, &id, &json!({})).expect_error(409, "conflict", None);
    assert!(
        body["message"].as_str().unwrap().contains("running"),
        "{body}"
    );
    // `wait` cannot wait for a person.
    app.post_json(
        &format!("/v1/runs/{id}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(202);
    wait_ended(&app, &id);
    let body = rerun(&app, &id, &json!({"wait": true})).expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "wait", "{body}");
    // Nor can it run without its callback.
    let body = rerun(&app, &id, &json!({"async": {"enabled": false}})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert_eq!(body["field"], "async", "{body}");
}

fn step_status<'a>(run: &'a Value, id: &str) -> Option<&'a str> {
    run["steps"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["id"] == id)?["status"]
        .as_str()
}

#[test]
fn wait_answers_like_a_sync_invoke_and_the_callback_is_still_delivered() {
    let llm = counting_provider();
    let hook = StubServer::json(json!({"ok": true}));
    let app = TestApp::start_with(&provider_config(&llm), &[], &[]);
    app.deploy_ok("chain", THREE_PROMPTS);
    let first = invoke_async(
        &app,
        json!({"deployment": "chain"}),
        &format!("{}/hook", hook.url()),
    );
    wait_delivery(&app, &first, "delivered");

    let r = rerun(&app, &first, &json!({"from_step": "draft", "wait": true}));
    r.expect_status(200);
    let body = r.json();
    let id = body["request_id"].as_str().unwrap().to_string();
    assert_ne!(id, first);
    assert_eq!(body["run_status"], "completed", "{body}");
    assert_eq!(body["output"], "reply 4", "{body}");
    assert_eq!(llm.requests().len(), 5, "two steps ran again");

    let run = wait_delivery(&app, &id, "delivered");
    assert_eq!(run["rerun_of"], first.as_str());
    let deliveries = hook.wait_for_requests(2);
    let event = deliveries
        .iter()
        .map(Recorded::json)
        .find(|e| e["request_id"] == id.as_str())
        .expect("the rerun's webhook");
    assert_eq!(event["data"]["output"], "reply 4", "{event}");
    assert_eq!(event["data"]["usage"]["total_tokens"], 36, "{event}");

    // `async` given: this rerun's callback goes elsewhere, and it answers 202.
    let other = StubServer::json(json!({"ok": true}));
    let r = rerun(
        &app,
        &first,
        &json!({"from_step": "polish", "async": {"enabled": true, "callback_url": format!("{}/other", other.url())}}),
    );
    let id = accepted(&r, &first);
    wait_delivery(&app, &id, "delivered");
    assert_eq!(other.requests().len(), 1);
    assert_eq!(hook.requests().len(), 2);
}

#[test]
fn a_rerun_killed_right_after_it_was_accepted_still_completes() {
    let gate = Gate::new();
    let llm = {
        let gate = gate.clone();
        StubServer::threaded(move |_, n| {
            // The rerun's own call (the fourth) hangs until the daemon was killed.
            if n == 3 {
                gate.wait();
            }
            StubReply::json(200, &chat_completion(&format!("reply {n}")))
        })
    };
    let hook = StubServer::json(json!({"ok": true}));
    let mut app = TestApp::start_with(&provider_config(&llm), &[], &[]);
    app.deploy_ok("chain", THREE_PROMPTS);
    let first = invoke_async(
        &app,
        json!({"deployment": "chain"}),
        &format!("{}/hook", hook.url()),
    );
    wait_delivery(&app, &first, "delivered");

    let id = accepted(
        &rerun(&app, &first, &json!({"from_step": "polish"})),
        &first,
    );
    llm.wait_for_requests(4);
    app.kill();
    gate.open();
    app.spawn();

    let run = wait_delivery(&app, &id, "delivered");
    assert_eq!(run["run_status"], "completed", "{run:#}");
    assert_eq!(run["rerun_of"], first.as_str());
    for reused in ["outline", "draft"] {
        assert_eq!(step_status(&run, reused), Some("reused"), "{run:#}");
    }
    assert_eq!(step_status(&run, "polish"), Some("completed"), "{run:#}");
    assert_eq!(
        llm.requests().len(),
        5,
        "only the cut-off step ran again after the restart"
    );
}

#[test]
fn a_queued_rerun_killed_before_it_started_resumes_after_its_reused_steps() {
    let gate = Gate::new();
    let llm = {
        let gate = gate.clone();
        StubServer::threaded(move |req, n| {
            // The fourth call (another run's first) holds the only run slot until the kill.
            if n == 3 {
                gate.wait();
            }
            let prompt = req.json()["messages"][0]["content"].clone();
            StubReply::json(200, &chat_completion(&format!("reply to {prompt}")))
        })
    };
    let mut app = TestApp::start_with(
        &format!("{}[runs]\nmax_concurrent = 1\n", provider_config(&llm)),
        &[],
        &[],
    );
    app.deploy_ok("chain", THREE_PROMPTS);
    let r = app.invoke(&json!({"deployment": "chain"}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();
    let polish_prompt = llm.requests()[2].json()["messages"][0]["content"].clone();

    let blocker = app.invoke(&json!({"deployment": "chain", "inputs": {"topic": "ants"}, "async": {"enabled": true, "callback_url": "http://127.0.0.1:9/none"}}));
    blocker.expect_status(202);
    llm.wait_for_requests(4);
    let r = rerun(&app, &first, &json!({"from_step": "polish"}));
    let id = accepted(&r, &first);
    assert_eq!(r.json()["run_status"], "queued", "the only slot is taken");
    app.kill();
    gate.open();
    app.spawn();

    let run = wait_ended(&app, &id);
    assert_eq!(run["run_status"], "completed", "{run:#}");
    let lines: Vec<(&str, &str)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            ("outline", "reused"),
            ("draft", "reused"),
            ("polish", "completed")
        ],
        "{run:#}"
    );
    let calls: Vec<Value> = llm
        .requests()
        .iter()
        .map(|r| r.json()["messages"][0]["content"].clone())
        .collect();
    let count = |prompt: &Value| calls.iter().filter(|c| *c == prompt).count();
    assert_eq!(
        count(&polish_prompt),
        2,
        "the rerun called the model once: {calls:#?}"
    );
    assert_eq!(count(&json!("Outline bees")), 1, "{calls:#?}");
    // It started when it got a slot after the restart, not when it was queued.
    let (created, started) = (
        run["created_at"].as_str().unwrap(),
        run["started_at"].as_str().unwrap(),
    );
    assert!(started > created, "created {created}, started {started}");
}

#[test]
fn a_rerun_uses_the_earlier_runs_version_and_cannot_skip_a_step_that_failed() {
    let app = TestApp::start();
    let version = |greeting: &str| {
        format!(
            "key = \"v\"\n[[steps]]\nid = \"a\"\ntype = \"template\"\ntemplate = \"{greeting}\"\n[[steps]]\nid = \"b\"\ntype = \"template\"\ntemplate = \"{{{{ a.output }}}}!\"\n"
        )
    };
    app.deploy_ok("v", &version("one"));
    let r = app.invoke(&json!({"deployment": "v"}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();
    app.deploy_ok("v", &version("two"));
    let id = accepted(&rerun(&app, &first, &json!({})), &first);
    let run = wait_ended(&app, &id);
    assert_eq!(run["version"], 1, "{run:#}");
    assert_eq!(
        run["output"], "one!",
        "the definition the earlier run ran: {run:#}"
    );

    app.deploy_ok(
        "broken",
        "key = \"broken\"\n[[steps]]\nid = \"a\"\ntype = \"template\"\ntemplate = \"A\"\n[[steps]]\nid = \"call\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"http://127.0.0.1:9/nothing\"\n[[steps]]\nid = \"c\"\ntype = \"template\"\ntemplate = \"C\"\n",
    );
    let r = app.invoke(&json!({"deployment": "broken"}));
    r.expect_status(502);
    let failed = r.json()["request_id"].as_str().unwrap().to_string();
    let body = rerun(&app, &failed, &json!({"from_step": "c"})).expect_error(
        422,
        "validation_error",
        None,
    );
    assert_eq!(body["field"], "from_step", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("call"),
        "names the step that did not finish: {body}"
    );
    let id = accepted(
        &rerun(&app, &failed, &json!({"from_step": "call"})),
        &failed,
    );
    let run = wait_ended(&app, &id);
    assert_eq!(step_status(&run, "a"), Some("reused"), "{run:#}");
    assert_eq!(run["run_status"], "failed", "{run:#}");
}
