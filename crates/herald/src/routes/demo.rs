//! `GET /`: the demo page, a self-contained `EventSource` client that shows
//! events as they arrive, reconnects, and can publish.

use actix_web::{http::header, web, HttpResponse};

use crate::routes::method_not_allowed;

const PAGE: &str = include_str!("../../assets/demo.html");

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(page))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE)
}
