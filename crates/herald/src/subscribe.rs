//! Opening an SSE stream, whatever transport carries it.
//!
//! Both transports (herald's own HTTP/1.1 stream path and the actix route
//! for streams requested on a reused connection) hand a [`SubscribeHead`]
//! to [`parse`], then the request to [`start`], so validation,
//! authorization and resume are decided in one place. Parsing is
//! synchronous and copies out what the rest needs, so a transport's parser
//! scratch space never lives across an await (authorization may wait for
//! the identity provider's keys or the application's subscribe hook).
//!
//! Setup order is what makes resume exact: read the heads of topics the
//! client has no position for, join the topics (live events start queuing),
//! then read every topic's history after the client's position (one
//! broker call for all of them). Live events
//! already covered by that history are dropped by the stream's positions.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use herald_broker::{BrokerError, Cursor, Position, Resume, SubscriberQueue, Topic};
use rand::Rng;
use tokio::time::Instant;

use actix_web::http::{
    header::{HeaderName, CONTENT_TYPE},
    StatusCode,
};

use crate::{
    auth::{self, hook::Forwarded, Checked, Credentials},
    cors,
    error::{ApiError, PROBLEM_JSON},
    metrics::route,
    positions::StreamPositions,
    state::AppState,
    stream::EventStream,
};

/// Response headers of every stream and every refusal, besides CORS.
const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// What a subscribe request carries, as raw values from the request head.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscribeHead<'a> {
    /// The query string, without `?`.
    pub query: &'a str,
    /// The `Last-Event-ID` header.
    pub last_event_id: Option<&'a [u8]>,
    /// The `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// The `Cookie` header.
    pub cookie: Option<&'a [u8]>,
    /// The `Origin` header.
    pub origin: Option<&'a [u8]>,
    /// The `X-Forwarded-For` header.
    pub forwarded_for: Option<&'a [u8]>,
    /// The client's address.
    pub peer: Option<std::net::IpAddr>,
}

