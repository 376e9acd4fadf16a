//! The invoke body's shape (SPEC §2), checked before anything is looked up or stored: pure
//! functions of the JSON, shared by `POST /v1/workflow/invoke`, inbound triggers and the
//! snippet's callback URL check.

use serde_json::{Map, Value};

use super::params::BLANK;
use crate::delivery::lifecycle::EventSet;
use crate::error::ApiError;

/// The invoke body after shape checks (SPEC §2).
#[derive(Debug, Default, PartialEq)]
pub struct InvokeRequest {
    pub deployment: String,
    pub variant: String,
    pub inputs: Map<String, Value>,
    /// Set when async delivery was asked for.
    pub callback_url: Option<String>,
    /// `async.events`: what is POSTed to `callback_url` (SPEC §11).
    pub events: EventSet,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    /// 0–9, default 5 (SPEC §12).
    pub priority: u8,
}

/// Checks the body's shape and the rules that need no deployment.
pub fn parse_invoke(body: &Value) -> Result<InvokeRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object.".into()))?;
    let missing = || {
        ApiError::field(
            "deployment",
            "Missing required field: deployment or variant",
        )
    };
    let deployment = match obj.get("deployment") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_) | Value::Null) | None => return Err(missing()),
        Some(_) => return Err(ApiError::field("deployment", "deployment must be a string")),
    };
    let variant = match obj.get("variant") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) if s.is_empty() => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("variant", "variant must be a string")),
    };
    let inputs = match obj.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::field("inputs", "inputs must be an object")),
    };
    let callback_url = parse_async(obj.get("async"))?;
    let events = parse_events(obj.get("async"))?;
    let metadata = parse_metadata(obj.get("metadata"))?;
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::field("user", "user must be a string")),
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => crate::flow::DEFAULT_PRIORITY,
        Some(value) => value
            .as_u64()
            .filter(|p| *p <= u64::from(crate::flow::MAX_PRIORITY))
            .map(|p| p as u8)
            .ok_or_else(|| {
                ApiError::field(
                    "priority",
                    format!(
                        "priority must be an integer from 0 to {} (higher starts first; default {})",
                        crate::flow::MAX_PRIORITY,
                        crate::flow::DEFAULT_PRIORITY
                    ),
                )
            })?,
    };
    Ok(InvokeRequest {
        deployment,
        variant,
        inputs,
        callback_url,
        events,
        metadata,
        user,
        priority,
    })
}

/// `async.events` (SPEC §11), checked whether or not async is on, like `callback_url`: a
/// name this daemon does not know is refused, never silently dropped.
pub fn parse_events(async_value: Option<&Value>) -> Result<EventSet, ApiError> {
    let events = async_value.and_then(|a| a.get("events"));
    EventSet::parse(events).map_err(|message| ApiError::field("async.events", message))
}

/// The `async` object: `Some(url)` when async delivery is on. A `callback_url` without
/// `enabled` counts as enabled, as in Fetch Hive's trigger examples.
pub fn parse_async(value: Option<&Value>) -> Result<Option<String>, ApiError> {
    let obj =
        match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(obj)) => obj,
            Some(_) => return Err(ApiError::field(
                "async",
                "async must be an object like {\"enabled\": true, \"callback_url\": \"https://…\"}",
            )),
        };
    let url = match obj.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim_matches(BLANK).is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            return Err(ApiError::field(
                "async.callback_url",
                "callback_url must be a valid URL",
            ))
        }
    };
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => url.is_some(),
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::field(
                "async.enabled",
                "async.enabled must be true or false",
            ))
        }
    };
    // A given URL is checked even when async is off: the document allows only URLs there.
    if url.as_deref().is_some_and(|u| !is_valid_callback_url(u)) {
        return Err(ApiError::field(
            "async.callback_url",
            "callback_url must be a valid URL",
        ));
    }
    if !enabled {
        return Ok(None);
    }
    let url = url.ok_or_else(|| {
        ApiError::field(
            "async.callback_url",
            "callback_url is required when async is enabled",
        )
    })?;
    Ok(Some(url))
}

