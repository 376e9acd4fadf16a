//! SPEC §9: `hivelet.toml` validation, `config check|dump`, flag/env precedence, the address
//! and admin key files, file modes, and refusing a database newer than the binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn serve_refuses_an_unknown_key_and_names_it() {
    let mut app = TestApp::builder()
        .config("[runs]\nmax_concurent = 5\n")
        .prepare();
    let out = app.serve_expecting_exit();
    assert!(!out.status.success(), "{}", describe(&out));
    let (_, stderr) = out_text(&out);
    assert!(
        stderr.contains("runs.max_concurent"),
        "stderr should name the key: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("max_concurrent"),
        "stderr should say what is expected: {}",
        describe(&out)
    );
}

/// Bad values, each with the key the message must name and a hint of what is expected.
const BAD_VALUES: &[(&str, &str, &str)] = &[
    (
        "[runs]\nshutdown_grace = \"soon\"\n",
        "runs.shutdown_grace",
        "5s",
    ),
    (
        "[runs]\nmax_concurrent = \"many\"\n",
        "runs.max_concurrent",
        "",
    ),
    ("[runs]\nmax_concurrent = 0\n", "runs.max_concurrent", "1"),
    (
        "[limits]\ninvoke_body = \"huge\"\n",
        "limits.invoke_body",
        "MiB",
    ),
    (
        "[security]\nallow_command_steps = \"yes\"\n",
        "security.allow_command_steps",
        "",
    ),
    (
        "[providers.x]\nbase_url = \"nope\"\n",
        "providers.x.base_url",
        "http",
    ),
    (
        "[providers.x]\nbase_url = \"http://127.0.0.1:9/v1\"\nmax_concurrent = 0\n",
        "providers.x.max_concurrent",
        "at least 1",
    ),
    (
        "[providers.x]\nbase_url = \"http://127.0.0.1:9/v1\"\nrequests_per_minute = -3\n",
        "providers.x.requests_per_minute",
        "",
    ),
    (
        "[providers.x]\nbase_url = \"http://127.0.0.1:9/v1\"\ntokens_per_minute = 0\n",
        "providers.x.tokens_per_minute",
        "at least 1",
    ),
    (
        "[delivery]\nretry_schedule = [\"5s\", \"later\"]\n",
        "delivery.retry_schedule",
        "5s",
    ),
];

#[test]
fn serve_refuses_bad_values_and_says_what_is_expected() {
    for (config, key, hint) in BAD_VALUES {
        let mut app = TestApp::builder().config(config).prepare();
        let out = app.serve_expecting_exit();
        let context = format!("config {config:?}: {}", describe(&out));
        assert!(!out.status.success(), "{context}");
        let (_, stderr) = out_text(&out);
        assert!(stderr.contains(key), "stderr should name {key}: {context}");
        assert!(
            stderr.contains(hint),
            "stderr should mention {hint:?}: {context}"
        );
    }
}

#[test]
fn config_check_refuses_bad_values_including_bind() {
    // `serve` in these tests always gets `--bind`, which wins over the file, so `bind` is
    // checked here.
    let mut cases = BAD_VALUES.to_vec();
    cases.push(("bind = \"not-an-address\"\n", "bind", "127.0.0.1"));
    for (config, key, hint) in cases {
        let app = TestApp::builder().config(config).prepare();
        let out = app.cli(&["config", "check"]);
        let context = format!("config {config:?}: {}", describe(&out));
        assert!(!out.status.success(), "{context}");
        let (stdout, stderr) = out_text(&out);
        let all = format!("{stdout}{stderr}");
        assert!(all.contains(key), "should name {key}: {context}");
        assert!(all.contains(hint), "should mention {hint:?}: {context}");
    }
}

#[test]
fn serve_refuses_a_config_that_is_not_toml() {
    let mut app = TestApp::builder()
        .config("[runs\nmax_concurrent = 5\n")
        .prepare();
    let out = app.serve_expecting_exit();
    assert!(!out.status.success(), "{}", describe(&out));
    let (_, stderr) = out_text(&out);
    assert!(
        stderr.contains("hivelet.toml"),
        "stderr should name the file: {}",
        describe(&out)
    );
}

