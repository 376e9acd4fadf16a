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
use crate::store::{AttemptRow, DueEvent, ErrorKind, EventUpdate, RecordAttempt, Store};

/// `User-Agent` of every attempt.
pub const USER_AGENT: &str = concat!("hivelet/", env!("CARGO_PKG_VERSION"));

/// An event whose deployment is gone has no secret to be signed with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("deployment {deployment_key} was deleted, so there is no secret to sign with")]
pub struct NoSecret {
    pub deployment_key: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub event: DueEvent,
    /// Current secret first, then a rotated-out one still valid; an error if none exists.
    pub secrets: Result<Vec<String>, NoSecret>,
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
    /// The run's next event, made due by this attempt settling the event for good (it was
    /// `held` behind it: SPEC §11 delivery order).
    pub promoted: Option<DueEvent>,
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
    error_kind: Option<ErrorKind>,
    error_message: Option<String>,
    response_headers: Option<Map<String, Value>>,
    response_body: Option<String>,
    retry_after: Option<Duration>,
}

impl Exchange {
    /// What the exchange means for settling the event.
    fn reply(&self) -> policy::Reply {
        match (self.status, self.error_kind) {
            (Some(code), _) => policy::Reply::Status {
                code,
                retry_after: self.retry_after,
            },
            (None, Some(ErrorKind::Denied)) => policy::Reply::Refused,
            (None, _) => policy::Reply::NoAnswer,
        }
    }

