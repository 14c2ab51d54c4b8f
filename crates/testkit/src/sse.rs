//! An SSE client for tests: one real HTTP connection per stream, read
//! incrementally with the WHATWG-conformant [`herald_sse::Parser`].
//!
//! Every read takes a timeout, so a missing event fails the test with a
//! message instead of hanging it. Everything received is also kept as raw
//! bytes, for tests about the exact wire format.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use futures_util::{StreamExt, TryStreamExt};
use herald_sse::{Event, Item, Parser};
use reqwest::{header::HeaderMap, Client, StatusCode, Url};
use tokio::time::Instant;

use crate::{
    raw::{self, BodyStream},
    TIMEOUT,
};

/// A subscribe request being put together: topics, resume points, headers.
#[derive(Debug, Clone)]
pub struct Subscribe {
    base: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Subscribe {
    /// A request to `GET {base}/v1/events` with no topics yet.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a `topic` query parameter.
    pub fn topic(self, topic: &str) -> Self {
        self.query("topic", topic)
    }

    /// Adds one `topic` query parameter per topic, in order.
    pub fn topics(self, topics: &[&str]) -> Self {
        topics.iter().fold(self, |request, t| request.topic(t))
    }

    /// Sends `id` in the `Last-Event-ID` header, as a reconnecting browser
    /// does.
    pub fn last_event_id(self, id: &str) -> Self {
        self.header("Last-Event-ID", id)
    }

    /// Adds a query parameter (such as `last_event_id` or `lastEventId`).
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The full request URL.
    ///
    /// # Panics
    ///
    /// When the base URL is not a URL.
    pub fn url(&self) -> Url {
        let mut url = Url::parse(&format!("{}/v1/events", self.base))
            .unwrap_or_else(|e| panic!("bad base URL {:?}: {e}", self.base));
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        url
    }

    /// Sends the request and returns the stream once the response headers
    /// have arrived, whatever the status.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached or sends no headers within
    /// [`TIMEOUT`].
    pub async fn send(self) -> SseStream {
        // One client (and so one new connection) per stream: streams must
        // not share or reuse connections, or closing one would affect
        // another.
        let client = Client::builder()
            .connect_timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds");
        self.send_on(&client).await
    }

    /// Sends the request with `client`, which may reuse one of its idle
    /// keep-alive connections (a stream requested on a connection that
    /// already served other requests).
    ///
    /// # Panics
    ///
    /// As [`Subscribe::send`].
    pub async fn send_on(self, client: &Client) -> SseStream {
        self.try_send_on(client)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Subscribe::send`], but reports a node that cannot be reached
    /// (or sends no headers within [`TIMEOUT`]) instead of panicking, for
    /// clients that keep going through faults.
    ///
    /// # Errors
    ///
    /// What went wrong, in words.
    pub async fn try_send(self) -> Result<SseStream, String> {
        let client = Client::builder()
            .connect_timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds");
        self.try_send_on(&client).await
    }

    async fn try_send_on(self, client: &Client) -> Result<SseStream, String> {
        let url = self.url();
        let mut request = client.get(url.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .map_err(|_| format!("no response headers from {url} within {TIMEOUT:?}"))?
            .map_err(|e| format!("subscribe to {url} failed: {e}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes_stream().map_err(|e| e.to_string());
        Ok(SseStream::new(
            url.to_string(),
            status,
            headers,
            Box::pin(body),
        ))
    }
}

/// What [`SseStream::try_next_item`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// An event, comment or `retry:`.
    Item(Item),
    /// The response ended (or the connection failed) and nothing is left.
    Closed,
    /// Nothing arrived in time; the stream is still open.
    TimedOut,
}

/// How the response ended.
#[derive(Debug, Clone)]
enum End {
    Eof,
    Error(String),
}

/// An open SSE response.
pub struct SseStream {
    url: String,
    status: StatusCode,
    headers: HeaderMap,
    body: BodyStream,
    parser: Parser,
    ready: VecDeque<Item>,
    raw: Vec<u8>,
    // The id of the last event handed to the caller. Not the parser's `id:`
    // buffer: a browser sends the id of its last dispatched event, so an
    // event cut off by a closed connection, or parsed but not yet read by
    // the test, does not count as received.
    last_id: String,
    end: Option<End>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("url", &self.url)
            .field("status", &self.status)
            .field("received", &self.raw.len())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    fn new(url: String, status: StatusCode, headers: HeaderMap, body: BodyStream) -> Self {
        Self {
            url,
            status,
            headers,
            body,
            parser: Parser::new(),
            ready: VecDeque::new(),
            raw: Vec::new(),
            last_id: String::new(),
            end: None,
        }
    }

    /// Sends a request as exact bytes over a new TCP connection to `addr`,
    /// each of `parts` in its own packet, and reads the response as a
    /// stream. For requests reqwest would not send as they are: header
    /// spelling, heads split mid-line, HTTP/1.0.
    ///
    /// # Panics
    ///
    /// When the connection fails or no response head arrives within
    /// [`TIMEOUT`].
    pub async fn send_raw(addr: SocketAddr, parts: &[&[u8]]) -> Self {
        let (status, headers, body) = raw::send(addr, parts).await;
        Self::new(format!("raw request to {addr}"), status, headers, body)
    }

    /// Opens a stream on `topics` of the node at `base`.
    ///
    /// # Panics
    ///
    /// As [`Subscribe::send`].
    pub async fn connect(base: &str, topics: &[&str]) -> Self {
        Subscribe::new(base).topics(topics).send().await
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A response header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The id of the last event this stream has returned, as a
    /// reconnecting `EventSource` would send it. Events parsed but not yet
    /// read do not count, so reconnecting with it after a drop loses
    /// nothing.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// Every byte of the body received so far.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The error that ended the response, if it ended with one rather than
    /// cleanly.
    pub fn close_error(&self) -> Option<&str> {
        match &self.end {
            Some(End::Error(error)) => Some(error),
            _ => None,
        }
    }

    /// The next event, comment or `retry:`, waiting at most `timeout`.
    pub async fn try_next_item(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.ready.pop_front() {
                if let Item::Event(event) = &item {
                    self.last_id.clone_from(&event.id);
                }
                return Next::Item(item);
            }
            if self.end.is_some() {
                return Next::Closed;
            }
            // Cancel-safe: a chunk is either taken whole or left in the body.
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None) => self.end = Some(End::Eof),
                Ok(Some(Err(error))) => self.end = Some(End::Error(error)),
                Ok(Some(Ok(chunk))) => {
                    self.raw.extend_from_slice(&chunk);
                    let mut items = Vec::new();
                    self.parser.feed(&chunk, &mut items);
                    self.ready.extend(items);
                }
            }
        }
    }

    /// The next event, comment or `retry:`.
    ///
    /// # Panics
    ///
    /// When the stream ends or nothing arrives within `timeout`.
    pub async fn next_item(&mut self, timeout: Duration) -> Item {
        match self.try_next_item(timeout).await {
            Next::Item(item) => item,
            other => self.fail(&format!(
                "expected an item, got {other:?} after {timeout:?}"
            )),
        }
    }

    /// The next event, skipping comments (heartbeats) and `retry:`.
    ///
    /// # Panics
    ///
    /// When the stream ends or no event arrives within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_next_item(remaining(deadline)).await {
                Next::Item(Item::Event(event)) => return event,
                Next::Item(_) => {}
                other => self.fail(&format!(
                    "expected an event, got {other:?} after {timeout:?}"
                )),
            }
        }
    }

    /// [`SseStream::next_event`] with the default [`TIMEOUT`].
    ///
    /// # Panics
    ///
    /// As [`SseStream::next_event`].
    pub async fn event(&mut self) -> Event {
        self.next_event(TIMEOUT).await
    }

    /// The next `n` events, all within `timeout`.
    ///
    /// # Panics
    ///
    /// When the stream ends or they do not all arrive in time.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            events.push(self.next_event(remaining(deadline)).await);
        }
        events
    }

    /// Events up to and including the first one `last` accepts, all within
    /// `timeout`. Publishing a marker event and reading up to it proves that
    /// nothing else arrived before it, without waiting for silence.
    ///
    /// # Panics
    ///
    /// When the stream ends or no such event arrives in time.
    pub async fn events_until(
        &mut self,
        timeout: Duration,
        mut last: impl FnMut(&Event) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let event = self.next_event(remaining(deadline)).await;
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Reads until the response ends and returns what arrived before the
    /// end.
    ///
    /// # Panics
    ///
    /// When the stream is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Vec<Item> {
        let deadline = Instant::now() + timeout;
        let mut items = Vec::new();
        loop {
            match self.try_next_item(remaining(deadline)).await {
                Next::Item(item) => items.push(item),
                Next::Closed => return items,
                Next::TimedOut => self.fail(&format!(
                    "expected the stream to close within {timeout:?}; it is still open \
                     after {items:?}"
                )),
            }
        }
    }

    fn fail(&self, what: &str) -> ! {
        let tail_start = self.raw.len().saturating_sub(600);
        panic!(
            "stream {}: {what}; last bytes received: {:?}",
            self.url,
            String::from_utf8_lossy(&self.raw[tail_start..])
        );
    }
}

/// Time left until `deadline` (zero once it has passed).
fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
