//! Issue 7 §5, intruders: every authenticated route refuses a missing, wrong, revoked or
//! rotated-out key (and an invoke key where an admin key is needed) without changing
//! anything; a key in the query string is never accepted; the inbound trigger route takes only
//! a valid signing secret; the daemon's logs never hold an API key or a signing secret; every
//! file in the data dir is private; and `callback_deny` holds against names, redirects and a
//! name that rebinds between lookups, with every connection made only to the address that was
//! checked (against a DNS server the test runs).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Routes anyone may call (the inbound trigger route has its own secret; see below).
fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/metrics" | "/openapi.json") || path.starts_with("/ui/")
}

const TRIGGER_PREFIX: &str = "/v1/workflow/webhooks/";

/// (method, path template, admin only) of every operation `/openapi.json` documents.
/// Admin-only operations are the ones documenting a `403`.
fn documented_operations(app: &TestApp) -> Vec<(String, String, bool)> {
    let r = app.get("/openapi.json", None);
    r.expect_status(200);
    let spec = r.json();
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            let open = op["security"] == json!([{}]);
            let unauthenticated = is_public(path) || path.starts_with(TRIGGER_PREFIX);
            assert_eq!(
                open, unauthenticated,
                "{method} {path}: the spec's `security` must say whether it needs a key: {op:#}"
            );
            if unauthenticated {
                continue;
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.contains_key("401"),
                "{method} {path} must document its 401"
            );
            ops.push((
                method.to_ascii_uppercase(),
                path.clone(),
                responses.contains_key("403"),
            ));
        }
    }
    ops
}

/// Everything an intruder could have changed, as seen by the admin (minus `last_used_at`,
/// which the admin's own reads move).
fn snapshot(app: &TestApp) -> Value {
    let keys = app.admin_get("/v1/keys");
    keys.expect_status(200);
    let mut keys = keys.json();
    for k in keys["keys"].as_array_mut().into_iter().flatten() {
        k.as_object_mut().unwrap().remove("last_used_at");
    }
    let deployments = app.admin_get("/v1/deployments");
    deployments.expect_status(200);
    let runs = app.admin_get("/v1/runs?limit=200");
    runs.expect_status(200);
    let runs: Vec<Value> = runs.json()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| json!([r["request_id"], r["run_status"], r["async"]]))
        .collect();
    json!({
        "keys": keys,
        "deployments": deployments.json(),
        "hello": app.admin_get("/v1/deployments/hello").json(),
        "runs": runs,
    })
}

/// A request body that would change something if the caller were let in.
fn hostile_body(method: &str, path: &str) -> Option<(&'static str, Vec<u8>)> {
    let json_body = |v: Value| Some(("application/json", serde_json::to_vec(&v).unwrap()));
    match (method, path) {
        ("PUT", _) => Some((
            "application/toml",
            std::fs::read(repo_path("packaging/workflows/hello.toml"))
                .unwrap()
                .into_iter()
                .chain(b"\n# intruder\n".iter().copied())
                .collect(),
        )),
        ("POST", "/v1/keys") => json_body(json!({"name": "intruder", "role": "admin"})),
        ("POST", "/v1/runs/purge") => json_body(json!({"before": "2999-01-01T00:00:00Z"})),
        ("POST", "/v1/workflow/invoke") => json_body(hello("Mallory")),
        ("POST", p) if p.ends_with("/respond") => json_body(json!({"approved": true})),
        ("POST", _) => json_body(json!({})),
        _ => None,
    }
}

