//! `hivelet invoke NAME --stream`: a sync invoke with `"stream": true`, its deltas printed as
//! they come (SPEC §11).

use std::io::Write;

use anyhow::{anyhow, Context};
use serde_json::Value;

use super::client::Client;

/// Prints the run's text deltas to stdout as they come, then its output (when it is not
/// the text just streamed). With `--json`, every event as one JSON line instead. Exit
/// status 1 when the run does not complete.
pub fn invoke(client: &Client, body: &Value, json_out: bool) -> anyhow::Result<u8> {
    let url = format!("{}/v1/workflow/invoke", client.base_url);
    let key = client.api_key().map(str::to_string);
    let body = body.to_string();
    actix_rt::System::new().block_on(async move {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;

        // No overall timeout: a run streams for as long as it runs.
        let http = awc::Client::builder().disable_timeout().finish();
        let mut req = http
            .post(&url)
            .insert_header(("X-Hivelet-Source", "cli"))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Accept", "text/event-stream"));
        if let Some(key) = key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        let mut resp = req.send_body(body).await.map_err(|e| {
            anyhow!("cannot reach hivelet at {url}: {e} (is `hivelet serve` running?)")
        })?;
        if resp.status().as_u16() != 200 {
            let bytes = resp
                .body()
                .limit(1024 * 1024)
                .await
                .context("reading the response")?;
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            let reply = super::client::Reply {
                status: resp.status().as_u16(),
                body,
            };
            return super::commands::finish(reply, json_out, |_| {});
        }
        let mut events = resp.eventsource();
        let mut out = std::io::stdout();
        // The text streamed since the last step started, to tell whether the output repeats it.
        let mut streamed = String::new();
        let mut open_line = false;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| anyhow!("the stream broke off: {e}"))?;
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            if json_out {
                let line = serde_json::json!({"id": event.id, "event": event.event, "data": data});
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            match event.event.as_str() {
                "step.started" => streamed.clear(),
                "output.delta" if !json_out => {
                    let text = data["text"].as_str().unwrap_or_default();
                    write!(out, "{text}")?;
                    out.flush()?;
                    streamed.push_str(text);
                    open_line = !text.ends_with('\n');
                }
                "run.completed" => {
                    if !json_out {
                        if open_line {
                            writeln!(out)?;
                        }
                        match &data["output"] {
                            Value::String(text) if *text == streamed => {}
                            Value::String(text) => writeln!(out, "{text}")?,
                            other => writeln!(out, "{}", serde_json::to_string_pretty(other)?)?,
                        }
                    }
                    return Ok(0);
                }
                "run.failed" | "run.cancelled" => {
                    if open_line && !json_out {
                        writeln!(out)?;
                    }
                    let message = data["error"]["message"]
                        .as_str()
                        .unwrap_or("the run did not complete");
                    eprintln!(
                        "hivelet: {message} ({} {})",
                        data["request_id"].as_str().unwrap_or_default(),
                        data["run_status"].as_str().unwrap_or_default()
                    );
                    return Ok(1);
                }
                _ => {}
            }
        }
        Err(anyhow!("the stream ended before the run did"))
    })
}
