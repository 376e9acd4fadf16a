//! Deployments: list, show, deploy a new version (JSON or TOML), delete.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::extract::{Admin, Authed, DefinitionBody};
use super::invoke_body::is_valid_callback_url;
use super::params::{CallbackUrl, BLANK};
use super::routing::endpoint;
use super::state::AppState;
use super::views::{
    Deployment, DeploymentDeleted, DeploymentDetail, DeploymentList, SecretRotated, Snippet,
};
use crate::deployments::{parse_definition, DeployError, LiveDeployment};
use crate::error::ApiError;
use crate::ids;
use crate::store::Role;
use crate::workflow::DefinitionError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/deployments").get(list));
    cfg.service(
        endpoint("/v1/deployments/{key}")
            .get(show)
            .put(deploy)
            .delete(delete),
    );
    cfg.service(endpoint("/v1/deployments/{key}/snippet").get(snippet));
    cfg.service(endpoint("/v1/deployments/{key}/rotate-secret").post(rotate_secret));
}

/// Every deployment; `signing_secret` only for admin keys.
#[utoipa::path(get, path = "/v1/deployments", operation_id = "list_deployments", tag = "deployments",
    responses(
        (status = 200, description = "The deployments", body = DeploymentList),
        super::responses::NeedsKey,
    ))]
async fn list(state: web::Data<AppState>, Authed(caller): Authed) -> HttpResponse {
    let admin = caller.role == Role::Admin;
    HttpResponse::Ok().json(DeploymentList {
        deployments: state
            .deployments
            .all()
            .iter()
            .map(|d| Deployment::new(d, admin))
            .collect(),
    })
}

/// One deployment with its versions and current definition.
#[utoipa::path(get, path = "/v1/deployments/{key}", operation_id = "get_deployment", tag = "deployments",
    params(("key" = String, Path, description = "Deployment key")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentDetail),
        (status = 404, description = "`Deployment not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
    ))]
async fn show(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let dep = state
        .deployments
        .get(&key)
        .ok_or_else(|| ApiError::NotFound("Deployment not found.".into()))?;
    let key = dep.key.clone();
    let versions = state.store.deployment_versions(key).await?;
    let admin = caller.role == Role::Admin;
    Ok(HttpResponse::Ok().json(DeploymentDetail::new(&dep, admin, &versions)))
}

fn definition_error(err: DefinitionError) -> ApiError {
    let field = match (&err.step, &err.field) {
        // A nested step's field already carries its whole path (`steps[2].cases[0].url`).
        (Some(_), Some(field)) if field.starts_with("steps[") => Some(field.clone()),
        (Some(step), Some(field)) => Some(format!("steps.{step}.{field}")),
        (None, Some(field)) => Some(field.clone()),
        (Some(step), None) => Some(format!("steps.{step}")),
        (None, None) => None,
    };
    ApiError::Validation {
        message: err.to_string(),
        field,
    }
}

/// Deploys a definition (JSON, or TOML with `Content-Type: application/toml`): creates the
/// deployment or adds a version.
#[utoipa::path(put, path = "/v1/deployments/{key}", operation_id = "deploy", tag = "deployments",
    params(("key" = String, Path, description = "Deployment key")),
    request_body(content(
        (super::bodies::Definition = "application/json"),
        (String = "application/toml"),
    )),
    responses(
        (status = 200, description = "A new version of an existing deployment", body = Deployment),
        (status = 201, description = "A new deployment", body = Deployment),
        super::responses::NeedsAdmin,
        super::responses::BadBody,
    ))]
