//! SPEC §10 token usage and cost: each prompt step's `usage` from the provider (a whole JSON
//! reply and a streamed one), its sum on the run in `GET /v1/runs/{id}`, in the run list rows
//! and in the webhook's `data.usage` (null when no prompt step ran), `cost_usd` from
//! `[providers.NAME.prices."MODEL"]`, and `hivelet_tokens_total` in `/metrics`.

use serde_json::{json, Value};

use crate::support::webhooks::{invoke_async, run_detail, wait_delivery};
use crate::support::*;

/// Every reply uses 11 prompt and 7 completion tokens (see [`chat_completion`]); a streamed
/// one 9 and 4.
fn provider() -> StubServer {
    StubServer::threaded(|req, _| {
        if req.json()["stream"] == json!(true) {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": "streamed"}}]});
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
            StubReply {
                status: 200,
                headers: vec![("Content-Type".into(), "text/event-stream".into())],
                body: format!("data: {chunk}\n\ndata: {usage}\n\ndata: [DONE]\n\n"),
            }
        } else {
            StubReply::json(200, &chat_completion("whole"))
        }
    })
}

fn config(llm: &StubServer, prices: &str) -> String {
    format!(
        "[providers.stub]\nbase_url = \"{}/v1\"\n{prices}",
        llm.url()
    )
}

/// Prices that make the arithmetic plain: 11 × 1000 + 7 × 2000 per million = 0.025 a call.
const ROUND_PRICES: &str = r#"
[providers.stub.prices."priced-1"]
input_per_million = 1000
output_per_million = 2000
"#;

/// Three prompt steps: a priced model, an unpriced one, and the priced one streamed.
const THREE_PROMPTS: &str = r#"
key = "tokens"

[[steps]]
id = "a"
type = "prompt"
provider = "stub"
model = "priced-1"
prompt = "one"
stream = false

[[steps]]
id = "b"
type = "prompt"
provider = "stub"
model = "free-1"
prompt = "two"
stream = false

[[steps]]
id = "c"
type = "prompt"
provider = "stub"
model = "priced-1"
prompt = "three"
"#;

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("step {id}: {run:#}"))
}

