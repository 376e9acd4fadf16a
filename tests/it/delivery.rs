//! SPEC §3 callback delivery against a misbehaving receiver: every fault (5xx, `Retry-After`,
//! `410`, redirects, a hang, a refused connection, an unknown host, a huge response, a denied
//! address, a slow destination) is followed by what a user checks in `GET /v1/runs/{id}` (the
//! `async` object and its `attempts`) and by what the receiver got. Retry schedules are
//! shortened to milliseconds; nothing asserts how long anything took, only what the daemon
//! recorded and what arrived.

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::*;

/// The deliveries of one run (by `X-Fetch-Hive-Request-Id`) among what a receiver got.
fn deliveries_of(receiver: &StubServer, id: &str) -> Vec<Recorded> {
    receiver
        .requests()
        .into_iter()
        .filter(|d| d.header("X-Fetch-Hive-Request-Id") == Some(id))
        .collect()
}

fn hello_body() -> Value {
    hello("Ada")
}

// ------------------------------------------------------------------------------------------
// Receivers that answer with an error, then recover
// ------------------------------------------------------------------------------------------

#[test]
fn two_500s_then_200_is_delivered_on_the_third_attempt_with_the_same_event() {
    let receiver = StubServer::fails_first(2, 500, "down for maintenance");
    let app = TestApp::start_with(FAST, &[], &[]);
    let secret = signing_secret(&app, "hello");
    let id = invoke_async(&app, hello_body(), &format!("{}/hook", receiver.url()));

    let detail = wait_delivery(&app, &id, "delivered");
    let a = attempts(&detail);
    assert_eq!(
        summary(&a),
        vec![
            (json!(500), json!("http_status"), json!("retrying")),
            (json!(500), json!("http_status"), json!("retrying")),
            (json!(200), Value::Null, json!("delivered")),
        ],
        "{detail:#}"
    );
    for (i, attempt) in a.iter().enumerate() {
        assert_eq!(attempt["attempt"], i + 1, "{attempt:#}");
        assert_eq!(attempt["series"], 1, "{attempt:#}");
        assert_eq!(attempt["url"], format!("{}/hook", receiver.url()));
    }
    assert!(a[0]["next_attempt_at"].is_string(), "{:#}", a[0]);
    assert!(a[1]["next_attempt_at"].is_string(), "{:#}", a[1]);
    assert!(a[2]["next_attempt_at"].is_null(), "{:#}", a[2]);
    assert_eq!(a[0]["response_body"], "down for maintenance");
    assert_eq!(detail["async"]["attempt_count"], 3, "{detail:#}");
    assert!(detail["async"]["failure_reason"].is_null(), "{detail:#}");
    assert!(
        !detail.to_string().contains(&secret),
        "the attempt log must never hold the signing secret"
    );

    let seen = receiver.requests();
    assert_eq!(seen.len(), 3, "one request per attempt");
    let event_id = detail["async"]["event_id"].as_str().unwrap();
    for (d, attempt) in seen.iter().zip(&a) {
        assert_eq!(d.header("webhook-id"), Some(event_id));
        assert_eq!(
            d.body, seen[0].body,
            "identical body bytes on every attempt"
        );
        assert_eq!(d.header("X-Fetch-Hive-Request-Id"), Some(id.as_str()));
        assert_eq!(signature_problem(&secret, d), None);
        // The log shows what was sent.
        let sent = &attempt["request_headers"];
        assert_eq!(header_of(sent, "webhook-id"), Some(event_id), "{sent}");
        assert_eq!(
            header_of(sent, "webhook-timestamp"),
            d.header("webhook-timestamp"),
            "{sent}"
        );
        assert_eq!(
            header_of(sent, "X-Fetch-Hive-Signature"),
            d.header("X-Fetch-Hive-Signature"),
            "{sent}"
        );
    }
}

