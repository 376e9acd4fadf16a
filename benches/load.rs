//! Load benchmarks (issue 6). `cargo bench --bench load -- SCENARIO [...]` with scenarios
//! `accept`, `e2e`, `sync`, `slow-receiver`, `recovery`, `memory`, or `all` (the default),
//! `streams` (sync invoke throughput with and without `STREAMS` (1000) open live streams, with
//! `FANOUT` (1000) clients reading one busy run's stream, and sync invokes with
//! `"stream": true`), and, not in `all`, the workflow scenarios `steps20` (a 20-step workflow) and `loop1000` (a
//! loop of 1 000 passes), run sync with `WORKFLOW_RUNS` (default 2000 / 200) runs.
//! Each starts the release daemon on a temp data dir (`synchronous=FULL`), drives it over
//! loopback HTTP with keep-alive from a load generator written here, with a webhook receiver
//! here that verifies every signature, prints a table, and writes JSON under
//! `target/bench-results/`. Environment: `REQUESTS` (default 20000), `CONCURRENCY` (64),
//! `BODY_BYTES` (size of a metadata value, default 0), `DUE_EVENTS` (100000, recovery),
//! `EXTRA_CONFIG` (TOML appended to the daemon's hivelet.toml).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use common::{env_usize, rss_mib};

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
    key: String,
    started_in: Duration,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Daemon::start_in(dir, config)
    }

    fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(dir.path().join("hivelet.toml"), config).unwrap();
        let _ = std::fs::remove_file(data.join("hivelet.addr"));
        let clock = Instant::now();
        // `CEILING=path/to/hivelet-ceiling` drives the bare ceiling (../shared/perf-ceiling)
        // instead: it takes `serve --config --data-dir`, binds `HIVELET_BIND` and writes no
        // address file, so the port is chosen here and `/healthz` says when it listens.
        let (child, base) = match std::env::var("CEILING") {
            Ok(ceiling) => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .unwrap()
                    .port();
                let child = Command::new(ceiling)
                    .arg("serve")
                    .arg("--config")
                    .arg(dir.path().join("hivelet.toml"))
                    .arg("--data-dir")
                    .arg(&data)
                    .env("HIVELET_BIND", format!("127.0.0.1:{port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start hivelet-ceiling");
                let base = format!("http://127.0.0.1:{port}");
                let deadline = Instant::now() + Duration::from_secs(60);
                while ureq::get(&format!("{base}/healthz")).call().is_err() {
                    assert!(Instant::now() < deadline, "ceiling did not start");
                    std::thread::sleep(Duration::from_millis(2));
                }
                (child, base)
            }
            Err(_) => {
                let child = Command::new(env!("CARGO_BIN_EXE_hivelet"))
                    .arg("--config")
                    .arg(dir.path().join("hivelet.toml"))
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["serve", "--bind", "127.0.0.1:0"])
                    .env("HIVELET_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("start hivelet");
                (child, wait_for_addr(&data))
            }
        };
        let started_in = clock.elapsed();
        let key = std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string();
        Daemon {
            child,
            dir,
            base,
            key,
            started_in,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn secret(&self) -> String {
        let agent = ureq::agent();
        let body: Value = agent
            .get(&format!("{}/v1/deployments/hello", self.base))
            .set("Authorization", &format!("Bearer {}", self.key))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        body["signing_secret"].as_str().unwrap().to_string()
    }

    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir
    }
}

fn wait_for_addr(data: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("hivelet.addr")) {
            if !addr.trim().is_empty() {
                return addr.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    /// request_id → arrival time (first delivery).
    arrivals: HashMap<String, Instant>,
    webhook_ids: HashMap<String, usize>,
    duplicates: usize,
    bad_signatures: usize,
}

/// A webhook receiver that verifies both signatures of every delivery.
fn start_receiver(
    secret: String,
    delay: Duration,
    workers: usize,
) -> (String, Arc<Mutex<Received>>, actix_web::dev::ServerHandle) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
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
                        if !delay.is_zero() {
                            actix_rt::time::sleep(delay).await;
                        }
                        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
                        let headers = hivelet::signing::ReceivedHeaders {
                            fetch_hive_signature: h("x-fetch-hive-signature"),
                            webhook_id: h("webhook-id"),
                            webhook_timestamp: h("webhook-timestamp"),
                            webhook_signature: h("webhook-signature"),
                        };
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        let ok = hivelet::signing::verify(&secret, &headers, &body, now).is_ok();
                        let request_id = h("x-fetch-hive-request-id").unwrap_or("").to_string();
                        let webhook_id = h("webhook-id").unwrap_or("").to_string();
                        let mut r = state.lock().unwrap();
                        if !ok {
                            r.bad_signatures += 1;
                        }
                        let seen = r.webhook_ids.entry(webhook_id).or_insert(0);
                        *seen += 1;
                        if *seen > 1 {
                            r.duplicates += 1;
                        }
                        r.arrivals.entry(request_id).or_insert_with(Instant::now);
                        HttpResponse::Ok().finish()
                    }
                }))
            })
            .workers(workers)
            .max_connections(100_000)
            .backlog(4096)
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            let _ = server.await;
        });
    });
    (url, received, rx.recv().unwrap())
}

