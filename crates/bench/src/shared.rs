//! Counters shared by the publisher thread, the subscriber threads and the
//! thread that runs the scenario.
//!
//! Everything here is an atomic touched at most once per read or per
//! publish, never per byte: subscribers add the deliveries of a whole read
//! at once.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Per-topic publish and subscriber counts.
#[derive(Debug)]
pub struct TopicCounters {
    /// Publishes written (the next sequence number).
    pub sent: Vec<AtomicU64>,
    /// Publishes the server answered with 2xx.
    pub acked: Vec<AtomicU64>,
    /// Publishes the server refused or never answered.
    pub failed: Vec<AtomicU64>,
    /// Open subscriber streams.
    pub live: Vec<AtomicU32>,
}

impl TopicCounters {
    fn new(topics: usize) -> Self {
        let zeros64 = || (0..topics).map(|_| AtomicU64::new(0)).collect();
        Self {
            sent: zeros64(),
            acked: zeros64(),
            failed: zeros64(),
            live: (0..topics).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// State shared by every thread of one scenario run.
#[derive(Debug)]
pub struct Shared {
    /// Per-topic counters.
    pub topics: TopicCounters,
    /// Deliveries expected but not yet received. The publisher adds a
    /// topic's live subscriber count per publish and pauses past its limit
    /// in flat-out mode, so a flat-out run measures sustained delivery, not
    /// how fast server queues grow.
    pub outstanding: AtomicI64,
    /// Events with data received, all subscribers.
    pub deliveries: AtomicU64,
    /// Streams opened so far.
    pub connected: AtomicU64,
    /// Streams that failed to open.
    pub connect_failed: AtomicU64,
    /// Streams that ended before the bench closed them.
    pub disconnected: AtomicU64,
    /// Latency is recorded for payloads stamped in `[record_from_ns, record_until_ns)`.
    pub record_from_ns: AtomicU64,
    /// See `record_from_ns`.
    pub record_until_ns: AtomicU64,
}

impl Shared {
    /// Counters for `topics` topics, recording no latency until told.
    pub fn new(topics: usize) -> Self {
        Self {
            topics: TopicCounters::new(topics),
            outstanding: AtomicI64::new(0),
            deliveries: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            record_from_ns: AtomicU64::new(u64::MAX),
            record_until_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Streams that finished opening, successfully or not.
    pub fn settled(&self) -> u64 {
        self.connected.load(Relaxed) + self.connect_failed.load(Relaxed)
    }
}
