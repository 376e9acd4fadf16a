//! SPEC §7 approval steps: a run pauses at an `approval` step (run `running`, step
//! `waiting`), keeps waiting across a daemon crash, and continues when an admin answers
//! through `POST /v1/runs/{id}/steps/{step}/respond`, or fails at the step's `timeout_ms`
//! (then `on_error` decides). A `StubServer` receives the completion callbacks.

use serde_json::{json, Value};

use crate::support::*;

/// A template step, an approval with choices, and a step using the answer.
const EXPENSE: &str = r#"
key = "expense"

[[inputs]]
name = "amount"
type = "number"
required = true

[[steps]]
id = "draft"
type = "template"
template = "Pay {{ amount }} EUR"

[[steps]]
id = "approve"
type = "approval"
question = "{{ draft.output }}?"
choices = ["yes", { value = "no", label = "No way" }]
timeout_ms = TIMEOUT

[[steps]]
id = "final"
type = "template"
template = "{{ draft.output }}: {{ approve.output.choice.value }} ({{ approve.output.choice.label }}, {{ approve.status }})"

[output]
template = "{{ final.output }}"
"#;

fn expense(timeout_ms: u64, on_error: Option<&str>) -> String {
    let mut def = EXPENSE.replace("TIMEOUT", &timeout_ms.to_string());
    if let Some(on_error) = on_error {
        def = def.replace(
            "timeout_ms = ",
            &format!("on_error = \"{on_error}\"\ntimeout_ms = "),
        );
    }
    def
}

fn receiver() -> StubServer {
    StubServer::start(|_, _| StubReply::text(200, "ok"))
}

/// Invokes `deployment` async with a callback to `receiver`; returns the request id.
fn invoke_async(app: &TestApp, deployment: &str, inputs: Value, receiver: &StubServer) -> String {
    let r = app.invoke(&json!({
        "deployment": deployment,
        "inputs": inputs,
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())},
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    assert!(is_request_id(&id), "{r}");
    id
}

/// The run's detail once `step` shows `status`.
fn wait_for_step(app: &TestApp, id: &str, step: &str, status: &str) -> Value {
    wait_for(&format!("step {step} to be {status}"), || {
        let r = app.admin_get(&format!("/v1/runs/{id}"));
        r.expect_status(200);
        let run = r.json();
        let found = step_of(&run, step).is_some_and(|s| s["status"] == status);
        found.then_some(run)
    })
}

/// The trace line of `step` (the only one: an answered step replaces its waiting line).
fn step_of<'a>(run: &'a Value, step: &str) -> Option<&'a Value> {
    let lines: Vec<&Value> = run["steps"]
        .as_array()?
        .iter()
        .filter(|s| s["id"] == step)
        .collect();
    assert!(lines.len() <= 1, "one trace line per step expected: {run}");
    lines.first().copied()
}

fn respond(app: &TestApp, id: &str, step: &str, body: &Value) -> Resp {
    app.post_json(
        &format!("/v1/runs/{id}/steps/{step}/respond"),
        Some(&app.admin_key),
        body,
    )
}

/// The one callback the receiver got for `id`.
fn callback(receiver: &StubServer, id: &str) -> Value {
    let event = receiver.wait_for_requests(1)[0].json();
    assert_eq!(event["request_id"], id, "{event}");
    event
}