#[test]
fn retry_after_on_503_delays_the_next_attempt_up_to_twice_the_schedule() {
    let receiver = StubServer::threaded(|_, n| {
        if n == 0 {
            StubReply {
                status: 503,
                headers: vec![("Retry-After".into(), "1".into())],
                body: "busy".into(),
            }
        } else {
            StubReply::text(200, "ok")
        }
    });
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(&app, hello_body(), &format!("{}/hook", receiver.url()));

    let detail = wait_delivery(&app, &id, "delivered");
    let a = attempts(&detail);
    assert_eq!(a.len(), 2, "{detail:#}");
    let first = &a[0];
    assert_eq!(first["status_code"], 503, "{first:#}");
    assert_eq!(first["error_kind"], "http_status", "{first:#}");
    assert_eq!(first["outcome"], "retrying", "{first:#}");
    assert_eq!(
        header_of(&first["response_headers"], "retry-after"),
        Some("1"),
        "the response headers are recorded: {first:#}"
    );
    // The delay the daemon chose after the attempt ended: Retry-After 1 s, capped at twice
    // the scheduled 100 ms.
    let ended = unix_ms(&first["started_at"]) + first["duration_ms"].as_i64().unwrap();
    let chosen = unix_ms(&first["next_attempt_at"]) - ended;
    assert!(
        (190..1000).contains(&chosen),
        "Retry-After: 1 against a 100 ms schedule must give ~200 ms (2x cap), got {chosen} ms: {first:#}"
    );
    assert!(
        unix_ms(&a[1]["started_at"]) >= unix_ms(&first["next_attempt_at"]),
        "the retry must not start before next_attempt_at: {detail:#}"
    );
    assert_eq!(a[1]["status_code"], 200);
    assert_eq!(a[1]["outcome"], "delivered");
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn gone_410_stops_at_once() {
    let probe_hits = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let probe_hits = probe_hits.clone();
        StubServer::threaded(move |req, _| {
            if req.path.starts_with("/gone") {
                StubReply::text(410, "this endpoint was removed")
            } else if probe_hits.fetch_add(1, Ordering::SeqCst) < 3 {
                StubReply::text(500, "not yet")
            } else {
                StubReply::text(200, "ok")
            }
        })
    };
    let app = TestApp::start_with(FAST, &[], &[]);
    let gone = invoke_async(&app, hello_body(), &format!("{}/gone", receiver.url()));
    let detail = wait_delivery(&app, &gone, "failed");
    assert_eq!(detail["async"]["failure_reason"], "gone", "{detail:#}");
    assert!(detail["async"]["next_attempt_at"].is_null(), "{detail:#}");

    // A second event to the same receiver runs through the whole retry schedule; by the time
    // it is delivered, any retry of the first would have happened long ago.
    let probe = invoke_async(&app, hello_body(), &format!("{}/probe", receiver.url()));
    let probe_detail = wait_delivery(&app, &probe, "delivered");
    assert_eq!(attempts(&probe_detail).len(), 4, "{probe_detail:#}");

    let detail = run_detail(&app, &gone);
    let a = attempts(&detail);
    assert_eq!(
        summary(&a),
        vec![(json!(410), json!("http_status"), json!("failed"))],
        "{detail:#}"
    );
    assert!(a[0]["next_attempt_at"].is_null(), "{:#}", a[0]);
    assert_eq!(a[0]["response_body"], "this endpoint was removed");
    assert_eq!(detail["async"]["delivery_state"], "failed");
    assert_eq!(
        deliveries_of(&receiver, &gone).len(),
        1,
        "a 410 must not be retried"
    );
}

#[test]
fn redirects_are_never_followed_and_exhaust_the_schedule() {
    let elsewhere = StubServer::threaded(|_, _| StubReply::text(200, "you should not be here"));
    let target = format!("{}/taken", elsewhere.url());
    let receiver = {
        let target = target.clone();
        StubServer::threaded(move |req, _| {
            let code = req
                .path
                .trim_start_matches("/r")
                .parse::<u16>()
                .unwrap_or(500);
            StubReply {
                status: code,
                headers: vec![("Location".into(), target.clone())],
                body: String::new(),
            }
        })
    };
    let app = TestApp::start_with(FAST, &[], &[]);
    let runs: Vec<(u16, String)> = [301, 302, 307]
        .into_iter()
        .map(|code| {
            let url = format!("{}/r{code}", receiver.url());
            (code, invoke_async(&app, hello_body(), &url))
        })
        .collect();

    for (code, id) in &runs {
        let detail = wait_delivery(&app, id, "failed");
        assert_eq!(detail["async"]["failure_reason"], "exhausted", "{detail:#}");
        let a = attempts(&detail);
        assert_eq!(
            summary(&a),
            vec![
                (json!(code), json!("redirect"), json!("retrying")),
                (json!(code), json!("redirect"), json!("retrying")),
                (json!(code), json!("redirect"), json!("retrying")),
                (json!(code), json!("redirect"), json!("failed")),
            ],
            "1 attempt + 3 retries, each a redirect failure: {detail:#}"
        );
        for attempt in &a {
            assert_eq!(
                header_of(&attempt["response_headers"], "location"),
                Some(target.as_str()),
                "{attempt:#}"
            );
        }
        assert!(a[3]["next_attempt_at"].is_null(), "{:#}", a[3]);
        let got = deliveries_of(&receiver, id);
        assert_eq!(got.len(), 4, "HTTP {code}");
        assert!(got.iter().all(|d| d.path == format!("/r{code}")));
    }
    assert!(
        elsewhere.requests().is_empty(),
        "a redirect must never be followed: {:?}",
        elsewhere.requests()
    );
}

