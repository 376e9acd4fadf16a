//! `cargo bench --bench runs_query`: `GET /v1/runs` filtered queries against a database with
//! 1 000 000 runs (issue 4's goal: p99 under 20 ms). Builds the database with the daemon's own
//! schema, starts the release daemon on it, and times each filter over loopback HTTP.
//! `RUNS=200000` makes a smaller database for a quick look.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::params;

const QUERIES_PER_FILTER: usize = 200;

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let built = Instant::now();
    let newest = seed(&data.join("hivelet.db"), runs);
    println!(
        "seeded {runs} runs in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    let mut daemon = start_daemon(dir.path(), &data);
    let base = wait_for_addr(&data);
    let key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();

    let cursor = {
        let page: serde_json::Value = agent
            .get(&format!("{base}/v1/runs?limit=50"))
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        page["next_cursor"].as_str().unwrap().to_string()
    };
    // The seed names a callback run's event after its run: `evt_` + the same hex.
    let event_id = {
        let page: serde_json::Value = agent
            .get(&format!("{base}/v1/runs?delivery=callback&limit=1"))
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        format!(
            "evt_{}",
            &page["runs"][0]["request_id"].as_str().unwrap()[4..]
        )
    };
    let hour_ago = newest - 3_600_000;
    let filters: Vec<(&str, String)> = vec![
        ("newest 50", "limit=50".into()),
        ("deployment", "deployment=orders&limit=50".into()),
        ("status=failed", "status=failed&limit=50".into()),
        ("delivery=callback", "delivery=callback&limit=50".into()),
        ("source=webhook", "source=webhook&limit=50".into()),
        (
            "deployment+status",
            "deployment=orders&status=failed&limit=50".into(),
        ),
        ("meta.customer=c42", "meta.customer=c42&limit=50".into()),
        ("meta.priority exists", "meta.priority&limit=50".into()),
        ("user=u7", "user=u7&limit=50".into()),
        ("last hour", format!("since={hour_ago}&limit=50")),
        ("page 2 (cursor)", format!("cursor={cursor}&limit=50")),
        ("limit=200", "limit=200".into()),
        (
            "delivery_state=failed",
            "delivery_state=failed&limit=50".into(),
        ),
        (
            "delivery_state=retrying",
            "delivery_state=retrying&limit=50".into(),
        ),
        ("status=waiting", "status=waiting&limit=50".into()),
        ("parent", format!("parent={cursor}&limit=50")),
        ("q=evt_…", format!("q={event_id}")),
    ];
    println!(
        "\n{:<24} {:>9} {:>9} {:>9} {:>7}",
        "filter", "p50 ms", "p99 ms", "max ms", "rows"
    );
    let mut report = Vec::new();
    for (name, query) in &filters {
        let mut times = Vec::with_capacity(QUERIES_PER_FILTER);
        let mut rows = 0;
        for _ in 0..QUERIES_PER_FILTER {
            let started = Instant::now();
            let body: serde_json::Value = agent
                .get(&format!("{base}/v1/runs?{query}"))
                .set("Authorization", &format!("Bearer {key}"))
                .call()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_json()
                .unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            rows = body["runs"].as_array().map_or(0, Vec::len);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            name,
            p(0.5),
            p(0.99),
            times[times.len() - 1],
            rows
        );
        report.push(serde_json::json!({"filter": name, "query": query, "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": times[times.len()-1], "rows": rows}));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::json!({"runs": runs, "queries_per_filter": QUERIES_PER_FILTER, "results": report});
    std::fs::write(
        out.join("runs_query.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("\nwrote target/bench-results/runs_query.json");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Writes `runs` finished runs with the daemon's schema: 10 deployments, a mix of statuses,
/// sources, callback runs with events, and metadata. Returns the newest creation time.
fn seed(db: &Path, runs: usize) -> i64 {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.execute_batch(include_str!("../schema.sql")).unwrap();
    // schema.sql is the whole schema of this version (`LATEST_VERSION` in src/store/migrate.rs);
    // a stale number here makes the daemon re-run later migrations and refuse to start.
    conn.pragma_update(None, "user_version", 7).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // One run every 100 ms, ending now.
    let first = now - runs as i64 * 100;
    let tx = conn.transaction().unwrap();
    {
        let mut run = tx
            .prepare(
                "INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery, callback_url,
                                   api_key_id, inputs, metadata, user, output, created_at, started_at, ended_at, duration_ms)
                 VALUES (?1, ?2, 'default', 1, ?3, ?4, ?5, ?6, 'key_bench', '{}', ?7, ?8, '\"ok\"', ?9, ?9, ?9 + 5, 5)",
            )
            .unwrap();
        let mut event = tx
            .prepare(
                "INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body, state,
                                     attempts, total_attempts, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'workflow.completed', 'http://127.0.0.1:9/cb', x'7b7d', ?5, 1, 1, ?4, ?4)",
            )
            .unwrap();
        let deployments = [
            "orders", "invoices", "emails", "reports", "search", "sync", "images", "billing",
            "alerts", "hello",
        ];
        for i in 0..runs {
            let at = first + i as i64 * 100;
            // UUIDv7 layout: 48-bit milliseconds first, so ids sort by time like the daemon's.
            let id = format!("req_{:012x}7{:03x}8{:015x}", at, i % 4096, i);
            let status = match i % 20 {
                0 => "failed",
                1 => "cancelled",
                _ => "completed",
            };
            let source = ["api", "api", "api", "webhook", "cli"][i % 5];
            let callback = i % 3 == 0;
            let metadata = if i % 10 == 0 {
                format!("{{\"customer\":\"c{}\",\"priority\":\"high\"}}", i % 1000)
            } else {
                format!("{{\"customer\":\"c{}\"}}", i % 1000)
            };
            let dep = deployments[i % deployments.len()];
            run.execute(params![
                id,
                dep,
                status,
                source,
                if callback { "callback" } else { "direct" },
                callback.then_some("http://127.0.0.1:9/cb"),
                metadata,
                format!("u{}", i % 100),
                at
            ])
            .unwrap();
            if callback {
                event
                    .execute(params![
                        format!("evt_{}", &id[4..]),
                        id,
                        dep,
                        at,
                        // A few failed deliveries for `delivery_state=failed`.
                        if i % 30 == 0 { "failed" } else { "delivered" }
                    ])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE").unwrap();
    first + (runs as i64 - 1) * 100
}

fn start_daemon(root: &Path, data: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hivelet"))
        .args(["--config"])
        .arg(root.join("hivelet.toml"))
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--bind", "127.0.0.1:0", "--no-examples"])
        .env("HIVELET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hivelet")
}

fn wait_for_addr(data: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("hivelet.addr")) {
            if data.join("admin.key").exists() {
                return addr.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