#[test]
fn config_check_accepts_a_valid_file_and_rejects_a_bad_one() {
    let app = TestApp::builder()
        .config("[runs]\nmax_concurrent = 4\n[delivery]\nretry_schedule = [\"1s\", \"2s\"]\n")
        .prepare();
    let out = app.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    let all = format!("{stdout}{stderr}").to_lowercase();
    assert!(
        all.contains("ok") || all.contains("valid"),
        "{}",
        describe(&out)
    );

    fs::write(&app.config_path, "[runs]\nmax_concurent = 5\n").unwrap();
    let out = app.cli(&["config", "check"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("runs.max_concurent"),
        "{}",
        describe(&out)
    );
}

#[test]
fn config_dump_prints_the_effective_config_without_secrets() {
    let app = TestApp::builder()
        .config(
            "[runs]\nmax_concurrent = 7\n[providers.stub]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"STUB_KEY\"\n",
        )
        .prepare();
    let out = app.cli_with_env(&["config", "dump"], &[("STUB_KEY", "sk-very-secret-value")]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        !stdout.contains("sk-very-secret-value"),
        "dump printed a provider key: {stdout}"
    );
    let dumped: toml::Value =
        toml::from_str(&stdout).unwrap_or_else(|e| panic!("not TOML ({e}): {stdout}"));
    assert_eq!(
        dumped["runs"]["max_concurrent"].as_integer(),
        Some(7),
        "{stdout}"
    );
    // Defaults are filled in.
    assert_eq!(
        dumped["runs"]["max_queued"].as_integer(),
        Some(100_000),
        "{stdout}"
    );
    assert_eq!(
        dumped["delivery"]["attempt_timeout"].as_str(),
        Some("15s"),
        "{stdout}"
    );
    assert_eq!(
        dumped["delivery"]["per_host_concurrency"].as_integer(),
        Some(16),
        "{stdout}"
    );
    assert_eq!(
        dumped["security"]["allow_command_steps"].as_bool(),
        Some(false),
        "{stdout}"
    );
    assert_eq!(
        dumped["providers"]["stub"]["api_key_env"].as_str(),
        Some("STUB_KEY"),
        "{stdout}"
    );

    // The dump is itself a valid config.
    fs::write(&app.config_path, &stdout).unwrap();
    let out = app.cli(&["config", "check"]);
    assert!(
        out.status.success(),
        "a dumped config must check: {}",
        describe(&out)
    );
}

#[test]
fn env_bind_beats_the_file_and_env_config_is_honoured() {
    let app = TestApp::builder()
        .config("bind = \"127.0.0.1:8888\"\n")
        .prepare();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("HIVELET_CONFIG", &app.config_path)
        .env("HIVELET_DATA_DIR", &app.data_dir)
        .env("HIVELET_BIND", "127.0.0.1:9999")
        .args(["config", "dump"]);
    let out = run_command(cmd, &app.dir);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    let dumped: toml::Value =
        toml::from_str(&stdout).unwrap_or_else(|e| panic!("not TOML ({e}): {stdout}"));
    assert_eq!(dumped["bind"].as_str(), Some("127.0.0.1:9999"), "{stdout}");
}

#[test]
fn flag_config_beats_env_config() {
    let app = TestApp::builder()
        .config("[runs]\nmax_concurrent = 3\n")
        .prepare();
    let decoy = app.dir.join("decoy.toml");
    fs::write(&decoy, "[runs]\nmax_concurrent = 99\n").unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("HIVELET_CONFIG", &decoy)
        .env("HIVELET_DATA_DIR", &app.data_dir)
        .env_remove("HIVELET_BIND")
        .arg("--config")
        .arg(&app.config_path)
        .args(["config", "dump"]);
    let out = run_command(cmd, &app.dir);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    let dumped: toml::Value =
        toml::from_str(&stdout).unwrap_or_else(|e| panic!("not TOML ({e}): {stdout}"));
    assert_eq!(
        dumped["runs"]["max_concurrent"].as_integer(),
        Some(3),
        "{stdout}"
    );
}

#[test]
fn serve_accepts_paths_from_the_environment() {
    let app = TestApp::builder()
        .config("[security]\nallow_command_steps = true\n")
        .paths_via(PathsVia::Env)
        .start();
    assert!(
        app.data_dir.join("hivelet.db").exists(),
        "database not in HIVELET_DATA_DIR"
    );
    app.invoke(&hello("Ada")).expect_status(200);
    // The config named by HIVELET_CONFIG is in force: command steps are allowed.
    let r = app.deploy_toml(
        "cmd",
        "key = \"cmd\"\n[[steps]]\nid = \"c\"\ntype = \"command\"\nprogram = \"/bin/echo\"\nargs = [\"hi\"]\n[output]\ntemplate = \"{{ c.output }}\"\n",
    );
    assert!(r.is_success(), "{r}");
}

#[test]
fn serve_accepts_global_flags_after_the_subcommand() {
    let app = TestApp::builder().paths_via(PathsVia::FlagsAfter).start();
    assert!(
        app.data_dir.join("hivelet.db").exists(),
        "database not in --data-dir"
    );
    app.invoke(&hello("Ada")).expect_status(200);
}

#[test]
fn flag_data_dir_beats_env_data_dir() {
    let mut app = TestApp::builder().prepare();
    let decoy = app.dir.join("decoy-data");
    app.set_env("HIVELET_DATA_DIR", decoy.to_str().unwrap());
    app.spawn();
    assert!(
        app.data_dir.join("hivelet.db").exists(),
        "database not in --data-dir"
    );
    assert!(
        !decoy.exists(),
        "HIVELET_DATA_DIR was used although --data-dir was given"
    );
}

#[test]
fn first_start_prints_and_stores_an_admin_key_once() {
    let mut app = TestApp::start();
    assert!(
        app.admin_key.starts_with("hvk_"),
        "admin key: {}",
        app.admin_key
    );
    let key = app.admin_key.clone();
    // The address file is written (and synced) just before the listening line is printed,
    // so the line may come a moment after the daemon counts as started.
    let stdout = wait_for("the admin key and the listening line on stdout", || {
        let s = app.stdout();
        (s.contains(&key) && s.contains("hivelet listening on")).then_some(s)
    });
    assert!(
        stdout.contains(&format!("hivelet listening on {}", app.base_url)),
        "listening line missing: {stdout}"
    );
    assert_eq!(mode(&app.data_dir.join("admin.key")), 0o600);

    app.restart();
    assert_eq!(app.admin_key, key, "the stored admin key is kept");
    wait_for("the listening line after restart", || {
        app.stdout().contains("hivelet listening on").then_some(())
    });
    assert!(
        !app.stdout().contains(&key),
        "the admin key is printed on first start only"
    );
    app.invoke(&hello("Ada")).expect_status(200);
}

#[test]
fn data_dir_and_files_are_private() {
    let app = TestApp::start();
    assert_eq!(mode(&app.data_dir), 0o700, "data dir mode");
    assert_eq!(
        mode(&app.data_dir.join("hivelet.db")),
        0o600,
        "database mode"
    );
    assert_eq!(
        mode(&app.data_dir.join("admin.key")),
        0o600,
        "admin.key mode"
    );
}

#[test]
fn address_file_points_at_the_listening_daemon() {
    let app = TestApp::start();
    let addr = fs::read_to_string(app.data_dir.join("hivelet.addr")).unwrap();
    let addr = addr.trim();
    assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
    let r = send("GET", &format!("{addr}/healthz"), &[], None);
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn database_newer_than_the_binary_is_refused() {
    let mut app = TestApp::start();
    app.invoke(&hello("Ada")).expect_status(200);
    app.stop();
    let db = app.data_dir.join("hivelet.db");
    let set = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 9999'); c.commit(); c.close()",
        ])
        .arg(&db)
        .output()
        .expect("python3");
    assert!(set.status.success(), "{}", describe(&set));

    let out = app.serve_expecting_exit();
    assert!(!out.status.success(), "{}", describe(&out));
    let (_, stderr) = out_text(&out);
    assert!(
        stderr.to_lowercase().contains("newer"),
        "stderr should say the database is newer: {}",
        describe(&out)
    );

    // The refused database is left as it was.
    let check = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA user_version').fetchone()[0])"])
        .arg(&db)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "9999",
        "{}",
        describe(&check)
    );
}
