//! What every broker shares about keeping history, whatever stores it: the
//! retention settings, how long idempotency keys are remembered, and how a
//! new history's epoch is drawn.

use std::time::Duration;

/// How long an idempotency key is remembered. The contract promises at
/// least five minutes.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);

/// History retention, per topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Events kept per topic.
    pub max_events: usize,
    /// A topic's history is dropped this long after its last event.
    pub ttl: Duration,
}

/// A random, non-zero epoch for a new history (zero means "no history").
pub fn new_epoch() -> u32 {
    loop {
        let epoch = rand::random::<u32>();
        if epoch != 0 {
            return epoch;
        }
    }
}
