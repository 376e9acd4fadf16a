//! SPEC §2 async invoke, §3 signed callback delivery (checked with the official Standard
//! Webhooks and Svix libraries through `tests/python/verify_webhook.py`), and §4 inbound
//! webhook triggers. A `StubServer` is the receiving app.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::*;

/// Fast retries so a retried delivery is seen within the test's deadline.
const FAST_RETRIES: &str =
    "[delivery]\nretry_schedule = [\"100ms\", \"100ms\", \"100ms\"]\njitter = 0.0\n";

/// `hello` invoked async with `extra` fields merged into the body (never `async` itself).
fn async_invoke(app: &TestApp, callback_url: &str, extra: Value) -> String {
    let mut body = json!({"deployment": "hello", "inputs": {"name": "Ada"}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    invoke_async(app, body, callback_url)
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a delivery with the official libraries (and the X-Fetch-Hive-Signature header).
#[track_caller]
fn verify_with_libraries(app: &TestApp, secret: &str, delivery: &Recorded) {
    verify_with(app, secret, delivery, true);
}

/// Like [`verify_with_libraries`]; `fh_header` false checks only the Standard Webhooks header.
#[track_caller]
fn verify_with(app: &TestApp, secret: &str, delivery: &Recorded, fh_header: bool) {
    let body_file = app.dir.join("webhook-body.bin");
    let headers_file = app.dir.join("webhook-headers.json");
    std::fs::write(&body_file, &delivery.body).unwrap();
    let headers: serde_json::Map<String, Value> = delivery
        .headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), json!(v)))
        .collect();
    std::fs::write(&headers_file, Value::Object(headers).to_string()).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo_path("tests/python/verify_webhook.py"))
        .env("SECRET", secret)
        .env("BODY_FILE", &body_file)
        .env("HEADERS_FILE", &headers_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SKIP_FH_SIGNATURE", if fh_header { "0" } else { "1" });
    let out = run_command(cmd, &app.dir);
    assert!(
        out.status.success(),
        "verify_webhook.py: {}",
        describe(&out)
    );
}

#[test]
fn async_invoke_is_accepted_then_delivered_signed() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "thanks"));
    let app = TestApp::start();
    let secret = signing_secret(&app, "hello");
    let callback = format!("{}/hooks/orders?tenant=7", receiver.url());
    let id = async_invoke(
        &app,
        &callback,
        json!({"metadata": {"order": "A-1"}, "user": "u-1"}),
    );

    let seen = receiver.wait_for_requests(1);
    let d = &seen[0];
    assert_eq!(d.method, "POST");
    assert_eq!(d.path, "/hooks/orders?tenant=7");
    assert!(
        d.header("Content-Type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        d.headers
    );
    assert!(
        d.header("User-Agent")
            .unwrap_or_default()
            .starts_with("hivelet/"),
        "{:?}",
        d.headers
    );
    assert_eq!(
        d.header("X-Fetch-Hive-Request-Id"),
        Some(id.as_str()),
        "{:?}",
        d.headers
    );
    let event_id = d.header("webhook-id").unwrap_or_default();
    assert!(
        is_prefixed_hex(event_id, "evt_"),
        "webhook-id: {event_id:?}"
    );
    let ts: u64 = d
        .header("webhook-timestamp")
        .unwrap_or_default()
        .parse()
        .expect("webhook-timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        ts.abs_diff(now) < 3600,
        "webhook-timestamp {ts} is not the current Unix time ({now})"
    );
    assert_eq!(
        d.header("X-Fetch-Hive-Signature"),
        Some(hex_hmac(&secret, &d.body).as_str()),
        "X-Fetch-Hive-Signature must be hex HMAC-SHA256 of the raw body keyed by the secret string"
    );

    let event = d.json();
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["request_id"], id.as_str(), "{event}");
    let data = &event["data"];
    assert_eq!(data["run_status"], "completed", "{event}");
    assert_eq!(data["deployment"], "hello", "{event}");
    assert_eq!(data["variant"], "default", "{event}");
    assert_eq!(data["version"], 1, "{event}");
    assert_eq!(data["output"], "Hello, Ada.", "{event}");
    assert!(data["error"].is_null(), "{event}");
    assert_eq!(data["metadata"], json!({"order": "A-1"}), "{event}");
    assert_eq!(data["user"], "u-1", "{event}");
    assert!(
        data["started_at"].is_string() && data["ended_at"].is_string(),
        "{event}"
    );
    assert!(data["duration_ms"].is_u64(), "{event}");

    verify_with_libraries(&app, &secret, d);

    let req = app.admin_get(&format!("/v1/public/requests/{id}"));
    req.expect_status(200);
    assert_eq!(req.json()["status"], "completed", "{req}");
}

