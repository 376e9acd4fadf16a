//! Backlog benchmark (issue 11, point 3): `cargo bench --bench backlog`. Writes
//! `BACKLOG_EVENTS` (default 1 000 000) finished callback runs whose events are still due
//! straight into a fresh data dir's SQLite file, all pointing at a receiver that is down (a
//! closed port). Then starts the release daemon and measures the time until it listens, its
//! memory (VmRSS / VmHWM from `/proc`) while the receiver stays down for `DOWN_SECS` (default
//! 20), then brings the receiver up on that port and measures the time until every event has
//! arrived. The receiver checks both signatures of every delivery. Prints a table and writes
//! JSON under `target/bench-results/`. `EXTRA_CONFIG` is appended to the daemon's config.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use common::{env_usize, rss_mib};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Starts `hivelet serve` on `dir` and returns it with the time until it wrote its address.
fn start(dir: &Path, config: &str) -> (Child, String, Duration) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.join("hivelet.toml"), config).unwrap();
    let _ = std::fs::remove_file(data.join("hivelet.addr"));
    let clock = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_hivelet"))
        .arg("--config")
        .arg(dir.join("hivelet.toml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("HIVELET_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hivelet");
    let deadline = Instant::now() + Duration::from_secs(600);
    let base = loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("hivelet.addr")) {
            if !addr.trim().is_empty() {
                break addr.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(1));
    };
    (child, base, clock.elapsed())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `n` finished callback runs of `hello` whose events are due (over the last `n` ms), each
/// pointing at `callback`. One transaction: this is the database a daemon leaves behind when
/// a receiver has been down while `n` runs ended.
fn seed(db: &Path, n: usize, callback: &str) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    let tx = conn.transaction().unwrap();
    {
        let now = now_ms();
        let mut run = tx.prepare(
            "INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery, callback_url, inputs, metadata, output, created_at, started_at, ended_at, duration_ms)
             VALUES (?1, 'hello', 'default', 1, 'completed', 'api', 'callback', ?3, '{}', '{}', '\"Hello, Ada.\"', ?2, ?2, ?2, 0)").unwrap();
        let mut event = tx.prepare(
            "INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body, state, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, 'hello', 'workflow.completed', ?3, ?4, 'pending', ?5, ?5, ?5)").unwrap();
        for i in 0..n {
            let at = now - (n - i) as i64;
            let id = format!("req_{:012x}7000800{:013x}", at, i);
            let body = format!(
                r#"{{"event_type":"workflow.completed","request_id":"{id}","data":{{"run_status":"completed","output":"Hello, Ada."}}}}"#
            );
            run.execute(rusqlite::params![id, at, callback]).unwrap();
            event
                .execute(rusqlite::params![
                    format!("evt_{}", &id[4..]),
                    id,
                    callback,
                    body.as_bytes(),
                    at
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[derive(Default)]
struct Received {
    request_ids: HashSet<String>,
    deliveries: usize,
    bad_signatures: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A receiver on `listener` that verifies both signatures of every delivery.
fn start_receiver(
    listener: std::net::TcpListener,
    secret: String,
) -> (Arc<Mutex<Received>>, actix_web::dev::ServerHandle) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let state = state.clone();
                let secret = secret.clone();
                App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let state = state.clone();
                    let secret = secret.clone();
                    async move {
                        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
                        let headers = hivelet::signing::ReceivedHeaders {
                            fetch_hive_signature: h("x-fetch-hive-signature"),
                            webhook_id: h("webhook-id"),
                            webhook_timestamp: h("webhook-timestamp"),
                            webhook_signature: h("webhook-signature"),
                        };
                        let ok =
                            hivelet::signing::verify(&secret, &headers, &body, now_ms() / 1000)
                                .is_ok();
                        let mut r = state.lock().unwrap();
                        r.bad_signatures += usize::from(!ok);
                        r.deliveries += 1;
                        let id = h("x-fetch-hive-request-id").unwrap_or("").to_string();
                        r.request_ids.insert(id);
                        let now = Instant::now();
                        r.first.get_or_insert(now);
                        r.last = Some(now);
                        HttpResponse::Ok().finish()
                    }
                }))
            })
            .workers(1)
            .backlog(4096)
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            let _ = server.await;
        });
    });
    (received, rx.recv().unwrap())
}

