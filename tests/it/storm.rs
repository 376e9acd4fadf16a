//! Issue 7 item 2, crash storms: a client keeps invoking an async deployment while the daemon
//! is killed with `kill -9` (SIGKILL) at pseudo-random moments and restarted on the same data
//! dir each time. At the end every invoke that got a `202` must have reached the receiver
//! (lost = 0), every delivery must carry valid signatures (`X-Fetch-Hive-Signature` and
//! Standard Webhooks), and a repeated delivery must repeat the event id and body.
//!
//! Only outcomes are asserted, never how long anything took. The figures (kills, accepted,
//! delivered, duplicates) are printed; see them with `--nocapture`.
//!
//! Knobs (environment variables):
//! - `STORM_KILLS` (default 5, at least 5): how many times the daemon is killed;
//! - `STORM_SECONDS` (default 0): keep the storm going at least this long, even after the
//!   kills above;
//! - `STORM_SEED` (default fixed): the seed of the pseudo-random kill moments.
//!
//! The long storm (a benchmark, on demand):
//! `STORM_KILLS=30 cargo test --release --test it storm -- --nocapture`

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::support::*;

/// Short retries so a delivery cut off by a kill is sent again soon after the restart.
const CONFIG: &str = r#"
[delivery]
retry_schedule = ["100ms", "100ms", "200ms", "500ms", "1s", "1s", "1s", "1s"]
jitter = 0.0
attempt_timeout = "10s"
"#;

/// A run that takes a little while, so kills find runs in every state.
const WORKFLOW: &str = r#"
key = "storm"

[[inputs]]
name = "name"
type = "text"
required = true

[[steps]]
id = "pause"
type = "delay"
ms = 20

[[steps]]
id = "greet"
type = "template"
template = "Hello, {{ name }}."

[output]
template = "{{ greet.output }}"
"#;

/// How long the final drain may go without a single new delivery before the test gives up
/// (a failure bound, not a timing assertion: a long release-mode storm leaves tens of
/// thousands of runs to deliver, so the bound is on a stall, not on the whole drain).
const DRAIN_STALL: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        Err(_) => default,
    }
}

/// The request id a delivery is for.
fn request_id_of(d: &Recorded) -> String {
    d.header("X-Fetch-Hive-Request-Id")
        .unwrap_or_default()
        .to_string()
}

