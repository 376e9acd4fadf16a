//! Route registration: [`endpoint`] builds a resource method by method and answers every
//! other method with 405 in the envelope (with `Allow`); each (method, path) is recorded so
//! the OpenAPI test can check that every served route is documented.
//!
//! Why not `utoipa-actix-web` (0.1.2 is the release for utoipa 5; 0.2 needs utoipa 6): it
//! documents what is registered through its `service()`, which takes services implementing
//! its `OpenApiFactory`: the `__path_*` types `#[utoipa::path]` generates, registered with
//! actix's route macros (`#[get("/v1/keys")]`), each handler a resource of its own. Our
//! methods of one path share one `Resource`, whose default service answers 405 with the
//! full `Allow` list; a plain `Resource` or `.route()` passes through its wrapper
//! undocumented. Using it would mean giving up that 405, or teaching [`Endpoint`] to carry
//! each handler's `__path_*` type and implement `OpenApiFactory` itself, with `UtoipaApp`
//! replacing `App` in `lib.rs`, for the same result. So `openapi.rs` keeps its `paths(...)`
//! list, and its unit test fails when a served route is missing from the document, or a
//! documented one is not served.

use std::collections::BTreeSet;
use std::sync::Mutex;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Resource, Responder};

use crate::error::ApiError;

/// Every (method, path) registered so far, with `*` as the method of a bare [`resource`].
/// The OpenAPI test registers the routes and checks that each one is documented, so a new
/// route cannot be forgotten.
static SERVED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

fn record(method: &str, path: &str) {
    SERVED
        .lock()
        .expect("served routes")
        .insert((method.to_string(), path.to_string()));
}

/// The routes registered in this process so far: (method or `*`, path).
pub fn served_routes() -> Vec<(String, String)> {
    SERVED
        .lock()
        .expect("served routes")
        .iter()
        .cloned()
        .collect()
}

/// A resource whose other methods answer 405 in the envelope, with the `Allow` header HTTP
/// asks for (`allow`: the methods it serves, e.g. `"GET, HEAD"`).
pub(crate) fn resource(path: &str, allow: &str) -> Resource {
    record("*", path);
    web::resource(path).default_service(method_not_allowed(allow))
}

fn method_not_allowed(allow: &str) -> actix_web::Route {
    let allow = allow.to_string();
    web::to(move || {
        let allow = allow.clone();
        async move {
            let mut response =
                actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
    })
}

/// A resource built method by method, each (method, path) recorded for the OpenAPI
/// check: `cfg.service(endpoint("/v1/keys").get(list).post(create))`.
pub(crate) struct Endpoint {
    path: &'static str,
    resource: Resource,
    methods: Vec<Method>,
}

pub(crate) fn endpoint(path: &'static str) -> Endpoint {
    record("*", path);
    Endpoint {
        path,
        // The 405 answer (with `Allow`) is added in `register`, once every method is known.
        resource: web::resource(path),
        methods: Vec::new(),
    }
}

impl Endpoint {
    pub fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        record(method.as_str(), self.path);
        self.methods.push(method.clone());
        self.resource = self.resource.route(web::method(method).to(handler));
        self
    }

    pub fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler)
    }

    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    pub fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::PUT, handler)
    }

    pub fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::DELETE, handler)
    }
}

impl HttpServiceFactory for Endpoint {
    fn register(self, config: &mut AppService) {
        let allow: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        self.resource
            .default_service(method_not_allowed(&allow.join(", ")))
            .register(config);
    }
}

/// Unknown routes answer 404 in the envelope.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route.".into()))
}
