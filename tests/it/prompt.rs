//! SPEC §10 prompt steps for real models, against a local OpenAI-compatible stand-in:
//! `messages` (a list, or a chat history passed in as an input), `response_format = "json"`,
//! `json_schema` (checked at deploy and on every reply, `invalid_model_output`), and provider
//! errors (`429` with `Retry-After` and `5xx` retried within `retries`, other statuses not).
//! The request bodies the stand-in receives are checked against what OpenAI, Ollama (`/v1`)
//! and llama.cpp's server all accept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn config(stub: &StubServer) -> String {
    format!(
        "[providers.stub]\nbase_url = \"{}/v1\"\napi_key_env = \"STUB_KEY\"\n",
        stub.url()
    )
}

fn detail(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get(&format!("/v1/runs/{id}"));
    r.expect_status(200);
    r.json()
}

fn traced<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("step {id} missing from the trace: {run:#}"))
}

/// The keys every one of OpenAI, Ollama and llama.cpp understands in a chat request.
fn assert_portable_body(body: &Value) {
    let allowed = [
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "response_format",
        "stream",
        "stream_options",
    ];
    for key in body.as_object().unwrap().keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "unexpected key {key}: {body}"
        );
    }
    assert!(body["model"].is_string(), "{body}");
    let messages = body["messages"].as_array().expect("messages array");
    assert!(!messages.is_empty(), "{body}");
    for m in messages {
        let obj = m.as_object().unwrap();
        assert_eq!(obj.len(), 2, "only role and content: {m}");
        assert!(
            ["system", "user", "assistant"].contains(&m["role"].as_str().unwrap_or("")),
            "{m}"
        );
        assert!(m["content"].is_string(), "{m}");
    }
    if body.get("stream") == Some(&json!(true)) {
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true}),
            "{body}"
        );
    } else {
        assert!(body.get("stream_options").is_none(), "{body}");
    }
    if let Some(rf) = body.get("response_format") {
        match rf["type"].as_str() {
            Some("json_object") => assert_eq!(rf.as_object().unwrap().len(), 1, "{rf}"),
            Some("json_schema") => {
                let js = &rf["json_schema"];
                let name = js["name"].as_str().unwrap_or("");
                assert!(
                    !name.is_empty()
                        && name.len() <= 64
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                    "OpenAI requires a name matching ^[a-zA-Z0-9_-]{{1,64}}$: {rf}"
                );
                assert!(js["schema"].is_object(), "{rf}");
                assert_eq!(js["strict"], true, "{rf}");
            }
            _ => panic!("unknown response_format: {rf}"),
        }
    }
}

const PERSON_SCHEMA: &str = r#"{ type = "object", properties = { name = { type = "string" }, age = { type = "integer" } }, required = ["name", "age"], additionalProperties = false }"#;

#[test]
fn messages_history_and_json_schema_give_a_checked_object() {
    let llm = StubServer::openai(r#"{"name": "Ada", "age": 36}"#);
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let toml = format!(
        r#"
key = "extract"

[[inputs]]
name = "history"
type = "array"
required = true

[[steps]]
id = "person"
type = "prompt"
provider = "stub"
model = "tiny-1"
system = "Extract the person."
messages = "{{{{ history | tojson }}}}"
json_schema = {PERSON_SCHEMA}

[[steps]]
id = "greet"
type = "prompt"
provider = "stub"
model = "tiny-1"
response_format = "json"
messages = [
  {{ role = "system", content = "Answer in JSON." }},
  {{ role = "user", content = "Greet {{{{ person.output.name }}}}, aged {{{{ person.output.age }}}}" }},
]

[output]
template = "{{{{ person.output.name }}}} is {{{{ person.output.age }}}}"
"#
    );
    app.deploy_ok("extract", &toml);
    let history = json!([
        {"role": "user", "content": "I met Ada.", "id": "m1"},
        {"role": "assistant", "content": "Who is she?"},
        {"role": "user", "content": "She is 36."}
    ]);
    let r = app.invoke(&json!({"deployment": "extract", "inputs": {"history": history}}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], "Ada is 36", "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    assert_eq!(
        traced(&run, "person")["output"],
        json!({"name": "Ada", "age": 36}),
        "the output is the parsed object: {run:#}"
    );
    assert_eq!(
        traced(&run, "greet")["output"],
        json!({"name": "Ada", "age": 36})
    );
    assert_eq!(
        traced(&run, "person")["usage"]["total_tokens"],
        18,
        "{run:#}"
    );

    let seen = llm.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = seen[0].json();
    assert_portable_body(&first);
    assert_eq!(
        first["messages"],
        json!([
            {"role": "system", "content": "Extract the person."},
            {"role": "user", "content": "I met Ada."},
            {"role": "assistant", "content": "Who is she?"},
            {"role": "user", "content": "She is 36."}
        ]),
        "the history is passed on, other keys left out: {first}"
    );
    assert_eq!(first["response_format"]["type"], "json_schema", "{first}");
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["required"],
        json!(["name", "age"]),
        "{first}"
    );
    let second = seen[1].json();
    assert_portable_body(&second);
    assert_eq!(
        second["response_format"],
        json!({"type": "json_object"}),
        "{second}"
    );
    assert_eq!(
        second["messages"],
        json!([
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "Greet Ada, aged 36"}
        ]),
        "{second}"
    );
}

