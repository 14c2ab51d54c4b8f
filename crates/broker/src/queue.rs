//! The bounded outgoing queue of one subscriber connection.
//!
//! The dispatcher pushes shared events; the connection's writer takes
//! everything queued at once, so a connection that falls behind writes many
//! frames per wake-up instead of one syscall per event. The bound is the
//! slow-consumer policy: a connection that lets `capacity` events pile up is
//! closed rather than allowed to grow without limit or to slow the
//! dispatcher, and its client resumes from history when it reconnects.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use parking_lot::Mutex;

use crate::SharedEvent;

/// Why herald closed a subscriber connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Its queue overflowed.
    SlowConsumer,
    /// The node is draining.
    Drain,
    /// Its token expired.
    TokenExpired,
}

impl CloseReason {
    /// Every reason, for metrics that must list them all from the start.
    pub const ALL: [CloseReason; 3] = [
        CloseReason::SlowConsumer,
        CloseReason::Drain,
        CloseReason::TokenExpired,
    ];

    /// The metric label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Drain => "drain",
            CloseReason::TokenExpired => "token_expired",
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The event is queued.
    Queued,
    /// The queue overflowed: it is now closed as a slow consumer and this
    /// many queued events (the new one included) were dropped.
    Overflowed(usize),
    /// The queue was already closed; the event was not queued.
    Closed,
}

/// Queue slots an idle queue (or an idle writer's batch) may keep allocated.
pub const IDLE_CAPACITY: usize = 16;

/// What the writer found when it polled the queue.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events to write, oldest first.
    pub events: VecDeque<Arc<SharedEvent>>,
    /// The stream has been idle for a heartbeat interval.
    pub heartbeat: bool,
}

/// A connection's bounded queue, shared by the dispatcher and its writer.
#[derive(Debug)]
pub struct SubscriberQueue {
    capacity: usize,
    // A short critical section (push or swap out) on every event: a plain
    // mutex is cheaper than a lock-free queue plus a separate waker slot.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    events: VecDeque<Arc<SharedEvent>>,
    waker: Option<Waker>,
    closed: Option<CloseReason>,
    heartbeat: bool,
    // Something was taken since the last heartbeat tick.
    active: bool,
    closer: Option<Closer>,
}

/// Run once when the queue closes.
type Closer = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("events", &self.events.len())
            .field("closed", &self.closed)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl SubscriberQueue {
    /// An empty queue holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    /// Queues `event`, closing the queue if it is full.
    pub fn push(&self, event: &Arc<SharedEvent>) -> Pushed {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Pushed::Closed;
        }
        if state.events.len() >= self.capacity {
            let dropped = state.events.len() + 1;
            state.events = VecDeque::new();
            state.closed = Some(CloseReason::SlowConsumer);
            wake(state);
            return Pushed::Overflowed(dropped);
        }
        state.events.push_back(Arc::clone(event));
        wake(state);
        Pushed::Queued
    }

    /// Closes the queue; the writer ends the stream at its next poll. The
    /// first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            state.events = VecDeque::new();
            wake(state);
        }
    }

    /// Registers `closer` to run once, right after the queue closes (or at
    /// once if it already has). For writers that may not be polled while
    /// their socket is full and so need another way to learn the stream is
    /// over.
    pub fn on_close(&self, closer: impl FnOnce() + Send + 'static) {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            drop(state);
            closer();
        } else {
            state.closer = Some(Box::new(closer));
        }
    }

    /// Called on every heartbeat tick: a stream that wrote nothing since the
    /// previous tick is asked to send a heartbeat.
    pub fn heartbeat_tick(&self) {
        let mut state = self.state.lock();
        if std::mem::take(&mut state.active) {
            return;
        }
        state.heartbeat = true;
        wake(state);
    }

    /// Takes everything queued into `batch`, or registers the writer's
    /// waker.
    ///
    /// `batch.events` must be empty: its deque is swapped with the queue's,
    /// so the writer and the queue reuse two allocations instead of
    /// allocating one per batch. `Ready(Err(reason))` once the queue is
    /// closed; `Ready(Ok(()))` with events and/or a heartbeat in `batch`;
    /// `Pending` when there is nothing to do.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<Result<(), CloseReason>> {
        debug_assert!(batch.events.is_empty(), "the previous batch was written");
        let mut state = self.state.lock();
        if let Some(reason) = state.closed {
            return Poll::Ready(Err(reason));
        }
        if state.events.is_empty() && !state.heartbeat {
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            // An idle stream keeps no burst-sized buffer.
            if state.events.capacity() > IDLE_CAPACITY {
                state.events = VecDeque::new();
            }
            return Poll::Pending;
        }
        state.active = true;
        std::mem::swap(&mut state.events, &mut batch.events);
        batch.heartbeat = std::mem::take(&mut state.heartbeat);
        Poll::Ready(Ok(()))
    }

    /// Resolves once the queue is closed, without taking anything: what a
    /// writer blocked on a slow socket watches, so that closing the queue
    /// (an overflow, a drain) reaches it even while it cannot write.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let mut state = self.state.lock();
        if let Some(reason) = state.closed {
            return Poll::Ready(reason);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the queue has been closed, and why.
    pub fn closed(&self) -> Option<CloseReason> {
        self.state.lock().closed
    }
}

