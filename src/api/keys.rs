//! API keys: create (shown once), list (masked), rotate, revoke.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::extract::{Admin, JsonBody};
use super::{resource, AppState};
use crate::error::ApiError;
use crate::ids;
use crate::store::{self, KeyRecord, Role};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    );
    cfg.service(resource("/v1/keys/{id}").route(web::delete().to(revoke)));
    cfg.service(resource("/v1/keys/{id}/rotate").route(web::post().to(rotate)));
}

fn key_json(key: &KeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "masked_key": format!("{}…", key.key_prefix),
        "created_at": ids::rfc3339(key.created_at),
        "last_used_at": key.last_used_at.map(ids::rfc3339),
        "revoked_at": key.revoked_at.map(ids::rfc3339),
        "revoked": key.revoked_at.is_some(),
    })
}

async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let keys = state.store.read(store::keys::list).await?;
    Ok(HttpResponse::Ok().json(json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()})))
}

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
    let mut body = key_json(&issued.record);
    body["key"] = json!(issued.key);
    Ok(HttpResponse::Created().json(body))
}

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

async fn revoke(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.keys.revoke(&state.store, &id).await? {
        return Err(ApiError::NotFound("API key not found.".into()));
    }
    tracing::info!(key_id = %id, "API key revoked");
    Ok(HttpResponse::Ok().json(json!({"id": id.into_inner(), "revoked": true})))
}
