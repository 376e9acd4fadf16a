//! Test harness: runs the real `hivelet` binary on an ephemeral loopback port with its own
//! temporary config and data directories, talks to it over HTTP, and stands in for the
//! outside services a workflow calls with small local HTTP servers.
//!
//! Nothing here uses the crate's library API: tests see the daemon the way a user does.

#![allow(dead_code)]

pub mod dns;
pub mod webhooks;

pub use webhooks::*;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Says why a test cannot run on this machine (it needs root, say) and lets it return early;
/// with `HIVELET_NO_SKIP=1` (set by `.ci/run` when it runs as root) the test fails instead,
/// so CI cannot pass by skipping.
pub fn skip(why: &str) {
    assert!(
        !std::env::var_os("HIVELET_NO_SKIP").is_some_and(|v| v == "1"),
        "{why} (HIVELET_NO_SKIP=1)"
    );
    eprintln!("{why}");
}

/// The daemon binary Cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_hivelet");

/// How long any "eventually" condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long one client command or HTTP request may take (the `slow` variant sleeps 2 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables of the daemon that must not leak from the test's environment.
const DAEMON_ENV: &[&str] = &[
    "HIVELET_CONFIG",
    "HIVELET_DATA_DIR",
    "HIVELET_BIND",
    "RUST_LOG",
];

/// Polls `probe` until it returns `Some`, for at most [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            start.elapsed() <= DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Path of a file under the repository root (for `tests/python/...`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ------------------------------------------------------------------------------------------
// HTTP responses
// ------------------------------------------------------------------------------------------

/// One HTTP response, whatever its status.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Resp {
    /// The body as JSON; panics with the raw response if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): HTTP {} {:?}",
                self.status, self.text
            )
        })
    }

    /// A header's value, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Asserts the status, showing the whole response when it differs.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; response: {} {}",
            self.status, self.text
        );
        self
    }

    /// Asserts a 2xx status.
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        assert!(
            self.is_success(),
            "expected 2xx; response: {} {}",
            self.status,
            self.text
        );
        self
    }

    /// Asserts the contract's error envelope: status, `error_code`, `error` == `message`,
    /// and the exact message when one is given. Returns the body.
    #[track_caller]
    pub fn expect_error(&self, status: u16, error_code: &str, message: Option<&str>) -> Value {
        self.expect_status(status);
        let body = self.json();
        assert_eq!(body["error_code"], error_code, "error_code; body: {body}");
        assert!(
            body["message"].is_string(),
            "`message` must be a string; body: {body}"
        );
        assert_eq!(
            body["error"], body["message"],
            "`error` is an alias of `message`; body: {body}"
        );
        if let Some(message) = message {
            assert_eq!(body["message"], message, "message; body: {body}");
        }
        body
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .redirects(0)
        .build()
}

/// Sends one request; a 4xx/5xx is a response like any other, a transport error panics.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    try_send(method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: transport error: {e}"))
}

/// Like [`send`] but returns a transport error (connection refused, reset, …) as `Err`.
pub fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(bytes) => req.send_bytes(bytes),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            let value = response.header(&name)?.to_string();
            Some((name, value))
        })
        .collect();
    let text = response
        .into_string()
        .map_err(|e| format!("reading body: {e}"))?;
    Ok(Resp {
        status,
        headers,
        text,
    })
}

fn auth_headers(key: Option<&str>) -> Vec<(&'static str, String)> {
    match key {
        Some(k) => vec![("Authorization", format!("Bearer {k}"))],
        None => vec![],
    }
}

// ------------------------------------------------------------------------------------------
// The daemon under test
// ------------------------------------------------------------------------------------------

/// How the daemon is told where its config and data live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathsVia {
    /// `hivelet --config C --data-dir D serve …`
    FlagsBefore,
    /// `hivelet serve --config C --data-dir D …`
    FlagsAfter,
    /// `HIVELET_CONFIG=C HIVELET_DATA_DIR=D hivelet serve …`
    Env,
}

