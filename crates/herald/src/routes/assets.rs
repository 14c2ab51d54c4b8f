//! Documents compiled into the binary: the demo page at `/` (a
//! self-contained `EventSource` client that shows events as they arrive,
//! reconnects, and can publish) and the API description at `/openapi.yaml`
//! (the repository's `openapi.yaml`).

use actix_web::{http::header, web, HttpResponse};

use crate::routes::method_not_allowed;

const DEMO_PAGE: &str = include_str!("../../assets/demo.html");
const OPENAPI: &str = include_str!("../../../../openapi.yaml");

/// Registers `/openapi.yaml`, and `/` when `demo` is on.
pub fn configure(cfg: &mut web::ServiceConfig, demo: bool) {
    document(cfg, "/openapi.yaml", "application/yaml", OPENAPI);
    if demo {
        document(cfg, "/", "text/html; charset=utf-8", DEMO_PAGE);
    }
}

fn document(
    cfg: &mut web::ServiceConfig,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
) {
    cfg.service(
        web::resource(path)
            .route(web::get().to(move || async move {
                HttpResponse::Ok()
                    .content_type(content_type)
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .body(body)
            }))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}
