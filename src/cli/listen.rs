//! `hivelet listen`: a local webhook receiver for development. Accepts POST on any path,
//! verifies each delivery like `hivelet verify` does ([`signing::verify`], default
//! tolerance), prints one block per event on stdout and
//! answers `--status` for a verified delivery, 400 (with the reason) for an invalid one.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use serde_json::Value;

use crate::signing;

use super::verify::{check, SavedHeaders};
use super::ListenArgs;

/// The largest body accepted (hivelet's own events are far smaller).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

struct Listener {
    secret: String,
    status: StatusCode,
    /// webhook-ids already received, to point out redeliveries and retries.
    seen: Mutex<HashSet<String>>,
}

pub fn run(args: &ListenArgs) -> anyhow::Result<u8> {
    let secret = match args.secret.resolve() {
        Ok(secret) => secret,
        Err(err) => {
            eprintln!("hivelet: {err:#}");
            return Ok(2);
        }
    };
    if let Err(err) = signing::standard_signature(&secret, "", 0, b"") {
        eprintln!("hivelet: the signing secret is malformed: {err}");
        return Ok(2);
    }
    let status = StatusCode::from_u16(args.status)
        .with_context(|| format!("--status {} is not an HTTP status", args.status))?;
    let state = web::Data::new(Listener {
        secret,
        status,
        seen: Mutex::new(HashSet::new()),
    });
    let bind = args.bind.clone();
    let port = args.port;
    actix_rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .default_service(web::to(receive))
        })
        .workers(1)
        .shutdown_timeout(1)
        .bind((bind.as_str(), port))
        .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .context("the server has no address")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{addr}")?;
            out.flush()?;
        }
        eprintln!("verifying deliveries with the given signing secret; Ctrl-C stops");
        server.run().await.context("the receiver failed")?;
        Ok(0)
    })
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Listener>) -> HttpResponse {
    if req.method() != Method::POST {
        eprintln!(
            "ignored {} {} (webhooks are POSTed)",
            req.method(),
            req.uri()
        );
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .body("hivelet listen accepts POST only\n");
    }
    let mut headers = SavedHeaders::default();
    for (name, value) in req.headers() {
        headers.insert(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
    }
    let now_ms = crate::ids::now_ms();
    // The same check as `hivelet verify` (signing::verify with the default tolerance), with
    // its precise reasons.
    let verdict = check(
        &state.secret,
        &headers,
        &body,
        now_ms / 1000,
        signing::TIMESTAMP_TOLERANCE_SECS,
    );
    let webhook_id = headers.get("webhook-id").map(str::to_string);

    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |pointer: &str| {
        json.as_ref()
            .and_then(|j| j.pointer(pointer))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let request_id =
        field("/request_id").or_else(|| headers.get("x-fetch-hive-request-id").map(str::to_string));
    let repeated = match (&verdict, &webhook_id) {
        (Ok(_), Some(id)) => !state
            .seen
            .lock()
            .map(|mut seen| seen.insert(id.clone()))
            .unwrap_or(true),
        _ => false,
    };
    let status = match verdict {
        Ok(_) => state.status,
        Err(_) => StatusCode::BAD_REQUEST,
    };

    let mut block = String::new();
    let dash = || "-".to_string();
    block.push_str(&format!(
        "=== {} POST {}\n",
        crate::ids::rfc3339(now_ms),
        req.uri()
    ));
    let mut line = |label: &str, value: &str| block.push_str(&format!("{label:<12} {value}\n"));
    line("webhook-id", &webhook_id.clone().unwrap_or_else(dash));
    line("event_type", &field("/event_type").unwrap_or_else(dash));
    line("request_id", &request_id.unwrap_or_else(dash));
    line(
        "run_status",
        &field("/data/run_status").unwrap_or_else(dash),
    );
    match &verdict {
        Ok(_) => line("signature", "verified"),
        Err(err) => line("signature", &format!("INVALID: {err}")),
    }
    if repeated {
        line(
            "note",
            "this webhook-id was received before (a retry or redelivery; dedupe on it)",
        );
    }
    line("answered", &status.as_u16().to_string());
    match &json {
        Some(value) => block.push_str(&serde_json::to_string_pretty(value).unwrap_or_default()),
        None => {
            block.push_str("(body is not JSON)\n");
            block.push_str(&String::from_utf8_lossy(&body));
        }
    }
    block.push_str("\n\n");
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(block.as_bytes());
        let _ = out.flush();
    }

    match verdict {
        Ok(_) => HttpResponse::build(status)
            .content_type("text/plain")
            .body("ok\n"),
        Err(err) => HttpResponse::BadRequest()
            .content_type("text/plain")
            .body(format!("invalid: {err}\n")),
    }
}
