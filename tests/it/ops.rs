//! Running hivelet for real (issue 5): started the way the systemd unit starts it, metrics
//! that move with the work, an OpenAPI document that covers every route and matches the
//! responses, backups of a live daemon, retention and purge, and the service installer.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A plain command of the binary, with none of the daemon's environment leaking in.
fn hivelet(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "HIVELET_CONFIG",
        "HIVELET_DATA_DIR",
        "HIVELET_BIND",
        "HIVELET_URL",
        "HIVELET_API_KEY",
        "STATE_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "NOTIFY_SOCKET",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

// ------------------------------------------------------------------------------------------
// Started like the systemd unit
// ------------------------------------------------------------------------------------------

#[test]
fn started_like_the_unit_files_land_in_the_systemd_directories_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("var/lib/hivelet");
    let etc = tmp.path().join("etc/hivelet");
    let home = tmp.path().join("home");
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(etc.join("workflows")).unwrap();
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(etc.join("hivelet.toml"), "bind = \"127.0.0.1:0\"\n").unwrap();
    fs::write(
        etc.join("workflows/echo.toml"),
        "key = \"echo\"\n[[inputs]]\nname = \"x\"\ntype = \"text\"\n[[steps]]\nid = \"s\"\ntype = \"template\"\ntemplate = \"{{ x }}\"\n[output]\ntemplate = \"{{ s.output }}\"\n",
    )
    .unwrap();
    // systemd's readiness protocol: a datagram socket named by NOTIFY_SOCKET.
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // `ExecStart=/usr/bin/hivelet serve`: no --config, no --data-dir.
    let mut cmd = hivelet(&["serve"]);
    cmd.env("STATE_DIRECTORY", &state)
        .env("CONFIGURATION_DIRECTORY", &etc)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(fs::File::create(tmp.path().join("stdout")).unwrap())
        .stderr(fs::File::create(tmp.path().join("stderr")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut received = String::new();
    let ready = wait_for("READY=1 on NOTIFY_SOCKET", || {
        let mut buf = [0u8; 512];
        if let Ok(n) = notify.recv(&mut buf) {
            received.push_str(&String::from_utf8_lossy(&buf[..n]));
            received.push('\n');
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "hivelet exited with {status}: {}",
                fs::read_to_string(tmp.path().join("stderr")).unwrap_or_default()
            );
        }
        received.contains("READY=1").then(|| received.clone())
    });
    assert!(ready.contains("READY=1"), "{ready}");

    // Ready means listening, with the address where the CLI looks for it.
    let url = fs::read_to_string(state.join("hivelet.addr")).unwrap();
    let key = fs::read_to_string(state.join("admin.key")).unwrap();
    let resp = send(
        "POST",
        &format!("{}/v1/workflow/invoke", url.trim()),
        &[
            ("Authorization", &format!("Bearer {}", key.trim())),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"deployment": "echo", "inputs": {"x": "from /etc"}}"#),
    );
    resp.expect_status(200);
    assert_eq!(
        resp.json()["output"],
        "from /etc",
        "workflows/ in CONFIGURATION_DIRECTORY are deployed"
    );

    assert_eq!(mode(&state), 0o700, "the data dir is 0700");
    for name in ["hivelet.db", "admin.key", "hivelet.addr"] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name} is 0600");
    }
    for entry in fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{} is 0600", path.display());
    }
    assert!(
        !home.join(".local").exists() && !home.join(".config").exists(),
        "nothing goes to the home directory under systemd"
    );

    // SIGTERM: systemd hears STOPPING=1, the daemon exits cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for("STOPPING=1 on NOTIFY_SOCKET", || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).ok()?;
        String::from_utf8_lossy(&buf[..n])
            .contains("STOPPING=1")
            .then_some(())
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "hivelet did not stop");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "exit status {status}");
}

// ------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------

/// `name{labels}` → value, from the Prometheus text.
fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let resp = app.get("/metrics", None);
    resp.expect_status(200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.contains("openmetrics-text") || c.contains("text/plain")),
        "content type: {:?}",
        resp.header("content-type")
    );
    resp.text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("{name} is not exported; got {:#?}", m.keys()))
}

