//! SPEC §3 "a crash can repeat an attempt, never lose an event" and §9 (SIGTERM drains;
//! runs left `running` are re-queued with their trace kept). Over a hundred async runs are in
//! every state at once — finished and delivered, delivery in flight, delivery waiting,
//! running, queued — when the daemon is killed or stopped; after a restart on the same data
//! dir, every accepted `request_id` must reach the receiver, correctly signed.
//!
//! Runs are held inside an `http` step and deliveries inside the receiver by gates, so the
//! state at the kill is exact and nothing depends on timing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Runs to have in flight.
const RUNS: usize = 120;
/// Runs whose API call is answered at once; the next ones hang in their step.
const FREE_CALLS: usize = 40;
/// Deliveries answered at once; the next ones hang until the gate opens.
const FREE_DELIVERIES: usize = 20;
/// `runs.max_concurrent`.
const SLOTS: usize = 8;
/// Default `delivery.per_host_concurrency`.
const PER_HOST: usize = 16;

/// Waiting for over a hundred runs and deliveries on a 2-core machine may take longer than
/// the harness's usual deadline.
const LONG_DEADLINE: Duration = Duration::from_secs(60);

fn wait_long<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() <= LONG_DEADLINE,
            "timed out after {LONG_DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CONFIG: &str = r#"
[runs]
max_concurrent = 8
shutdown_grace = "20s"

[delivery]
retry_schedule = ["100ms", "100ms", "100ms", "100ms", "100ms"]
jitter = 0.0
attempt_timeout = "300s" # held deliveries must not time out on a busy CI machine
"#;

/// A short delay, then a call to `api` that carries the run's id.
fn workflow(api: &StubServer) -> String {
    r#"
key = "busy"

[[steps]]
id = "pause"
type = "delay"
ms = 20

[[steps]]
id = "call"
type = "http"
method = "GET"
url = "STUB/work?rid={{ run.request_id }}"

[output]
template = "{{ call.output.v }}"
"#
    .replace("STUB", &api.url())
}

/// The run id an API call carries.
fn rid(r: &Recorded) -> String {
    r.path.split("rid=").nth(1).unwrap_or_default().to_string()
}

/// The stub API (calls after the first `FREE_CALLS` hang on `gate`) and the receiver
/// (deliveries after the first `FREE_DELIVERIES` hang on `gate`).
struct World {
    gate: Gate,
    api: StubServer,
    receiver: StubServer,
}

impl World {
    fn new() -> World {
        let gate = Gate::new();
        let api = {
            let gate = gate.clone();
            StubServer::threaded(move |_, n| {
                if n >= FREE_CALLS {
                    gate.wait();
                }
                StubReply::json(200, &json!({"v": "done"}))
            })
        };
        let receiver = {
            let gate = gate.clone();
            StubServer::threaded(move |_, n| {
                if n >= FREE_DELIVERIES {
                    gate.wait();
                }
                StubReply::text(200, "ok")
            })
        };
        World {
            gate,
            api,
            receiver,
        }
    }

    fn callback(&self) -> String {
        format!("{}/hook", self.receiver.url())
    }

    fn invoke_body(&self) -> Value {
        json!({"deployment": "busy", "async": {"enabled": true, "callback_url": self.callback()}})
    }

    /// The moment to strike: the free runs ended, `SLOTS` runs hang in their step (the rest
    /// queue), the free deliveries were answered and `PER_HOST` more hang in flight.
    fn wait_until_loaded(&self) {
        wait_long("runs and deliveries in flight", || {
            (self.api.requests().len() >= FREE_CALLS + SLOTS
                && self.receiver.requests().len() >= FREE_DELIVERIES + PER_HOST)
                .then_some(())
        });
    }

    /// Request ids among the deliveries, with how often each arrived.
    fn delivered_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for d in self.receiver.requests() {
            let id = d
                .header("X-Fetch-Hive-Request-Id")
                .unwrap_or_default()
                .to_string();
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    /// Calls to the API per run id.
    fn call_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.api.requests() {
            *counts.entry(rid(&r)).or_default() += 1;
        }
        counts
    }
}

