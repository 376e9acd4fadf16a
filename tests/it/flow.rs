//! SPEC §10 `branch` and `loop` steps against the real binary: which case a branch takes
//! (and `<id>.case`), `for_each` passes with `loop.*`, `until`, `max_iterations` and
//! `iteration_limit_exceeded` (run detail, webhook, sync `502`), `concurrency` with the
//! output order kept, bad `for_each` values, definition errors inside nested steps, the
//! trace's `parent`/`pass`, and a loop that resumes at its first unfinished pass after
//! `kill -9`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::support::*;

/// Deploys `toml` as `key` and invokes it synchronously with `inputs`.
fn run(app: &TestApp, key: &str, toml: &str, inputs: Value) -> Resp {
    app.deploy_ok(key, toml);
    invoke(app, key, inputs)
}

fn invoke(app: &TestApp, key: &str, inputs: Value) -> Resp {
    app.invoke(&json!({"deployment": key, "inputs": inputs}))
}

#[track_caller]
fn output_of(r: &Resp) -> Value {
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["run_status"], "completed", "{body}");
    body["output"].clone()
}

/// `GET /v1/runs/{id}` of the run a sync invoke answered.
fn detail_of(app: &TestApp, r: &Resp) -> Value {
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let d = app.admin_get(&format!("/v1/runs/{id}"));
    d.expect_status(200);
    d.json()
}

const TRIAGE: &str = r#"
key = "triage"

[[inputs]]
name = "score"
type = "number"
required = true

[[steps]]
id = "route"
type = "branch"

[[steps.cases]]
when = "score >= 90"
[[steps.cases.steps]]
id = "urgent"
type = "template"
template = "page someone ({{ score }})"

[[steps.cases]]
when = "score >= 50 and score < 90"
[[steps.cases.steps]]
id = "normal"
type = "template"
template = "queue"
[[steps.cases.steps]]
id = "normal_note"
type = "template"
template = "{{ normal.output }} it"

[[steps]]
id = "report"
type = "template"
template = "{{ route.output }}|{{ route.case }}|{{ normal_note.output }}"
"#;

#[test]
fn branch_takes_a_case_or_none_and_shows_which_as_case() {
    let app = TestApp::start();
    let r = run(&app, "triage", TRIAGE, json!({"score": 95}));
    assert_eq!(output_of(&r), "page someone (95)|0|");
    let r = invoke(&app, "triage", json!({"score": 60}));
    assert_eq!(output_of(&r), "queue it|1|queue it");

    // No case holds and there is no default: output null, `.case` null.
    let r = invoke(&app, "triage", json!({"score": 10}));
    assert_eq!(output_of(&r), "||");
    let detail = detail_of(&app, &r);
    let route = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "route")
        .cloned()
        .unwrap();
    assert_eq!(route["status"], "completed", "{detail}");
    assert!(route["output"].is_null(), "{detail}");

    // With a default.
    let with_default = TRIAGE.replace(
        "[[steps]]\nid = \"report\"",
        "[[steps.default]]\nid = \"ignore\"\ntype = \"template\"\ntemplate = \"ignore\"\n\n[[steps]]\nid = \"report\"",
    );
    let r = run(&app, "triage", &with_default, json!({"score": 10}));
    assert_eq!(output_of(&r), "ignore|default|");
}

#[test]
fn branch_trace_lines_carry_parent_and_null_pass() {
    let app = TestApp::start();
    let r = run(&app, "triage", TRIAGE, json!({"score": 70}));
    let detail = detail_of(&app, &r);
    let lines: Vec<_> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["index"].clone(),
                s["parent"].clone(),
                s["pass"].clone(),
            )
        })
        .collect();
    // Depth-first indexes: route 0, urgent 1, normal 2, normal_note 3, report 4.
    assert_eq!(
        lines,
        [
            ("route".to_string(), json!(0), Value::Null, Value::Null),
            ("normal".to_string(), json!(2), json!("route"), Value::Null),
            (
                "normal_note".to_string(),
                json!(3),
                json!("route"),
                Value::Null
            ),
            ("report".to_string(), json!(4), Value::Null, Value::Null),
        ],
        "{detail}"
    );
}

const EACH: &str = r#"
key = "each"

[[inputs]]
name = "names"
type = "array"
required = true

[[steps]]
id = "greet_all"
type = "loop"
for_each = "names"
as = "who"

