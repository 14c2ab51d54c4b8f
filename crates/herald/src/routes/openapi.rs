//! `GET /openapi.yaml`: the OpenAPI description of this API, the same file
//! as `openapi.yaml` at the repository root.

use actix_web::{web, HttpResponse};

use crate::routes::method_not_allowed;

const SPEC: &str = include_str!("../../../../openapi.yaml");

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.yaml")
            .route(web::get().to(spec))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(SPEC)
}
