//! SPEC §11 lifecycle webhooks: `async.events` chooses what a run POSTs to its callback URL.
//! `step.completed` and `approval.requested` are events of their own (own `webhook-id`, both
//! signatures, the same retries and attempt log), and a run's events arrive in order: a later
//! one is not sent before the earlier one is delivered or has failed for good, also across a
//! `kill -9`. What arrives is read from a stub receiver in arrival order; nothing depends on
//! how long anything took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::*;

/// Three steps, each output naming the step before it, so a reordering would show.
const THREE: &str = r#"
key = "three"

[[steps]]
id = "first"
type = "template"
template = "one"

[[steps]]
id = "second"
type = "template"
template = "{{ first.output }} two"

[[steps]]
id = "third"
type = "template"
template = "{{ second.output }} three"

[output]
template = "{{ third.output }}"
"#;

/// A step, an approval, and a step using the answer.
const APPROVE: &str = r#"
key = "approve"

[[steps]]
id = "draft"
type = "template"
template = "Pay 5 EUR"

[[steps]]
id = "ok"
type = "approval"
question = "{{ draft.output }}?"
choices = ["yes", { value = "no", label = "No way" }]

[[steps]]
id = "done"
type = "template"
template = "{{ ok.output.choice.value }}"

[output]
template = "{{ done.output }}"
"#;

/// Invokes `deployment` async with `events` (left out when `None`); returns the request id.
fn invoke_with_events(
    app: &TestApp,
    deployment: &str,
    receiver: &StubServer,
    events: Option<Value>,
) -> String {
    let mut asynchronous = json!({"callback_url": format!("{}/hook", receiver.url())});
    if let Some(events) = events {
        asynchronous["events"] = events;
    }
    let r = app.invoke(&json!({
        "deployment": deployment,
        "metadata": {"order": "o-1"},
        "async": asynchronous,
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    assert!(is_request_id(&id), "{r}");
    id
}

/// The run's events as `GET /v1/runs/{id}` lists them, once there are `n` and all are
/// `delivered`.
fn wait_all_delivered(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} delivered events of {id}"), || {
        let detail = run_detail(app, id);
        let events = detail["async"]["events"].as_array().cloned()?;
        (events.len() == n && events.iter().all(|e| e["delivery_state"] == "delivered"))
            .then_some(events)
    })
}

