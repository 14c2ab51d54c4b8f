//! One open SSE stream: from queued events to the bytes on the wire.
//!
//! [`EventStream`] is polled by the HTTP server for the response body. Each
//! poll takes everything the connection's queue holds and turns it into
//! frames, so a client that falls behind catches up in large writes rather
//! than one write per event. Events are never re-encoded here: a
//! single-topic stream sends the shared frame as is, a multi-topic stream
//! sends its own `id:` line followed by the shared body.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::Stream;
use herald_broker::{
    now_micros, Batch, EventKind, Position, SharedEvent, SubscriberQueue, SubscriptionGuard, Topic,
    IDLE_CAPACITY,
};
use serde_json::json;

use crate::{
    connections::ConnectionGuard,
    positions::{StreamPositions, Verdict},
    state::AppState,
};

const HEARTBEAT: Bytes = Bytes::from_static(b": hb\n");
/// How long a closed stream's transport has to end it before its socket is
/// shut down from outside (see [`EventStream::on_close`]).
pub const CLOSER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The body of one SSE response.
pub struct EventStream {
    queue: Arc<SubscriberQueue>,
    positions: StreamPositions,
    pending: VecDeque<Bytes>,
    // Reused from batch to batch (see `SubscriberQueue::poll_take`).
    batch: Batch,
    state: Arc<AppState>,
    closed: bool,
    // Cleared when the stream is dropped, for a registered closer (see
    // `on_close`).
    alive: Option<Arc<AtomicBool>>,
    // Held for their Drop: leaving the topics and freeing the connection
    // slot when the client goes away or herald closes the stream.
    _subscription: SubscriptionGuard,
    _connection: ConnectionGuard,
}

impl EventStream {
    /// A stream that first sends `preamble`, then the replayed events, then
    /// whatever arrives in `queue`.
    pub fn new(
        state: Arc<AppState>,
        queue: Arc<SubscriberQueue>,
        positions: StreamPositions,
        subscription: SubscriptionGuard,
        connection: ConnectionGuard,
    ) -> Self {
        Self {
            queue,
            positions,
            pending: VecDeque::new(),
            batch: Batch::default(),
            state,
            closed: false,
            alive: None,
            _subscription: subscription,
            _connection: connection,
        }
    }

    /// Runs `closer` when herald closes this stream (see
    /// [`SubscriberQueue::on_close`]) and the stream is still alive
    /// [`CLOSER_GRACE`] later. A transport that still polls the stream ends
    /// it normally within that time — writing its head and opening bytes
    /// first — so the closer only reaches streams whose transport stopped
    /// polling them (a client that stopped reading).
    pub fn on_close(&mut self, closer: impl FnOnce() + Send + 'static) {
        let alive = Arc::clone(
            self.alive
                .get_or_insert_with(|| Arc::new(AtomicBool::new(true))),
        );
        self.queue.on_close(move || {
            let close_if_alive = move || {
                if alive.load(Ordering::Acquire) {
                    closer();
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        tokio::time::sleep(CLOSER_GRACE).await;
                        close_if_alive();
                    });
                }
                Err(_) => close_if_alive(),
            }
        });
    }

    /// Queues raw bytes (the opening `retry:` line and comment).
    pub fn push_raw(&mut self, bytes: Bytes) {
        self.pending.push_back(bytes);
    }

    /// Queues a `herald.resync` event for `topics`; its id already reflects
    /// their new positions, so a reconnect does not resync them again.
    pub fn push_resync(&mut self, topics: &[Topic]) {
        let data = json!({
            "topics": topics.iter().map(Topic::as_str).collect::<Vec<_>>(),
            "reason": "history_truncated",
        })
        .to_string();
        let frame = herald_sse::encode(Some(&self.positions.id()), Some("herald.resync"), &data)
            .expect("cursors are base64url and the event name is a constant");
        self.pending.push_back(frame.bytes().clone());
    }

    /// Queues `event` unless the stream already has it. Returns whether it
    /// was queued.
    pub fn push_event(&mut self, event: &SharedEvent) -> bool {
        if event.kind == EventKind::Reset {
            if self.positions.reset(&event.topic, event.position) {
                self.push_resync(std::slice::from_ref(&event.topic));
            }
            return false;
        }
        match self.positions.accept(event) {
            Verdict::Duplicate => return false,
            Verdict::Gap => {
                let before = Position::new(event.position.epoch, event.prev);
                self.positions.set(&event.topic, before);
                self.push_resync(std::slice::from_ref(&event.topic));
                self.positions.set(&event.topic, event.position);
            }
            Verdict::Deliver => {}
        }
        if self.positions.is_single() {
            self.pending.push_back(event.frame.bytes().clone());
        } else {
            let id = herald_sse::id_line(&self.positions.id()).expect("cursors are base64url");
            self.pending.push_back(id);
            self.pending.push_back(event.frame.body());
        }
        true
    }

    fn absorb(&mut self) {
        let mut delivered = 0u64;
        let mut oldest = None;
        let mut events = std::mem::take(&mut self.batch.events);
        for event in events.drain(..) {
            if self.push_event(&event) {
                delivered += 1;
                oldest.get_or_insert(event.stored_at_us);
            }
        }
        self.batch.events = events;
        let heartbeat = std::mem::take(&mut self.batch.heartbeat);
        if delivered > 0 {
            let metrics = &self.state.metrics;
            metrics.events_delivered.inc_by(delivered);
            if let Some(stored) = oldest {
                let lag = now_micros().saturating_sub(stored);
                metrics.delivery_lag.observe(lag as f64 / 1e6);
            }
        } else if heartbeat {
            self.pending.push_back(HEARTBEAT);
        }
    }
}

impl EventStream {
    /// Bytes ready to be written, oldest first. A transport writes from the
    /// front and removes what it wrote.
    pub fn pending(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.pending
    }

    /// Waits for more to write: `Ready(true)` when bytes were added to
    /// [`pending`](Self::pending), `Ready(false)` once herald closed the
    /// stream (its reason already counted), `Pending` otherwise.
    pub fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.closed {
                return Poll::Ready(false);
            }
            match self.queue.poll_take(cx, &mut self.batch) {
                Poll::Pending => {
                    // An idle stream should not keep a burst's buffers.
                    if self.pending.is_empty() && self.pending.capacity() > IDLE_CAPACITY {
                        self.pending = VecDeque::new();
                    }
                    if self.batch.events.capacity() > IDLE_CAPACITY {
                        self.batch = Batch::default();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {
                    let before = self.pending.len();
                    self.absorb();
                    if self.pending.len() > before {
                        return Poll::Ready(true);
                    }
                }
                Poll::Ready(Err(reason)) => {
                    self.closed = true;
                    self.state.metrics.disconnected(reason.as_str());
                }
            }
        }
    }
}

impl EventStream {
    /// Resolves once herald closed the stream (its reason counted), without
    /// taking queued events: for a transport blocked on a slow socket.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closed {
            return Poll::Ready(());
        }
        let reason = std::task::ready!(self.queue.poll_closed(cx));
        self.closed = true;
        self.state.metrics.disconnected(reason.as_str());
        Poll::Ready(())
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(alive) = &self.alive {
            alive.store(false, Ordering::Release);
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if !std::task::ready!(this.poll_more(cx)) {
                return Poll::Ready(None);
            }
        }
    }
}