#[test]
fn approval_waits_across_a_crash_and_resumes_on_a_response() {
    let receiver = receiver();
    let mut app = TestApp::start();
    app.deploy_ok("expense", &expense(600_000, None));
    let id = invoke_async(&app, "expense", json!({"amount": 5}), &receiver);

    let run = wait_for_step(&app, &id, "approve", "waiting");
    assert_eq!(run["run_status"], "running", "{run}");
    assert_eq!(step_of(&run, "draft").unwrap()["status"], "completed");
    assert!(step_of(&run, "final").is_none(), "{run}");
    let waiting = step_of(&run, "approve").unwrap();
    assert_eq!(waiting["type"], "approval");
    assert_eq!(waiting["output"]["question"], "Pay 5 EUR?", "{waiting}");
    assert_eq!(
        waiting["output"]["choices"],
        json!([{"value": "yes", "label": "yes"}, {"value": "no", "label": "No way"}])
    );
    assert!(waiting["output"]["timeout_at"].is_string(), "{waiting}");
    let public = app.admin_get(&format!("/v1/public/requests/{id}"));
    assert_eq!(public.json()["status"], "running", "{public}");

    // A crash: the run still waits after the restart, and finished steps are not redone.
    let draft_started = step_of(&run, "draft").unwrap()["started_at"].clone();
    app.kill();
    app.spawn();
    let run = wait_for_step(&app, &id, "approve", "waiting");
    assert_eq!(run["run_status"], "running", "{run}");
    assert_eq!(
        step_of(&run, "draft").unwrap()["started_at"],
        draft_started,
        "the finished step is not run again: {run}"
    );
    assert!(receiver.requests().is_empty(), "no callback while waiting");

    // A graceful stop does not wait for the paused run (it holds no slot), and it waits on.
    let started = std::time::Instant::now();
    let status = app.stop().expect("daemon was running");
    assert!(status.success(), "graceful stop: {status}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a paused run must not hold up the stop"
    );
    app.spawn();
    let run = wait_for_step(&app, &id, "approve", "waiting");
    assert_eq!(run["run_status"], "running", "{run}");

    // A wrong answer is refused and changes nothing.
    let bad = respond(&app, &id, "approve", &json!({"choice": "maybe"}));
    let body = bad.expect_error(422, "validation_error", None);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("\"yes\"") && message.contains("\"no\""),
        "names the allowed values: {body}"
    );
    assert_eq!(body["field"], "choice", "{body}");
    respond(&app, &id, "approve", &json!({"text": "sure"})).expect_error(
        422,
        "validation_error",
        None,
    );

    let ok = respond(&app, &id, "approve", &json!({"choice": "no"}));
    ok.expect_status(202);
    let ok = ok.json();
    assert_eq!(ok["request_id"], id.as_str(), "{ok}");
    assert_eq!(
        ok["output"],
        json!({"choice": {"value": "no", "label": "No way"}})
    );

    let event = callback(&receiver, &id);
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(
        event["data"]["output"], "Pay 5 EUR: no (No way, completed)",
        "{event}"
    );

    let run = wait_for_step(&app, &id, "final", "completed");
    assert_eq!(run["run_status"], "completed", "{run}");
    let approve = step_of(&run, "approve").unwrap();
    assert_eq!(approve["status"], "completed", "{approve}");
    assert_eq!(
        approve["output"],
        json!({"choice": {"value": "no", "label": "No way"}})
    );
    let draft_lines = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == "draft")
        .count();
    assert_eq!(draft_lines, 1, "the finished step ran once: {run}");

    // The step is answered now.
    respond(&app, &id, "approve", &json!({"choice": "yes"})).expect_error(409, "conflict", None);
}

#[test]
fn respond_errors() {
    let receiver = receiver();
    let app = TestApp::start();
    app.deploy_ok("expense", &expense(600_000, None));
    let id = invoke_async(&app, "expense", json!({"amount": 1}), &receiver);
    wait_for_step(&app, &id, "approve", "waiting");
    let yes = json!({"choice": "yes"});

    // Unknown run or step: 404 in the envelope.
    let unknown = "req_0000000000007000800000000000beef";
    respond(&app, unknown, "approve", &yes).expect_error(404, "not_found", None);
    respond(&app, "nope", "approve", &yes).expect_error(404, "not_found", None);
    respond(&app, &id, "nope", &yes).expect_error(404, "not_found", None);
    // Steps that are not waiting: 409.
    respond(&app, &id, "draft", &yes).expect_error(409, "conflict", None);
    respond(&app, &id, "final", &yes).expect_error(409, "conflict", None);
    // Admin only.
    let invoke_key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/runs/{id}/steps/approve/respond");
    let r = app.post_json(&path, Some(&invoke_key), &yes);
    assert!(
        r.status == 403 || r.status == 404,
        "an invoke key must not answer: {r}"
    );
    app.post_json(&path, None, &yes)
        .expect_error(401, "unauthorized", Some("Invalid access."));
    // Malformed bodies.
    app.request(
        "POST",
        &path,
        Some(&app.admin_key),
        &[("Content-Type", "application/json")],
        Some(b"{"),
    )
    .expect_error(400, "bad_request", None);
    respond(&app, &id, "approve", &json!({})).expect_error(422, "validation_error", None);
    respond(&app, &id, "approve", &json!({"choice": "yes", "text": "x"})).expect_error(
        422,
        "validation_error",
        None,
    );

    // Still waiting after all that; a cancel ends it and the trace stops showing it waiting.
    let run = wait_for_step(&app, &id, "approve", "waiting");
    assert_eq!(run["run_status"], "running");
    app.post_json(
        &format!("/v1/runs/{id}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(202);
    let event = callback(&receiver, &id);
    assert_eq!(event["event_type"], "workflow.cancelled", "{event}");
    let run = wait_for_step(&app, &id, "approve", "failed");
    assert_eq!(run["run_status"], "cancelled", "{run}");
    respond(&app, &id, "approve", &yes).expect_error(409, "conflict", None);
}

#[test]
fn free_text_answer() {
    let receiver = receiver();
    let app = TestApp::start();
    app.deploy_ok(
        "review",
        r#"
key = "review"
[[steps]]
id = "ask"
type = "approval"
question = "Any comments?"
[[steps]]
id = "echo"
type = "template"
template = "said: {{ ask.output.text }}"
"#,
    );
    let id = invoke_async(&app, "review", json!({}), &receiver);
    let run = wait_for_step(&app, &id, "ask", "waiting");
    assert_eq!(
        step_of(&run, "ask").unwrap()["output"]["choices"],
        json!([])
    );
    respond(&app, &id, "ask", &json!({"choice": "yes"})).expect_error(
        422,
        "validation_error",
        None,
    );
    respond(&app, &id, "ask", &json!({"text": "ship it"})).expect_status(202);
    let event = callback(&receiver, &id);
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["data"]["output"], "said: ship it", "{event}");
    let run = wait_for_step(&app, &id, "ask", "completed");
    assert_eq!(
        step_of(&run, "ask").unwrap()["output"],
        json!({"text": "ship it"})
    );
}

#[test]
fn approval_timeout_terminates_or_continues() {
    let receiver = receiver();
    let app = TestApp::start();
    app.deploy_ok("expense", &expense(300, None));
    app.deploy_ok(
        "lenient",
        &expense(300, Some("continue")).replace("key = \"expense\"", "key = \"lenient\""),
    );

    let id = invoke_async(&app, "expense", json!({"amount": 2}), &receiver);
    let event = callback(&receiver, &id);
    assert_eq!(event["event_type"], "workflow.failed", "{event}");
    let error = &event["data"]["error"];
    assert_eq!(error["step"], "approve", "{event}");
    assert_eq!(error["error_code"], "step_failed", "{event}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("approval timed out after 300 ms"),
        "{event}"
    );
    assert_eq!(event["data"]["output"], Value::Null);
    let run = wait_for_step(&app, &id, "approve", "failed");
    assert_eq!(run["run_status"], "failed", "{run}");
    respond(&app, &id, "approve", &json!({"choice": "yes"})).expect_error(409, "conflict", None);

    let other = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let id = invoke_async(&app, "lenient", json!({"amount": 3}), &other);
    let event = callback(&other, &id);
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["data"]["output"], "Pay 3 EUR:  (, failed)", "{event}");
}