fn one_step(key: &str, model: &str, retries: u32, extra: &str) -> String {
    format!(
        r#"
key = "{key}"

[[steps]]
id = "ask"
type = "prompt"
provider = "stub"
model = "{model}"
prompt = "Hello"
retries = {retries}
{extra}
"#
    )
}

/// Replies by model: each model plays one misbehaving provider; the count is per model.
/// Each request the stand-in got: its model and when.
type CallLog = Arc<Mutex<Vec<(String, Instant)>>>;

fn misbehaving_provider() -> (StubServer, CallLog) {
    let log: CallLog = Arc::default();
    let seen = log.clone();
    let stub = StubServer::threaded(move |req, _| {
        let model = req.json()["model"].as_str().unwrap_or_default().to_owned();
        let n = {
            let mut log = seen.lock().unwrap();
            log.push((model.clone(), Instant::now()));
            log.iter().filter(|(m, _)| *m == model).count()
        };
        let ok = |content: &str| StubReply::json(200, &chat_completion(content));
        match (model.as_str(), n) {
            // Not JSON, then JSON of the wrong shape, then right.
            ("shaky", 1) => ok("Sure! Here it is: {name: Ada}"),
            ("shaky", 2) => ok(r#"{"name": "Ada", "age": "thirty-six"}"#),
            ("shaky", _) => ok(r#"{"name": "Ada", "age": 36}"#),
            ("busy", 1) => {
                let mut r = StubReply::json(429, &json!({"error": {"message": "rate limited"}}));
                r.headers.push(("Retry-After".into(), "1".into()));
                r
            }
            ("flaky", 1) => StubReply::json(500, &json!({"error": {"message": "boom"}})),
            ("bad", _) => StubReply::json(
                400,
                &json!({"error": {"message": "unknown parameter; key sk-test-123 refused"}}),
            ),
            _ => ok("fine"),
        }
    });
    (stub, log)
}

#[test]
fn invalid_model_output_uses_the_retries_then_fails_the_run_with_its_code() {
    let (llm, _log) = misbehaving_provider();
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let schema = format!("json_schema = {PERSON_SCHEMA}");

    // Two attempts are not enough: the run fails with invalid_model_output.
    app.deploy_ok("strict", &one_step("strict", "shaky", 1, &schema));
    let r = app.invoke(&json!({"deployment": "strict"}));
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["error_code"], "invalid_model_output", "{body}");
    assert_eq!(body["step"], "ask", "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    assert_eq!(
        run["error"]["error_code"], "invalid_model_output",
        "{run:#}"
    );
    let step = traced(&run, "ask");
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["attempts"], 2, "both attempts were made: {step}");
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("provider \"stub\" model \"shaky\""),
        "names provider and model: {step}"
    );
    assert!(
        error.contains("does not match json_schema at /age"),
        "the last reply broke the schema at /age: {step}"
    );

    // The stand-in's third reply for this model is valid: the next run takes it at once.
    app.deploy_ok("patient", &one_step("patient", "shaky", 5, &schema));
    let r = app.invoke(&json!({"deployment": "patient"}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], json!({"name": "Ada", "age": 36}), "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    assert_eq!(traced(&run, "ask")["attempts"], 1, "{run:#}");
}

#[test]
fn provider_429_and_5xx_are_retried_other_errors_are_not() {
    let (llm, log) = misbehaving_provider();
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);

    // 429 with Retry-After: 1, then success.
    app.deploy_ok("busy", &one_step("busy", "busy", 2, ""));
    let r = app.invoke(&json!({"deployment": "busy"}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], "fine", "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    assert_eq!(traced(&run, "ask")["attempts"], 2, "{run:#}");
    let times: Vec<Instant> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == "busy")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "Retry-After: 1 is honoured before the next attempt: {:?}",
        times[1] - times[0]
    );

    // 500, then success.
    app.deploy_ok("flaky", &one_step("flaky", "flaky", 1, ""));
    let r = app.invoke(&json!({"deployment": "flaky"}));
    r.expect_status(200);
    let run = detail(&app, r.json()["request_id"].as_str().unwrap());
    assert_eq!(traced(&run, "ask")["attempts"], 2, "{run:#}");

    // 400: fails at once, retries unused; the error names provider, model and status.
    app.deploy_ok("bad", &one_step("bad", "bad", 3, ""));
    let r = app.invoke(&json!({"deployment": "bad"}));
    r.expect_status(502);
    let body = r.json();
    assert_eq!(body["error_code"], "step_failed", "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    let step = traced(&run, "ask");
    assert_eq!(step["attempts"], 1, "a 400 is not retried: {step}");
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("provider \"stub\" model \"bad\": HTTP 400 Bad Request"),
        "{step}"
    );
    assert!(
        !error.contains("sk-test-123"),
        "the API key never shows: {step}"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == "bad")
            .count(),
        1
    );
}

