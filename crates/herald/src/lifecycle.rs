//! The node's lifecycle as a type: ready, or draining towards exit, and the
//! requests still in flight that a clean exit waits for.
//!
//! `/readyz` and the subscribe path read it; the signal handler flips it
//! once. Draining is one-way: a node that started draining never serves new
//! streams again.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

/// Shared lifecycle state of a node.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Lifecycle {
    /// A node that is not draining.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining. Returns false if it had already started.
    pub fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks a request as in flight until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            lifecycle: Arc::clone(self),
        }
    }

    /// Waits until no request is in flight, at most `limit`. Returns whether
    /// it got there.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct RequestGuard {
    lifecycle: Arc<Lifecycle>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.lifecycle.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.lifecycle.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_requests_in_flight_up_to_a_limit() {
        let lifecycle = Arc::new(Lifecycle::new());
        assert!(lifecycle.wait_idle(Duration::from_secs(1)).await);
        let guard = lifecycle.request();
        assert!(!lifecycle.wait_idle(Duration::from_secs(1)).await);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(guard);
        });
        assert!(lifecycle.wait_idle(Duration::from_secs(5)).await);
    }
}
