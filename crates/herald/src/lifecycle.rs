//! The node's lifecycle as a type: ready, or draining towards exit.
//!
//! `/readyz` and the subscribe route read it; the signal handler flips it
//! once. Draining is one-way: a node that started draining never serves new
//! streams again.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared lifecycle state of a node.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
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
}
