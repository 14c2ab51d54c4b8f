//! The result of one scenario run: one JSON object, and a table for people.

use std::{fs::OpenOptions, io::Write, path::Path};

use serde::{Deserialize, Serialize};

use crate::{accounting::LatencySummary, cost::PidCpu, procstat::ProcSample, target::TargetKind};

/// Resource use of a set of processes over the measurement window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcWindow {
    /// The processes measured.
    pub pids: Vec<u32>,
    /// RSS before the streams were opened, KiB.
    pub rss_before_kib: u64,
    /// RSS at the end of the window, KiB.
    pub rss_after_kib: u64,
    /// CPU seconds used during the window.
    pub cpu_s: f64,
    /// `cpu_s` divided by the window: cores busy on average.
    pub cpu_cores: f64,
}

impl ProcWindow {
    /// From samples before the streams, at the window's start and end.
    pub fn new(
        pids: Vec<u32>,
        before: ProcSample,
        start: ProcSample,
        end: ProcSample,
        secs: f64,
    ) -> Self {
        let cpu_s = (end.cpu_s - start.cpu_s).max(0.0);
        Self {
            pids,
            rss_before_kib: before.rss_kib,
            rss_after_kib: end.rss_kib,
            cpu_s: round3(cpu_s),
            cpu_cores: round3(if secs > 0.0 { cpu_s / secs } else { 0.0 }),
        }
    }
}

/// Latency summary in the JSON form (also read back by `summarize`).
pub type Latency = LatencySummary;

/// One scenario run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `fanout`, `push` or `idle`.
    pub scenario: String,
    /// The server kind.
    pub target: TargetKind,
    /// Free-form label (e.g. `nchan-redis`, `herald-2node`).
    pub label: String,
    /// Server nodes subscribers were spread over.
    pub nodes: usize,
    /// Streams requested.
    pub subs: usize,
    /// Topics.
    pub topics: usize,
    /// Streams opened.
    pub connected: u64,
    /// Streams that failed to open.
    pub connect_failures: u64,
    /// Streams the server ended early.
    pub disconnects: u64,
    /// Publish rate asked for (`null`: flat out).
    pub rate: Option<f64>,
    /// Flat out: events per topic the publishers let the subscribers owe
    /// (`--backlog`); `null` at a fixed rate.
    pub backlog: Option<u64>,
    /// Measurement window, seconds.
    pub window_s: f64,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Publishes written.
    pub published: u64,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes refused or unanswered.
    pub publish_failures: u64,
    /// Acknowledged publishes per second in the window.
    pub publishes_per_s: f64,
    /// Events with data received (whole run).
    pub deliveries: u64,
    /// Deliveries per second in the window.
    pub deliveries_per_s: f64,
    /// Acknowledged publishes times their topic's subscribers.
    pub expected_deliveries: u64,
    /// Deliveries missing at the end.
    pub lost: u64,
    /// Skips seen while streaming.
    pub gaps: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries after a later one.
    pub reordered: u64,
    /// Events whose data was not a bench payload.
    pub unparsed: u64,
    /// Publish-to-delivery latency (µs) of events stamped in the window.
    pub latency_us: Latency,
    /// Publish request-to-answer time (µs).
    pub publish_rtt_us: Latency,
    /// The server's processes.
    pub server: ProcWindow,
    /// Auxiliary processes (redis-server), if any, summed.
    pub aux: Option<ProcWindow>,
    /// Each auxiliary process on its own, in `--aux-pid` order (one per
    /// Redis Cluster primary): whether the load splits evenly over the
    /// shards. Empty without `--aux-pid`, and in results written before
    /// it was recorded.
    #[serde(default)]
    pub aux_per_pid: Vec<PidCpu>,
    /// The bench process itself.
    pub bench: ProcWindow,
    /// CPU cores busy on the whole machine during the window, and how much
    /// of it was neither the server, its aux processes nor the bench: other
    /// work sharing the machine, i.e. noise.
    pub machine_cpu_cores: f64,
    /// See `machine_cpu_cores`.
    pub other_cpu_cores: f64,
    /// Idle: server RSS growth per open stream, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Seconds since the Unix epoch at the end of the run.
    pub unix_time: u64,
}

/// Rounds to three decimals for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// Appends the JSON line to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn append_to(&self, path: &Path) -> std::io::Result<()> {
        append_json_line(self, path)
    }

    /// A few lines for a person.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rate = match (self.scenario.as_str(), self.rate) {
            ("idle", _) => "-".to_owned(),
            (_, None) => "max".to_owned(),
            (_, Some(r)) => format!("{r}/s"),
        };
        s.push_str(&format!(
            "{} {:?} {} | subs {} ({} ok, {} failed, {} dropped) topics {} nodes {} rate {}\n",
            self.scenario,
            self.target,
            self.label,
            self.subs,
            self.connected,
            self.connect_failures,
            self.disconnects,
            self.topics,
            self.nodes,
            rate
        ));
        if self.scenario == "idle" {
            s.push_str(&format!(
                "  server RSS {} -> {} KiB: {:.0} B/conn | bench RSS {} KiB\n",
                self.server.rss_before_kib,
                self.server.rss_after_kib,
                self.rss_per_conn_bytes.unwrap_or(0.0),
                self.bench.rss_after_kib
            ));
            return s;
        }
        let l = &self.latency_us;
        s.push_str(&format!(
            "  publishes/s {:.0} | deliveries/s {:.0} | latency us p50 {} p90 {} p99 {} p99.9 {} max {}\n",
            self.publishes_per_s, self.deliveries_per_s, l.p50, l.p90, l.p99, l.p999, l.max
        ));
        s.push_str(&format!(
            "  published {} acked {} failed {} | delivered {} of {} | lost {} dup {} reordered {} unparsed {}\n",
            self.published,
            self.acked,
            self.publish_failures,
            self.deliveries,
            self.expected_deliveries,
            self.lost,
            self.duplicates,
            self.reordered,
            self.unparsed
        ));
        s.push_str(&format!(
            "  cpu cores: server {:.2} bench {:.2}{} other {:.2} | server RSS {} -> {} KiB\n",
            self.server.cpu_cores,
            self.bench.cpu_cores,
            self.aux
                .as_ref()
                .map(|a| format!(" aux {:.2}", a.cpu_cores))
                .unwrap_or_default(),
            self.other_cpu_cores,
            self.server.rss_before_kib,
            self.server.rss_after_kib
        ));
        if self.aux_per_pid.len() > 1 {
            let shards: Vec<String> = self
                .aux_per_pid
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.2} cores ({} s/1k pub)",
                        p.pid,
                        p.cpu_cores,
                        p.cpu_s_per_1k_publishes
                            .map_or_else(|| "-".to_owned(), |c| format!("{c:.4}"))
                    )
                })
                .collect();
            s.push_str(&format!("  aux per pid: {}\n", shards.join(" | ")));
        }
        s
    }
}

/// Appends `value` to `path` as one JSON line (the results files hold one
/// result per line, of any kind).
///
/// # Errors
///
/// When the file cannot be opened or written.
pub fn append_json_line<T: serde::Serialize>(value: &T, path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let line = serde_json::to_string(value).map_err(std::io::Error::other)?;
    writeln!(file, "{line}")
}
