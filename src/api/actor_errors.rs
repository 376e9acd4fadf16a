//! What the actors' refusals look like over HTTP. The actors answer in their own terms
//! (`AdmitError`, `RespondError`); the status codes, error codes, messages and headers users
//! see are decided here, at the edge, and nowhere in `actors/`.

use crate::actors::{AdmitError, RespondError};
use crate::error::ApiError;

impl From<AdmitError> for ApiError {
    fn from(err: AdmitError) -> Self {
        match err {
            AdmitError::ConcurrencyLimit => ApiError::ConcurrencyLimit,
            AdmitError::QueueFull {
                max_queued,
                retry_after,
            } => ApiError::QueueFull {
                max_queued,
                // `Retry-After` counts whole seconds; rounding down could say "now".
                retry_after_secs: retry_after.as_millis().div_ceil(1000) as u64,
            },
            AdmitError::Store(err) => err.into(),
        }
    }
}

impl From<RespondError> for ApiError {
    fn from(err: RespondError) -> Self {
        match err {
            RespondError::NotWaiting { step_id } => {
                ApiError::Conflict(format!("Step {step_id} is not waiting for a response."))
            }
            RespondError::AlreadyAnswering { step_id } => {
                ApiError::Conflict(format!("Step {step_id} is already being answered."))
            }
            RespondError::RunEnded => {
                ApiError::Conflict("The run ended while the response was being saved.".into())
            }
            RespondError::Store(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use actix_web::ResponseError;
    use serde_json::{json, Value};

    use super::*;
    use crate::store::StoreError;

    /// Status, `Retry-After` and body, as a client receives them.
    fn seen(err: impl Into<ApiError>) -> (u16, Option<String>, Value) {
        let response = err.into().error_response();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        let body = response.into_body().try_into_bytes().unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn admission_refusals_are_429s() {
        let message = "You've reached your concurrency limit. Try again later or use async mode.";
        assert_eq!(
            seen(AdmitError::ConcurrencyLimit),
            (
                429,
                None,
                json!({"error": message, "message": message, "error_code": "concurrency_limit"})
            )
        );
        let message = "The run queue is full (3 runs waiting). Try again later.";
        assert_eq!(
            seen(AdmitError::QueueFull {
                max_queued: 3,
                retry_after: Duration::from_secs(1),
            }),
            (
                429,
                Some("1".into()),
                json!({"error": message, "message": message, "error_code": "queue_full"})
            )
        );
        let (_, retry_after, _) = seen(AdmitError::QueueFull {
            max_queued: 3,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(retry_after.as_deref(), Some("2"), "rounded up");
    }

    #[test]
    fn a_store_that_cannot_write_is_a_503_and_a_broken_one_a_500() {
        let (status, _, body) = seen(AdmitError::Store(StoreError::Unavailable(
            "The database disk is full; the request was not stored.".into(),
        )));
        assert_eq!(status, 503);
        assert_eq!(body["error_code"], "unavailable");
        assert_eq!(
            body["message"],
            "The database disk is full; the request was not stored."
        );
        let (status, _, body) = seen(RespondError::Store(StoreError::Refused("no".into())));
        assert_eq!(status, 500);
        assert_eq!(body["message"], "Internal error.");
    }

    #[test]
    fn respond_refusals_are_409s_naming_the_step() {
        let cases = [
            (
                RespondError::NotWaiting {
                    step_id: "ok".into(),
                },
                "Step ok is not waiting for a response.",
            ),
            (
                RespondError::AlreadyAnswering {
                    step_id: "ok".into(),
                },
                "Step ok is already being answered.",
            ),
            (
                RespondError::RunEnded,
                "The run ended while the response was being saved.",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(
                seen(err),
                (
                    409,
                    None,
                    json!({"error": message, "message": message, "error_code": "conflict"})
                )
            );
        }
    }
}
