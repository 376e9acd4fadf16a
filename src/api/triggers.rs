//! Inbound webhook triggers (SPEC §4): services that can only send a webhook start an async
//! run, authenticated by the deployment's signing secret instead of an API key.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::admit::{admit, prepare};
use super::extract::JsonBody;
use super::invoke_body::{parse_async, parse_events, parse_metadata, InvokeRequest};
use super::routing::endpoint;
use super::state::AppState;
use crate::error::ApiError;
use crate::ids;
use crate::signing::secrets_equal;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/workflow/webhooks/{deployment}/variants/{variant}").post(trigger));
}

/// The secret from `X-Fetch-Hive-Webhook-Secret`, else from `?secret=`.
fn presented_secret(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get("x-fetch-hive-webhook-secret")
        .and_then(|v| v.to_str().ok())
    {
        return Some(value.trim().to_string());
    }
    // Secrets are `whsec_` + standard base64, so about half hold a `+`, which form decoding
    // turns into a space when the secret is pasted into the URL unencoded. No secret holds a
    // space, so a space can only be such a `+`.
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.replace(' ', "+"))
}

/// Splits a trigger body: `{"inputs", "async", "metadata", "user"}`, or an object without
/// `inputs` that is itself the inputs (minus those other keys).
fn trigger_request(
    deployment: String,
    variant: String,
    body: &Value,
) -> Result<InvokeRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object.".into()))?;
    let inputs = match obj.get("inputs") {
        Some(Value::Object(inputs)) => inputs.clone(),
        Some(Value::Null) | None => obj
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "async" | "metadata" | "user" | "inputs"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<_, _>>(),
        Some(_) => return Err(ApiError::field("inputs", "inputs must be an object")),
    };
    let callback_url = parse_async(obj.get("async"))?.ok_or_else(|| {
        ApiError::field(
            "async.callback_url",
            "callback_url is required when async is enabled",
        )
    })?;
    let user = obj.get("user").and_then(Value::as_str).map(str::to_string);
    Ok(InvokeRequest {
        deployment,
        variant,
        inputs,
        callback_url: Some(callback_url),
        events: parse_events(obj.get("async"))?,
        metadata: parse_metadata(obj.get("metadata"))?,
        user,
        priority: crate::flow::DEFAULT_PRIORITY,
    })
}

/// Starts an async run from a service that can only send a webhook, authenticated by the
/// deployment's signing secret instead of an API key.
#[utoipa::path(post, path = "/v1/workflow/webhooks/{deployment}/variants/{variant}", operation_id = "trigger_workflow", tag = "invoke",
    security(()),
    request_body = super::bodies::TriggerBody,
    params(
        ("deployment" = String, Path, description = "Deployment key"),
        ("variant" = String, Path, description = "Variant name"),
        ("X-Fetch-Hive-Webhook-Secret" = Option<String>, Header, description = "The deployment's signing secret (or `?secret=`)"),
        ("secret" = Option<String>, Query, description = "The signing secret, when the sender cannot set a header"),
    ),
    responses(
        (status = 202, description = "The run was accepted", body = super::views::InvokeAccepted),
        (status = 401, description = "No or wrong secret, or no such deployment: `Invalid access.`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`Variant not found.`", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`queue_full`", body = crate::error::ErrorEnvelope),
        (status = 503, description = "The daemon is stopping", body = crate::error::ErrorEnvelope),
        super::responses::BadBody,
    ))]
async fn trigger(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (deployment, variant) = path.into_inner();
    // An unknown deployment answers like a wrong secret, so the route reveals nothing.
    let dep = state
        .deployments
        .get(&deployment)
        .ok_or(ApiError::Unauthorized)?;
    let presented = presented_secret(&req).ok_or(ApiError::Unauthorized)?;
    // Check every valid secret (no early exit) so timing says nothing about which matched.
    let matched = dep
        .valid_secrets(ids::now_ms())
        .iter()
        .fold(false, |ok, secret| secrets_equal(secret, &presented) | ok);
    if !matched {
        return Err(ApiError::Unauthorized);
    }
    let request = trigger_request(deployment, variant, &body.0)?;
    let run = prepare(&state, request, crate::store::RunSource::Webhook, None)?;
    admit(&state, run).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_without_inputs_is_the_inputs() {
        let r = trigger_request("d".into(), "v".into(), &json!({"name": "Ada", "async": {"callback_url": "http://127.0.0.1:1/x"}, "metadata": {"a": 1}})).unwrap();
        assert_eq!(
            r.inputs,
            json!({"name": "Ada"}).as_object().unwrap().clone()
        );
        assert_eq!(r.metadata["a"], 1);
    }

    #[test]
    fn callback_url_is_required() {
        let err = trigger_request("d".into(), "v".into(), &json!({"inputs": {}})).unwrap_err();
        assert_eq!(
            err.body()["message"],
            "callback_url is required when async is enabled"
        );
    }
}