/// Every run of `busy` as `GET /v1/runs` lists it, following `next_cursor` (a loaded
/// machine may accept over 200 before the daemon refuses).
fn listed_runs(app: &TestApp) -> Vec<Value> {
    let mut runs = Vec::new();
    let mut query = "/v1/runs?deployment=busy&limit=200".to_string();
    loop {
        let r = app.admin_get(&query);
        r.expect_status(200);
        let body = r.json();
        runs.extend(body["runs"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("/v1/runs?deployment=busy&limit=200&cursor={cursor}"),
            None => return runs,
        }
    }
}

fn count_status(runs: &[Value], status: &str) -> usize {
    runs.iter().filter(|r| r["run_status"] == status).count()
}

/// After the restart: every accepted run reaches the receiver, `GET /v1/runs` shows each
/// `completed` and `delivered`, and every delivery that arrived is correctly signed, carries
/// the run's event, and repeats (if at all) the same event id and body bytes.
fn assert_all_delivered(app: &TestApp, world: &World, accepted: &[String]) {
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    wait_long("every accepted run at the receiver", || {
        let got = world.delivered_counts();
        accepted.iter().all(|id| got.contains_key(id)).then_some(())
    });
    let runs = wait_long("every run completed and delivered", || {
        let runs = listed_runs(app);
        let done = runs.len() == accepted.len()
            && runs
                .iter()
                .all(|r| r["run_status"] == "completed" && r["delivery_state"] == "delivered");
        done.then_some(runs)
    });
    let listed: HashSet<String> = runs
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        listed,
        accepted.iter().cloned().collect::<HashSet<_>>(),
        "GET /v1/runs lists exactly the accepted runs"
    );

    let secret = signing_secret(app, "busy");
    let mut first_of: HashMap<String, Recorded> = HashMap::new();
    for d in world.receiver.requests() {
        let id = d
            .header("X-Fetch-Hive-Request-Id")
            .unwrap_or_default()
            .to_string();
        assert!(
            accepted_set.contains(&id),
            "a delivery for a run nobody accepted: {id}"
        );
        if let Some(problem) = signature_problem(&secret, &d) {
            panic!("delivery for {id}: {problem}");
        }
        let event = d.json();
        assert_eq!(event["request_id"], id.as_str(), "{event}");
        assert_eq!(event["event_type"], "workflow.completed", "{event}");
        assert_eq!(event["data"]["output"], "done", "{event}");
        match first_of.get(&id) {
            None => {
                first_of.insert(id, d);
            }
            Some(first) => {
                assert_eq!(
                    d.header("webhook-id"),
                    first.header("webhook-id"),
                    "a repeated delivery keeps the event id ({id})"
                );
                assert_eq!(
                    d.body, first.body,
                    "a repeated delivery keeps the body bytes ({id})"
                );
            }
        }
    }
}

