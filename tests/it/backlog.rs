//! A backlog larger than the delivery schedule's memory window (`delivery.schedule_window`,
//! set tiny here): events wait in the database and are read page by page, a restart reads
//! only the first page, and when the receiver comes back every event arrives exactly once,
//! correctly signed, while the daemon never held more than the window in memory; and one
//! receiver's backlog holds only its quota of the window, so another receiver's events, due
//! after that whole backlog, still go out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;

/// Events held in memory at most.
const WINDOW: usize = 8;
/// Events in the backlog: several windows' worth.
const EVENTS: usize = 60;

/// The value of a metric in the Prometheus text of `/metrics`.
fn metric(app: &TestApp, name: &str) -> f64 {
    let r = app.admin_get("/metrics");
    r.expect_status(200);
    r.text
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{}", r.text))
}

#[test]
fn a_backlog_beyond_the_window_is_paged_and_delivered_once_after_a_restart() {
    // Down: the receiver holds each attempt unanswered (so nothing fails, the breaker stays
    // closed and no retries are used up) and the daemon keeps the rest waiting behind the
    // per-destination limit. Up: it answers 200 and records what it got.
    let up = Arc::new(AtomicBool::new(false));
    let gate = Gate::new();
    let received_up: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let receiver = {
        let (up, gate, received_up) = (up.clone(), gate.clone(), received_up.clone());
        StubServer::threaded(move |req, _| {
            if up.load(Ordering::SeqCst) {
                received_up.lock().unwrap().push(req.clone());
            } else {
                gate.wait();
            }
            StubReply::text(200, "ok")
        })
    };
    let mut app = TestApp::start_with(
        &format!(
            "[delivery]\nschedule_window = {WINDOW}\nper_host_concurrency = 2\n\
             attempt_timeout = \"60s\"\njitter = 0.0\n"
        ),
        &[],
        &[],
    );
    let callback = format!("{}/hook", receiver.url());
    let ids: Vec<String> = (0..EVENTS)
        .map(|_| invoke_async(&app, hello("Ada"), &callback))
        .collect();
    for id in &ids {
        wait_for(&format!("{id} to complete"), || {
            (run_detail(&app, id)["run_status"] == "completed").then_some(())
        });
    }
    receiver.wait_for_requests(2);
    assert_eq!(metric(&app, "hivelet_deliveries_in_flight"), 2.0);
    assert!(
        metric(&app, "hivelet_events_waiting_peak") <= WINDOW as f64,
        "{EVENTS} events waiting, at most {WINDOW} in memory"
    );

    // A crash with every event still to deliver (two cut off mid-attempt), then a start that
    // reads one page; the receiver is back.
    app.kill();
    up.store(true, Ordering::SeqCst);
    app.spawn();
    let secret = signing_secret(&app, "hello");
    for id in &ids {
        wait_for(&format!("{id} to be delivered"), || {
            (run_detail(&app, id)["async"]["delivery_state"] == "delivered").then_some(())
        });
    }

    let received = received_up.lock().unwrap().clone();
    let mut by_run: HashMap<String, Vec<&Recorded>> = HashMap::new();
    for d in &received {
        if let Some(problem) = signature_problem(&secret, d) {
            panic!("{problem}");
        }
        let run = d.header("X-Fetch-Hive-Request-Id").unwrap_or_default();
        by_run.entry(run.to_string()).or_default().push(d);
    }
    for id in &ids {
        let got = by_run.get(id).map_or(0, Vec::len);
        assert_eq!(got, 1, "{id} arrived {got} times after the restart");
        let detail = run_detail(&app, id);
        let event_id = detail["async"]["event_id"].as_str().unwrap_or_default();
        assert_eq!(
            by_run[id][0].header("webhook-id"),
            Some(event_id),
            "{id}: {detail}"
        );
    }
    assert_eq!(received.len(), EVENTS, "nothing else arrived");
    let peak = metric(&app, "hivelet_events_waiting_peak");
    assert!(peak >= 1.0, "the restarted daemon held events: {peak}");
    assert!(
        peak <= WINDOW as f64,
        "the restarted daemon held {peak} events in memory, more than the window of {WINDOW}"
    );
    assert_eq!(metric(&app, "hivelet_events_waiting"), 0.0);
    gate.open();
}

#[test]
fn a_receiver_that_hangs_with_a_backlog_does_not_hold_up_another() {
    // `slow` holds every attempt; its backlog fills far more than the window. `fine` answers.
    let gate = Gate::new();
    let slow = {
        let gate = gate.clone();
        StubServer::threaded(move |_, _| {
            gate.wait();
            StubReply::text(200, "ok")
        })
    };
    let fine = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::start_with(
        &format!(
            "[delivery]\nschedule_window = {WINDOW}\nper_host_concurrency = 1\n\
             attempt_timeout = \"60s\"\njitter = 0.0\n"
        ),
        &[],
        &[],
    );
    let slow_ids: Vec<String> = (0..3 * WINDOW)
        .map(|_| invoke_async(&app, hello("Ada"), &format!("{}/hook", slow.url())))
        .collect();
    for id in &slow_ids {
        wait_for(&format!("{id} to complete"), || {
            (run_detail(&app, id)["run_status"] == "completed").then_some(())
        });
    }
    // Due after the whole backlog of `slow`, and still delivered while it hangs.
    let fine_ids: Vec<String> = (0..3)
        .map(|_| invoke_async(&app, hello("Ada"), &format!("{}/hook", fine.url())))
        .collect();
    for id in &fine_ids {
        wait_for(&format!("{id} to be delivered"), || {
            (run_detail(&app, id)["async"]["delivery_state"] == "delivered").then_some(())
        });
    }
    assert_eq!(slow.requests().len(), 1, "`slow` holds its one attempt");
    assert!(metric(&app, "hivelet_events_waiting_peak") <= WINDOW as f64);

    gate.open();
    for id in &slow_ids {
        wait_for(&format!("{id} to be delivered"), || {
            (run_detail(&app, id)["async"]["delivery_state"] == "delivered").then_some(())
        });
    }
    assert_eq!(slow.requests().len(), 3 * WINDOW, "each once");
}