impl<'a> SubscribeHead<'a> {
    /// The head of a request for `path_and_query` from `peer`, its header
    /// values looked up by (lowercase) name with `header`: how each door
    /// hands its own parsed request over.
    pub fn read(
        path_and_query: &'a str,
        peer: Option<std::net::IpAddr>,
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Self {
        Self {
            query: path_and_query
                .split_once('?')
                .map_or("", |(_, query)| query),
            last_event_id: header("last-event-id"),
            authorization: header("authorization"),
            cookie: header("cookie"),
            origin: header("origin"),
            forwarded_for: header("x-forwarded-for"),
            peer,
        }
    }
}

/// Where the client says it stopped: the `Last-Event-ID` header, else the
/// `last_event_id` (or polyfills' `lastEventId`) query parameter.
#[derive(Debug)]
enum ClientCursor {
    /// None sent: start live.
    Absent,
    /// Something herald never wrote: resync every topic.
    Unreadable,
    /// A cursor herald wrote.
    At(Cursor),
}

impl ClientCursor {
    fn read(header: Option<&[u8]>, query: Option<String>, polyfill: Option<String>) -> Self {
        let text = match header.map(std::str::from_utf8) {
            Some(Ok(text)) if !text.trim().is_empty() => text.trim().to_owned(),
            // Bytes that are not text cannot be a herald cursor.
            Some(Err(_)) => return ClientCursor::Unreadable,
            _ => match query.or(polyfill).filter(|t| !t.is_empty()) {
                Some(text) => text,
                None => return ClientCursor::Absent,
            },
        };
        match Cursor::decode(text.trim()) {
            Ok(cursor) => ClientCursor::At(cursor),
            Err(_) => ClientCursor::Unreadable,
        }
    }
}

/// A valid subscribe request, not yet authorized.
#[derive(Debug)]
pub struct SubscribeRequest {
    topics: Vec<Topic>,
    cursor: ClientCursor,
    credentials: Credentials,
}

/// A valid, authorized subscribe request.
#[derive(Debug)]
struct Admission {
    topics: Vec<Topic>,
    cursor: ClientCursor,
    expires_at: Option<Instant>,
}

/// The outcome of opening a stream.
pub enum Opened {
    /// Stream these bytes.
    Stream(EventStream),
    /// The node cannot take the stream now: answer `200` with this body and
    /// close the connection.
    Refused(Bytes),
}

/// A subscribe request as a door received it: validated (or refused) and
/// with the CORS headers every answer to it carries.
pub struct Received {
    cors: Vec<(&'static str, String)>,
    request: Result<SubscribeRequest, ApiError>,
}

impl Received {
    /// A request refused before its head could be read (malformed, too
    /// large); its answer carries no CORS headers.
    pub fn invalid(error: ApiError) -> Self {
        Self {
            cors: Vec::new(),
            request: Err(error),
        }
    }
}

/// What a door writes back for a subscribe request.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// Every header field but `Content-Length` and `Connection` (the
    /// connection always closes after a stream or a refusal).
    pub headers: Vec<(HeaderName, String)>,
    /// The body.
    pub body: AnswerBody,
}

/// The body of an [`Answer`].
pub enum AnswerBody {
    /// An open stream: write its frames until either side ends it.
    Stream(EventStream),
    /// A complete body (a problem, or the retry-later answer).
    Whole(Bytes),
}

/// Validates the request a door read and decides its CORS headers.
/// Synchronous, so a door's parser scratch space never lives across an
/// await.
pub fn receive(state: &AppState, head: &SubscribeHead<'_>) -> Received {
    Received {
        cors: cors::headers_for(&state.settings.cors_allowed_origins, head.origin),
        request: parse(state, head),
    }
}

/// Authorizes and opens the stream, and counts the request: the whole
/// answer a door writes.
pub async fn answer(state: &Arc<AppState>, received: Received) -> Answer {
    let Received { cors, request } = received;
    let outcome = match request {
        Ok(request) => start(state, request).await,
        Err(error) => Err(error),
    };
    let (status, mut headers, body) = match outcome {
        Ok(opened) => {
            let headers = STREAM_HEADERS
                .iter()
                .map(|(name, value)| (HeaderName::from_static(name), (*value).to_owned()))
                .collect();
            let body = match opened {
                Opened::Stream(stream) => AnswerBody::Stream(stream),
                Opened::Refused(body) => AnswerBody::Whole(body),
            };
            (StatusCode::OK, headers, body)
        }
        Err(error) => {
            let rendered = error.render();
            let mut headers = vec![(CONTENT_TYPE, PROBLEM_JSON.to_owned())];
            headers.extend(rendered.headers);
            let body = AnswerBody::Whole(Bytes::from(rendered.body));
            (rendered.status, headers, body)
        }
    };
    headers.extend(
        cors.into_iter()
            .map(|(name, value)| (HeaderName::from_static(name), value)),
    );
    state.metrics.count_request(route::EVENTS, status.as_str());
    Answer {
        status,
        headers,
        body,
    }
}

/// Validates a subscribe request and copies out what [`start`] needs.
///
/// # Errors
///
/// `400` for bad topics or too many of them.
pub fn parse(state: &AppState, head: &SubscribeHead<'_>) -> Result<SubscribeRequest, ApiError> {
    let max_topics = state.settings.limits.max_topics_per_connection;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(head.query)
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
    let cursor = ClientCursor::read(head.last_event_id, query_cursor, polyfill_cursor);

    let owned = |value: Option<&[u8]>| value.map(<[u8]>::to_vec);
    let hook = state.auth.has_hook();
    Ok(SubscribeRequest {
        topics,
        cursor,
        credentials: Credentials {
            query_token: access_token,
            forwarded: Forwarded {
                cookie: owned(head.cookie),
                authorization: owned(head.authorization),
                // Only a hook reads these: no copies per stream otherwise.
                origin: owned(head.origin.filter(|_| hook)),
                forwarded_for: owned(head.forwarded_for.filter(|_| hook)),
                peer: head.peer.filter(|_| hook),
            },
        },
    })
}

/// Authorizes the request and opens its stream.
///
/// # Errors
///
/// `401`/`403` for auth. Anything that stops a valid, authorized stream
/// from opening now (drain, capacity, the broker, a failing subscribe hook,
/// keys never fetched) is [`Opened::Refused`], so the client retries.
pub async fn start(state: &Arc<AppState>, request: SubscribeRequest) -> Result<Opened, ApiError> {
    let SubscribeRequest {
        topics,
        cursor,
        credentials,
    } = request;
    let auth = &state.auth;
    let checked = match auth.check_subscriber(&credentials, &topics).await {
        Ok(checked) => checked,
        Err(refusal) => return refused(state, refusal),
    };
    let grant = match checked {
        Checked::Granted(grant) => grant,
        Checked::AskHook {
            topics: asked,
            token_expires_at,
        } => {
            // The hook is not asked about a request refused anyway.
            if let Some(reason) = unable_to_open(state) {
                return Ok(Opened::Refused(refuse(state, Some(reason))));
            }
            // Boxed: the HTTP call's future is large, and only requests
            // that reach the hook should pay for it.
            match Box::pin(auth.ask_hook(&credentials, &asked, token_expires_at)).await {
                Ok(grant) => grant,
                Err(refusal) => return refused(state, refusal),
            }
        }
    };
    drop(credentials);
    let expires_at = grant.expires_at.map(|at| {
        Instant::now()
            + at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
    });
    Ok(open(
        state,
        Admission {
            topics,
            cursor,
            expires_at,
        },
    )
    .await)
}

fn refused(state: &AppState, refusal: auth::Refusal) -> Result<Opened, ApiError> {
    match refusal {
        auth::Refusal::Denied(error) => Err(error),
        auth::Refusal::Retry => Ok(Opened::Refused(refuse(state, None))),
    }
}

/// Why a stream could not open right now, if it could not.
fn unable_to_open(state: &AppState) -> Option<&'static str> {
    if state.lifecycle.is_draining() {
        Some("drain")
    } else if state.open_streams.is_full() {
        Some("capacity")
    } else {
        None
    }
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

enum SetupError {
    Capacity,
    Broker(BrokerError),
}

impl From<BrokerError> for SetupError {
    fn from(error: BrokerError) -> Self {
        SetupError::Broker(error)
    }
}

/// Opens the stream, or refuses it when the node is draining, full, or
/// cannot reach its broker.
async fn open(state: &Arc<AppState>, admission: Admission) -> Opened {
    if state.lifecycle.is_draining() {
        return Opened::Refused(refuse(state, Some("drain")));
    }
    match setup(state, admission).await {
        Ok(stream) => Opened::Stream(stream),
        Err(SetupError::Capacity) => Opened::Refused(refuse(state, Some("capacity"))),
        Err(SetupError::Broker(error)) => {
            tracing::warn!(error = %herald_broker::error_chain(&error), "cannot open stream");
            Opened::Refused(refuse(state, None))
        }
    }
}

async fn setup(state: &Arc<AppState>, admission: Admission) -> Result<EventStream, SetupError> {
    let Admission {
        topics,
        cursor,
        expires_at,
    } = admission;
    let queue = Arc::new(SubscriberQueue::new(
        state.settings.limits.client_buffer_events,
    ));
    let slot = state
        .open_streams
        .admit(&queue, expires_at)
        .ok_or(SetupError::Capacity)?;

    let starts: Vec<Start> = topics
        .iter()
        .map(|topic| match &cursor {
            ClientCursor::Absent => Start::Live,
            ClientCursor::Unreadable => Start::Resync,
            ClientCursor::At(cursor) => cursor.position(topic).map_or(Start::Live, Start::From),
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
    // Per topic, in request order: resync it (else replay its history).
    let mut resyncs = Vec::with_capacity(topics.len());
    let mut resume_from = Vec::with_capacity(topics.len());
    for (topic, start) in topics.iter().zip(starts) {
        let from = match start {
            Start::From(position) => position,
            Start::Live | Start::Resync => {
                heads.next().expect("one head per topic without position")
            }
        };
        positions.set(topic, from);
        resyncs.push(matches!(start, Start::Resync));
        if !matches!(start, Start::Resync) {
            resume_from.push((topic.clone(), from));
        }
    }
    let mut replay = Vec::new();
    let resumed = state.broker.resume(&resume_from).await?;
    for ((topic, _), resume) in resume_from.iter().zip(resumed) {
        match resume {
            Resume::Replay(events) => replay.extend(events),
            Resume::Resync { head } => {
                positions.set(topic, head);
                let index = topics
                    .iter()
                    .position(|t| t == topic)
                    .expect("a requested topic");
                resyncs[index] = true;
            }
        }
    }
    let resync: Vec<Topic> = topics
        .iter()
        .zip(&resyncs)
        .filter(|(_, resync)| **resync)
        .map(|(topic, _)| topic.clone())
        .collect();
    if !matches!(cursor, ClientCursor::Absent) {
        let metrics = &state.metrics;
        if resync.is_empty() {
            &metrics.resumes_replayed
        } else {
            &metrics.resumes_resync
        }
        .inc();
    }

    let retry = state.settings.server.retry.as_millis() as u64;
    let mut stream = EventStream::new(Arc::clone(state), queue, positions, subscription, slot);
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

/// The body for a stream this node cannot take: a `retry:` jittered between
/// 1× and 3× the configured one, so refused clients do not come back
/// together. Callers answer `200` (browsers give up for good on any other
/// status) and close the connection, so the next attempt may reach another
/// node. `reason` is counted as a disconnect when given.
fn refuse(state: &AppState, reason: Option<&'static str>) -> Bytes {
    if let Some(reason) = reason {
        state.metrics.disconnected(reason);
    }
    let base = state.settings.server.retry;
    let retry = rand::rng().random_range(base..=base * 3);
    Bytes::from(format!(
        "retry: {}\n: node unavailable, retry later\n\n",
        retry.as_millis()
    ))
}
