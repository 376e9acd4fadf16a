//! SPEC §12 flow control: per-deployment concurrency keys (`[concurrency] key`, `limit`),
//! per-provider limits (`max_concurrent`, `requests_per_minute`) that make a prompt step wait
//! with reason `provider_capacity` instead of failing, and `priority` on invoke. Counts are
//! taken where the requests arrive (a stand-in server), not from the daemon's own reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::*;

fn detail(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get(&format!("/v1/runs/{id}"));
    r.expect_status(200);
    r.json()
}

fn status(app: &TestApp, id: &str) -> String {
    detail(app, id)["run_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn run_count(app: &TestApp) -> usize {
    let r = app.admin_get("/v1/runs?limit=200");
    r.expect_status(200);
    r.json()["runs"].as_array().expect("runs array").len()
}

/// Invokes asynchronously (the result goes to `hooks`) and returns the request id.
fn invoke_async(app: &TestApp, mut body: Value, hooks: &StubServer) -> String {
    body["async"] = json!({"enabled": true, "callback_url": format!("{}/hook", hooks.url())});
    let r = app.invoke(&body);
    r.expect_status(202);
    r.json()["request_id"].as_str().unwrap().to_owned()
}

fn wait_completed(app: &TestApp, ids: &[String]) {
    for id in ids {
        wait_for(&format!("{id} to complete"), || {
            let run = detail(app, id);
            assert!(
                !matches!(run["run_status"].as_str(), Some("failed" | "cancelled")),
                "{run:#}"
            );
            (run["run_status"] == "completed").then_some(())
        });
    }
}

/// Requests in flight now, and the most ever seen at once, per label.
type Counts = (HashMap<String, usize>, HashMap<String, usize>);

/// Counts requests in flight at a stand-in, per label, and the most ever seen at once.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<Counts>>);

impl InFlight {
    fn enter(&self, label: &str) {
        let mut guard = self.0.lock().unwrap();
        let (now, peak) = &mut *guard;
        let n = now.entry(label.to_owned()).or_default();
        *n += 1;
        let n = *n;
        let p = peak.entry(label.to_owned()).or_default();
        *p = (*p).max(n);
    }

    /// Called before the reply is written: the daemon cannot see the reply before this.
    fn leave(&self, label: &str) {
        *self.0.lock().unwrap().0.get_mut(label).unwrap() -= 1;
    }

    fn now(&self, label: &str) -> usize {
        self.0.lock().unwrap().0.get(label).copied().unwrap_or(0)
    }

    fn peak(&self, label: &str) -> usize {
        self.0.lock().unwrap().1.get(label).copied().unwrap_or(0)
    }
}

fn query_value(path: &str, name: &str) -> String {
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

const PER_CUSTOMER: &str = r#"key = "per_customer"

[concurrency]
key = "{{ metadata.customer }}"
limit = 1

[[inputs]]
name = "customer"
type = "text"

[[steps]]
id = "work"
type = "http"
url = "STUB/work?customer={{ customer }}"
"#;

#[test]
fn one_customers_runs_go_one_at_a_time_while_another_customers_run_alongside() {
    let gate = Gate::new();
    let in_flight = InFlight::default();
    let stub = {
        let (gate, in_flight) = (gate.clone(), in_flight.clone());
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/work") {
                let customer = query_value(&req.path, "customer");
                in_flight.enter(&customer);
                gate.wait();
                in_flight.leave(&customer);
            }
            StubReply::json(200, &json!({"ok": true}))
        })
    };
    let app = TestApp::start_with("[runs]\nmax_concurrent = 8\n", &[], &[]);
    app.deploy_ok("per_customer", &PER_CUSTOMER.replace("STUB", &stub.url()));
    let mut ids: HashMap<&str, Vec<String>> = HashMap::new();
    for _ in 0..3 {
        for customer in ["A", "B"] {
            let id = invoke_async(
                &app,
                json!({"deployment": "per_customer", "inputs": {"customer": customer},
                       "metadata": {"customer": customer}}),
                &stub,
            );
            ids.entry(customer).or_default().push(id);
        }
    }
    // A's first run and B's first run are at the stand-in together; the rest wait queued
    // although six slots are free.
    wait_for("one run of each customer in flight", || {
        (in_flight.now("A") == 1 && in_flight.now("B") == 1).then_some(())
    });
    for customer in ["A", "B"] {
        let states: Vec<String> = ids[customer].iter().map(|id| status(&app, id)).collect();
        assert_eq!(
            states.iter().filter(|s| *s == "running").count(),
            1,
            "customer {customer}: {states:?}"
        );
        assert_eq!(
            states.iter().filter(|s| *s == "queued").count(),
            2,
            "customer {customer}: {states:?}"
        );
        let first = detail(&app, &ids[customer][0]);
        assert_eq!(first["concurrency_key"], customer, "{first:#}");
        assert_eq!(first["priority"], 5, "the default priority: {first:#}");
        let out = app.cli(&["runs", "show", &ids[customer][0]]);
        assert!(out.status.success(), "{}", describe(&out));
        let (shown, _) = out_text(&out);
        assert!(
            shown.contains(&format!("priority 5 · concurrency key {customer}")),
            "{shown}"
        );
    }
    assert_eq!(
        stub.requests()
            .iter()
            .filter(|r| r.path.starts_with("/work"))
            .count(),
        2
    );
    // A sync caller cannot wait in the queue: A's key is at its limit.
    let before = run_count(&app);
    let r = app.invoke(
        &json!({"deployment": "per_customer", "inputs": {"customer": "A"},
                               "metadata": {"customer": "A"}}),
    );
    r.expect_error(429, "concurrency_limit", None);
    assert_eq!(
        run_count(&app),
        before,
        "nothing stored for the refused call"
    );

    gate.open();
    let all: Vec<String> = ids.values().flatten().cloned().collect();
    wait_completed(&app, &all);
    for customer in ["A", "B"] {
        assert_eq!(
            in_flight.peak(customer),
            1,
            "customer {customer}'s runs never overlapped at the stand-in"
        );
    }
    assert_eq!(
        stub.requests()
            .iter()
            .filter(|r| r.path.starts_with("/work"))
            .count(),
        6
    );
}