fn webhook_ids(received: &[Recorded]) -> Vec<String> {
    received
        .iter()
        .map(|d| d.header("webhook-id").unwrap_or_default().to_string())
        .collect()
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn step_events_arrive_signed_one_per_step_then_the_end_in_order() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let secret = signing_secret(&app, "three");
    let id = invoke_with_events(
        &app,
        "three",
        &receiver,
        Some(json!(["step.completed", "workflow.completed"])),
    );

    let events = wait_all_delivered(&app, &id, 4);
    let received = receiver.wait_for_requests(4);
    assert_eq!(received.len(), 4, "one request per event, none repeated");
    assert_eq!(
        webhook_ids(&received),
        ids_of(&events),
        "in the run's order"
    );
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "step.completed",
            "step.completed",
            "step.completed",
            "workflow.completed"
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);

    let bodies: Vec<Value> = received.iter().map(Recorded::json).collect();
    for (d, body) in received.iter().zip(&bodies) {
        assert_eq!(signature_problem(&secret, d), None, "{body}");
        assert_eq!(d.header("X-Fetch-Hive-Request-Id"), Some(id.as_str()));
        assert_eq!(body["request_id"], id.as_str(), "{body}");
    }
    let steps: Vec<(&str, &str)> = bodies[..3]
        .iter()
        .map(|b| {
            (
                b["data"]["step"].as_str().unwrap(),
                b["data"]["output"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("first", "one"),
            ("second", "one two"),
            ("third", "one two three")
        ]
    );
    for body in &bodies[..3] {
        assert_eq!(body["event_type"], "step.completed", "{body}");
        let data = &body["data"];
        assert_eq!(data["status"], "completed", "{body}");
        assert!(data["duration_ms"].is_i64(), "{body}");
        assert_eq!(data["truncated"], false, "{body}");
        assert_eq!(data["deployment"], "three", "{body}");
        assert_eq!(data["variant"], "default", "{body}");
        assert_eq!(data["metadata"], json!({"order": "o-1"}), "{body}");
    }
    assert_eq!(bodies[3]["event_type"], "workflow.completed");
    assert_eq!(bodies[3]["data"]["output"], "one two three");

    // The run's log shows every event and attempt; the run's own fields its end.
    let detail = run_detail(&app, &id);
    let a = &detail["async"];
    assert_eq!(
        a["events_chosen"],
        json!(["workflow.completed", "step.completed"])
    );
    assert_eq!(a["event_type"], "workflow.completed", "{detail:#}");
    assert_eq!(a["event_id"], events[3]["event_id"], "{detail:#}");
    let attempted: Vec<String> = attempts(&detail)
        .iter()
        .map(|at| at["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(attempted, ids_of(&events), "{detail:#}");

    // An admin can redeliver one step's event by its id: the same webhook-id and bytes.
    let redeliver = |query: &str| {
        app.post_json(
            &format!("/v1/runs/{id}/redeliver{query}"),
            Some(&app.admin_key),
            &json!({}),
        )
    };
    let r = redeliver(&format!(
        "?event_id={}",
        events[1]["event_id"].as_str().unwrap()
    ));
    r.expect_status(202);
    assert_eq!(r.json()["event_id"], events[1]["event_id"], "{r}");
    assert_eq!(r.json()["series"], 2, "{r}");
    let again = receiver.wait_for_requests(5);
    assert_eq!(
        again[4].header("webhook-id"),
        received[1].header("webhook-id")
    );
    assert_eq!(again[4].body, received[1].body);
    redeliver("?event_id=evt_00000000000000000000000000000000").expect_error(
        404,
        "not_found",
        Some("Event not found."),
    );
}

#[test]
fn a_failing_first_event_holds_the_later_ones_until_it_is_delivered() {
    // The first two requests fail: both are the first step's event, since nothing else may go
    // before it is delivered.
    let receiver = StubServer::fails_first(2, 500, "not yet");
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let id = invoke_with_events(
        &app,
        "three",
        &receiver,
        Some(json!(["step.completed", "workflow.completed"])),
    );

    let events = wait_all_delivered(&app, &id, 4);
    let received = receiver.wait_for_requests(6);
    let ids = ids_of(&events);
    assert_eq!(
        webhook_ids(&received),
        [0, 0, 0, 1, 2, 3].map(|i| ids[i].clone()),
        "the later events wait for the first, then follow in order"
    );
    assert_eq!(
        received[0].body, received[2].body,
        "the same bytes on retry"
    );
    let detail = run_detail(&app, &id);
    let outcomes: Vec<(String, Value)> = attempts(&detail)
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_string(),
                a["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (ids[0].clone(), json!("retrying")),
            (ids[0].clone(), json!("retrying")),
            (ids[0].clone(), json!("delivered")),
            (ids[1].clone(), json!("delivered")),
            (ids[2].clone(), json!("delivered")),
            (ids[3].clone(), json!("delivered")),
        ],
        "{detail:#}"
    );
    assert_eq!(events[0]["attempt_count"], 3);
}

#[test]
fn an_event_that_fails_for_good_lets_the_next_one_go() {
    // `410 Gone` ends the first event at once (failed); the ones after it still go out.
    let receiver = StubServer::threaded(|_, n| {
        if n == 0 {
            StubReply::text(410, "gone")
        } else {
            StubReply::text(200, "ok")
        }
    });
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let id = invoke_with_events(&app, "three", &receiver, Some(json!(["step.completed"])));
    let received = receiver.wait_for_requests(3);
    let events = wait_for("the three step events settled", || {
        let events = run_detail(&app, &id)["async"]["events"]
            .as_array()
            .cloned()?;
        (events.len() == 3 && events[2]["delivery_state"] == "delivered").then_some(events)
    });
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["delivery_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "delivered", "delivered"]);
    assert_eq!(webhook_ids(&received), ids_of(&events));
    // Only step events were chosen: the run's end posts nothing.
    assert_eq!(run_detail(&app, &id)["run_status"], "completed");
    assert_eq!(receiver.requests().len(), 3);
}

#[test]
fn approval_requested_arrives_while_the_step_waits_and_the_end_after_the_answer() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("approve", APPROVE);
    let secret = signing_secret(&app, "approve");
    let id = invoke_with_events(
        &app,
        "approve",
        &receiver,
        Some(json!(["approval.requested", "workflow.completed"])),
    );

    let first = receiver.wait_for_requests(1);
    assert_eq!(first.len(), 1);
    assert_eq!(signature_problem(&secret, &first[0]), None);
    let body = first[0].json();
    assert_eq!(body["event_type"], "approval.requested", "{body}");
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["data"]["step"], "ok", "{body}");
    assert_eq!(body["data"]["question"], "Pay 5 EUR?", "{body}");
    assert_eq!(
        body["data"]["choices"],
        json!([{"value": "yes", "label": "yes"}, {"value": "no", "label": "No way"}])
    );
    assert_eq!(body["data"]["deployment"], "approve");
    assert_eq!(body["data"]["metadata"], json!({"order": "o-1"}));
    let detail = run_detail(&app, &id);
    assert_eq!(detail["run_status"], "running", "still waiting: {detail:#}");

    app.post_json(
        &format!("/v1/runs/{id}/steps/ok/respond"),
        Some(&app.admin_key),
        &json!({"choice": "yes"}),
    )
    .expect_success();
    let events = wait_all_delivered(&app, &id, 2);
    let received = receiver.wait_for_requests(2);
    assert_eq!(webhook_ids(&received), ids_of(&events));
    let end = received[1].json();
    assert_eq!(end["event_type"], "workflow.completed", "{end}");
    assert_eq!(end["data"]["output"], "yes", "{end}");
    assert_eq!(signature_problem(&secret, &received[1]), None);
}

#[test]
fn unknown_or_empty_event_lists_are_refused_and_store_nothing() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    let callback = format!("{}/hook", receiver.url());
    for events in [
        json!(["step.completed", "step.started"]),
        json!([]),
        json!("step.completed"),
        json!([42]),
    ] {
        let r = app.invoke(&json!({
            "deployment": "hello",
            "inputs": {"name": "Ada"},
            "async": {"callback_url": callback, "events": events},
        }));
        let body = r.expect_error(422, "validation_error", None);
        assert_eq!(body["field"], "async.events", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("async.events"),
            "{body}"
        );
    }
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"callback_url": callback, "events": ["run.done"]},
    }));
    let body = r.expect_error(422, "validation_error", None);
    assert!(
        body["message"].as_str().unwrap().contains("run.done"),
        "names the unknown event: {body}"
    );
    let runs = app.admin_get("/v1/runs");
    runs.expect_status(200);
    assert_eq!(runs.json()["runs"], json!([]), "nothing stored: {runs}");
    assert!(receiver.requests().is_empty());
}

