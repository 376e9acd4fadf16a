//! SPEC §5 run logs: `GET /v1/runs/{id}` (everything, with the step trace), the run list with
//! its filters and cursor pagination, attempts, redeliver and cancel.

use serde_json::{json, Value};

use crate::support::*;

/// `GET /v1/runs/{id}` with the admin key, asserted 200.
fn run_detail(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get(&format!("/v1/runs/{id}"));
    r.expect_status(200);
    r.json()
}

/// The run's state, whichever of `status` / `run_status` carries it.
fn state_of(run: &Value) -> String {
    run.get("status")
        .or_else(|| run.get("run_status"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no status in {run}"))
        .to_string()
}

/// The trace entry of step `id` (an object with that `id` and a `status`, found anywhere).
fn step<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) if o.get("id") == Some(&json!(id)) && o.contains_key("status") => Some(v),
        Value::Object(o) => o.values().find_map(|x| step(x, id)),
        Value::Array(a) => a.iter().find_map(|x| step(x, id)),
        _ => None,
    }
}

#[track_caller]
fn expect_step<'a>(run: &'a Value, id: &str) -> &'a Value {
    step(run, id).unwrap_or_else(|| panic!("step {id} missing from the trace: {run}"))
}

fn json_contains_number(v: &Value, n: u64) -> bool {
    match v {
        Value::Number(x) => x.as_u64() == Some(n),
        Value::Array(a) => a.iter().any(|x| json_contains_number(x, n)),
        Value::Object(o) => o.values().any(|x| json_contains_number(x, n)),
        _ => false,
    }
}

/// Invokes and returns the request id.
fn invoke_id(app: &TestApp, body: &Value) -> String {
    let r = app.invoke(body);
    assert!(r.is_success(), "{r}");
    r.json()["request_id"].as_str().unwrap().to_string()
}

#[test]
fn run_detail_has_everything_about_a_sync_run() {
    let app = TestApp::start();
    let id = invoke_id(
        &app,
        &json!({
            "deployment": "hello",
            "variant": "loud",
            "inputs": {"name": "Ada"},
            "metadata": {"order": "A-1"},
            "user": "u-7"
        }),
    );
    let run = run_detail(&app, &id);
    assert_eq!(run["request_id"], id.as_str(), "{run}");
    assert_eq!(state_of(&run), "completed");
    assert_eq!(run["deployment"], "hello", "{run}");
    assert_eq!(run["variant"], "loud", "{run}");
    assert_eq!(run["version"], 1, "{run}");
    assert_eq!(run["source"], "api", "{run}");
    assert_eq!(run["inputs"], json!({"name": "Ada"}), "{run}");
    assert_eq!(run["metadata"], json!({"order": "A-1"}), "{run}");
    assert_eq!(run["user"], "u-7", "{run}");
    assert_eq!(run["output"], "Hello, Ada!!!", "{run}");
    assert!(
        !run["started_at"].is_null() && !run["ended_at"].is_null(),
        "{run}"
    );

    let greet = expect_step(&run, "greet");
    assert_eq!(greet["status"], "completed", "{greet}");
    assert_eq!(greet["type"], "template", "{greet}");
    assert_eq!(greet["output"], "Hello, Ada!!!", "{greet}");
    // The example's delay step only runs in the `slow` variant.
    let wait = expect_step(&run, "wait");
    assert_eq!(wait["status"], "skipped", "{wait}");
}

