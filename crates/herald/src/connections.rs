//! Every open stream on this node: the connection limit, heartbeats, and
//! closing streams spread over time when the node drains.
//!
//! Heartbeats and drain work from one central table rather than a timer per
//! connection: an idle stream then costs no timer-wheel entry, and one task
//! visits every stream once per heartbeat interval.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use herald_broker::{CloseReason, SubscriberQueue};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use slab::Slab;
use tokio::time::{sleep, Instant};

use crate::metrics::Metrics;

/// The streams open on this node.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: AtomicUsize,
    // Touched once when a stream opens and once when it closes, and by the
    // heartbeat and drain tasks; never on the delivery path.
    queues: Mutex<Slab<Arc<SubscriberQueue>>>,
    metrics: Metrics,
}

impl Connections {
    /// A table admitting at most `max` streams.
    pub fn new(max: usize, metrics: Metrics) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
            queues: Mutex::default(),
            metrics,
        }
    }

    /// Admits a stream feeding from `queue`, or `None` when the node is at
    /// its connection limit. The stream counts until the guard is dropped.
    pub fn admit(self: &Arc<Self>, queue: &Arc<SubscriberQueue>) -> Option<ConnectionGuard> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let key = self.queues.lock().insert(Arc::clone(queue));
        self.metrics.connections.inc();
        Some(ConnectionGuard {
            table: Arc::clone(self),
            key,
        })
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> Vec<Arc<SubscriberQueue>> {
        self.queues
            .lock()
            .iter()
            .map(|(_, q)| Arc::clone(q))
            .collect()
    }

    /// Asks every stream idle since the previous tick for a heartbeat, every
    /// `interval`, forever. Owned by the server; stops when its task is
    /// aborted at shutdown.
    pub async fn run_heartbeats(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        loop {
            ticker.tick().await;
            for queue in self.snapshot() {
                queue.heartbeat_tick();
            }
        }
    }

    /// Closes every open stream, in random order, spread evenly over
    /// `window`, so their clients do not all reconnect at the same instant.
    /// Returns once every stream is closed.
    pub async fn close_all_spread(&self, reason: CloseReason, window: Duration) {
        let mut queues = self.snapshot();
        queues.shuffle(&mut rand::rng());
        // Sleep granularity: enough steps to spread, few enough to be cheap.
        let steps = queues.len().clamp(1, 200);
        let per_step = queues.len().div_ceil(steps);
        let pause = window / steps as u32;
        let start = Instant::now();
        for (i, chunk) in queues.chunks(per_step.max(1)).enumerate() {
            sleep_until_step(start, pause, i).await;
            for queue in chunk {
                queue.close(reason);
            }
        }
    }
}

async fn sleep_until_step(start: Instant, pause: Duration, step: usize) {
    let at = start + pause * step as u32;
    if at > Instant::now() {
        sleep(at - Instant::now()).await;
    }
}

/// An admitted stream's place in the table; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionGuard {
    table: Arc<Connections>,
    key: usize,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.table.queues.lock().try_remove(self.key);
        self.table.open.fetch_sub(1, Ordering::AcqRel);
        self.table.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_slots_on_drop() {
        let table = Arc::new(Connections::new(2, Metrics::new()));
        let queue = Arc::new(SubscriberQueue::new(4));
        let a = table.admit(&queue).unwrap();
        let _b = table.admit(&queue).unwrap();
        assert!(table.admit(&queue).is_none());
        drop(a);
        assert!(table.admit(&queue).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_every_stream_within_the_window() {
        let table = Arc::new(Connections::new(100, Metrics::new()));
        let queues: Vec<_> = (0..50).map(|_| Arc::new(SubscriberQueue::new(4))).collect();
        let _guards: Vec<_> = queues.iter().map(|q| table.admit(q).unwrap()).collect();
        let start = Instant::now();
        table
            .close_all_spread(CloseReason::Drain, Duration::from_secs(10))
            .await;
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(queues
            .iter()
            .all(|q| q.closed() == Some(CloseReason::Drain)));
    }
}