#[test]
fn without_async_events_only_the_end_is_posted() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let id = invoke_with_events(&app, "three", &receiver, None);
    let detail = wait_delivery(&app, &id, "delivered");
    assert_eq!(
        detail["async"]["events_chosen"],
        json!([
            "workflow.completed",
            "workflow.failed",
            "workflow.cancelled"
        ])
    );
    let events = detail["async"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{detail:#}");
    assert_eq!(events[0]["event_type"], "workflow.completed");
    // Step events would have been delivered before the end: none came.
    let received = receiver.requests();
    assert_eq!(received.len(), 1, "only the end");
    assert_eq!(received[0].json()["event_type"], "workflow.completed");
}

#[test]
fn step_events_stored_before_a_kill_9_are_delivered_once_each_in_order_after_the_restart() {
    // The receiver fails until `up`; it records the webhook-ids it accepted, in order.
    let up = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let receiver = {
        let (up, accepted) = (up.clone(), accepted.clone());
        StubServer::threaded(move |d, _| {
            if up.load(Ordering::SeqCst) {
                let id = d.header("webhook-id").unwrap_or_default().to_string();
                accepted.lock().unwrap().push(id);
                StubReply::text(200, "ok")
            } else {
                StubReply::text(503, "down")
            }
        })
    };
    // Enough retries, spaced widely enough, that the first event is still retrying when the
    // daemon is killed.
    let config = r#"
[delivery]
retry_schedule = ["50ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
jitter = 0.0
attempt_timeout = "2s"
"#;
    let mut app = TestApp::start_with(config, &[], &[]);
    app.deploy_ok("three", THREE);
    let id = invoke_with_events(
        &app,
        "three",
        &receiver,
        Some(json!(["step.completed", "workflow.completed"])),
    );
    let before = wait_for("four stored events, the first one failing", || {
        let detail = run_detail(&app, &id);
        let events = detail["async"]["events"].as_array().cloned()?;
        let first_failed = events.first()?["attempt_count"].as_i64()? >= 1;
        (events.len() == 4 && first_failed).then_some(events)
    });
    let states: Vec<&str> = before
        .iter()
        .map(|e| e["delivery_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retrying", "held", "held", "held"], "{before:#?}");
    // A held event cannot be redelivered: it goes out after the ones before it.
    for query in [
        String::new(),
        format!("?event_id={}", before[1]["event_id"].as_str().unwrap()),
    ] {
        let r = app.post_json(
            &format!("/v1/runs/{id}/redeliver{query}"),
            Some(&app.admin_key),
            &json!({}),
        );
        let body = r.expect_error(409, "conflict", None);
        assert!(
            body["message"].as_str().unwrap().contains("earlier events"),
            "{body}"
        );
    }

    app.kill();
    up.store(true, Ordering::SeqCst);
    app.spawn();

    let after = wait_all_delivered(&app, &id, 4);
    assert_eq!(ids_of(&after), ids_of(&before), "the same events, kept");
    assert_eq!(
        *accepted.lock().unwrap(),
        ids_of(&before),
        "each delivered once, in order"
    );
}

#[test]
fn a_failing_step_reports_failed_then_the_run_failure_and_only_chosen_ends_go_out() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok(
        "broken",
        r#"
key = "broken"

[[steps]]
id = "fine"
type = "template"
template = "ok"

[[steps]]
id = "render"
type = "template"
template = "{% include 'missing' %}"
"#,
    );
    let failing = invoke_with_events(
        &app,
        "broken",
        &receiver,
        Some(json!(["step.completed", "workflow.failed"])),
    );
    let events = wait_all_delivered(&app, &failing, 3);
    let bodies: Vec<Value> = receiver
        .wait_for_requests(3)
        .iter()
        .map(Recorded::json)
        .collect();
    let seen: Vec<(Value, Value)> = bodies
        .iter()
        .map(|b| (b["event_type"].clone(), b["data"]["step"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("step.completed"), json!("fine")),
            (json!("step.completed"), json!("render")),
            (json!("workflow.failed"), Value::Null),
        ]
    );
    assert_eq!(bodies[1]["data"]["status"], "failed", "{}", bodies[1]);
    assert!(
        bodies[1]["data"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("template: ")),
        "{}",
        bodies[1]
    );
    assert_eq!(bodies[2]["data"]["error"]["step"], "render");
    assert_eq!(events.len(), 3);

    // Asking for `workflow.failed` only: a run that completes posts nothing at all.
    let quiet = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"callback_url": format!("{}/hook", quiet.url()), "events": ["workflow.failed"]},
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let detail = wait_for("the run to complete", || {
        let detail = run_detail(&app, &id);
        (detail["run_status"] == "completed").then_some(detail)
    });
    assert_eq!(detail["async"]["events"], json!([]), "{detail:#}");
    assert_eq!(detail["async"]["delivery_state"], "not_started");
    // The run's end was stored in one write with its (absent) event: nothing can follow.
    assert!(quiet.requests().is_empty());
}