// ------------------------------------------------------------------------------------------
// Transport faults
// ------------------------------------------------------------------------------------------

/// A TCP listener that accepts connections and holds them without reading or answering.
struct SilentListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _acceptor: Acceptor,
}

impl SilentListener {
    fn start() -> SilentListener {
        let accepted = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let accepted = accepted.clone();
            let mut held: Vec<TcpStream> = Vec::new();
            Acceptor::start("127.0.0.1:0", move |socket| {
                held.push(socket);
                accepted.fetch_add(1, Ordering::SeqCst);
            })
        };
        SilentListener {
            port: acceptor.port,
            accepted,
            _acceptor: acceptor,
        }
    }
}

#[test]
fn a_receiver_that_never_answers_times_out_on_every_attempt() {
    let silent = SilentListener::start();
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(
        &app,
        hello_body(),
        &format!("http://127.0.0.1:{}/hook", silent.port),
    );
    let detail = wait_delivery(&app, &id, "failed");
    assert_eq!(detail["async"]["failure_reason"], "exhausted", "{detail:#}");
    let a = attempts(&detail);
    assert_eq!(a.len(), 4, "{detail:#}");
    for attempt in &a {
        assert_eq!(attempt["error_kind"], "timeout", "{attempt:#}");
        assert!(attempt["status_code"].is_null(), "{attempt:#}");
        assert!(
            attempt["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{attempt:#}"
        );
    }
    assert!(
        silent.accepted.load(Ordering::SeqCst) >= 1,
        "the daemon connected"
    );
}

#[test]
fn a_receiver_that_hangs_once_then_answers_gets_the_event() {
    let gate = Gate::new();
    let receiver = {
        let gate = gate.clone();
        StubServer::threaded(move |_, n| {
            if n == 0 {
                gate.wait(); // past the 500 ms attempt timeout
            }
            StubReply::text(200, "ok")
        })
    };
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(&app, hello_body(), &format!("{}/hook", receiver.url()));
    let detail = wait_delivery(&app, &id, "delivered");
    gate.open();
    let a = attempts(&detail);
    assert_eq!(
        summary(&a),
        vec![
            (Value::Null, json!("timeout"), json!("retrying")),
            (json!(200), Value::Null, json!("delivered")),
        ],
        "{detail:#}"
    );
    let seen = receiver.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("webhook-id"), seen[1].header("webhook-id"));
    assert_eq!(seen[0].body, seen[1].body);
}

