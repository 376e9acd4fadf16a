//! SPEC §11 live runs: `GET /v1/runs/{id}/stream` (SSE) with a stand-in model that streams
//! only when the test lets it, so each event can be awaited in turn: the order of events,
//! late joiners, `Last-Event-ID`, finished runs, several subscribers, a subscriber that
//! never reads (dropped, the daemon's memory flat), sync invokes with `"stream": true`,
//! `hivelet invoke --stream`, and the errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::*;

// ------------------------------------------------------------------------------------------
// A stand-in model that streams what the test sends it
// ------------------------------------------------------------------------------------------

/// What the model sends next on its open stream.
enum Piece {
    Text(String),
    /// Many small pieces in one write.
    Burst(usize, String),
    /// Usage and `[DONE]`, then the connection closes.
    Done,
}

/// An OpenAI-compatible `/v1/chat/completions` answering an SSE stream piece by piece, as
/// the test pushes pieces; one request at a time.
struct SlowModel {
    port: u16,
    pieces: mpsc::Sender<Piece>,
    requests: Arc<Mutex<usize>>,
}

impl SlowModel {
    fn start() -> SlowModel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel::<Piece>();
        let requests = Arc::new(Mutex::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(socket) = socket else { return };
                *seen.lock().unwrap() += 1;
                // A connection that breaks off just ends; the next one is served.
                let _ = serve_stream(socket, &rx);
            }
        });
        SlowModel {
            port,
            pieces: tx,
            requests,
        }
    }

    fn config(&self) -> String {
        format!(
            "[providers.slow]\nbase_url = \"http://127.0.0.1:{}/v1\"\n",
            self.port
        )
    }

    fn send(&self, text: &str) {
        self.pieces.send(Piece::Text(text.to_owned())).unwrap();
    }

    fn burst(&self, n: usize, text: &str) {
        self.pieces.send(Piece::Burst(n, text.to_owned())).unwrap();
    }

    fn finish(&self) {
        self.pieces.send(Piece::Done).unwrap();
    }

    fn wait_for_request(&self, n: usize) {
        wait_for(&format!("{n} request(s) at the model"), || {
            (*self.requests.lock().unwrap() >= n).then_some(())
        });
    }
}

/// As short as a chunk gets, so many fit under the daemon's 16 MiB cap on one reply.
fn chunk(text: &str) -> String {
    let event = json!({"choices": [{"delta": {"content": text}}]});
    format!("data: {event}\n\n")
}

fn serve_stream(socket: TcpStream, pieces: &mpsc::Receiver<Piece>) -> std::io::Result<()> {
    let mut writer = socket.try_clone()?;
    let mut reader = BufReader::new(socket);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    writer.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    let mut write_chunk = |text: &str| -> std::io::Result<()> {
        write!(writer, "{:x}\r\n{text}\r\n", text.len())?;
        writer.flush()
    };
    loop {
        match pieces.recv_timeout(REQUEST_TIMEOUT) {
            Ok(Piece::Text(t)) => write_chunk(&chunk(&t))?,
            Ok(Piece::Burst(n, t)) => write_chunk(&chunk(&t).repeat(n))?,
            Ok(Piece::Done) | Err(_) => break,
        }
    }
    let usage = json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}});
    write_chunk(&format!("data: {usage}\n\ndata: [DONE]\n\n"))?;
    write_chunk("")?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// An SSE client on a plain socket
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Event {
    id: Option<u64>,
    name: String,
    data: Value,
}

/// One HTTP request whose answer is read as SSE, event by event.
struct Sse {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Decoded body not yet parsed into events.
    text: String,
    ended: bool,
    keep_alives: usize,
}

impl Sse {
    fn get(app: &TestApp, path: &str, key: &str, last_event_id: Option<u64>) -> Sse {
        let mut extra = String::new();
        if let Some(id) = last_event_id {
            extra = format!("Last-Event-ID: {id}\r\n");
        }
        Sse::request(app, "GET", path, key, &extra, b"")
    }

    fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> Sse {
        let body = body.to_string();
        let extra = format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        Sse::request(app, "POST", path, key, &extra, body.as_bytes())
    }

    fn request(
        app: &TestApp,
        method: &str,
        path: &str,
        key: &str,
        extra: &str,
        body: &[u8],
    ) -> Sse {
        let socket = connect(app);
        let mut w = socket.try_clone().unwrap();
        write!(
            w,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        .unwrap();
        w.write_all(body).unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let mut sse = Sse {
            status,
            headers,
            reader,
            chunked,
            text: String::new(),
            ended: false,
            keep_alives: 0,
        };
        if !chunked {
            let length: usize = sse
                .header("content-length")
                .map_or(0, |l| l.parse().unwrap());
            let mut body = vec![0; length];
            sse.reader.read_exact(&mut body).unwrap();
            sse.text = String::from_utf8(body).unwrap();
            sse.ended = true;
        }
        sse
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads one more chunk of the body; false at its end.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
            self.ended = true;
            return false;
        }
        let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
        if size == 0 {
            self.ended = true;
            return false;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        self.text
            .push_str(std::str::from_utf8(&data[..size]).unwrap());
        true
    }

    /// The next event; `None` once the stream ended.
    fn next(&mut self) -> Option<Event> {
        assert!(self.chunked, "not a stream: {} {}", self.status, self.text);
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    name: "message".into(),
                    data: Value::Null,
                };
                let mut comment = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        comment = true;
                    } else if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.parse().unwrap());
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.name = name.to_string();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(data).unwrap();
                    }
                }
                if comment {
                    self.keep_alives += 1;
                    continue;
                }
                return Some(event);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn expect(&mut self, name: &str) -> Event {
        let e = self
            .next()
            .unwrap_or_else(|| panic!("the stream ended before {name}"));
        assert_eq!(e.name, name, "{e:?}");
        e
    }

    /// Every event up to the end of the stream.
    fn rest(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

fn connect(app: &TestApp) -> TcpStream {
    let addr = app.url("").trim_start_matches("http://").to_string();
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    socket
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn assert_increasing(events: &[Event]) {
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A template step, a streamed prompt step, a template step.
const CHAT: &str = r#"
key = "chat"

[[steps]]
id = "intro"
type = "template"
template = "hi"

[[steps]]
id = "ask"
type = "prompt"
provider = "slow"
model = "m"
prompt = "Say hello"

[[steps]]
id = "outro"
type = "template"
template = "{{ ask.output }}!"
"#;

/// Starts a sync run of `chat` in the background; returns its id once the model has its
/// request (the run is inside `ask`) and the thread's handle.
fn start_chat(
    app: &TestApp,
    model: &SlowModel,
    n: usize,
) -> (String, std::thread::JoinHandle<Resp>) {
    let url = app.url("/v1/workflow/invoke");
    let key = app.admin_key.clone();
    let call = std::thread::spawn(move || {
        send(
            "POST",
            &url,
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
            ],
            Some(br#"{"deployment": "chat"}"#),
        )
    });
    model.wait_for_request(n);
    let runs = app
        .admin_get("/v1/runs?deployment=chat&status=running")
        .json();
    let id = runs["runs"][0]["request_id"].as_str().unwrap().to_string();
    (id, call)
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

#[test]
fn a_run_streams_live_late_joiners_replay_and_resume() {
    let model = SlowModel::start();
    let app = TestApp::start_with(&model.config(), &[], &[]);
    app.deploy_ok("chat", CHAT);
    let (id, call) = start_chat(&app, &model, 1);
    let path = format!("/v1/runs/{id}/stream");

    let mut a = Sse::get(&app, &path, &app.admin_key, None);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    assert_eq!(a.header("cache-control"), Some("no-cache"));
    assert_eq!(a.header("x-accel-buffering"), Some("no"));
    let status = a.expect("run.status");
    assert_eq!(
        status.data,
        json!({"request_id": id, "run_status": "running"})
    );
    let intro = a.expect("step.completed");
    assert_eq!(intro.data["step"], "intro");
    assert_eq!(intro.data["output"], "hi");
    assert_eq!(intro.data["status"], "completed");
    let started = a.expect("step.started");
    assert_eq!(
        (&started.data["step"], &started.data["type"]),
        (&json!("ask"), &json!("prompt"))
    );
    assert!(started.data["started_at"].is_string(), "{started:?}");

    model.send("Hel");
    assert_eq!(
        a.expect("output.delta").data,
        json!({"step": "ask", "text": "Hel"})
    );

    // A late joiner: the finished step and the running one, not the old delta.
    let mut b = Sse::get(&app, &path, &app.admin_key, None);
    let mut b_events = vec![
        b.expect("run.status"),
        b.expect("step.completed"),
        b.expect("step.started"),
    ];
    assert_eq!(b_events[1].id, intro.id, "replayed with the id sent live");
    model.send("lo");
    let lo = a.expect("output.delta");
    assert_eq!(lo.data["text"], "lo");
    let b_lo = b.expect("output.delta");
    assert_eq!((b_lo.id, &b_lo.data), (lo.id, &lo.data));
    b_events.push(b_lo);

    // `a` goes away and comes back with Last-Event-ID: nothing it saw is sent again.
    drop(a);
    model.send(" world");
    b_events.push(b.expect("output.delta"));
    let mut a = Sse::get(&app, &path, &app.admin_key, lo.id);
    model.send("!");
    let bang = a.expect("output.delta");
    assert_eq!(bang.data["text"], "!", "resumed after the last id it saw");
    b_events.push(b.expect("output.delta"));

    model.finish();
    let a_rest = a.rest();
    assert_eq!(
        names(&a_rest),
        [
            "step.completed",
            "step.started",
            "step.completed",
            "run.completed"
        ]
    );
    b_events.extend(b.rest());
    assert_eq!(
        names(&b_events),
        [
            "run.status",
            "step.completed",
            "step.started",
            "output.delta",
            "output.delta",
            "output.delta",
            "step.completed",
            "step.started",
            "step.completed",
            "run.completed"
        ]
    );
    assert_increasing(&b_events);
    let ask = &b_events[6];
    assert_eq!(ask.data["step"], "ask");
    assert_eq!(ask.data["output"], "Hello world!");
    assert_eq!(ask.data["type"], "prompt");
    assert!(ask.data["duration_ms"].is_i64(), "{ask:?}");
    let done = b_events.last().unwrap();
    assert_eq!(done.data["request_id"], id.as_str());
    assert_eq!(done.data["run_status"], "completed");
    assert_eq!(done.data["output"], "Hello world!!");
    assert!(done.data.get("usage").is_some(), "{done:?}");
    call.join().unwrap().expect_status(200);

    // The finished run replays its steps (same ids as live) and its end, then ends.
    let mut c = Sse::get(&app, &path, &app.admin_key, None);
    let replay = c.rest();
    assert_eq!(
        names(&replay),
        [
            "run.status",
            "step.completed",
            "step.completed",
            "step.completed",
            "run.completed"
        ]
    );
    assert_eq!(replay[0].data["run_status"], "completed");
    let live_completed: Vec<_> = b_events
        .iter()
        .filter(|e| e.name == "step.completed")
        .map(|e| (e.id, e.data.clone()))
        .collect();
    let replayed: Vec<_> = replay[1..4]
        .iter()
        .map(|e| (e.id, e.data.clone()))
        .collect();
    assert_eq!(replayed, live_completed);
    assert_eq!(replay[4].id, done.id);
    assert_eq!(replay[4].data, done.data);

    // Resuming a finished run after its second step: the rest only.
    let mut d = Sse::get(&app, &path, &app.admin_key, ask.id);
    let rest = d.rest();
    assert_eq!(names(&rest), ["step.completed", "run.completed"]);
    assert_eq!(rest[0].data["step"], "outro");
}

#[test]
fn a_reader_that_stops_reading_is_dropped_and_memory_stays_flat() {
    let model = SlowModel::start();
    let app = TestApp::start_with(&model.config(), &[], &[]);
    app.deploy_ok("chat", CHAT);
    app.deploy_ok(
        "quick",
        "key = \"quick\"\n[[steps]]\nid = \"t\"\ntype = \"template\"\ntemplate = \"ok\"\n",
    );
    let (id, call) = start_chat(&app, &model, 1);
    let path = format!("/v1/runs/{id}/stream");

    // A client that asks and then never reads.
    let mut stuck = connect(&app);
    write!(
        stuck,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        app.admin_key
    )
    .unwrap();
    let mut reader = Sse::get(&app, &path, &app.admin_key, None);
    for name in ["run.status", "step.completed", "step.started"] {
        reader.expect(name);
    }
    let pid = app.pid().expect("the daemon runs");
    // Warm up (buffers, allocator), then measure.
    model.burst(500, "x");
    for _ in 0..500 {
        reader.expect("output.delta");
    }
    let before = rss_kib(pid);
    // Many small deltas: each is a ~70-byte event, far more than the kernel's socket buffers
    // hold for the stuck client. Sent in bursts the reading client keeps up with.
    let bursts = 300;
    for _ in 0..bursts {
        model.burst(1000, "x");
        for _ in 0..1000 {
            reader.expect("output.delta");
        }
    }
    let after = rss_kib(pid);
    // Other work goes on meanwhile.
    let r = app.invoke(&json!({"deployment": "quick"}));
    r.expect_status(200);
    model.finish();
    let rest = reader.rest();
    assert_eq!(
        names(&rest).last(),
        Some(&"run.completed"),
        "the reader got everything"
    );
    call.join().unwrap().expect_status(200);
    assert!(
        after < before + 12 * 1024,
        "RSS grew from {before} KiB to {after} KiB while a client did not read"
    );

    // The stuck client's connection was cut before the run ended.
    let mut got = Vec::new();
    stuck.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let _ = stuck.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("event: output.delta"), "it got the start");
    assert!(
        !got.contains("run.completed"),
        "a client that did not read was not dropped"
    );
}

#[test]
fn sync_invoke_with_stream_answers_the_runs_events() {
    let model = SlowModel::start();
    let app = TestApp::start_with(&model.config(), &[], &[]);
    app.deploy_ok("chat", CHAT);
    let mut s = Sse::post(
        &app,
        "/v1/workflow/invoke",
        &app.admin_key,
        &json!({"deployment": "chat", "stream": true}),
    );
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let first = s.expect("run.status");
    let id = first.data["request_id"].as_str().unwrap().to_string();
    assert!(is_request_id(&id), "{first:?}");
    assert_eq!(first.data["run_status"], "running");
    assert_eq!(s.expect("step.started").data["step"], "intro");
    assert_eq!(s.expect("step.completed").data["step"], "intro");
    assert_eq!(s.expect("step.started").data["step"], "ask");
    model.wait_for_request(1);
    model.send("a");
    model.send("b");
    assert_eq!(s.expect("output.delta").data["text"], "a");
    assert_eq!(s.expect("output.delta").data["text"], "b");
    model.finish();
    let rest = s.rest();
    assert_eq!(
        names(&rest),
        [
            "step.completed",
            "step.started",
            "step.completed",
            "run.completed"
        ]
    );
    assert_eq!(rest[3].data["output"], "ab!");
    assert_eq!(
        app.admin_get(&format!("/v1/runs/{id}")).json()["run_status"],
        "completed"
    );

    // A failing run ends with run.failed and its error.
    let api = StubServer::start(|_, _| StubReply::json(404, &json!({"error": "gone"})));
    app.deploy_ok(
        "broken",
        &format!(
            "key = \"broken\"\n[[steps]]\nid = \"t\"\ntype = \"http\"\nmethod = \"GET\"\nurl = \"{}/x\"\nretries = 0\n",
            api.url()
        ),
    );
    let mut s = Sse::post(
        &app,
        "/v1/workflow/invoke",
        &app.admin_key,
        &json!({"deployment": "broken", "stream": true}),
    );
    let events = s.rest();
    let last = events.last().unwrap();
    assert_eq!(last.name, "run.failed", "{events:?}");
    assert_eq!(last.data["run_status"], "failed");
    assert_eq!(last.data["error"]["step"], "t");
    assert!(last.data["error"]["message"].is_string(), "{last:?}");

    // Bad combinations are refused and start nothing.
    let before = app.admin_get("/v1/runs").json()["runs"]
        .as_array()
        .unwrap()
        .len();
    let r = app.invoke(&json!({
        "deployment": "chat", "stream": true,
        "async": {"enabled": true, "callback_url": "http://127.0.0.1:9/hook"},
    }));
    let e = r.expect_error(422, "validation_error", None);
    assert_eq!(e["field"], "stream");
    let r = app.invoke(&json!({"deployment": "chat", "stream": "yes"}));
    assert_eq!(
        r.expect_error(422, "validation_error", None)["field"],
        "stream"
    );
    let after = app.admin_get("/v1/runs").json()["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

#[test]
fn approvals_keep_alives_errors_and_keys() {
    let hook = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let app = TestApp::builder()
        .env("HIVELET_STREAM_KEEPALIVE_MS", "200")
        .start();
    app.deploy_ok(
        "ask",
        r#"
key = "ask"

[[steps]]
id = "draft"
type = "template"
template = "Pay 5 EUR"

[[steps]]
id = "approve"
type = "approval"
question = "{{ draft.output }}?"
choices = ["yes", "no"]
"#,
    );
    let r = app.invoke(&json!({
        "deployment": "ask",
        "async": {"enabled": true, "callback_url": format!("{}/hook", hook.url())},
    }));
    r.expect_status(202);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let path = format!("/v1/runs/{id}/stream");
    wait_for("the approval to wait", || {
        let run = app.admin_get(&format!("/v1/runs/{id}")).json();
        run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["status"] == "waiting"))
            .cloned()
    });

    let invoke_key = app.create_key("caller", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut s = Sse::get(&app, &path, &app.admin_key, None);
    s.expect("run.status");
    s.expect("step.completed");
    let asked = s.expect("approval.requested");
    assert_eq!(asked.data["step"], "approve");
    assert_eq!(asked.data["question"], "Pay 5 EUR?");
    assert_eq!(asked.data["choices"].as_array().unwrap().len(), 2);
    // Nothing happens while it waits: keep-alive comments keep the connection open.
    while s.keep_alives < 2 {
        assert!(s.fill(), "the stream of a waiting run stays open");
        while let Some(end) = s.text.find("\n\n") {
            let block: String = s.text.drain(..end + 2).collect();
            assert!(block.starts_with(": keep-alive"), "{block}");
            s.keep_alives += 1;
        }
    }
    let r = app.post_json(
        &format!("/v1/runs/{id}/steps/approve/respond"),
        Some(&app.admin_key),
        &json!({"choice": "yes"}),
    );
    assert!(r.is_success(), "{r}");
    let rest = s.rest();
    let rest_names = names(&rest);
    assert_eq!(rest_names.first(), Some(&"step.completed"), "{rest:?}");
    assert_eq!(rest[0].data["step"], "approve");
    assert_eq!(rest_names.last(), Some(&"run.completed"));

    // Another invoke key does not see the run; a bad key is refused.
    let r = app.get(&path, Some(&invoke_key));
    r.expect_error(404, "not_found", Some("Run not found."));
    let r = app.get(&path, Some("hvk_nope"));
    r.expect_error(401, "unauthorized", Some("Invalid access."));
    let r = app.get(&path, None);
    r.expect_error(401, "unauthorized", Some("Invalid access."));
    let r = app.get(
        "/v1/runs/req_00000000000000000000000000000000/stream",
        Some(&app.admin_key),
    );
    r.expect_error(404, "not_found", Some("Run not found."));
    let r = app.get("/v1/runs/nonsense/stream", Some(&app.admin_key));
    r.expect_error(404, "not_found", Some("Run not found."));

    // The invoke key that started a run watches it.
    let r = app.invoke_with_key(
        &invoke_key,
        &json!({"deployment": "ask", "async": {"enabled": true, "callback_url": format!("{}/hook", hook.url())}}),
    );
    let own = r.json()["request_id"].as_str().unwrap().to_string();
    let mut s = Sse::get(&app, &format!("/v1/runs/{own}/stream"), &invoke_key, None);
    assert_eq!(s.status, 200);
    assert_eq!(s.expect("run.status").data["request_id"], own.as_str());
    // Live or replayed, depending on how far the run got: the draft, then the question.
    let mut seen = Vec::new();
    while let Some(e) = s.next() {
        seen.push(e.name.clone());
        if e.name == "approval.requested" {
            break;
        }
    }
    assert!(seen.contains(&"step.completed".to_string()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("approval.requested"));

    // Stopping the daemon ends the stream of a run that goes on waiting, instead of waiting
    // for it until the grace period runs out.
    let mut app = app;
    let status = app.stop().expect("the daemon ran");
    assert!(status.success(), "the daemon stopped cleanly: {status}");
    let rest = s.rest();
    assert!(
        rest.iter().all(|e| !e.name.starts_with("run.")),
        "the run did not end: {rest:?}"
    );
}

#[test]
fn cli_invoke_stream_prints_deltas_as_they_come() {
    let model = SlowModel::start();
    let app = TestApp::start_with(&model.config(), &[], &[]);
    app.deploy_ok("chat", CHAT);
    let mut cli = app.cli_background(&["invoke", "chat", "--stream"]);
    model.wait_for_request(1);
    model.send("Hel");
    cli.wait_for_stdout("Hel");
    model.send("lo");
    cli.wait_for_stdout("Hello");
    model.finish();
    let status = cli.wait();
    assert!(status.success(), "{}", cli.stderr());
    let out = cli.stdout();
    assert!(out.starts_with("Hello"), "{out}");
    assert!(
        out.contains("Hello!"),
        "the output follows the deltas: {out}"
    );
}

#[test]
fn the_run_page_follows_a_live_run_over_its_stream() {
    let model = SlowModel::start();
    let app = TestApp::start_with(&model.config(), &[], &[]);
    app.deploy_ok("chat", CHAT);
    let (id, call) = start_chat(&app, &model, 1);
    let ready = app.dir.join("ui-ready");
    let done = app.dir.join("ui-done");
    let pieces = model.pieces.clone();
    let (ready_at, done_at) = (ready.clone(), done.clone());
    // Streams only once the page shows the run, and finishes once the page shows the text.
    let feeder = std::thread::spawn(move || {
        let wait_file = |path: &std::path::Path| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
            while !path.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        wait_file(&ready_at);
        let _ = pieces.send(Piece::Text("Hello".into()));
        let _ = pieces.send(Piece::Text(" browser".into()));
        wait_file(&done_at);
        let _ = pieces.send(Piece::Done);
    });
    crate::ui::run_browser(
        &app,
        "ui_stream.py",
        &[
            ("RUN_ID", &id),
            ("READY_FILE", ready.to_str().unwrap()),
            ("DONE_FILE", done.to_str().unwrap()),
        ],
    );
    feeder.join().unwrap();
    call.join().unwrap().expect_status(200);
    let run = app.admin_get(&format!("/v1/runs/{id}")).json();
    assert_eq!(run["output"], "Hello browser!", "{run}");
}

#[test]
fn a_queued_run_streams_its_status_changes_and_a_cancel_ends_the_stream() {
    let model = SlowModel::start();
    let hook = StubServer::start(|_, _| StubReply::text(200, "ok"));
    let config = format!("{}[runs]\nmax_concurrent = 1\n", model.config());
    let app = TestApp::start_with(&config, &[], &[]);
    app.deploy_ok("chat", CHAT);
    // `chat` holds the only run slot while its model waits.
    let (_, call) = start_chat(&app, &model, 1);
    let queue = |name: &str| {
        let r = app.invoke(&json!({
            "deployment": "hello", "inputs": {"name": name},
            "async": {"enabled": true, "callback_url": format!("{}/hook", hook.url())},
        }));
        r.expect_status(202);
        assert_eq!(r.json()["run_status"], "queued", "{r}");
        r.json()["request_id"].as_str().unwrap().to_string()
    };
    let waits = queue("Ada");
    let dropped = queue("Bob");

    let mut s = Sse::get(
        &app,
        &format!("/v1/runs/{waits}/stream"),
        &app.admin_key,
        None,
    );
    let queued = s.expect("run.status");
    assert_eq!(queued.data["run_status"], "queued");
    let mut c = Sse::get(
        &app,
        &format!("/v1/runs/{dropped}/stream"),
        &app.admin_key,
        None,
    );
    assert_eq!(c.expect("run.status").data["run_status"], "queued");
    let r = app.post_json(
        &format!("/v1/runs/{dropped}/cancel"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(202);
    let cancelled = c.rest();
    assert_eq!(names(&cancelled), ["run.cancelled"], "{cancelled:?}");
    assert_eq!(cancelled[0].data["run_status"], "cancelled");
    assert_eq!(cancelled[0].data["error"]["error_code"], "cancelled");

    model.finish();
    call.join().unwrap().expect_status(200);
    let rest = s.rest();
    assert_eq!(rest[0].name, "run.status", "{rest:?}");
    assert_eq!(rest[0].data["run_status"], "running");
    assert!(rest[0].id > queued.id);
    assert_eq!(rest.last().unwrap().name, "run.completed", "{rest:?}");
    assert_increasing(&rest);
}

#[test]
fn a_long_step_output_is_cut_to_64_kib_in_step_completed() {
    let app = TestApp::start();
    app.deploy_ok(
        "echo",
        "key = \"echo\"\n[[inputs]]\nname = \"text\"\ntype = \"text\"\n[[steps]]\nid = \"say\"\ntype = \"template\"\ntemplate = \"{{ text }}\"\n",
    );
    let long = "é".repeat(40_000); // 80 000 bytes
    let mut s = Sse::post(
        &app,
        "/v1/workflow/invoke",
        &app.admin_key,
        &json!({"deployment": "echo", "inputs": {"text": long}, "stream": true}),
    );
    let events = s.rest();
    let done = events.iter().find(|e| e.name == "step.completed").unwrap();
    let cut = done.data["output"].as_str().unwrap();
    assert_eq!(done.data["truncated"], true, "{}", cut.len());
    assert!(
        cut.len() <= 64 * 1024 && cut.len() > 64 * 1024 - 4,
        "{}",
        cut.len()
    );
    assert!(long.starts_with(cut));
    let last = events.last().unwrap();
    assert_eq!(last.name, "run.completed");
    assert_eq!(
        last.data["output"].as_str().unwrap().len(),
        long.len(),
        "the run's output is whole"
    );

    // The same cut when the finished run is replayed from the store.
    let id = events[0].data["request_id"].as_str().unwrap();
    let mut r = Sse::get(&app, &format!("/v1/runs/{id}/stream"), &app.admin_key, None);
    let replayed = r.rest();
    let again = replayed
        .iter()
        .find(|e| e.name == "step.completed")
        .unwrap();
    assert_eq!((again.id, &again.data), (done.id, &done.data));
}