#[test]
fn a_rerun_keeps_the_runs_choice_of_events_unless_given_a_new_async_object() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let first = invoke_with_events(
        &app,
        "three",
        &receiver,
        Some(json!(["step.completed", "workflow.completed"])),
    );
    wait_all_delivered(&app, &first, 4);

    let rerun = |body: Value| -> String {
        let r = app.post_json(
            &format!("/v1/runs/{first}/rerun"),
            Some(&app.admin_key),
            &body,
        );
        r.expect_status(202);
        r.json()["request_id"].as_str().unwrap().to_string()
    };
    let kept = rerun(json!({}));
    let events = wait_all_delivered(&app, &kept, 4);
    assert_eq!(events[0]["event_type"], "step.completed");
    assert_eq!(
        run_detail(&app, &kept)["async"]["events_chosen"],
        json!(["workflow.completed", "step.completed"])
    );

    let fresh = rerun(json!({"async": {"callback_url": format!("{}/hook", receiver.url())}}));
    let events = wait_all_delivered(&app, &fresh, 1);
    assert_eq!(events[0]["event_type"], "workflow.completed");
    // Bad names are refused here too, naming the field.
    let r = app.post_json(
        &format!("/v1/runs/{first}/rerun"),
        Some(&app.admin_key),
        &json!({"async": {"callback_url": format!("{}/hook", receiver.url()), "events": ["nope"]}}),
    );
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "async.events", "{body}");
}

