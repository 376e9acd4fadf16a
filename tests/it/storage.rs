//! Storage faults (issue 7). A full disk: the data dir on a small tmpfs that the test fills
//! up; invokes answer 503 and store nothing, what was accepted stays, and service resumes
//! when space returns. A read-only database: the data dir on an ext4 image that the kernel
//! turns read-only after an error; invokes answer 503 naming the cause, reads go on, runs in
//! flight keep their end until the repair, and everything accepted is delivered after it.
//! Both need root for `mount` (as CI runs); elsewhere the tests say so and skip.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

/// A file system mounted on a test's data dir, unmounted however the test ends (declared
/// before the app, so dropped after it).
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size}");
        run_ok(
            "mount",
            &["-t", "tmpfs", "-o", &options, "tmpfs", path_str(dir)],
        )
        .then(|| Mounted(dir.to_path_buf()))
    }

    /// An ext4 file system in `image`, which turns itself read-only on an error, as ext4
    /// data disks are usually mounted.
    fn ext4(image: &Path, dir: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::File::create(image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let made = run_ok("mkfs.ext4", &["-q", "-F", path_str(image)]);
        let mounted = made && Self::mount_ext4(image, dir);
        mounted.then(|| Mounted(dir.to_path_buf()))
    }

    fn mount_ext4(image: &Path, dir: &Path) -> bool {
        run_ok(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                path_str(image),
                path_str(dir),
            ],
        )
    }

    /// The loop device behind this mount, e.g. `loop3`.
    fn device_name(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-no", "SOURCE"])
            .arg(&self.0)
            .output()
            .unwrap();
        let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
        source.rsplit('/').next().unwrap().to_string()
    }

    fn options(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-no", "OPTIONS"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Writes to `path` until the file system refuses (ENOSPC).
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
}

fn big_body(i: usize) -> Value {
    // 200 KiB of metadata: more than the WAL can take without growing the file.
    json!({"deployment": "hello", "inputs": {"name": format!("n{i}")}, "metadata": {"pad": "x".repeat(200 * 1024)}})
}

/// Invokes each body with a callback to `hook` and waits until all are delivered.
fn accepted_and_delivered(
    app: &TestApp,
    hook: &str,
    bodies: impl Iterator<Item = Value>,
) -> Vec<String> {
    let ids: Vec<String> = bodies.map(|body| invoke_async(app, body, hook)).collect();
    for id in &ids {
        wait_delivery(app, id, "delivered");
    }
    ids
}

