//! One monotonic clock for the whole bench process.
//!
//! Publishers stamp payloads and subscribers compute latency on different
//! threads, so both read nanoseconds since the same `Instant`.

use std::{sync::OnceLock, time::Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
