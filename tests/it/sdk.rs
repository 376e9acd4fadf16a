//! The official Fetch Hive Python SDK (`fetch-hive-sdk`) pointed at hivelet: the drop-in
//! compatibility SPEC §2 and §5 promise. The scripts live in `tests/python/`.

use crate::support::*;

/// Runs `tests/python/<script>` with `BASE_URL=<daemon>/v1`, `API_KEY` and `extra` env.
fn run_python(app: &TestApp, script: &str, key: &str, extra: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo_path(&format!("tests/python/{script}")))
        .env("BASE_URL", format!("{}/v1", app.base_url))
        .env("API_KEY", key)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("FETCH_HIVE_API_KEY");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = run_command(cmd, &app.dir);
    assert!(out.status.success(), "{script} failed: {}", describe(&out));
}

#[test]
fn sdk_invokes_and_reads_back_the_request() {
    let app = TestApp::start();
    run_python(&app, "sdk_sync.py", &app.admin_key, &[]);
}

#[test]
fn sdk_works_with_an_invoke_key() {
    let app = TestApp::start();
    let key = app.create_key("sdk", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    run_python(&app, "sdk_sync.py", &key, &[]);
}

#[test]
fn sdk_sees_fetch_hive_errors() {
    let app = TestApp::start();
    run_python(&app, "sdk_errors.py", &app.admin_key, &[]);
}

#[test]
fn sdk_async_invoke_completes_and_calls_back() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let callback = format!("{}/hooks/sdk", receiver.url());
    run_python(
        &app,
        "sdk_async.py",
        &app.admin_key,
        &[("CALLBACK_URL", &callback)],
    );
    let seen = receiver.wait_for_requests(1);
    assert_eq!(seen[0].path, "/hooks/sdk");
    assert_eq!(seen[0].json()["data"]["output"], "Hello, Ada.");
}