/// The request ids `GET /v1/runs` lists (newest 200).
fn listed_run_ids(app: &TestApp) -> Vec<String> {
    let listed = app.admin_get("/v1/runs?limit=200");
    listed.expect_status(200);
    listed.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_full_disk_gives_503_keeps_what_was_accepted_and_recovers() {
    let mut app = TestApp::builder().config(FAST).prepare();
    let Some(_tmpfs) = Mounted::tmpfs(&app.data_dir, "16m") else {
        skip("storage fault test skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    app.spawn();
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let hook = format!("{}/hook", receiver.url());

    let before = accepted_and_delivered(&app, &hook, (0..3).map(big_body));

    let filler = app.data_dir.join("filler");
    fill(&filler);
    let mut refused = 0;
    for i in 0..5 {
        let mut body = big_body(100 + i);
        body["async"] = json!({"enabled": true, "callback_url": hook});
        let r = app.invoke(&body);
        if r.status == 503 {
            let err = r.expect_error(503, "unavailable", None);
            let message = err["message"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                message.contains("full") || message.contains("cannot be written"),
                "{err}"
            );
            refused += 1;
        } else {
            r.expect_status(202);
        }
    }
    assert!(refused > 0, "a full disk must refuse some invoke with 503");

    // Nothing accepted before was lost; the daemon still answers reads.
    let ids = listed_run_ids(&app);
    for id in &before {
        assert!(
            ids.contains(id),
            "run {id} accepted before the disk filled is missing"
        );
    }

    // Space returns: service resumes, and everything that got a 202 is delivered.
    std::fs::remove_file(&filler).unwrap();
    let after = invoke_async(&app, big_body(200), &hook);
    wait_delivery(&app, &after, "delivered");
    for run in app.admin_get("/v1/runs?limit=200").json()["runs"]
        .as_array()
        .unwrap()
    {
        let id = run["request_id"].as_str().unwrap();
        wait_delivery(&app, id, "delivered");
    }
    app.kill();
}

/// Sleeps, so runs are still going when the file system turns read-only.
const PAUSE_WORKFLOW: &str = r#"
key = "pause"

[[inputs]]
name = "name"
type = "text"

[[steps]]
id = "wait"
type = "delay"
ms = 1500

[output]
template = "paused {{ name }}"
"#;

/// The data dir on an ext4 file system that the kernel turns read-only after an error (the
/// test triggers one through `/sys/fs/ext4/<dev>/trigger_fs_error`, the way a failing disk
/// would). While it is read-only, invokes get 503 naming the cause, reads keep working, and
/// runs that were mid-flight keep trying to store their end. Linux refuses to remount a file
/// system read-write after its journal was aborted, so the repair is what an operator does:
/// stop, `e2fsck`, mount, start. After it every run accepted before is delivered.
#[test]
fn a_read_only_database_gives_503_keeps_what_was_accepted_and_resumes_after_repair() {
    // A short grace: the paused runs cannot store their end, so a stop waits all of it.
    let config = format!("{FAST}\n[runs]\nshutdown_grace = \"1s\"\n");
    let mut app = TestApp::builder()
        .config(&config)
        .file("workflows/pause.toml", PAUSE_WORKFLOW)
        .prepare();
    let image = app.dir.join("disk.img");
    let Some(mount) = Mounted::ext4(&image, &app.data_dir) else {
        skip("read-only database test skipped: cannot mount an ext4 image here (needs root)");
        return;
    };
    let trigger = PathBuf::from(format!(
        "/sys/fs/ext4/{}/trigger_fs_error",
        mount.device_name()
    ));
    if !trigger.exists() {
        skip("read-only database test skipped: this kernel has no ext4 trigger_fs_error");
        return;
    }
    app.spawn();
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let hook = format!("{}/hook", receiver.url());

    let delivered_before =
        accepted_and_delivered(&app, &hook, (0..3).map(|i| hello(&format!("d{i}"))));
    let mid_flight: Vec<String> = (0..3)
        .map(|i| {
            let body = json!({"deployment": "pause", "inputs": {"name": format!("p{i}")}});
            invoke_async(&app, body, &hook)
        })
        .collect();

    std::fs::write(&trigger, "hivelet read-only test\n").unwrap();
    let options = mount.options();
    assert!(
        options.split(',').any(|o| o == "ro" || o == "emergency_ro"),
        "the file system should now be read-only: {options}"
    );

    for body in [
        hello("Ro"),
        json!({"deployment": "hello", "inputs": {"name": "Ro"}, "async": {"enabled": true, "callback_url": hook}}),
    ] {
        let r = app.invoke(&body);
        let err = r.expect_error(503, "unavailable", None);
        assert!(
            err["message"]
                .as_str()
                .unwrap_or_default()
                .contains("read-only"),
            "the error names the cause: {err}"
        );
    }
    // Reads still work, and show everything that was accepted.
    let ids = listed_run_ids(&app);
    assert_eq!(ids.len(), 6, "{ids:?}");
    for id in delivered_before.iter().chain(&mid_flight) {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    // The paused runs end while nothing can be written; their end waits, it is not dropped.
    wait_for("a run's end to be retried while read-only", || {
        app.stderr()
            .contains("cannot store the run's end yet; retrying")
            .then_some(())
    });

    // The operator's repair: stop, check the file system, mount it again, start.
    app.stop();
    assert!(run_ok("umount", &[path_str(&app.data_dir)]), "umount");
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y", path_str(&image)])
        .output()
        .unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {fsck:?}"
    );
    // Started on a file system mounted read-only, the daemon refuses at once and says
    // why (a service manager restarts it; nothing is half-served).
    assert!(run_ok(
        "mount",
        &["-o", "loop,ro", path_str(&image), path_str(&app.data_dir)]
    ));
    let refused = app.serve_expecting_exit();
    let (_, stderr) = out_text(&refused);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(run_ok("umount", &[path_str(&app.data_dir)]), "umount");
    assert!(Mounted::mount_ext4(&image, &app.data_dir), "mount again");
    app.spawn();

    for id in &mid_flight {
        let detail = wait_delivery(&app, id, "delivered");
        assert_eq!(detail["run_status"], "completed", "{detail:#}");
    }
    let r = app.invoke(&hello("Back"));
    r.expect_status(200);
    let delivered: BTreeSet<String> = receiver
        .requests()
        .iter()
        .filter_map(|req| serde_json::from_slice::<Value>(&req.body).ok())
        .filter_map(|event| event["request_id"].as_str().map(String::from))
        .collect();
    for id in delivered_before.iter().chain(&mid_flight) {
        assert!(delivered.contains(id), "{id} was never delivered");
    }
    app.stop();
    drop(mount);
}

/// `store.max_size` caps the database where the disk cannot be made small (no root needed):
/// at the cap invokes get 503 naming it and store nothing, everything accepted before is kept
/// and delivered, and a purge of delivered runs frees the pages that new runs then use.
#[test]
fn a_database_at_its_size_limit_gives_503_and_resumes_after_a_purge() {
    let config = format!("{FAST}\n[store]\nmax_size = \"4MiB\"\n");
    let app = TestApp::start_with(&config, &[], &[]);
    let receiver = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let hook = format!("{}/hook", receiver.url());

    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..100 {
        let mut body = big_body(i);
        body["async"] = json!({"enabled": true, "callback_url": hook});
        let r = app.invoke(&body);
        if r.status == 503 {
            refusal = Some(r.expect_error(503, "unavailable", None));
            break;
        }
        r.expect_status(202);
        accepted.push(r.json()["request_id"].as_str().unwrap().to_string());
    }
    let refusal = refusal.expect("a 4 MiB database must refuse some 200 KiB invoke");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap_or_default()
            .contains("store.max_size"),
        "{refusal}"
    );
    assert!(accepted.len() >= 3, "runs fit before the cap: {accepted:?}");
    let listed = listed_run_ids(&app);
    for id in &accepted {
        assert!(
            listed.contains(id),
            "{id} accepted before the cap is missing"
        );
    }

    // Purge what was delivered: its pages are free again for new runs.
    let purge = |app: &TestApp| {
        let now = ids_now_ms().to_string();
        let r = app.post_json(
            "/v1/runs/purge",
            Some(&app.admin_key),
            &json!({"before": now}),
        );
        r.expect_status(200);
        r.json()["purged"].as_u64().unwrap_or(0)
    };
    let mut purged = 0;
    wait_for("a purge to free room for a new run", || {
        purged += purge(&app);
        let mut body = big_body(500);
        body["async"] = json!({"enabled": true, "callback_url": hook});
        let r = app.invoke(&body);
        (r.status == 202).then(|| r.json()["request_id"].as_str().unwrap().to_string())
    });
    assert!(purged > 0, "the purge deleted delivered runs");
    // Every run that got a 202 reached the receiver, including those the cap held up.
    wait_for("every accepted run to be delivered", || {
        let delivered: BTreeSet<String> = receiver
            .requests()
            .iter()
            .filter_map(|req| serde_json::from_slice::<Value>(&req.body).ok())
            .filter_map(|event| event["request_id"].as_str().map(String::from))
            .collect();
        accepted
            .iter()
            .all(|id| delivered.contains(id))
            .then_some(())
    });
}

fn ids_now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