/// Result of driving `total` invokes at `concurrency`.
struct Load {
    elapsed: Duration,
    latencies_ms: Vec<f64>,
    /// request_id → when its invoke was sent.
    sent: HashMap<String, Instant>,
    errors: usize,
    statuses: HashMap<u16, usize>,
}

/// Sends `total` invokes with `concurrency` keep-alive connections, on two client threads.
fn drive(
    base: &str,
    key: &str,
    total: usize,
    concurrency: usize,
    body_for: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let threads = 2;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let next = next.clone();
            let base = base.to_string();
            let key = key.to_string();
            let body_for = body_for.clone();
            let per_thread = concurrency / threads + usize::from(t < concurrency % threads);
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let client = awc::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .connector(awc::Connector::new().limit(per_thread.max(1)))
                        .finish();
                    let client = std::rc::Rc::new(client);
                    let mut tasks = Vec::new();
                    for _ in 0..per_thread {
                        let client = client.clone();
                        let next = next.clone();
                        let url = format!("{base}/v1/workflow/invoke");
                        let auth = format!("Bearer {key}");
                        let body_for = body_for.clone();
                        tasks.push(actix_rt::spawn(async move {
                            let mut lat = Vec::new();
                            let mut sent = Vec::new();
                            let mut errors = 0;
                            let mut statuses: HashMap<u16, usize> = HashMap::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= total {
                                    break;
                                }
                                let body = body_for(i);
                                let t0 = Instant::now();
                                let resp = client
                                    .post(&url)
                                    .insert_header(("Authorization", auth.as_str()))
                                    .insert_header(("Content-Type", "application/json"))
                                    .send_body(body)
                                    .await;
                                match resp {
                                    Ok(mut resp) => {
                                        let status = resp.status().as_u16();
                                        let bytes = resp.body().await.unwrap_or_default();
                                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                                        *statuses.entry(status).or_default() += 1;
                                        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                                            if let Some(id) = v["request_id"].as_str() {
                                                sent.push((id.to_string(), t0));
                                            }
                                        }
                                        if !(200..300).contains(&status) {
                                            errors += 1;
                                        }
                                    }
                                    Err(_) => errors += 1,
                                }
                            }
                            (lat, sent, errors, statuses)
                        }));
                    }
                    let mut out = (Vec::new(), Vec::new(), 0, HashMap::new());
                    for task in tasks {
                        let (lat, sent, errors, statuses) = task.await.unwrap();
                        out.0.extend(lat);
                        out.1.extend(sent);
                        out.2 += errors;
                        for (k, v) in statuses {
                            *out.3.entry(k).or_insert(0) += v;
                        }
                    }
                    out
                })
            })
        })
        .collect();
    let mut load = Load {
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
        sent: HashMap::new(),
        errors: 0,
        statuses: HashMap::new(),
    };
    for h in handles {
        let (lat, sent, errors, statuses) = h.join().unwrap();
        load.latencies_ms.extend(lat);
        load.sent.extend(sent);
        load.errors += errors;
        for (k, v) in statuses {
            *load.statuses.entry(k).or_insert(0) += v;
        }
    }
    load.elapsed = started.elapsed();
    load.latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    load
}

fn invoke_body(
    callback: Option<String>,
    pad: usize,
) -> Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> {
    let padding = "x".repeat(pad);
    Arc::new(move |i| {
        let mut body = json!({"deployment": "hello", "inputs": {"name": format!("user{i}")}});
        if pad > 0 {
            body["metadata"] = json!({"pad": padding});
        }
        if let Some(url) = &callback {
            body["async"] = json!({"enabled": true, "callback_url": url});
        }
        serde_json::to_vec(&body).unwrap()
    })
}

