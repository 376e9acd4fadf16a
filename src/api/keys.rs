//! API keys: create (shown once), list (masked), rotate, revoke.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::extract::{Admin, JsonBody};
use super::routing::endpoint;
use super::state::AppState;
use super::views::{ApiKey, KeyCreated, KeyList, KeyRevoked};
use crate::error::ApiError;
use crate::store::{self, Role};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/keys").get(list).post(create));
    cfg.service(endpoint("/v1/keys/{id}").delete(revoke));
    cfg.service(endpoint("/v1/keys/{id}/rotate").post(rotate));
}

/// Every API key, masked, with its last use.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
    responses(
        (status = 200, description = "The keys", body = super::views::KeyList),
        super::responses::NeedsAdmin,
    ))]
async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let keys = state.store.read(store::keys::list).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        keys: keys.iter().map(ApiKey::from_record).collect(),
    }))
}

/// Creates an API key; the key is in this response only.
#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys",
    request_body = super::bodies::KeyCreateBody,
    responses(
        (status = 201, description = "The new key", body = super::views::KeyCreated),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let name = match body.0.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.trim().to_string(),
        _ => {
            return Err(ApiError::field(
                "name",
                "name is required: a non-empty string of at most 200 characters",
            ))
        }
    };
    let role = match body.0.get("role").and_then(Value::as_str) {
        None => Role::Invoke,
        Some("invoke") => Role::Invoke,
        Some("admin") => Role::Admin,
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

/// Replaces a key's secret (same id and role); the old secret stops working at once.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotate_key", tag = "keys",
    params(("id" = String, Path, description = "The key's `key_…` id")),
    responses(
        (status = 200, description = "The new secret", body = super::views::KeyRotated),
        (status = 404, description = "`API key not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn rotate(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .keys
        .rotate(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("API key not found.".into()))?;
    tracing::info!(key_id = %id, "API key rotated");
    Ok(HttpResponse::Ok().json(json!({"id": id.into_inner(), "key": key})))
}

/// Revokes a key.
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    params(("id" = String, Path, description = "The key's `key_…` id")),
    responses(
        (status = 200, description = "Revoked", body = super::views::KeyRevoked),
        (status = 404, description = "`API key not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn revoke(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.keys.revoke(&state.store, &id).await? {
        return Err(ApiError::NotFound("API key not found.".into()));
    }
    tracing::info!(key_id = %id, "API key revoked");
    Ok(HttpResponse::Ok().json(KeyRevoked {
        id: id.into_inner(),
        revoked: true,
    }))
}