#[test]
fn step_trace_shows_skipped_failed_and_retried_steps() {
    let api = StubServer::start(|req, n| match req.path.as_str() {
        "/flaky" if n < 2 => StubReply::json(500, &json!({"error": "flaky"})),
        "/broken" => StubReply::json(500, &json!({"error": "broken"})),
        _ => StubReply::json(200, &json!({"ok": "yes"})),
    });
    let app = TestApp::start();
    app.deploy_ok(
        "traced",
        &r#"
key = "traced"

[[steps]]
id = "flaky"
type = "http"
method = "GET"
url = "STUB/flaky"
retries = 3

[[steps]]
id = "maybe"
type = "http"
method = "GET"
url = "STUB/maybe"
when = "false"

[[steps]]
id = "broken"
type = "http"
method = "GET"
url = "STUB/broken"
on_error = "continue"

[[steps]]
id = "done"
type = "template"
template = "done"

[output]
template = "{{ done.output }}"
"#
        .replace("STUB", &api.url()),
    );
    let id = invoke_id(&app, &json!({"deployment": "traced"}));
    let run = run_detail(&app, &id);
    assert_eq!(state_of(&run), "completed", "{run}");

    let flaky = expect_step(&run, "flaky");
    assert_eq!(flaky["status"], "completed", "{flaky}");
    assert_eq!(flaky["attempts"], 3, "two failures then success: {flaky}");
    assert_eq!(flaky["type"], "http", "{flaky}");

    let maybe = expect_step(&run, "maybe");
    assert_eq!(maybe["status"], "skipped", "{maybe}");

    let broken = expect_step(&run, "broken");
    assert_eq!(broken["status"], "failed", "{broken}");
    assert!(
        !broken["error"].is_null(),
        "a failed step records its error: {broken}"
    );

    assert_eq!(expect_step(&run, "done")["status"], "completed");
    assert!(
        !api.requests().iter().any(|r| r.path == "/maybe"),
        "the skipped step must not call out"
    );
}

#[test]
fn prompt_step_token_usage_is_recorded() {
    let llm = StubServer::openai("Hi!");
    let config = format!(
        "[providers.stub]\nbase_url = \"{}/v1\"\napi_key_env = \"STUB_KEY\"\n",
        llm.url()
    );
    let app = TestApp::start_with(&config, &[], &[("STUB_KEY", "sk-x")]);
    app.deploy_ok(
        "ask",
        "key = \"ask\"\n[[steps]]\nid = \"ask\"\ntype = \"prompt\"\nprovider = \"stub\"\nmodel = \"m\"\nprompt = \"hi\"\n[output]\ntemplate = \"{{ ask.output }}\"\n",
    );
    let id = invoke_id(&app, &json!({"deployment": "ask"}));
    let run = run_detail(&app, &id);
    let ask = expect_step(&run, "ask");
    assert!(
        json_contains_number(ask, 18),
        "total_tokens (18) from the provider's usage should be recorded on the step: {ask}"
    );
}

#[test]
fn failed_run_detail_names_the_error_and_step() {
    let api = StubServer::start(|_, _| StubReply::json(500, &json!({"error": "boom"})));
    let app = TestApp::start();
    app.deploy_ok(
        "fails",
        &"key = \"fails\"\n[[steps]]\nid = \"fetch\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"STUB/x\"\n[output]\ntemplate = \"x\"\n"
            .replace("STUB", &api.url()),
    );
    let r = app.invoke(&json!({"deployment": "fails"}));
    r.expect_status(502);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let run = run_detail(&app, &id);
    assert_eq!(state_of(&run), "failed");
    assert_eq!(run["error"]["step"], "fetch", "{run}");
    assert!(run["error"]["message"].is_string(), "{run}");
    assert!(run["error"]["error_code"].is_string(), "{run}");
    assert!(run["output"].is_null(), "{run}");
    assert_eq!(expect_step(&run, "fetch")["status"], "failed");
}