const BASE_CONFIG: &str = "[runs]\nmax_concurrent = 256\n[delivery]\nper_host_concurrency = 64\n";

/// The daemon's configuration: `BASE_CONFIG` plus `EXTRA_CONFIG` from the environment (TOML
/// tables to add, e.g. `[store]` `synchronous = "normal"` to see what fsync costs).
fn config() -> String {
    format!(
        "{BASE_CONFIG}{}\n",
        std::env::var("EXTRA_CONFIG").unwrap_or_default()
    )
}

fn report(name: &str, value: Value) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = out.join(format!("{name}-{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    println!("  → {}", path.display());
}

fn accept(total: usize, concurrency: usize, pad: usize) {
    let daemon = Daemon::start(&config());
    // A receiver so the deliveries that follow the accepts have somewhere to go.
    let (url, _received, server) = start_receiver(daemon.secret(), Duration::ZERO, 1);
    let load = drive(
        &daemon.base,
        &daemon.key,
        total,
        concurrency,
        invoke_body(Some(url), pad),
    );
    let rate = total as f64 / load.elapsed.as_secs_f64();
    let l = &load.latencies_ms;
    println!(
        "accept      {total} async invokes, concurrency {concurrency}, body pad {pad} B: {rate:.0} invokes/s · 202 latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms · errors {} · statuses {:?}",
        percentile(l, 0.5), percentile(l, 0.99), l.last().copied().unwrap_or(0.0), load.errors, load.statuses
    );
    report(
        "accept",
        json!({"requests": total, "concurrency": concurrency, "pad_bytes": pad, "invokes_per_s": rate,
        "p50_ms": percentile(l, 0.5), "p99_ms": percentile(l, 0.99), "max_ms": l.last(), "errors": load.errors}),
    );
    drop(server); // the receiver thread ends with the process
    daemon.stop();
}

fn e2e(total: usize, concurrency: usize, pad: usize, receiver_delay: Duration, name: &str) {
    let daemon = Daemon::start(&config());
    let (url, received, server) = start_receiver(daemon.secret(), receiver_delay, 2);
    let (idle_rss, _) = rss_mib(daemon.pid());
    let started = Instant::now();
    let load = drive(
        &daemon.base,
        &daemon.key,
        total,
        concurrency,
        invoke_body(Some(url), pad),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = received.lock().unwrap().arrivals.len();
        if got >= load.sent.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    let (_, peak_rss) = rss_mib(daemon.pid());
    let r = received.lock().unwrap();
    let mut latencies: Vec<f64> = load
        .sent
        .iter()
        .filter_map(|(id, t0)| {
            r.arrivals
                .get(id)
                .map(|t1| t1.duration_since(*t0).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let verified = r.arrivals.len();
    let rate = verified as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<11} {total} invokes, concurrency {concurrency}, pad {pad} B, receiver delay {receiver_delay:?}: {rate:.0} verified webhooks/s · invoke→webhook p50 {:.1} ms p99 {:.1} ms · verified {verified}/{} · duplicates {} · bad signatures {} · invoke errors {} · RSS idle {idle_rss:.1} MiB peak {peak_rss:.1} MiB",
        percentile(&latencies, 0.5), percentile(&latencies, 0.99), load.sent.len(), r.duplicates, r.bad_signatures, load.errors
    );
    report(
        name,
        json!({"requests": total, "concurrency": concurrency, "pad_bytes": pad, "receiver_delay_ms": receiver_delay.as_millis() as u64,
        "webhooks_per_s": rate, "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
        "verified": verified, "accepted": load.sent.len(), "duplicates": r.duplicates, "bad_signatures": r.bad_signatures,
        "invoke_errors": load.errors, "idle_rss_mib": idle_rss, "peak_rss_mib": peak_rss}),
    );
    drop(r);
    drop(server); // the receiver thread ends with the process
    daemon.stop();
}

fn sync(total: usize, concurrency: usize) {
    let daemon = Daemon::start(&config());
    let load = drive(
        &daemon.base,
        &daemon.key,
        total,
        concurrency,
        invoke_body(None, 0),
    );
    let rate = total as f64 / load.elapsed.as_secs_f64();
    let l = &load.latencies_ms;
    println!(
        "sync        {total} sync invokes, concurrency {concurrency}: {rate:.0} req/s · p50 {:.2} ms p99 {:.2} ms · errors {} · statuses {:?}",
        percentile(l, 0.5), percentile(l, 0.99), load.errors, load.statuses
    );
    report(
        "sync",
        json!({"requests": total, "concurrency": concurrency, "req_per_s": rate, "p50_ms": percentile(l, 0.5), "p99_ms": percentile(l, 0.99), "errors": load.errors}),
    );
    daemon.stop();
}

/// An approval step: async runs of it wait (holding no run slot) with their streams open.
const WAITING_DEFINITION: &str = r#"key = "waiting"
[[steps]]
id = "approve"
type = "approval"
question = "Go on?"
choices = ["yes", "no"]
"#;

/// Opens a live stream and reads its head and first event; the socket stays open.
fn open_stream(base: &str, key: &str, request_id: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "GET /v1/runs/{request_id}/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("approval.requested") {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the stream of {request_id} closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    socket
}

/// Sync invoke throughput with no live stream open, then with `streams` open (each on a run
/// waiting at an approval step), and sync invokes answered as streams (`"stream": true`);
/// the daemon's RSS at each point.
fn streams(total: usize, concurrency: usize, streams: usize) {
    let daemon = Daemon::start(&config());
    deploy(&daemon, "waiting", WAITING_DEFINITION);
    let sync_rate = |label: &str, body: Value| {
        let body = serde_json::to_vec(&body).unwrap();
        let load = drive(
            &daemon.base,
            &daemon.key,
            total,
            concurrency,
            Arc::new(move |_| body.clone()),
        );
        let rate = total as f64 / load.elapsed.as_secs_f64();
        let l = &load.latencies_ms;
        println!(
            "streams     {label}: {total} sync invokes, concurrency {concurrency}: {rate:.0} req/s · p50 {:.2} ms p99 {:.2} ms · errors {} · statuses {:?}",
            percentile(l, 0.5), percentile(l, 0.99), load.errors, load.statuses
        );
        (rate, percentile(l, 0.5), percentile(l, 0.99), load.errors)
    };
    let hello = json!({"deployment": "hello", "inputs": {"name": "Ada"}});
    let (before_rss, _) = rss_mib(daemon.pid());
    let without = sync_rate("no streams open", hello.clone());

    // Runs that wait at their approval step, each with a stream open on it.
    let agent = ureq::agent();
    let mut sockets = Vec::new();
    let opened = Instant::now();
    for _ in 0..streams {
        let reply: Value = agent
            .post(&format!("{}/v1/workflow/invoke", daemon.base))
            .set("Authorization", &format!("Bearer {}", daemon.key))
            .send_json(json!({"deployment": "waiting", "async": {"enabled": true, "callback_url": "http://127.0.0.1:9/hook"}}))
            .unwrap()
            .into_json()
            .unwrap();
        let id = reply["request_id"].as_str().unwrap().to_string();
        // Wait until the run is paused, so its stream replays the approval.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run: Value = agent
                .get(&format!("{}/v1/runs/{id}", daemon.base))
                .set("Authorization", &format!("Bearer {}", daemon.key))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            if run["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["status"] == "waiting"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{id} did not pause");
            std::thread::sleep(Duration::from_millis(2));
        }
        sockets.push(open_stream(&daemon.base, &daemon.key, &id));
    }
    let opened = opened.elapsed();
    let (open_rss, _) = rss_mib(daemon.pid());
    println!(
        "streams     {streams} streams open (runs waiting at an approval) in {:.1} s · RSS {before_rss:.1} MiB before, {open_rss:.1} MiB with them open",
        opened.as_secs_f64()
    );
    let with = sync_rate(&format!("{streams} streams open"), hello.clone());
    let mut streamed = hello;
    streamed["stream"] = json!(true);
    let as_stream = sync_rate("each invoke answered as a stream", streamed);
    let (after_rss, peak_rss) = rss_mib(daemon.pid());
    // Again without them: how much the machine itself drifted between the runs.
    drop(sockets);
    std::thread::sleep(Duration::from_millis(500));
    let again = sync_rate(
        "streams closed again",
        json!({"deployment": "hello", "inputs": {"name": "Ada"}}),
    );
    println!(
        "streams     throughput with {streams} streams open is {:.0} % of without ({:.0} % of the run after closing them) · RSS after {after_rss:.1} MiB, peak {peak_rss:.1} MiB",
        with.0 / without.0 * 100.0,
        with.0 / again.0 * 100.0
    );
    report(
        "streams",
        json!({"requests": total, "concurrency": concurrency, "streams": streams,
        "without": {"req_per_s": without.0, "p50_ms": without.1, "p99_ms": without.2, "errors": without.3},
        "with_streams": {"req_per_s": with.0, "p50_ms": with.1, "p99_ms": with.2, "errors": with.3},
        "without_again": {"req_per_s": again.0, "p50_ms": again.1, "p99_ms": again.2, "errors": again.3},
        "sync_stream_invokes": {"req_per_s": as_stream.0, "p50_ms": as_stream.1, "p99_ms": as_stream.2, "errors": as_stream.3},
        "rss_mib": {"before": before_rss, "streams_open": open_rss, "after": after_rss, "peak": peak_rss}}),
    );
    daemon.stop();
}

/// A run that keeps publishing for about a minute: a loop of 10 000 short delay steps (two
/// events per pass).
const TICKER_DEFINITION: &str = r#"key = "ticker"
[[inputs]]
name = "items"
type = "array"

[[steps]]
id = "each"
type = "loop"
for_each = "items"
max_iterations = 10000
  [[steps.steps]]
  id = "tick"
  type = "delay"
  ms = 5
"#;

/// Sync invoke throughput while `fanout` clients read one busy run's stream (a few hundred
/// step events a second, each sent to every client), against the same load without them.
fn fanout(total: usize, concurrency: usize, fanout: usize) {
    use std::io::Read;
    let daemon = Daemon::start(&config());
    deploy(&daemon, "ticker", TICKER_DEFINITION);
    let sync_rate = |label: &str| {
        let body =
            serde_json::to_vec(&json!({"deployment": "hello", "inputs": {"name": "Ada"}})).unwrap();
        let load = drive(
            &daemon.base,
            &daemon.key,
            total,
            concurrency,
            Arc::new(move |_| body.clone()),
        );
        let rate = total as f64 / load.elapsed.as_secs_f64();
        let l = &load.latencies_ms;
        println!(
            "fanout      {label}: {total} sync invokes, concurrency {concurrency}: {rate:.0} req/s · p50 {:.2} ms p99 {:.2} ms · errors {}",
            percentile(l, 0.5), percentile(l, 0.99), load.errors
        );
        (rate, percentile(l, 0.5), percentile(l, 0.99))
    };
    // Runs for minutes: far longer than the load below.
    let items: Vec<usize> = (0..10_000).collect();
    let reply: Value = ureq::post(&format!("{}/v1/workflow/invoke", daemon.base))
        .set("Authorization", &format!("Bearer {}", daemon.key))
        .send_json(json!({"deployment": "ticker", "inputs": {"items": items},
            "async": {"enabled": true, "callback_url": "http://127.0.0.1:9/hook"}}))
        .unwrap()
        .into_json()
        .unwrap();
    let id = reply["request_id"].as_str().unwrap().to_string();
    let without = sync_rate("busy run, nobody watching");
    let (rss_busy, _) = rss_mib(daemon.pid());

    let addr = daemon.base.trim_start_matches("http://").to_string();
    let mut sockets = Vec::new();
    for _ in 0..fanout {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            socket,
            "GET /v1/runs/{id}/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            daemon.key
        )
        .unwrap();
        socket.set_nonblocking(true).unwrap();
        sockets.push(socket);
    }
    // Every client reads all the time, so none falls behind and is dropped.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, received, closed) = (stop.clone(), received.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut open = vec![true; sockets.len()];
            while !stop.load(Ordering::Relaxed) {
                let mut idle = true;
                for (socket, open) in sockets.iter_mut().zip(open.iter_mut()) {
                    if !*open {
                        continue;
                    }
                    match socket.read(&mut buf) {
                        Ok(0) => {
                            *open = false;
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(n) => {
                            idle = false;
                            received.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            *open = false;
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let (rss_open, _) = rss_mib(daemon.pid());
    let before = received.load(Ordering::Relaxed);
    let watched = sync_rate(&format!("busy run, {fanout} clients reading its stream"));
    let bytes = received.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let dropped = closed.load(Ordering::Relaxed);
    println!(
        "fanout      throughput with {fanout} readers of one run is {:.0} % of without · they received {:.1} MiB meanwhile · {dropped} streams closed (dropped as too slow) · RSS {rss_busy:.1} MiB without readers, {rss_open:.1} MiB with them",
        watched.0 / without.0 * 100.0,
        bytes as f64 / 1024.0 / 1024.0
    );
    report(
        "fanout",
        json!({"requests": total, "concurrency": concurrency, "fanout": fanout,
        "without": {"req_per_s": without.0, "p50_ms": without.1, "p99_ms": without.2},
        "with_readers": {"req_per_s": watched.0, "p50_ms": watched.1, "p99_ms": watched.2},
        "stream_bytes": bytes, "streams_closed": dropped, "rss_mib": {"busy": rss_busy, "with_readers": rss_open}}),
    );
    daemon.stop();
}

fn recovery(due_events: usize) {
    // Empty database: time from spawn until the address file is written (listening).
    let mut empty = Vec::new();
    for _ in 0..5 {
        let d = Daemon::start(&config());
        empty.push(d.started_in.as_secs_f64() * 1000.0);
        d.stop();
    }
    empty.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // A database holding `due_events` undelivered events (their receiver is down).
    let daemon = Daemon::start(&config());
    let data = daemon.data();
    let dir = daemon.stop();
    seed_due_events(&data.join("hivelet.db"), due_events);
    let d = Daemon::start_in(dir, "[delivery]\nretry_schedule = [\"1h\"]\n");
    let loaded = d.started_in.as_secs_f64() * 1000.0;
    let (rss, _) = rss_mib(d.pid());
    println!(
        "recovery    start-up with an empty database: median {:.1} ms (of 5) · with {due_events} due events: {loaded:.1} ms, RSS {rss:.1} MiB",
        empty[2]
    );
    report(
        "recovery",
        json!({"empty_start_ms_median": empty[2], "empty_start_ms": empty, "due_events": due_events, "due_start_ms": loaded, "rss_mib": rss}),
    );
    d.stop();
}

/// Adds finished callback runs whose events are still due, pointing at a closed port.
fn seed_due_events(db: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut run = tx.prepare(
            "INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery, callback_url, inputs, metadata, output, created_at, started_at, ended_at, duration_ms)
             VALUES (?1, 'hello', 'default', 1, 'completed', 'api', 'callback', 'http://127.0.0.1:9/hook', '{}', '{}', '\"Hello\"', ?2, ?2, ?2, 0)").unwrap();
        let mut event = tx.prepare(
            "INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body, state, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, 'hello', 'workflow.completed', 'http://127.0.0.1:9/hook', ?3, 'retrying', ?4, ?4, ?4)").unwrap();
        let body = br#"{"event_type":"workflow.completed","request_id":"req_x","data":{"run_status":"completed","output":"Hello, Ada."}}"#.to_vec();
        for i in 0..n {
            let at = now - (n - i) as i64;
            let id = format!("req_{:012x}7000800{:013x}", at, i);
            run.execute(rusqlite::params![id, at]).unwrap();
            event
                .execute(rusqlite::params![
                    format!("evt_{}", &id[4..]),
                    id,
                    body,
                    now + 3_600_000
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn memory() {
    let daemon = Daemon::start(&config());
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = rss_mib(daemon.pid());
    daemon.stop();
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_hivelet"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / 1024.0
        / 1024.0;
    println!("memory      idle RSS after start {idle:.1} MiB · release binary {binary:.1} MiB (stripped) · peak RSS: see e2e");
    report(
        "memory",
        json!({"idle_rss_mib": idle, "binary_mib": binary}),
    );
}

/// A workflow of `n` template steps, each reading the one before (issue 12's benchmark).
fn chain_definition(n: usize) -> String {
    let mut toml = String::from(
        "key = \"steps20\"\n[[inputs]]\nname = \"name\"\ntype = \"text\"\n\n\
         [[steps]]\nid = \"s1\"\ntype = \"template\"\ntemplate = \"{{ name }}\"\n",
    );
    for i in 2..=n {
        toml.push_str(&format!(
            "\n[[steps]]\nid = \"s{i}\"\ntype = \"template\"\ntemplate = \"{{{{ s{}.output | length }}}}:{i}\"\n",
            i - 1
        ));
    }
    toml
}

/// A loop over an input array with one template step per pass.
const LOOP_DEFINITION: &str = r#"key = "loop1000"
[[inputs]]
name = "items"
type = "array"

[[steps]]
id = "each"
type = "loop"
for_each = "items"
as = "item"
max_iterations = 10000
  [[steps.steps]]
  id = "double"
  type = "template"
  template = "{{ item * 2 }}"
"#;

/// Deploys `toml` on the daemon (TOML body).
fn deploy(daemon: &Daemon, key: &str, toml: &str) {
    let resp = ureq::put(&format!("{}/v1/deployments/{key}", daemon.base))
        .set("Authorization", &format!("Bearer {}", daemon.key))
        .set("Content-Type", "application/toml")
        .send_string(toml);
    if let Err(e) = resp {
        let detail = match e {
            ureq::Error::Status(code, r) => {
                format!("{code}: {}", r.into_string().unwrap_or_default())
            }
            other @ ureq::Error::Transport(_) => other.to_string(),
        };
        panic!("deploying {key}: {detail}");
    }
}

/// Sync runs of one workflow: runs/s, latency and the daemon's memory (RSS now and peak).
fn workflow(name: &str, toml: &str, inputs: Value, total: usize, concurrency: usize) {
    let daemon = Daemon::start(&config());
    deploy(&daemon, name, toml);
    let (idle, _) = rss_mib(daemon.pid());
    let body = serde_json::to_vec(&json!({"deployment": name, "inputs": inputs})).unwrap();
    let load = drive(
        &daemon.base,
        &daemon.key,
        total,
        concurrency,
        Arc::new(move |_| body.clone()),
    );
    let (rss, hwm) = rss_mib(daemon.pid());
    let rate = total as f64 / load.elapsed.as_secs_f64();
    let l = &load.latencies_ms;
    println!(
        "{name:<11} {total} sync runs, concurrency {concurrency}: {rate:.1} runs/s · p50 {:.2} ms p99 {:.2} ms · errors {} · statuses {:?} · RSS idle {idle:.1} MiB, after {rss:.1} MiB, peak {hwm:.1} MiB",
        percentile(l, 0.5), percentile(l, 0.99), load.errors, load.statuses
    );
    report(
        name,
        json!({"runs": total, "concurrency": concurrency, "runs_per_s": rate, "p50_ms": percentile(l, 0.5), "p99_ms": percentile(l, 0.99), "errors": load.errors, "rss_idle_mib": idle, "rss_mib": rss, "hwm_mib": hwm}),
    );
    daemon.stop();
}

fn main() {
    hivelet::install_crypto_provider();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let scenarios: Vec<&str> = if args.is_empty() {
        vec!["all"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let total = env_usize("REQUESTS", 20_000);
    let concurrency = env_usize("CONCURRENCY", 64);
    let pad = env_usize("BODY_BYTES", 0);
    let all = scenarios.contains(&"all");
    let wants = |s: &str| all || scenarios.contains(&s);
    println!(
        "hivelet load benchmark: {} CPUs",
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1)
    );
    if wants("memory") {
        memory();
    }
    if wants("accept") {
        accept(total, concurrency, pad);
    }
    if wants("e2e") {
        e2e(total, concurrency, pad, Duration::ZERO, "e2e");
    }
    if wants("sync") {
        sync(total, concurrency);
    }
    if wants("slow-receiver") {
        e2e(
            total.min(5000),
            concurrency,
            pad,
            Duration::from_millis(50),
            "slow-recv",
        );
    }
    if wants("recovery") {
        recovery(env_usize("DUE_EVENTS", 100_000));
    }
    if wants("streams") {
        streams(total, concurrency, env_usize("STREAMS", 1000));
        fanout(total, concurrency, env_usize("FANOUT", 1000));
    }
    if scenarios.contains(&"steps20") {
        let runs = env_usize("WORKFLOW_RUNS", 2000);
        workflow(
            "steps20",
            &chain_definition(20),
            json!({"name": "Ada"}),
            runs,
            concurrency,
        );
    }
    if scenarios.contains(&"loop1000") {
        let runs = env_usize("WORKFLOW_RUNS", 200);
        let items: Vec<usize> = (0..1000).collect();
        workflow(
            "loop1000",
            LOOP_DEFINITION,
            json!({"items": items}),
            runs,
            concurrency,
        );
    }
}