/// Describes a daemon to start; see [`TestApp::builder`].
pub struct AppBuilder {
    config: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    files: Vec<(String, String)>,
    examples: bool,
    paths_via: PathsVia,
    wrapper: Vec<String>,
}

impl AppBuilder {
    /// The contents of `hivelet.toml` (written even when empty).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// An extra argument appended to `serve …`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A file written before start, relative to the config directory (e.g.
    /// `workflows/greeter.toml`).
    pub fn file(mut self, rel: &str, contents: &str) -> Self {
        self.files.push((rel.to_string(), contents.to_string()));
        self
    }

    /// Starts without the example `hello` deployment (`--no-examples`).
    pub fn no_examples(mut self) -> Self {
        self.examples = false;
        self
    }

    pub fn paths_via(mut self, via: PathsVia) -> Self {
        self.paths_via = via;
        self
    }

    /// Runs the daemon through this command, which must `exec` its trailing arguments (the
    /// daemon binary and its arguments), so the daemon keeps the pid the test signals.
    pub fn wrapper(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_string()).collect();
        self
    }

    /// Lays out the temp dir without starting anything.
    pub fn prepare(self) -> TestApp {
        let tmp = tempfile::Builder::new()
            .prefix("hivelet-it-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let config_path = dir.join("hivelet.toml");
        let data_dir = dir.join("data");
        fs::write(&config_path, &self.config).expect("write hivelet.toml");
        for (rel, contents) in &self.files {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
        }
        let mut args = self.args;
        if !self.examples {
            args.push("--no-examples".into());
        }
        TestApp {
            _tmp: tmp,
            dir,
            config_path,
            data_dir,
            base_url: String::new(),
            admin_key: String::new(),
            child: None,
            generation: 0,
            args,
            env: self.env,
            paths_via: self.paths_via,
            wrapper: self.wrapper,
        }
    }

    /// Starts the daemon and waits until it listens.
    pub fn start(self) -> TestApp {
        let mut app = self.prepare();
        app.spawn();
        app
    }
}

/// A running `hivelet serve` with its own temp dir; dropping it kills the daemon.
pub struct TestApp {
    _tmp: tempfile::TempDir,
    /// The temp dir; it holds `hivelet.toml` (so it is the config dir) and `data/`.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// e.g. `http://127.0.0.1:41234`, read from `<data dir>/hivelet.addr`.
    pub base_url: String,
    /// From `<data dir>/admin.key`.
    pub admin_key: String,
    child: Option<Child>,
    /// Counts starts, so each start logs to its own files.
    generation: usize,
    args: Vec<String>,
    env: Vec<(String, String)>,
    paths_via: PathsVia,
    wrapper: Vec<String>,
}

impl TestApp {
    pub fn builder() -> AppBuilder {
        AppBuilder {
            config: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            examples: true,
            paths_via: PathsVia::FlagsBefore,
            wrapper: Vec::new(),
        }
    }

    /// A daemon with an empty config and the example deployment.
    pub fn start() -> TestApp {
        Self::builder().start()
    }

    /// A daemon with the given `hivelet.toml`, extra `serve` arguments and environment.
    pub fn start_with(
        config_toml: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> TestApp {
        let mut b = Self::builder().config(config_toml);
        for a in extra_args {
            b = b.arg(a);
        }
        for (k, v) in extra_env {
            b = b.env(k, v);
        }
        b.start()
    }

    fn serve_command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        for var in DAEMON_ENV {
            cmd.env_remove(var);
        }
        let config = self.config_path.to_str().unwrap();
        let data = self.data_dir.to_str().unwrap();
        match self.paths_via {
            PathsVia::FlagsBefore => {
                cmd.args(["--config", config, "--data-dir", data, "serve"]);
            }
            PathsVia::FlagsAfter => {
                cmd.args(["serve", "--config", config, "--data-dir", data]);
            }
            PathsVia::Env => {
                cmd.env("HIVELET_CONFIG", config)
                    .env("HIVELET_DATA_DIR", data)
                    .arg("serve");
            }
        }
        cmd.args(["--bind", "127.0.0.1:0"]).args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        if let Some((program, args)) = self.wrapper.split_first() {
            let mut wrapped = Command::new(program);
            wrapped
                .args(args)
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (key, value) in cmd.get_envs() {
                match value {
                    Some(v) => wrapped.env(key, v),
                    None => wrapped.env_remove(key),
                };
            }
            wrapped.stdin(Stdio::null());
            return wrapped;
        }
        cmd
    }