#[test]
fn invalid_prompt_definitions_are_refused_naming_the_field() {
    let llm = StubServer::openai("x");
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let cases = [
        (
            one_step("k", "m", 0, "json_schema = { type = \"integr\" }"),
            "json_schema",
        ),
        (
            one_step(
                "k",
                "m",
                0,
                "messages = [{ role = \"user\", content = \"hi\" }]",
            ),
            "not both",
        ),
        (
            one_step("k", "m", 0, "").replace("prompt = \"Hello\"\n", "messages = [{ role = \"user\", content = \"a\" }, { role = \"bot\", content = \"b\" }]\n"),
            "messages[1].role",
        ),
    ];
    for (toml, needle) in cases {
        let r = app.deploy_toml("k", &toml);
        let body = r.expect_error(422, "validation_error", None);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle}: {body}");
        assert!(message.contains("ask"), "names the step: {body}");
    }
    assert!(llm.requests().is_empty());
}

#[test]
fn prompt_steps_stream_by_default_and_assemble_text_and_usage() {
    let llm = StubServer::threaded(|req, _| {
        if req.json()["stream"] == json!(true) {
            sse_completion(&["{\"name\": ", "\"Ada\", \"age\"", ": 36}"])
        } else {
            StubReply::json(200, &chat_completion("one piece"))
        }
    });
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);
    let toml = format!(
        r#"
key = "streamed"

[[steps]]
id = "person"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Who?"
json_schema = {PERSON_SCHEMA}

[[steps]]
id = "whole"
type = "prompt"
provider = "stub"
model = "tiny-1"
prompt = "Once"
stream = false
"#
    );
    app.deploy_ok("streamed", &toml);
    let r = app.invoke(&json!({"deployment": "streamed"}));
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["output"], "one piece", "{body}");
    let run = detail(&app, body["request_id"].as_str().unwrap());
    let person = traced(&run, "person");
    assert_eq!(
        person["output"],
        json!({"name": "Ada", "age": 36}),
        "the streamed pieces are assembled, then checked: {person}"
    );
    assert_eq!(
        person["usage"]["total_tokens"], 13,
        "usage from the stream's last chunk: {person}"
    );
    assert_eq!(
        traced(&run, "whole")["usage"]["total_tokens"],
        18,
        "{run:#}"
    );

    let seen = llm.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let streamed = seen[0].json();
    assert_portable_body(&streamed);
    assert_eq!(streamed["stream"], true, "{streamed}");
    let whole = seen[1].json();
    assert_portable_body(&whole);
    assert!(whole.get("stream").is_none(), "stream = false: {whole}");
}

#[test]
fn a_garbage_stream_fails_the_step_and_a_hanging_provider_hits_the_workflow_timeout() {
    let llm = StubServer::threaded(|req, _| {
        match req.json()["model"].as_str().unwrap_or_default() {
            "garbage" => StubReply {
                status: 200,
                headers: vec![("Content-Type".into(), "text/event-stream".into())],
                body: "data: <html>502 Bad Gateway</html>\n\n".into(),
            },
            _ => {
                // Hangs far past the workflow's timeout_ms.
                std::thread::sleep(Duration::from_secs(20));
                sse_completion(&["late"])
            }
        }
    });
    let app = TestApp::start_with(&config(&llm), &[], &[("STUB_KEY", "sk-test-123")]);

    app.deploy_ok("garbage", &one_step("garbage", "garbage", 1, ""));
    let r = app.invoke(&json!({"deployment": "garbage"}));
    r.expect_status(502);
    let run = detail(&app, r.json()["request_id"].as_str().unwrap());
    let step = traced(&run, "ask");
    assert_eq!(
        step["attempts"], 2,
        "garbage from the provider is retried: {step}"
    );
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "provider \"stub\" model \"garbage\": the stream sent an event that is not JSON"
        ),
        "{step}"
    );

    let toml = format!("timeout_ms = 1500\n{}", one_step("hang", "hang", 0, ""));
    app.deploy_ok("hang", &toml);
    let r = app.invoke(&json!({"deployment": "hang"}));
    r.expect_status(502);
    assert_eq!(r.json()["error_code"], "timeout", "{r}");
    // The daemon keeps serving.
    app.get("/healthz", None).expect_status(200);
}