/// A deployment whose only step calls `api` (held by a gate) and outputs its `v`.
fn held_workflow(api: &StubServer) -> String {
    format!(
        "key = \"held\"\n[[steps]]\nid = \"call\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"{}/work\"\n[output]\ntemplate = \"{{{{ call.output.v }}}}\"\n",
        api.url()
    )
}

fn async_hello(callback: &str) -> Value {
    json!({"deployment": "hello", "inputs": {"name": "Ada"}, "async": {"enabled": true, "callback_url": callback}})
}

#[test]
fn metrics_move_with_runs_and_deliveries() {
    let app = TestApp::start_with(
        "[runs]\nmax_concurrent = 1\n[delivery]\nretry_schedule = [\"1h\"]\n",
        &[],
        &[],
    );
    let ok = StubServer::json(json!({"ok": true}));
    let failing = StubServer::start(|_, _| StubReply::text(500, "down"));
    let gate = Gate::new();
    let gated = {
        let gate = gate.clone();
        StubServer::start(move |_, _| {
            gate.wait();
            StubReply::json(200, &json!({"v": "done"}))
        })
    };
    app.deploy_ok("held", &held_workflow(&gated));
    let before = scrape(&app);
    assert_eq!(metric(&before, "hivelet_run_slots"), 1.0);
    for name in [
        "hivelet_events_waiting",
        "hivelet_destinations_paused",
        "hivelet_deliveries_in_flight",
        "hivelet_queue_depth",
        "hivelet_run_slots_in_use",
    ] {
        assert_eq!(metric(&before, name), 0.0, "{name} at rest");
    }

    // A sync run, a delivered callback and one that fails and waits an hour to retry.
    app.invoke(&hello("Ada")).expect_status(200);
    app.invoke(&async_hello(&format!("{}/hook", ok.url())))
        .expect_status(202);
    app.invoke(&async_hello(&format!("{}/hook", failing.url())))
        .expect_status(202);
    ok.wait_for_requests(1);
    failing.wait_for_requests(1);
    let after = wait_for(
        "both attempts to be counted and the failed event to wait",
        || {
            let m = scrape(&app);
            let moved = |name: &str| metric(&m, name) - metric(&before, name);
            // The attempt is counted when it ends; its event is back in the waiting set a
            // moment later, when the retry supervisor hears of it.
            (moved("hivelet_deliveries_total{outcome=\"delivered\"}") == 1.0
                && moved("hivelet_deliveries_total{outcome=\"retrying\"}") == 1.0
                && metric(&m, "hivelet_events_waiting") == 1.0)
                .then_some(m)
        },
    );
    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(moved("hivelet_runs_ended_total{status=\"completed\"}"), 3.0);
    assert_eq!(moved("hivelet_runs_ended_total{status=\"failed\"}"), 0.0);
    assert_eq!(moved("hivelet_runs_admitted_total{mode=\"sync\"}"), 1.0);
    assert_eq!(moved("hivelet_runs_admitted_total{mode=\"async\"}"), 2.0);
    assert_eq!(
        moved("hivelet_run_duration_seconds_count{status=\"completed\"}"),
        3.0
    );
    assert_eq!(
        moved("hivelet_delivery_attempt_duration_seconds_count"),
        2.0
    );
    assert_eq!(moved("hivelet_deliveries_total{outcome=\"failed\"}"), 0.0);
    assert!(moved("hivelet_store_batch_size_count") >= 1.0);
    assert!(moved("hivelet_store_batch_size_sum") >= moved("hivelet_store_batch_size_count"));
    assert!(moved("hivelet_store_commit_duration_seconds_count") >= 1.0);
    assert_eq!(
        metric(&after, "hivelet_events_waiting"),
        1.0,
        "the failed event waits for its retry"
    );

    // One run holds the only slot; the next async run queues behind it.
    app.invoke(&json!({"deployment": "held", "async": {"enabled": true, "callback_url": format!("{}/hook", ok.url())}}))
        .expect_status(202);
    gated.wait_for_requests(1);
    let queued = app.invoke(&json!({"deployment": "held", "async": {"enabled": true, "callback_url": format!("{}/hook", ok.url())}}));
    assert_eq!(queued.json()["run_status"], "queued", "{queued}");
    let busy = scrape(&app);
    assert_eq!(metric(&busy, "hivelet_run_slots_in_use"), 1.0);
    assert_eq!(metric(&busy, "hivelet_queue_depth"), 1.0);
    assert_eq!(metric(&busy, "hivelet_runs{state=\"queued\"}"), 1.0);
    assert_eq!(metric(&busy, "hivelet_runs{state=\"running\"}"), 1.0);
    gate.open();
    ok.wait_for_requests(3);
    let done = wait_for("the held runs to end", || {
        let m = scrape(&app);
        (metric(&m, "hivelet_runs_ended_total{status=\"completed\"}")
            - metric(&before, "hivelet_runs_ended_total{status=\"completed\"}")
            == 5.0
            && metric(&m, "hivelet_queue_depth") == 0.0)
            .then_some(m)
    });
    assert_eq!(metric(&done, "hivelet_run_slots_in_use"), 0.0);
}

