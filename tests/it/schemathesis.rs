//! Schemathesis (PyPI) against the daemon's own `/openapi.json`, authenticated with the admin
//! key, with every phase (examples, coverage, fuzzing, stateful) and every check: no 5xx,
//! every response and status code documented, and the schema and the validation agree both
//! ways (what the schema allows is accepted, what it refuses is refused). Bounded
//! (`--max-examples` per operation) and seeded (424242 and 777), so a failure reproduces.
//!
//! For each seed, two runs against one daemon:
//! 1. everything except the operations that destroy what the rest of the run stands on
//!    (revoking or rotating a key: schemathesis learns the admin key's id from `GET /v1/keys`
//!    and would lock itself out; deleting a deployment: it would delete `hello`; purging:
//!    it would delete the run the run-id routes are given, so they would only see `404`).
//! 2. those destructive operations alone, aimed at a throwaway key, deployment and run.
//!
//! One allowance, stated in the configuration below: a schema-valid invoke, trigger, rerun,
//! deploy or schedule may still be refused with 422, because what makes it valid is not a shape
//! a static schema can state (the inputs a deployment declares, the steps a rerun may start
//! from; a definition's templates compiling and steps referring to earlier steps; a cron
//! expression, duration or zone name that parses; exactly one of `cron` and `every`). Every other operation must accept all that its
//! schema allows.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Examples per operation and the seeds: fixed so that a run can be replayed.
const MAX_EXAMPLES: &str = "50";
const SEEDS: &[&str] = &["424242", "777"];
/// The four runs together take ~40 s in a debug build; generous for a loaded 2-core CI box.
const RUN_LIMIT: Duration = Duration::from_secs(240);

const PHASES: &str = "examples,coverage,fuzzing,stateful";
const DESTRUCTIVE: &[&str] = &[
    "revoke_key",
    "rotate_key",
    "delete_deployment",
    "purge_runs",
    "delete_schedule",
];