async fn deploy(
    state: web::Data<AppState>,
    _admin: Admin,
    key: web::Path<String>,
    body: DefinitionBody,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let source = format!("PUT /v1/deployments/{key}");
    // The URL names the deployment; a body that names another one is a mistake.
    let (text, is_toml) = match body {
        DefinitionBody::Toml(text) => {
            let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ApiError::field("definition", format!("{source}: {}", e.message()))
            })?;
            check_key(&key, table.get("key").and_then(|v| v.as_str()))?;
            table.insert("key".into(), toml::Value::String(key.clone()));
            (toml::to_string(&table).map_err(ApiError::internal)?, true)
        }
        DefinitionBody::Json(Value::Object(mut obj)) => {
            let body_key = match obj.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) => Some(k.as_str()),
                Some(_) => {
                    return Err(ApiError::field(
                        "key",
                        "key must be a string: the URL's deployment key",
                    ))
                }
            };
            check_key(&key, body_key)?;
            obj.insert("key".into(), json!(key));
            (Value::Object(obj).to_string(), false)
        }
        DefinitionBody::Json(_) => {
            return Err(ApiError::BadRequest(
                "A definition must be a JSON object.".into(),
            ))
        }
    };
    let def = parse_definition(&state.config, &text, is_toml, &source).map_err(definition_error)?;
    let (dep, created) =
        state
            .deployments
            .deploy(&state.store, def)
            .await
            .map_err(|e| match e {
                DeployError::Invalid(err) => definition_error(err),
                DeployError::Store(err) => err.into(),
            })?;
    // The file's `[[schedules]]` (checked above with the definition) take effect with it.
    if crate::schedules::sync(&state.store, &dep.definition).await? {
        state.scheduler.do_send(crate::actors::scheduler::Wake);
    }
    tracing::info!(deployment = %dep.key, version = dep.version, "deployed");
    let body = Deployment::new(&dep, true);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

fn check_key(url_key: &str, body_key: Option<&str>) -> Result<(), ApiError> {
    match body_key {
        Some(k) if k != url_key => Err(ApiError::field(
            "key",
            format!(
                "The definition's key \"{k}\" does not match the URL's deployment \"{url_key}\"."
            ),
        )),
        _ => Ok(()),
    }
}

