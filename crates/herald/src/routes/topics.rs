//! `GET /v1/topics/{topic}`: subscribers and history of one topic.

use actix_web::{web, HttpRequest, HttpResponse};
use herald_broker::{cursor, Position, Topic};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::{error::ApiError, routes::method_not_allowed, state::AppState};

/// Registers the route. The topic is the rest of the path, so both `%2F`
/// and a plain `/` inside a topic name work.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/topics/{topic:.+}")
            .route(web::get().to(topic_info))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn topic_info(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = req
        .uri()
        .path()
        .strip_prefix("/v1/topics/")
        .unwrap_or_default();
    let name = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("the topic is not valid UTF-8".into()))?;
    let topic =
        Topic::new(&name).map_err(|e| ApiError::BadRequest(format!("topic {name:?}: {e}")))?;
    let info = state.broker.topic_info(&topic).await?;
    let encode = |p: Option<Position>| p.map(|p| cursor::encode_one(&topic, p));
    Ok(HttpResponse::Ok().json(json!({
        "topic": topic.as_str(),
        "subscribers": info.subscribers,
        "history": {
            "length": info.length,
            "first": encode(info.first),
            "last": encode(info.last),
        },
    })))
}
