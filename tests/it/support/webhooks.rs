//! Helpers for tests that follow a run's webhook: invoking with a callback, reading the run
//! detail and its delivery attempts, waiting for a delivery state, and checking signatures
//! by hand. Shared by the delivery, fault, crash, storm, storage and security tests.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{is_request_id, wait_for, Recorded, TestApp};

/// Three fast retries (4 attempts in all), no jitter, a short attempt timeout.
pub const FAST: &str = r#"
[delivery]
retry_schedule = ["100ms", "100ms", "100ms"]
jitter = 0.0
attempt_timeout = "500ms"
"#;

pub fn signing_secret(app: &TestApp, deployment: &str) -> String {
    let r = app.admin_get(&format!("/v1/deployments/{deployment}"));
    r.expect_status(200);
    r.json()["signing_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("signing_secret: {r}"))
        .to_string()
}

/// An async invoke of `body` (a full invoke body without `async`) with a callback; asserts
/// the 202 and returns the request id.
#[track_caller]
pub fn invoke_async(app: &TestApp, mut body: Value, callback_url: &str) -> String {
    body["async"] = json!({"enabled": true, "callback_url": callback_url});
    let r = app.invoke(&body);
    r.expect_status(202);
    let reply = r.json();
    assert!(
        reply["run_status"] == "running" || reply["run_status"] == "queued",
        "async reply: {reply}"
    );
    let id = reply["request_id"].as_str().unwrap_or_default().to_string();
    assert!(is_request_id(&id), "{reply}");
    id
}

/// `GET /v1/runs/{id}` with the admin key.
#[track_caller]
pub fn run_detail(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get(&format!("/v1/runs/{id}"));
    r.expect_status(200);
    r.json()
}

/// Polls `GET /v1/runs/{id}` until `async.delivery_state` is `want`; fails at once (with the
/// whole run) if the event settles in the other final state.
#[track_caller]
pub fn wait_delivery(app: &TestApp, id: &str, want: &str) -> Value {
    wait_for(&format!("{id} to reach delivery_state {want}"), || {
        let detail = run_detail(app, id);
        let state = detail["async"]["delivery_state"].as_str().unwrap_or("");
        if state == want {
            return Some(detail);
        }
        if matches!(state, "delivered" | "failed") {
            panic!("delivery ended {state}, expected {want}: {detail:#}");
        }
        None
    })
}

/// The `async.attempts` of a run detail.
pub fn attempts(detail: &Value) -> Vec<Value> {
    detail["async"]["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("async.attempts: {detail:#}"))
        .clone()
}

/// A header of an attempt record's `request_headers` / `response_headers`, any case.
pub fn header_of<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// An RFC 3339 time from the API as Unix milliseconds.
#[track_caller]
pub fn unix_ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks both signatures of a delivery by hand: `X-Fetch-Hive-Signature` and the Standard
/// Webhooks `webhook-signature` (one of its `v1,` entries). Returns what is wrong, if anything.
pub fn signature_problem(secret: &str, d: &Recorded) -> Option<String> {
    let fh = d.header("X-Fetch-Hive-Signature").unwrap_or_default();
    if fh != hex_hmac(secret, &d.body) {
        return Some(format!("bad X-Fetch-Hive-Signature {fh:?}"));
    }
    let (Some(id), Some(ts), Some(sigs)) = (
        d.header("webhook-id"),
        d.header("webhook-timestamp"),
        d.header("webhook-signature"),
    ) else {
        return Some(format!(
            "Standard Webhooks headers missing: {:?}",
            d.headers
        ));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .expect("the secret is whsec_ + base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&d.body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    if !sigs.split(' ').any(|s| s == want) {
        return Some(format!("bad webhook-signature {sigs:?}"));
    }
    None
}

/// The status codes, error kinds and outcomes of a run's attempts, for compact assertions.
pub fn summary(attempts: &[Value]) -> Vec<(Value, Value, Value)> {
    attempts
        .iter()
        .map(|a| {
            (
                a["status_code"].clone(),
                a["error_kind"].clone(),
                a["outcome"].clone(),
            )
        })
        .collect()
}
