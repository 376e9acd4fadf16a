//! SPEC §13, first part: the `GET /v1/runs` filters for operating deliveries
//! (`delivery_state`, `status=waiting`, `parent`, `q=evt_…`), the event's exact body in
//! `GET /v1/runs/{id}`, and `GET /v1/stats`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::*;

/// A failed attempt is retried only after an hour, so a failing event stays `retrying`.
const SLOW_RETRY: &str = r#"
[delivery]
retry_schedule = ["1h"]
jitter = 0.0
attempt_timeout = "2s"
"#;

const GATED: &str = r#"
key = "gated"

[[steps]]
id = "approve"
type = "approval"
question = "Go?"
timeout_ms = 3600000

[output]
template = "{{ approve.output.choice.value }}"
"#;

const CHILD: &str = r#"
key = "child"

[[steps]]
id = "hi"
type = "template"
template = "hi"
"#;

const PARENT: &str = r#"
key = "parent"

[[steps]]
id = "call"
type = "workflow"
deployment = "child"
inputs = {}
"#;

/// The request ids `GET /v1/runs?{query}` lists (admin key).
#[track_caller]
fn listed(app: &TestApp, query: &str) -> BTreeSet<String> {
    let r = app.admin_get(&format!("/v1/runs?limit=200&{query}"));
    r.expect_status(200);
    r.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["request_id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn run_list_row(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get(&format!("/v1/runs?q={id}"));
    r.expect_status(200);
    r.json()["runs"][0].clone()
}

#[test]
fn delivery_state_waiting_parent_and_event_id_filters_pick_exactly_their_runs() {
    let ok = StubServer::start(|_, _| StubReply::text(200, "thanks"));
    let gone = StubServer::start(|_, _| StubReply::text(410, "gone"));
    let down = StubServer::start(|_, _| StubReply::text(500, "down"));
    let app = TestApp::start_with(SLOW_RETRY, &[], &[]);
    app.deploy_ok("gated", GATED);
    app.deploy_ok("child", CHILD);
    app.deploy_ok("parent", PARENT);

    let delivered = invoke_async(&app, hello("Ada"), &format!("{}/hook", ok.url()));
    let failed = invoke_async(&app, hello("Bob"), &format!("{}/hook", gone.url()));
    let retrying = invoke_async(&app, hello("Cy"), &format!("{}/hook", down.url()));
    let waiting = invoke_async(
        &app,
        json!({"deployment": "gated", "inputs": {}}),
        &format!("{}/hook", ok.url()),
    );
    let direct = app.invoke(&hello("Dee"));
    direct.expect_status(200);
    let direct = direct.json()["request_id"].as_str().unwrap().to_owned();
    let parent = app.invoke(&json!({"deployment": "parent", "inputs": {}}));
    parent.expect_status(200);
    let parent = parent.json()["request_id"].as_str().unwrap().to_owned();

    wait_delivery(&app, &delivered, "delivered");
    wait_delivery(&app, &failed, "failed");
    wait_delivery(&app, &retrying, "retrying");
    wait_for("the approval to wait", || {
        let d = run_detail(&app, &waiting);
        (d["steps"][0]["status"] == "waiting").then_some(())
    });

    assert_eq!(listed(&app, "delivery_state=delivered"), ids(&[&delivered]));
    assert_eq!(listed(&app, "delivery_state=failed"), ids(&[&failed]));
    assert_eq!(listed(&app, "delivery_state=retrying"), ids(&[&retrying]));
    assert_eq!(listed(&app, "delivery_state=not_started"), ids(&[&waiting]));
    assert!(listed(&app, "delivery_state=pending").is_empty());
    assert!(listed(&app, "delivery_state=paused").is_empty());
    // Combined with another filter, both narrow.
    assert!(listed(&app, "delivery_state=delivered&deployment=gated").is_empty());

    // Each row carries its delivery state (null for a direct run) and usage.
    assert_eq!(run_list_row(&app, &retrying)["delivery_state"], "retrying");
    assert_eq!(
        run_list_row(&app, &waiting)["delivery_state"],
        "not_started"
    );
    let row = run_list_row(&app, &direct);
    assert!(row["delivery_state"].is_null(), "{row:#}");
    assert!(row.as_object().unwrap().contains_key("usage"), "{row:#}");

    assert_eq!(listed(&app, "status=waiting"), ids(&[&waiting]));
    // `running` still lists the waiting run: it is running, paused at the approval.
    assert!(listed(&app, "status=running").contains(&waiting));

    let children = listed(&app, &format!("parent={parent}"));
    assert_eq!(children.len(), 1, "{children:?}");
    let child = children.iter().next().unwrap();
    assert_eq!(
        run_detail(&app, child)["parent_request_id"],
        json!(parent),
        "the listed run is the parent's child"
    );
    assert!(listed(&app, &format!("parent={direct}")).is_empty());

    // An event id finds the run whose event it is.
    let event_id = run_detail(&app, &failed)["async"]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(listed(&app, &format!("q={event_id}")), ids(&[&failed]));
    let unknown = format!("evt_{}", "0".repeat(32));
    app.admin_get(&format!("/v1/runs?q={unknown}"))
        .expect_error(404, "not_found", None);

    // Unknown values are refused naming the parameter.
    for (query, field) in [
        ("delivery_state=sending", "delivery_state"),
        ("delivery_state=", "delivery_state"),
        ("status=paused", "status"),
        ("parent=nobody", "parent"),
        ("q=evt_nope", "q"),
    ] {
        let body =
            app.admin_get(&format!("/v1/runs?{query}"))
                .expect_error(422, "validation_error", None);
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[test]
fn the_run_detail_shows_the_event_body_exactly_as_sent_and_every_attempts_exchange() {
    let receiver = StubServer::start(|_, n| {
        if n == 0 {
            StubReply::text(500, "try later")
        } else {
            StubReply::text(200, "got it")
        }
    });
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(&app, hello("Ada"), &format!("{}/hook", receiver.url()));
    let detail = wait_delivery(&app, &id, "delivered");

    let sent = receiver.wait_for_requests(2);
    let event = &detail["event"];
    assert_eq!(event["event_id"], detail["async"]["event_id"], "{detail:#}");
    assert_eq!(event["event_type"], "workflow.completed");
    // Byte for byte what the receiver got, both times.
    assert_eq!(event["body"].as_str().unwrap(), sent[0].body_text());
    assert_eq!(sent[0].body, sent[1].body);
    let parsed: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["request_id"], json!(id), "{parsed:#}");

    let a = attempts(&detail);
    assert_eq!(a.len(), 2, "{detail:#}");
    assert_eq!(a[0]["status_code"], 500);
    assert_eq!(a[0]["response_body"], "try later");
    assert_eq!(a[1]["status_code"], 200);
    assert_eq!(a[1]["response_body"], "got it");
    for attempt in &a {
        assert_eq!(
            header_of(&attempt["request_headers"], "webhook-id"),
            event["event_id"].as_str(),
            "{attempt:#}"
        );
        assert!(
            header_of(&attempt["response_headers"], "content-type").is_some(),
            "{attempt:#}"
        );
    }

    // A direct run has no event.
    let direct = app.invoke(&hello("Bob"));
    direct.expect_status(200);
    let detail = run_detail(&app, direct.json()["request_id"].as_str().unwrap());
    assert!(detail.get("event").is_none(), "{detail:#}");
}

#[test]
fn stats_count_runs_by_status_deliveries_and_tokens_in_buckets_of_the_window() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let gone = StubServer::start(|_, _| StubReply::text(410, "gone"));
    let app = TestApp::start_with(FAST, &[], &[]);
    let delivered = invoke_async(&app, hello("Ada"), &format!("{}/hook", receiver.url()));
    let failed = invoke_async(&app, hello("Bob"), &format!("{}/hook", gone.url()));
    for name in ["Cy", "Dee"] {
        app.invoke(&hello(name)).expect_status(200);
    }
    wait_delivery(&app, &delivered, "delivered");
    wait_delivery(&app, &failed, "failed");

    for (window, bucket_seconds, buckets) in [("1h", 60, 60), ("24h", 900, 96), ("7d", 3600, 168)] {
        let r = app.admin_get(&format!("/v1/stats?window={window}"));
        r.expect_status(200);
        let stats = r.json();
        assert_eq!(stats["window"], window);
        assert_eq!(stats["bucket_seconds"], bucket_seconds);
        let list = stats["buckets"].as_array().unwrap();
        assert_eq!(list.len(), buckets, "{window}");
        let sum = |f: &dyn Fn(&Value) -> i64| list.iter().map(f).sum::<i64>();
        assert_eq!(
            sum(&|b| b["runs"]["completed"].as_i64().unwrap_or(0)),
            4,
            "{stats:#}"
        );
        assert_eq!(sum(&|b| b["runs"]["failed"].as_i64().unwrap_or(0)), 0);
        assert_eq!(sum(&|b| b["deliveries"]["delivered"].as_i64().unwrap()), 1);
        assert_eq!(sum(&|b| b["deliveries"]["failed"].as_i64().unwrap()), 1);
        assert_eq!(sum(&|b| b["deliveries"]["retrying"].as_i64().unwrap()), 0);
        assert_eq!(sum(&|b| b["tokens"].as_i64().unwrap()), 0);
        // Only buckets with a delivered attempt have a latency; some bucket has one.
        assert!(list
            .iter()
            .any(|b| b["delivery_latency_ms"]["p50"].is_i64()));
        assert!(list.iter().any(|b| b["run_duration_ms"]["p95"].is_i64()));
        let starts: Vec<&str> = list.iter().map(|b| b["start"].as_str().unwrap()).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted, "oldest first");
    }
    // The default window is the hour.
    let r = app.admin_get("/v1/stats");
    r.expect_status(200);
    assert_eq!(r.json()["window"], "1h");

    let body = app
        .admin_get("/v1/stats?window=2h")
        .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "window", "{body}");

    // Admin only.
    let invoke_key = app.create_key("caller", "invoke");
    let key = invoke_key["key"].as_str().unwrap();
    let r = app.get("/v1/stats", Some(key));
    r.expect_status(403);
}