[[steps.steps]]
id = "greet"
type = "template"
template = "{{ loop.index }}/{{ who }}/{{ loop.first }}/{{ loop.last }}"

[[steps.steps]]
id = "loud"
type = "template"
template = "{{ greet.output | upper }}"
"#;

#[test]
fn for_each_runs_one_pass_per_element_with_loop_variables() {
    let app = TestApp::start();
    let r = run(&app, "each", EACH, json!({"names": ["ada", "bo", "cy"]}));
    assert_eq!(
        output_of(&r),
        json!(["0/ADA/TRUE/FALSE", "1/BO/FALSE/FALSE", "2/CY/FALSE/TRUE"])
    );
    let detail = detail_of(&app, &r);
    let steps = detail["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 7, "{detail}");
    let top = &steps[0];
    assert_eq!(top["id"], "greet_all");
    assert!(top["parent"].is_null() && top["pass"].is_null(), "{top}");
    assert_eq!(top["output"].as_array().unwrap().len(), 3);
    let mut passes: HashMap<String, Vec<i64>> = HashMap::new();
    for s in &steps[1..] {
        assert_eq!(s["parent"], "greet_all", "{s}");
        passes
            .entry(s["id"].as_str().unwrap().to_string())
            .or_default()
            .push(s["pass"].as_i64().unwrap());
    }
    assert_eq!(passes["greet"], [0, 1, 2]);
    assert_eq!(passes["loud"], [0, 1, 2]);
    let second_loud = steps
        .iter()
        .find(|s| s["id"] == "loud" && s["pass"] == 1)
        .unwrap();
    assert_eq!(second_loud["output"], "1/BO/FALSE/FALSE");
}

#[test]
fn until_loop_checks_after_each_pass() {
    let app = TestApp::start();
    let r = run(
        &app,
        "until",
        r#"
key = "until"

[[steps]]
id = "grow"
type = "loop"
until = "size.output >= 16 and loop.index >= 1"

[[steps.steps]]
id = "size"
type = "template"
json = true
template = "{{ 2 ** (loop.index + 1) }}"
"#,
        json!({}),
    );
    assert_eq!(output_of(&r), json!([2, 4, 8, 16]));
}

const LIMITED: &str = r#"
key = "limited"

[[steps]]
id = "spin"
type = "loop"
until = "false"
max_iterations = 3

[[steps.steps]]
id = "tick"
type = "template"
template = "tick {{ loop.index }}"
"#;

#[test]
fn going_past_max_iterations_is_iteration_limit_exceeded_everywhere() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok("limited", LIMITED);

    // Sync: the 502 envelope.
    let r = invoke(&app, "limited", json!({}));
    let body = r.expect_error(502, "iteration_limit_exceeded", None);
    assert_eq!(body["step"], "spin", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_iterations = 3"),
        "{body}"
    );
    // Run detail: three passes ran, then the loop failed.
    let detail = detail_of(&app, &r);
    assert_eq!(detail["error"]["error_code"], "iteration_limit_exceeded");
    let ticks = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == "tick")
        .count();
    assert_eq!(ticks, 3, "{detail}");

    // Async: the webhook.
    let r = app.invoke(&json!({
        "deployment": "limited",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let seen = receiver.wait_for_requests(1);
    let event = seen[0].json();
    assert_eq!(event["event_type"], "workflow.failed", "{event}");
    assert_eq!(
        event["data"]["error"]["error_code"], "iteration_limit_exceeded",
        "{event}"
    );
    assert_eq!(event["data"]["error"]["step"], "spin", "{event}");

    // A for_each with more elements than max_iterations fails before any pass runs.
    let r = run(
        &app,
        "many",
        &EACH
            .replace("key = \"each\"", "key = \"many\"")
            .replace("as = \"who\"", "as = \"who\"\nmax_iterations = 2"),
        json!({"names": ["a", "b", "c"]}),
    );
    r.expect_error(502, "iteration_limit_exceeded", None);
    let detail = detail_of(&app, &r);
    assert_eq!(detail["steps"].as_array().unwrap().len(), 1, "{detail}");
}

#[test]
fn concurrent_passes_run_together_and_keep_the_element_order() {
    const PASSES: usize = 4;
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |req, _| {
            // Every pass is held until all of them are in flight, which happens only if
            // they run concurrently; the first element then answers last.
            gate.wait();
            let n: u64 = req.path.rsplit('/').next().unwrap().parse().unwrap();
            if n == 40 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            StubReply::json(200, &json!({"n": n}))
        })
    };
    let app = TestApp::start();
    app.deploy_ok(
        "fan",
        &r#"
key = "fan"

[[steps]]
id = "fetch_all"
type = "loop"
for_each = "[40, 30, 20, 10]"
concurrency = 4

[[steps.steps]]
id = "fetch"
type = "http"
url = "STUB/item/{{ item }}"

[[steps.steps]]
id = "pick"
type = "template"
json = true
template = "{{ fetch.output.n }}"
"#
        .replace("STUB", &api.url()),
    );
    let client = {
        let url = app.url("/v1/workflow/invoke");
        let auth = format!("Bearer {}", app.admin_key);
        std::thread::spawn(move || {
            send(
                "POST",
                &url,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                Some(json!({"deployment": "fan"}).to_string().as_bytes()),
            )
        })
    };
    api.wait_for_requests(PASSES);
    gate.open();
    let r = client.join().unwrap();
    assert_eq!(output_of(&r), json!([40, 30, 20, 10]));
}

