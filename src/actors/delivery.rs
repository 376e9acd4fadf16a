//! A DeliveryActor signs and sends events. It owns one `awc::Client` (built once, redirects
//! off, the attempt timeout from config, connecting only to addresses the callback policy
//! allows), keeps many attempts in flight, records every attempt, and reports the outcome to
//! the RetrySupervisor.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::delivery::destination::{CallbackPolicy, DestinationError, PolicyResolver};
use crate::delivery::policy::{self, Verdict, RESPONSE_BODY_MAX_BYTES};
use crate::ids;
use crate::signing;
use crate::store::{AttemptRow, DueEvent, EventUpdate, Store, Write};

/// `User-Agent` of every attempt.
pub const USER_AGENT: &str = concat!("hivelet/", env!("CARGO_PKG_VERSION"));

#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub event: DueEvent,
    /// Current secret first, then a rotated-out one still valid; an error if none exists.
    pub secrets: Result<Vec<String>, String>,
    pub reply_to: Recipient<AttemptFinished>,
}

/// The result of one attempt, after it is recorded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptFinished {
    pub event: DueEvent,
    /// When to try again; `None` when the event is delivered or finally failed.
    pub retry_at: Option<i64>,
    /// Whether the store recorded the attempt (and so knows `retry_at`).
    pub recorded: bool,
    /// Success or failure of the destination itself (None when the destination was never
    /// tried, e.g. no secret), for the circuit breaker.
    pub counts_for_breaker: Option<bool>,
}

pub struct DeliveryActor {
    store: Store,
    config: Arc<Config>,
    client: Option<awc::Client>,
    /// Also checked before each attempt: the connector skips the resolver (and so the
    /// policy in it) when the URL's host is an IP address.
    policy: CallbackPolicy,
}

impl DeliveryActor {
    pub fn new(store: Store, config: Arc<Config>) -> Self {
        DeliveryActor {
            store,
            config,
            client: None,
            policy: CallbackPolicy::default(),
        }
    }
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let security = &self.config.file.security;
        self.policy = CallbackPolicy::new(&security.callback_allow, &security.callback_deny);
        let resolver = actix_tls::connect::Resolver::custom(PolicyResolver {
            policy: self.policy.clone(),
        });
        let timeout = self.config.file.delivery.attempt_timeout.0;
        let connector = awc::Connector::new()
            .connector(actix_tls::connect::Connector::new(resolver).service())
            .timeout(timeout)
            .limit(0);
        self.client = Some(
            awc::Client::builder()
                .connector(connector)
                .disable_redirects()
                .timeout(timeout)
                .add_default_header(("User-Agent", USER_AGENT))
                .finish(),
        );
    }
}

/// What the HTTP exchange produced.
struct Exchange {
    status: Option<u16>,
    error_kind: Option<&'static str>,
    error_message: Option<String>,
    response_headers: Option<Map<String, Value>>,
    response_body: Option<String>,
    retry_after: Option<Duration>,
}

impl Exchange {
    fn failed(kind: &'static str, message: String) -> Exchange {
        Exchange {
            status: None,
            error_kind: Some(kind),
            error_message: Some(message),
            response_headers: None,
            response_body: None,
            retry_after: None,
        }
    }
}

/// Maps a client error to the attempt record's error kind.
fn classify(err: &awc::error::SendRequestError) -> (&'static str, String) {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Timeout => ("timeout", "no response within the attempt timeout".into()),
        SendRequestError::Connect(ConnectError::Timeout) => {
            ("timeout", "connecting timed out".into())
        }
        SendRequestError::Connect(ConnectError::Resolver(inner)) => {
            match inner.downcast_ref::<DestinationError>() {
                Some(DestinationError::Denied(msg)) => ("denied", msg.clone()),
                Some(DestinationError::Dns(msg)) => ("dns", msg.clone()),
                None => ("dns", inner.to_string()),
            }
        }
        SendRequestError::Connect(ConnectError::Unresolved)
        | SendRequestError::Connect(ConnectError::NoRecords) => ("dns", err.to_string()),
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => (
            "tls",
            "this URL scheme needs TLS, which is not available".into(),
        ),
        SendRequestError::Connect(ConnectError::Io(io)) if is_tls_error(io) => {
            ("tls", format!("TLS handshake failed: {io}"))
        }
        SendRequestError::Connect(ConnectError::Disconnected) => (
            "connect",
            "the receiver closed the connection without answering".into(),
        ),
        SendRequestError::Connect(other) => ("connect", other.to_string()),
        other => ("connect", other.to_string()),
    }
}

