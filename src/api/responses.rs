//! The error responses many routes share, for the OpenAPI document: sets of statuses that
//! each answer the envelope (`crate::error::ErrorEnvelope`, the type `ApiError` serializes).

use utoipa::IntoResponses;

use crate::error::ErrorEnvelope;

/// Any valid key (invoke or admin) is needed.
// Described, never built: handlers answer `ApiError`, which builds the envelope.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum NeedsKey {
    /// No key, or an unknown or revoked one: `Invalid access.`
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
}

/// An admin key is needed.
// Described, never built: handlers answer `ApiError`, which builds the envelope.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum NeedsAdmin {
    /// No key, or an unknown or revoked one: `Invalid access.`
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// An `invoke` key: the route needs an admin key.
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
}

/// A body that could not be read as asked.
// Described, never built: handlers answer `ApiError`, which builds the envelope.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum BadBody {
    /// Malformed JSON, or not an object.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// Larger than `limits.invoke_body`.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// Not `application/json` (or `application/toml` where TOML is accepted).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorEnvelope),
    /// A field is invalid; `field` names it.
    #[response(status = 422)]
    Validation(ErrorEnvelope),
}
