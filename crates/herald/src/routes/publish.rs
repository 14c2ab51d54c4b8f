//! `POST /v1/publish` and `POST /v1/publish/batch`: the ingest API.
//!
//! `202` means stored: the broker has the event in history and on its way to
//! every node. Fan-out to sockets happens afterwards and never delays the
//! answer.

use std::time::{Duration, Instant};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;
use herald_broker::{cursor, Message, Receipt};
use serde_json::{json, Map, Value};

use crate::{
    auth::Auth, config::Limits, error::ApiError, ingest, routes::method_not_allowed,
    state::AppState,
};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/publish")
            .route(web::post().to(publish))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/publish/batch")
            .route(web::post().to(publish_batch))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let receipts = ingest_request(&req, payload, &state, |body, limits| {
        ingest::parse_publish(body, limits).map(|message| vec![message])
    })
    .await?;
    Ok(accepted(receipt_json(&receipts[0])))
}

async fn publish_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let receipts = ingest_request(&req, payload, &state, ingest::parse_batch).await?;
    let results: Vec<Value> = receipts.iter().map(receipt_json).collect();
    Ok(accepted(json!({ "results": results })))
}

/// The steps of every publish: authenticate before reading the body, parse
/// and validate all of it, check the grant covers every topic, then store.
async fn ingest_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    parse: impl FnOnce(&[u8], &Limits) -> Result<Vec<Message>, ApiError>,
) -> Result<Vec<Receipt>, ApiError> {
    let started = Instant::now();
    let grant = state.auth.authenticate_publisher(req).await?;
    let body = read_body(req, payload, state.settings.limits.max_request_bytes).await?;
    let messages = parse(&body, &state.settings.limits)?;
    Auth::authorize_publish(&grant, messages.iter().flat_map(|m| m.target.topics()))?;
    let events: usize = messages.iter().map(|m| m.target.topics().len()).sum();
    let receipts = state.broker.publish(messages).await?;
    state
        .metrics
        .publish_duration
        .observe(started.elapsed().as_secs_f64());
    state.metrics.events_published.inc_by(events as u64);
    Ok(receipts)
}

fn accepted(body: Value) -> HttpResponse {
    HttpResponse::Accepted().json(body)
}

fn receipt_json(receipt: &Receipt) -> Value {
    match receipt {
        Receipt::One(topic, position) => json!({ "id": cursor::encode_one(topic, *position) }),
        Receipt::Many(positions) => {
            let ids: Map<String, Value> = positions
                .iter()
                .map(|(topic, position)| {
                    (
                        topic.to_string(),
                        Value::String(cursor::encode_one(topic, *position)),
                    )
                })
                .collect();
            json!({ "ids": ids })
        }
    }
}

/// How long a publisher may pause while sending its body, and how long the
/// whole body may take: a stalled upload must not hold a connection and a
/// buffer forever.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the whole body, refusing it with `413` as soon as it is known to
/// exceed `limit` (from `Content-Length`, or while reading), and with `408`
/// when the client stops sending.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let too_large = || {
        ApiError::TooLarge(format!(
            "the request body is over the limit of {limit} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + BODY_TOTAL_TIMEOUT;
    let stalled = || ApiError::Timeout("the request body stopped arriving".into());
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    loop {
        let wait =
            BODY_IDLE_TIMEOUT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let Some(chunk) = tokio::time::timeout(wait, payload.next())
            .await
            .map_err(|_| stalled())?
        else {
            return Ok(body);
        };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}