fn list_row(app: &TestApp, id: &str) -> Value {
    let r = app.admin_get("/v1/runs?limit=50");
    r.expect_status(200);
    r.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["request_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in the list: {r}"))
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn usage_is_summed_on_the_run_priced_and_counted() {
    let llm = provider();
    let hook = StubServer::json(json!({"ok": true}));
    let app = TestApp::start_with(&config(&llm, ROUND_PRICES), &[], &[]);
    app.deploy_ok("tokens", THREE_PROMPTS);
    let id = invoke_async(
        &app,
        json!({"deployment": "tokens"}),
        &format!("{}/hook", hook.url()),
    );
    wait_delivery(&app, &id, "delivered");
    let run = run_detail(&app, &id);
    assert_eq!(run["run_status"], "completed", "{run:#}");

    assert_eq!(
        step(&run, "a")["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "cost_usd": 0.025}),
        "{run:#}"
    );
    assert_eq!(
        step(&run, "b")["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}),
        "an unpriced model has no cost: {run:#}"
    );
    // 9 × 1000 + 4 × 2000 per million.
    assert_eq!(
        step(&run, "c")["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13, "cost_usd": 0.017}),
        "usage of the streamed reply's last chunk: {run:#}"
    );
    assert_eq!(step(&run, "c")["output"], "streamed", "{run:#}");

    let total = json!({"prompt_tokens": 31, "completion_tokens": 18, "total_tokens": 49, "cost_usd": 0.042});
    assert_eq!(run["usage"], total, "{run:#}");
    assert_eq!(list_row(&app, &id)["usage"], total);
    let delivered = hook.requests();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].json()["data"]["usage"], total);

    let r = app.get("/metrics", None);
    r.expect_status(200);
    let text = r.text.clone();
    let tokens = |model: &str, kind: &str| {
        metric(
            &text,
            &format!("hivelet_tokens_total{{provider=\"stub\",model=\"{model}\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(tokens("priced-1", "prompt"), Some(20.0), "{text}");
    assert_eq!(tokens("priced-1", "completion"), Some(11.0), "{text}");
    assert_eq!(tokens("free-1", "prompt"), Some(11.0), "{text}");
    assert_eq!(tokens("free-1", "completion"), Some(7.0), "{text}");
}

#[test]
fn cost_is_rounded_to_micro_dollars_and_absent_without_prices() {
    let llm = provider();
    // 11 × 0.15 + 7 × 0.6 = 5.85 micro-dollars a call, 0.000006 once rounded.
    let prices = "[providers.stub.prices.\"priced-1\"]\ninput_per_million = 0.15\noutput_per_million = 0.6\n";
    let app = TestApp::start_with(&config(&llm, prices), &[], &[]);
    app.deploy_ok("tokens", THREE_PROMPTS);
    let r = app.invoke(&json!({"deployment": "tokens"}));
    r.expect_status(200);
    let run = run_detail(&app, r.json()["request_id"].as_str().unwrap());
    assert_eq!(step(&run, "a")["usage"]["cost_usd"], json!(0.000006));
    // 9 × 0.15 + 4 × 0.6 = 3.75 for the streamed step: 0.000006 + 0.000004.
    assert_eq!(run["usage"]["cost_usd"], json!(0.00001), "{run:#}");
    drop(app);

    let app = TestApp::start_with(&config(&llm, ""), &[], &[]);
    app.deploy_ok("tokens", THREE_PROMPTS);
    let r = app.invoke(&json!({"deployment": "tokens"}));
    r.expect_status(200);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let run = run_detail(&app, &id);
    let total = json!({"prompt_tokens": 31, "completion_tokens": 18, "total_tokens": 49});
    assert_eq!(run["usage"], total, "no price, no cost_usd: {run:#}");
    assert_eq!(list_row(&app, &id)["usage"], total);
}

#[test]
fn usage_is_null_when_no_prompt_step_ran() {
    let hook = StubServer::json(json!({"ok": true}));
    let app = TestApp::start();
    let id = invoke_async(&app, hello("Ada"), &format!("{}/hook", hook.url()));
    wait_delivery(&app, &id, "delivered");
    let run = run_detail(&app, &id);
    assert_eq!(run["run_status"], "completed", "{run:#}");
    assert!(
        run.as_object().unwrap().contains_key("usage") && run["usage"].is_null(),
        "{run:#}"
    );
    let row = list_row(&app, &id);
    assert!(
        row.as_object().unwrap().contains_key("usage") && row["usage"].is_null(),
        "{row}"
    );
    let body = hook.requests()[0].json();
    assert!(
        body["data"].as_object().unwrap().contains_key("usage") && body["data"]["usage"].is_null(),
        "{body}"
    );
}

#[test]
fn bad_prices_are_refused_at_start_naming_the_key() {
    for (price, key) in [
        (
            "input_per_million = -0.15\noutput_per_million = 0.6",
            "providers.stub.prices.\"m-1\".input_per_million",
        ),
        (
            "input_per_million = 0.15\noutput_per_million = \"cheap\"",
            "output_per_million",
        ),
    ] {
        let config = format!(
            "[providers.stub]\nbase_url = \"http://127.0.0.1:9/v1\"\n[providers.stub.prices.\"m-1\"]\n{price}\n"
        );
        let mut app = TestApp::builder().config(&config).prepare();
        let out = app.serve_expecting_exit();
        let context = format!("config {config:?}: {}", describe(&out));
        assert!(!out.status.success(), "{context}");
        let (_, stderr) = out_text(&out);
        assert!(stderr.contains(key), "stderr should name {key}: {context}");
        assert!(stderr.contains("m-1"), "{context}");
    }
}

#[test]
fn a_refused_reply_counts_in_the_metric_but_not_in_the_usage() {
    // The first reply is not the JSON the step asks for; the retry's is.
    let llm = StubServer::threaded(|_, n| {
        let content = if n == 0 { "not json" } else { "{\"ok\": true}" };
        StubReply::json(200, &chat_completion(content))
    });
    let app = TestApp::start_with(&config(&llm, ""), &[], &[]);
    app.deploy_ok(
        "strict",
        "key = \"strict\"\n[[steps]]\nid = \"ask\"\ntype = \"prompt\"\nprovider = \"stub\"\nmodel = \"retry-1\"\nprompt = \"JSON please\"\nresponse_format = \"json\"\nstream = false\nretries = 1\n",
    );
    let r = app.invoke(&json!({"deployment": "strict"}));
    r.expect_status(200);
    let run = run_detail(&app, r.json()["request_id"].as_str().unwrap());
    assert_eq!(step(&run, "ask")["attempts"], 2, "{run:#}");
    let one_call = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
    assert_eq!(step(&run, "ask")["usage"], one_call, "{run:#}");
    assert_eq!(run["usage"], one_call, "{run:#}");
    let text = app.get("/metrics", None).text;
    let line = "hivelet_tokens_total{provider=\"stub\",model=\"retry-1\",kind=\"prompt\"}";
    assert_eq!(
        metric(&text, line),
        Some(22.0),
        "both replies were paid for: {text}"
    );
}