#[test]
fn callback_url_without_enabled_counts_as_async() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    receiver.wait_for_requests(1);
}

#[test]
fn async_enabled_false_is_a_sync_call() {
    let app = TestApp::start();
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"enabled": false}
    }));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");
}

#[test]
fn failed_run_delivers_workflow_failed() {
    let api = StubServer::start(|_, _| StubReply::json(500, &json!({"error": "boom"})));
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok(
        "fails",
        &r#"
key = "fails"

[[steps]]
id = "fetch"
type = "http"
method = "GET"
url = "STUB/broken"

[output]
template = "{{ fetch.output }}"
"#
        .replace("STUB", &api.url()),
    );
    let r = app.invoke(&json!({
        "deployment": "fails",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();

    let seen = receiver.wait_for_requests(1);
    let event = seen[0].json();
    assert_eq!(event["event_type"], "workflow.failed", "{event}");
    assert_eq!(event["request_id"], id.as_str(), "{event}");
    assert_eq!(event["data"]["run_status"], "failed", "{event}");
    assert!(event["data"]["output"].is_null(), "{event}");
    let error = &event["data"]["error"];
    assert_eq!(error["step"], "fetch", "{event}");
    assert!(
        error["message"].is_string() && error["error_code"].is_string(),
        "{event}"
    );
    verify_with_libraries(&app, &signing_secret(&app, "fails"), &seen[0]);
}

#[test]
fn failed_attempt_is_retried_with_the_same_event_and_body() {
    let receiver = StubServer::fails_first(1, 500, "try later");
    let app = TestApp::start_with(FAST_RETRIES, &[], &[]);
    let secret = signing_secret(&app, "hello");
    async_invoke(&app, &format!("{}/hook", receiver.url()), json!({}));

    let seen = receiver.wait_for_requests(2);
    let (first, second) = (&seen[0], &seen[1]);
    assert_eq!(
        first.header("webhook-id"),
        second.header("webhook-id"),
        "the event id is stable"
    );
    assert_eq!(
        first.body, second.body,
        "the body bytes are identical on every attempt"
    );
    assert_eq!(
        first.header("X-Fetch-Hive-Signature"),
        second.header("X-Fetch-Hive-Signature")
    );
    verify_with_libraries(&app, &secret, second);
}

#[test]
fn redirects_are_failures_and_are_not_followed() {
    let receiver = StubServer::start(|_, n| {
        if n == 0 {
            StubReply {
                status: 302,
                headers: vec![("Location".into(), "/elsewhere".into())],
                body: String::new(),
            }
        } else {
            StubReply::text(200, "ok")
        }
    });
    let app = TestApp::start_with(FAST_RETRIES, &[], &[]);
    async_invoke(&app, &format!("{}/hook", receiver.url()), json!({}));
    let seen = receiver.wait_for_requests(2);
    for d in &seen {
        assert_eq!(d.path, "/hook", "a redirect must not be followed: {seen:?}");
    }
    assert_eq!(seen[0].header("webhook-id"), seen[1].header("webhook-id"));
}

#[test]
fn inbound_webhook_trigger_starts_an_async_run() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let secret = signing_secret(&app, "hello");
    let callback = format!("{}/hook", receiver.url());
    let path = "/v1/workflow/webhooks/hello/variants/loud";

    // Secret in a header, inputs wrapped.
    let body = json!({"inputs": {"name": "Ada"}, "async": {"callback_url": callback}}).to_string();
    let r = app.request(
        "POST",
        path,
        None,
        &[
            ("Content-Type", "application/json"),
            ("X-Fetch-Hive-Webhook-Secret", &secret),
        ],
        Some(body.as_bytes()),
    );
    r.expect_status(202);
    assert!(
        is_request_id(r.json()["request_id"].as_str().unwrap_or_default()),
        "{r}"
    );
    let seen = receiver.wait_for_requests(1);
    assert_eq!(seen[0].json()["data"]["output"], "Hello, Ada!!!");

    // Secret in the query, the object itself taken as the inputs.
    let body = json!({"name": "Bo", "async": {"callback_url": callback}}).to_string();
    let r = app.request(
        "POST",
        &format!("{path}?secret={}", url_encode(&secret)),
        None,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    r.expect_status(202);
    let seen = receiver.wait_for_requests(2);
    assert_eq!(seen[1].json()["data"]["output"], "Hello, Bo!!!");
}

#[test]
fn inbound_webhook_trigger_rejects_a_bad_secret_and_a_missing_callback() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let secret = signing_secret(&app, "hello");
    let path = "/v1/workflow/webhooks/hello/variants/default";
    let body = json!({"inputs": {"name": "Ada"}, "async": {"callback_url": format!("{}/hook", receiver.url())}})
        .to_string();
    for headers in [
        vec![("Content-Type", "application/json")],
        vec![
            ("Content-Type", "application/json"),
            ("X-Fetch-Hive-Webhook-Secret", "whsec_wrong"),
        ],
        // An API key is not a trigger secret.
        vec![
            ("Content-Type", "application/json"),
            ("X-Fetch-Hive-Webhook-Secret", app.admin_key.as_str()),
        ],
    ] {
        let r = app.request("POST", path, None, &headers, Some(body.as_bytes()));
        r.expect_error(401, "unauthorized", Some("Invalid access."));
    }
    let no_callback = json!({"inputs": {"name": "Ada"}}).to_string();
    let r = app.request(
        "POST",
        path,
        None,
        &[
            ("Content-Type", "application/json"),
            ("X-Fetch-Hive-Webhook-Secret", &secret),
        ],
        Some(no_callback.as_bytes()),
    );
    r.expect_error(422, "validation_error", None);
    assert!(
        receiver.requests().is_empty(),
        "nothing may run for a rejected trigger"
    );
}

/// Percent-encodes a query value (the secret's base64 may hold `+`, `/` and `=`).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn after_rotation_deliveries_verify_with_old_and_new_secret() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let old = signing_secret(&app, "hello");
    app.post_json(
        "/v1/deployments/hello/rotate-secret",
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_success();
    let new = signing_secret(&app, "hello");
    assert_ne!(old, new);

    async_invoke(&app, &format!("{}/hook", receiver.url()), json!({}));
    let seen = receiver.wait_for_requests(1);
    let d = &seen[0];
    let sigs = d.header("webhook-signature").unwrap_or_default();
    assert_eq!(
        sigs.split(' ').count(),
        2,
        "both secrets sign during the overlap: {sigs:?}"
    );
    // Receivers holding either secret accept the delivery; X-Fetch-Hive-Signature uses the
    // current one.
    verify_with_libraries(&app, &new, d);
    verify_with(&app, &old, d, false);

    // Triggers still accept the old secret during the overlap.
    let body = json!({"inputs": {"name": "Old"}, "async": {"callback_url": format!("{}/hook", receiver.url())}})
        .to_string();
    let r = app.request(
        "POST",
        "/v1/workflow/webhooks/hello/variants/default",
        None,
        &[
            ("Content-Type", "application/json"),
            ("X-Fetch-Hive-Webhook-Secret", &old),
        ],
        Some(body.as_bytes()),
    );
    r.expect_status(202);
}
