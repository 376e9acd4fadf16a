//! SPEC §2 error table: the envelope, the exact Fetch Hive messages, and the HTTP-level
//! rejections (malformed JSON, content type, body size, routes, methods).

use serde_json::{json, Value};

use crate::support::*;

const UNAUTHORIZED: &str = "Invalid access.";

/// After any rejection the daemon still serves a valid invoke.
#[track_caller]
fn still_works(app: &TestApp) {
    let r = app.invoke(&hello("Ada"));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");
}

#[test]
fn missing_key_is_401_with_the_exact_envelope() {
    let app = TestApp::start();
    let r = app.post_json("/v1/workflow/invoke", None, &hello("Ada"));
    r.expect_status(401);
    assert_eq!(
        r.json(),
        json!({"error": UNAUTHORIZED, "message": UNAUTHORIZED, "error_code": "unauthorized"})
    );
    still_works(&app);
}

#[test]
fn wrong_keys_are_401() {
    let app = TestApp::start();
    for header in [
        "Bearer hvk_not_a_real_key".to_string(),
        "hvk_not_a_real_key".to_string(),
        "Bearer ".to_string(),
        format!("Bearer {}x", app.admin_key),
        format!("Basic {}", app.admin_key),
    ] {
        let body = hello("Ada").to_string();
        let r = app.request(
            "POST",
            "/v1/workflow/invoke",
            None,
            &[
                ("Authorization", &header),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 401, "Authorization: {header:?} → {r}");
        r.expect_error(401, "unauthorized", Some(UNAUTHORIZED));
    }
}

#[test]
fn auth_is_checked_before_the_body() {
    let app = TestApp::start();
    // Even a body that would fail validation gets 401 without a key.
    let r = app.post_json("/v1/workflow/invoke", None, &json!({}));
    r.expect_error(401, "unauthorized", Some(UNAUTHORIZED));
}

#[test]
fn missing_deployment_is_422_with_the_fetch_hive_message() {
    let app = TestApp::start();
    for body in [
        json!({}),
        json!({"inputs": {"name": "Ada"}}),
        json!({"variant": "default"}),
    ] {
        let r = app.invoke(&body);
        r.expect_error(
            422,
            "validation_error",
            Some("Missing required field: deployment or variant"),
        );
    }
    still_works(&app);
}

#[test]
fn unknown_deployment_and_variant_are_404() {
    let app = TestApp::start();
    let r = app.invoke(&json!({"deployment": "nope", "inputs": {"name": "Ada"}}));
    r.expect_error(404, "not_found", Some("Deployment not found."));
    let r = app
        .invoke(&json!({"deployment": "hello", "variant": "whisper", "inputs": {"name": "Ada"}}));
    r.expect_error(404, "not_found", Some("Variant not found."));
    still_works(&app);
}

#[test]
fn async_without_callback_url_is_422() {
    let app = TestApp::start();
    let r = app.invoke(
        &json!({"deployment": "hello", "inputs": {"name": "Ada"}, "async": {"enabled": true}}),
    );
    r.expect_error(
        422,
        "validation_error",
        Some("callback_url is required when async is enabled"),
    );
    still_works(&app);
}

#[test]
fn invalid_callback_urls_are_422() {
    let app = TestApp::start();
    for url in [
        "not a url",
        "ftp://example.com/hook",
        "http://",
        "/relative/path",
        "example.com/hook",
    ] {
        let r = app.invoke(&json!({
            "deployment": "hello",
            "inputs": {"name": "Ada"},
            "async": {"enabled": true, "callback_url": url}
        }));
        assert_eq!(r.status, 422, "callback_url {url:?} → {r}");
        r.expect_error(
            422,
            "validation_error",
            Some("callback_url must be a valid URL"),
        );
    }
    still_works(&app);
}

#[track_caller]
fn expect_input_error(r: &Resp, input: &str, mentions: &[&str]) {
    let body = r.expect_error(422, "validation_error", None);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(input),
        "message should name input {input:?}: {body}"
    );
    for word in mentions {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "message should mention {word:?}: {body}"
        );
    }
    assert_eq!(body["field"], format!("inputs.{input}"), "field: {body}");
}

