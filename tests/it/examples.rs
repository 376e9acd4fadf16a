//! The example deployments shipped in `packaging/workflows/` (`summarize`, `triage`), deployed
//! with `hivelet deploy FILE` as the README says, run against a local OpenAI-compatible
//! stand-in that streams its answers the way Ollama and llama.cpp do.

use serde_json::{json, Value};

use crate::support::*;

/// `[providers.local]` pointing at the stand-in, as a user would point it at Ollama.
fn local_provider(llm: &StubServer) -> String {
    format!("[providers.local]\nbase_url = \"{}/v1\"\n", llm.url())
}

fn deploy_example(app: &TestApp, name: &str) {
    let path = repo_path(&format!("packaging/workflows/{name}.toml"));
    let out = app.cli(&["deploy", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// The text of the last `user` message of a chat request.
fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn summarize_returns_the_schema_checked_object() {
    let llm = StubServer::threaded(|req, _| {
        let body = req.json();
        assert_eq!(body["stream"], true, "examples stream by default: {body}");
        let text = last_user_message(&body);
        assert!(text.contains("The river rose"), "{text}");
        // The answer arrives in pieces, split inside a JSON string.
        sse_completion(&[
            "{\"title\": \"Flood\", \"summary\": \"The ri",
            "ver flooded the town.\", \"key_points\": [\"river\", \"town\"]}",
        ])
    });
    let app = TestApp::start_with(&local_provider(&llm), &[], &[]);
    deploy_example(&app, "summarize");

    let r = app.invoke(&json!({
        "deployment": "summarize",
        "inputs": {"text": "The river rose overnight and the town flooded."}
    }));
    r.expect_status(200);
    assert_eq!(
        r.json()["output"],
        json!({"title": "Flood", "summary": "The river flooded the town.", "key_points": ["river", "town"]}),
        "{}",
        r.json()
    );
    let sent = llm.requests();
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["response_format"]["type"], "json_schema", "{body}");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["title", "summary", "key_points"])
    );
}

#[test]
fn summarize_retries_a_reply_that_breaks_the_schema() {
    // First reply misses `key_points`; the step's `retries = 2` asks again.
    let llm = StubServer::threaded(|_, n| {
        if n == 0 {
            sse_completion(&["{\"title\": \"T\", \"summary\": \"S\"}"])
        } else {
            sse_completion(&["{\"title\": \"T\", \"summary\": \"S\", \"key_points\": []}"])
        }
    });
    let app = TestApp::start_with(&local_provider(&llm), &[], &[]);
    deploy_example(&app, "summarize");
    let r = app.invoke(&json!({"deployment": "summarize", "inputs": {"text": "x"}}));
    r.expect_status(200);
    assert_eq!(r.json()["output"]["key_points"], json!([]));
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn triage_classifies_each_ticket_and_routes_the_urgent_ones() {
    // The stand-in "model": a ticket mentioning "down" is an urgent bug, "invoice" is billing.
    let llm = StubServer::threaded(|req, _| {
        let text = last_user_message(&req.json());
        let answer = if text.contains("down") {
            json!({"category": "bug", "urgent": true})
        } else if text.contains("invoice") {
            json!({"category": "billing", "urgent": false})
        } else {
            json!({"category": "question", "urgent": false})
        };
        sse_completion(&[&answer.to_string()])
    });
    let app = TestApp::start_with(&local_provider(&llm), &[], &[]);
    deploy_example(&app, "triage");

    let tickets = json!([
        {"id": "T-1", "text": "The site is down for everyone"},
        {"id": "T-2", "text": "Please resend my invoice"},
        {"id": "T-3", "text": "How do I export my data?"},
        {"id": "T-4", "text": "Login page down again"},
    ]);
    let r = app.invoke(&json!({"deployment": "triage", "inputs": {"tickets": tickets}}));
    r.expect_status(200);
    assert_eq!(
        r.json()["output"],
        json!([
            {"ticket": "T-1", "category": "bug", "action": "escalate"},
            {"ticket": "T-2", "category": "billing", "action": "queue"},
            {"ticket": "T-3", "category": "question", "action": "queue"},
            {"ticket": "T-4", "category": "bug", "action": "escalate"},
        ]),
        "{}",
        r.json()
    );
    assert_eq!(llm.requests().len(), 4, "one model call per ticket");

    // The trace shows each pass: classify, then the branch with the case it took.
    let id = r.json()["request_id"].as_str().unwrap().to_owned();
    let run = app.admin_get(&format!("/v1/runs/{id}")).json();
    let steps = run["steps"].as_array().unwrap();
    let escalations: Vec<_> = steps
        .iter()
        .filter(|s| s["id"] == "escalate" && s["status"] == "completed")
        .map(|s| s["pass"].clone())
        .collect();
    assert_eq!(escalations, [json!(0), json!(3)], "{run:#}");
    let classified = steps
        .iter()
        .filter(|s| s["id"] == "classify" && s["parent"] == "each_ticket")
        .count();
    assert_eq!(classified, 4, "{run:#}");
}