#[test]
fn for_each_over_a_non_array_or_ten_million_elements_fails_clearly() {
    let app = TestApp::start();
    let r = run(&app, "each", EACH, json!({"names": []}));
    assert_eq!(output_of(&r), json!([]));

    let r = run(
        &app,
        "text",
        &EACH
            .replace("key = \"each\"", "key = \"text\"")
            .replace("for_each = \"names\"", "for_each = \"names[0]\""),
        json!({"names": ["not an array"]}),
    );
    let body = r.expect_error(502, "step_failed", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("for_each must give an array, got text"),
        "{body}"
    );

    // Ten million elements: refused from the length alone, before any is made.
    for max in ["", "max_iterations = 10000\n"] {
        let src = format!(
            "key = \"huge\"\n[[steps]]\nid = \"big\"\ntype = \"loop\"\nfor_each = \"[0] * 10000000\"\n{max}[[steps.steps]]\nid = \"t\"\ntype = \"template\"\ntemplate = \"x\"\n"
        );
        let r = run(&app, "huge", &src, json!({}));
        let body = r.expect_error(502, "iteration_limit_exceeded", None);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("for_each gave 10000000 elements"),
            "{body}"
        );
    }
    // The daemon keeps serving.
    let r = invoke(&app, "each", json!({"names": ["z"]}));
    assert_eq!(output_of(&r), json!(["0/Z/TRUE/TRUE"]));
}

#[test]
fn nested_definition_errors_name_the_path_and_duplicates_both_places() {
    let app = TestApp::start();
    let bad_url = TRIAGE.replace(
        "id = \"normal_note\"\ntype = \"template\"\ntemplate = \"{{ normal.output }} it\"",
        "id = \"normal_note\"\ntype = \"http\"\nurl = \"http://x/{{ oops\"",
    );
    let r = app.deploy_toml("triage", &bad_url);
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "steps[0].cases[1].steps[1].url", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("step \"normal_note\": field \"steps[0].cases[1].steps[1].url\""),
        "{body}"
    );

    let duplicate = TRIAGE.replace("id = \"normal_note\"", "id = \"urgent\"");
    let r = app.deploy_toml("triage", &duplicate);
    let body = r.expect_error(422, "validation_error", None);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("duplicate step id \"urgent\": used at steps[0].cases[0].steps[0] and at steps[0].cases[1].steps[1]"),
        "{body}"
    );

    let both = EACH.replace("as = \"who\"", "as = \"who\"\nuntil = \"true\"");
    let r = app.deploy_toml("each", &both);
    let body = r.expect_error(422, "validation_error", None);
    assert!(
        body["message"].as_str().unwrap().contains("not both"),
        "{body}"
    );
    // Nothing was deployed.
    app.admin_get("/v1/deployments/triage").expect_status(404);
}