    /// Path of the stdout log of start number `generation` (1-based).
    pub fn stdout_path(&self, generation: usize) -> PathBuf {
        self.dir.join(format!("serve-{generation}.stdout.log"))
    }

    pub fn stderr_path(&self, generation: usize) -> PathBuf {
        self.dir.join(format!("serve-{generation}.stderr.log"))
    }

    /// What the current (latest) daemon printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.stdout_path(self.generation)).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path(self.generation)).unwrap_or_default()
    }

    fn spawn_child(&mut self) -> Child {
        self.generation += 1;
        // A stale address from an earlier start must not be mistaken for the new one.
        let _ = fs::remove_file(self.data_dir.join("hivelet.addr"));
        let out = fs::File::create(self.stdout_path(self.generation)).unwrap();
        let err = fs::File::create(self.stderr_path(self.generation)).unwrap();
        let mut cmd = self.serve_command();
        cmd.stdout(out).stderr(err);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// Starts the daemon and waits for `hivelet.addr` and `admin.key`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let child = self.spawn_child();
        self.child = Some(child);
        let addr_file = self.data_dir.join("hivelet.addr");
        let base_url = wait_for("the daemon to write hivelet.addr", || {
            self.check_alive();
            let text = fs::read_to_string(&addr_file).ok()?;
            let url = text.trim();
            let port = url.strip_prefix("http://")?.rsplit(':').next()?;
            port.parse::<u16>().ok().filter(|p| *p != 0)?;
            Some(url.to_string())
        });
        self.base_url = base_url;
        let key_file = self.data_dir.join("admin.key");
        self.admin_key = wait_for("admin.key", || {
            let key = fs::read_to_string(&key_file).ok()?.trim().to_string();
            (!key.is_empty()).then_some(key)
        });
    }

    /// Panics with the logs if the daemon has exited.
    fn check_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "hivelet serve exited early with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
        }
    }

    /// Stops the daemon with SIGTERM (SIGKILL if it does not stop within the deadline).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the daemon at once (SIGKILL), as a crash or power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns at once; see [`TestApp::wait_exit`].
    pub fn terminate(&self) {
        let pid = self.pid().expect("daemon running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        assert!(
            status.map(|s| s.success()).unwrap_or(false),
            "kill -TERM {pid} failed"
        );
    }

    /// Waits (up to the deadline) for the daemon to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if start.elapsed() > REQUEST_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit within {REQUEST_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops and starts the daemon again on the same config and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `serve` with this app's settings when it is expected to refuse to start: waits
    /// for it to exit (killing it after the deadline) and returns what it printed.
    pub fn serve_expecting_exit(&mut self) -> Output {
        assert!(self.child.is_none(), "stop the running daemon first");
        let mut child = self.spawn_child();
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hivelet serve was expected to exit but kept running (config {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Output {
            status,
            stdout: fs::read(self.stdout_path(self.generation)).unwrap_or_default(),
            stderr: fs::read(self.stderr_path(self.generation)).unwrap_or_default(),
        }
    }

    /// Runs the binary as a client (`hivelet --config C --data-dir D ARGS…`).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(args, &[])
    }

    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        for var in DAEMON_ENV {
            cmd.env_remove(var);
        }
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_command(cmd, &self.dir)
    }

    /// Starts a long-running client command (e.g. `listen`) in the background.
    pub fn cli_background(&self, args: &[&str]) -> Background {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout_path = self.dir.join(format!("bg-{n}.stdout"));
        let stderr_path = self.dir.join(format!("bg-{n}.stderr"));
        let mut cmd = Command::new(BIN);
        for var in DAEMON_ENV {
            cmd.env_remove(var);
        }
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        Background {
            child,
            stdout_path,
            stderr_path,
        }
    }

    // --- HTTP -----------------------------------------------------------------------------

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let auth = auth_headers(key);
        let mut all: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(headers);
        send(method, &self.url(path), &all, body)
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> Resp {
        self.request("GET", path, key, &[], None)
    }

    pub fn post_json(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).unwrap();
        self.request(
            "POST",
            path,
            key,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
    }

    pub fn put(&self, path: &str, key: Option<&str>, content_type: &str, body: &str) -> Resp {
        self.request(
            "PUT",
            path,
            key,
            &[("Content-Type", content_type)],
            Some(body.as_bytes()),
        )
    }

    pub fn delete(&self, path: &str, key: Option<&str>) -> Resp {
        self.request("DELETE", path, key, &[], None)
    }

    /// `GET` with the admin key.
    pub fn admin_get(&self, path: &str) -> Resp {
        self.get(path, Some(&self.admin_key))
    }

    /// `POST /v1/workflow/invoke` with the admin key.
    pub fn invoke(&self, body: &Value) -> Resp {
        self.post_json("/v1/workflow/invoke", Some(&self.admin_key), body)
    }

    pub fn invoke_with_key(&self, key: &str, body: &Value) -> Resp {
        self.post_json("/v1/workflow/invoke", Some(key), body)
    }

    /// Deploys a TOML definition under `key` with the admin key.
    pub fn deploy_toml(&self, key: &str, toml: &str) -> Resp {
        self.put(
            &format!("/v1/deployments/{key}"),
            Some(&self.admin_key),
            "application/toml",
            toml,
        )
    }

    /// Deploys a JSON definition under `key` with the admin key.
    pub fn deploy_json(&self, key: &str, definition: &Value) -> Resp {
        self.put(
            &format!("/v1/deployments/{key}"),
            Some(&self.admin_key),
            "application/json",
            &definition.to_string(),
        )
    }

    /// Deploys a TOML definition and asserts it was accepted.
    #[track_caller]
    pub fn deploy_ok(&self, key: &str, toml: &str) -> Value {
        let r = self.deploy_toml(key, toml);
        assert!(
            r.is_success(),
            "deploying {key} failed: {r}\n--- stderr ---\n{}",
            self.stderr()
        );
        r.json()
    }

    /// Creates an API key through the API and returns the create response.
    #[track_caller]
    pub fn create_key(&self, name: &str, role: &str) -> Value {
        let r = self.post_json(
            "/v1/keys",
            Some(&self.admin_key),
            &serde_json::json!({"name": name, "role": role}),
        );
        r.expect_status(201);
        r.json()
    }

    /// Sets an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && self.generation > 0 {
            for g in 1..=self.generation {
                eprintln!(
                    "--- hivelet serve #{g} stdout ---\n{}\n--- hivelet serve #{g} stderr ---\n{}",
                    fs::read_to_string(self.stdout_path(g)).unwrap_or_default(),
                    fs::read_to_string(self.stderr_path(g)).unwrap_or_default(),
                );
            }
        }
    }
}

