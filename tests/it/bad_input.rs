//! Issue 7 item 4 (last sentence): hostile input at the HTTP level. Deeply nested or huge
//! JSON, invalid UTF-8, huge headers and slow clients each get a clear answer (the contract's
//! envelope where the daemon, not actix-web's parser, answers), store nothing, and leave the
//! daemon serving normal invokes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// Safety limit for raw socket reads: a test never hangs; not an assertion of speed.
const SAFETY: Duration = Duration::from_secs(30);

/// How many runs the daemon has stored.
fn run_count(app: &TestApp) -> usize {
    let r = app.admin_get("/v1/runs?limit=200");
    r.expect_status(200);
    r.json()["runs"].as_array().expect("runs array").len()
}

/// After any rejection the daemon still serves a valid invoke.
#[track_caller]
fn still_works(app: &TestApp) {
    let r = app.invoke(&hello("Ada"));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");
}

/// The daemon's `host:port`.
fn addr(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_string()
}

/// Sends raw bytes on a fresh connection and reads one response (status line, headers and a
/// `Content-Length` body). A write error is tolerated (the daemon may answer and close before
/// reading everything); the response is what counts.
fn raw_exchange(app: &TestApp, request: &[u8]) -> std::io::Result<Resp> {
    let mut socket = TcpStream::connect(addr(app))?;
    socket.set_read_timeout(Some(SAFETY))?;
    socket.set_write_timeout(Some(SAFETY))?;
    let _ = socket.write_all(request);
    let _ = socket.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&body).to_string(),
    })
}

/// [`raw_exchange`], retried on a transport error (a reset racing the answer), a few times.
fn raw_exchange_retry(app: &TestApp, request: &[u8]) -> Resp {
    let mut last = None;
    for _ in 0..5 {
        match raw_exchange(app, request) {
            Ok(r) => return r,
            Err(e) => last = Some(e),
        }
    }
    panic!("no HTTP answer: {last:?}");
}

/// A raw `POST /v1/workflow/invoke` head with the admin key; `extra` ends with `\r\n` per line.
fn invoke_head(app: &TestApp, extra: &str) -> String {
    format!(
        "POST /v1/workflow/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nConnection: close\r\n{extra}",
        app.admin_key
    )
}