#[test]
fn kill_9_with_over_a_hundred_runs_in_flight_loses_nothing() {
    let world = World::new();
    let mut app = TestApp::start_with(CONFIG, &[], &[]);
    app.deploy_ok("busy", &workflow(&world.api));

    let accepted: Vec<String> = (0..RUNS)
        .map(|_| {
            let r = app.invoke(&world.invoke_body());
            r.expect_status(202);
            r.json()["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    world.wait_until_loaded();
    // Every state at once: the free runs completed, SLOTS runs running, the rest queued.
    let runs = wait_long("the run states to settle", || {
        let runs = listed_runs(&app);
        (count_status(&runs, "completed") == FREE_CALLS).then_some(runs)
    });
    assert_eq!(count_status(&runs, "running"), SLOTS);
    assert_eq!(count_status(&runs, "queued"), RUNS - FREE_CALLS - SLOTS);

    app.kill();
    // What the receiver held when the daemon died: those answers never reached it.
    let held: Vec<String> = world.receiver.requests()[FREE_DELIVERIES..]
        .iter()
        .map(|d| d.header("X-Fetch-Hive-Request-Id").unwrap().to_string())
        .collect();
    let cut_off: Vec<String> = world.api.requests()[FREE_CALLS..].iter().map(rid).collect();
    assert_eq!(held.len(), PER_HOST);
    assert_eq!(cut_off.len(), SLOTS);
    world.gate.open();

    app.spawn();
    assert_all_delivered(&app, &world, &accepted);

    let delivered = world.delivered_counts();
    for id in &held {
        assert!(
            delivered[id] >= 2,
            "{id}'s delivery was cut off by the crash, so it must be sent again"
        );
    }
    let calls = world.call_counts();
    for id in &cut_off {
        assert!(
            calls[id] >= 2,
            "{id} was running at the crash, so its step runs again"
        );
    }
    for id in &accepted {
        assert!(calls.contains_key(id), "{id} never ran its step");
    }
    // Runs that had finished before the crash are not run again.
    let finished_before: Vec<String> = world.api.requests()[..FREE_CALLS].iter().map(rid).collect();
    for id in &finished_before {
        assert_eq!(calls[id], 1, "{id} had completed; it must not run again");
    }
}

#[test]
fn sigterm_under_load_then_restart_delivers_every_accepted_run() {
    let world = World::new();
    let mut app = TestApp::start_with(CONFIG, &[], &[]);
    app.deploy_ok("busy", &workflow(&world.api));

    // A client keeps invoking until the daemon refuses; only 202s count as accepted.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (accepted, sent) = (accepted.clone(), sent.clone());
        let url = app.url("/v1/workflow/invoke");
        let auth = format!("Bearer {}", app.admin_key);
        let body = world.invoke_body().to_string();
        std::thread::spawn(move || -> Result<u16, String> {
            for _ in 0..2000 {
                sent.fetch_add(1, Ordering::SeqCst);
                let r = try_send(
                    "POST",
                    &url,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    Some(body.as_bytes()),
                )?;
                if r.status != 202 {
                    return Ok(r.status);
                }
                let id = r.json()["request_id"].as_str().unwrap().to_string();
                accepted.lock().unwrap().push(id);
            }
            Err("the daemon never refused an invoke".into())
        })
    };
    wait_long("over a hundred runs accepted", || {
        (accepted.lock().unwrap().len() > 100).then_some(())
    });
    world.wait_until_loaded();
    app.terminate();

    let refusal = client.join().unwrap();
    match &refusal {
        Ok(status) => assert_eq!(*status, 503, "an invoke during shutdown gets 503"),
        Err(e) => assert!(
            !e.contains("never refused"),
            "the daemon kept accepting after SIGTERM ({} sent)",
            sent.load(Ordering::SeqCst)
        ),
    }
    // The running runs may finish within the grace period; then the daemon exits.
    world.gate.open();
    let status = app.wait_exit();
    assert!(status.success(), "a graceful stop exits 0, got {status}");

    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > 100);
    app.spawn();
    assert_all_delivered(&app, &world, &accepted);

    // A graceful stop cuts nothing off: each run called the API exactly once.
    let calls = world.call_counts();
    for id in &accepted {
        assert_eq!(
            calls.get(id),
            Some(&1),
            "{id} ran its step {:?} times",
            calls.get(id)
        );
    }
}

/// An API whose first call waits at `gate` (the crash cuts it off); later calls answer.
fn api_holding_first_call(gate: &Gate) -> StubServer {
    let gate = gate.clone();
    StubServer::threaded(move |_, n| {
        if n == 0 {
            gate.wait();
        }
        StubReply::json(200, &json!({"v": "done"}))
    })
}

#[test]
fn a_run_cut_off_by_a_crash_keeps_its_earlier_steps_in_the_trace() {
    let gate = Gate::new();
    let api = api_holding_first_call(&gate);
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start_with(CONFIG, &[], &[]);
    app.deploy_ok(
        "traced",
        &r#"
key = "traced"

[[steps]]
id = "prepare"
type = "template"
template = "ready"

[[steps]]
id = "pause"
type = "delay"
ms = 10

[[steps]]
id = "call"
type = "http"
method = "GET"
url = "STUB/work"

[output]
template = "{{ prepare.output }} {{ call.output.v }}"
"#
        .replace("STUB", &api.url()),
    );
    let id = invoke_async(
        &app,
        json!({"deployment": "traced"}),
        &format!("{}/hook", receiver.url()),
    );
    api.wait_for_requests(1);
    let before = wait_for("the finished steps in the trace", || {
        let detail = run_detail(&app, &id);
        let steps = detail["steps"].as_array().cloned().unwrap_or_default();
        (steps.len() >= 2).then_some(steps)
    });
    assert_eq!(run_detail(&app, &id)["run_status"], "running");
    let ids: Vec<&str> = before.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["prepare", "pause"], "{before:#?}");

    app.kill();
    gate.open();
    app.spawn();

    let detail = wait_delivery(&app, &id, "delivered");
    assert_eq!(detail["run_status"], "completed", "{detail:#}");
    assert_eq!(detail["output"], "ready done", "{detail:#}");
    let after = detail["steps"].as_array().cloned().unwrap_or_default();
    for step in &before {
        assert!(
            after.contains(step),
            "the step record from before the crash must stay as it was: {step:#}\nafter: {after:#?}"
        );
    }
    let call: Vec<&Value> = after.iter().filter(|s| s["id"] == "call").collect();
    assert!(
        call.iter().any(|s| s["status"] == "completed"),
        "the re-run adds the cut-off step's record: {after:#?}"
    );
    for step in ["prepare", "pause"] {
        assert_eq!(
            after.iter().filter(|s| s["id"] == step).count(),
            1,
            "{step} finished before the crash and must not run again: {after:#?}"
        );
    }
    assert_eq!(api.requests().len(), 2, "only the cut-off step runs again");
}

/// SPEC §9 / issue 3 item 8: "runs left `running` are re-queued (the trace keeps the
/// interrupted attempt)". The step that a crash cut off should leave a line in the trace
/// (e.g. status `interrupted`, which the schema allows) beside the line of its re-run.
#[test]
fn the_step_attempt_cut_off_by_a_crash_stays_in_the_trace() {
    let gate = Gate::new();
    let api = api_holding_first_call(&gate);
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let mut app = TestApp::start_with(CONFIG, &[], &[]);
    app.deploy_ok(
        "cut",
        &r#"
key = "cut"

[[steps]]
id = "call"
type = "http"
method = "GET"
url = "STUB/work"

[output]
template = "{{ call.output.v }}"
"#
        .replace("STUB", &api.url()),
    );
    let id = invoke_async(
        &app,
        json!({"deployment": "cut"}),
        &format!("{}/hook", receiver.url()),
    );
    api.wait_for_requests(1);
    app.kill();
    gate.open();
    app.spawn();

    let detail = wait_delivery(&app, &id, "delivered");
    let lines: Vec<Value> = detail["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["id"] == "call")
        .collect();
    assert!(
        lines.iter().any(|s| s["status"] == "completed"),
        "the re-run: {lines:#?}"
    );
    assert!(
        lines.len() >= 2 && lines.iter().any(|s| s["status"] == "interrupted"),
        "GET /v1/runs/{{id}} after the restart should show the cut-off attempt of `call` \
         (status \"interrupted\") as well as its re-run; got only: {lines:#?}"
    );
}