/// Deletes a deployment (its runs stay in the log).
#[utoipa::path(delete, path = "/v1/deployments/{key}", operation_id = "delete_deployment", tag = "deployments",
    params(("key" = String, Path, description = "Deployment key")),
    responses(
        (status = 200, description = "Deleted", body = DeploymentDeleted),
        (status = 404, description = "`Deployment not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn delete(
    state: web::Data<AppState>,
    _admin: Admin,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if state.deployments.delete(&state.store, &key).await? {
        tracing::info!(deployment = %key, "deleted");
        Ok(HttpResponse::Ok().json(DeploymentDeleted {
            key: key.into_inner(),
            deleted: true,
        }))
    } else {
        Err(ApiError::NotFound("Deployment not found.".into()))
    }
}

/// Replaces the signing secret; the previous one keeps signing and authenticating for
/// `delivery.secret_overlap` (24 h).
#[utoipa::path(post, path = "/v1/deployments/{key}/rotate-secret", operation_id = "rotate_secret", tag = "deployments",
    params(("key" = String, Path, description = "Deployment key")),
    responses(
        (status = 200, description = "The new secret", body = SecretRotated),
        (status = 404, description = "`Deployment not found.`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn rotate_secret(
    state: web::Data<AppState>,
    _admin: Admin,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let overlap = state.config.file.delivery.secret_overlap.0;
    let dep = state
        .deployments
        .rotate_secret(&state.store, &key, overlap)
        .await?
        .ok_or_else(|| ApiError::NotFound("Deployment not found.".into()))?;
    tracing::info!(deployment = %dep.key, "signing secret rotated");
    Ok(HttpResponse::Ok().json(SecretRotated {
        key: dep.key.clone(),
        signing_secret: dep.signing_secret.clone(),
        previous_secret_valid_until: dep.previous_secret_until.map(ids::rfc3339),
    }))
}

#[derive(Debug, serde::Deserialize)]
struct SnippetQuery {
    variant: Option<String>,
    #[serde(rename = "async", default)]
    async_mode: Option<String>,
    callback_url: Option<String>,
    base_url: Option<String>,
}

/// The ready cURL command for a deployment, as the dashboard's code snippet shows it.
pub fn curl_snippet(
    base_url: &str,
    dep: &LiveDeployment,
    variant: &str,
    callback_url: Option<&str>,
) -> String {
    let mut inputs = serde_json::Map::new();
    for input in &dep.definition.inputs {
        let example = match input.kind.as_str() {
            "number" => json!(1),
            "boolean" => json!(true),
            "array" => json!([]),
            "object" => json!({}),
            _ => json!(format!("<{}>", input.name)),
        };
        inputs.insert(input.name.clone(), example);
    }
    let mut body = json!({"deployment": dep.key, "variant": variant, "inputs": inputs});
    if let Some(url) = callback_url {
        body["async"] = json!({"enabled": true, "callback_url": url});
    }
    let pretty = serde_json::to_string_pretty(&body)
        .unwrap_or_default()
        .replace('\'', "'\\''");
    format!(
        "curl -X POST '{base_url}/v1/workflow/invoke' \\\n  -H 'Authorization: Bearer YOUR_API_KEY' \\\n  -H 'Content-Type: application/json' \\\n  -d '{pretty}'"
    )
}

/// The ready cURL command to invoke a deployment, and for async the signing secret.
#[utoipa::path(get, path = "/v1/deployments/{key}/snippet", operation_id = "get_snippet", tag = "deployments",
    params(("key" = String, Path, description = "Deployment key"),
        ("variant" = Option<String>, Query, description = "Default `default`"),
        ("async" = Option<bool>, Query, description = "An async invoke with a callback"),
        ("callback_url" = Option<CallbackUrl>, Query,
            description = "The callback URL to show; blank for an example"),
        ("base_url" = Option<String>, Query, description = "The daemon's URL as callers see it"),
    ),
    responses(
        (status = 200, description = "The snippet", body = Snippet),
        (status = 400, description = "A malformed query string (e.g. `async` not a boolean, or given twice)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`Deployment not found.` or `Variant not found.`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid `callback_url`", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn snippet(
    state: web::Data<AppState>,
    _admin: Admin,
    req: actix_web::HttpRequest,
    key: web::Path<String>,
    query: web::Query<SnippetQuery>,
) -> Result<HttpResponse, ApiError> {
    let dep = state
        .deployments
        .get(&key)
        .ok_or_else(|| ApiError::NotFound("Deployment not found.".into()))?;
    let variant = query
        .variant
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "default".into());
    if dep.vars(&variant).is_none() {
        return Err(ApiError::NotFound("Variant not found.".into()));
    }
    // What the document declares: a boolean, and a callback URL checked whenever given.
    let async_mode = match query.async_mode.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Malformed query string: async must be true or false.".into(),
            ))
        }
    };
    let given_url = query
        .callback_url
        .as_deref()
        .map(|u| u.trim_matches(BLANK))
        .filter(|u| !u.is_empty());
    if given_url.is_some_and(|url| !is_valid_callback_url(url)) {
        return Err(ApiError::field(
            "callback_url",
            "callback_url must be a valid URL",
        ));
    }
    let callback_url = async_mode.then(|| {
        given_url
            .unwrap_or("https://your-app.example/webhooks/hivelet")
            .to_string()
    });
    let base_url = query.base_url.clone().unwrap_or_else(|| {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    });
    let curl = curl_snippet(
        base_url.trim_end_matches('/'),
        &dep,
        &variant,
        callback_url.as_deref(),
    );
    Ok(HttpResponse::Ok().json(Snippet {
        deployment: dep.key.clone(),
        variant,
        is_async: async_mode,
        curl,
        signing_secret: callback_url.as_ref().map(|_| dep.signing_secret.clone()),
        callback_url,
    }))
}