#[test]
fn refused_connections_exhaust_then_redeliver_starts_a_new_series() {
    // A port nothing listens on (bound, then released).
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let callback = format!("http://127.0.0.1:{port}/hook");
    let app = TestApp::start_with(FAST, &[], &[]);
    let secret = signing_secret(&app, "hello");
    let id = invoke_async(&app, hello_body(), &callback);

    let detail = wait_delivery(&app, &id, "failed");
    assert_eq!(detail["async"]["failure_reason"], "exhausted", "{detail:#}");
    let a = attempts(&detail);
    assert_eq!(a.len(), 4, "{detail:#}");
    for attempt in &a {
        assert_eq!(attempt["error_kind"], "connect", "{attempt:#}");
        assert!(attempt["status_code"].is_null(), "{attempt:#}");
        assert_eq!(attempt["series"], 1, "{attempt:#}");
    }
    let event_id = detail["async"]["event_id"].as_str().unwrap().to_string();

    // The app comes back on the same port; an admin redelivers.
    let receiver = StubServer::threaded_on(&format!("127.0.0.1:{port}"), |_, _| {
        StubReply::text(200, "ok")
    });
    let r = app.post_json(
        &format!("/v1/runs/{id}/redeliver"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(202);
    assert_eq!(r.json()["series"], 2, "{r}");
    assert_eq!(r.json()["event_id"], event_id.as_str(), "{r}");

    let detail = wait_delivery(&app, &id, "delivered");
    assert_eq!(detail["async"]["series"], 2, "{detail:#}");
    assert_eq!(detail["async"]["event_id"], event_id.as_str(), "{detail:#}");
    let a = attempts(&detail);
    assert_eq!(a.len(), 5, "the first series stays in the log: {detail:#}");
    let last = &a[4];
    assert_eq!(last["series"], 2, "{last:#}");
    assert_eq!(last["status_code"], 200, "{last:#}");
    assert_eq!(last["outcome"], "delivered", "{last:#}");

    let seen = receiver.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("webhook-id"),
        Some(event_id.as_str()),
        "a redelivery keeps the event id"
    );
    assert_eq!(signature_problem(&secret, &seen[0]), None);
}

#[test]
fn an_unknown_host_is_a_dns_error() {
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(&app, hello_body(), "http://nonexistent.invalid/hook");
    let detail = wait_delivery(&app, &id, "failed");
    assert_eq!(detail["async"]["failure_reason"], "exhausted", "{detail:#}");
    let a = attempts(&detail);
    assert_eq!(a.len(), 4, "{detail:#}");
    for attempt in &a {
        assert_eq!(attempt["error_kind"], "dns", "{attempt:#}");
        assert!(attempt["status_code"].is_null(), "{attempt:#}");
        assert!(
            attempt["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{attempt:#}"
        );
    }
}

#[test]
fn only_the_first_4_kib_of_a_response_body_is_kept() {
    let big: String = "0123456789abcdef".repeat(640); // 10 KiB
    let receiver = {
        let big = big.clone();
        StubServer::threaded(move |_, n| {
            if n == 0 {
                StubReply::text(500, &big)
            } else {
                StubReply::text(200, "ok")
            }
        })
    };
    let app = TestApp::start_with(FAST, &[], &[]);
    let id = invoke_async(&app, hello_body(), &format!("{}/hook", receiver.url()));
    let detail = wait_delivery(&app, &id, "delivered");
    let a = attempts(&detail);
    assert_eq!(a.len(), 2, "{detail:#}");
    let kept = a[0]["response_body"].as_str().unwrap_or_default();
    assert_eq!(kept.len(), 4096, "exactly 4 KiB is kept");
    assert_eq!(kept, &big[..4096]);
    assert_eq!(a[0]["status_code"], 500);
    assert_eq!(a[1]["response_body"], "ok");
}

#[test]
fn a_name_resolving_into_a_denied_network_is_refused_before_connecting() {
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let config = format!("{FAST}\n[security]\ncallback_deny = [\"127.0.0.0/8\", \"::1/128\"]\n");
    let app = TestApp::start_with(&config, &[], &[]);
    let id = invoke_async(
        &app,
        hello_body(),
        &format!("http://localhost:{}/hook", receiver.port),
    );
    let detail = wait_delivery(&app, &id, "failed");
    let a = attempts(&detail);
    assert!(!a.is_empty(), "a denied callback is recorded: {detail:#}");
    for attempt in &a {
        assert_eq!(attempt["error_kind"], "denied", "{attempt:#}");
        assert!(attempt["status_code"].is_null(), "{attempt:#}");
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("127.0.0.1") || error.contains("callback"),
            "the error says why: {attempt:#}"
        );
    }
    assert_eq!(detail["async"]["failure_reason"], "denied", "{detail:#}");
    assert!(
        receiver.requests().is_empty(),
        "nothing may reach a denied address"
    );
}

// ------------------------------------------------------------------------------------------
// Per-destination concurrency
// ------------------------------------------------------------------------------------------

/// The value of a gauge in the Prometheus text of `/metrics` (any prefix).
fn gauge(app: &TestApp, suffix: &str) -> Option<f64> {
    let r = app.admin_get("/metrics");
    r.expect_status(200);
    r.text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (!line.starts_with('#') && (name == suffix || name.ends_with(&format!("_{suffix}"))))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[test]
fn one_destination_gets_at_most_per_host_concurrency_attempts_at_once() {
    let gate = Gate::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (gate, in_flight, max_seen) = (gate.clone(), in_flight.clone(), max_seen.clone());
        StubServer::threaded(move |_, _| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
            gate.wait();
            in_flight.fetch_sub(1, Ordering::SeqCst);
            StubReply::text(200, "ok")
        })
    };
    // A long attempt timeout: held attempts must stay in flight, not time out and retry.
    let app = TestApp::start_with(
        "[delivery]\nper_host_concurrency = 2\nattempt_timeout = \"25s\"\njitter = 0.0\n",
        &[],
        &[],
    );
    let callback = format!("{}/hook", receiver.url());
    let ids: Vec<String> = (0..10)
        .map(|_| invoke_async(&app, hello_body(), &callback))
        .collect();

    // All ten runs ended, so all ten events exist; the daemon holds eight of them back.
    for id in &ids {
        wait_for(&format!("{id} to complete"), || {
            (run_detail(&app, id)["run_status"] == "completed").then_some(())
        });
    }
    wait_for("2 deliveries in flight and 8 waiting", || {
        (gauge(&app, "deliveries_in_flight") == Some(2.0)
            && gauge(&app, "events_waiting") == Some(8.0))
        .then_some(())
    });
    assert_eq!(receiver.requests().len(), 2, "only two attempts were sent");
    assert_eq!(max_seen.load(Ordering::SeqCst), 2);

    gate.open();
    for id in &ids {
        wait_delivery(&app, id, "delivered");
    }
    assert!(
        max_seen.load(Ordering::SeqCst) <= 2,
        "at most 2 attempts at once, saw {}",
        max_seen.load(Ordering::SeqCst)
    );
    let got: HashSet<String> = receiver
        .requests()
        .iter()
        .filter_map(|d| d.header("X-Fetch-Hive-Request-Id").map(str::to_string))
        .collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(receiver.requests().len(), 10, "no attempt was repeated");
}

