//! A client that reconnects the way a browser's `EventSource` does, for
//! tests where streams are cut (a node crashes or drains behind a load
//! balancer) and clients must carry on without losing an event.
//!
//! Like `EventSource` it waits the last `retry:` it was given, reconnects
//! with the id of the last event it received as `Last-Event-ID`, and treats
//! any answer but `200 text/event-stream` as fatal: a browser gives up for
//! good on those, so for herald (docs/protocol.md §1) they are a failure.

use std::time::Duration;

use herald_sse::{Event, Item};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::{Next, SseStream, Subscribe};

/// The `retry:` assumed until a stream sends one (browsers start with a
/// few seconds; herald always sends one first).
const DEFAULT_RETRY: Duration = Duration::from_secs(2);

/// A stream that reconnects on its own, keeping every event it received.
#[derive(Debug)]
pub struct ReconnectingClient {
    request: Subscribe,
    stream: SseStream,
    retry: Duration,
    last_id: String,
    received: Vec<Event>,
    reconnects: usize,
}

impl ReconnectingClient {
    /// Opens the stream `request` describes.
    ///
    /// # Panics
    ///
    /// When the answer is not `200 text/event-stream`, or as
    /// [`Subscribe::send`].
    pub async fn open(request: Subscribe) -> Self {
        let stream = open_stream(request.clone()).await;
        Self {
            request,
            stream,
            retry: DEFAULT_RETRY,
            last_id: String::new(),
            received: Vec::new(),
            reconnects: 0,
        }
    }

    /// Reads, reconnecting whenever the stream ends, until an event that
    /// `last` accepts has arrived (it is kept too). Takes and returns the
    /// client so that it can read on a task of its own.
    ///
    /// # Panics
    ///
    /// When no such event arrives within `timeout`, or a reconnect is not
    /// answered `200 text/event-stream`.
    pub async fn read_until(
        mut self,
        timeout: Duration,
        mut last: impl FnMut(&Event) -> bool,
    ) -> Self {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stream.try_next_item(left).await {
                Next::Item(Item::Event(event)) => {
                    self.last_id.clone_from(&event.id);
                    let done = last(&event);
                    self.received.push(event);
                    if done {
                        return self;
                    }
                }
                Next::Item(Item::Retry(ms)) => self.retry = Duration::from_millis(ms),
                Next::Item(Item::Comment(_)) => {}
                Next::Closed => {
                    tokio::time::sleep(self.retry).await;
                    let mut request = self.request.clone();
                    if !self.last_id.is_empty() {
                        request = request.last_event_id(&self.last_id);
                    }
                    self.stream = open_stream(request).await;
                    self.reconnects += 1;
                }
                Next::TimedOut => panic!(
                    "the awaited event did not arrive within {timeout:?}; received {:?} \
                     over {} reconnects",
                    self.received
                        .iter()
                        .map(|e| e.data.as_str())
                        .collect::<Vec<_>>(),
                    self.reconnects
                ),
            }
        }
    }

    /// Every event received so far, over all connections, in order.
    pub fn received(&self) -> &[Event] {
        &self.received
    }

    /// How many times it reconnected.
    pub fn reconnects(&self) -> usize {
        self.reconnects
    }

    /// The id it would send on its next reconnect.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }
}

async fn open_stream(request: Subscribe) -> SseStream {
    let stream = request.send().await;
    assert_eq!(stream.status(), StatusCode::OK, "a stream: {stream:?}");
    assert_eq!(
        stream.header("content-type"),
        Some("text/event-stream"),
        "a stream: {stream:?}"
    );
    stream
}