#[test]
fn deeply_nested_json_is_400_and_stores_nothing() {
    let app = TestApp::start();
    let before = run_count(&app);
    let key = app.admin_key.clone();
    for body in [
        "[".repeat(100_000),
        format!(
            r#"{{"deployment": "hello", "inputs": {{"name": {}}}}}"#,
            "{\"a\":".repeat(50_000)
        ),
    ] {
        let r = app.request(
            "POST",
            "/v1/workflow/invoke",
            Some(&key),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        let err = r.expect_error(400, "bad_request", None);
        assert!(
            err["message"].as_str().unwrap().contains("recursion"),
            "serde_json's recursion limit should be named: {err}"
        );
    }
    // The webhook trigger route parses JSON the same way.
    let r = app.request(
        "POST",
        "/v1/workflow/webhooks/hello/variants/default",
        None,
        &[("Content-Type", "application/json")],
        Some("[".repeat(100_000).as_bytes()),
    );
    assert!(r.status == 400 || r.status == 401, "{r}");
    r.expect_error(
        r.status,
        if r.status == 400 {
            "bad_request"
        } else {
            "unauthorized"
        },
        None,
    );
    // A deeply nested TOML definition hits the TOML parser's recursion limit.
    let r = app.put(
        "/v1/deployments/deep",
        Some(&key),
        "application/toml",
        &format!("x = {}", "[".repeat(100_000)),
    );
    assert!(r.status == 400 || r.status == 422, "{r}");
    r.expect_error(
        r.status,
        if r.status == 400 {
            "bad_request"
        } else {
            "validation_error"
        },
        None,
    );
    assert_eq!(
        app.admin_get("/v1/deployments/deep").status,
        404,
        "nothing deployed"
    );
    assert_eq!(run_count(&app), before, "nothing stored");
    still_works(&app);
}

#[test]
fn body_just_over_the_limit_is_413_with_and_without_content_length() {
    let app = TestApp::start_with("[limits]\ninvoke_body = \"64KiB\"\n", &[], &[]);
    let before = run_count(&app);
    let limit = 64 * 1024;
    let prefix = r#"{"deployment": "hello", "inputs": {"name": ""#;
    let suffix = r#""}}"#;
    let filler = "x".repeat(limit + 1 - prefix.len() - suffix.len());
    let body = format!("{prefix}{filler}{suffix}");
    assert_eq!(body.len(), limit + 1);

    // With Content-Length: refused from the header.
    let mut request =
        invoke_head(&app, &format!("Content-Length: {}\r\n\r\n", body.len())).into_bytes();
    request.extend_from_slice(body.as_bytes());
    let r = raw_exchange_retry(&app, &request);
    r.expect_error(413, "payload_too_large", None);

    // Chunked, no Content-Length: refused while streaming, once the limit is crossed.
    let mut request = invoke_head(&app, "Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in body.as_bytes().chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let r = raw_exchange_retry(&app, &request);
    r.expect_error(413, "payload_too_large", None);

    assert_eq!(run_count(&app), before, "the refused bodies stored nothing");

    // Exactly at the limit is not "too large".
    let at_limit = format!("{prefix}{}{suffix}", &filler[1..]);
    assert_eq!(at_limit.len(), limit);
    let key = app.admin_key.clone();
    let r = app.request(
        "POST",
        "/v1/workflow/invoke",
        Some(&key),
        &[("Content-Type", "application/json")],
        Some(at_limit.as_bytes()),
    );
    assert_ne!(r.status, 413, "a body at the limit is accepted: {r}");
    still_works(&app);
}

#[test]
fn invalid_utf8_is_400_and_stores_nothing() {
    let app = TestApp::start();
    let before = run_count(&app);
    let key = app.admin_key.clone();
    let mut body = br#"{"deployment": "hello", "inputs": {"name": "A"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(br#"da"}}"#);
    let r = app.request(
        "POST",
        "/v1/workflow/invoke",
        Some(&key),
        &[("Content-Type", "application/json")],
        Some(&body),
    );
    r.expect_error(400, "bad_request", None);
    assert_eq!(run_count(&app), before, "nothing stored");
    still_works(&app);
}

/// Sends an invoke with `extra` header lines and returns the answer.
fn invoke_with_headers(app: &TestApp, extra: &str) -> Resp {
    let body = hello("Ada").to_string();
    let request = format!(
        "{}{extra}Content-Length: {}\r\n\r\n{body}",
        invoke_head(app, ""),
        body.len()
    );
    raw_exchange_retry(app, request.as_bytes())
}

#[test]
fn huge_headers_are_refused_and_the_daemon_keeps_serving() {
    let app = TestApp::start();
    let before = run_count(&app);
    // actix-web bounds a request head at 128 KiB and 96 headers; a 64 KiB header is within
    // that bound and served like any other request (the memory per connection stays bounded).
    let r = invoke_with_headers(&app, &format!("X-Junk: {}\r\n", "j".repeat(64 * 1024)));
    r.expect_status(200);
    let before = before + 1;
    for extra in [
        format!("X-Junk: {}\r\n", "j".repeat(256 * 1024)),
        (0..200).map(|i| format!("X-Junk-{i}: {i}\r\n")).collect(),
    ] {
        let r = invoke_with_headers(&app, &extra);
        // actix-web's parser answers before any handler runs, with a bare 431 (no body, so no
        // envelope).
        assert_eq!(r.status, 431, "huge headers must be refused: {r}");
        assert!(r.text.is_empty(), "{r}");
    }
    assert_eq!(run_count(&app), before, "nothing stored");
    still_works(&app);
}

#[test]
fn slow_clients_are_cut_off_and_do_not_block_others() {
    let app = TestApp::start();
    let before = run_count(&app);
    // 50 slowloris connections: a request line and one header, then nothing.
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr(&app)).expect("connect");
            s.set_read_timeout(Some(SAFETY)).unwrap();
            s.write_all(b"POST /v1/workflow/invoke HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile normal invokes are served.
    for _ in 0..3 {
        still_works(&app);
    }
    // Each idle connection is closed by the daemon (client_request_timeout): the read ends
    // with EOF (possibly after a 408 answer) or an error such as a reset, never a timeout.
    for s in &mut idle {
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => {
                let text = String::from_utf8_lossy(&sink);
                assert!(
                    text.is_empty() || text.starts_with("HTTP/1.1 408"),
                    "unexpected answer to a stalled request: {text:?}"
                );
            }
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the daemon kept a stalled connection open for {SAFETY:?}: {e}"
            ),
        }
    }
    assert_eq!(
        run_count(&app),
        before + 3,
        "only the normal invokes stored runs"
    );
    still_works(&app);
}

/// The daemon's peak resident memory so far (`VmHWM`), in MiB.
fn peak_rss_mib(app: &TestApp) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.pid().unwrap())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// A template that doubles a 100 MB string a few times (gigabytes in half a dozen
/// instructions) fails its step with a clear error while the daemon's memory stays bounded.
#[test]
fn a_template_that_builds_a_huge_value_fails_with_bounded_memory() {
    let app = TestApp::start();
    app.deploy_ok(
        "balloon",
        r#"
key = "balloon"

[[steps]]
id = "balloon"
type = "template"
template = "{% set a = 'x' * 100000000 %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{{ a | length }}"
"#,
    );
    let r = app.invoke(&serde_json::json!({"deployment": "balloon"}));
    let err = r.expect_error(502, "step_failed", None);
    assert_eq!(err["step"], "balloon", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too large a value"),
        "{err}"
    );
    // Unbounded, the first step alone reaches 1.6 GB.
    let peak = peak_rss_mib(&app);
    assert!(peak < 400, "peak RSS {peak} MiB");
    still_works(&app);
}

/// A template that would loop for hours (found while writing the `template` fuzz target)
/// fails its run with a clear error within the fuel limit, and the daemon keeps serving.
#[test]
fn a_runaway_template_fails_its_run_and_the_daemon_keeps_serving() {
    let app = TestApp::start();
    app.deploy_ok(
        "spin",
        r#"
key = "spin"

[[steps]]
id = "spin"
type = "template"
template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
"#,
    );
    let r = app.invoke(&serde_json::json!({"deployment": "spin"}));
    let err = r.expect_error(502, "step_failed", None);
    assert_eq!(err["step"], "spin", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ran too long"),
        "{err}"
    );
    still_works(&app);
}
