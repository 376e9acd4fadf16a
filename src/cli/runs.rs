//! `hivelet runs list|show|attempts|redeliver|cancel|rerun|purge`: readable tables, or `--json`.

use serde_json::{json, Value};

use super::commands::finish;
use super::{Client, RunsCommand, RunsListArgs};

pub fn run(client: &Client, cmd: RunsCommand, json_out: bool) -> anyhow::Result<u8> {
    match cmd {
        RunsCommand::List(args) => {
            let reply = client.get(&format!("/v1/runs?{}", list_query(&args)))?;
            finish(reply, json_out, print_list)
        }
        RunsCommand::Show { request_id } => {
            let reply = client.get(&format!("/v1/runs/{}", encode(&request_id)))?;
            finish(reply, json_out, print_run)
        }
        RunsCommand::Attempts { request_id } => {
            let reply = client.get(&format!("/v1/runs/{}/attempts", encode(&request_id)))?;
            finish(reply, json_out, |body| print_attempts(&body["attempts"]))
        }
        RunsCommand::Redeliver { request_id } => {
            let reply = client.request(
                "POST",
                &format!("/v1/runs/{}/redeliver", encode(&request_id)),
                None,
                None,
            )?;
            finish(reply, json_out, |body| {
                println!(
                    "redelivering {} (event {}, series {})",
                    text(&body["request_id"]),
                    text(&body["event_id"]),
                    body["series"]
                );
            })
        }
        RunsCommand::Purge { before } => {
            let before = purge_before(&before)?;
            let reply = client.post_json("/v1/runs/purge", &json!({ "before": before }))?;
            finish(reply, json_out, |body| {
                println!(
                    "purged {} runs that ended before {}",
                    body["purged"],
                    match &before {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                );
            })
        }
        RunsCommand::Rerun {
            request_id,
            from_step,
            wait,
        } => {
            let mut body = json!({ "wait": wait });
            if let Some(step) = from_step {
                body["from_step"] = json!(step);
            }
            let reply =
                client.post_json(&format!("/v1/runs/{}/rerun", encode(&request_id)), &body)?;
            finish(reply, json_out, |body| {
                println!("{}", text(&body["request_id"]));
                match body.get("output") {
                    Some(Value::String(output)) => println!("{output}"),
                    Some(output) => println!("{}", pretty(output)),
                    None => {}
                }
            })
        }
        RunsCommand::Cancel { request_id } => {
            let reply = client.request(
                "POST",
                &format!("/v1/runs/{}/cancel", encode(&request_id)),
                None,
                None,
            )?;
            finish(reply, json_out, |body| {
                println!("{} cancelled", text(&body["request_id"]));
            })
        }
    }
}

/// `--before`: an age (`30d`: that long ago), Unix milliseconds, or an RFC 3339 time, as the
/// API's `before`.
fn purge_before(text: &str) -> anyhow::Result<Value> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(json!(ms));
    }
    if let Ok(age) = humantime::parse_duration(text) {
        let at = std::time::SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| anyhow::anyhow!("--before {text}: too far in the past"))?;
        return Ok(json!(humantime::format_rfc3339_millis(at).to_string()));
    }
    if humantime::parse_rfc3339_weak(text).is_ok() {
        return Ok(json!(text));
    }
    anyhow::bail!(
        "--before must be an RFC 3339 time (2026-01-31T00:00:00Z), Unix milliseconds or an age like 30d, got `{text}`"
    )
}

fn encode(part: &str) -> String {
    url::form_urlencoded::byte_serialize(part.as_bytes()).collect()
}

fn list_query(args: &RunsListArgs) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let pairs = [
        ("deployment", &args.deployment),
        ("variant", &args.variant),
        ("status", &args.status),
        ("delivery", &args.delivery),
        ("source", &args.source),
        ("since", &args.since),
        ("until", &args.until),
        ("cursor", &args.cursor),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    for meta in &args.meta {
        match meta.split_once('=') {
            Some((key, value)) => query.append_pair(&format!("meta.{key}"), value),
            None => query.append_pair(&format!("meta.{meta}"), ""),
        };
    }
    query.append_pair("limit", &args.limit.to_string());
    query.finish()
}

