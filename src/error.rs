//! The one error envelope of the API: `{"error", "message", "error_code"}` plus `field` where
//! one field is at fault. `ApiError` is what users see; internal details go to the log only.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The one error envelope of every route (SPEC §2): `error` is an alias of `message`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "Invalid access.", "message": "Invalid access.", "error_code": "unauthorized"}))]
pub struct ErrorEnvelope {
    pub error: String,
    pub message: String,
    /// Stable machine-readable code, e.g. `unauthorized`, `validation_error`, `not_found`,
    /// `conflict`, `queue_full`, `concurrency_limit`.
    pub error_code: String,
    /// The field at fault, for validation errors (`inputs.name`, `async.callback_url`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A sync run that ended in failure (HTTP 502): the envelope plus the run's id and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunFailedEnvelope {
    pub error: String,
    pub message: String,
    /// `step_failed`, `timeout`, `cancelled`, …
    pub error_code: String,
    pub request_id: String,
    /// `failed` or `cancelled`.
    pub run_status: String,
    /// The step that failed, if one did.
    pub step: Option<String>,
}

/// Every way a request can fail, with its status decided in one place (`status_code`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid access.")]
    Unauthorized,
    #[error("This API key's role cannot do that; it needs an admin key.")]
    Forbidden,
    #[error("{message}")]
    Validation {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Method not allowed.")]
    MethodNotAllowed,
    #[error("You've reached your concurrency limit. Try again later or use async mode.")]
    ConcurrencyLimit,
    #[error("The run queue is full ({max_queued} runs waiting). Try again later.")]
    QueueFull {
        max_queued: usize,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    /// A sync run that ended in failure: the envelope plus `request_id`, `run_status`, `step`.
    #[error("{message}")]
    RunFailed {
        request_id: String,
        message: String,
        error_code: String,
        step: Option<String>,
        run_status: &'static str,
    },
    /// Something broke inside; the detail is logged, the user sees a generic message.
    #[error("Internal error.")]
    Internal(String),
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: None,
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    /// The stable machine-readable code.
    pub fn error_code(&self) -> &str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::Validation { .. } => "validation_error",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::ConcurrencyLimit => "concurrency_limit",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::RunFailed { error_code, .. } => error_code,
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The envelope of a sync run's failure; `None` for every other error.
    pub fn run_failed_envelope(&self) -> Option<RunFailedEnvelope> {
        let ApiError::RunFailed {
            request_id,
            step,
            run_status,
            ..
        } = self
        else {
            return None;
        };
        let message = self.to_string();
        Some(RunFailedEnvelope {
            error: message.clone(),
            message,
            error_code: self.error_code().to_string(),
            request_id: request_id.clone(),
            run_status: (*run_status).to_string(),
            step: step.clone(),
        })
    }

    /// The envelope as JSON.
    pub fn body(&self) -> Value {
        let body = match self.run_failed_envelope() {
            Some(failed) => serde_json::to_value(failed),
            None => {
                let message = self.to_string();
                serde_json::to_value(ErrorEnvelope {
                    error: message.clone(),
                    message,
                    error_code: self.error_code().to_string(),
                    field: match self {
                        ApiError::Validation { field, .. } => field.clone(),
                        _ => None,
                    },
                })
            }
        };
        body.expect("an envelope of strings serializes")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ConcurrencyLimit | ApiError::QueueFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RunFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::QueueFull {
            retry_after_secs, ..
        } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response.json(self.body())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Unavailable(msg) => ApiError::Unavailable(msg),
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unauthorized_envelope_is_fetch_hive_exact() {
        assert_eq!(
            ApiError::Unauthorized.body(),
            json!({"error": "Invalid access.", "message": "Invalid access.", "error_code": "unauthorized"})
        );
    }

    #[test]
    fn validation_names_the_field() {
        let body = ApiError::field(
            "inputs.name",
            "Missing required input: name (expected text)",
        )
        .body();
        assert_eq!(body["field"], "inputs.name");
        assert_eq!(body["error_code"], "validation_error");
        assert_eq!(body["error"], body["message"]);
    }

    #[test]
    fn run_failure_carries_request_and_step() {
        let body = ApiError::RunFailed {
            request_id: "req_1".into(),
            message: "step fetch failed: HTTP 500".into(),
            error_code: "step_failed".into(),
            step: Some("fetch".into()),
            run_status: "failed",
        }
        .body();
        assert_eq!(body["run_status"], "failed");
        assert_eq!(body["step"], "fetch");
        assert_eq!(body["request_id"], "req_1");
    }
}