fn provider_config(stub: &StubServer, limits: &str) -> String {
    format!(
        "[runs]\nmax_concurrent = 16\n[providers.stub]\nbase_url = \"{}/v1\"\n{limits}\n",
        stub.url()
    )
}

const ASK: &str = r#"key = "ask"

[[steps]]
id = "ask"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Say hi"
"#;

/// The `ask` step's trace lines.
fn ask_lines(run: &Value) -> Vec<Value> {
    run["steps"]
        .as_array()
        .map(|steps| steps.iter().filter(|s| s["id"] == "ask").cloned().collect())
        .unwrap_or_default()
}

/// Waits until one of `ids` shows its prompt step waiting for provider capacity; returns it.
fn wait_for_capacity_wait(app: &TestApp, ids: &[String]) -> String {
    wait_for("a prompt step waiting for provider capacity", || {
        ids.iter().find_map(|id| {
            let run = detail(app, id);
            ask_lines(&run)
                .iter()
                .any(|l| l["status"] == "waiting" && l["reason"] == "provider_capacity")
                .then(|| id.clone())
        })
    })
}

#[test]
fn a_provider_limited_to_two_never_has_a_third_request_in_flight() {
    let gate = Gate::new();
    let in_flight = InFlight::default();
    let stub = {
        let (gate, in_flight) = (gate.clone(), in_flight.clone());
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/v1/chat/completions") {
                in_flight.enter("stub");
                gate.wait();
                in_flight.leave("stub");
                return StubReply::json(200, &chat_completion("hi"));
            }
            StubReply::json(200, &json!({}))
        })
    };
    let app = TestApp::start_with(&provider_config(&stub, "max_concurrent = 2"), &[], &[]);
    app.deploy_ok("ask", ASK);
    let ids: Vec<String> = (0..5)
        .map(|_| invoke_async(&app, json!({"deployment": "ask"}), &stub))
        .collect();
    wait_for("two requests in flight", || {
        (in_flight.now("stub") == 2).then_some(())
    });
    let waiting = wait_for_capacity_wait(&app, &ids);
    // The run is running (it holds its run slot), its step waits rather than failing.
    let run = detail(&app, &waiting);
    assert_eq!(run["run_status"], "running", "{run:#}");
    assert_eq!(in_flight.now("stub"), 2);

    gate.open();
    wait_completed(&app, &ids);
    assert_eq!(in_flight.peak("stub"), 2, "at most two requests at once");
    // The step that waited ended like any other: its end line replaced the waiting one.
    let lines = ask_lines(&detail(&app, &waiting));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["status"], "completed", "{lines:#?}");
    assert_eq!(
        stub.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/chat/completions"))
            .count(),
        5
    );
}

