//! SPEC §8 webhook tools on the command line: `hivelet verify` (a saved delivery against a
//! secret, saying why it fails), `hivelet listen` (a local receiver printing each verified
//! event), `hivelet secret rotate`, and `hivelet invoke --async --callback-url`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};

use crate::support::*;

/// The shared signature vectors; vector 2 is a `workflow.completed` event.
fn vector(index: usize) -> Value {
    let path = repo_path("tests/data/signature-vectors.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).unwrap();
    all["vectors"][index].clone()
}

/// A scratch directory holding a saved delivery.
struct Saved {
    dir: tempfile::TempDir,
    headers: PathBuf,
    body: PathBuf,
}

impl Saved {
    fn new(headers: &str, body: &[u8]) -> Saved {
        let dir = tempfile::Builder::new()
            .prefix("hivelet-verify-")
            .tempdir()
            .unwrap();
        let headers_path = dir.path().join("headers.txt");
        let body_path = dir.path().join("body.json");
        fs::write(&headers_path, headers).unwrap();
        fs::write(&body_path, body).unwrap();
        Saved {
            dir,
            headers: headers_path,
            body: body_path,
        }
    }

    /// `hivelet verify --headers … --body … ARGS…`
    fn verify(&self, args: &[&str]) -> Output {
        self.verify_env(args, &[])
    }

    fn verify_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("verify")
            .arg("--headers")
            .arg(&self.headers)
            .arg("--body")
            .arg(&self.body)
            .args(args)
            .envs(env.iter().copied());
        run_command(cmd, self.dir.path())
    }
}

/// The delivery's headers as `curl -D` writes them (status line, CRLF, mixed case).
fn curl_headers(v: &Value) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nUser-Agent: hivelet/0.1.0\r\n\
         X-Fetch-Hive-Signature: {}\r\nX-Fetch-Hive-Request-Id: req_019d52846ea37682b03522fd0695cc43\r\n\
         Webhook-Id: {}\r\nwebhook-timestamp: {}\r\nWEBHOOK-SIGNATURE: {}\r\n\r\n",
        v["expected"]["x-fetch-hive-signature"].as_str().unwrap(),
        v["webhook_id"].as_str().unwrap(),
        v["webhook_timestamp"],
        v["expected"]["webhook-signature"].as_str().unwrap(),
    )
}

/// The same headers as a JSON object.
fn json_headers(v: &Value) -> String {
    json!({
        "content-type": "application/json",
        "x-fetch-hive-signature": v["expected"]["x-fetch-hive-signature"],
        "webhook-id": v["webhook_id"],
        "webhook-timestamp": v["webhook_timestamp"].to_string(),
        "webhook-signature": v["expected"]["webhook-signature"],
    })
    .to_string()
}

#[track_caller]
fn expect_exit(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    out_text(out).0
}