fn main() {
    hivelet::install_crypto_provider();
    let n = env_usize("BACKLOG_EVENTS", 1_000_000);
    let down_secs = env_usize("DOWN_SECS", 20) as u64;
    let config = format!(
        "[delivery]\nper_host_concurrency = 64\n{}\n",
        std::env::var("EXTRA_CONFIG").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();

    // A first start creates the schema, the admin key and `hello` with its secret.
    let (child, base, _) = start(dir.path(), &config);
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).unwrap();
    let dep: Value = ureq::get(&format!("{base}/v1/deployments/hello"))
        .set("Authorization", &format!("Bearer {}", key.trim()))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let secret = dep["signing_secret"].as_str().unwrap().to_string();
    stop(child);

    // The receiver's port, closed until it comes back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let callback = format!("http://127.0.0.1:{port}/hook");
    let clock = Instant::now();
    seed(&dir.path().join("data/hivelet.db"), n, &callback);
    let db_mib = std::fs::metadata(dir.path().join("data/hivelet.db"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / 1024.0
        / 1024.0;
    println!(
        "seeded {n} due events in {:.1} s (database {db_mib:.0} MiB)",
        clock.elapsed().as_secs_f64()
    );

    let (child, _, started_in) = start(dir.path(), &config);
    let pid = child.id();
    let (rss_at_start, _) = rss_mib(pid);
    std::thread::sleep(Duration::from_secs(down_secs));
    let (rss_down, hwm_down) = rss_mib(pid);
    println!(
        "start-up to listening {:.1} ms · RSS right after {rss_at_start:.1} MiB · after {down_secs} s with the receiver down: RSS {rss_down:.1} MiB, peak {hwm_down:.1} MiB",
        started_in.as_secs_f64() * 1000.0
    );

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port");
    let up = Instant::now();
    let (received, server) = start_receiver(listener, secret);
    let deadline = up + Duration::from_secs(3600);
    let mut last_report = Instant::now();
    let mut hwm_during = 0.0f64;
    loop {
        let got = received.lock().unwrap().request_ids.len();
        let (_, hwm) = rss_mib(pid);
        hwm_during = hwm_during.max(hwm);
        if got >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {got} of {n} after an hour");
        if last_report.elapsed() > Duration::from_secs(30) {
            println!(
                "  {got} of {n} delivered after {:.0} s",
                up.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rss_end, hwm_end) = rss_mib(pid);
    let r = received.lock().unwrap();
    let first = r.first.map_or(0.0, |t| (t - up).as_secs_f64());
    let last = r.last.map_or(0.0, |t| (t - up).as_secs_f64());
    let drain = last - first;
    println!(
        "receiver up → first delivery {first:.1} s (the circuit breaker's pause) → all {n} delivered {last:.1} s ({:.0}/s after the first) · deliveries {} (duplicates {}) · bad signatures {} · RSS at the end {rss_end:.1} MiB, peak over the whole run {hwm_end:.1} MiB",
        n as f64 / drain.max(0.001),
        r.deliveries,
        r.deliveries - r.request_ids.len(),
        r.bad_signatures,
    );
    let result = json!({
        "events": n, "database_mib": db_mib,
        "start_ms": started_in.as_secs_f64() * 1000.0,
        "rss_at_start_mib": rss_at_start, "down_secs": down_secs,
        "rss_down_mib": rss_down, "hwm_down_mib": hwm_down,
        "first_delivery_s": first, "all_delivered_s": last,
        "deliveries_per_s": n as f64 / drain.max(0.001),
        "deliveries": r.deliveries, "distinct": r.request_ids.len(),
        "bad_signatures": r.bad_signatures,
        "rss_end_mib": rss_end, "hwm_mib": hwm_end.max(hwm_during),
    });
    drop(r);
    stop(child);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("backlog.json"), result.to_string());
    actix_rt::System::new().block_on(server.stop(false));
}
