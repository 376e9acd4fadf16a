//! SPEC §12 schedules: an `every = "1s"` schedule across a `kill -9` (no fire lost or
//! doubled), catch-up after downtime (the stored next fire moved back in the SQLite file while
//! the daemon is stopped), bad input refused with the field named and nothing stored,
//! trigger, pause and resume, the `?schedule=` filter, and delete. The timetable arithmetic
//! (cron, time zones, daylight saving) is tested on fixed instants in `schedules/timing.rs`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::*;

const HOUR_MS: i64 = 3_600_000;

fn create(app: &TestApp, body: &Value) -> Value {
    let r = app.post_json("/v1/schedules", Some(&app.admin_key), body);
    r.expect_status(201);
    r.json()
}

fn patch(app: &TestApp, id: &str, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap();
    app.request(
        "PATCH",
        &format!("/v1/schedules/{id}"),
        Some(&app.admin_key),
        &[("Content-Type", "application/json")],
        Some(&bytes),
    )
}

fn db(app: &TestApp) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(app.data_dir.join("hivelet.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// The stored runs of a schedule: (scheduled_for, status).
fn fires(app: &TestApp, id: &str) -> Vec<(Option<i64>, String)> {
    let conn = db(app);
    let mut stmt = conn
        .prepare(
            "SELECT scheduled_for, status FROM runs WHERE schedule_id = ?1 ORDER BY request_id",
        )
        .unwrap();
    let rows = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn next_run_at(app: &TestApp, id: &str) -> Option<i64> {
    db(app)
        .query_row(
            "SELECT next_run_at FROM schedules WHERE schedule_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn every_second_across_kill_9_loses_and_doubles_no_fire() {
    let mut app = TestApp::start();
    let s = create(
        &app,
        &json!({"deployment": "hello", "inputs": {"name": "tick"}, "every": "1s", "catch_up": "all"}),
    );
    let id = s["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sch_") && id.len() == 36, "{id}");
    wait_for("three fires", || {
        (fires(&app, &id).len() >= 3).then_some(())
    });
    app.kill();
    let before = fires(&app, &id).len();
    // Fires fall due while the daemon is down; `all` makes up each of them.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    app.spawn();
    wait_for("fires after the restart", || {
        (fires(&app, &id).len() >= before + 5).then_some(())
    });
    let r = patch(&app, &id, &json!({"active": false}));
    r.expect_status(200);
    assert_eq!(r.json()["active"], false);
    assert_eq!(r.json()["next_run_at"], Value::Null);
    wait_for("every run ended", || {
        fires(&app, &id)
            .iter()
            .all(|(_, status)| status == "completed")
            .then_some(())
    });
    let all = fires(&app, &id);
    let due: Vec<i64> = all.iter().map(|(t, _)| t.expect("scheduled_for")).collect();
    let unique: BTreeSet<i64> = due.iter().copied().collect();
    assert_eq!(unique.len(), due.len(), "a fire was doubled: {due:?}");
    let sorted: Vec<i64> = unique.into_iter().collect();
    for pair in sorted.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a fire was lost: {sorted:?}");
    }
    // The grid starts one `every` after creation.
    let created = db(&app)
        .query_row(
            "SELECT created_at FROM schedules WHERE schedule_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(sorted[0], created + 1000);
    // The list filter finds exactly these runs, marked as the schedule's.
    let r = app.admin_get(&format!("/v1/runs?schedule={id}&limit=200"));
    r.expect_status(200);
    let runs = r.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), all.len());
    assert!(runs
        .iter()
        .all(|run| run["source"] == "schedule" && run["schedule_id"] == id.as_str()));
    assert!(runs.iter().all(|run| run["scheduled_for"].is_string()));
}

#[test]
fn missed_fires_follow_catch_up_after_downtime() {
    let mut app = TestApp::start();
    let mut ids = Vec::new();
    for catch_up in ["skip", "once", "all"] {
        let s = create(
            &app,
            &json!({"deployment": "hello", "inputs": {"name": catch_up}, "every": "1h", "catch_up": catch_up}),
        );
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    app.stop();
    // As if the schedules had been created half an hour earlier and the daemon had then been
    // down for five of their hours: creation (the grid's anchor) and the stored next fire
    // move back, so five fires, each at least half an hour late, were missed.
    let shift = HOUR_MS / 2;
    let mut original = Vec::new();
    for id in &ids {
        let next = next_run_at(&app, id).unwrap() - shift;
        original.push(next);
        db(&app)
            .execute(
                "UPDATE schedules SET next_run_at = ?2, created_at = created_at - ?3 WHERE schedule_id = ?1",
                rusqlite::params![id, next - 5 * HOUR_MS, shift],
            )
            .unwrap();
    }
    app.spawn();
    for (id, next) in ids.iter().zip(&original) {
        wait_for("the next fire is back in the future", || {
            (next_run_at(&app, id) == Some(*next)).then_some(())
        });
    }
    let skip = fires(&app, &ids[0]);
    assert!(skip.is_empty(), "skip started {skip:?}");
    let once = fires(&app, &ids[1]);
    assert_eq!(once.len(), 1);
    assert_eq!(
        once[0].0,
        Some(original[1] - HOUR_MS),
        "the latest missed fire"
    );
    let all: Vec<i64> = fires(&app, &ids[2]).iter().map(|f| f.0.unwrap()).collect();
    let expected: Vec<i64> = (1..=5).rev().map(|k| original[2] - k * HOUR_MS).collect();
    assert_eq!(all, expected);
    // last_run points at the newest run.
    let r = app.admin_get(&format!("/v1/schedules/{}", ids[2]));
    r.expect_status(200);
    let last = r.json()["last_run"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.starts_with("req_"));
}

#[test]
fn bad_schedules_are_refused_naming_the_field_and_store_nothing() {
    let app = TestApp::start();
    let base = json!({"deployment": "hello", "inputs": {"name": "Ada"}, "every": "1h"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let mut both = with("cron", json!("0 9 * * *"));
    let neither = {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove("every");
        b
    };
    both["every"] = json!("1h");
    let cases = [
        (
            {
                let mut b = neither.clone();
                b["cron"] = json!("0 25 * * *");
                b
            },
            "cron",
        ),
        (
            {
                let mut b = neither.clone();
                b["cron"] = json!("0 9 * *");
                b
            },
            "cron",
        ),
        (
            {
                let mut b = neither.clone();
                b["cron"] = json!("0 0 30 2 *");
                b
            },
            "cron",
        ),
        (with("timezone", json!("Mars/Olympus")), "timezone"),
        (with("every", json!("500ms")), "every"),
        (with("every", json!("soon")), "every"),
        (both, "cron"),
        (neither, "cron"),
        (with("deployment", json!("nope")), "deployment"),
        (with("variant", json!("nope")), "variant"),
        (with("catch_up", json!("sometimes")), "catch_up"),
        (with("inputs", json!({})), "inputs.name"),
        (with("inputs", json!({"name": 5})), "inputs.name"),
        (with("callback_url", json!("not a url")), "callback_url"),
        (with("active", json!("yes")), "active"),
        (with("colour", json!("red")), "colour"),
    ];
    for (body, field) in cases {
        let r = app.post_json("/v1/schedules", Some(&app.admin_key), &body);
        let err = r.expect_error(422, "validation_error", None);
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let r = app.admin_get("/v1/schedules");
    r.expect_status(200);
    assert_eq!(r.json()["schedules"], json!([]));
    // An invoke key may not manage schedules.
    let key = app.create_key("app", "invoke");
    let r = app.post_json("/v1/schedules", key["key"].as_str(), &base);
    r.expect_status(403);
}

#[test]
fn trigger_pause_resume_filter_and_delete() {
    let app = TestApp::start();
    let s = create(
        &app,
        &json!({"deployment": "hello", "variant": "loud", "inputs": {"name": "Ada"},
                "metadata": {"team": "ops"}, "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"}),
    );
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["cron"], "0 9 * * MON-FRI");
    assert_eq!(s["every"], Value::Null);
    assert_eq!(s["timezone"], "Europe/Berlin");
    assert_eq!(s["catch_up"], "once");
    assert_eq!(s["active"], true);
    assert_eq!(s["last_run"], Value::Null);
    assert!(s["next_run_at"].is_string());
    assert!(s["created_at"].is_string());

    let r = app.post_json(
        &format!("/v1/schedules/{id}/trigger"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(202);
    let request_id = r.json()["request_id"].as_str().unwrap().to_string();
    let run = wait_for("the triggered run completed", || {
        let r = app.admin_get(&format!("/v1/runs/{request_id}"));
        let run = r.json();
        (run["run_status"] == "completed").then_some(run)
    });
    assert_eq!(run["output"], "Hello, Ada!!!");
    assert_eq!(run["source"], "schedule");
    assert_eq!(run["schedule_id"], id.as_str());
    assert_eq!(run["scheduled_for"], Value::Null);
    assert_eq!(run["metadata"], json!({"team": "ops"}));
    let r = app.admin_get(&format!("/v1/schedules/{id}"));
    assert_eq!(r.json()["last_run"]["request_id"], request_id.as_str());
    // The trigger did not move the next fire.
    assert_eq!(r.json()["next_run_at"], s["next_run_at"]);

    // The filter: this run only; another schedule's runs are not in it.
    let other = create(
        &app,
        &json!({"deployment": "hello", "inputs": {"name": "B"}, "every": "1h"}),
    );
    let other_id = other["id"].as_str().unwrap();
    app.post_json(
        &format!("/v1/schedules/{other_id}/trigger"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(202);
    let r = app.admin_get(&format!("/v1/runs?schedule={id}"));
    let runs = r.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["request_id"], request_id.as_str());
    let r = app.admin_get("/v1/runs?source=schedule");
    assert_eq!(r.json()["runs"].as_array().unwrap().len(), 2);

    // Pause, resume; a bad edit changes nothing.
    let r = patch(&app, &id, &json!({"active": false}));
    r.expect_status(200);
    assert_eq!(r.json()["next_run_at"], Value::Null);
    let r = patch(&app, &id, &json!({"timezone": "Nowhere/Land"}));
    assert_eq!(
        r.expect_error(422, "validation_error", None)["field"],
        "timezone"
    );
    let r = patch(&app, &id, &json!({"active": true, "every": "30m"}));
    r.expect_status(200);
    let edited = r.json();
    assert_eq!(edited["active"], true);
    assert_eq!(edited["every"], "30m");
    assert_eq!(edited["cron"], Value::Null);
    assert_eq!(edited["timezone"], "Europe/Berlin");
    assert!(edited["next_run_at"].is_string());
    let r = app.admin_get("/v1/schedules");
    assert_eq!(r.json()["schedules"].as_array().unwrap().len(), 2);

    app.delete(&format!("/v1/schedules/{id}"), Some(&app.admin_key))
        .expect_status(204);
    app.admin_get(&format!("/v1/schedules/{id}")).expect_error(
        404,
        "not_found",
        Some("Schedule not found."),
    );
    app.post_json(
        &format!("/v1/schedules/{id}/trigger"),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(404);
    // Its runs stay.
    app.admin_get(&format!("/v1/runs/{request_id}"))
        .expect_status(200);
}

fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(out.status.success(), "hivelet {args:?}: {}", describe(&out));
    out_text(&out).0
}

#[test]
fn the_cli_adds_lists_pauses_resumes_triggers_and_deletes() {
    let app = TestApp::start();
    let out = cli_ok(
        &app,
        &[
            "schedules",
            "add",
            "hello",
            "--every",
            "1h",
            "--input",
            "name=Cli",
            "--timezone",
            "UTC",
            "--catch-up",
            "skip",
        ],
    );
    let id = out.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("sch_"), "{out}");
    let list = cli_ok(&app, &["schedules", "list"]);
    assert!(list.contains(&id) && list.contains("every 1h"), "{list}");
    cli_ok(&app, &["schedules", "pause", &id]);
    let r = app.admin_get(&format!("/v1/schedules/{id}"));
    assert_eq!(r.json()["active"], false);
    assert_eq!(r.json()["catch_up"], "skip");
    assert_eq!(r.json()["inputs"], json!({"name": "Cli"}));
    assert!(cli_ok(&app, &["schedules", "list"]).contains("paused"));
    cli_ok(&app, &["schedules", "resume", &id]);
    assert_eq!(
        app.admin_get(&format!("/v1/schedules/{id}")).json()["active"],
        true
    );
    let out = cli_ok(&app, &["schedules", "trigger", &id]);
    let request_id = out.split_whitespace().next().unwrap().to_string();
    assert!(request_id.starts_with("req_"), "{out}");
    let run = app.admin_get(&format!("/v1/runs/{request_id}")).json();
    assert_eq!(run["schedule_id"], id.as_str());
    // A bad schedule is refused with the daemon's message, and exit status 1.
    let out = app.cli(&[
        "schedules",
        "add",
        "hello",
        "--cron",
        "0 9 * *",
        "--input",
        "name=X",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out_text(&out).1.contains("cron"), "{}", describe(&out));
    // Neither --cron nor --every: clap refuses before asking the daemon.
    assert!(!app.cli(&["schedules", "add", "hello"]).status.success());
    cli_ok(&app, &["schedules", "delete", &id]);
    let out = app.cli(&["schedules", "delete", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out_text(&out).1.contains("Schedule not found."));
}

const NIGHTLY: &str = r#"
key = "nightly"

[[inputs]]
name = "who"
type = "text"
required = true

[[steps]]
id = "greet"
type = "template"
template = "night, {{ who }}"

[output]
template = "{{ greet.output }}"

[[schedules]]
name = "night"
cron = "30 2 * * *"
timezone = "America/New_York"
inputs = { who = "ops" }

[[schedules]]
name = "often"
every = "15m"
inputs = { who = "bots" }
catch_up = "skip"
"#;

fn named(app: &TestApp) -> Vec<Value> {
    let r = app.admin_get("/v1/schedules");
    r.expect_status(200);
    let mut list: Vec<Value> = r.json()["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["deployment"] == "nightly")
        .cloned()
        .collect();
    list.sort_by_key(|s| s["name"].as_str().map(str::to_string));
    list
}

#[test]
fn schedules_in_a_workflow_file_follow_its_deploys() {
    let app = TestApp::start();
    app.deploy_ok("nightly", NIGHTLY);
    let first = named(&app);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["name"], "night");
    assert_eq!(first[0]["cron"], "30 2 * * *");
    assert_eq!(first[0]["timezone"], "America/New_York");
    assert_eq!(first[0]["inputs"], json!({"who": "ops"}));
    assert_eq!(first[1]["name"], "often");
    assert_eq!(first[1]["catch_up"], "skip");
    // One made through the API for the same deployment is not the file's to manage.
    let api_made = create(
        &app,
        &json!({"deployment": "nightly", "inputs": {"who": "api"}, "every": "1h"}),
    );

    // Redeploy: "night" is edited in place (same id), "often" is gone.
    let edited = NIGHTLY
        .replace("30 2 * * *", "0 3 * * *")
        .split("[[schedules]]\nname = \"often\"")
        .next()
        .unwrap()
        .to_string();
    app.deploy_ok("nightly", &edited);
    let second = named(&app);
    assert_eq!(second.len(), 2, "{second:?}");
    let night = second.iter().find(|s| s["name"] == "night").unwrap();
    assert_eq!(night["id"], first[0]["id"]);
    assert_eq!(night["cron"], "0 3 * * *");
    assert!(second.iter().any(|s| s["id"] == api_made["id"]));

    // A bad schedule refuses the whole deploy: the version and the schedules stay.
    let bad = edited.replace("0 3 * * *", "0 3 * *");
    let r = app.deploy_toml("nightly", &bad);
    let err = r.expect_error(422, "validation_error", None);
    assert_eq!(err["field"], "schedules[0].cron", "{err}");
    let bad = edited.replace("who = \"ops\"", "whom = \"ops\"");
    let err = app
        .deploy_toml("nightly", &bad)
        .expect_error(422, "validation_error", None);
    assert_eq!(err["field"], "schedules[0].inputs.who", "{err}");
    let unnamed = edited.replace("name = \"night\"\n", "");
    let err = app
        .deploy_toml("nightly", &unnamed)
        .expect_error(422, "validation_error", None);
    assert_eq!(err["field"], "schedules[0].name", "{err}");
    let r = app.admin_get("/v1/deployments/nightly");
    assert_eq!(r.json()["version"], 2);
    let night_now = named(&app)
        .into_iter()
        .find(|s| s["name"] == "night")
        .unwrap();
    assert_eq!(night_now["cron"], "0 3 * * *");
}

#[test]
fn browser_lists_pauses_resumes_and_runs_a_schedule() {
    let app = TestApp::start();
    let s = create(
        &app,
        &json!({"deployment": "hello", "inputs": {"name": "Web"}, "every": "1h"}),
    );
    let id = s["id"].as_str().unwrap();
    crate::ui::run_browser(&app, "ui_schedules.py", &[("SCHEDULE_ID", id)]);
}

#[test]
fn a_scheduled_run_with_a_callback_delivers_a_signed_webhook() {
    let receiver = StubServer::json(json!({"ok": true}));
    let app = TestApp::start();
    let s = create(
        &app,
        &json!({"deployment": "hello", "inputs": {"name": "Hook"}, "every": "1s",
                "callback_url": receiver.url(), "catch_up": "skip"}),
    );
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["callback_url"], receiver.url().as_str());
    let got = receiver.wait_for_requests(1);
    patch(&app, id, &json!({"active": false})).expect_status(200);
    let secret = signing_secret(&app, "hello");
    assert_eq!(signature_problem(&secret, &got[0]), None);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    let request_id = body["data"]["request_id"]
        .as_str()
        .or_else(|| body["request_id"].as_str())
        .unwrap_or_else(|| panic!("no request_id in {body}"))
        .to_string();
    let run = app.admin_get(&format!("/v1/runs/{request_id}")).json();
    assert_eq!(run["schedule_id"], id);
    assert_eq!(run["output"], "Hello, Hook.");
    assert!(run["scheduled_for"].is_string());
}
