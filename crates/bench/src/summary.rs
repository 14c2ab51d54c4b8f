//! Turning many JSON results into the head-to-head table.
//!
//! The runner repeats each scenario alternating the servers, so each cell
//! is the median of the runs of one server (label) on one scenario, and the
//! headline is the ratio of herald's median to Nchan's. Labels name the
//! server setup (`herald`, `nchan`, `nchan-2w`, `floor`, `herald-redis`,
//! `herald-cluster`, `nchan-redis`); a label naming a Redis setup (see
//! [`is_redis_label`]) belongs to the Redis table. The Redis-topology
//! tables are in `topologies`.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::Result;

use crate::report::Report;

/// Reads JSON-lines result files; lines that are not reports are skipped.
///
/// # Errors
/// When a file cannot be read.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Report>> {
    crate::topologies::load(paths)
}

/// Whether a label names a Redis-backed setup (`herald-redis`,
/// `nchan-redis`, `herald-cluster`, a future `herald-sentinel`): those
/// runs are compared with each other, never with the in-memory ones.
pub fn is_redis_label(label: &str) -> bool {
    ["redis", "cluster", "sentinel"]
        .iter()
        .any(|word| label.contains(word))
}

/// The label a report is shown under.
pub fn label_of(r: &Report) -> String {
    if r.label.is_empty() {
        format!("{:?}", r.target).to_lowercase()
    } else {
        r.label.clone()
    }
}

/// Whether a run is comparable: every stream opened and the server was
/// still there at the end of the window. A run where a server died (killed,
/// crashed, a node that never started) or refused streams measured a
/// different load, so it is left out of the medians and counted apart.
pub fn comparable(r: &Report) -> bool {
    r.connect_failures == 0 && (r.server.pids.is_empty() || r.server.rss_after_kib > 0)
}

/// A scenario configuration: what the runs in one row share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Config {
    /// `redis` or `memory`.
    pub mode: String,
    /// Scenario name.
    pub scenario: String,
    /// Subscribers.
    pub subs: usize,
    /// Rate in milli-messages per second, or `None` for flat out.
    pub rate_milli: Option<u64>,
    /// Flat out: the backlog window.
    pub backlog: Option<u64>,
}

impl Config {
    /// The configuration of one report.
    pub fn of(r: &Report) -> Self {
        Self {
            mode: if is_redis_label(&label_of(r)) {
                "redis"
            } else {
                "memory"
            }
            .to_owned(),
            scenario: r.scenario.clone(),
            subs: r.subs,
            rate_milli: r.rate.map(|x| (x * 1000.0).round() as u64),
            backlog: r.backlog,
        }
    }

    fn rate_text(&self) -> String {
        match (self.scenario.as_str(), self.rate_milli) {
            ("idle", _) => "-".to_owned(),
            (_, None) => match self.backlog {
                Some(b) => format!("max, window {b}"),
                None => "max".to_owned(),
            },
            (_, Some(m)) => format!("{}/s", m as f64 / 1000.0),
        }
    }
}

/// A metric shown in the table.
struct Metric {
    name: &'static str,
    get: fn(&Report) -> Option<f64>,
    /// Whether a larger value is better; `None`: the ratio is context, not
    /// a verdict (CPU used, a rate the bench imposed).
    higher_is_better: Option<bool>,
}

fn metrics_for(config: &Config) -> Vec<Metric> {
    let deliveries = Metric {
        name: "deliveries/s",
        get: |r| Some(r.deliveries_per_s),
        higher_is_better: Some(true),
    };
    let publishes = Metric {
        name: "publishes/s",
        get: |r| Some(r.publishes_per_s),
        higher_is_better: Some(true),
    };
    let p50 = Metric {
        name: "p50 latency ms",
        get: |r| (r.latency_us.count > 0).then(|| r.latency_us.p50 as f64 / 1000.0),
        higher_is_better: Some(false),
    };
    let p99 = Metric {
        name: "p99 latency ms",
        get: |r| (r.latency_us.count > 0).then(|| r.latency_us.p99 as f64 / 1000.0),
        higher_is_better: Some(false),
    };
    let cores = Metric {
        name: "server CPU cores",
        get: |r| Some(r.server.cpu_cores),
        higher_is_better: None,
    };
    let bench = Metric {
        name: "bench CPU cores",
        get: |r| Some(r.bench.cpu_cores),
        higher_is_better: None,
    };
    let per_cpu = Metric {
        name: "deliveries per server CPU-second",
        get: |r| (r.server.cpu_cores > 0.0).then(|| r.deliveries_per_s / r.server.cpu_cores),
        higher_is_better: Some(true),
    };
    let fixed_rate = Metric {
        name: "publishes/s",
        get: |r| Some(r.publishes_per_s),
        higher_is_better: None,
    };
    match (config.scenario.as_str(), config.rate_milli) {
        ("idle", _) => vec![Metric {
            name: "RSS bytes/conn",
            get: |r| r.rss_per_conn_bytes,
            higher_is_better: Some(false),
        }],
        ("fanout", None) => vec![deliveries, p99, cores, per_cpu, bench],
        ("fanout", Some(_)) => vec![p50, p99, cores],
        (_, None) => vec![publishes, p99, cores, per_cpu, bench],
        _ => vec![p50, p99, fixed_rate, cores],
    }
}

