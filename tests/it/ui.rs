//! The web page at `/` (SPEC §5, issue 4): served from the binary, self-contained, and driven
//! in a real headless Chromium by `tests/python/ui_test.py` (Selenium + chromedriver, both
//! installed by `.ci/run`). Screenshots of each page land in `target/ui-screenshots/`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A browser session is slower than one HTTP request: Chromium starts, pages render, a
/// redelivery goes out. Generous, because the suite runs many daemons at once.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fast, exact retries so "500, 500, 200" is over in well under a second.
const FAST_RETRIES: &str =
    "[delivery]\nretry_schedule = [\"200ms\", \"200ms\", \"200ms\"]\njitter = 0.0\n";

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.header(name)
        .unwrap_or_else(|| panic!("missing {name} header: {r}"))
}

#[test]
fn the_page_and_its_assets_are_served_without_a_key() {
    let app = TestApp::start();

    let page = app.get("/", None);
    page.expect_status(200);
    assert!(
        header(&page, "content-type").starts_with("text/html"),
        "{:?}",
        page.headers
    );
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text.contains("<title>hivelet</title>"));
    assert!(page.text.contains("/ui/app.js") && page.text.contains("/ui/app.css"));

    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = app.get(path, None);
        r.expect_status(200);
        assert!(header(&r, "content-type").starts_with(kind), "{path}: {r}");
        assert!(!r.text.is_empty(), "{path} is empty");
    }

    // Nothing is loaded from anywhere else: the page works offline.
    for path in ["/", "/ui/app.js", "/ui/app.css"] {
        let text = app.get(path, None).text;
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!text.contains(needle), "{path} contains {needle:?}");
        }
    }

    // The API around it is unchanged: still 401 without a key, 404 envelope elsewhere.
    app.get("/v1/runs", None)
        .expect_error(401, "unauthorized", None);
    app.get("/ui/nope.js", None)
        .expect_error(404, "not_found", None);
    app.post_json("/", None, &json!({}))
        .expect_error(405, "method_not_allowed", None);
}

/// Where the browser test saves its screenshots: `target/ui-screenshots/` (or
/// `$UI_SCREENSHOT_DIR`).
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UI_SCREENSHOT_DIR") {
        return PathBuf::from(dir);
    }
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; keep the screenshots next to it.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("ui-screenshots")
}

/// Runs a command with a deadline, its output captured in files (a chatty child never blocks).
fn run_with_deadline(mut cmd: Command, scratch: &std::path::Path, limit: Duration) -> Output {
    let out_path = scratch.join("browser.stdout");
    let err_path = scratch.join("browser.stderr");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

/// Runs `tests/python/<script>` (Selenium driving headless Chromium) against `app` and
/// asserts it passed. It gets BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and `extra`.
pub(crate) fn run_browser(app: &TestApp, script: &str, extra: &[(&str, &str)]) {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: install Debian's chromium and chromium-driver (see .ci/run)"
        );
    }
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(repo_path(&format!("tests/python/{script}")))
        .env("BASE_URL", &app.base_url)
        .env("ADMIN_KEY", &app.admin_key)
        .env("SCREENSHOT_DIR", &shots)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = run_with_deadline(cmd, &app.dir, BROWSER_TIMEOUT);
    assert!(
        out.status.success(),
        "{script} failed (screenshots in {}): {}",
        shots.display(),
        describe(&out)
    );
}

#[test]
fn browser_shows_async_runs_webhook_logs_redelivery_and_the_snippet() {
    // The receiving app fails twice, then accepts; later requests (the redelivery) succeed.
    let receiver = StubServer::start(|_, seq| {
        if seq < 2 {
            StubReply::json(500, &json!({"error": "temporarily down"}))
        } else {
            StubReply::json(200, &json!({"received": true}))
        }
    });
    let app = TestApp::start_with(FAST_RETRIES, &[], &[]);
    let callback = format!("{}/hooks/ui", receiver.url());

    // A direct run too, so the table shows both kinds.
    app.invoke(&hello("Grace")).expect_status(200);
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "metadata": {"customer": "acme"},
        "async": {"enabled": true, "callback_url": callback}
    }));
    r.expect_status(202);
    let request_id = r.json()["request_id"].as_str().unwrap().to_string();

    let run: Value = wait_for("delivery after two failures", || {
        let run = app.admin_get(&format!("/v1/runs/{request_id}")).json();
        (run["async"]["delivery_state"] == "delivered").then_some(run)
    });
    let codes: Vec<Value> = run["async"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(500), json!(200)], "{run}");

    run_browser(
        &app,
        "ui_test.py",
        &[("REQUEST_ID", &request_id), ("CALLBACK_URL", &callback)],
    );

    // The Redeliver click reached the receiver as a fourth request of the same event.
    let seen = receiver.wait_for_requests(4);
    let ids: Vec<_> = seen.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

/// An approval step asking a question with two choices, then a step using the answer.
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

[[steps]]
id = "final"
type = "template"
template = "{{ draft.output }}: {{ approve.output.choice.value }} ({{ approve.output.choice.label }})"

[output]
template = "{{ final.output }}"
"#;

/// An approval step without choices: the answer is free text.
const REVIEW: &str = r#"
key = "review"

[[steps]]
id = "review"
type = "approval"
question = "Any comments?"

[output]
template = "Reviewed: {{ review.output.text }}"
"#;