#[test]
fn approval_timeout_is_kept_across_a_restart() {
    let receiver = receiver();
    let mut app = TestApp::start();
    app.deploy_ok("expense", &expense(1_500, None));
    let id = invoke_async(&app, "expense", json!({"amount": 4}), &receiver);
    wait_for_step(&app, &id, "approve", "waiting");
    app.kill();
    // Down past the deadline: the next start finds the step overdue and fails it at once.
    std::thread::sleep(std::time::Duration::from_millis(1_600));
    app.spawn();
    let event = callback(&receiver, &id);
    assert_eq!(event["event_type"], "workflow.failed", "{event}");
    assert_eq!(event["data"]["error"]["step"], "approve", "{event}");
}

#[test]
fn sync_invoke_of_an_approval_workflow_is_refused() {
    let app = TestApp::start();
    app.deploy_ok("expense", &expense(600_000, None));
    let r = app.invoke(&json!({"deployment": "expense", "inputs": {"amount": 1}}));
    r.expect_error(422, "validation_error", None);
    let runs = app.admin_get("/v1/runs?deployment=expense");
    if runs.status == 200 {
        assert_eq!(runs.json()["runs"], json!([]), "nothing is stored: {runs}");
    }
}

/// A cancel that lands while the approval step's `waiting` line is being stored must still
/// leave the trace showing the step failed, not waiting on a cancelled run. Many runs are
/// cancelled right after their 202 to hit that moment.
#[test]
fn a_cancel_racing_the_approval_pause_leaves_no_step_waiting() {
    let app = TestApp::start();
    app.deploy_ok("expense", &expense(600_000, None));
    let receiver = receiver();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..15)
                        .map(|_| {
                            let id = invoke_async(&app, "expense", json!({"amount": 5}), &receiver);
                            app.post_json(
                                &format!("/v1/runs/{id}/cancel"),
                                Some(&app.admin_key),
                                &json!({}),
                            )
                            .expect_status(202);
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    receiver.wait_for_requests(ids.len());
    for id in &ids {
        let run = wait_for(&format!("{id} to settle as cancelled"), || {
            let run = app.admin_get(&format!("/v1/runs/{id}")).json();
            let waiting = run["steps"]
                .as_array()
                .is_some_and(|steps| steps.iter().any(|s| s["status"] == "waiting"));
            (run["run_status"] == "cancelled" && !waiting).then_some(run)
        });
        if let Some(step) = step_of(&run, "approve") {
            assert_eq!(step["status"], "failed", "{run:#}");
        }
    }
}
