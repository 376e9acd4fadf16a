//! SPEC §8 command line: `--help` everywhere, `runs`, async `invoke`, `secret rotate`,
//! `snippet`, `verify` and `listen`. (`invoke`, `deploy`, `keys` and `config` have tests in
//! their topic files.)

use serde_json::{json, Value};

use crate::support::*;

#[track_caller]
fn ok_stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    out_text(out).0
}

#[test]
fn every_command_has_help() {
    let app = TestApp::builder().prepare();
    let top = ok_stdout(&app.cli(&["--help"]));
    let commands = [
        "serve",
        "deploy",
        "invoke",
        "runs",
        "keys",
        "secret",
        "snippet",
        "verify",
        "listen",
        "config",
        "schedules",
    ];
    for command in commands {
        assert!(
            top.contains(command),
            "`hivelet --help` should list {command}: {top}"
        );
        let help = ok_stdout(&app.cli(&[command, "--help"]));
        assert!(help.contains("Usage"), "`hivelet {command} --help`: {help}");
    }
    for sub in [
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "attempts"],
        ["runs", "redeliver"],
        ["runs", "cancel"],
        ["runs", "rerun"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "rotate"],
        ["keys", "revoke"],
        ["secret", "rotate"],
        ["config", "check"],
        ["config", "dump"],
    ] {
        let help = ok_stdout(&app.cli(&[sub[0], sub[1], "--help"]));
        assert!(
            help.contains("Usage"),
            "`hivelet {} {} --help`: {help}",
            sub[0],
            sub[1]
        );
    }
}

