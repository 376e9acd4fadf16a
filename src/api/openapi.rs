//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, generated from the
//! handlers' `#[utoipa::path]` annotations, the response views they serialize
//! ([`super::views`]) and the request shapes ([`super::bodies`]). A unit test below registers
//! the router and fails if a served route is missing here (see `routing.rs` for why the list
//! is kept by hand).

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routing::endpoint;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/openapi.json").get(document));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hivelet",
        description = "Run workflow deployments locally and answer like Fetch Hive's workflow API: \
                       synchronously, or asynchronously with the result delivered later as a signed \
                       webhook. Every error uses one envelope: `{\"error\", \"message\", \"error_code\"}` \
                       plus `field` where one field is at fault.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::invoke::invoke,
        super::triggers::trigger,
        super::runs::list,
        super::requests::run_detail,
        super::stream::stream,
        super::runs::attempts,
        super::runs::redeliver,
        super::runs::cancel,
        super::rerun::rerun,
        super::runs::purge,
        super::stats::stats,
        super::approvals::respond,
        super::requests::public_request,
        super::requests::legacy_run,
        super::deployments::list,
        super::deployments::show,
        super::deployments::deploy,
        super::deployments::delete,
        super::deployments::snippet,
        super::deployments::rotate_secret,
        super::keys::list,
        super::keys::create,
        super::keys::rotate,
        super::keys::revoke,
        super::schedules::list,
        super::schedules::create,
        super::schedules::show,
        super::schedules::edit,
        super::schedules::delete,
        super::schedules::trigger,
        super::health::healthz,
        super::metrics::scrape,
        document,
        ui_page,
        ui_script,
        ui_style,
    ),
    // Schemas only parameters use: utoipa registers those of bodies by itself.
    components(schemas(
        crate::error::ErrorEnvelope,
        super::bodies::RunStatusFilter,
        super::bodies::DeliveryFilter,
        super::bodies::DeliveryStateParam,
        super::bodies::StatsWindow,
        super::bodies::SourceFilter,
        super::params::Timestamp,
        super::params::CallbackUrl,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "invoke", description = "Start runs (Fetch Hive compatible)"),
        (name = "runs", description = "The run log, delivery attempts, cancel, redeliver, approvals, retention"),
        (name = "deployments", description = "Workflow deployments, their versions and signing secrets"),
        (name = "keys", description = "API keys (admin)"),
        (name = "schedules", description = "Runs started on a timetable: cron or every, in an IANA zone (admin)"),
        (name = "operations", description = "Health, metrics and this document (no auth)"),
        (name = "ui", description = "The web page for the run logs (it asks for an admin key itself)"),
    ),
)]
pub struct ApiDoc;

/// `Authorization: Bearer hvk_…` (a bare key without `Bearer ` is accepted too).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key (`hvk_…`): role `invoke` for invoke routes and the runs it started, \
             `admin` for everything. The first start saves one to `<data dir>/admin.key`."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        doc.to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

// The web page's routes live in `crate::ui`; these stubs only describe them.

/// The web page: runs, deployments and keys (also answers HEAD).
#[utoipa::path(get, path = "/", operation_id = "ui_page", tag = "ui", security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn ui_page() {}

#[utoipa::path(get, path = "/ui/app.js", operation_id = "ui_script", tag = "ui", security(()),
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String)))]
#[allow(dead_code)]
fn ui_script() {}

#[utoipa::path(get, path = "/ui/app.css", operation_id = "ui_style", tag = "ui", security(()),
    responses((status = 200, description = "The page's styles", content_type = "text/css", body = String)))]
#[allow(dead_code)]
fn ui_style() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// (method, path) of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: Value = serde_json::from_str(document_json()).unwrap();
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        // Registering the routes records each (method, path); see `api::endpoint`.
        let _app = actix_web::App::new().configure(crate::routes);
        let served = super::super::routing::served_routes();
        let documented = documented();
        let documented_paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
        for (method, path) in &served {
            if method == "*" {
                assert!(
                    documented_paths.contains(path),
                    "{path} is served but not in /openapi.json: annotate its handler with \
                     #[utoipa::path] and list it in ApiDoc"
                );
            } else {
                assert!(
                    documented.contains(&(method.clone(), path.clone())),
                    "{method} {path} is served but not in /openapi.json: annotate its handler \
                     with #[utoipa::path] and list it in ApiDoc"
                );
            }
        }
        for op in &documented {
            let any_method = ("*".to_string(), op.1.clone());
            assert!(
                served.contains(op) || served.contains(&any_method),
                "{} {} is documented but not served",
                op.0,
                op.1
            );
        }
    }

    #[test]
    fn every_operation_documents_its_errors_in_the_envelope() {
        let doc: Value = serde_json::from_str(document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut operation_ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(
                    operation_ids.insert(id.clone()),
                    "{method} {path}: operationId {id:?} is missing or not unique"
                );
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} documents no success"
                );
                let public = op["security"] == serde_json::json!([{}]);
                if !public {
                    let unauthorized = &responses["401"]["content"]["application/json"]["schema"];
                    assert_eq!(
                        unauthorized["$ref"], "#/components/schemas/ErrorEnvelope",
                        "{method} {path}: 401 must be the envelope"
                    );
                }
            }
        }
    }
}
