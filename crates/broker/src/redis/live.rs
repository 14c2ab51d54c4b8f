//! Which topics have a confirmed Redis subscription on this node, shared by
//! the subscriber task (which changes it) and streams that are starting
//! (which wait on it).

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

use crate::Topic;

/// Confirmed subscriptions and broker health.
#[derive(Debug, Default)]
pub(crate) struct LiveState {
    active: Mutex<HashSet<Topic>>,
    changed: Notify,
    up: AtomicBool,
    // Counts successful connections, so presence can tell Redis may have
    // lost what it wrote before.
    connections: AtomicU64,
}

impl LiveState {
    /// Marks `topics` as live (their SUBSCRIBE was confirmed).
    pub(crate) fn activate(&self, topics: impl IntoIterator<Item = Topic>) {
        self.active.lock().extend(topics);
        self.changed.notify_waiters();
    }

    /// Removes `topic` from the live set; returns whether it was there.
    pub(crate) fn deactivate(&self, topic: &Topic) -> bool {
        self.active.lock().remove(topic)
    }

    /// Whether `topic` is live.
    pub(crate) fn is_active(&self, topic: &Topic) -> bool {
        self.active.lock().contains(topic)
    }

    /// Forgets every subscription (the connection is gone).
    pub(crate) fn clear(&self) {
        self.active.lock().clear();
        self.up.store(false, Ordering::Release);
    }

    pub(crate) fn set_up(&self) {
        self.connections.fetch_add(1, Ordering::AcqRel);
        self.up.store(true, Ordering::Release);
    }

    /// How many times the broker connection came up.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Waits until every topic of `topics` is live; false on timeout.
    pub(crate) async fn wait_active(&self, topics: &[Topic], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Register for the wake-up before checking, so an activation
            // between the check and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if topics.iter().all(|topic| self.is_active(topic)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}
