//! Request extractors: the caller's key and role, and request bodies checked for content
//! type, size and syntax, every failure in the contract's envelope.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::Value;

use super::state::AppState;
use crate::error::ApiError;
use crate::keyring::Caller;
use crate::store::Role;

pub(crate) fn state(req: &HttpRequest) -> &web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
}

/// The key from `Authorization: Bearer <key>` or a bare `Authorization: <key>`.
fn presented_key(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!key.is_empty()).then_some(key)
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = state(req);
    let key = presented_key(req).ok_or(ApiError::Unauthorized)?;
    state
        .keys
        .authenticate(&state.store, key)
        .ok_or(ApiError::Unauthorized)
}

/// Any valid key (invoke or admin).
pub struct Authed(pub Caller);

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(Authed))
    }
}

/// An admin key.
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            if caller.role == Role::Admin {
                Ok(Admin(caller))
            } else {
                Err(ApiError::Forbidden)
            }
        }))
    }
}

/// The media type of a request, lower-cased, without parameters.
fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn is_toml(media: &str) -> bool {
    matches!(
        media,
        "application/toml" | "text/toml" | "text/x-toml" | "application/x-toml"
    )
}

/// Reads the body up to the configured limit.
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<Vec<u8>, ApiError>> {
    let limit = state(req).config.file.limits.invoke_body.0 as usize;
    let too_large = move || {
        ApiError::PayloadTooLarge(format!(
            "Request body is larger than the limit of {limit} bytes (limits.invoke_body)."
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Box::pin(ready(Err(too_large())));
    }
    let mut payload = payload.take();
    Box::pin(async move {
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("Could not read the request body: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "Request body is empty; send a JSON object.".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("Malformed JSON in request body: {e}")))
}

/// A JSON request body (`Content-Type: application/json`).
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !media_type(req).is_some_and(|m| is_json(&m)) {
            return Box::pin(ready(Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json.".into(),
            ))));
        }
        let body = read_body(req, payload);
        Box::pin(async move { parse_json(&body.await?).map(JsonBody) })
    }
}

/// A JSON body that may be left out: no body (or only whitespace) is `None` whatever the
/// `Content-Type`; a body must be JSON.
pub struct OptionalJsonBody(pub Option<Value>);

impl FromRequest for OptionalJsonBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = media_type(req).is_some_and(|m| is_json(&m));
        let body = read_body(req, payload);
        Box::pin(async move {
            let bytes = body.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJsonBody(None));
            }
            if !json {
                return Err(ApiError::UnsupportedMediaType(
                    "Content-Type must be application/json.".into(),
                ));
            }
            parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
        })
    }
}

/// A definition body: JSON, or TOML with `Content-Type: application/toml`.
pub enum DefinitionBody {
    Json(Value),
    Toml(String),
}

impl FromRequest for DefinitionBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let media = media_type(req).unwrap_or_default();
        let toml = is_toml(&media);
        if !toml && !is_json(&media) {
            return Box::pin(ready(Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json or application/toml.".into(),
            ))));
        }
        let body = read_body(req, payload);
        Box::pin(async move {
            let bytes = body.await?;
            if toml {
                String::from_utf8(bytes)
                    .map(DefinitionBody::Toml)
                    .map_err(|_| ApiError::BadRequest("TOML body is not valid UTF-8.".into()))
            } else {
                parse_json(&bytes).map(DefinitionBody::Json)
            }
        })
    }
}