// ------------------------------------------------------------------------------------------
// The official verification libraries
// ------------------------------------------------------------------------------------------

/// Checks one delivery with `standardwebhooks` and `svix`: accepted as sent; rejected with a
/// tampered body, a changed timestamp, the wrong secret, and when received too late (the
/// libraries' clock moved 10 minutes on, past their 5-minute tolerance).
const LIBRARY_CHECKS: &str = r#"
import base64, json, os, sys
from datetime import datetime, timedelta

import standardwebhooks
import standardwebhooks.webhooks as sw
import svix.webhooks

secret = os.environ["SECRET"]
with open(os.environ["BODY_FILE"], "rb") as f:
    body = f.read()
with open(os.environ["HEADERS_FILE"], encoding="utf-8") as f:
    headers = {k.lower(): v for k, v in json.load(f).items()}

LIBS = {
    "standardwebhooks": lambda s, b, h: standardwebhooks.Webhook(s).verify(b, dict(h)),
    "svix": lambda s, b, h: svix.webhooks.Webhook(s).verify(b, dict(h)),
}

def outcome(lib, s, b, h):
    try:
        LIBS[lib](s, b, h)
        return None
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"

problems = []
wrong_secret = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
tampered = body.replace(b"Ada", b"Eve")
if tampered == body:
    problems.append("the delivery does not hold the input Ada, so it cannot be tampered with")
moved_ts = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)})
for lib in LIBS:
    err = outcome(lib, secret, body, headers)
    if err:
        problems.append(f"{lib} rejected the delivery as sent: {err}")
    for what, s, b, h in [
        ("a tampered body", secret, tampered, headers),
        ("an appended byte", secret, body + b" ", headers),
        ("a changed timestamp", secret, body, moved_ts),
        ("the wrong secret", wrong_secret, body, headers),
    ]:
        if outcome(lib, s, b, h) is None:
            problems.append(f"{lib} accepted {what}")

class Later(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(minutes=10)

sw.datetime = Later
for lib in LIBS:
    err = outcome(lib, secret, body, headers)
    if err is None:
        problems.append(f"{lib} accepted a delivery received 10 minutes late")
    elif "old" not in err:
        problems.append(f"{lib} rejected the late delivery for another reason: {err}")

if problems:
    print("FAIL: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print("ok")
"#;

#[track_caller]
fn check_with_libraries(app: &TestApp, secret: &str, d: &Recorded, n: usize) {
    let script = app.dir.join("library_checks.py");
    let body_file = app.dir.join(format!("delivery-{n}.bin"));
    let headers_file = app.dir.join(format!("delivery-{n}.json"));
    std::fs::write(&script, LIBRARY_CHECKS).unwrap();
    std::fs::write(&body_file, &d.body).unwrap();
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), json!(v)))
        .collect();
    std::fs::write(&headers_file, Value::Object(headers).to_string()).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script)
        .env("SECRET", secret)
        .env("BODY_FILE", &body_file)
        .env("HEADERS_FILE", &headers_file)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_command(cmd, &app.dir);
    assert!(out.status.success(), "library checks: {}", describe(&out));
}

#[test]
fn official_libraries_accept_every_attempt_and_reject_tampered_or_stale_ones() {
    let receiver = StubServer::fails_first(1, 500, "again");
    let app = TestApp::start_with(FAST, &[], &[]);
    let secret = signing_secret(&app, "hello");
    let id = invoke_async(&app, hello_body(), &format!("{}/hook", receiver.url()));
    wait_delivery(&app, &id, "delivered");
    let seen = receiver.requests();
    assert_eq!(seen.len(), 2);
    for (n, d) in seen.iter().enumerate() {
        check_with_libraries(&app, &secret, d, n);
    }
}