#[test]
fn a_third_request_within_the_minute_waits_for_requests_per_minute() {
    let stub = StubServer::openai("hi");
    let app = TestApp::start_with(&provider_config(&stub, "requests_per_minute = 2"), &[], &[]);
    app.deploy_ok("ask", ASK);
    let ids: Vec<String> = (0..3)
        .map(|_| invoke_async(&app, json!({"deployment": "ask"}), &stub))
        .collect();
    let waiting = wait_for_capacity_wait(&app, &ids);
    let others: Vec<String> = ids.iter().filter(|id| **id != waiting).cloned().collect();
    wait_completed(&app, &others);
    let run = detail(&app, &waiting);
    assert_eq!(run["run_status"], "running", "{run:#}");
    assert_eq!(
        stub.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/chat/completions"))
            .count(),
        2,
        "only two requests went out this minute"
    );
    app.post_json(
        &format!("/v1/runs/{waiting}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_success();
    assert_cancelled_while_waiting(&app, &waiting);
}

#[test]
fn a_spent_token_budget_holds_the_next_request() {
    // Each reply reports 18 tokens: the first request spends a budget of 10 a minute.
    let stub = StubServer::openai("hi");
    let app = TestApp::start_with(&provider_config(&stub, "tokens_per_minute = 10"), &[], &[]);
    app.deploy_ok("ask", ASK);
    let first = invoke_async(&app, json!({"deployment": "ask"}), &stub);
    wait_completed(&app, std::slice::from_ref(&first));
    let second = invoke_async(&app, json!({"deployment": "ask"}), &stub);
    assert_eq!(
        wait_for_capacity_wait(&app, std::slice::from_ref(&second)),
        second
    );
    assert_eq!(
        stub.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/chat/completions"))
            .count(),
        1
    );
    app.post_json(
        &format!("/v1/runs/{second}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_success();
    assert_cancelled_while_waiting(&app, &second);
}

/// A run cancelled while its prompt step waited: the step's line ends as failed, saying so,
/// instead of staying `waiting`.
fn assert_cancelled_while_waiting(app: &TestApp, id: &str) {
    let run = wait_for("the cancelled run's trace", || {
        let run = detail(app, id);
        let lines = ask_lines(&run);
        (run["run_status"] == "cancelled" && lines.iter().all(|l| l["status"] != "waiting"))
            .then_some(run)
    });
    let lines = ask_lines(&run);
    assert_eq!(lines.len(), 1, "{run:#}");
    assert_eq!(lines[0]["status"], "failed", "{run:#}");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("provider capacity"),
        "{run:#}"
    );
}

const WORK: &str = r#"key = "work"

[[inputs]]
name = "p"
type = "number"

[[steps]]
id = "call"
type = "http"
url = "STUB/work?p={{ p }}"
"#;

const BLOCKER: &str = r#"key = "blocker"

[[steps]]
id = "call"
type = "http"
url = "STUB/block"
"#;

#[test]
fn queued_runs_start_highest_priority_first() {
    let gate = Gate::new();
    let stub = {
        let gate = gate.clone();
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/block") {
                gate.wait();
            }
            StubReply::json(200, &json!({"ok": true}))
        })
    };
    let app = TestApp::start_with("[runs]\nmax_concurrent = 1\n", &[], &[]);
    app.deploy_ok("blocker", &BLOCKER.replace("STUB", &stub.url()));
    app.deploy_ok("work", &WORK.replace("STUB", &stub.url()));
    let blocker = invoke_async(&app, json!({"deployment": "blocker"}), &stub);
    wait_for("the blocker at the stand-in", || {
        stub.requests()
            .iter()
            .any(|r| r.path.starts_with("/block"))
            .then_some(())
    });
    let mut ids = Vec::new();
    for p in [1, 9, 5] {
        let id = invoke_async(
            &app,
            json!({"deployment": "work", "inputs": {"p": p}, "priority": p}),
            &stub,
        );
        let run = detail(&app, &id);
        assert_eq!(run["run_status"], "queued", "{run:#}");
        assert_eq!(run["priority"], p, "{run:#}");
        ids.push(id);
    }
    gate.open();
    ids.push(blocker);
    wait_completed(&app, &ids);
    let order: Vec<String> = stub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/work"))
        .map(|r| query_value(&r.path, "p"))
        .collect();
    assert_eq!(order, ["9", "5", "1"]);
}