/// The median of `values` (NaN-free); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Median of a metric over the reports of one label and configuration.
pub fn median_of(reports: &[&Report], get: fn(&Report) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = reports.iter().filter_map(|r| get(r)).collect();
    median(&mut values)
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The markdown tables: one per mode, a row per scenario and metric, a
/// column per label, then herald/Nchan ratios; then loss and duplicates.
pub fn markdown(reports: &[Report]) -> String {
    let mut groups: BTreeMap<Config, BTreeMap<String, Vec<&Report>>> = BTreeMap::new();
    for r in reports.iter().filter(|r| comparable(r)) {
        groups
            .entry(Config::of(r))
            .or_default()
            .entry(label_of(r))
            .or_default()
            .push(r);
    }
    let mut out = String::new();
    for mode in ["memory", "redis"] {
        let rows: Vec<_> = groups.iter().filter(|(c, _)| c.mode == mode).collect();
        if rows.is_empty() {
            continue;
        }
        let mut labels: Vec<String> = rows
            .iter()
            .flat_map(|(_, by_label)| by_label.keys().cloned())
            .collect();
        labels.sort_by_key(|l| label_rank(l));
        labels.dedup();
        let (herald, nchan) = if mode == "redis" {
            ("herald-redis", "nchan-redis")
        } else {
            ("herald", "nchan")
        };
        let _ = writeln!(out, "\n**{mode}**\n");
        let _ = write!(out, "| scenario | subs | rate | metric |");
        for l in &labels {
            let _ = write!(out, " {l} |");
        }
        let _ = writeln!(out, " {herald}/{nchan} |");
        let _ = writeln!(out, "|{}", "---|".repeat(labels.len() + 5));
        for (config, by_label) in &rows {
            for metric in metrics_for(config) {
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} |",
                    config.scenario,
                    config.subs,
                    config.rate_text(),
                    metric.name
                );
                let mut values = BTreeMap::new();
                for l in &labels {
                    let v = by_label.get(l).and_then(|rs| median_of(rs, metric.get));
                    values.insert(l.as_str(), v);
                    let n = by_label.get(l).map_or(0, Vec::len);
                    let _ = write!(
                        out,
                        " {}{} |",
                        fmt_value(v),
                        if n > 1 {
                            format!(" (n={n})")
                        } else {
                            String::new()
                        }
                    );
                }
                let ratio = match (
                    values.get(herald).copied().flatten(),
                    values.get(nchan).copied().flatten(),
                ) {
                    (Some(h), Some(n)) if n > 0.0 => match metric.higher_is_better {
                        None => format!("{:.2}×", h / n),
                        Some(better) if (h >= n) == better => format!("**{:.2}×**", h / n),
                        Some(_) => format!("**{:.2}×** ✗", h / n),
                    },
                    _ => "-".to_owned(),
                };
                let _ = writeln!(out, " {ratio} |");
            }
        }
    }
    let _ = writeln!(out, "\n**delivery check** (runs summed: lost / duplicated / streams dropped by the server / connect failures; a run where a stream failed to open or the server process was gone by the end is left out of every median and only counted in the last column)\n");
    let mut by_label: BTreeMap<String, [u64; 6]> = BTreeMap::new();
    for r in reports {
        let e = by_label.entry(label_of(r)).or_default();
        if !comparable(r) {
            e[5] += 1;
            continue;
        }
        e[0] += 1;
        e[1] += r.lost;
        e[2] += r.duplicates;
        e[3] += r.disconnects;
        e[4] += r.connect_failures;
    }
    let _ = writeln!(out, "| label | runs | lost | duplicated | dropped | connect failures | runs excluded |\n|---|---|---|---|---|---|---|");
    for (label, [runs, lost, dup, dropped, failed, gone]) in by_label {
        let _ = writeln!(
            out,
            "| {label} | {runs} | {lost} | {dup} | {dropped} | {failed} | {gone} |"
        );
    }
    out
}

/// Column order: herald first, then Nchan, then the floor.
pub fn label_rank(label: &str) -> (u8, String) {
    let rank = if label.starts_with("herald") {
        0
    } else if label.starts_with("nchan") {
        1
    } else {
        2
    };
    (rank, label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_and_sentinel_setups_are_redis_setups() {
        for label in [
            "herald-redis",
            "nchan-redis",
            "herald-cluster",
            "herald-sentinel",
        ] {
            assert!(is_redis_label(label), "{label}");
        }
        for label in ["herald", "nchan", "nchan-2w", "floor"] {
            assert!(!is_redis_label(label), "{label}");
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
