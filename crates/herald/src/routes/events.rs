//! `GET /v1/events`: open an SSE stream on one or more topics.
//!
//! Setup order is what makes resume exact: read the heads of topics the
//! client has no position for, join the topics (live events start queuing),
//! then read each topic's history after the client's position. Live events
//! already covered by that history are dropped by the stream's positions.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use actix_web::{
    http::header::{self, HeaderValue},
    web, HttpRequest, HttpResponse,
};
use herald_broker::{BrokerError, Cursor, Position, Resume, SubscriberQueue, Topic};
use rand::Rng;

use crate::{
    error::ApiError, positions::StreamPositions, routes::method_not_allowed, state::AppState,
    stream::EventStream,
};

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/events")
            .route(web::get().to(subscribe))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

/// A parsed and validated subscribe request.
#[derive(Debug)]
struct SubscribeRequest {
    topics: Vec<Topic>,
    cursor: Option<Result<Cursor, ()>>,
    access_token: Option<String>,
}

/// Where one topic of a new stream starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The client's position.
    From(Position),
    /// No position: start at the current head.
    Live,
    /// An unreadable cursor: resync at the current head.
    Resync,
}

async fn subscribe(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let request = parse(&req, state.settings.limits.max_topics_per_connection)?;
    let grant =
        state
            .auth
            .authorize_subscriber(&req, request.access_token.as_deref(), &request.topics)?;
    if state.lifecycle.is_draining() {
        return Ok(refuse(&state, "drain"));
    }
    let expires_at = grant.expires_at.map(|at| {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left
    });
    let state = state.into_inner();
    match open(&state, request, expires_at).await {
        Ok(stream) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/event-stream"))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            // A stream closed by herald (drain, slow consumer) must close its
            // TCP connection too, so the client reconnects, ideally elsewhere.
            .force_close()
            .streaming(stream)),
        Err(Refusal::Capacity) => Ok(refuse(&state, "capacity")),
        Err(Refusal::Broker(error)) => {
            tracing::warn!(error = %crate::error::error_chain(&error), "cannot open stream");
            Ok(refuse(&state, "broker"))
        }
    }
}

fn parse(req: &HttpRequest, max_topics: usize) -> Result<SubscribeRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| ApiError::BadRequest("the query string is not valid URL encoding".into()))?;
    let mut topics = Vec::new();
    let mut seen = HashSet::new();
    let mut query_cursor = None;
    let mut polyfill_cursor = None;
    let mut access_token = None;
    for (key, value) in pairs {
        match key.as_str() {
            "topic" => {
                let topic = Topic::new(&value)
                    .map_err(|e| ApiError::BadRequest(format!("topic {value:?}: {e}")))?;
                if seen.insert(topic.clone()) {
                    topics.push(topic);
                }
            }
            "last_event_id" => query_cursor = Some(value),
            "lastEventId" => polyfill_cursor = Some(value),
            "access_token" => access_token = Some(value),
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one topic parameter is required".into(),
        ));
    }
    if topics.len() > max_topics {
        return Err(ApiError::BadRequest(format!(
            "{} topics requested; at most {max_topics} are allowed per connection",
            topics.len()
        )));
    }
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().map(str::to_owned));
    let cursor_text = match header {
        Some(Ok(text)) if !text.trim().is_empty() => Some(Ok(text)),
        // Bytes that are not visible ASCII cannot be a herald cursor.
        Some(Err(_)) => Some(Err(())),
        _ => query_cursor
            .or(polyfill_cursor)
            .filter(|t| !t.is_empty())
            .map(Ok),
    };
    let cursor =
        cursor_text.map(|text| text.and_then(|t| Cursor::decode(t.trim()).map_err(|_| ())));
    Ok(SubscribeRequest {
        topics,
        cursor,
        access_token,
    })
}

enum Refusal {
    Capacity,
    Broker(BrokerError),
}

impl From<BrokerError> for Refusal {
    fn from(error: BrokerError) -> Self {
        Refusal::Broker(error)
    }
}

async fn open(
    state: &Arc<AppState>,
    request: SubscribeRequest,
    expires_at: Option<tokio::time::Instant>,
) -> Result<EventStream, Refusal> {
    let SubscribeRequest { topics, cursor, .. } = request;
    let queue = Arc::new(SubscriberQueue::new(
        state.settings.limits.client_buffer_events,
    ));
    let connection = state
        .connections
        .admit(&queue, expires_at)
        .ok_or(Refusal::Capacity)?;

    let starts: Vec<Start> = topics
        .iter()
        .map(|topic| match &cursor {
            None => Start::Live,
            Some(Err(())) => Start::Resync,
            Some(Ok(cursor)) => cursor.position(topic).map_or(Start::Live, Start::From),
        })
        .collect();
    let without_position: Vec<Topic> = topics
        .iter()
        .zip(&starts)
        .filter(|(_, start)| !matches!(start, Start::From(_)))
        .map(|(topic, _)| topic.clone())
        .collect();
    let mut heads = state.broker.heads(&without_position).await?.into_iter();

    let subscription = state.broker.subscribe(&topics, &queue).await?;

    let mut positions = StreamPositions::new(&topics);
    let mut resync = Vec::new();
    let mut replay = Vec::new();
    for (topic, start) in topics.iter().zip(starts) {
        let from = match start {
            Start::From(position) => position,
            Start::Live | Start::Resync => {
                heads.next().expect("one head per topic without position")
            }
        };
        positions.set(topic, from);
        if matches!(start, Start::Resync) {
            resync.push(topic.clone());
            continue;
        }
        match state.broker.resume(topic, from).await? {
            Resume::Replay(events) => replay.extend(events),
            Resume::Resync { head } => {
                positions.set(topic, head);
                resync.push(topic.clone());
            }
        }
    }
    if cursor.is_some() {
        let metrics = &state.metrics;
        if resync.is_empty() {
            &metrics.resumes_replayed
        } else {
            &metrics.resumes_resync
        }
        .inc();
    }

    let retry = state.settings.server.retry.as_millis() as u64;
    let mut stream = EventStream::new(
        Arc::clone(state),
        queue,
        positions,
        subscription,
        connection,
    );
    stream.push_raw(herald_sse::retry(retry));
    stream.push_raw(herald_sse::comment("herald stream open"));
    if !resync.is_empty() {
        stream.push_resync(&resync);
    }
    let mut replayed = 0;
    for event in &replay {
        replayed += u64::from(stream.push_event(event));
    }
    state.metrics.events_delivered.inc_by(replayed);
    Ok(stream)
}

/// The answer for a stream this node cannot take: `200` (browsers give up
/// for good on any other status), a `retry:` jittered between 1× and 3× the
/// configured one so refused clients do not come back together, and the
/// connection closed so the next attempt may reach another node.
fn refuse(state: &AppState, reason: &'static str) -> HttpResponse {
    if reason != "broker" {
        state.metrics.disconnected(reason);
    }
    let base = state.settings.server.retry;
    let retry = rand::rng().random_range(base..=base * 3);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header(("x-accel-buffering", "no"))
        .force_close()
        .body(refusal_body(retry))
}

fn refusal_body(retry: Duration) -> String {
    format!(
        "retry: {}\n: node unavailable, retry later\n\n",
        retry.as_millis()
    )
}