#[test]
fn verify_accepts_a_saved_delivery_and_says_why_others_fail() {
    let v = vector(1);
    let secret = v["secret"].as_str().unwrap();
    let body = v["body"].as_str().unwrap().as_bytes();
    let ts = v["webhook_timestamp"].as_i64().unwrap();
    let id = v["webhook_id"].as_str().unwrap();
    let near = (ts + 30).to_string();

    // Both header-file forms verify.
    for headers in [curl_headers(&v), json_headers(&v)] {
        let saved = Saved::new(&headers, body);
        let out = saved.verify(&["--secret", secret, "--now", &near]);
        let stdout = expect_exit(&out, 0);
        assert!(
            stdout.starts_with(&format!(
                "valid: signed by this secret (webhook-id {id}, timestamp {ts}"
            )),
            "{}",
            describe(&out)
        );
    }

    let saved = Saved::new(&curl_headers(&v), body);

    // The secret from an environment variable.
    let out = saved.verify_env(
        &["--secret-env", "MY_WEBHOOK_SECRET", "--now", &near],
        &[("MY_WEBHOOK_SECRET", secret)],
    );
    expect_exit(&out, 0);

    // A changed body: the signature does not match.
    let tampered = Saved::new(
        &curl_headers(&v),
        v["body"]
            .as_str()
            .unwrap()
            .replace("Hello, Ada.", "Hello, Eve.")
            .as_bytes(),
    );
    let out = tampered.verify(&["--secret", secret, "--now", &near]);
    let stdout = expect_exit(&out, 1);
    assert!(
        stdout.starts_with("invalid: bad signature"),
        "{}",
        describe(&out)
    );
    assert!(stdout.contains("signature"), "{}", describe(&out));

    // Far later: stale, saying how old and the tolerance.
    let later = (ts + 3600).to_string();
    let out = saved.verify(&["--secret", secret, "--now", &later]);
    let stdout = expect_exit(&out, 1);
    assert!(
        stdout.starts_with("invalid: stale timestamp"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("3600 s") && stdout.contains("300 s tolerance"),
        "{}",
        describe(&out)
    );
    // ... unless the tolerance allows it.
    let out = saved.verify(&["--secret", secret, "--now", &later, "--tolerance", "7200"]);
    expect_exit(&out, 0);

    // Another secret.
    let out = saved.verify(&[
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "--now",
        &near,
    ]);
    let stdout = expect_exit(&out, 1);
    assert!(
        stdout.starts_with("invalid: bad signature"),
        "{}",
        describe(&out)
    );

    // A malformed secret.
    let out = saved.verify(&["--secret", "whsec_not*base64", "--now", &near]);
    let stdout = expect_exit(&out, 1);
    assert!(
        stdout.starts_with("invalid: malformed secret"),
        "{}",
        describe(&out)
    );

    // Missing headers.
    let bare = Saved::new(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
        body,
    );
    let out = bare.verify(&["--secret", secret, "--now", &near]);
    let stdout = expect_exit(&out, 1);
    assert!(
        stdout.starts_with("invalid: missing header"),
        "{}",
        describe(&out)
    );

    // No secret at all is a usage error.
    let out = saved.verify(&["--now", &near]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// `hivelet listen` as a child process, killed when dropped.
struct Listen {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Listen {
    fn start(dir: &Path, port: u16, secret: &str) -> Listen {
        let stdout = dir.join("listen.stdout");
        let stderr = dir.join("listen.stderr");
        let child = Command::new(BIN)
            .args(["listen", "--port", &port.to_string(), "--secret", secret])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start hivelet listen");
        Listen {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until stdout contains `needle`; returns all of stdout.
    fn wait_for(&self, needle: &str) -> String {
        wait_for(&format!("`{needle}` in hivelet listen's output"), || {
            let out = self.output();
            out.contains(needle).then_some(out)
        })
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- hivelet listen stdout ---\n{}\n--- hivelet listen stderr ---\n{}",
                self.output(),
                fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn listen_prints_each_verified_event_from_the_daemon() {
    let app = TestApp::start();
    let r = app.admin_get("/v1/deployments/hello");
    r.expect_status(200);
    let secret = r.json()["signing_secret"].as_str().unwrap().to_string();

    let port = free_port();
    let listen = Listen::start(&app.dir, port, &secret);
    listen.wait_for(&format!("listening on http://127.0.0.1:{port}\n"));

    // `hivelet invoke --async --callback-url` prints `req_… running|queued`, exit 0.
    let out = app.cli(&[
        "invoke",
        "hello",
        "--input",
        "name=Ada",
        "--async",
        "--callback-url",
        &format!("http://127.0.0.1:{port}/hook"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = out_text(&out).0;
    let mut words = stdout.split_whitespace();
    let request_id = words.next().unwrap_or_default().to_string();
    let status = words.next().unwrap_or_default();
    assert!(is_request_id(&request_id), "{}", describe(&out));
    assert!(
        status == "running" || status == "queued",
        "{}",
        describe(&out)
    );
    assert_eq!(words.next(), None, "{}", describe(&out));

    let printed = listen.wait_for("Hello, Ada.");
    assert!(
        printed.contains("verified") && !printed.contains("INVALID"),
        "{printed}"
    );
    assert!(printed.contains(&request_id), "{printed}");
    assert!(printed.contains("workflow.completed"), "{printed}");
    assert!(printed.contains("POST /hook"), "{printed}");

    // The daemon recorded listen's 200 as the delivery's outcome.
    wait_for("the attempt answered 200 to be recorded", || {
        let r = app.admin_get(&format!("/v1/runs/{request_id}/attempts"));
        r.is_success().then(|| r.json()).filter(|body| {
            body["attempts"]
                .as_array()
                .is_some_and(|list| list.iter().any(|a| a["status_code"] == 200))
        })
    });

    // A forged delivery is printed as INVALID and answered 400.
    let body = br#"{"event_type":"workflow.completed","request_id":"req_forged","data":{"run_status":"completed","output":"Hello, Mallory."}}"#;
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let r = send(
        "POST",
        &format!("http://127.0.0.1:{port}/hook"),
        &[
            ("Content-Type", "application/json"),
            ("webhook-id", "evt_forged"),
            ("webhook-timestamp", &ts),
            (
                "webhook-signature",
                "v1,ra/jsqm6le+51uXz7IJa/rgp4QnHSn4O6IUYKjrTZUw=",
            ),
        ],
        Some(body),
    );
    r.expect_status(400);
    assert!(r.text.contains("bad signature"), "{r}");
    let printed = listen.wait_for("Hello, Mallory.");
    assert!(printed.contains("INVALID: bad signature"), "{printed}");

    // Only POST is a delivery.
    send("GET", &format!("http://127.0.0.1:{port}/hook"), &[], None).expect_status(405);
}

#[test]
fn secret_rotate_prints_the_new_secret_and_how_long_the_old_one_lasts() {
    let app = TestApp::start();
    let old = app.admin_get("/v1/deployments/hello").json()["signing_secret"]
        .as_str()
        .unwrap()
        .to_string();

    let out = app.cli(&["secret", "rotate", "hello"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    let new = stdout.trim();
    assert!(new.starts_with("whsec_"), "{}", describe(&out));
    assert_ne!(new, old);
    assert!(stderr.contains("valid until"), "{}", describe(&out));
    let now = app.admin_get("/v1/deployments/hello").json()["signing_secret"].clone();
    assert_eq!(now, new, "the daemon now signs with the printed secret");

    let out = app.cli(&["secret", "rotate", "no-such-deployment"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}