#[test]
fn missing_required_input_is_422_naming_it_and_its_type() {
    let app = TestApp::start();
    let r = app.invoke(&json!({"deployment": "hello"}));
    expect_input_error(&r, "name", &["text"]);
    let r = app.invoke(&json!({"deployment": "hello", "inputs": {}}));
    expect_input_error(&r, "name", &["text"]);
    still_works(&app);
}

#[test]
fn wrongly_typed_input_is_422_naming_it_and_the_expected_type() {
    let app = TestApp::start();
    for value in [
        json!(5),
        json!(true),
        json!(["Ada"]),
        json!({"first": "Ada"}),
    ] {
        let r = app.invoke(&json!({"deployment": "hello", "inputs": {"name": value}}));
        expect_input_error(&r, "name", &["text"]);
    }
    still_works(&app);
}

#[test]
fn typed_inputs_are_checked_for_every_type() {
    let app = TestApp::start();
    app.deploy_ok(
        "typed",
        r#"
key = "typed"

[[inputs]]
name = "count"
type = "number"
required = true

[[inputs]]
name = "flag"
type = "boolean"
required = true

[[inputs]]
name = "tags"
type = "array"
required = true

[[inputs]]
name = "extra"
type = "object"
required = false

[[steps]]
id = "s"
type = "template"
template = "{{ count }} {{ 'yes' if flag else 'no' }} {{ tags | length }}"

[output]
template = "{{ s.output }}"
"#,
    );
    let ok = json!({"count": 2, "flag": true, "tags": ["a", "b"]});
    let r = app.invoke(&json!({"deployment": "typed", "inputs": ok}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "2 yes 2");

    let cases: [(&str, Value, &str); 4] = [
        ("count", json!("two"), "number"),
        ("flag", json!("yes"), "boolean"),
        ("tags", json!("a,b"), "array"),
        ("extra", json!([1]), "object"),
    ];
    for (input, bad, expected) in cases {
        let mut inputs = ok.clone();
        inputs[input] = bad;
        let r = app.invoke(&json!({"deployment": "typed", "inputs": inputs}));
        expect_input_error(&r, input, &[expected]);
    }
}

#[test]
fn unknown_input_is_422_naming_it() {
    let app = TestApp::start();
    let r = app.invoke(&json!({"deployment": "hello", "inputs": {"name": "Ada", "age": 36}}));
    expect_input_error(&r, "age", &[]);
    still_works(&app);
}

#[test]
fn nested_or_non_scalar_metadata_is_422_naming_the_key() {
    let app = TestApp::start();
    for (key, value) in [("customer", json!({"id": 1})), ("tags", json!(["a"]))] {
        let mut metadata = serde_json::Map::new();
        metadata.insert("fine".into(), json!("ok"));
        metadata.insert(key.into(), value);
        let r = app.invoke(
            &json!({"deployment": "hello", "inputs": {"name": "Ada"}, "metadata": metadata}),
        );
        let body = r.expect_error(422, "validation_error", None);
        assert!(
            body["message"].as_str().unwrap().contains(key),
            "message should name {key:?}: {body}"
        );
    }
    let r = app
        .invoke(&json!({"deployment": "hello", "inputs": {"name": "Ada"}, "metadata": {"": "x"}}));
    r.expect_error(422, "validation_error", None);
    let r =
        app.invoke(&json!({"deployment": "hello", "inputs": {"name": "Ada"}, "metadata": "flat"}));
    r.expect_error(422, "validation_error", None);
    still_works(&app);
}

#[test]
fn scalar_metadata_is_accepted() {
    let app = TestApp::start();
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "metadata": {"s": "x", "n": 1.5, "b": false, "z": null}
    }));
    r.expect_status(200);
}

