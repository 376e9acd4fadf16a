//! SPEC §2 admission (run slots, queue) and §9 lifecycle: SIGTERM lets running runs finish,
//! and an accepted run survives a crash. Runs are held inside an `http` step by a gated stub,
//! so nothing here depends on timing.

use serde_json::json;

use crate::support::*;

/// A deployment whose only step calls `api` and outputs its `v`.
fn held_workflow(api: &StubServer) -> String {
    r#"
key = "held"

[[steps]]
id = "call"
type = "http"
method = "GET"
url = "STUB/work"

[output]
template = "{{ call.output.v }}"
"#
    .replace("STUB", &api.url())
}

/// A stub API whose answers wait for `gate`.
fn gated_api(gate: &Gate) -> StubServer {
    let gate = gate.clone();
    StubServer::start(move |_, _| {
        gate.wait();
        StubReply::json(200, &json!({"v": "done"}))
    })
}

fn async_body(deployment: &str, callback: &str) -> serde_json::Value {
    json!({"deployment": deployment, "async": {"enabled": true, "callback_url": callback}})
}

#[test]
fn sigterm_lets_a_running_sync_run_finish_and_refuses_new_work() {
    let gate = Gate::new();
    let api = gated_api(&gate);
    let mut app = TestApp::start();
    app.deploy_ok("held", &held_workflow(&api));

    let (url, key) = (app.url("/v1/workflow/invoke"), app.admin_key.clone());
    let in_flight = std::thread::spawn(move || {
        let body = json!({"deployment": "held"}).to_string();
        try_send(
            "POST",
            &url,
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    });
    api.wait_for_requests(1);
    app.terminate();

    // New work is refused while the daemon drains (503, or the listener is already closed).
    let hello_body = hello("Ada").to_string();
    let auth = format!("Bearer {}", app.admin_key);
    wait_for(
        "new invokes to be refused after SIGTERM",
        || match try_send(
            "POST",
            &app.url("/v1/workflow/invoke"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(hello_body.as_bytes()),
        ) {
            Err(_) => Some(()),
            Ok(r) if r.status == 503 => Some(()),
            Ok(_) => None,
        },
    );

    gate.open();
    let r = in_flight
        .join()
        .unwrap()
        .expect("the in-flight sync call lost its connection");
    r.expect_status(200);
    assert_eq!(r.json()["output"], "done", "{r}");
    let status = app.wait_exit();
    assert!(
        status.success(),
        "a graceful stop should exit 0, got {status}"
    );
}

#[test]
fn accepted_async_run_survives_a_crash_and_completes_after_restart() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::start(move |_, n| {
            if n == 0 {
                gate.wait(); // The first attempt is cut off by the crash.
            }
            StubReply::json(200, &json!({"v": "done"}))
        })
    };
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start();
    app.deploy_ok("held", &held_workflow(&api));

    let r = app.invoke(&async_body("held", &format!("{}/hook", receiver.url())));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    api.wait_for_requests(1);

    app.kill();
    gate.open();
    app.spawn();

    let seen = receiver.wait_for_requests(1);
    let event = seen[0].json();
    assert_eq!(event["request_id"], id.as_str(), "{event}");
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["data"]["output"], "done", "{event}");
    assert!(
        api.requests().len() >= 2,
        "the interrupted step must run again after restart"
    );
    let req = app.admin_get(&format!("/v1/public/requests/{id}"));
    assert_eq!(req.json()["status"], "completed", "{req}");
}

#[test]
fn async_runs_queue_when_slots_are_busy_and_the_queue_has_a_limit() {
    let gate = Gate::new();
    let api = gated_api(&gate);
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with("[runs]\nmax_concurrent = 1\nmax_queued = 1\n", &[], &[]);
    app.deploy_ok("held", &held_workflow(&api));
    let callback = format!("{}/hook", receiver.url());

    let first = app.invoke(&async_body("held", &callback));
    first.expect_status(202);
    assert_eq!(
        first.json()["run_status"],
        "running",
        "a free slot runs at once: {first}"
    );
    api.wait_for_requests(1);

    let second = app.invoke(&async_body("held", &callback));
    second.expect_status(202);
    let second = second.json();
    assert_eq!(second["run_status"], "queued", "no free slot: {second}");
    let second_id = second["request_id"].as_str().unwrap().to_string();
    let req = app.admin_get(&format!("/v1/public/requests/{second_id}"));
    assert_eq!(req.json()["status"], "queued", "{req}");

    let third = app.invoke(&async_body("held", &callback));
    third.expect_error(429, "queue_full", None);
    let retry_after = third.header("Retry-After").unwrap_or_default();
    assert!(
        retry_after.parse::<u64>().is_ok(),
        "Retry-After must be set: {:?}",
        third.headers
    );

    let sync = app.invoke(&hello("Ada"));
    sync.expect_error(
        429,
        "concurrency_limit",
        Some("You've reached your concurrency limit. Try again later or use async mode."),
    );

    gate.open();
    let seen = receiver.wait_for_requests(2);
    let ids: Vec<String> = seen
        .iter()
        .map(|d| d.json()["request_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        ids.contains(&second_id),
        "the queued run must run and call back: {ids:?}"
    );
    for d in &seen {
        assert_eq!(d.json()["event_type"], "workflow.completed");
    }
    app.invoke(&hello("Ada")).expect_status(200);
}
