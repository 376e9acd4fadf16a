//! The access log: one line per request, inside an `http` span that carries the method and
//! path, with the status and duration. Only the path is logged: never a header (the API key
//! travels in `Authorization`) and never the query string (an inbound trigger may carry its
//! `?secret=`).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;

/// Probes polled every few seconds log at `debug`, so they do not drown the rest.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics")
}

pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().to_string();
    let path = req.path().to_string();
    let span = tracing::info_span!("http", %method, %path);
    let clock = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(err) => err.as_response_error().status_code().as_u16(),
    };
    span.in_scope(|| {
        if is_probe(&path) {
            tracing::debug!(status, duration_ms, "request");
        } else {
            tracing::info!(status, duration_ms, "request");
        }
    });
    result
}