#[test]
fn browser_answers_approvals_and_cancels_a_waiting_run() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok("expense", EXPENSE);
    app.deploy_ok("review", REVIEW);
    let callback = format!("{}/hooks/approvals", receiver.url());
    let start = |deployment: &str, inputs: Value| {
        let r = app.invoke(&json!({
            "deployment": deployment,
            "inputs": inputs,
            "async": {"enabled": true, "callback_url": callback},
        }));
        r.expect_status(202);
        let id = r.json()["request_id"].as_str().unwrap().to_string();
        wait_for(&format!("{id} to wait at its approval step"), || {
            let run = app.admin_get(&format!("/v1/runs/{id}")).json();
            let steps = run["steps"].as_array().cloned().unwrap_or_default();
            steps.iter().any(|s| s["status"] == "waiting").then_some(())
        });
        id
    };
    let choice_id = start("expense", json!({"amount": 42}));
    let text_id = start("review", json!({}));
    let cancel_id = start("expense", json!({"amount": 7}));

    run_browser(
        &app,
        "ui_approval.py",
        &[
            ("CHOICE_ID", &choice_id),
            ("TEXT_ID", &text_id),
            ("CANCEL_ID", &cancel_id),
        ],
    );

    // What the page did is what the API reports.
    let status = |id: &str| app.admin_get(&format!("/v1/runs/{id}")).json();
    let answered = status(&choice_id);
    assert_eq!(answered["run_status"], "completed", "{answered}");
    assert_eq!(answered["output"], "Pay 42 EUR: no (No way)", "{answered}");
    let reviewed = status(&text_id);
    assert_eq!(reviewed["output"], "Reviewed: Looks good", "{reviewed}");
    let cancelled = status(&cancel_id);
    assert_eq!(cancelled["run_status"], "cancelled", "{cancelled}");
}

#[test]
fn browser_reruns_a_run_from_a_picked_step() {
    let app = TestApp::start();
    app.deploy_ok(
        "abc",
        r#"
key = "abc"

[[steps]]
id = "a"
type = "template"
template = "A"

[[steps]]
id = "b"
type = "template"
template = "{{ a.output }}B"

[[steps]]
id = "c"
type = "template"
template = "{{ b.output }}C"
"#,
    );
    let r = app.invoke(&json!({"deployment": "abc"}));
    r.expect_status(200);
    let first = r.json()["request_id"].as_str().unwrap().to_string();

    run_browser(&app, "ui_rerun.py", &[("RUN_ID", &first)]);

    // The page started exactly one rerun, from `c`.
    let runs = app.admin_get("/v1/runs").json()["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reruns: Vec<&Value> = runs
        .iter()
        .filter(|r| r["rerun_of"] == first.as_str())
        .collect();
    assert_eq!(reruns.len(), 1, "{runs:#?}");
    let id = reruns[0]["request_id"].as_str().unwrap();
    let run = app.admin_get(&format!("/v1/runs/{id}")).json();
    assert_eq!(run["output"], "ABC", "{run:#}");
    let statuses: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["reused", "reused", "completed"], "{run:#}");
}

#[test]
fn browser_links_a_workflow_step_and_its_child_run() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": "done"}))
        })
    };
    let app = TestApp::start();
    app.deploy_ok(
        "slow",
        &format!(
            "key = \"slow\"\n[[steps]]\nid = \"wait\"\ntype = \"http\"\nurl = \"{}/work\"\n",
            api.url()
        ),
    );
    app.deploy_ok(
        "caller",
        "key = \"caller\"\n[[steps]]\nid = \"sub\"\ntype = \"workflow\"\ndeployment = \"slow\"\n",
    );
    let r = app.invoke(&json!({
        "deployment": "caller",
        "async": {"enabled": true, "callback_url": "http://127.0.0.1:9/hook"},
    }));
    r.expect_status(202);
    let parent = r.json()["request_id"].as_str().unwrap().to_string();
    api.wait_for_requests(1);
    let child = wait_for("the parent to wait on its child", || {
        let run = app.admin_get(&format!("/v1/runs/{parent}")).json();
        let steps = run["steps"].as_array().cloned().unwrap_or_default();
        steps
            .iter()
            .find(|s| s["id"] == "sub" && s["status"] == "waiting")
            .and_then(|s| s["child_request_id"].as_str().map(str::to_owned))
    });

    run_browser(
        &app,
        "ui_child.py",
        &[("PARENT_ID", &parent), ("CHILD_ID", &child)],
    );
    gate.open();
}

#[test]
fn browser_shows_priority_concurrency_key_and_a_capacity_wait() {
    let gate = Gate::new();
    let stub = {
        let gate = gate.clone();
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/v1/chat/completions") {
                gate.wait();
                return StubReply::json(200, &chat_completion("hi"));
            }
            StubReply::json(200, &json!({}))
        })
    };
    let app = TestApp::start_with(
        &format!(
            "[providers.stub]\nbase_url = \"{}/v1\"\nmax_concurrent = 1\n",
            stub.url()
        ),
        &[],
        &[],
    );
    app.deploy_ok(
        "ask",
        "key = \"ask\"\n[concurrency]\nkey = \"{{ metadata.customer }}\"\nlimit = 4\n\
         [[steps]]\nid = \"ask\"\ntype = \"prompt\"\nprovider = \"stub\"\nmodel = \"m\"\nprompt = \"hi\"\n",
    );
    let invoke = || {
        let r = app.invoke(&json!({
            "deployment": "ask", "metadata": {"customer": "acme"}, "priority": 7,
            "async": {"callback_url": format!("{}/hook", stub.url())},
        }));
        r.expect_status(202);
        r.json()["request_id"].as_str().unwrap().to_string()
    };
    let ids = [invoke(), invoke()];
    let waiting = wait_for("a step waiting for provider capacity", || {
        ids.iter().find(|id| {
            let run = app.admin_get(&format!("/v1/runs/{id}")).json();
            run["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["status"] == "waiting" && s["reason"] == "provider_capacity")
        })
    });
    run_browser(&app, "ui_flow.py", &[("RUN_ID", waiting)]);
    gate.open();
}
