//! API keys: create (shown once), list (masked), rotate, revoke.

use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::extract::{Admin, JsonBody, OptionalJsonBody};
use super::routing::endpoint;
use super::state::AppState;
use super::views::{ApiKey, KeyCreated, KeyList, KeyRevoked, KeyRotated};
use crate::error::ApiError;
use crate::ids;
use crate::store::{Revocation, Role};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/keys").get(list).post(create));
    cfg.service(endpoint("/v1/keys/{id}").delete(revoke));
    cfg.service(endpoint("/v1/keys/{id}/rotate").post(rotate));
}

/// Every API key, masked, with its last use.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        super::responses::NeedsAdmin,
    ))]
async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let keys = state.store.list_keys().await?;
    Ok(HttpResponse::Ok().json(KeyList {
        keys: keys.iter().map(ApiKey::from_record).collect(),
    }))
}

/// Creates an API key; the key is in this response only.
#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys",
    request_body = super::bodies::KeyCreateBody,
    responses(
        (status = 201, description = "The new key", body = KeyCreated),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let name = match body.0.get("name") {
        // Characters, not bytes: the schema's `maxLength` counts characters.
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 200 => {
            s.trim().to_string()
        }
        _ => {
            return Err(ApiError::field(
                "name",
                "name is required: a non-empty string of at most 200 characters",
            ))
        }
    };
    let role = match body.0.get("role") {
        None | Some(Value::Null) => Role::Invoke,
        Some(Value::String(s)) if s == "invoke" => Role::Invoke,
        Some(Value::String(s)) if s == "admin" => Role::Admin,
        Some(_) => {
            return Err(ApiError::field(
                "role",
                "role must be \"invoke\" or \"admin\"",
            ))
        }
    };
    let issued = state.keys.create(&state.store, &name, role).await?;
    tracing::info!(key_id = %issued.record.id, role = role.as_str(), "API key created");
    Ok(HttpResponse::Created().json(KeyCreated {
        record: ApiKey::from_record(&issued.record),
        key: issued.key,
    }))
}

/// Replaces a key's secret (same id and role). The old secret stops working at once, or,
/// with `expires_in`, keeps working that many seconds beside the new one. When the key is
/// the one in `<data dir>/admin.key`, that file gets the new secret, so the CLI keeps working.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotate_key", tag = "keys",
    params(("id" = String, Path, description = "The key's `key_…` id")),
    request_body(content = Option<super::bodies::KeyRotateBody>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret", body = KeyRotated),
        (status = 404, description = "`API key not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn rotate(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
    body: OptionalJsonBody,
) -> Result<HttpResponse, ApiError> {
    let expires_in = match &body.0 {
        None | Some(Value::Null) => None,
        Some(Value::Object(obj)) => parse_expires_in(obj.get("expires_in"))?,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Request body must be a JSON object.".into(),
            ))
        }
    };
    // Whether the CLI's key file holds this key, asked before its secret changes.
    let admin_file = state.config.paths.admin_key();
    let in_admin_file = std::fs::read_to_string(&admin_file)
        .ok()
        .and_then(|secret| state.keys.owner(secret.trim()))
        .is_some_and(|owner| owner == *id);
    let rotated = state
        .keys
        .rotate(&state.store, &id, expires_in.map(|s| i64::from(s) * 1000))
        .await?
        .ok_or_else(|| ApiError::NotFound("API key not found.".into()))?;
    if in_admin_file {
        let secret = rotated.key.clone();
        let path = admin_file.clone();
        web::block(move || crate::write_private_file(&path, &secret))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| {
                ApiError::internal(format!(
                    "the key was rotated but {} could not be rewritten: {e}",
                    admin_file.display()
                ))
            })?;
    }
    tracing::info!(key_id = %id, expires_in, in_admin_file, "API key rotated");
    Ok(HttpResponse::Ok().json(KeyRotated {
        id: id.into_inner(),
        key: rotated.key,
        previous_key_valid_until: rotated.previous_valid_until.map(ids::rfc3339),
    }))
}

/// The most an old secret may outlive its rotation: 7 days, like Stripe's longest roll.
const MAX_EXPIRES_IN: u32 = 7 * 24 * 3600;

/// `expires_in`: whole seconds, 0 to [`MAX_EXPIRES_IN`]; absent or null means none.
fn parse_expires_in(value: Option<&Value>) -> Result<Option<u32>, ApiError> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        // `5.0` is a whole number too (JSON Schema's `integer` says so).
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(_) => None,
    };
    match seconds.and_then(|s| u32::try_from(s).ok()) {
        Some(s) if s <= MAX_EXPIRES_IN => Ok(Some(s)),
        _ => Err(ApiError::field(
            "expires_in",
            format!(
                "expires_in must be a whole number of seconds from 0 to {MAX_EXPIRES_IN} (7 days)"
            ),
        )),
    }
}

/// Revokes a key. The last active admin key cannot be revoked (409): create another admin
/// key first.
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    params(("id" = String, Path, description = "The key's `key_…` id")),
    responses(
        (status = 200, description = "Revoked", body = KeyRevoked),
        (status = 404, description = "`API key not found.`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "The last active admin key", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn revoke(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.keys.revoke(&state.store, &id).await? {
        Revocation::Revoked => {}
        Revocation::NotFound => return Err(ApiError::NotFound("API key not found.".into())),
        Revocation::LastAdmin => {
            return Err(ApiError::Conflict(
                "This is the last admin key; create another admin key before revoking it.".into(),
            ))
        }
    }
    tracing::info!(key_id = %id, "API key revoked");
    Ok(HttpResponse::Ok().json(KeyRevoked {
        id: id.into_inner(),
        revoked: true,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expires_in_is_whole_seconds_up_to_a_week() {
        assert_eq!(parse_expires_in(None).unwrap(), None);
        assert_eq!(parse_expires_in(Some(&json!(null))).unwrap(), None);
        assert_eq!(parse_expires_in(Some(&json!(0))).unwrap(), Some(0));
        assert_eq!(parse_expires_in(Some(&json!(3600.0))).unwrap(), Some(3600));
        assert_eq!(
            parse_expires_in(Some(&json!(604800))).unwrap(),
            Some(604800)
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!(604801),
            json!("60"),
            json!(true),
        ] {
            let err = parse_expires_in(Some(&bad)).unwrap_err().body();
            assert_eq!(err["field"], "expires_in", "{bad}");
        }
    }
}