#[test]
fn every_authenticated_route_refuses_missing_wrong_revoked_and_underprivileged_keys() {
    let app = TestApp::start();
    // A finished run and some keys to aim at.
    let run = app.invoke(&hello("Ada"));
    run.expect_status(200);
    let run_id = run.json()["request_id"].as_str().unwrap().to_string();
    let invoke_key = app.create_key("invoker", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = app.create_key("victim", "invoke");
    let victim_id = victim["id"].as_str().unwrap().to_string();

    let revoked_admin = app.create_key("revoked-admin", "admin");
    let revoked_invoke = app.create_key("revoked-invoke", "invoke");
    for k in [&revoked_admin, &revoked_invoke] {
        app.delete(
            &format!("/v1/keys/{}", k["id"].as_str().unwrap()),
            Some(&app.admin_key),
        )
        .expect_status(200);
    }
    let rotated = app.create_key("rotated-admin", "admin");
    let r = app.post_json(
        &format!("/v1/keys/{}/rotate", rotated["id"].as_str().unwrap()),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(200);
    assert_ne!(r.json()["key"], rotated["key"], "{r}");

    let revoked_admin = revoked_admin["key"].as_str().unwrap().to_string();
    let revoked_invoke = revoked_invoke["key"].as_str().unwrap().to_string();
    let rotated_out = rotated["key"].as_str().unwrap().to_string();
    let admin = app.admin_key.clone();
    // Near misses of the real admin key.
    let truncated = admin[..admin.len() - 1].to_string();
    let mut flipped = admin.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let extended = format!("{admin}x");

    let refused: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no key", vec![]),
        ("empty bearer", vec![("Authorization", "Bearer ".into())]),
        (
            "wrong key",
            vec![(
                "Authorization",
                "Bearer hvk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            )],
        ),
        (
            "truncated admin key",
            vec![("Authorization", format!("Bearer {truncated}"))],
        ),
        (
            "altered admin key",
            vec![("Authorization", format!("Bearer {flipped}"))],
        ),
        (
            "extended admin key",
            vec![("Authorization", format!("Bearer {extended}"))],
        ),
        (
            "admin key as Basic",
            vec![("Authorization", format!("Basic {admin}"))],
        ),
        ("admin key in X-Api-Key", vec![("X-Api-Key", admin.clone())]),
        (
            "revoked admin key",
            vec![("Authorization", format!("Bearer {revoked_admin}"))],
        ),
        (
            "revoked invoke key",
            vec![("Authorization", format!("Bearer {revoked_invoke}"))],
        ),
        (
            "rotated-out key",
            vec![("Authorization", format!("Bearer {rotated_out}"))],
        ),
    ];

    let ops = documented_operations(&app);
    assert!(ops.len() >= 20, "too few operations documented: {ops:?}");
    let before = snapshot(&app);
    let mut checked = 0;
    for (method, template, admin_only) in &ops {
        let key_segment = if method == "PUT" { "intruder" } else { "hello" };
        let id = if template.starts_with("/v1/keys/") {
            victim_id.as_str()
        } else {
            run_id.as_str()
        };
        let path = template
            .replace("{key}", key_segment)
            .replace("{id}", id)
            .replace("{step}", "approve");
        let body = hostile_body(method, template);
        let send_with = |path: &str, extra: &[(&str, &str)]| {
            let mut headers: Vec<(&str, &str)> = extra.to_vec();
            if let Some((ct, _)) = &body {
                headers.push(("Content-Type", ct));
            }
            app.request(
                method,
                path,
                None,
                &headers,
                body.as_ref().map(|(_, b)| b.as_slice()),
            )
        };
        for (what, headers) in &refused {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = send_with(&path, &headers);
            assert_eq!(r.status, 401, "{method} {path} with {what}: {r}");
            r.expect_error(401, "unauthorized", Some("Invalid access."));
            checked += 1;
        }
        // A key in the query string is never read.
        for param in ["api_key", "key", "access_token", "token", "apikey"] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let with_query = format!("{path}{sep}{param}={admin}");
            let r = send_with(&with_query, &[]);
            assert_eq!(r.status, 401, "{method} {with_query}: {r}");
            r.expect_error(401, "unauthorized", Some("Invalid access."));
            checked += 1;
        }
        if *admin_only {
            let bearer = format!("Bearer {invoke_key}");
            let r = send_with(&path, &[("Authorization", bearer.as_str())]);
            assert_eq!(r.status, 403, "{method} {path} with an invoke key: {r}");
            r.expect_error(403, "forbidden", None);
            checked += 1;
        }
    }
    let after = snapshot(&app);
    assert_eq!(before, after, "refused requests must change nothing");
    assert!(
        app.admin_get("/v1/deployments/intruder").status == 404,
        "no deployment was created"
    );
    // The keys still work, so the 401s above were about the keys presented, not the routes.
    app.admin_get("/v1/keys").expect_status(200);
    app.invoke_with_key(&invoke_key, &hello("Bob"))
        .expect_status(200);
    eprintln!(
        "auth matrix: {} operations, {checked} refused requests",
        ops.len()
    );
}

// ------------------------------------------------------------------------------------------
// The inbound trigger route
// ------------------------------------------------------------------------------------------

const TRIGGER: &str = "/v1/workflow/webhooks/hello/variants/default";

/// Where the trigger tests' runs report; nothing listens there and nothing needs to.
const NOWHERE: &str = "http://127.0.0.1:9/hook";

fn trigger(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let body = json!({"name": "Eve", "async": {"callback_url": NOWHERE}}).to_string();
    app.request("POST", path, None, &all, Some(body.as_bytes()))
}

fn run_count(app: &TestApp) -> usize {
    let r = app.admin_get("/v1/runs?limit=200");
    r.expect_status(200);
    r.json()["runs"].as_array().unwrap().len()
}

#[test]
fn the_trigger_route_takes_only_a_current_signing_secret() {
    let overlap = Duration::from_secs(3);
    let app = TestApp::start_with(
        &format!("[delivery]\nsecret_overlap = \"{}s\"\n", overlap.as_secs()),
        &[],
        &[],
    );
    let old = signing_secret(&app, "hello");
    let admin = format!("Bearer {}", app.admin_key);
    let wrong = format!("{}x", &old[..old.len() - 1]);
    let runs_before = run_count(&app);

    let refusals: Vec<(String, Vec<(&str, &str)>)> = vec![
        (TRIGGER.to_string(), vec![]),
        (
            TRIGGER.to_string(),
            vec![("X-Fetch-Hive-Webhook-Secret", "")],
        ),
        (
            TRIGGER.to_string(),
            vec![("X-Fetch-Hive-Webhook-Secret", wrong.as_str())],
        ),
        (format!("{TRIGGER}?secret={wrong}"), vec![]),
        (format!("{TRIGGER}?secret="), vec![]),
        // An API key is not the deployment's secret.
        (TRIGGER.to_string(), vec![("Authorization", admin.as_str())]),
        (
            TRIGGER.to_string(),
            vec![("X-Fetch-Hive-Webhook-Secret", app.admin_key.as_str())],
        ),
        // The right secret for another (unknown) deployment.
        (
            "/v1/workflow/webhooks/nope/variants/default".to_string(),
            vec![("X-Fetch-Hive-Webhook-Secret", old.as_str())],
        ),
    ];
    for (path, headers) in &refusals {
        let r = trigger(&app, path, headers);
        assert_eq!(r.status, 401, "{path} {headers:?}: {r}");
        r.expect_error(401, "unauthorized", Some("Invalid access."));
    }
    assert_eq!(
        run_count(&app),
        runs_before,
        "a refused trigger starts nothing"
    );

    trigger(&app, TRIGGER, &[("X-Fetch-Hive-Webhook-Secret", &old)]).expect_status(202);
    trigger(&app, &format!("{TRIGGER}?secret={old}"), &[]).expect_status(202);

    app.post_json(
        "/v1/deployments/hello/rotate-secret",
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(200);
    let rotated_at = std::time::Instant::now();
    let new = signing_secret(&app, "hello");
    assert_ne!(new, old);
    // Inside the overlap both work (if this machine was too slow to get here in time, the
    // old secret's refusal below is still checked).
    let during = trigger(&app, TRIGGER, &[("X-Fetch-Hive-Webhook-Secret", &old)]);
    if rotated_at.elapsed() < overlap - Duration::from_millis(500) {
        during.expect_status(202);
    }
    trigger(&app, TRIGGER, &[("X-Fetch-Hive-Webhook-Secret", &new)]).expect_status(202);

    std::thread::sleep(overlap.saturating_sub(rotated_at.elapsed()) + Duration::from_millis(300));
    let runs_before = run_count(&app);
    for r in [
        trigger(&app, TRIGGER, &[("X-Fetch-Hive-Webhook-Secret", &old)]),
        trigger(&app, &format!("{TRIGGER}?secret={old}"), &[]),
    ] {
        r.expect_error(401, "unauthorized", Some("Invalid access."));
    }
    assert_eq!(
        run_count(&app),
        runs_before,
        "the rotated-out secret starts nothing"
    );
    trigger(&app, TRIGGER, &[("X-Fetch-Hive-Webhook-Secret", &new)]).expect_status(202);
    // In the query string, encoded or pasted as is (a raw `+` must not decode to a space).
    trigger(&app, &format!("{TRIGGER}?secret={}", encode(&new)), &[]).expect_status(202);
    trigger(&app, &format!("{TRIGGER}?secret={new}"), &[]).expect_status(202);
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_query_string_secret_with_a_plus_works_encoded_or_not() {
    let app = TestApp::start();
    // Rotate until the secret holds a `+` (about half do).
    let secret = wait_for("a signing secret with a `+`", || {
        let s = signing_secret(&app, "hello");
        if s.contains('+') {
            return Some(s);
        }
        app.post_json(
            "/v1/deployments/hello/rotate-secret",
            Some(&app.admin_key),
            &json!({}),
        )
        .expect_status(200);
        None
    });
    trigger(&app, &format!("{TRIGGER}?secret={}", encode(&secret)), &[]).expect_status(202);
    trigger(&app, &format!("{TRIGGER}?secret={secret}"), &[]).expect_status(202);
    // A `+` is not a wildcard: the secret with it replaced by anything else is refused.
    let altered = secret.replacen('+', "-", 1);
    trigger(&app, &format!("{TRIGGER}?secret={altered}"), &[]).expect_error(
        401,
        "unauthorized",
        Some("Invalid access."),
    );
}

// ------------------------------------------------------------------------------------------
// Logs
// ------------------------------------------------------------------------------------------

/// Every `hvk_…` / `whsec_…` token in `text` (the prefix plus what follows it of the
/// base64url alphabet).
fn secret_like_tokens(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["hvk_", "whsec_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i + prefix.len()..];
            let n = tail
                .find(|c: char| {
                    !(c.is_ascii_alphanumeric()
                        || c == '-'
                        || c == '_'
                        || c == '+'
                        || c == '/'
                        || c == '=')
                })
                .unwrap_or(tail.len());
            found.push(format!("{prefix}{}", &tail[..n]));
            rest = &tail[n..];
        }
    }
    found
}

#[test]
fn no_api_key_or_signing_secret_reaches_the_logs_or_the_attempt_records() {
    let receiver = StubServer::threaded(|_, n| {
        // The first delivery fails once, so retries and a failed attempt are logged too.
        if n == 0 {
            StubReply::text(500, "try again")
        } else {
            StubReply::text(200, "ok")
        }
    });
    let callback = format!("{}/hook", receiver.url());
    let mut app = TestApp::builder()
        .config(&format!("{FAST}secret_overlap = \"1h\"\n"))
        .arg("--log-format")
        .arg("json")
        .env("HIVELET_LOG", "debug")
        .start();
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    secrets.insert(app.admin_key.clone());

    // Keys: created, rotated, revoked, and refused ones presented.
    let invoker = app.create_key("invoker", "invoke");
    let invoke_key = invoker["key"].as_str().unwrap().to_string();
    secrets.insert(invoke_key.clone());
    let other = app.create_key("other-admin", "admin");
    secrets.insert(other["key"].as_str().unwrap().to_string());
    let other_id = other["id"].as_str().unwrap();
    let r = app.post_json(
        &format!("/v1/keys/{other_id}/rotate"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(200);
    secrets.insert(r.json()["key"].as_str().unwrap().to_string());
    app.delete(&format!("/v1/keys/{other_id}"), Some(&app.admin_key))
        .expect_status(200);
    let wrong = "hvk_ThisIsAWrongKeyThatMustNotBeLogged_0123456";
    secrets.insert(wrong.to_string());
    app.get("/v1/runs", Some(wrong)).expect_status(401);
    app.get(&format!("/v1/runs?api_key={}", app.admin_key), None)
        .expect_status(401);

    // Sync and async invokes, with both keys.
    app.invoke_with_key(&invoke_key, &hello("Ada"))
        .expect_status(200);
    let mut ids = Vec::new();
    ids.push(invoke_async(&app, hello("Bob"), &callback));
    let first = wait_delivery(&app, &ids[0], "delivered");
    assert_eq!(attempts(&first).len(), 2, "{first:#}");

    // Triggers with the secret in the query string and in the header.
    let secret = signing_secret(&app, "hello");
    secrets.insert(secret.clone());
    let body = json!({"inputs": {"name": "Cy"}, "async": {"callback_url": callback}}).to_string();
    for (path, headers) in [
        (format!("{TRIGGER}?secret={secret}"), vec![]),
        (
            TRIGGER.to_string(),
            vec![("X-Fetch-Hive-Webhook-Secret", secret.as_str())],
        ),
    ] {
        let mut headers = headers;
        headers.push(("Content-Type", "application/json"));
        let r = app.request("POST", &path, None, &headers, Some(body.as_bytes()));
        r.expect_status(202);
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    }
    // A wrong secret in the query string.
    let wrong_secret = "whsec_WrongSecretThatMustNotBeLoggedAnywhere0000";
    secrets.insert(wrong_secret.to_string());
    app.request(
        "POST",
        &format!("{TRIGGER}?secret={wrong_secret}"),
        None,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .expect_status(401);

    // Rotate the signing secret: deliveries are signed with both while the old one is valid.
    app.post_json(
        "/v1/deployments/hello/rotate-secret",
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(200);
    secrets.insert(signing_secret(&app, "hello"));
    ids.push(invoke_async(&app, hello("Di"), &callback));
    for id in &ids {
        wait_delivery(&app, id, "delivered");
    }
    // Redeliver one.
    app.post_json(
        &format!("/v1/runs/{}/redeliver", ids[0]),
        Some(&app.admin_key),
        &json!({}),
    )
    .expect_status(202);
    wait_for("the redelivery", || {
        let d = run_detail(&app, &ids[0]);
        (attempts(&d).len() >= 3 && d["async"]["delivery_state"] == "delivered").then_some(())
    });

    // A restart logs too.
    app.restart();
    app.invoke(&hello("Ed")).expect_status(200);
    app.stop();

    let mut logs = Vec::new();
    let mut generation = 1;
    while app.stdout_path(generation).exists() {
        let stdout = std::fs::read_to_string(app.stdout_path(generation)).unwrap();
        let stderr = std::fs::read_to_string(app.stderr_path(generation)).unwrap();
        logs.push((format!("serve #{generation} stdout"), stdout));
        logs.push((format!("serve #{generation} stderr"), stderr));
        generation += 1;
    }
    assert!(generation > 2, "two starts were logged");
    // The first start prints the admin key once, by design: exactly that line is excluded.
    let key_line = format!("  {}", app.admin_key);
    let first = &mut logs[0].1;
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.contains(&app.admin_key)).count(),
        1,
        "the first start prints the admin key exactly once: {first}"
    );
    *first = lines
        .into_iter()
        .filter(|l| l.trim_end() != key_line.trim_end() && l.trim() != app.admin_key)
        .collect::<Vec<_>>()
        .join("\n");
    let stderr_1 = &logs[1].1;
    assert!(
        stderr_1.lines().any(|l| l.starts_with('{')),
        "the daemon logged JSON: {stderr_1}"
    );
    assert!(
        stderr_1.contains("DEBUG") || stderr_1.contains("debug"),
        "debug level was on"
    );
    for (name, text) in &logs {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name} contains the secret {s}:\n{text}"
            );
        }
        let tokens = secret_like_tokens(text);
        assert!(
            tokens.iter().all(|t| t.len() < 16),
            "{name} holds something that looks like a key or secret: {tokens:?}"
        );
    }

    // The run records, attempts included: signatures, never the secret they were made with.
    app.spawn();
    for id in &ids {
        for path in [format!("/v1/runs/{id}"), format!("/v1/runs/{id}/attempts")] {
            let r = app.admin_get(&path);
            r.expect_status(200);
            assert!(
                !r.text.contains("whsec_"),
                "{path} holds a signing secret: {r}"
            );
            for s in &secrets {
                assert!(!r.text.contains(s.as_str()), "{path} holds {s}: {r}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `config.rs` checks the data dir, the database and `admin.key`; this checks the WAL files
/// and that nothing else in the data dir is readable by others, before and after a restart.
#[test]
fn the_wal_files_and_everything_else_in_the_data_dir_are_private() {
    let mut app = TestApp::start();
    for round in 0..2 {
        app.invoke(&hello("Ada")).expect_status(200);
        for name in ["hivelet.db-wal", "hivelet.db-shm"] {
            let path = app.data_dir.join(name);
            assert!(
                path.exists(),
                "{name} exists while the daemon runs (WAL mode)"
            );
            assert_eq!(mode(&path), 0o600, "{name} mode (round {round})");
        }
        assert_eq!(mode(&app.data_dir), 0o700);
        for entry in std::fs::read_dir(&app.data_dir).unwrap() {
            let path = entry.unwrap().path();
            let m = mode(&path);
            assert_eq!(m & 0o077, 0, "{} is mode {m:o}", path.display());
        }
        app.restart();
    }
}

// ------------------------------------------------------------------------------------------
// Callback policy
// ------------------------------------------------------------------------------------------

/// A stub on a given loopback address (Linux routes all of 127.0.0.0/8 to `lo`).
fn stub_on(
    ip: &str,
    reply: impl Fn(&Recorded, usize) -> StubReply + Send + Sync + 'static,
) -> (StubServer, String) {
    let stub = StubServer::threaded_on(&format!("{ip}:0"), reply);
    let url = format!("http://{ip}:{}", stub.port);
    (stub, url)
}

#[test]
fn a_redirect_to_a_denied_address_is_never_followed() {
    let (denied, denied_url) = stub_on("127.0.0.3", |_, _| StubReply::text(200, "got it"));
    let target = format!("{denied_url}/taken");
    let (redirector, redirector_url) = {
        let target = target.clone();
        stub_on("127.0.0.2", move |_, _| StubReply {
            status: 302,
            headers: vec![("Location".into(), target.clone())],
            body: String::new(),
        })
    };
    let config = format!("{FAST}\n[security]\ncallback_deny = [\"127.0.0.3/32\"]\n");
    let app = TestApp::start_with(&config, &[], &[]);

    let via_redirect = invoke_async(&app, hello("Ada"), &format!("{redirector_url}/hook"));
    let direct = invoke_async(&app, hello("Bob"), &format!("{denied_url}/hook"));

    let detail = wait_delivery(&app, &via_redirect, "failed");
    let a = attempts(&detail);
    assert_eq!(
        a.len(),
        4,
        "every attempt is a redirect failure: {detail:#}"
    );
    for attempt in &a {
        assert_eq!(attempt["status_code"], 302, "{attempt:#}");
        assert_eq!(attempt["error_kind"], "redirect", "{attempt:#}");
    }
    assert_eq!(redirector.requests().len(), 4);

    let detail = wait_delivery(&app, &direct, "failed");
    assert_eq!(detail["async"]["failure_reason"], "denied", "{detail:#}");
    for attempt in attempts(&detail) {
        assert_eq!(attempt["error_kind"], "denied", "{attempt:#}");
    }
    assert!(
        denied.requests().is_empty(),
        "the denied address got something: {:?}",
        denied.requests()
    );
}

#[test]
fn an_allow_list_refuses_names_and_addresses_outside_it() {
    let (allowed, allowed_url) = stub_on("127.0.0.2", |_, _| StubReply::text(200, "ok"));
    let (other, other_url) = stub_on("127.0.0.3", |_, _| StubReply::text(200, "ok"));
    // `localhost` resolves to 127.0.0.1 (and maybe ::1), neither of them allowed.
    let localhost = StubServer::threaded(|_, _| StubReply::text(200, "ok"));
    let config = format!(
        "{FAST}\n[security]\ncallback_allow = [\"127.0.0.2/32\"]\ncallback_deny = [\"127.0.0.3/32\", \"::1/128\"]\n"
    );
    let app = TestApp::start_with(&config, &[], &[]);

    let ok = invoke_async(&app, hello("Ada"), &format!("{allowed_url}/hook"));
    let refused: Vec<String> = [
        format!("{other_url}/hook"),
        format!("http://localhost:{}/hook", localhost.port),
        format!("http://127.0.0.1:{}/hook", localhost.port),
        format!("http://[::ffff:127.0.0.3]:{}/hook", other.port),
    ]
    .iter()
    .map(|url| invoke_async(&app, hello("Bob"), url))
    .collect();

    wait_delivery(&app, &ok, "delivered");
    assert_eq!(allowed.requests().len(), 1);
    for id in &refused {
        let detail = wait_delivery(&app, id, "failed");
        assert_eq!(detail["async"]["failure_reason"], "denied", "{detail:#}");
        for attempt in attempts(&detail) {
            assert_eq!(attempt["error_kind"], "denied", "{attempt:#}");
            assert!(attempt["status_code"].is_null(), "{attempt:#}");
        }
    }
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert!(
        localhost.requests().is_empty(),
        "{:?}",
        localhost.requests()
    );
}

// ------------------------------------------------------------------------------------------
// DNS rebinding and connection pinning, against a DNS server the test controls
// ------------------------------------------------------------------------------------------

const REBIND_NAME: &str = "rebind.hivelet.test";
const ALLOWED_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 1);
const DENIED_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// The name answers first with an allowed address, then with a denied one, each answer with
/// TTL 0. A sender that checks one lookup and connects with another would take the second
/// answer to the trap on the denied address; hivelet connects only to the addresses it just
/// checked, so the first attempt reaches the receiver and the second is refused as `denied`
/// without a connection (a denial is final: the policy will not change by retrying). Then an answer mixing a denied and an allowed address is
/// delivered to the allowed one only.
#[test]
fn a_name_that_rebinds_to_a_denied_address_is_refused_and_connections_go_only_where_checked() {
    use crate::support::dns::{can_unshare_mounts, resolv_wrapper, DnsServer};
    let Some(dns) = DnsServer::start(REBIND_NAME).filter(|_| can_unshare_mounts()) else {
        skip("DNS rebinding test skipped: needs root for port 53 and a mount namespace");
        return;
    };
    // The receiver fails the first delivery, and closes every connection so that no attempt
    // can ride on an earlier one: each attempt resolves and connects anew.
    let (receiver, _) = stub_on("127.0.0.1", |_, seq| {
        let mut reply = StubReply::text(if seq == 0 { 500 } else { 200 }, "r");
        reply.headers.push(("Connection".into(), "close".into()));
        reply
    });
    let trap = StubServer::threaded_on(&format!("{DENIED_IP}:{}", receiver.port), |_, _| {
        StubReply::text(200, "the trap")
    });
    let resolv_dir = tempfile::tempdir().unwrap();
    let wrapper = resolv_wrapper(&dns, resolv_dir.path());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let config = format!("{FAST}\n[security]\ncallback_deny = [\"{DENIED_IP}/32\"]\n");
    let app = TestApp::builder().config(&config).wrapper(&wrapper).start();
    let hook = format!("http://{REBIND_NAME}:{}/hook", receiver.port);

    dns.script(&[&[ALLOWED_IP], &[DENIED_IP]]);
    let rebound = invoke_async(&app, hello("Ada"), &hook);
    let detail = wait_delivery(&app, &rebound, "failed");
    let tried = attempts(&detail);
    assert_eq!(tried.len(), 2, "{detail:#}");
    assert_eq!(tried[0]["status_code"], 500, "{detail:#}");
    {
        let attempt = &tried[1];
        assert_eq!(attempt["error_kind"], "denied", "{attempt:#}");
        assert!(attempt["status_code"].is_null(), "{attempt:#}");
        let message = attempt["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(REBIND_NAME) && message.contains("127.0.0.2"),
            "the record names the host and the refused address: {attempt:#}"
        );
    }
    assert_eq!(detail["async"]["failure_reason"], "denied", "{detail:#}");
    assert_eq!(
        receiver.requests().len(),
        1,
        "only the first attempt connected"
    );
    // One fresh lookup per attempt, never a cached answer.
    let queries = dns.queries();
    assert_eq!(
        queries,
        vec![vec![ALLOWED_IP], vec![DENIED_IP]],
        "A queries seen by the DNS server"
    );

    dns.script(&[&[DENIED_IP, ALLOWED_IP]]);
    let mixed = invoke_async(&app, hello("Bob"), &hook);
    let detail = wait_delivery(&app, &mixed, "delivered");
    assert_eq!(attempts(&detail).len(), 1, "{detail:#}");
    assert_eq!(receiver.requests().len(), 2);

    assert!(
        trap.requests().is_empty(),
        "the denied address was connected to: {:?}",
        trap.requests()
    );
}