#[test]
fn malformed_json_is_400_bad_request() {
    let app = TestApp::start();
    let key = app.admin_key.clone();
    let r = app.request(
        "POST",
        "/v1/workflow/invoke",
        Some(&key),
        &[("Content-Type", "application/json")],
        Some(br#"{"deployment": "hello", "inputs": {"name": "Ada"}"#),
    );
    let body = r.expect_error(400, "bad_request", None);
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    still_works(&app);
}

#[test]
fn wrong_content_type_is_415() {
    let app = TestApp::start();
    let key = app.admin_key.clone();
    let body = hello("Ada").to_string();
    let r = app.request(
        "POST",
        "/v1/workflow/invoke",
        Some(&key),
        &[("Content-Type", "text/plain")],
        Some(body.as_bytes()),
    );
    r.expect_error(415, "unsupported_media_type", None);
    still_works(&app);
}

#[test]
fn body_over_the_limit_is_413() {
    let app = TestApp::start_with("[limits]\ninvoke_body = \"2KiB\"\n", &[], &[]);
    let big = json!({"deployment": "hello", "inputs": {"name": "x".repeat(8 * 1024)}}).to_string();
    // The daemon may close the connection right after its answer; retry a transport error.
    let r = (0..5)
        .find_map(|_| {
            try_send(
                "POST",
                &app.url("/v1/workflow/invoke"),
                &[
                    ("Authorization", &format!("Bearer {}", app.admin_key)),
                    ("Content-Type", "application/json"),
                ],
                Some(big.as_bytes()),
            )
            .ok()
        })
        .expect("no HTTP answer to an oversized body");
    r.expect_error(413, "payload_too_large", None);
    // A body under the limit is still fine.
    still_works(&app);
}

#[test]
fn unknown_route_is_404_in_the_envelope() {
    let app = TestApp::start();
    let r = app.admin_get("/v1/no/such/route");
    r.expect_error(404, "not_found", None);
}

#[test]
fn wrong_method_is_405_in_the_envelope_with_allow() {
    let app = TestApp::start();
    let r = app.admin_get("/v1/workflow/invoke");
    r.expect_error(405, "method_not_allowed", None);
    assert_eq!(r.header("allow"), Some("POST"), "{r}");
    let r = app.delete("/v1/workflow/invoke", Some(&app.admin_key));
    r.expect_error(405, "method_not_allowed", None);
    assert_eq!(r.header("allow"), Some("POST"), "{r}");
    let r = app.delete("/v1/keys", Some(&app.admin_key));
    r.expect_error(405, "method_not_allowed", None);
    assert_eq!(r.header("allow"), Some("GET, POST"), "{r}");
    let r = app.request("TRACE", "/", None, &[], None);
    r.expect_error(405, "method_not_allowed", None);
    assert_eq!(r.header("allow"), Some("GET, HEAD"), "{r}");
}

#[test]
fn failing_run_in_sync_mode_is_502_with_request_and_step() {
    let api = StubServer::start(|_, _| StubReply::json(500, &json!({"error": "boom"})));
    let app = TestApp::start();
    app.deploy_ok(
        "fails",
        &r#"
key = "fails"

[[steps]]
id = "prepare"
type = "template"
template = "ready"

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
    let r = app.invoke(&json!({"deployment": "fails"}));
    let body = r.expect_error(502, body_code(&r).as_str(), None);
    assert_eq!(body["run_status"], "failed", "{body}");
    assert_eq!(body["step"], "fetch", "{body}");
    let id = body["request_id"].as_str().unwrap_or_default().to_string();
    assert!(is_request_id(&id), "{body}");
    assert_eq!(
        api.requests().len(),
        1,
        "the http step ran once (no retries configured)"
    );

    let req = app.admin_get(&format!("/v1/public/requests/{id}"));
    req.expect_status(200);
    assert_eq!(req.json()["status"], "failed", "{}", req.text);
}

/// The failing run's `error_code` is the daemon's to choose; it must be a non-empty string.
fn body_code(r: &Resp) -> String {
    let code = r.json()["error_code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!code.is_empty(), "error_code missing: {r}");
    code
}
