//! One open SSE stream: from queued events to the bytes on the wire.
//!
//! [`EventStream`] is what both doors serve: herald's lean stream path
//! writes its [`pending`](EventStream::pending) frames itself, and actix
//! polls it through [`crate::actix_stream::ActixBody`]. Each poll takes
//! everything the connection's queue holds and turns it into
//! frames, so a client that falls behind catches up in large writes rather
//! than one write per event. Events are never re-encoded here: a
//! single-topic stream sends the shared frame as is, a multi-topic stream
//! sends its own `id:` line followed by the shared body.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use herald_broker::{
    now_micros, Batch, EventKind, Position, SharedEvent, SubscriberQueue, SubscriptionGuard, Topic,
    IDLE_CAPACITY,
};
use serde_json::json;

use crate::{
    open_streams::StreamSlot,
    positions::{StreamPositions, Verdict},
    state::AppState,
};

const HEARTBEAT: Bytes = Bytes::from_static(b": hb\n");

/// The body of one SSE response.
pub struct EventStream {
    queue: Arc<SubscriberQueue>,
    positions: StreamPositions,
    pending: VecDeque<Bytes>,
    // Reused from batch to batch (see `SubscriberQueue::poll_take`).
    batch: Batch,
    state: Arc<AppState>,
    closed: bool,
    // Held for their Drop: leaving the topics and freeing the connection
    // slot when the client goes away or herald closes the stream.
    _subscription: SubscriptionGuard,
    _slot: StreamSlot,
}

impl EventStream {
    /// A stream of what arrives in `queue`, for the topics in `positions`;
    /// the opening bytes and replayed history are pushed by the caller
    /// before it is served.
    pub fn new(
        state: Arc<AppState>,
        queue: Arc<SubscriberQueue>,
        positions: StreamPositions,
        subscription: SubscriptionGuard,
        slot: StreamSlot,
    ) -> Self {
        Self {
            queue,
            positions,
            pending: VecDeque::new(),
            batch: Batch::default(),
            state,
            closed: false,
            _subscription: subscription,
            _slot: slot,
        }
    }

    /// Runs `closer` once herald closes this stream (see
    /// [`SubscriberQueue::on_close`]), from whichever thread closes it.
    pub fn on_queue_closed(&self, closer: impl FnOnce() + Send + 'static) {
        self.queue.on_close(closer);
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
            "reason": herald_sse::control::RESYNC_REASON,
        })
        .to_string();
        let frame = herald_sse::encode(
            Some(&self.positions.id()),
            Some(herald_sse::control::RESYNC),
            &data,
        )
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