#[test]
fn unknown_command_fails_with_a_hint() {
    let app = TestApp::builder().prepare();
    let out = app.cli(&["frobnicate"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let (_, stderr) = out_text(&out);
    assert!(stderr.contains("frobnicate"), "{}", describe(&out));
}

#[test]
fn client_commands_without_a_daemon_say_so() {
    let app = TestApp::builder().prepare();
    let out = app.cli(&["invoke", "hello", "--input", "name=Ada"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    assert!(
        !format!("{stdout}{stderr}").trim().is_empty(),
        "a reason is printed: {}",
        describe(&out)
    );
}

#[test]
fn runs_list_and_show() {
    let app = TestApp::start();
    let id = app.invoke(&hello("Ada")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = ok_stdout(&app.cli(&["runs", "list"]));
    assert!(list.contains(&id), "runs list should show {id}: {list}");
    let show = ok_stdout(&app.cli(&["runs", "show", &id]));
    assert!(show.contains(&id), "{show}");
    assert!(
        show.contains("Hello, Ada."),
        "runs show should include the output: {show}"
    );
    assert!(
        show.contains("greet"),
        "runs show should include the step trace: {show}"
    );
    let out = app.cli(&["runs", "show", "req_0123456789abcdef0123456789abcdef"]);
    assert!(
        !out.status.success(),
        "an unknown run is an error: {}",
        describe(&out)
    );
}

#[test]
fn runs_rerun_prints_the_new_request_id_and_with_wait_the_output() {
    let app = TestApp::start();
    let first = app.invoke(&hello("Ada")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();

    let out = ok_stdout(&app.cli(&["runs", "rerun", &first]));
    let id = out.trim().to_string();
    assert!(is_request_id(&id) && id != first, "{out}");
    let run = wait_for("the rerun to end", || {
        let run = app.admin_get(&format!("/v1/runs/{id}")).json();
        (run["run_status"] == "completed").then_some(run)
    });
    assert_eq!(run["rerun_of"], first.as_str(), "{run:#}");
    assert_eq!(run["source"], "cli", "{run:#}");

    let out = ok_stdout(&app.cli(&["runs", "rerun", &first, "--from", "greet", "--wait"]));
    let mut lines = out.lines();
    let id = lines.next().unwrap_or_default();
    assert!(is_request_id(id), "{out}");
    assert_eq!(lines.next(), Some("Hello, Ada."), "{out}");
    let run = app.admin_get(&format!("/v1/runs/{id}")).json();
    assert_eq!(run["steps"][0]["status"], "reused", "{run:#}");
    let show = ok_stdout(&app.cli(&["runs", "show", id]));
    assert!(show.contains(&format!("rerun of  {first}")), "{show}");

    let out = app.cli(&["runs", "rerun", &first, "--from", "nope"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("from_step"),
        "names the field: {}",
        describe(&out)
    );
}

#[test]
fn async_invoke_from_the_cli_prints_the_request_id_and_calls_back() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let callback = format!("{}/hook", receiver.url());
    let out = app.cli(&[
        "invoke",
        "hello",
        "--input",
        "name=Ada",
        "--async",
        "--callback-url",
        &callback,
    ]);
    let stdout = ok_stdout(&out);
    let id = stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|t| is_request_id(t))
        .unwrap_or_else(|| panic!("no request id printed: {}", describe(&out)))
        .to_string();
    let seen = receiver.wait_for_requests(1);
    let event = seen[0].json();
    assert_eq!(event["request_id"], id.as_str(), "{event}");
    assert_eq!(event["data"]["output"], "Hello, Ada.", "{event}");
}

#[test]
fn secret_rotate_changes_the_signing_secret() {
    let app = TestApp::start();
    let secret =
        |app: &TestApp| app.admin_get("/v1/deployments/hello").json()["signing_secret"].clone();
    let before = secret(&app);
    ok_stdout(&app.cli(&["secret", "rotate", "hello"]));
    let after = secret(&app);
    assert!(after.is_string(), "{after}");
    assert_ne!(before, after);
}

#[test]
fn snippet_prints_a_curl_command() {
    let app = TestApp::start();
    let out = ok_stdout(&app.cli(&["snippet", "hello"]));
    assert!(out.contains("curl"), "{out}");
    assert!(out.contains("/v1/workflow/invoke"), "{out}");
}

/// Captures one real delivery of the example at a stub receiver: (secret, headers, body).
fn capture_delivery(app: &TestApp) -> (String, Value, Vec<u8>) {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let d = receiver.wait_for_requests(1).remove(0);
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let secret = app.admin_get("/v1/deployments/hello").json()["signing_secret"]
        .as_str()
        .unwrap()
        .to_string();
    (secret, Value::Object(headers), d.body)
}

#[test]
fn verify_accepts_a_real_delivery_and_explains_a_bad_one() {
    let app = TestApp::start();
    let (secret, headers, body) = capture_delivery(&app);
    let headers_file = app.dir.join("headers.json");
    let body_file = app.dir.join("body.json");
    std::fs::write(&headers_file, headers.to_string()).unwrap();
    std::fs::write(&body_file, &body).unwrap();
    let (h, b) = (headers_file.to_str().unwrap(), body_file.to_str().unwrap());

    let out = app.cli(&["verify", "--secret", &secret, "--headers", h, "--body", b]);
    assert!(
        out.status.success(),
        "a real delivery must verify: {}",
        describe(&out)
    );

    let tampered = app.dir.join("tampered.json");
    let mut changed = body.clone();
    changed.extend_from_slice(b" ");
    std::fs::write(&tampered, changed).unwrap();
    let out = app.cli(&[
        "verify",
        "--secret",
        &secret,
        "--headers",
        h,
        "--body",
        tampered.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a tampered body must not verify: {}",
        describe(&out)
    );
    let (stdout, stderr) = out_text(&out);
    assert!(
        format!("{stdout}{stderr}")
            .to_lowercase()
            .contains("signature"),
        "the reason should mention the signature: {}",
        describe(&out)
    );

    let wrong = format!("whsec_{}", "A".repeat(43) + "=");
    let out = app.cli(&["verify", "--secret", &wrong, "--headers", h, "--body", b]);
    assert!(
        !out.status.success(),
        "a wrong secret must not verify: {}",
        describe(&out)
    );
}

#[test]
fn listen_prints_verified_events_and_refuses_forged_ones() {
    let app = TestApp::start();
    let secret = app.admin_get("/v1/deployments/hello").json()["signing_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut listener = app.cli_background(&["listen", "--port", "0", "--secret", &secret]);
    let printed = listener.wait_for_stdout("http://127.0.0.1:");
    let start = printed.find("http://127.0.0.1:").unwrap();
    let url: String = printed[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let url = url.trim_end_matches(['/', '.', ',']).to_string();

    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"enabled": true, "callback_url": format!("{url}/events")}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    listener.wait_for_stdout(&id);

    // A forged delivery is refused.
    let forged =
        json!({"event_type": "workflow.completed", "request_id": "req_forged"}).to_string();
    let r = send(
        "POST",
        &format!("{url}/events"),
        &[
            ("Content-Type", "application/json"),
            ("webhook-id", "evt_00000000000000000000000000000000"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", "v1,AAAA"),
        ],
        Some(forged.as_bytes()),
    );
    assert!(
        (400..500).contains(&r.status),
        "a forged delivery must be refused: {r}"
    );
}
