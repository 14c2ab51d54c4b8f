//! `/healthz`, `/readyz` and `/metrics`: what orchestrators and Prometheus
//! poll.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{error::ApiError, routes::method_not_allowed, state::AppState};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let get_only = |path| web::resource(path).default_service(web::to(method_not_allowed("GET")));
    cfg.service(get_only("/healthz").route(web::get().to(healthz)))
        .service(get_only("/readyz").route(web::get().to(readyz)))
        .service(get_only("/metrics").route(web::get().to(metrics)));
}

/// Liveness: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the broker is reachable and the node is not draining.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::NotReady("the node is draining"));
    }
    if !state.broker.is_up() {
        return Err(ApiError::NotReady("the broker is unreachable"));
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