/// The load: one thread invoking `storm` asynchronously, back to back, against whatever
/// address the daemon has now. Connection errors (daemon down, killed mid-request) and
/// non-202 answers are counted, never accepted.
struct Load {
    base_url: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
    transport_errors: Arc<AtomicUsize>,
    other_statuses: Arc<Mutex<HashMap<u16, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(base_url: &str, admin_key: &str, callback: &str) -> Load {
        let base = Arc::new(Mutex::new(base_url.to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let transport_errors = Arc::new(AtomicUsize::new(0));
        let other_statuses = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let (base, stop, accepted) = (base.clone(), stop.clone(), accepted.clone());
            let (transport_errors, other_statuses) =
                (transport_errors.clone(), other_statuses.clone());
            let auth = format!("Bearer {admin_key}");
            let callback = callback.to_string();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let body = json!({
                        "deployment": "storm",
                        "inputs": {"name": format!("n{n}")},
                        "async": {"enabled": true, "callback_url": callback},
                    })
                    .to_string();
                    let url = format!("{}/v1/workflow/invoke", base.lock().unwrap());
                    let result = try_send(
                        "POST",
                        &url,
                        &[
                            ("Authorization", &auth),
                            ("Content-Type", "application/json"),
                        ],
                        Some(body.as_bytes()),
                    );
                    match result {
                        Ok(r) if r.status == 202 => {
                            let id = r.json()["request_id"]
                                .as_str()
                                .unwrap_or_else(|| panic!("202 without request_id: {r}"))
                                .to_string();
                            assert!(is_request_id(&id), "{r}");
                            accepted.lock().unwrap().push(id);
                        }
                        Ok(r) => {
                            *other_statuses.lock().unwrap().entry(r.status).or_default() += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => {
                            transport_errors.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        };
        Load {
            base_url: base,
            stop,
            accepted,
            transport_errors,
            other_statuses,
            thread: Some(thread),
        }
    }

    fn accepted_count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    fn point_at(&self, base_url: &str) {
        *self.base_url.lock().unwrap() = base_url.to_string();
    }

    /// Stops the client and returns the accepted request ids.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn kill_9_storm_under_async_load_loses_no_accepted_run() {
    let kills_wanted = env_u64("STORM_KILLS", 5).max(5);
    let min_storm = Duration::from_secs(env_u64("STORM_SECONDS", 0));
    let seed = env_u64("STORM_SEED", 0x5707_3ee7);
    let mut rng = StdRng::seed_from_u64(seed);

    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let callback = format!("{}/hook", receiver.url());
    let mut app = TestApp::start_with(CONFIG, &[], &[]);
    app.deploy_ok("storm", WORKFLOW);
    let secret = signing_secret(&app, "storm");

    let load = Load::start(&app.base_url, &app.admin_key, &callback);
    let storm_start = Instant::now();
    let mut kills = 0u64;
    let mut accepted_before_kill = Vec::new();
    while kills < kills_wanted || storm_start.elapsed() < min_storm {
        let pause = rng.gen_range(150..=600);
        // Make sure the load reached this daemon before it dies (not a timing assertion:
        // the storm only means something if runs are accepted between kills).
        let floor = load.accepted_count();
        wait_for(
            "the load to get an invoke accepted by the new daemon",
            || (load.accepted_count() > floor).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(pause));
        accepted_before_kill.push(load.accepted_count());
        app.kill();
        kills += 1;
        app.spawn();
        load.point_at(&app.base_url);
    }
    // A little load on the last daemon, then stop and drain.
    let floor = load.accepted_count();
    wait_for("the load to reach the last daemon", || {
        (load.accepted_count() > floor).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let transport_errors = load.transport_errors.load(Ordering::SeqCst);
    let other_statuses = load.other_statuses.lock().unwrap().clone();
    let accepted = load.finish();
    let storm_time = storm_start.elapsed();

    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    assert_eq!(
        accepted_set.len(),
        accepted.len(),
        "two 202s carried the same request_id"
    );
    let drain_start = Instant::now();
    let (mut progress_at, mut seen) = (Instant::now(), 0usize);
    loop {
        let received = receiver.requests();
        if received.len() > seen {
            (progress_at, seen) = (Instant::now(), received.len());
        }
        let delivered: HashSet<String> = received.iter().map(request_id_of).collect();
        let missing: Vec<&str> = accepted_set
            .iter()
            .filter(|id| !delivered.contains(**id))
            .copied()
            .collect();
        if missing.is_empty() {
            break;
        }
        if progress_at.elapsed() > DRAIN_STALL {
            let details: Vec<String> = missing
                .iter()
                .take(5)
                .map(|id| format!("{id}: {}", app.admin_get(&format!("/v1/runs/{id}"))))
                .collect();
            panic!(
                "{} of {} accepted runs never reached the receiver (lost) after {kills} kills \
                 (no delivery for {DRAIN_STALL:?}); first ones:\n{}",
                missing.len(),
                accepted.len(),
                details.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every delivery: correctly signed, the run's event, and a repeat repeats the event.
    let deliveries = receiver.requests();
    let mut first_of: HashMap<String, &Recorded> = HashMap::new();
    let mut duplicates = 0usize;
    let mut unacknowledged = HashSet::new();
    for d in &deliveries {
        let id = request_id_of(d);
        assert!(is_request_id(&id), "a delivery without a request id: {d:?}");
        if let Some(problem) = signature_problem(&secret, d) {
            panic!("delivery for {id}: {problem}\nheaders: {:?}", d.headers);
        }
        let event = d.json();
        assert_eq!(event["request_id"], id.as_str(), "{event}");
        assert_eq!(event["event_type"], "workflow.completed", "{event}");
        if !accepted_set.contains(id.as_str()) {
            // Its invoke was cut off by a kill before the 202 reached the client.
            unacknowledged.insert(id.clone());
        }
        match first_of.get(&id) {
            None => {
                first_of.insert(id, d);
            }
            Some(first) => {
                duplicates += 1;
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
    // The daemon's own records agree, for a sample spread over the whole storm.
    let step = (accepted.len() / 20).max(1);
    for id in accepted.iter().step_by(step) {
        wait_for(&format!("{id} recorded as completed and delivered"), || {
            let r = app.admin_get(&format!("/v1/runs/{id}"));
            r.expect_status(200);
            let run = r.json();
            assert_ne!(run["async"]["delivery_state"], "failed", "{run:#}");
            (run["run_status"] == "completed" && run["async"]["delivery_state"] == "delivered")
                .then_some(())
        });
    }
    let delivered_ids = first_of.len();
    let lost = accepted_set
        .iter()
        .filter(|id| !first_of.contains_key(**id))
        .count();
    eprintln!(
        "crash storm (seed {seed:#x}): {kills} kills survived in {storm_time:.1?}; \
         accepted {} runs (202), delivered {delivered_ids} distinct request ids in {} \
         deliveries; lost {lost}; duplicates {duplicates}; delivered without a 202 \
         (invoke cut off by a kill) {}; client transport errors {transport_errors}, \
         other statuses {other_statuses:?}; accepted count at each kill {accepted_before_kill:?}; \
         drain took {:.1?}",
        accepted.len(),
        deliveries.len(),
        unacknowledged.len(),
        drain_start.elapsed(),
    );
    assert_eq!(lost, 0);
    assert!(kills >= 5);
}