#[test]
fn cli_runs_are_marked_as_such() {
    let app = TestApp::start();
    let out = app.cli(&["invoke", "hello", "--input", "name=Ada"]);
    assert!(out.status.success(), "{}", describe(&out));
    let list = app.admin_get("/v1/runs?source=cli");
    list.expect_status(200);
    let runs = list.json()["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "one CLI run: {list}");
    assert_eq!(runs[0]["source"], "cli", "{list}");
}

#[test]
fn unknown_run_is_404_and_invoke_keys_see_only_their_runs() {
    let app = TestApp::start();
    app.admin_get("/v1/runs/req_0123456789abcdef0123456789abcdef")
        .expect_error(404, "not_found", None);

    let key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = app.invoke_with_key(&key, &hello("Mine")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let admins = invoke_id(&app, &hello("Admin"));
    app.get(&format!("/v1/runs/{mine}"), Some(&key))
        .expect_status(200);
    let r = app.get(&format!("/v1/runs/{admins}"), Some(&key));
    r.expect_error(404, "not_found", None);
}

/// The `runs` array of a `GET /v1/runs…` answer.
fn list(app: &TestApp, key: &str, query: &str) -> (Vec<Value>, Value) {
    let r = app.get(&format!("/v1/runs{query}"), Some(key));
    r.expect_status(200);
    let body = r.json();
    let runs = body["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("runs: {body}"))
        .clone();
    (runs, body)
}

fn ids(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn run_list_is_newest_first_and_filters() {
    let app = TestApp::start();
    app.deploy_ok(
        "other",
        "key = \"other\"\n[[steps]]\nid = \"s\"\ntype = \"template\"\ntemplate = \"x\"\n[output]\ntemplate = \"x\"\n",
    );
    let a = invoke_id(
        &app,
        &json!({"deployment": "hello", "inputs": {"name": "A"}, "metadata": {"shop": "north"}, "user": "u1"}),
    );
    let b = invoke_id(
        &app,
        &json!({"deployment": "hello", "variant": "loud", "inputs": {"name": "B"}, "metadata": {"shop": "south"}}),
    );
    let c = invoke_id(&app, &json!({"deployment": "other"}));
    let failed = app.invoke(&json!({"deployment": "hello", "inputs": {}}));
    failed.expect_status(422); // rejected: stores nothing

    let key = app.admin_key.clone();
    let (runs, body) = list(&app, &key, "");
    assert_eq!(
        ids(&runs),
        vec![c.clone(), b.clone(), a.clone()],
        "newest first, nothing else: {body}"
    );

    assert_eq!(
        ids(&list(&app, &key, "?deployment=hello").0),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(ids(&list(&app, &key, "?variant=loud").0), vec![b.clone()]);
    assert_eq!(ids(&list(&app, &key, "?status=completed").0).len(), 3);
    assert!(list(&app, &key, "?status=failed").0.is_empty());
    assert_eq!(
        ids(&list(&app, &key, "?meta.shop=south").0),
        vec![b.clone()]
    );
    assert_eq!(
        ids(&list(&app, &key, "?meta.shop").0),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(ids(&list(&app, &key, "?user=u1").0), vec![a.clone()]);
    assert_eq!(ids(&list(&app, &key, "?delivery=direct").0).len(), 3);
    assert!(list(&app, &key, "?delivery=callback").0.is_empty());
    assert_eq!(
        ids(&list(&app, &key, &format!("?q={a}")).0),
        vec![a.clone()]
    );
}

#[test]
fn run_list_paginates_with_a_cursor() {
    let app = TestApp::start();
    let mut made: Vec<String> = (0..5)
        .map(|i| invoke_id(&app, &hello(&format!("n{i}"))))
        .collect();
    made.reverse(); // newest first
    let key = app.admin_key.clone();
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    for _ in 0..10 {
        let (runs, body) = list(&app, &key, &query);
        assert!(runs.len() <= 2, "limit ignored: {body}");
        seen.extend(ids(&runs));
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, made, "pages must cover every run once, newest first");
    let r = app.admin_get("/v1/runs?limit=1000");
    assert!(r.status == 422 || r.status == 400 || r.is_success(), "{r}");
    if r.is_success() {
        assert!(r.json()["runs"].as_array().map(Vec::len).unwrap_or(0) <= 200);
    }
}

#[test]
fn invoke_keys_list_only_their_own_runs() {
    let app = TestApp::start();
    let key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = app.invoke_with_key(&key, &hello("Mine")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    invoke_id(&app, &hello("Admin"));
    assert_eq!(ids(&list(&app, &key, "").0), vec![mine]);
    assert_eq!(list(&app, &app.admin_key, "").0.len(), 2);
}

#[test]
fn async_run_detail_shows_delivery_and_attempts() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "received"));
    let app = TestApp::start();
    let callback = format!("{}/hook", receiver.url());
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"enabled": true, "callback_url": callback}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let delivered = receiver.wait_for_requests(1);
    let event_id = delivered[0]
        .header("webhook-id")
        .unwrap_or_default()
        .to_string();

    let run = wait_for("the delivery to be recorded as delivered", || {
        let run = run_detail(&app, &id);
        json_contains_str(&run, "delivered").then_some(run)
    });
    assert!(json_contains_str(&run, &callback), "callback_url: {run}");
    assert!(json_contains_str(&run, &event_id), "event id: {run}");
    assert!(
        json_contains_number(&run, 200),
        "the attempt's HTTP status: {run}"
    );

    let attempts = app.admin_get(&format!("/v1/runs/{id}/attempts"));
    attempts.expect_status(200);
    let attempts = attempts.json();
    assert!(json_contains_number(&attempts, 200), "{attempts}");
    assert!(
        attempts.to_string().contains("received"),
        "the response body is recorded: {attempts}"
    );
    assert!(
        !attempts.to_string().contains("whsec_"),
        "recorded headers must never hold a secret: {attempts}"
    );
}

#[test]
fn redeliver_sends_the_same_event_again() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    let r = app.invoke(&json!({
        "deployment": "hello",
        "inputs": {"name": "Ada"},
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    receiver.wait_for_requests(1);
    wait_for("delivered", || {
        json_contains_str(&run_detail(&app, &id), "delivered").then_some(())
    });

    let r = app.post_json(
        &format!("/v1/runs/{id}/redeliver"),
        Some(&app.admin_key),
        &json!({}),
    );
    assert!(r.is_success(), "{r}");
    let seen = receiver.wait_for_requests(2);
    assert_eq!(seen[0].header("webhook-id"), seen[1].header("webhook-id"));
    assert_eq!(seen[0].body, seen[1].body);
}

#[test]
fn cancel_ends_a_running_run_as_cancelled() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::start(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": 1}))
        })
    };
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok(
        "held",
        &"key = \"held\"\n[[steps]]\nid = \"call\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"STUB/w\"\n[output]\ntemplate = \"x\"\n"
            .replace("STUB", &api.url()),
    );
    let r = app.invoke(&json!({
        "deployment": "held",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    api.wait_for_requests(1);

    let r = app.post_json(
        &format!("/v1/runs/{id}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    );
    assert!(r.is_success(), "{r}");
    let seen = receiver.wait_for_requests(1);
    gate.open();
    let event = seen[0].json();
    assert_eq!(event["event_type"], "workflow.cancelled", "{event}");
    assert_eq!(event["data"]["run_status"], "cancelled", "{event}");
    assert_eq!(state_of(&run_detail(&app, &id)), "cancelled");
}

#[test]
fn run_list_filters_by_source_api_key_and_time() {
    let app = TestApp::start();
    let created = app.create_key("shop", "invoke");
    let (shop_key, shop_id) = (
        created["key"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    );
    let by_shop = app.invoke_with_key(&shop_key, &hello("Shop")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_admin = invoke_id(&app, &hello("Admin"));
    let out = app.cli(&["invoke", "hello", "--input", "name=Cli"]);
    assert!(out.status.success(), "{}", describe(&out));
    let key = app.admin_key.clone();

    assert_eq!(
        ids(&list(&app, &key, &format!("?api_key={shop_id}")).0),
        vec![by_shop.clone()]
    );
    assert_eq!(
        ids(&list(&app, &key, "?source=api").0),
        vec![by_admin.clone(), by_shop.clone()]
    );
    assert_eq!(list(&app, &key, "?source=cli").0.len(), 1);
    assert!(list(&app, &key, "?source=webhook").0.is_empty());

    // Time bounds: everything is after the epoch's first hour and before a far future.
    assert_eq!(list(&app, &key, "?since=1970-01-01T01:00:00Z").0.len(), 3);
    assert!(list(&app, &key, "?until=1970-01-01T01:00:00Z").0.is_empty());
    assert_eq!(list(&app, &key, "?until=2999-01-01T00:00:00Z").0.len(), 3);
    let newest = list(&app, &key, "").0[0]["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        list(&app, &key, &format!("?since={newest}")).0.len(),
        1,
        "since is inclusive"
    );

    // Bad filters are refused in the envelope, naming the filter.
    let body = app
        .admin_get("/v1/runs?status=bogus")
        .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "status", "{body}");
    let body =
        app.admin_get("/v1/runs?since=yesterday")
            .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "since", "{body}");
    let body = app
        .admin_get("/v1/runs?nonsense=1")
        .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "nonsense", "{body}");
}
