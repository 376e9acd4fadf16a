//! The web page at `/`: the run logs, deployments (secrets, code snippets) and API keys, over
//! the same JSON API the CLI uses. Three static files compiled into the binary with
//! `include_str!`: no build step, no CDN, works offline. The page asks for an admin key once
//! per browser session (sessionStorage) and sends it as `Authorization: Bearer`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::api::resource;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts and styles only from this origin, API calls only to it, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Registers `GET /` and the page's assets under `/ui/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/", "GET, HEAD")
            .route(web::get().to(index))
            .route(web::head().to(index)),
    );
    cfg.service(resource("/ui/app.js", "GET").route(web::get().to(app_js)));
    cfg.service(resource("/ui/app.css", "GET").route(web::get().to(app_css)));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // Revalidate each time, so a new binary's page is never mixed with an old script.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

async fn index() -> HttpResponse {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    response
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
                assert!(!text.contains(needle), "{name} contains {needle:?}");
            }
        }
        assert!(INDEX_HTML.contains("/ui/app.js"));
        assert!(INDEX_HTML.contains("/ui/app.css"));
    }
}
