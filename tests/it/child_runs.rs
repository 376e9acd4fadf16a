//! SPEC §10 `workflow` steps: a child run with its own `request_id`, `parent_request_id` and
//! source `workflow`, whose output becomes the step's; a failing child fails the step; the
//! depth limit (`workflow_depth_exceeded`, an indirect cycle included); a self-call refused
//! at deploy time; a child per loop pass; a `kill -9` while a child runs resumes without a
//! second child; cancelling a parent cancels its child.

use serde_json::{json, Value};

use crate::support::*;

const GREET: &str = r#"
key = "greet"

[[inputs]]
name = "name"
type = "text"
required = true

[[inputs]]
name = "n"
type = "number"
required = true

[[steps]]
id = "hello"
type = "template"
template = "Hello, {{ name }} x{{ n }}"

[variants.loud]
vars = { mark = "!" }
"#;

const PARENT: &str = r#"
key = "parent"

[[inputs]]
name = "who"
type = "text"
required = true

[[steps]]
id = "call"
type = "workflow"
deployment = "greet"
inputs = { name = "{{ who | upper }}", n = 3 }

[output]
template = "[{{ call.output }}]"
"#;

#[track_caller]
fn detail(app: &TestApp, id: &str) -> Value {
    let d = app.admin_get(&format!("/v1/runs/{id}"));
    d.expect_status(200);
    d.json()
}

fn request_id(body: &Value) -> String {
    body["request_id"].as_str().unwrap().to_owned()
}

fn step<'a>(detail: &'a Value, id: &str) -> Vec<&'a Value> {
    detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == id)
        .collect()
}

/// The child runs of `parent`, from the run list (source `workflow`).
fn children_of(app: &TestApp, parent: &str) -> Vec<Value> {
    let list = app.admin_get("/v1/runs?source=workflow&limit=100");
    list.expect_status(200);
    list.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["parent_request_id"] == parent)
        .cloned()
        .collect()
}