#[test]
fn a_key_that_does_not_render_and_a_bad_priority_are_refused_and_store_nothing() {
    let stub = StubServer::json(json!({"ok": true}));
    let app = TestApp::start();
    app.deploy_ok("per_customer", &PER_CUSTOMER.replace("STUB", &stub.url()));
    let before = run_count(&app);

    // No `metadata.customer`: the key renders empty, which groups nothing.
    let r = app.invoke(&json!({"deployment": "per_customer", "inputs": {"customer": "A"}}));
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "concurrency.key", "{body}");
    // A filter that fails on this value.
    let broken = PER_CUSTOMER
        .replace("key = \"per_customer\"", "key = \"broken\"")
        .replace(
            "{{ metadata.customer }}",
            "{{ metadata.customer | int + [] }}",
        )
        .replace("STUB", &stub.url());
    app.deploy_ok("broken", &broken);
    let r = app.invoke(&json!({"deployment": "broken", "inputs": {"customer": "A"},
                               "metadata": {"customer": "A"}}));
    let body = r.expect_error(422, "validation_error", None);
    assert_eq!(body["field"], "concurrency.key", "{body}");

    for priority in [json!(10), json!(-1), json!("high"), json!(2.5), json!(true)] {
        let r = app.invoke(
            &json!({"deployment": "per_customer", "inputs": {"customer": "A"},
                                   "metadata": {"customer": "A"}, "priority": priority}),
        );
        let body = r.expect_error(422, "validation_error", None);
        assert_eq!(body["field"], "priority", "priority {priority}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("0 to 9"),
            "{body}"
        );
    }
    assert_eq!(run_count(&app), before, "nothing was stored");

    // At deploy: a key template that does not parse, a limit of 0, an unknown field.
    for (bad, field) in [
        (
            PER_CUSTOMER.replace("{{ metadata.customer }}", "{{ metadata.customer "),
            "concurrency.key",
        ),
        (
            PER_CUSTOMER.replace("limit = 1", "limit = 0"),
            "concurrency.limit",
        ),
        (
            PER_CUSTOMER.replace("limit = 1", "limit = 1\nlimt = 2"),
            "concurrency.limt",
        ),
    ] {
        let r = app.deploy_toml("per_customer", &bad);
        let body = r.json();
        assert!(!r.is_success(), "{r}");
        assert_eq!(body["field"], field, "{body}");
    }
    // The invoke that is right still runs.
    let r = app.invoke(
        &json!({"deployment": "per_customer", "inputs": {"customer": "A"},
                               "metadata": {"customer": "A"}, "priority": 9}),
    );
    r.expect_status(200);
}

#[test]
fn a_restart_keeps_the_queue_order_by_priority() {
    let gate = Gate::new();
    let stub = {
        let gate = gate.clone();
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/block") {
                gate.wait();
            }
            StubReply::json(200, &json!({"ok": true}))
        })
    };
    let mut app = TestApp::start_with("[runs]\nmax_concurrent = 1\n", &[], &[]);
    app.deploy_ok("blocker", &BLOCKER.replace("STUB", &stub.url()));
    app.deploy_ok("work", &WORK.replace("STUB", &stub.url()));
    let blocker = invoke_async(&app, json!({"deployment": "blocker"}), &stub);
    wait_for("the blocker at the stand-in", || {
        stub.requests()
            .iter()
            .any(|r| r.path.starts_with("/block"))
            .then_some(())
    });
    let mut ids = Vec::new();
    for p in [2, 8, 0, 4] {
        ids.push(invoke_async(
            &app,
            json!({"deployment": "work", "inputs": {"p": p}, "priority": p}),
            &stub,
        ));
    }
    app.kill();
    gate.open();
    app.spawn();
    ids.push(blocker);
    wait_completed(&app, &ids);
    let order: Vec<String> = stub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/work"))
        .map(|r| query_value(&r.path, "p"))
        .collect();
    assert_eq!(order, ["8", "4", "2", "0"]);
}

#[test]
fn a_step_cut_off_while_it_waited_for_capacity_is_marked_interrupted_and_runs_again() {
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
    let mut app = TestApp::start_with(&provider_config(&stub, "max_concurrent = 1"), &[], &[]);
    app.deploy_ok("ask", ASK);
    let ids: Vec<String> = (0..2)
        .map(|_| invoke_async(&app, json!({"deployment": "ask"}), &stub))
        .collect();
    let waiting = wait_for_capacity_wait(&app, &ids);
    app.kill();
    gate.open();
    app.spawn();
    wait_completed(&app, &ids);
    let lines = ask_lines(&detail(&app, &waiting));
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.len(), 2, "{lines:#?}");
    assert!(statuses.contains(&"interrupted"), "{lines:#?}");
    assert!(statuses.contains(&"completed"), "{lines:#?}");
}

#[test]
fn a_nested_prompt_step_cut_off_while_waiting_is_marked_interrupted_too() {
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
    let mut app = TestApp::start_with(&provider_config(&stub, "max_concurrent = 1"), &[], &[]);
    app.deploy_ok(
        "many",
        r#"key = "many"

[[steps]]
id = "each"
type = "loop"
for_each = "[1, 2]"
concurrency = 2

[[steps.steps]]
id = "ask"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Say hi {{ item }}"
"#,
    );
    let id = invoke_async(&app, json!({"deployment": "many"}), &stub);
    wait_for_capacity_wait(&app, std::slice::from_ref(&id));
    app.kill();
    gate.open();
    app.spawn();
    wait_completed(&app, std::slice::from_ref(&id));
    let run = detail(&app, &id);
    let lines = ask_lines(&run);
    assert!(
        lines.iter().all(|l| l["status"] != "waiting"),
        "no line stays waiting: {run:#}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == "interrupted" && l["parent"] == "each"),
        "{run:#}"
    );
    assert_eq!(
        lines.iter().filter(|l| l["status"] == "completed").count(),
        2,
        "both passes ran: {run:#}"
    );
}