/// rustls reports handshake failures (bad certificate, wrong name) as I/O errors.
fn is_tls_error(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
        || err.to_string().to_ascii_lowercase().contains("certificate")
}

async fn post(
    client: &awc::Client,
    url: &str,
    headers: &[(String, String)],
    body: bytes::Bytes,
    timeout: Duration,
) -> Exchange {
    let started = std::time::Instant::now();
    let mut req = client.post(url);
    for (name, value) in headers {
        req = req.insert_header((name.as_str(), value.as_str()));
    }
    let mut resp = match req.send_body(body).await {
        Ok(resp) => resp,
        Err(err) => {
            let (kind, message) = classify(&err);
            return Exchange::failed(kind, message);
        }
    };
    let status = resp.status().as_u16();
    let response_headers: Map<String, Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| policy::parse_retry_after(v, (ids::now_ms() / 1000) as u64));
    // Keep the first 4 KiB of the body; stop reading there, within what is left of the timeout.
    let mut captured = Vec::new();
    let mut body_error = None;
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let read = actix_rt::time::timeout(remaining, async {
        while let Some(chunk) = resp.next().await {
            match chunk {
                Ok(chunk) => {
                    let room = RESPONSE_BODY_MAX_BYTES - captured.len();
                    captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if captured.len() >= RESPONSE_BODY_MAX_BYTES {
                        break;
                    }
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
    })
    .await;
    let verdict = policy::verdict_for_status(status);
    let (error_kind, error_message) = match (verdict, read, body_error) {
        (Verdict::Delivered, _, _) => (None, None),
        (_, Err(_), _) => (
            Some("timeout"),
            Some(format!(
                "HTTP {status}, then the body did not finish in time"
            )),
        ),
        (_, _, Some(e)) => (
            Some("connect"),
            Some(format!("HTTP {status}, then the connection failed: {e}")),
        ),
        _ if (300..400).contains(&status) => (
            Some("redirect"),
            Some(format!(
                "HTTP {status} redirect to {} (redirects are not followed)",
                response_headers
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )),
        ),
        _ if status == 413 => (
            Some("too_large"),
            Some("HTTP 413: the receiver refused the body size".into()),
        ),
        _ => (Some("http_status"), Some(format!("HTTP {status}"))),
    };
    Exchange {
        status: Some(status),
        error_kind,
        error_message,
        response_headers: Some(response_headers),
        response_body: Some(String::from_utf8_lossy(&captured).into_owned()),
        retry_after,
    }
}

/// The headers of one attempt (SPEC §3). None of them is a secret.
fn attempt_headers(
    event: &DueEvent,
    secrets: &[String],
    timestamp: i64,
) -> Result<Vec<(String, String)>, String> {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let standard =
        signing::standard_signature_header(&refs, &event.event_id, timestamp, &event.body)
            .map_err(|e| format!("cannot sign: {e}"))?;
    Ok(vec![
        ("Content-Type".into(), "application/json".into()),
        ("User-Agent".into(), USER_AGENT.into()),
        (
            "X-Fetch-Hive-Signature".into(),
            signing::fetch_hive_signature(&secrets[0], &event.body),
        ),
        ("X-Fetch-Hive-Request-Id".into(), event.request_id.clone()),
        ("webhook-id".into(), event.event_id.clone()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), standard),
    ])
}

impl Handler<Deliver> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let client = self.client.clone().expect("client built in started()");
        let policy = self.policy.clone();
        let store = self.store.clone();
        let delivery = self.config.file.delivery.clone();
        let Deliver {
            mut event,
            secrets,
            reply_to,
        } = msg;
        let span = tracing::info_span!(
            "deliver",
            request_id = %event.request_id,
            event_id = %event.event_id,
            attempt = event.total_attempts + 1
        );
        let work = async move {
            let started_at = ids::now_ms();
            let clock = std::time::Instant::now();
            let timestamp = started_at / 1000;
            let prepared = secrets.and_then(|s| attempt_headers(&event, &s, timestamp));
            let prepared = prepared.and_then(|headers| {
                policy
                    .check_ip_literal(&event.callback_url)
                    .map(|()| headers)
                    .map_err(|e| e.to_string())
            });
            let (headers, exchange) = match prepared {
                Ok(headers) => {
                    let exchange = post(
                        &client,
                        &event.callback_url,
                        &headers,
                        event.body.clone(),
                        delivery.attempt_timeout.0,
                    )
                    .await;
                    (headers, exchange)
                }
                Err(message) => (Vec::new(), Exchange::failed("denied", message)),
            };
            let duration_ms = clock.elapsed().as_millis() as i64;
            event.attempts += 1;
            event.total_attempts += 1;
            let delivered = exchange
                .status
                .is_some_and(|s| policy::verdict_for_status(s) == Verdict::Delivered);
            let gone = exchange.status == Some(410);
            let final_kind = matches!(exchange.error_kind, Some("denied"));
            let now = ids::now_ms();
            let retry_delay = if delivered || gone || final_kind {
                None
            } else {
                let schedule: Vec<Duration> = delivery.retry_schedule.iter().map(|d| d.0).collect();
                let unit: f64 = rand::random::<f64>() * 2.0 - 1.0;
                policy::next_delay(
                    &schedule,
                    event.attempts as u32,
                    delivery.jitter,
                    unit,
                    exchange.status,
                    exchange.retry_after,
                )
            };
            let retry_at = retry_delay.map(|d| now + d.as_millis() as i64);
            let (state, outcome, failure_reason) = match (delivered, retry_at) {
                (true, _) => ("delivered", "delivered", None),
                (false, Some(_)) => ("retrying", "retrying", None),
                (false, None) if gone => ("failed", "failed", Some("gone".to_string())),
                (false, None) if final_kind => ("failed", "failed", Some("denied".to_string())),
                (false, None) => ("failed", "failed", Some("exhausted".to_string())),
            };
            let headers_json: Map<String, Value> =
                headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let attempt = AttemptRow {
                attempt_id: ids::attempt_id(),
                event_id: event.event_id.clone(),
                request_id: event.request_id.clone(),
                attempt_number: event.total_attempts,
                series: event.series,
                url: event.callback_url.clone(),
                request_headers_json: Value::Object(headers_json).to_string(),
                status_code: exchange.status.map(i64::from),
                error_kind: exchange.error_kind.map(str::to_string),
                error_message: exchange.error_message.clone(),
                response_headers_json: exchange
                    .response_headers
                    .map(|h| Value::Object(h).to_string()),
                response_body: exchange.response_body,
                started_at,
                duration_ms,
                outcome: outcome.to_string(),
                next_attempt_at: retry_at,
            };
            crate::metrics::get().attempt(outcome, clock.elapsed());
            match outcome {
                "delivered" => {
                    tracing::info!(status = ?exchange.status, duration_ms, "webhook delivered")
                }
                _ => tracing::warn!(
                    status = ?exchange.status,
                    error_kind = ?exchange.error_kind,
                    error = exchange.error_message.as_deref().unwrap_or(""),
                    outcome,
                    next_attempt_at = ?retry_at.map(ids::rfc3339),
                    "webhook attempt failed"
                ),
            }
            let update = EventUpdate {
                state,
                attempts: event.attempts,
                total_attempts: event.total_attempts,
                next_attempt_at: retry_at,
                failure_reason,
            };
            let recorded = store
                .write(Write::RecordAttempt(Box::new(attempt), update))
                .await;
            let (retry_at, recorded) = match recorded {
                Ok(_) => (retry_at, true),
                Err(err) => {
                    // The store still says the event is due: try again soon rather than lose it.
                    tracing::error!(%err, "could not record the attempt; will retry");
                    (Some(ids::now_ms() + 1000), false)
                }
            };
            let counts = if matches!(exchange.error_kind, Some("denied")) {
                None
            } else {
                Some(delivered)
            };
            reply_to.do_send(AttemptFinished {
                event,
                retry_at,
                recorded,
                counts_for_breaker: counts,
            });
        };
        ctx.spawn(tracing::Instrument::instrument(work, span).into_actor(self));
    }
}
