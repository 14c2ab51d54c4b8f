//! Every open stream on this node: the connection limit, heartbeats, token
//! expiry, and closing streams spread over time when the node drains.
//!
//! Heartbeats, expiry and drain work from one central table rather than a
//! timer per connection: an idle stream then costs no timer-wheel entry, one
//! task visits every stream once per heartbeat interval, and one task sleeps
//! until the next token expires.

use std::{
    collections::BTreeSet,
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
use tokio::{
    sync::Notify,
    time::{sleep, sleep_until, Instant},
};

use crate::metrics::Metrics;

/// The table of streams open on this node.
#[derive(Debug)]
pub struct OpenStreams {
    max: usize,
    open: AtomicUsize,
    // Touched once when a stream opens and once when it closes, and by the
    // heartbeat, expiry and drain tasks; never on the delivery path.
    table: Mutex<Table>,
    expiry_changed: Notify,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Table {
    queues: Slab<Arc<SubscriberQueue>>,
    // (expiry, slab key), earliest first.
    expiries: BTreeSet<(Instant, usize)>,
}

impl OpenStreams {
    /// A table admitting at most `max` streams.
    pub fn new(max: usize, metrics: Metrics) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
            table: Mutex::default(),
            expiry_changed: Notify::new(),
            metrics,
        }
    }

    /// Admits a stream feeding from `queue`, or `None` when the node is at
    /// its connection limit. The stream counts until the guard is dropped,
    /// and is closed as [`CloseReason::TokenExpired`] at `expires_at`.
    pub fn admit(
        self: &Arc<Self>,
        queue: &Arc<SubscriberQueue>,
        expires_at: Option<Instant>,
    ) -> Option<StreamSlot> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut table = self.table.lock();
        let key = table.queues.insert(Arc::clone(queue));
        if let Some(at) = expires_at {
            table.expiries.insert((at, key));
            if table.expiries.first() == Some(&(at, key)) {
                self.expiry_changed.notify_one();
            }
        }
        drop(table);
        self.metrics.connections.inc();
        Some(StreamSlot {
            table: Arc::clone(self),
            key,
            expires_at,
        })
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether the node is at its connection limit right now.
    pub fn is_full(&self) -> bool {
        self.count() >= self.max
    }

    fn snapshot(&self) -> Vec<Arc<SubscriberQueue>> {
        self.table
            .lock()
            .queues
            .iter()
            .map(|(_, q)| Arc::clone(q))
            .collect()
    }

    /// Closes each stream when its token expires, forever. Owned by the
    /// server; stops when its task is aborted at shutdown.
    pub async fn run_expiries(self: Arc<Self>) {
        loop {
            let next = self.table.lock().expiries.first().copied();
            match next {
                None => self.expiry_changed.notified().await,
                Some((at, _)) if at > Instant::now() => {
                    // An earlier expiry arriving meanwhile wakes us up early.
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = self.expiry_changed.notified() => {}
                    }
                }
                Some(_) => self.close_expired(),
            }
        }
    }

    fn close_expired(&self) {
        let now = Instant::now();
        let mut table = self.table.lock();
        while let Some(&(at, key)) = table.expiries.first() {
            if at > now {
                break;
            }
            table.expiries.pop_first();
            if let Some(queue) = table.queues.get(key) {
                queue.close(CloseReason::TokenExpired);
            }
        }
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
pub struct StreamSlot {
    table: Arc<OpenStreams>,
    key: usize,
    expires_at: Option<Instant>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut table = self.table.table.lock();
        table.queues.try_remove(self.key);
        if let Some(at) = self.expires_at {
            table.expiries.remove(&(at, self.key));
        }
        drop(table);
        self.table.open.fetch_sub(1, Ordering::AcqRel);
        self.table.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_slots_on_drop() {
        let table = Arc::new(OpenStreams::new(2, Metrics::new()));
        let queue = Arc::new(SubscriberQueue::new(4));
        let a = table.admit(&queue, None).unwrap();
        let _b = table.admit(&queue, None).unwrap();
        assert!(table.admit(&queue, None).is_none());
        drop(a);
        assert!(table.admit(&queue, None).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_every_stream_within_the_window() {
        let table = Arc::new(OpenStreams::new(100, Metrics::new()));
        let queues: Vec<_> = (0..50).map(|_| Arc::new(SubscriberQueue::new(4))).collect();
        let _guards: Vec<_> = queues
            .iter()
            .map(|q| table.admit(q, None).unwrap())
            .collect();
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

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn streams_close_when_their_tokens_expire_in_order() {
        let table = Arc::new(OpenStreams::new(10, Metrics::new()));
        tokio::spawn(Arc::clone(&table).run_expiries());
        let late = Arc::new(SubscriberQueue::new(4));
        let early = Arc::new(SubscriberQueue::new(4));
        let never = Arc::new(SubscriberQueue::new(4));
        let start = Instant::now();
        let _g1 = table
            .admit(&late, Some(start + Duration::from_secs(20)))
            .unwrap();
        let _g2 = table
            .admit(&early, Some(start + Duration::from_secs(5)))
            .unwrap();
        let _g3 = table.admit(&never, None).unwrap();
        sleep(Duration::from_secs(6)).await;
        assert_eq!(early.closed(), Some(CloseReason::TokenExpired));
        assert_eq!(late.closed(), None);
        sleep(Duration::from_secs(15)).await;
        assert_eq!(late.closed(), Some(CloseReason::TokenExpired));
        assert_eq!(never.closed(), None);
    }
}