#[test]
fn an_inbound_trigger_takes_async_events_too() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("three", THREE);
    let secret = signing_secret(&app, "three");
    let trigger = |events: Value| {
        let body = json!({"async": {"callback_url": format!("{}/hook", receiver.url()),
                                    "events": events}})
        .to_string();
        app.request(
            "POST",
            "/v1/workflow/webhooks/three/variants/default",
            None,
            &[
                ("Content-Type", "application/json"),
                ("X-Fetch-Hive-Webhook-Secret", &secret),
            ],
            Some(body.as_bytes()),
        )
    };
    let body = trigger(json!(["step.finished"])).expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "async.events", "{body}");
    assert_eq!(app.admin_get("/v1/runs").json()["runs"], json!([]));

    let r = trigger(json!(["step.completed"]));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let events = wait_all_delivered(&app, &id, 3);
    let received = receiver.wait_for_requests(3);
    assert_eq!(webhook_ids(&received), ids_of(&events));
    for d in &received {
        assert_eq!(d.json()["event_type"], "step.completed");
        assert_eq!(signature_problem(&secret, d), None);
    }
}

#[test]
fn a_run_recovered_after_a_kill_9_keeps_its_choice_of_events() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start_with(FAST, &[], &[]);
    app.deploy_ok("approve", APPROVE);
    let id = invoke_with_events(
        &app,
        "approve",
        &receiver,
        Some(json!(["step.completed", "workflow.completed"])),
    );
    // The draft step's event is delivered while the approval waits.
    let events = wait_all_delivered(&app, &id, 1);
    assert_eq!(events[0]["event_type"], "step.completed");

    app.kill();
    app.spawn();
    app.post_json(
        &format!("/v1/runs/{id}/steps/ok/respond"),
        Some(&app.admin_key),
        &json!({"choice": "no"}),
    )
    .expect_success();

    let events = wait_all_delivered(&app, &id, 4);
    let received = receiver.wait_for_requests(4);
    assert_eq!(webhook_ids(&received), ids_of(&events));
    let seen: Vec<(Value, Value)> = received
        .iter()
        .map(Recorded::json)
        .map(|b| (b["event_type"].clone(), b["data"]["step"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("step.completed"), json!("draft")),
            (json!("step.completed"), json!("ok")),
            (json!("step.completed"), json!("done")),
            (json!("workflow.completed"), Value::Null),
        ]
    );
    assert_eq!(received[3].json()["data"]["output"], "no");
}