/// Wakes the writer (and runs the closer of a closed queue) after the lock
/// is released: both can run arbitrary code, which has no business inside
/// the critical section.
fn wake(mut state: parking_lot::MutexGuard<'_, State>) {
    let waker = state.waker.take();
    let closer = if state.closed.is_some() {
        state.closer.take()
    } else {
        None
    };
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
    if let Some(closer) = closer {
        closer();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::{Position, Topic};

    fn event(seq: u64) -> Arc<SharedEvent> {
        Arc::new(SharedEvent::encode(
            Topic::new("t").unwrap(),
            Position::new(1, seq),
            None,
            "x",
            0,
        ))
    }

    fn poll(queue: &SubscriberQueue) -> Poll<Result<Batch, CloseReason>> {
        let mut batch = Batch::default();
        queue
            .poll_take(&mut Context::from_waker(Waker::noop()), &mut batch)
            .map_ok(|()| batch)
    }

    #[test]
    fn writer_takes_everything_queued_at_once() {
        let queue = SubscriberQueue::new(8);
        assert!(poll(&queue).is_pending());
        for seq in 1..=3 {
            assert_eq!(queue.push(&event(seq)), Pushed::Queued);
        }
        let Poll::Ready(Ok(batch)) = poll(&queue) else {
            panic!("expected a batch")
        };
        let seqs: Vec<u64> = batch.events.iter().map(|e| e.position.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(poll(&queue).is_pending());
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let queue = SubscriberQueue::new(2);
        queue.push(&event(1));
        queue.push(&event(2));
        assert_eq!(queue.push(&event(3)), Pushed::Overflowed(3));
        assert_eq!(queue.push(&event(4)), Pushed::Closed);
        assert!(matches!(
            poll(&queue),
            Poll::Ready(Err(CloseReason::SlowConsumer))
        ));
    }

    #[test]
    fn heartbeat_only_for_streams_idle_a_whole_tick() {
        let queue = SubscriberQueue::new(2);
        queue.push(&event(1));
        assert!(
            poll(&queue).is_ready(),
            "taking events marks the stream active"
        );
        queue.heartbeat_tick();
        assert!(poll(&queue).is_pending());
        queue.heartbeat_tick();
        let Poll::Ready(Ok(batch)) = poll(&queue) else {
            panic!("expected a heartbeat")
        };
        assert!(batch.heartbeat && batch.events.is_empty());
    }

    #[test]
    fn the_closer_runs_once_when_the_queue_closes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = Arc::new(AtomicUsize::new(0));
        let queue = SubscriberQueue::new(1);
        let counter = Arc::clone(&runs);
        queue.on_close(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        queue.push(&event(1));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        queue.push(&event(2));
        queue.close(CloseReason::Drain);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let late = Arc::clone(&runs);
        queue.on_close(move || {
            late.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn first_close_reason_wins() {
        let queue = SubscriberQueue::new(2);
        queue.close(CloseReason::Drain);
        queue.close(CloseReason::TokenExpired);
        assert_eq!(queue.closed(), Some(CloseReason::Drain));
    }
}