/// A client command running in the background; dropping it kills it.
pub struct Background {
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Background {
    /// Waits for the command to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stdout holds `needle` and returns all of stdout.
    pub fn wait_for_stdout(&mut self, needle: &str) -> String {
        wait_for(&format!("{needle:?} on the command's stdout"), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the command exited with {status}\nstdout: {}\nstderr: {}",
                    self.stdout(),
                    self.stderr()
                );
            }
            let out = self.stdout();
            out.contains(needle).then_some(out)
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- background stdout ---\n{}\n--- background stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// Runs a command to completion (killed after [`REQUEST_TIMEOUT`]), its output captured via
/// files in `scratch` so a chatty child can never block on a full pipe.
pub fn run_command(mut cmd: Command, scratch: &Path) -> Output {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let out_path = scratch.join(format!("cmd-{n}.stdout"));
    let err_path = scratch.join(format!("cmd-{n}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > REQUEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {REQUEST_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn out_text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Renders a command's result for an assertion message.
pub fn describe(out: &Output) -> String {
    let (stdout, stderr) = out_text(out);
    format!(
        "exit {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    )
}

// ------------------------------------------------------------------------------------------
// Stand-ins for outside services
// ------------------------------------------------------------------------------------------

/// One request a [`StubServer`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path with query string, e.g. `/v1/chat/completions`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("stub received a non-JSON body ({e}): {}", self.body_text()))
    }
}

/// What a [`StubServer`] answers.
#[derive(Debug, Clone)]
pub struct StubReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StubReply {
    pub fn json(status: u16, body: &Value) -> StubReply {
        StubReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> StubReply {
        StubReply {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.to_string(),
        }
    }
}

type Responder = dyn Fn(&Recorded, usize) -> StubReply + Send + Sync;

/// A tiny HTTP server on `127.0.0.1:0` that records every request and answers from a closure
/// (given the request and its 0-based sequence number). Each request is handled on its own
/// thread so a slow reply never holds up another.
pub struct StubServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Recorded>>>,
    _acceptor: Acceptor,
}

impl StubServer {
    pub fn start(
        responder: impl Fn(&Recorded, usize) -> StubReply + Send + Sync + 'static,
    ) -> StubServer {
        Self::start_on("127.0.0.1:0", responder)
    }

    /// Like [`StubServer::start`] on a given address (e.g. a port a test freed on purpose).
    pub fn start_on(
        addr: &str,
        responder: impl Fn(&Recorded, usize) -> StubReply + Send + Sync + 'static,
    ) -> StubServer {
        // One plain thread per connection: tiny_http's pool could park a new connection
        // behind a kept-alive one, so a request went unseen until that connection closed.
        Self::threaded_on(addr, responder)
    }

    /// Always answers `200` with this JSON.
    pub fn json(body: Value) -> StubServer {
        Self::start(move |_, _| StubReply::json(200, &body))
    }

    /// An OpenAI-compatible `/v1/chat/completions` that always replies `content`.
    pub fn openai(content: &str) -> StubServer {
        let content = content.to_string();
        Self::start(move |req, _| {
            if req.method == "POST" && req.path.starts_with("/v1/chat/completions") {
                StubReply::json(200, &chat_completion(&content))
            } else {
                StubReply::json(
                    404,
                    &serde_json::json!({"error": {"message": "no such route"}}),
                )
            }
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived and returns them all.
    pub fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        wait_for(&format!("{n} request(s) at the stub server"), || {
            let list = self.requests();
            (list.len() >= n).then_some(list)
        })
    }

    /// Like [`StubServer::start_on`], but without tiny_http: one plain thread per connection.
    ///
    /// Use it when a test holds many requests open at once (a [`Gate`] in the responder).
    /// tiny_http 0.12 runs each keep-alive connection on a pooled thread for the connection's
    /// whole life, and its pool can lose a wake-up when two connections arrive together
    /// (`TaskPool::spawn` queues the second for a thread that is already taken): that
    /// connection's requests then wait, unseen, until some other connection closes. With
    /// clients that keep connections alive (the daemon does) and held requests, that is
    /// seconds to forever.
    pub fn threaded_on(
        addr: &str,
        responder: impl Fn(&Recorded, usize) -> StubReply + Send + Sync + 'static,
    ) -> StubServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Responder> = Arc::new(responder);
        let acceptor = {
            let received = received.clone();
            Acceptor::start(addr, move |socket| {
                let received = received.clone();
                let responder = responder.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(socket, &received, &*responder);
                });
            })
        };
        StubServer {
            port: acceptor.port,
            received,
            _acceptor: acceptor,
        }
    }

    /// Answers the first `failures` requests with `status` and `body`, then `200 ok`.
    pub fn fails_first(failures: usize, status: u16, body: &'static str) -> StubServer {
        Self::threaded(move |_, n| {
            if n < failures {
                StubReply::text(status, body)
            } else {
                StubReply::text(200, "ok")
            }
        })
    }

    /// [`StubServer::threaded_on`] on `127.0.0.1:0`.
    pub fn threaded(
        responder: impl Fn(&Recorded, usize) -> StubReply + Send + Sync + 'static,
    ) -> StubServer {
        Self::threaded_on("127.0.0.1:0", responder)
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it (or asks to).
fn serve_connection(
    socket: TcpStream,
    received: &Mutex<Vec<Recorded>>,
    responder: &Responder,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    socket.set_nonblocking(false)?;
    let mut writer = socket.try_clone()?;
    let mut reader = BufReader::new(socket);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue; // stray CRLF between requests
        }
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let mut chunk = vec![0; size + 2]; // data + CRLF
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body = vec![0; len];
            reader.read_exact(&mut body)?;
        }
        let close = header("connection").is_some_and(|v| v.contains("close"));
        let recorded = Recorded {
            method,
            path,
            headers,
            body,
        };
        let seq = {
            let mut list = received.lock().unwrap();
            list.push(recorded.clone());
            list.len() - 1
        };
        let reply = responder(&recorded, seq);
        // A reply may close the connection itself, so the next request must connect anew.
        let close = close
            || reply
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.contains("close"));
        let mut head = format!(
            "HTTP/1.1 {} Stub\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close && !head.to_ascii_lowercase().contains("connection: close") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        writer.write_all(reply.body.as_bytes())?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// A TCP listener that hands each connection it accepts to `on_accept`, on one thread of its
/// own, until dropped. The base of the stub servers and of the raw receivers in fault tests.
pub struct Acceptor {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub fn start(addr: &str, mut on_accept: impl FnMut(TcpStream) + Send + 'static) -> Acceptor {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => on_accept(socket),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Acceptor {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A latch a stub's responder can wait on, so a test holds a run inside a step for as long as
/// it needs (no sleeps): `gate.wait()` in the responder, `gate.open()` in the test.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Blocks until the gate is opened (or 30 s passed, so a failed test never hangs).
    pub fn wait(&self) {
        let (lock, cvar) = &*self.0;
        let open = lock.lock().unwrap();
        let _ = cvar
            .wait_timeout_while(open, REQUEST_TIMEOUT, |open| !*open)
            .unwrap();
    }

    pub fn open(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
}

/// A chat completion the way OpenAI-compatible servers answer.
pub fn chat_completion(content: &str) -> Value {
    serde_json::json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "stub-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// An OpenAI-style SSE reply: one chunk per piece of `parts`, a usage chunk, `[DONE]`.
pub fn sse_completion(parts: &[&str]) -> StubReply {
    let mut body = String::new();
    for p in parts {
        let chunk = serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let usage = serde_json::json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
    body.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    StubReply {
        status: 200,
        headers: vec![("Content-Type".into(), "text/event-stream".into())],
        body,
    }
}

// ------------------------------------------------------------------------------------------
// Small assertions
// ------------------------------------------------------------------------------------------

/// `req_` + 32 lower-case hex.
pub fn is_request_id(s: &str) -> bool {
    is_prefixed_hex(s, "req_")
}

/// `prefix` + 32 lower-case hex.
pub fn is_prefixed_hex(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// True if `needle` occurs as a string anywhere inside `v` (keys excluded).
pub fn json_contains_str(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| json_contains_str(x, needle)),
        Value::Object(o) => o.values().any(|x| json_contains_str(x, needle)),
        _ => false,
    }
}

/// True if the whole-word number `n` appears in `text` (e.g. "version 2", "v2", "(2)").
pub fn mentions_number(text: &str, n: u64) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .any(|t| t.parse::<u64>() == Ok(n))
}

/// Invoke body for the example deployment.
pub fn hello(name: &str) -> Value {
    serde_json::json!({"deployment": "hello", "inputs": {"name": name}})
}