// ------------------------------------------------------------------------------------------
// OpenAPI
// ------------------------------------------------------------------------------------------

/// A concrete URL path for a documented template.
fn fill(template: &str) -> String {
    template
        .replace("{id}", "req_00000000000000000000000000000000")
        .replace("{key}", "hello")
        .replace("{step}", "s")
        .replace("{deployment}", "hello")
        .replace("{variant}", "default")
}

#[test]
fn openapi_is_valid_documents_every_route_and_matches_real_responses() {
    let app = TestApp::start();
    let spec_resp = app.get("/openapi.json", None);
    spec_resp.expect_status(200);
    let spec = spec_resp.json();
    assert_eq!(spec["openapi"], "3.1.0");

    // Every documented operation is served: no 404 "No such route." and no 405.
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let method = method.to_ascii_uppercase();
            let body = matches!(method.as_str(), "POST" | "PUT").then_some(&b"{}"[..]);
            let r = app.request(
                &method,
                &fill(path),
                None,
                &[("Content-Type", "application/json")],
                body,
            );
            assert_ne!(
                r.status, 405,
                "{method} {path} is documented but not served: {r}"
            );
            assert!(
                !(r.status == 404 && r.text.contains("No such route")),
                "{method} {path} is documented but not served: {r}"
            );
        }
    }
    assert!(operations >= 27, "only {operations} operations documented");
    for (method, path) in [
        ("post", "/v1/workflow/invoke"),
        ("get", "/v1/runs/{id}"),
        ("post", "/v1/runs/purge"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }

    // Real responses, checked against the schemas the document declares for them.
    let receiver = StubServer::json(json!({}));
    let mut samples = Vec::new();
    let mut sample = |method: &str, path: &str, resp: &Resp| {
        samples.push(
            json!({"method": method, "path": path, "status": resp.status, "body": resp.json()}),
        );
    };
    let sync = app.invoke(&hello("Ada"));
    sample("POST", "/v1/workflow/invoke", &sync);
    let accepted = app.invoke(&async_hello(&format!("{}/hook", receiver.url())));
    sample("POST", "/v1/workflow/invoke", &accepted);
    sample(
        "POST",
        "/v1/workflow/invoke",
        &app.invoke_with_key("hvk_nope", &hello("Ada")),
    );
    sample(
        "POST",
        "/v1/workflow/invoke",
        &app.invoke(&json!({"inputs": {}})),
    );
    receiver.wait_for_requests(1);
    let id = accepted.json()["request_id"].as_str().unwrap().to_string();
    wait_for("the attempt to be recorded", || {
        let r = app.admin_get(&format!("/v1/runs/{id}"));
        (r.json()["async"]["delivery_state"] == "delivered").then_some(())
    });
    let sync_id = sync.json()["request_id"].as_str().unwrap().to_string();
    for (path, concrete) in [
        ("/v1/runs", "/v1/runs".to_string()),
        ("/v1/runs/{id}", format!("/v1/runs/{id}")),
        ("/v1/runs/{id}", format!("/v1/runs/{sync_id}")),
        ("/v1/runs/{id}/attempts", format!("/v1/runs/{id}/attempts")),
        (
            "/v1/public/requests/{id}",
            format!("/v1/public/requests/{id}"),
        ),
        ("/v1/workflow_runs/{id}", format!("/v1/workflow_runs/{id}")),
        ("/v1/deployments", "/v1/deployments".to_string()),
        ("/v1/deployments/{key}", "/v1/deployments/hello".to_string()),
        (
            "/v1/deployments/{key}/snippet",
            "/v1/deployments/hello/snippet?async=true".to_string(),
        ),
        ("/v1/keys", "/v1/keys".to_string()),
        ("/healthz", "/healthz".to_string()),
    ] {
        sample("GET", path, &app.admin_get(&concrete));
    }
    let redeliver = app.post_json(
        &format!("/v1/runs/{id}/redeliver"),
        Some(&app.admin_key),
        &json!({}),
    );
    sample("POST", "/v1/runs/{id}/redeliver", &redeliver);
    let cancel = app.post_json(
        &format!("/v1/runs/{sync_id}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    );
    sample("POST", "/v1/runs/{id}/cancel", &cancel);
    let created = app.post_json(
        "/v1/keys",
        Some(&app.admin_key),
        &json!({"name": "ci", "role": "invoke"}),
    );
    sample("POST", "/v1/keys", &created);
    let invoke_key = created.json()["key"].as_str().unwrap().to_string();
    sample("GET", "/v1/keys", &app.get("/v1/keys", Some(&invoke_key)));
    sample(
        "POST",
        "/v1/runs/purge",
        &app.post_json(
            "/v1/runs/purge",
            Some(&app.admin_key),
            &json!({"before": 0}),
        ),
    );
    sample(
        "POST",
        "/v1/deployments/{key}/rotate-secret",
        &app.post_json(
            "/v1/deployments/hello/rotate-secret",
            Some(&app.admin_key),
            &json!({}),
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("openapi.json");
    let samples_path = dir.path().join("samples.json");
    fs::write(&spec_path, &spec_resp.text).unwrap();
    fs::write(&samples_path, serde_json::to_vec(&samples).unwrap()).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(repo_path("tests/python/openapi_check.py"))
        .arg(&spec_path)
        .arg(&samples_path);
    let out = run_command(cmd, dir.path());
    assert!(out.status.success(), "{}", describe(&out));
}

// ------------------------------------------------------------------------------------------
// Backups
// ------------------------------------------------------------------------------------------

#[test]
fn backup_of_a_live_daemon_under_load_opens_and_restores() {
    let app = TestApp::start();
    let stop = Arc::new(AtomicBool::new(false));
    let invoked = Arc::new(AtomicUsize::new(0));
    let load = {
        let (url, key) = (app.url("/v1/workflow/invoke"), app.admin_key.clone());
        let (stop, invoked) = (stop.clone(), invoked.clone());
        std::thread::spawn(move || {
            let body = hello("Load").to_string();
            let auth = format!("Bearer {key}");
            // Bounded: at most 2000 invokes, and never past the deadline.
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < REQUEST_TIMEOUT {
                let r = send(
                    "POST",
                    &url,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    Some(body.as_bytes()),
                );
                assert_eq!(r.status, 200, "invoke during backup: {r}");
                if invoked.fetch_add(1, Ordering::SeqCst) >= 2000 {
                    break;
                }
            }
        })
    };
    wait_for("some runs under load", || {
        (invoked.load(Ordering::SeqCst) >= 20).then_some(())
    });

    let mut copies = Vec::new();
    for n in 0..3 {
        let file = app.dir.join(format!("backup-{n}.db"));
        let out = app.cli(&["backup", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(out_text(&out).0.contains("backed up"), "{}", describe(&out));
        copies.push((file, invoked.load(Ordering::SeqCst)));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();

    let mut last = 0;
    for (file, invoked_after) in &copies {
        assert_eq!(mode(file), 0o600, "a backup holds secrets: owner only");
        let conn =
            rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let runs: i64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert!(
            runs >= 20 && runs as usize <= *invoked_after + 1,
            "{}: {runs} runs",
            file.display()
        );
        assert!(runs >= last, "later copies hold at least as many runs");
        last = runs;
    }

    // A backup never overwrites.
    let again = app.cli(&["backup", copies[0].0.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        out_text(&again).1.contains("already exists"),
        "{}",
        describe(&again)
    );

    // Restored into a fresh data dir, the copy serves its runs.
    let mut restored = TestApp::builder().prepare();
    fs::create_dir_all(&restored.data_dir).unwrap();
    fs::copy(&copies[2].0, restored.data_dir.join("hivelet.db")).unwrap();
    fs::write(restored.data_dir.join("admin.key"), &app.admin_key).unwrap();
    restored.spawn();
    let list = restored.admin_get("/v1/runs?limit=200");
    list.expect_status(200);
    assert!(list.json()["runs"].as_array().unwrap().len() as i64 >= last.min(200));
}

// ------------------------------------------------------------------------------------------
// Retention and purge
// ------------------------------------------------------------------------------------------

#[test]
fn runs_purge_deletes_finished_runs_but_keeps_pending_deliveries() {
    let app = TestApp::start_with("[delivery]\nretry_schedule = [\"1h\"]\n", &[], &[]);
    let failing = StubServer::start(|_, _| StubReply::text(500, "down"));
    let ok = StubServer::json(json!({}));
    let mut finished = Vec::new();
    for name in ["a", "b"] {
        finished.push(app.invoke(&hello(name)).json()["request_id"].clone());
    }
    let delivered = app.invoke(&async_hello(&format!("{}/hook", ok.url())));
    finished.push(delivered.json()["request_id"].clone());
    let retrying = app.invoke(&async_hello(&format!("{}/hook", failing.url())));
    let retrying_id = retrying.json()["request_id"].as_str().unwrap().to_string();
    ok.wait_for_requests(1);
    failing.wait_for_requests(1);
    let delivered_id = delivered.json()["request_id"].as_str().unwrap().to_string();
    wait_for("the callback to be delivered", || {
        (app.admin_get(&format!("/v1/runs/{delivered_id}")).json()["async"]["delivery_state"]
            == "delivered")
            .then_some(())
    });
    let before = scrape(&app);

    // Only admins purge, and `before` is checked.
    let invoke_key = app.create_key("caller", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    app.post_json("/v1/runs/purge", Some(&invoke_key), &json!({"before": 0}))
        .expect_error(403, "forbidden", None);
    let bad = app
        .post_json(
            "/v1/runs/purge",
            Some(&app.admin_key),
            &json!({"before": "yesterday-ish"}),
        )
        .expect_error(422, "validation_error", None);
    assert_eq!(bad["field"], "before");

    // Nothing ended before the epoch.
    let none = app.post_json(
        "/v1/runs/purge",
        Some(&app.admin_key),
        &json!({"before": 0}),
    );
    assert_eq!(none.json()["purged"], 0, "{none}");

    // Everything that ended until now goes, except the run whose webhook still retries.
    std::thread::sleep(Duration::from_millis(5));
    let out = app.cli(&["runs", "purge", "--before", "0s"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        out_text(&out).0.contains("purged 3 runs"),
        "{}",
        describe(&out)
    );
    for id in &finished {
        app.admin_get(&format!("/v1/runs/{}", id.as_str().unwrap()))
            .expect_error(404, "not_found", Some("Run not found."));
    }
    let kept = app.admin_get(&format!("/v1/runs/{retrying_id}"));
    kept.expect_status(200);
    assert_eq!(kept.json()["async"]["delivery_state"], "retrying");
    let listed = app.admin_get("/v1/runs").json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");
    let after = scrape(&app);
    assert_eq!(
        metric(&after, "hivelet_runs_purged_total") - metric(&before, "hivelet_runs_purged_total"),
        3.0
    );
    // Invokes still work after a purge.
    app.invoke(&hello("after")).expect_status(200);
}

#[test]
fn retention_deletes_old_finished_runs_by_itself() {
    let app = TestApp::start_with("[retention]\nruns = \"1s\"\n", &[], &[]);
    let old = app.invoke(&hello("old")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("retention to delete the run", || {
        (app.admin_get(&format!("/v1/runs/{old}")).status == 404).then_some(())
    });
    wait_for("the sweep to be logged", || {
        app.stderr()
            .contains("retention: old runs deleted")
            .then_some(())
    });
    // New runs are unaffected until they age.
    let fresh = app.invoke(&hello("fresh")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.admin_get(&format!("/v1/runs/{fresh}"))
        .expect_status(200);
}

// ------------------------------------------------------------------------------------------
// Service installer
// ------------------------------------------------------------------------------------------

fn run_in(dir: &Path, mut cmd: Command) -> (bool, String, String) {
    let out = run_command(
        {
            cmd.current_dir(dir);
            cmd
        },
        dir,
    );
    let (stdout, stderr) = out_text(&out);
    (out.status.success(), stdout, stderr)
}

#[test]
fn service_install_dry_run_prints_each_step_and_the_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = hivelet(&[
        "service",
        "install",
        "--dry-run",
        "--manager",
        "systemd",
        "--bin",
        "/usr/bin/hivelet",
    ]);
    cmd.env("HOME", tmp.path());
    let (ok, out, err) = run_in(tmp.path(), cmd);
    assert!(ok, "{out}{err}");
    for needle in [
        "dry run",
        "[1/4] write /etc/systemd/system/hivelet.service (mode 0644)",
        "ExecStart=/usr/bin/hivelet serve\n",
        "Type=notify",
        "[2/4] ",
        " /etc/hivelet/hivelet.toml",
        "[3/4] run `systemctl daemon-reload`",
        "[4/4] run `systemctl enable --now hivelet.service`",
        "journalctl -u hivelet",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    // launchd, per user: the plist, with log paths in the user's Library.
    let mut cmd = hivelet(&[
        "service",
        "install",
        "--user",
        "--dry-run",
        "--manager",
        "launchd",
        "--bin",
        "/usr/local/bin/hivelet",
    ]);
    cmd.env("HOME", tmp.path());
    let (ok, out, err) = run_in(tmp.path(), cmd);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Library/LaunchAgents/com.hivelet.agent.plist"),
        "{out}"
    );
    assert!(out.contains("run `launchctl load -w"), "{out}");
    assert!(
        out.contains(&format!(
            "{}/Library/Logs/hivelet/hivelet.err.log",
            tmp.path().display()
        )),
        "{out}"
    );
}

#[test]
fn service_install_under_a_root_writes_valid_files_and_uninstall_removes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let home = tmp.path().join("home/ada");
    fs::create_dir_all(&home).unwrap();
    let root_arg = root.to_str().unwrap();
    let install = |args: &[&str]| {
        let mut all = vec!["service"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--root", root_arg, "--bin", "/usr/bin/hivelet"]);
        let mut cmd = hivelet(&all);
        cmd.env("HOME", &home);
        let (ok, out, err) = run_in(tmp.path(), cmd);
        assert!(ok, "{all:?}\n{out}{err}");
        out
    };

    // System-wide systemd: the unit and the example config; systemctl is not run.
    let out = install(&["install", "--manager", "systemd"]);
    assert!(
        out.contains("skip `systemctl daemon-reload` (--root"),
        "{out}"
    );
    let unit = root.join("etc/systemd/system/hivelet.service");
    assert_eq!(mode(&unit), 0o644);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("\nExecStart=/usr/bin/hivelet serve\n"),
        "{text}"
    );
    let config = root.join("etc/hivelet/hivelet.toml");
    assert!(fs::read_to_string(&config).unwrap().contains("[retention]"));
    // The config someone edited is kept on a second install.
    fs::write(&config, "bind = \"127.0.0.1:9999\"\n").unwrap();
    let out = install(&["install", "--manager", "systemd"]);
    assert!(out.contains("keep "), "{out}");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "bind = \"127.0.0.1:9999\"\n"
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let checkable = tmp.path().join("hivelet.service");
        fs::write(
            &checkable,
            text.replace("ExecStart=/usr/bin/hivelet", &format!("ExecStart={BIN}")),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&checkable)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Per user: under ~/.config, the config private to the user.
    install(&["install", "--user", "--manager", "systemd"]);
    let rel_home = home.strip_prefix("/").unwrap();
    let user_unit = root
        .join(rel_home)
        .join(".config/systemd/user/hivelet.service");
    assert!(fs::read_to_string(&user_unit)
        .unwrap()
        .contains("WantedBy=default.target"));
    assert_eq!(
        mode(&root.join(rel_home).join(".config/hivelet/hivelet.toml")),
        0o600
    );

    // launchd: both plists parse as property lists.
    install(&["install", "--manager", "launchd"]);
    install(&["install", "--user", "--manager", "launchd"]);
    for plist in [
        root.join("Library/LaunchDaemons/com.hivelet.daemon.plist"),
        root.join(rel_home)
            .join("Library/LaunchAgents/com.hivelet.agent.plist"),
    ] {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import plistlib, sys; p = plistlib.load(open(sys.argv[1], 'rb')); \
             assert p['RunAtLoad'] and p['ProgramArguments'][0] == '/usr/bin/hivelet', p; print(p['Label'])",
        ])
        .arg(&plist);
        let (ok, out, err) = run_in(tmp.path(), cmd);
        assert!(ok, "{}: {out}{err}", plist.display());
    }

    // Uninstall removes the unit, keeps the configuration.
    let out = install(&["uninstall", "--manager", "systemd"]);
    assert!(
        out.contains("skip `systemctl disable --now hivelet.service`"),
        "{out}"
    );
    assert!(!unit.exists());
    assert!(config.exists());
}

/// The files a service is made of are where the README and the installer say.
#[test]
fn packaged_units_and_plists_are_in_the_repository() {
    for rel in [
        "packaging/systemd/hivelet.service",
        "packaging/systemd/hivelet-user.service",
        "packaging/launchd/com.hivelet.agent.plist",
        "packaging/launchd/com.hivelet.daemon.plist",
        "packaging/debian/postinst",
    ] {
        let path: PathBuf = repo_path(rel);
        assert!(path.exists(), "{rel} is missing");
    }
    let unit = fs::read_to_string(repo_path("packaging/systemd/hivelet.service")).unwrap();
    // Each option has a one-line comment right above it.
    let lines: Vec<&str> = unit.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains('=') && !line.starts_with('#') {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "`{line}` has no comment above it"
            );
        }
    }
    for option in [
        "StateDirectory=",
        "ConfigurationDirectory=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "Type=notify",
    ] {
        assert!(unit.contains(option), "{option} missing");
    }
}

// ------------------------------------------------------------------------------------------
// Logs
// ------------------------------------------------------------------------------------------

#[test]
fn json_logs_have_request_run_and_delivery_spans_and_never_a_secret() {
    let app = TestApp::start_with("", &["--log-format", "json"], &[]);
    let receiver = StubServer::json(json!({}));
    let secret = app.admin_get("/v1/deployments/hello").json()["signing_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let sync = app.invoke(&hello("Ada"));
    sync.expect_status(200);
    let request_id = sync.json()["request_id"].as_str().unwrap().to_string();
    let callback = format!("{}/hook", receiver.url());
    let query_secret: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let trigger = app.post_json(
        &format!("/v1/workflow/webhooks/hello/variants/default?secret={query_secret}"),
        None,
        &json!({"name": "Bob", "async": {"callback_url": callback}}),
    );
    trigger.expect_status(202);
    receiver.wait_for_requests(1);
    let lines = wait_for("the delivery to be logged", || {
        let text = app.stderr();
        text.contains("webhook delivered").then_some(text)
    });

    let mut request_line = None;
    let mut run_line = None;
    let mut deliver_line = None;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let spans = entry["spans"].as_array().cloned().unwrap_or_default();
        let in_span = |name: &str| spans.iter().find(|s| s["name"] == name).cloned();
        if let Some(http) = in_span("http") {
            if http["path"] == "/v1/workflow/invoke" && entry["fields"]["status"] == 200 {
                request_line = Some((http, entry.clone()));
            }
        }
        if let Some(run) = in_span("run") {
            if run["request_id"] == request_id.as_str() {
                run_line = Some(run);
            }
        }
        if let Some(deliver) = in_span("deliver") {
            deliver_line = Some(deliver);
        }
    }
    let (http, entry) = request_line.expect("an access log line for the invoke");
    assert_eq!(http["method"], "POST");
    assert!(entry["fields"]["duration_ms"].is_number(), "{entry}");
    assert!(run_line.is_some(), "no line in the run's span");
    let deliver = deliver_line.expect("a line in a deliver span");
    assert!(deliver["event_id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(deliver["attempt"], 1);

    assert!(
        !lines.contains(&app.admin_key),
        "the API key appears in the log"
    );
    assert!(
        !lines.contains(&secret) && !lines.contains(&query_secret),
        "the signing secret appears in the log"
    );
    assert!(!lines.contains("secret="), "a query string was logged");
}