    fn failed(kind: ErrorKind, message: String) -> Exchange {
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
fn classify(err: &awc::error::SendRequestError) -> (ErrorKind, String) {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Timeout => (
            ErrorKind::Timeout,
            "no response within the attempt timeout".into(),
        ),
        SendRequestError::Connect(ConnectError::Timeout) => {
            (ErrorKind::Timeout, "connecting timed out".into())
        }
        SendRequestError::Connect(ConnectError::Resolver(inner)) => {
            match inner.downcast_ref::<DestinationError>() {
                Some(DestinationError::Denied(msg)) => (ErrorKind::Denied, msg.clone()),
                Some(DestinationError::Dns(msg)) => (ErrorKind::Dns, msg.clone()),
                None => (ErrorKind::Dns, inner.to_string()),
            }
        }
        SendRequestError::Connect(ConnectError::Unresolved | ConnectError::NoRecords) => {
            (ErrorKind::Dns, err.to_string())
        }
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => (
            ErrorKind::Tls,
            "this URL scheme needs TLS, which is not available".into(),
        ),
        SendRequestError::Connect(ConnectError::Io(io)) if is_tls_error(io) => {
            (ErrorKind::Tls, format!("TLS handshake failed: {io}"))
        }
        SendRequestError::Connect(ConnectError::Disconnected) => (
            ErrorKind::Connect,
            "the receiver closed the connection without answering".into(),
        ),
        SendRequestError::Connect(other) => (ErrorKind::Connect, other.to_string()),
        other => (ErrorKind::Connect, other.to_string()),
    }
}

/// rustls reports handshake failures (bad certificate, wrong name) as I/O errors.
fn is_tls_error(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync + 'static>::is::<rustls::Error>)
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
            Some(ErrorKind::Timeout),
            Some(format!(
                "HTTP {status}, then the body did not finish in time"
            )),
        ),
        (_, _, Some(e)) => (
            Some(ErrorKind::Connect),
            Some(format!("HTTP {status}, then the connection failed: {e}")),
        ),
        _ if (300..400).contains(&status) => (
            Some(ErrorKind::Redirect),
            Some(format!(
                "HTTP {status} redirect to {} (redirects are not followed)",
                response_headers
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )),
        ),
        _ if status == 413 => (
            Some(ErrorKind::TooLarge),
            Some("HTTP 413: the receiver refused the body size".into()),
        ),
        _ => (Some(ErrorKind::HttpStatus), Some(format!("HTTP {status}"))),
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

/// Why an attempt was not sent. It is recorded as a `denied` attempt with this message, and
/// not retried.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// No secret to sign with (the deployment is gone).
    #[error(transparent)]
    NoSecret(#[from] NoSecret),
    #[error("cannot sign: {0}")]
    Sign(#[from] signing::VerifyError),
    /// The callback URL names an address the callback policy does not allow.
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// Prepare: the signed headers of an attempt, or why it cannot be sent.
fn prepare(
    event: &DueEvent,
    secrets: Result<Vec<String>, NoSecret>,
    policy: &CallbackPolicy,
    timestamp: i64,
) -> Result<Vec<(String, String)>, Refusal> {
    let secrets = secrets?;
    let headers = attempt_headers(event, &secrets, timestamp)?;
    policy.check_ip_literal(&event.callback_url)?;
    Ok(headers)
}

/// The headers of one attempt (SPEC §3). None of them is a secret.
fn attempt_headers(
    event: &DueEvent,
    secrets: &[String],
    timestamp: i64,
) -> Result<Vec<(String, String)>, signing::VerifyError> {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let standard =
        signing::standard_signature_header(&refs, &event.event_id, timestamp, &event.body)?;
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
            let (headers, exchange) = match prepare(&event, secrets, &policy, timestamp) {
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
                Err(refusal) => (
                    Vec::new(),
                    Exchange::failed(ErrorKind::Denied, refusal.to_string()),
                ),
            };
            let duration_ms = clock.elapsed().as_millis() as i64;
            event.attempts += 1;
            event.total_attempts += 1;
            // Settle: what the exchange means for the event, decided by the policy.
            let reply = exchange.reply();
            let schedule: Vec<Duration> = delivery.retry_schedule.iter().map(|d| d.0).collect();
            let unit: f64 = rand::random::<f64>() * 2.0 - 1.0;
            let settlement = policy::settle(
                reply,
                event.attempts as u32,
                &schedule,
                delivery.jitter,
                unit,
                ids::now_ms(),
            );
            let retry_at = settlement.next_attempt_at();
            let outcome = settlement.outcome();
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
                error_kind: exchange.error_kind,
                error_message: exchange.error_message.clone(),
                response_headers_json: exchange
                    .response_headers
                    .map(|h| Value::Object(h).to_string()),
                response_body: exchange.response_body,
                started_at,
                duration_ms,
                outcome,
                next_attempt_at: retry_at,
            };
            crate::metrics::get().attempt(outcome.as_str(), clock.elapsed());
            match settlement {
                policy::Settlement::Delivered => {
                    tracing::info!(status = ?exchange.status, duration_ms, "webhook delivered");
                }
                _ => tracing::warn!(
                    status = ?exchange.status,
                    error_kind = ?exchange.error_kind.map(ErrorKind::as_str),
                    error = exchange.error_message.as_deref().unwrap_or(""),
                    outcome = outcome.as_str(),
                    next_attempt_at = ?retry_at.map(ids::rfc3339),
                    "webhook attempt failed"
                ),
            }
            let update = EventUpdate {
                state: settlement.event_state(),
                attempts: event.attempts,
                total_attempts: event.total_attempts,
                next_attempt_at: retry_at,
                failure_reason: settlement
                    .failure_reason()
                    .map(|reason| reason.as_str().to_string()),
            };
            let recorded = store.write(RecordAttempt { attempt, update }).await;
            let (retry_at, recorded, promoted) = match recorded {
                Ok(promoted) => (retry_at, true, promoted),
                Err(err) => {
                    // The store still says the event is due: try again soon rather than lose it.
                    tracing::error!(%err, "could not record the attempt; will retry");
                    (Some(ids::now_ms() + 1000), false, None)
                }
            };
            reply_to.do_send(AttemptFinished {
                event,
                retry_at,
                recorded,
                counts_for_breaker: reply.counts_for_breaker(),
                promoted,
            });
        };
        ctx.spawn(tracing::Instrument::instrument(work, span).into_actor(self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_c2VjcmV0LWZvci10ZXN0cw==";

    fn event(url: &str) -> DueEvent {
        DueEvent {
            event_id: "evt_1".into(),
            request_id: "req_1".into(),
            deployment_key: "t".into(),
            callback_url: url.into(),
            body: bytes::Bytes::from_static(b"{\"ok\":true}"),
            series: 1,
            attempts: 0,
            total_attempts: 0,
            next_attempt_at: 0,
        }
    }

    #[test]
    fn prepared_headers_verify_as_a_receiver_checks_them() {
        let event = event("http://127.0.0.1:9/hook");
        let headers = prepare(
            &event,
            Ok(vec![SECRET.into()]),
            &CallbackPolicy::default(),
            1_700_000_000,
        )
        .unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("X-Fetch-Hive-Request-Id"), Some("req_1"));
        assert_eq!(header("webhook-id"), Some("evt_1"));
        let received = signing::ReceivedHeaders {
            webhook_id: header("webhook-id"),
            webhook_timestamp: header("webhook-timestamp"),
            webhook_signature: header("webhook-signature"),
            fetch_hive_signature: header("X-Fetch-Hive-Signature"),
        };
        signing::verify(SECRET, &received, &event.body, 1_700_000_000).unwrap();
    }

    #[test]
    fn a_refusal_says_why_the_attempt_was_not_sent() {
        let open = CallbackPolicy::default();
        let refused = |event: &DueEvent, secrets, policy| {
            prepare(event, secrets, policy, 0).unwrap_err().to_string()
        };
        let hook = event("http://127.0.0.1:9/hook");
        assert_eq!(
            refused(
                &hook,
                Err(NoSecret {
                    deployment_key: "t".into()
                }),
                &open
            ),
            "deployment t was deleted, so there is no secret to sign with"
        );
        assert_eq!(
            refused(&hook, Ok(vec!["whsec_!!".into()]), &open),
            "cannot sign: the secret is not a valid whsec_ secret (the part after whsec_ must be base64)"
        );
        let deny = CallbackPolicy::new(&[], &["10.0.0.0/8".into()]);
        let message = refused(
            &event("http://10.1.2.3/hook"),
            Ok(vec![SECRET.into()]),
            &deny,
        );
        assert!(message.contains("10.1.2.3"), "{message}");
        assert!(prepare(&hook, Ok(vec![SECRET.into()]), &deny, 0).is_ok());
    }
}