/// An absolute http(s) URL with a host.
pub fn is_valid_callback_url(text: &str) -> bool {
    url::Url::parse(text)
        .map(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .unwrap_or(false)
}

/// Metadata is flat: non-empty string keys, scalar values.
pub fn parse_metadata(value: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(ApiError::field(
                "metadata",
                "metadata must be an object of scalar values",
            ))
        }
    };
    for (key, value) in obj {
        if key.is_empty() {
            return Err(ApiError::field(
                "metadata",
                "metadata keys must be non-empty strings",
            ));
        }
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            return Err(ApiError::field(
                format!("metadata.{key}"),
                format!("metadata.{key} must be a string, number, boolean or null (metadata is flat; nested values are not allowed)"),
            ));
        }
    }
    Ok(obj.clone())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(body: Value) -> Value {
        parse_invoke(&body).unwrap_err().body()
    }

    #[test]
    fn deployment_is_required_with_the_fetch_hive_message() {
        let body = err(json!({"inputs": {}}));
        assert_eq!(
            body["message"],
            "Missing required field: deployment or variant"
        );
        assert_eq!(body["error_code"], "validation_error");
    }

    #[test]
    fn async_rules_follow_the_contract() {
        assert_eq!(
            err(json!({"deployment": "d", "async": {"enabled": true}}))["message"],
            "callback_url is required when async is enabled"
        );
        assert_eq!(
            err(
                json!({"deployment": "d", "async": {"enabled": true, "callback_url": "not a url"}})
            )["message"],
            "callback_url must be a valid URL"
        );
        assert_eq!(
            err(
                json!({"deployment": "d", "async": {"enabled": true, "callback_url": "ftp://x/y"}})
            )["message"],
            "callback_url must be a valid URL"
        );
        let implied = parse_invoke(
            &json!({"deployment": "d", "async": {"callback_url": "http://127.0.0.1:9/cb"}}),
        )
        .unwrap();
        assert_eq!(
            implied.callback_url.as_deref(),
            Some("http://127.0.0.1:9/cb")
        );
        let off = parse_invoke(
            &json!({"deployment": "d", "async": {"enabled": false, "callback_url": "http://x/cb"}}),
        )
        .unwrap();
        assert_eq!(off.callback_url, None);
        // Off, but a URL that is no URL is still refused: the document allows only URLs.
        assert_eq!(
            err(json!({"deployment": "d", "async": {"enabled": false, "callback_url": "\u{84}"}}))
                ["field"],
            "async.callback_url"
        );
        let blank = parse_invoke(
            &json!({"deployment": "d", "async": {"enabled": false, "callback_url": " \t"}}),
        )
        .unwrap();
        assert_eq!(blank.callback_url, None);
    }

    #[test]
    fn metadata_must_be_flat_and_names_the_key() {
        let body = err(json!({"deployment": "d", "metadata": {"order": {"id": 1}}}));
        assert_eq!(body["field"], "metadata.order");
        assert!(body["message"].as_str().unwrap().contains("metadata.order"));
        let ok = parse_invoke(
            &json!({"deployment": "d", "metadata": {"a": 1, "b": "x", "c": null, "d": true}}),
        )
        .unwrap();
        assert_eq!(ok.metadata.len(), 4);
    }

    #[test]
    fn async_events_are_checked_and_name_the_field() {
        let body = err(
            json!({"deployment": "d", "async": {"callback_url": "http://x/cb",
                                                           "events": ["step.completed", "nope"]}}),
        );
        assert_eq!(body["field"], "async.events");
        assert_eq!(body["error_code"], "validation_error");
        let ok = parse_invoke(
            &json!({"deployment": "d", "async": {"callback_url": "http://x/cb",
                                                                   "events": ["step.completed"]}}),
        )
        .unwrap();
        assert!(ok.events.wants("step.completed") && !ok.events.wants("workflow.completed"));
        assert_eq!(
            parse_invoke(&json!({"deployment": "d"})).unwrap().events,
            EventSet::default()
        );
    }

    #[test]
    fn variant_defaults_to_default() {
        assert_eq!(
            parse_invoke(&json!({"deployment": "d"})).unwrap().variant,
            "default"
        );
    }
}
