//! SPEC §2 (invoke, sync), §5 (`GET /v1/public/requests/{id}`), §8 (`hivelet invoke`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::*;

#[test]
fn hello_example_greets_synchronously() {
    let app = TestApp::start();
    let r = app.invoke(&hello("Ada"));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["run_status"], "completed", "{body}");
    assert_eq!(body["output"], "Hello, Ada.", "{body}");
    let id = body["request_id"].as_str().unwrap_or_default();
    assert!(
        is_request_id(id),
        "request_id must be req_ + 32 hex, got {body}"
    );
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "content type: {:?}",
        r.headers
    );
}

#[test]
fn loud_variant_applies_its_vars() {
    let app = TestApp::start();
    let r =
        app.invoke(&json!({"deployment": "hello", "variant": "loud", "inputs": {"name": "Ada"}}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada!!!");
    // The explicit default variant is the same as none.
    let r = app
        .invoke(&json!({"deployment": "hello", "variant": "default", "inputs": {"name": "Ada"}}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");
}

#[test]
fn slow_variant_still_completes() {
    let app = TestApp::start();
    let r =
        app.invoke(&json!({"deployment": "hello", "variant": "slow", "inputs": {"name": "Bo"}}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["run_status"], "completed", "{body}");
    assert!(
        body["output"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Hello, Bo"),
        "{body}"
    );
}

#[test]
fn bare_key_without_bearer_prefix_is_accepted() {
    let app = TestApp::start();
    let body = hello("Ada").to_string();
    let r = app.request(
        "POST",
        "/v1/workflow/invoke",
        None,
        &[
            ("Authorization", &app.admin_key),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");
}

#[test]
fn every_invoke_gets_its_own_request_id() {
    let app = TestApp::start();
    let a = app.invoke(&hello("Ada")).json();
    let b = app.invoke(&hello("Ada")).json();
    assert!(is_request_id(a["request_id"].as_str().unwrap()), "{a}");
    assert!(is_request_id(b["request_id"].as_str().unwrap()), "{b}");
    assert_ne!(a["request_id"], b["request_id"]);
}

#[test]
fn public_request_lookup_shows_the_finished_run() {
    let app = TestApp::start();
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "metadata": {"order": "A-17", "items": 3, "gift": true, "note": null},
        "user": "customer-9"
    }));
    r.expect_status(200);
    let id = r.json()["request_id"].as_str().unwrap().to_string();

    let got = app.admin_get(&format!("/v1/public/requests/{id}"));
    got.expect_status(200);
    let req = got.json();
    assert_eq!(req["request_id"], id.as_str(), "{req}");
    assert!(req["id"].is_string(), "id: {req}");
    assert_eq!(req["status"], "completed", "{req}");
    assert_eq!(req["request_type"], "workflow", "{req}");
    assert!(!req["started_at"].is_null(), "started_at: {req}");
    assert!(!req["ended_at"].is_null(), "ended_at: {req}");
    assert!(req.get("data").is_some(), "data: {req}");
    assert!(
        json_contains_str(&req["data"], "Hello, Ada."),
        "data must hold the output: {req}"
    );
    // The caller's metadata is returned (as `metadata` or `user_metadata`).
    let meta_seen = [&req["metadata"], &req["user_metadata"]]
        .iter()
        .any(|m| m["order"] == "A-17" && m["items"] == 3 && m["gift"] == true);
    assert!(meta_seen, "metadata sent with the invoke is missing: {req}");
}

#[test]
fn public_request_lookup_of_unknown_id_is_404() {
    let app = TestApp::start();
    let r = app.admin_get("/v1/public/requests/req_0123456789abcdef0123456789abcdef");
    r.expect_error(404, "not_found", Some("Request not found"));
    let r = app.admin_get("/v1/public/requests/nonsense");
    r.expect_error(404, "not_found", Some("Request not found"));
}

#[test]
fn public_request_lookup_needs_a_key() {
    let app = TestApp::start();
    let id = app.invoke(&hello("Ada")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.get(&format!("/v1/public/requests/{id}"), None);
    r.expect_error(401, "unauthorized", Some("Invalid access."));
}

#[test]
fn idempotency_key_replays_the_first_response() {
    let app = TestApp::start();
    let body = hello("Ada").to_string();
    let call = |key: &str, idem: &str, name_body: &str| {
        app.request(
            "POST",
            "/v1/workflow/invoke",
            Some(key),
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", idem),
            ],
            Some(name_body.as_bytes()),
        )
    };
    let first = call(&app.admin_key, "order-1", &body);
    first.expect_status(200);
    let first = first.json();
    let again = call(&app.admin_key, "order-1", &body);
    again.expect_status(200);
    let again = again.json();
    assert_eq!(
        again["request_id"], first["request_id"],
        "a repeat must start nothing new"
    );
    assert_eq!(again["output"], first["output"]);

    let other = call(&app.admin_key, "order-2", &body);
    other.expect_status(200);
    assert_ne!(
        other.json()["request_id"],
        first["request_id"],
        "another key is another run"
    );

    // The same Idempotency-Key under another API key is a different request.
    let key = app.create_key("second", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let third = call(&key, "order-1", &body);
    third.expect_status(200);
    assert_ne!(third.json()["request_id"], first["request_id"]);
}

#[test]
fn sync_call_while_all_slots_are_busy_gets_429() {
    let app = Arc::new(TestApp::start_with(
        "[runs]\nmax_concurrent = 1\n",
        &[],
        &[],
    ));
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow = {
        let app = app.clone();
        let done = slow_done.clone();
        std::thread::spawn(move || {
            // Retried if our own probing happened to hold the only slot.
            let result = wait_for("the slow run to get a slot", || {
                let r = app.invoke(
                    &json!({"deployment": "hello", "variant": "slow", "inputs": {"name": "Ada"}}),
                );
                (r.status != 429).then_some(r)
            });
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    let mut busy = None;
    while !slow_done.load(Ordering::SeqCst) {
        let r = app.invoke(&hello("Bo"));
        if r.status == 429 {
            busy = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let slow = slow.join().unwrap();
    slow.expect_status(200);
    let busy = busy.expect("no sync invoke was refused while the only run slot was busy");
    busy.expect_error(
        429,
        "concurrency_limit",
        Some("You've reached your concurrency limit. Try again later or use async mode."),
    );
    // With the slot free again, sync calls work.
    app.invoke(&hello("Cy")).expect_status(200);
}

#[test]
fn healthz_answers_without_auth() {
    let app = TestApp::start();
    app.get("/healthz", None).expect_status(200);
}

#[test]
fn cli_invoke_prints_the_output() {
    let app = TestApp::start();
    let out = app.cli(&["invoke", "hello", "--input", "name=Ada"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        stdout.lines().any(|l| l.trim() == "Hello, Ada."),
        "{}",
        describe(&out)
    );

    let out = app.cli(&[
        "invoke",
        "hello",
        "--variant",
        "loud",
        "--input",
        "name=Ada",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        stdout.lines().any(|l| l.trim() == "Hello, Ada!!!"),
        "{}",
        describe(&out)
    );

    let out = app.cli(&["invoke", "hello", "--inputs-json", r#"{"name": "Grace"}"#]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        stdout.lines().any(|l| l.trim() == "Hello, Grace."),
        "{}",
        describe(&out)
    );
}

#[test]
fn cli_invoke_reports_a_bad_input_and_fails() {
    let app = TestApp::start();
    let out = app.cli(&["invoke", "hello"]);
    assert!(
        !out.status.success(),
        "a missing required input must fail: {}",
        describe(&out)
    );
    let (stdout, stderr) = out_text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("name"),
        "the message should name the input: {}",
        describe(&out)
    );
}

#[test]
fn legacy_workflow_runs_route_wraps_the_run() {
    let app = TestApp::start();
    let id = app.invoke(&hello("Ada")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.admin_get(&format!("/v1/workflow_runs/{id}"));
    r.expect_status(200);
    let body = r.json();
    let run = body
        .get("workflow_run")
        .unwrap_or_else(|| panic!("workflow_run: {body}"));
    assert!(
        json_contains_str(run, &id),
        "the run's id is missing: {body}"
    );
    assert!(
        json_contains_str(run, "Hello, Ada."),
        "the output is missing: {body}"
    );
}

#[test]
fn web_page_is_served_at_the_root() {
    let app = TestApp::start();
    let r = app.get("/", None);
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        r.headers
    );
    assert!(r.text.to_lowercase().contains("<html"), "{}", r.text);
}