#[test]
fn the_child_runs_output_is_the_step_output_and_the_runs_are_linked() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok("greet", GREET);
    app.deploy_ok("parent", PARENT);

    let r = app.invoke(&json!({"deployment": "parent", "inputs": {"who": "ada"}}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], "[Hello, ADA x3]", "{body}");

    let parent = request_id(&body);
    let parent_detail = detail(&app, &parent);
    assert_eq!(parent_detail["source"], "api", "{parent_detail}");
    assert!(parent_detail["parent_request_id"].is_null());
    let call = step(&parent_detail, "call");
    assert_eq!(call.len(), 1, "one trace line: {parent_detail}");
    assert_eq!(call[0]["type"], "workflow");
    assert_eq!(call[0]["status"], "completed");
    assert_eq!(call[0]["output"], "Hello, ADA x3");
    let child = call[0]["child_request_id"].as_str().unwrap().to_owned();
    assert_ne!(child, parent);

    let child_detail = detail(&app, &child);
    assert_eq!(child_detail["source"], "workflow", "{child_detail}");
    assert_eq!(child_detail["parent_request_id"], parent.as_str());
    assert_eq!(child_detail["deployment"], "greet");
    assert_eq!(child_detail["variant"], "default");
    assert_eq!(child_detail["run_status"], "completed");
    assert_eq!(child_detail["inputs"], json!({"name": "ADA", "n": 3}));
    assert_eq!(child_detail["output"], "Hello, ADA x3");
    assert_eq!(child_detail["delivery"], "direct", "a child never delivers");
    assert!(child_detail.get("async").is_none(), "{child_detail}");

    let listed = children_of(&app, &parent);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["request_id"], child.as_str());

    // Started with an invoke key, the child is that key's to read too (and others' not).
    let key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.invoke_with_key(
        &key,
        &json!({"deployment": "parent", "inputs": {"who": "cy"}, "user": "u1"}),
    );
    r.expect_status(200);
    let mine = request_id(&r.json());
    let my_child = children_of(&app, &mine)[0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = app.get(&format!("/v1/runs/{my_child}"), Some(&key));
    seen.expect_status(200);
    assert_eq!(seen.json()["user"], "u1", "{seen}");
    app.get(&format!("/v1/runs/{child}"), Some(&key))
        .expect_error(404, "not_found", None);

    // An async parent: only the top run delivers, with the child's output in its own.
    let r = app.invoke(&json!({
        "deployment": "parent",
        "inputs": {"who": "bo"},
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let parent = request_id(&r.json());
    let seen = receiver.wait_for_requests(1);
    let event = seen[0].json();
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["data"]["output"], "[Hello, BO x3]", "{event}");
    let children = children_of(&app, &parent);
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["async"], false, "{children:?}");
    assert!(children[0]["callback_url"].is_null());
}

#[test]
fn a_failing_child_fails_the_step_naming_the_child() {
    let api = StubServer::start(|_, _| StubReply::text(404, "no such thing"));
    let app = TestApp::start();
    app.deploy_ok(
        "fetch",
        &format!(
            "key = \"fetch\"\n[[steps]]\nid = \"get\"\ntype = \"http\"\nurl = \"{}/thing\"\n",
            api.url()
        ),
    );
    app.deploy_ok(
        "outer",
        "key = \"outer\"\n[[steps]]\nid = \"sub\"\ntype = \"workflow\"\ndeployment = \"fetch\"\n",
    );
    let r = app.invoke(&json!({"deployment": "outer"}));
    // The child's own code is not carried up: the parent's step failed.
    let body = r.expect_error(502, "step_failed", None);
    assert_eq!(body["step"], "sub", "{body}");
    let parent = request_id(&body);
    let children = children_of(&app, &parent);
    assert_eq!(children.len(), 1, "{children:?}");
    let child = children[0]["request_id"].as_str().unwrap();
    assert_eq!(children[0]["run_status"], "failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("child run {child} failed")) && message.contains("404"),
        "{body}"
    );
    let d = detail(&app, &parent);
    let sub = step(&d, "sub");
    assert_eq!(sub[0]["status"], "failed", "{d}");
    assert_eq!(sub[0]["child_request_id"], child, "{d}");
    let child_detail = detail(&app, child);
    assert_eq!(child_detail["error"]["step"], "get", "{child_detail}");
}

#[test]
fn an_unknown_deployment_or_variant_is_deployable_but_fails_at_run_time() {
    let app = TestApp::start();
    app.deploy_ok(
        "early",
        "key = \"early\"\n[[steps]]\nid = \"later\"\ntype = \"workflow\"\ndeployment = \"greet\"\ninputs = { name = \"x\", n = 1 }\n",
    );
    let r = app.invoke(&json!({"deployment": "early"}));
    let body = r.expect_error(502, "step_failed", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("deployment \"greet\" not found"),
        "{body}"
    );
    assert!(children_of(&app, &request_id(&body)).is_empty());
    let d = detail(&app, &request_id(&body));
    assert_eq!(step(&d, "later")[0]["attempts"], 1, "not retried: {d}");

    // Deployed later, the same definition works.
    app.deploy_ok("greet", GREET);
    let r = app.invoke(&json!({"deployment": "early"}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, x x1");

    // A variant the child does not have.
    app.deploy_ok(
        "shady",
        "key = \"shady\"\n[[steps]]\nid = \"v\"\ntype = \"workflow\"\ndeployment = \"greet\"\nvariant = \"quiet\"\ninputs = { name = \"x\", n = 1 }\n",
    );
    let body = app
        .invoke(&json!({"deployment": "shady"}))
        .expect_error(502, "step_failed", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("has no variant \"quiet\""),
        "{body}"
    );
    // A variant it has.
    app.deploy_ok(
        "loud",
        "key = \"loud\"\n[[steps]]\nid = \"v\"\ntype = \"workflow\"\ndeployment = \"greet\"\nvariant = \"loud\"\ninputs = { name = \"x\", n = 1 }\n",
    );
    let r = app.invoke(&json!({"deployment": "loud"}));
    r.expect_status(200);
    let child = step(&detail(&app, &request_id(&r.json())), "v")[0]["child_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail(&app, &child)["variant"], "loud");

    // Inputs the child refuses fail the step before any child is stored.
    app.deploy_ok(
        "sloppy",
        "key = \"sloppy\"\n[[steps]]\nid = \"v\"\ntype = \"workflow\"\ndeployment = \"greet\"\ninputs = { name = \"x\", n = \"not a number\" }\n",
    );
    let body = app
        .invoke(&json!({"deployment": "sloppy"}))
        .expect_error(502, "step_failed", None);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Input n must be number"),
        "{body}"
    );
    assert!(children_of(&app, &request_id(&body)).is_empty());
}

#[test]
fn an_indirect_cycle_stops_at_depth_nine_with_workflow_depth_exceeded() {
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    // ping → pong → ping → …: each names the other, so neither is a self-call.
    app.deploy_ok(
        "ping",
        "key = \"ping\"\n[[steps]]\nid = \"volley\"\ntype = \"workflow\"\ndeployment = \"pong\"\n",
    );
    app.deploy_ok(
        "pong",
        "key = \"pong\"\n[[steps]]\nid = \"volley\"\ntype = \"workflow\"\ndeployment = \"ping\"\n",
    );
    let r = app.invoke(&json!({"deployment": "ping"}));
    let body = r.expect_error(502, "workflow_depth_exceeded", None);
    assert_eq!(body["step"], "volley", "{body}");
    let top = request_id(&body);
    let d = detail(&app, &top);
    assert_eq!(d["error"]["error_code"], "workflow_depth_exceeded", "{d}");

    // Depths 2 to 8 ran, each the child of the one before; the one at depth 8 could not
    // start a ninth.
    let mut chain = vec![top.clone()];
    loop {
        let last = chain.last().unwrap().clone();
        let kids = children_of(&app, &last);
        assert!(kids.len() <= 1, "{kids:?}");
        let Some(kid) = kids.first() else { break };
        assert_eq!(kid["run_status"], "failed", "{kid}");
        chain.push(kid["request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(chain.len(), 8, "{chain:?}");
    let deepest = detail(&app, chain.last().unwrap());
    assert_eq!(deepest["error"]["error_code"], "workflow_depth_exceeded");
    assert!(
        deepest["error"]["message"]
            .as_str()
            .unwrap()
            .contains("depth 9"),
        "{deepest}"
    );
    assert!(step(&deepest, "volley")[0]["child_request_id"].is_null());

    // The webhook of an async top run says so too.
    let r = app.invoke(&json!({
        "deployment": "ping",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let event = receiver.wait_for_requests(1)[0].json();
    assert_eq!(event["event_type"], "workflow.failed", "{event}");
    assert_eq!(
        event["data"]["error"]["error_code"], "workflow_depth_exceeded",
        "{event}"
    );
}

#[test]
fn a_workflow_step_naming_its_own_deployment_is_refused_at_deploy() {
    let app = TestApp::start();
    let r = app.deploy_toml(
        "selfish",
        "key = \"selfish\"\n[[steps]]\nid = \"again\"\ntype = \"workflow\"\ndeployment = \"selfish\"\n",
    );
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "steps.again.deployment", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot start its own deployment"),
        "{body}"
    );

    // Nested in a loop's branch: the field carries the whole path.
    let nested = r#"
key = "sneaky"

[[steps]]
id = "first"
type = "template"
template = "x"

[[steps]]
id = "each"
type = "loop"
for_each = "[1]"

[[steps.steps]]
id = "pick"
type = "branch"

[[steps.steps.cases]]
when = "true"

[[steps.steps.cases.steps]]
id = "again"
type = "workflow"
deployment = "sneaky"
"#;
    let body = app
        .deploy_toml("sneaky", nested)
        .expect_error(422, "validation_error", None);
    assert_eq!(
        body["field"], "steps[1].steps[0].cases[0].steps[0].deployment",
        "{body}"
    );
    // Nothing was deployed.
    app.get("/v1/deployments/selfish", Some(&app.admin_key))
        .expect_status(404);
    app.get("/v1/deployments/sneaky", Some(&app.admin_key))
        .expect_status(404);

    // A bad input template is refused like any other template.
    let body = app
        .deploy_toml(
            "typo",
            "key = \"typo\"\n[[steps]]\nid = \"c\"\ntype = \"workflow\"\ndeployment = \"greet\"\ninputs = { name = \"{{ oops\" }\n",
        )
        .expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "steps.c.inputs.name", "{body}");
}

#[test]
fn each_loop_pass_starts_its_own_child() {
    let app = TestApp::start();
    app.deploy_ok("greet", GREET);
    app.deploy_ok(
        "many",
        r#"
key = "many"

[[steps]]
id = "each"
type = "loop"
for_each = "['a', 'b', 'c']"
as = "who"
concurrency = 2

[[steps.steps]]
id = "call"
type = "workflow"
deployment = "greet"
inputs = { name = "{{ who }}", n = "{{ loop.index }}" }
"#,
    );
    // `n` renders to text, which `greet` refuses: every pass fails alike, so fix it first.
    let body = app
        .invoke(&json!({"deployment": "many"}))
        .expect_error(502, "step_failed", None);
    assert!(
        body["message"].as_str().unwrap().contains("pass 0"),
        "{body}"
    );

    app.deploy_ok(
        "many",
        r#"
key = "many"

[[steps]]
id = "each"
type = "loop"
for_each = "[['a', 1], ['b', 2], ['c', 3]]"
as = "pair"
concurrency = 2

[[steps.steps]]
id = "call"
type = "workflow"
deployment = "greet"
inputs = { name = "{{ pair[0] }}", n = 7 }
"#,
    );
    let r = app.invoke(&json!({"deployment": "many"}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(
        body["output"],
        json!(["Hello, a x7", "Hello, b x7", "Hello, c x7"]),
        "{body}"
    );
    let parent = request_id(&body);
    let d = detail(&app, &parent);
    let calls = step(&d, "call");
    assert_eq!(calls.len(), 3, "{d}");
    let mut ids: Vec<&str> = calls
        .iter()
        .map(|c| c["child_request_id"].as_str().unwrap())
        .collect();
    for (pass, call) in calls.iter().enumerate() {
        assert_eq!(call["pass"], pass, "{d}");
        assert_eq!(call["parent"], "each");
        assert_eq!(
            detail(&app, ids[pass])["inputs"]["name"],
            ["a", "b", "c"][pass]
        );
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "a child per pass: {d}");
    assert_eq!(children_of(&app, &parent).len(), 3);
}

/// A child held in an `http` step by a gate.
fn held_child(api: &StubServer) -> String {
    format!(
        "key = \"slow\"\n[[steps]]\nid = \"wait\"\ntype = \"http\"\nurl = \"{}/work?rid={{{{ run.request_id }}}}\"\n[output]\ntemplate = \"{{{{ wait.output.v }}}}\"\n",
        api.url()
    )
}

const CALLER: &str = r#"
key = "caller"

[[steps]]
id = "before"
type = "template"
template = "b"

[[steps]]
id = "sub"
type = "workflow"
deployment = "slow"

[output]
template = "{{ before.output }}/{{ sub.output }}"
"#;

#[test]
fn a_crash_while_the_child_runs_resumes_without_a_second_child() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": "done"}))
        })
    };
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start();
    app.deploy_ok("slow", &held_child(&api));
    app.deploy_ok("caller", CALLER);
    let r = app.invoke(&json!({
        "deployment": "caller",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    r.expect_status(202);
    let parent = request_id(&r.json());

    // The child is in its step: the parent waits on it, its trace line naming the child.
    let first = api.wait_for_requests(1);
    let child = wait_for("the parent's waiting line", || {
        let d = detail(&app, &parent);
        let sub = step(&d, "sub");
        let line = sub.first()?;
        (line["status"] == "waiting").then(|| {
            assert_eq!(line["reason"], "child_run", "{d}");
            line["child_request_id"].as_str().unwrap().to_owned()
        })
    });
    assert!(first[0].path.contains(&child), "{:?}", first[0].path);

    app.kill();
    gate.open();
    app.spawn();

    let event = receiver.wait_for_requests(1)[0].json();
    assert_eq!(event["request_id"], parent.as_str(), "{event}");
    assert_eq!(event["event_type"], "workflow.completed", "{event}");
    assert_eq!(event["data"]["output"], "b/done", "{event}");

    // Exactly one child for the step, resumed by recovery, not started again.
    let children = children_of(&app, &parent);
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0]["request_id"], child.as_str());
    assert_eq!(children[0]["run_status"], "completed");
    let d = detail(&app, &parent);
    let sub = step(&d, "sub");
    assert_eq!(sub.len(), 1, "the end line replaced the waiting one: {d}");
    assert_eq!(sub[0]["status"], "completed");
    assert_eq!(sub[0]["child_request_id"], child.as_str());
    assert_eq!(step(&d, "before").len(), 1, "not run again: {d}");
    // The child's step ran again after the restart.
    assert!(api
        .requests()
        .iter()
        .skip(1)
        .all(|r| r.path.contains(&child)));
    assert!(api.requests().len() >= 2);
    let child_detail = detail(&app, &child);
    assert_eq!(
        child_detail["steps"][0]["status"], "interrupted",
        "{child_detail}"
    );
}

#[test]
fn cancelling_a_parent_cancels_its_child() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": "late"}))
        })
    };
    let receiver = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start();
    app.deploy_ok("slow", &held_child(&api));
    app.deploy_ok("caller", CALLER);
    let r = app.invoke(&json!({
        "deployment": "caller",
        "async": {"enabled": true, "callback_url": format!("{}/hook", receiver.url())}
    }));
    let parent = request_id(&r.json());
    api.wait_for_requests(1);
    let child = wait_for("the child", || {
        children_of(&app, &parent)
            .first()
            .map(|c| c["request_id"].as_str().unwrap().to_owned())
    });
    app.post_json(
        &format!("/v1/runs/{parent}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_success();
    wait_for("the child to be cancelled", || {
        (detail(&app, &child)["run_status"] == "cancelled").then_some(())
    });
    gate.open();
    let event = receiver.wait_for_requests(1)[0].json();
    assert_eq!(event["event_type"], "workflow.cancelled", "{event}");
    assert_eq!(detail(&app, &parent)["run_status"], "cancelled");
}

#[test]
fn a_child_needs_no_run_slot_of_its_own() {
    let app = TestApp::builder()
        .config("[runs]\nmax_concurrent = 1\n")
        .start();
    app.deploy_ok("greet", GREET);
    app.deploy_ok("parent", PARENT);
    // The parent holds the only slot while its child runs.
    let r = app.invoke(&json!({"deployment": "parent", "inputs": {"who": "solo"}}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "[Hello, SOLO x3]");
}

#[test]
fn a_parent_that_times_out_cancels_its_child() {
    let gate = Gate::new();
    let api = {
        let gate = gate.clone();
        StubServer::threaded(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": "late"}))
        })
    };
    let app = TestApp::start();
    app.deploy_ok("slow", &held_child(&api));
    app.deploy_ok("caller", &format!("timeout_ms = 300\n{CALLER}"));
    let body = app
        .invoke(&json!({"deployment": "caller"}))
        .expect_error(502, "timeout", None);
    let parent = request_id(&body);
    let d = detail(&app, &parent);
    let child = step(&d, "sub")[0]["child_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the child to be cancelled", || {
        (detail(&app, &child)["run_status"] == "cancelled").then_some(())
    });
    gate.open();
}

#[test]
fn a_retry_after_a_failed_child_starts_a_new_child() {
    // The first call fails (the first child fails), the next one answers.
    let api = StubServer::fails_first(1, 404, "not yet");
    let app = TestApp::start();
    app.deploy_ok(
        "fetch",
        &format!(
            "key = \"fetch\"\n[[steps]]\nid = \"get\"\ntype = \"http\"\nurl = \"{}/thing\"\n",
            api.url()
        ),
    );
    app.deploy_ok(
        "patient",
        "key = \"patient\"\n[[steps]]\nid = \"sub\"\ntype = \"workflow\"\ndeployment = \"fetch\"\nretries = 1\n",
    );
    let r = app.invoke(&json!({"deployment": "patient"}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], "ok", "{body}");
    let parent = request_id(&body);
    let children = children_of(&app, &parent);
    assert_eq!(children.len(), 2, "{children:?}");
    let mut statuses: Vec<&str> = children
        .iter()
        .map(|c| c["run_status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["completed", "failed"], "{children:?}");
    let second = children
        .iter()
        .find(|c| c["run_status"] == "completed")
        .unwrap();
    let d = detail(&app, &parent);
    let sub = step(&d, "sub");
    assert_eq!(sub.len(), 1, "{d}");
    assert_eq!(sub[0]["attempts"], 2, "{d}");
    assert_eq!(sub[0]["child_request_id"], second["request_id"], "{d}");
}

/// A rerun from the step after a `workflow` step takes the child's output over: no second
/// child run starts, and the reused line still names the first child.
#[test]
fn a_rerun_after_a_workflow_step_reuses_its_child() {
    let app = TestApp::start();
    app.deploy_ok("greet", GREET);
    app.deploy_ok(
        "wrapped",
        r#"
key = "wrapped"

[[steps]]
id = "call"
type = "workflow"
deployment = "greet"
inputs = { name = "Ada", n = 1 }

[[steps]]
id = "shout"
type = "template"
template = "{{ call.output | upper }}"
"#,
    );
    let r = app.invoke(&json!({"deployment": "wrapped"}));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "HELLO, ADA X1");
    let first = request_id(&r.json());
    let children = |app: &TestApp| {
        app.admin_get("/v1/runs?source=workflow").json()["runs"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    assert_eq!(children(&app), 1);
    let child = detail(&app, &first)["steps"][0]["child_request_id"].clone();
    assert!(child.is_string(), "{child}");

    let r = app.post_json(
        &format!("/v1/runs/{first}/rerun"),
        Some(&app.admin_key),
        &json!({"from_step": "shout", "wait": true}),
    );
    r.expect_status(200);
    assert_eq!(r.json()["output"], "HELLO, ADA X1");
    let rerun = detail(&app, &request_id(&r.json()));
    assert_eq!(rerun["steps"][0]["status"], "reused", "{rerun:#}");
    assert_eq!(rerun["steps"][0]["child_request_id"], child, "{rerun:#}");
    assert_eq!(children(&app), 1, "no second child run");

    // From the workflow step itself, a new child runs.
    let r = app.post_json(
        &format!("/v1/runs/{first}/rerun"),
        Some(&app.admin_key),
        &json!({"from_step": "call", "wait": true}),
    );
    r.expect_status(200);
    assert_eq!(children(&app), 2);
}