/// Runs `schemathesis` to completion, output captured through files, killed at [`RUN_LIMIT`].
fn run(mut cmd: Command, scratch: &std::path::Path, name: &str) -> Output {
    let out_path = scratch.join(format!("{name}.stdout"));
    let err_path = scratch.join(format!("{name}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .current_dir(scratch)
        // Plain, unwrapped output in the failure message.
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run schemathesis (pip install schemathesis): {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ({name}) did not finish within {RUN_LIMIT:?}\n{}",
                fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

fn schemathesis(app: &TestApp, config: &std::path::Path, seed: &str) -> Command {
    // Through `python3`, the interpreter `pip install -r tests/python/requirements.txt` used,
    // whether or not its scripts directory is on `PATH`.
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
    ])
    .arg("--config-file")
    .arg(config)
    .arg("--no-color")
    .arg("run")
    .arg(app.url("/openapi.json"))
    .args([
        "--header",
        &format!("Authorization: Bearer {}", app.admin_key),
    ])
    .args(["--checks", "all"])
    .args(["--phases", PHASES])
    .args(["--max-examples", MAX_EXAMPLES])
    .args(["--seed", seed])
    .args(["--workers", "2"])
    .args(["--generation-database", "none"])
    .args(["--request-timeout", "30"]);
    cmd
}

/// The `N generated` figure of schemathesis's summary.
fn cases_generated(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" generated")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no `N generated` line in schemathesis output:\n{stdout}"))
}

/// What one seed's runs stand on: a finished run for the run-id routes, and a throwaway key
/// and deployment for the destructive operations (the previous seed's are gone). Returns
/// the configuration that points schemathesis at them.
fn fixtures(app: &TestApp, scratch: &std::path::Path, seed: &str) -> std::path::PathBuf {
    // A real run, so the run routes are tested past `404`.
    let r = app.post_json(
        "/v1/workflow/invoke",
        Some(&app.admin_key),
        &json!({"deployment": "hello", "inputs": {"name": "Ada"}}),
    );
    r.expect_status(200);
    let run_id = r.json()["request_id"].as_str().unwrap().to_string();

    // Throwaway things for the destructive operations to destroy.
    let r = app.post_json(
        "/v1/keys",
        Some(&app.admin_key),
        &json!({"name": "schemathesis-victim", "role": "invoke"}),
    );
    r.expect_success();
    let victim_key = r.json()["id"].as_str().unwrap().to_string();
    let r = app.put(
        "/v1/deployments/victim",
        Some(&app.admin_key),
        "application/json",
        &json!({
            "key": "victim",
            "inputs": [{"name": "name", "type": "text", "required": true}],
            "steps": [{"id": "greet", "type": "template", "template": "Hi, {{ name }}"}],
            "output": {"template": "{{ greet.output }}"}
        })
        .to_string(),
    );
    r.expect_success();
    // A schedule for the schedule-id routes, and one for `delete_schedule` to delete. Hourly,
    // so they do not fire during the run.
    let schedule = |name: &str| {
        let r = app.post_json(
            "/v1/schedules",
            Some(&app.admin_key),
            &json!({"deployment": "hello", "inputs": {"name": name}, "every": "1h"}),
        );
        r.expect_status(201);
        r.json()["id"].as_str().unwrap().to_string()
    };
    let schedule_id = schedule("fixture");
    let victim_schedule = schedule("victim");

    let config = scratch.join(format!("schemathesis-{seed}.toml"));
    fs::write(
        &config,
        format!(
            r#"
[[operations]]
include-path-regex = '^/v1/(runs|workflow_runs|public/requests)/\{{id\}}'
parameters = {{ "path.id" = "{run_id}" }}

[[operations]]
include-operation-id = ["revoke_key", "rotate_key"]
parameters = {{ "path.id" = "{victim_key}" }}

[[operations]]
include-operation-id = ["show_schedule", "edit_schedule", "trigger_schedule"]
parameters = {{ "path.id" = "{schedule_id}" }}

[[operations]]
include-operation-id = "delete_schedule"
parameters = {{ "path.id" = "{victim_schedule}" }}

[[operations]]
include-operation-id = "delete_deployment"
parameters = {{ "path.key" = "victim" }}

# The one allowance (see the top of this file): 422 for a schema-valid body whose validity
# depends on the deployment or on the workflow language, not on its shape.
[[operations]]
include-operation-id = ["deploy", "invoke_workflow", "trigger_workflow", "rerun_run", "create_schedule", "edit_schedule"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#
        ),
    )
    .unwrap();
    config
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let started = Instant::now();
    let app = TestApp::start();
    let scratch = tempfile::tempdir().unwrap();

    let mut cases = Vec::new();
    for seed in SEEDS {
        let config = fixtures(&app, scratch.path(), seed);
        let mut main_run = schemathesis(&app, &config, seed);
        for op in DESTRUCTIVE {
            main_run.args(["--exclude-operation-id", op]);
        }
        let main_out = run(main_run, scratch.path(), &format!("main-{seed}"));
        let (stdout, stderr) = out_text(&main_out);
        assert!(
            main_out.status.success(),
            "schemathesis (seed {seed}, all but {DESTRUCTIVE:?}) failed:\n{stdout}\n{stderr}\n--- daemon ---\n{}",
            app.stderr()
        );
        cases.push(cases_generated(&stdout));

        // The admin key must have survived the first run, or it tested nothing but 401s.
        app.get("/v1/keys", Some(&app.admin_key)).expect_status(200);

        let mut destructive_run = schemathesis(&app, &config, seed);
        for op in DESTRUCTIVE {
            destructive_run.args(["--include-operation-id", op]);
        }
        let destructive_out = run(
            destructive_run,
            scratch.path(),
            &format!("destructive-{seed}"),
        );
        let (stdout, stderr) = out_text(&destructive_out);
        assert!(
            destructive_out.status.success(),
            "schemathesis (seed {seed}, {DESTRUCTIVE:?}) failed:\n{stdout}\n{stderr}\n--- daemon ---\n{}",
            app.stderr()
        );
        cases.push(cases_generated(&stdout));
    }

    // Still alive and still serving.
    app.get("/healthz", None).expect_status(200);
    eprintln!(
        "schemathesis: {cases:?} cases (main and destructive, per seed {SEEDS:?}), \
         {MAX_EXAMPLES} examples per operation, in {:.1?}",
        started.elapsed()
    );
}