/// A 50-pass loop whose passes call a stand-in; the 26th call hangs until the daemon is
/// killed. After the restart the run finishes with all 50 outputs in order, and only the
/// pass cut off by the kill ran twice.
#[test]
fn kill_9_in_the_middle_of_a_loop_resumes_at_the_first_unfinished_pass() {
    const PASSES: usize = 50;
    const HELD: usize = 25;
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |req, n| {
            if n == HELD {
                gate.wait();
            }
            let i: u64 = req.path.rsplit('=').next().unwrap().parse().unwrap();
            StubReply::json(200, &json!({"square": i * i}))
        })
    };
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start();
    app.deploy_ok(
        "squares",
        &r#"
key = "squares"

[[steps]]
id = "start"
type = "template"
template = "go"

[[steps]]
id = "each"
type = "loop"
for_each = "range(50)"

[[steps.steps]]
id = "call"
type = "http"
url = "STUB/square?i={{ item }}"

[[steps.steps]]
id = "value"
type = "template"
json = true
template = "{{ call.output.square }}"
"#
        .replace("STUB", &api.url()),
    );
    let r = app.invoke(&json!({
        "deployment": "squares",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    api.wait_for_requests(HELD + 1);
    // Every pass before the held one is in the stored trace.
    wait_for("the finished passes in the trace", || {
        let d = app.admin_get(&format!("/v1/runs/{id}")).json();
        let values = d["steps"]
            .as_array()?
            .iter()
            .filter(|s| s["id"] == "value" && s["status"] == "completed")
            .count();
        (values == HELD).then_some(())
    });
    app.kill();
    gate.open();
    app.spawn();

    let detail = wait_for("the resumed run to complete", || {
        let d = app.admin_get(&format!("/v1/runs/{id}")).json();
        (d["run_status"] == "completed").then_some(d)
    });
    let expected: Vec<u64> = (0..PASSES as u64).map(|i| i * i).collect();
    assert_eq!(detail["output"], json!(expected), "{detail}");

    let mut calls: HashMap<u64, usize> = HashMap::new();
    for req in api.requests() {
        let i: u64 = req.path.rsplit('=').next().unwrap().parse().unwrap();
        *calls.entry(i).or_default() += 1;
    }
    for i in 0..PASSES as u64 {
        let expected = if i == HELD as u64 { 2 } else { 1 };
        assert_eq!(
            calls.get(&i).copied().unwrap_or(0),
            expected,
            "pass {i}: {calls:?}"
        );
    }
    // The trace shows each pass's lines once, the cut-off loop as interrupted beside its end.
    let steps = detail["steps"].as_array().unwrap();
    let each: Vec<_> = steps
        .iter()
        .filter(|s| s["id"] == "each")
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(each, ["interrupted", "completed"], "{detail}");
    let value_passes: Vec<i64> = steps
        .iter()
        .filter(|s| s["id"] == "value")
        .map(|s| s["pass"].as_i64().unwrap())
        .collect();
    assert_eq!(value_passes, (0..PASSES as i64).collect::<Vec<_>>());
    let receiver_saw = receiver.wait_for_requests(1);
    assert_eq!(receiver_saw[0].json()["event_type"], "workflow.completed");
}

/// A waiting approval step's trace line says why it waits; an answer replaces the line.
/// Approval steps inside a branch or loop are refused at deploy time.
#[test]
fn a_waiting_entry_carries_its_reason_and_nested_approvals_are_refused() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok(
        "ask",
        r#"
key = "ask"

[[steps]]
id = "check"
type = "approval"
choices = ["yes", "no"]

[[steps]]
id = "done"
type = "template"
template = "{{ check.output.choice.value }}"
"#,
    );
    let r = app.invoke(&json!({
        "deployment": "ask",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let waiting = wait_for("the approval step to wait", || {
        let d = app.admin_get(&format!("/v1/runs/{id}")).json();
        d["steps"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == "check" && s["status"] == "waiting")
            .cloned()
    });
    assert_eq!(waiting["reason"], "approval", "{waiting}");
    assert!(
        waiting["parent"].is_null() && waiting["pass"].is_null(),
        "{waiting}"
    );

    app.post_json(
        &format!("/v1/runs/{id}/steps/check/respond"),
        Some(&app.admin_key),
        &json!({"choice": "yes"}),
    )
    .expect_success();
    let detail = wait_for("the run to complete", || {
        let d = app.admin_get(&format!("/v1/runs/{id}")).json();
        (d["run_status"] == "completed").then_some(d)
    });
    let check = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "check")
        .cloned()
        .unwrap();
    assert_eq!(check["status"], "completed", "{detail}");
    assert!(check["reason"].is_null(), "{detail}");

    let nested = r#"
key = "nested_ask"

[[steps]]
id = "each"
type = "loop"
for_each = "[1, 2]"

[[steps.steps]]
id = "check"
type = "approval"
"#;
    let r = app.deploy_toml("nested_ask", nested);
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "steps[0].steps[0].type", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot be nested"),
        "{body}"
    );
}