/// Numbers as text, so column widths apply.
fn num(value: &Value) -> String {
    value
        .as_i64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn print_list(body: &Value) {
    println!(
        "{:<36} {:<24} {:<16} {:<10} {:>8} {:<8} {:<10}",
        "REQUEST ID", "CREATED", "DEPLOYMENT/VARIANT", "STATUS", "MS", "SOURCE", "DELIVERY"
    );
    for run in body["runs"].as_array().into_iter().flatten() {
        let delivery = if run["async"] == true {
            format!("async:{}", text(&run["delivery_state"]))
        } else {
            "direct".into()
        };
        println!(
            "{:<36} {:<24} {:<16} {:<10} {:>8} {:<8} {:<10}",
            text(&run["request_id"]),
            text(&run["created_at"]),
            format!("{}/{}", text(&run["deployment"]), text(&run["variant"])),
            text(&run["run_status"]),
            run["duration_ms"]
                .as_i64()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            text(&run["source"]),
            delivery,
        );
    }
    if let Some(cursor) = body["next_cursor"].as_str() {
        println!("more: --cursor {cursor}");
    }
}

fn pretty(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn print_run(run: &Value) {
    println!("request   {}", text(&run["request_id"]));
    println!("status    {}", text(&run["run_status"]));
    println!(
        "workflow  {}/{} v{}",
        text(&run["deployment"]),
        text(&run["variant"]),
        run["version"]
    );
    println!("source    {}", text(&run["source"]));
    if !run["rerun_of"].is_null() {
        println!("rerun of  {}", text(&run["rerun_of"]));
    }
    if !run["usage"].is_null() {
        println!("usage     {}", run["usage"]);
    }
    println!(
        "timing    created {} · started {} · ended {} · {} ms",
        text(&run["created_at"]),
        text(&run["started_at"]),
        text(&run["ended_at"]),
        run["duration_ms"]
    );
    println!("inputs    {}", run["inputs"]);
    println!("metadata  {}", run["metadata"]);
    if !run["user"].is_null() {
        println!("user      {}", text(&run["user"]));
    }
    // Only when it says something: a key, or a priority other than the default.
    if !run["concurrency_key"].is_null()
        || run["priority"]
            .as_u64()
            .is_some_and(|p| p != u64::from(crate::flow::DEFAULT_PRIORITY))
    {
        println!(
            "flow      priority {} · concurrency key {}",
            run["priority"],
            text(&run["concurrency_key"])
        );
    }
    if !run["error"].is_null() {
        println!("error     {}", pretty(&run["error"]));
    } else {
        println!("output\n{}", pretty(&run["output"]));
    }
    println!("\nsteps");
    for step in run["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<9} {:<10} {:>6} ms  attempts {}{}",
            text(&step["id"]),
            text(&step["type"]),
            text(&step["status"]),
            num(&step["duration_ms"]),
            num(&step["attempts"]),
            step["error"]
                .as_str()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default()
        );
    }
    let delivery = &run["async"];
    if delivery.is_object() {
        println!("\nasync     callback {}", text(&delivery["callback_url"]));
        println!(
            "          event {} · delivery {} · next attempt {}{}",
            text(&delivery["event_id"]),
            text(&delivery["delivery_state"]),
            text(&delivery["next_attempt_at"]),
            delivery["failure_reason"]
                .as_str()
                .map(|r| format!(" · reason {r}"))
                .unwrap_or_default()
        );
        print_attempts(&delivery["attempts"]);
    }
}

fn print_attempts(attempts: &Value) {
    println!(
        "  {:>3} {:>3} {:<24} {:<12} {:>7} {:<10} {:<24} ERROR",
        "#", "SER", "TIME", "RESULT", "MS", "OUTCOME", "NEXT ATTEMPT"
    );
    for a in attempts.as_array().into_iter().flatten() {
        let result = match (a["status_code"].as_i64(), a["error_kind"].as_str()) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(kind)) => kind.to_string(),
            (None, None) => "-".into(),
        };
        println!(
            "  {:>3} {:>3} {:<24} {:<12} {:>7} {:<10} {:<24} {}",
            num(&a["attempt"]),
            num(&a["series"]),
            text(&a["started_at"]),
            result,
            num(&a["duration_ms"]),
            text(&a["outcome"]),
            text(&a["next_attempt_at"]),
            a["error"].as_str().unwrap_or("")
        );
    }
}
