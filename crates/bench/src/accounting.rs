//! Counting what each subscriber received: losses, duplicates, latency.
//!
//! Each topic's publishes go over one keep-alive connection, in order, so
//! every server under test delivers a topic's sequence numbers in order.
//! A subscriber therefore only keeps the next sequence number it expects
//! plus a 64-bit window of the ones just below it: a jump ahead counts the
//! skipped numbers as gaps, a number seen again inside the window is a
//! duplicate, and one that arrives late inside the window turns a gap back
//! into a delivery. At the end, the number of distinct deliveries is
//! compared with what the publisher got acknowledged for that topic.
//! Latency goes into one histogram per thread, in microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Per-connection sequence bookkeeping for one topic.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: u64,
    /// Bit `k` set: sequence number `next - 1 - k` was received.
    window: u64,
    /// Distinct sequence numbers received.
    pub distinct: u64,
    /// Sequence numbers skipped and not (yet) received late.
    pub gaps: u64,
    /// Sequence numbers received more than once (or too late to tell).
    pub duplicates: u64,
    /// Sequence numbers received after a later one.
    pub reordered: u64,
}

impl SeqTracker {
    /// A tracker expecting sequence number 0 first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one delivery of `seq`.
    pub fn observe(&mut self, seq: u64) {
        if seq >= self.next {
            let advance = seq - self.next + 1;
            self.gaps += advance - 1;
            self.window = if advance >= 64 {
                1
            } else {
                (self.window << advance) | 1
            };
            self.next = seq + 1;
            self.distinct += 1;
            return;
        }
        let back = self.next - 1 - seq;
        if back >= 64 || self.window & (1 << back) != 0 {
            self.duplicates += 1;
        } else {
            self.window |= 1 << back;
            self.gaps -= 1;
            self.reordered += 1;
            self.distinct += 1;
        }
    }

    /// Deliveries missing at the end, given how many publishes to this
    /// topic the server acknowledged.
    pub fn lost(&self, acknowledged: u64) -> u64 {
        acknowledged.saturating_sub(self.distinct)
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// A latency histogram: 1 µs to 100 s at three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid")
}

/// Records a latency in nanoseconds, clamped into the histogram's range.
pub fn record_ns(hist: &mut Histogram<u64>, ns: u64) {
    let us = (ns / 1000).clamp(1, 100_000_000);
    hist.record(us).expect("value clamped into range");
}

/// Summarises a histogram.
pub fn summarize(hist: &Histogram<u64>) -> LatencySummary {
    if hist.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: hist.len(),
        mean: (hist.mean() * 10.0).round() / 10.0,
        p50: hist.value_at_quantile(0.50),
        p90: hist.value_at_quantile(0.90),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    }
}

/// What the subscribers of one thread observed; merged across threads.
#[derive(Debug, Clone)]
pub struct SubscriberTotals {
    /// Publish-to-delivery latency of deliveries stamped in the window.
    pub latency: Histogram<u64>,
    /// Events with data received.
    pub deliveries: u64,
    /// Distinct deliveries.
    pub distinct: u64,
    /// Deliveries missing at the end versus acknowledged publishes.
    pub lost: u64,
    /// Skips seen live (a subset of `lost` unless late arrivals filled them).
    pub gaps: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries that arrived after a later one.
    pub reordered: u64,
    /// Events whose data was not a bench payload.
    pub unparsed: u64,
    /// Streams that ended before the bench closed them.
    pub disconnects: u64,
    /// Streams that could not be opened.
    pub connect_failures: u64,
    /// Streams opened.
    pub connected: u64,
}

impl Default for SubscriberTotals {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            deliveries: 0,
            distinct: 0,
            lost: 0,
            gaps: 0,
            duplicates: 0,
            reordered: 0,
            unparsed: 0,
            disconnects: 0,
            connect_failures: 0,
            connected: 0,
        }
    }
}

impl SubscriberTotals {
    /// Folds one finished connection's tracker in.
    pub fn add_tracker(&mut self, tracker: &SeqTracker, acknowledged: u64) {
        self.distinct += tracker.distinct;
        self.lost += tracker.lost(acknowledged);
        self.gaps += tracker.gaps;
        self.duplicates += tracker.duplicates;
        self.reordered += tracker.reordered;
    }

    /// Adds another thread's totals.
    pub fn merge(&mut self, other: &Self) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.deliveries += other.deliveries;
        self.distinct += other.distinct;
        self.lost += other.lost;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.unparsed += other.unparsed;
        self.disconnects += other.disconnects;
        self.connect_failures += other.connect_failures;
        self.connected += other.connected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::new();
        seqs.iter().for_each(|&s| t.observe(s));
        t
    }

    #[test]
    fn in_order_stream_is_clean() {
        let t = track(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (t.distinct, t.gaps, t.duplicates, t.reordered),
            (1000, 0, 0, 0)
        );
        assert_eq!(t.lost(1000), 0);
    }

    #[test]
    fn injected_loss_is_detected() {
        let seqs: Vec<u64> = (0..100).filter(|&s| s != 42).collect();
        let t = track(&seqs);
        assert_eq!(t.gaps, 1);
        assert_eq!(t.duplicates, 0);
        assert_eq!(t.lost(100), 1);
        // A loss at the very end shows only against the acknowledged count.
        let t = track(&(0..99).collect::<Vec<_>>());
        assert_eq!((t.gaps, t.lost(100)), (0, 1));
    }

    #[test]
    fn injected_duplicate_is_detected() {
        let mut seqs: Vec<u64> = (0..100).collect();
        seqs.insert(50, 49);
        let t = track(&seqs);
        assert_eq!((t.duplicates, t.gaps, t.lost(100)), (1, 0, 0));
        // A repeat far behind the window still counts as a duplicate.
        let mut seqs: Vec<u64> = (0..200).collect();
        seqs.push(3);
        assert_eq!(track(&seqs).duplicates, 1);
    }

    #[test]
    fn late_delivery_fills_its_gap() {
        let t = track(&[0, 1, 3, 4, 2, 5]);
        assert_eq!(
            (t.gaps, t.reordered, t.duplicates, t.distinct),
            (0, 1, 0, 6)
        );
        let t = track(&[0, 1, 3, 4, 2, 2]);
        assert_eq!((t.duplicates, t.reordered), (1, 1));
    }

    #[test]
    fn large_jump_clears_window() {
        let t = track(&[0, 500, 501]);
        assert_eq!((t.gaps, t.distinct, t.lost(502)), (499, 3, 499));
    }

    #[test]
    fn latency_accounting_merges_and_summarises() {
        let mut a = SubscriberTotals::default();
        let mut b = SubscriberTotals::default();
        for us in 1..=100u64 {
            record_ns(&mut a.latency, us * 1000);
        }
        record_ns(&mut b.latency, 10_000_000);
        record_ns(&mut b.latency, 0); // clamps to 1 µs instead of failing
        a.merge(&b);
        let s = summarize(&a.latency);
        assert_eq!(s.count, 102);
        assert_eq!(s.p50, 50);
        assert!(s.p99 >= 99 && s.p99 <= 100, "p99 {}", s.p99);
        assert_eq!(
            s.max,
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)
                .unwrap()
                .highest_equivalent(10_000)
        );
        assert_eq!(summarize(&new_histogram()), LatencySummary::default());
    }
}
