//! The Redis-topology part of `summarize`: herald on one Redis primary
//! (`herald-redis`) against herald on a sharded Redis Cluster
//! (`herald-cluster`), with the embedded broker (`herald`) as the
//! reference, and what Redis itself spends per publish, shard by shard.
//!
//! Three tables, each only when its results are there:
//!
//! - **HTTP scenarios**: push and fan-out flat out, at the largest
//!   subscriber count the Redis setups ran, and Redis's CPU per 1,000
//!   publishes in the push runs, in total and per shard (largest first:
//!   an even split reads as equal numbers, a hot shard as one big one);
//! - **ceiling** (`herald-bench ceiling`): the publish step alone;
//! - **failover** (`herald-bench failover`): how long publishes fail.
//!
//! Every cell is a median over runs, like the head-to-head tables.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::PathBuf};

use anyhow::{Context, Result};

use crate::{
    ceiling::CeilingReport,
    cost::per_1k_publishes,
    failover::{FailoverMedian, FailoverRun},
    report::Report,
    summary::{comparable, is_redis_label, label_of, median},
};

/// Reads the records of one shape from JSON-lines files; other lines are
/// skipped (the files mix scenario reports, ceilings and failovers).
///
/// # Errors
/// When a file cannot be read.
pub fn load<T: serde::de::DeserializeOwned>(paths: &[PathBuf]) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for path in paths {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<T>(l).ok()),
        );
    }
    Ok(out)
}

/// Redis CPU seconds per 1,000 publishes acknowledged in a run's window,
/// all `--aux-pid`s together.
pub fn redis_cpu_per_1k(r: &Report) -> Option<f64> {
    let aux = r.aux.as_ref()?;
    per_1k_publishes(aux.cpu_s, publishes_in_window(r))
}

/// The same per Redis process, largest first; empty unless there are
/// several (one process is the total already).
pub fn shards_per_1k(r: &Report) -> Vec<f64> {
    if r.aux_per_pid.len() < 2 {
        return Vec::new();
    }
    let publishes = publishes_in_window(r);
    let mut shares: Vec<f64> = r
        .aux_per_pid
        .iter()
        .filter_map(|p| per_1k_publishes(p.cpu_s, publishes))
        .collect();
    shares.sort_by(|a, b| b.total_cmp(a));
    shares
}

/// The busiest Redis process's cores: the one that saturates first.
pub fn busiest_cores(r: &Report) -> Option<f64> {
    r.aux_per_pid.iter().map(|p| p.cpu_cores).reduce(f64::max)
}

fn publishes_in_window(r: &Report) -> u64 {
    (r.publishes_per_s * r.window_s).round() as u64
}

/// Per rank, the median over runs of that rank's value (runs with fewer
/// values leave the rank out).
pub fn median_by_rank(runs: &[Vec<f64>]) -> Vec<f64> {
    let ranks = runs.iter().map(Vec::len).max().unwrap_or(0);
    (0..ranks)
        .filter_map(|i| {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(i).copied()).collect();
            median(&mut v)
        })
        .collect()
}

/// One setup's row of the HTTP table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyRow {
    /// The label.
    pub label: String,
    /// Push flat out: median publishes/s, and the runs behind it.
    pub push: Option<(f64, usize)>,
    /// Fan-out flat out: median deliveries/s, and the runs behind it.
    pub fanout: Option<(f64, usize)>,
    /// Push: median Redis CPU s per 1,000 publishes.
    pub redis_per_1k: Option<f64>,
    /// Push: per shard, largest first.
    pub shards_per_1k: Vec<f64>,
    /// Push: the busiest Redis process's cores.
    pub busiest_cores: Option<f64>,
}

/// Which runs a column takes: the scenario flat out at the largest
/// subscriber count a Redis setup ran it with, and the largest window
/// (backlog) there (the default 32 rather than lockstep).
fn pick(reports: &[&Report], scenario: &str) -> Option<(usize, Option<u64>)> {
    reports
        .iter()
        .filter(|r| r.scenario == scenario && r.rate.is_none() && is_redis_label(&label_of(r)))
        .map(|r| (r.subs, r.backlog))
        .max()
}

/// The setups of the HTTP table, `herald` first, then the Redis-backed
/// herald setups, standalone before cluster; and the subscriber counts of
/// its push and fan-out columns.
pub fn rows(reports: &[Report]) -> (Option<usize>, Option<usize>, Vec<TopologyRow>) {
    let ok: Vec<&Report> = reports.iter().filter(|r| comparable(r)).collect();
    let push = pick(&ok, "push");
    let fanout = pick(&ok, "fanout");
    let mut labels: Vec<String> = ok
        .iter()
        .map(|r| label_of(r))
        .filter(|l| l.starts_with("herald") && is_redis_label(l))
        .collect();
    if labels.is_empty() {
        return (None, None, Vec::new());
    }
    labels.push("herald".into());
    labels.sort_by_key(|l| (l != "herald", l != "herald-redis", l.clone()));
    labels.dedup();
    let runs = |label: &str, scenario: &str, at: Option<(usize, Option<u64>)>| -> Vec<&Report> {
        let Some((subs, backlog)) = at else {
            return Vec::new();
        };
        ok.iter()
            .filter(|r| {
                label_of(r) == label
                    && r.scenario == scenario
                    && r.rate.is_none()
                    && r.subs == subs
                    && r.backlog == backlog
            })
            .copied()
            .collect()
    };
    let med = |rs: &[&Report], get: fn(&Report) -> Option<f64>| {
        let mut v: Vec<f64> = rs.iter().filter_map(|r| get(r)).collect();
        median(&mut v).map(|m| (m, v.len()))
    };
    let out = labels
        .iter()
        .map(|label| {
            let push_runs = runs(label, "push", push);
            let fanout_runs = runs(label, "fanout", fanout);
            let shards: Vec<Vec<f64>> = push_runs.iter().map(|r| shards_per_1k(r)).collect();
            TopologyRow {
                label: label.clone(),
                push: med(&push_runs, |r| Some(r.publishes_per_s)),
                fanout: med(&fanout_runs, |r| Some(r.deliveries_per_s)),
                redis_per_1k: med(&push_runs, redis_cpu_per_1k).map(|(m, _)| m),
                shards_per_1k: median_by_rank(&shards),
                busiest_cores: med(&push_runs, busiest_cores).map(|(m, _)| m),
            }
        })
        .filter(|row| row.push.is_some() || row.fanout.is_some())
        .collect();
    (push.map(|p| p.0), fanout.map(|f| f.0), out)
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 1000.0 => group(v.round() as i64),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// A per-publish cost: small, so four decimals.
fn cost(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

fn with_n(v: Option<(f64, usize)>) -> String {
    match v {
        None => "-".to_owned(),
        Some((m, n)) if n > 1 => format!("{} (n={n})", num(Some(m))),
        Some((m, _)) => num(Some(m)),
    }
}

fn shards(v: &[f64]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// Thousands separated by commas, as the other tables print rates.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The three tables, as markdown; empty when none has data.
pub fn markdown(
    reports: &[Report],
    ceilings: &[CeilingReport],
    failovers: &[FailoverRun],
) -> String {
    let mut out = String::new();
    let (push_subs, fanout_subs, table) = rows(reports);
    if !table.is_empty() {
        let _ = writeln!(
            out,
            "\n**Redis topologies** (herald as 2 nodes, publishes to the first; Redis CPU from the push runs, per shard largest first)\n"
        );
        let _ = writeln!(
            out,
            "| setup | push{}, max: publishes/s | fanout{}, max: deliveries/s | Redis CPU s per 1,000 publishes | per shard | busiest Redis process, cores |",
            push_subs.map_or(String::new(), |s| format!(" {s} subs")),
            fanout_subs.map_or(String::new(), |s| format!(" {s} subs")),
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for row in &table {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.label,
                with_n(row.push),
                with_n(row.fanout),
                cost(row.redis_per_1k),
                shards(&row.shards_per_1k),
                num(row.busiest_cores)
            );
        }
    }
    if !ceilings.is_empty() {
        let _ = writeln!(
            out,
            "\n**Redis ceiling** (herald's publish step through `herald_broker`, no HTTP; `herald-bench ceiling`)\n"
        );
        let _ = writeln!(
            out,
            "| label | topology | tasks | topics | publishes/s | call p50 ms | call p99 ms | Redis CPU s per 1,000 publishes | per shard | busiest Redis process, cores | EVALSHA µs/call |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut groups: BTreeMap<(String, String, usize, usize), Vec<&CeilingReport>> =
            BTreeMap::new();
        for c in ceilings {
            groups
                .entry((c.label.clone(), c.topology.clone(), c.concurrency, c.topics))
                .or_default()
                .push(c);
        }
        for ((label, topology, tasks, topics), runs) in groups {
            let med = |get: fn(&CeilingReport) -> Option<f64>| {
                let mut v: Vec<f64> = runs.iter().filter_map(|r| get(r)).collect();
                median(&mut v).map(|m| (m, v.len()))
            };
            let per_shard: Vec<Vec<f64>> = runs
                .iter()
                .map(|r| {
                    let mut v: Vec<f64> = r
                        .redis_per_pid
                        .iter()
                        .filter_map(|p| p.cpu_s_per_1k_publishes)
                        .collect();
                    v.sort_by(|a, b| b.total_cmp(a));
                    if v.len() < 2 {
                        v.clear();
                    }
                    v
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {topology} | {tasks} | {topics} | {} | {} | {} | {} | {} | {} | {} |",
                if label.is_empty() { "-" } else { &label },
                with_n(med(|r| Some(r.publishes_per_s))),
                num(
                    med(|r| (r.call_us.count > 0).then(|| r.call_us.p50 as f64 / 1000.0))
                        .map(|m| m.0)
                ),
                num(
                    med(|r| (r.call_us.count > 0).then(|| r.call_us.p99 as f64 / 1000.0))
                        .map(|m| m.0)
                ),
                cost(med(|r| r.redis_cpu_s_per_1k_publishes).map(|m| m.0)),
                shards(&median_by_rank(&per_shard)),
                num(
                    med(|r| r.redis_per_pid.iter().map(|p| p.cpu_cores).reduce(f64::max))
                        .map(|m| m.0)
                ),
                num(med(|r| r.evalsha.as_ref().and_then(|e| e.usec_per_call)).map(|m| m.0)),
            );
        }
    }
    if !failovers.is_empty() {
        let _ = writeln!(
            out,
            "\n**Failover** (a primary killed with SIGKILL under 1 publish per interval; medians over recovered runs; `herald-bench failover`)\n"
        );
        let _ = writeln!(
            out,
            "| label | runs (recovered) | kill → promotion visible, ms | kill → first 202, ms | promotion → first 202, ms | publishes failed meanwhile |\n|---|---|---|---|---|---|"
        );
        let mut groups: BTreeMap<String, Vec<FailoverRun>> = BTreeMap::new();
        for f in failovers {
            groups.entry(f.label.clone()).or_default().push(f.clone());
        }
        for (label, runs) in groups {
            let m = FailoverMedian::of(&label, runs[0].topology, runs.len(), &runs);
            let _ = writeln!(
                out,
                "| {label} | {} ({}) | {} | {} | {} | {} |",
                m.runs,
                m.recovered,
                num(m.kill_to_promotion_ms),
                num(m.kill_to_first_202_ms),
                num(m.promotion_to_first_202_ms),
                num(m.failed_publishes)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{accounting::LatencySummary, cost::PidCpu, report::ProcWindow, target::TargetKind};

    /// A flat-out run of `label`; `aux` is each Redis process's CPU
    /// seconds over a 10 s window.
    fn report(label: &str, scenario: &str, subs: usize, rate: f64, aux: &[f64]) -> Report {
        let window_s = 10.0;
        let publishes = (rate * window_s) as u64;
        let aux_per_pid: Vec<PidCpu> = aux
            .iter()
            .enumerate()
            .map(|(i, &cpu_s)| PidCpu {
                pid: 100 + i as u32,
                cpu_s,
                cpu_cores: cpu_s / window_s,
                cpu_s_per_1k_publishes: per_1k_publishes(cpu_s, publishes),
                node: None,
            })
            .collect();
        Report {
            scenario: scenario.into(),
            target: TargetKind::Herald,
            label: label.into(),
            nodes: 2,
            subs,
            topics: subs,
            connected: subs as u64,
            connect_failures: 0,
            disconnects: 0,
            rate: None,
            backlog: Some(32),
            window_s,
            payload_bytes: 100,
            published: publishes,
            acked: publishes,
            publish_failures: 0,
            publishes_per_s: rate,
            deliveries: publishes,
            deliveries_per_s: rate,
            expected_deliveries: publishes,
            lost: 0,
            gaps: 0,
            duplicates: 0,
            reordered: 0,
            unparsed: 0,
            latency_us: LatencySummary::default(),
            publish_rtt_us: LatencySummary::default(),
            server: ProcWindow {
                pids: vec![1],
                rss_after_kib: 1,
                ..ProcWindow::default()
            },
            aux: (!aux.is_empty()).then(|| ProcWindow {
                pids: aux_per_pid.iter().map(|p| p.pid).collect(),
                cpu_s: aux.iter().sum(),
                cpu_cores: aux.iter().sum::<f64>() / window_s,
                ..ProcWindow::default()
            }),
            aux_per_pid,
            bench: ProcWindow::default(),
            machine_cpu_cores: 0.0,
            other_cpu_cores: 0.0,
            rss_per_conn_bytes: None,
            unix_time: 0,
        }
    }

    #[test]
    fn per_shard_costs_are_per_1000_publishes_largest_first() {
        // 20,000 publishes/s for 10 s; shards used 3, 5 and 2 CPU seconds.
        let r = report("herald-cluster", "push", 10_000, 20_000.0, &[3.0, 5.0, 2.0]);
        assert_eq!(redis_cpu_per_1k(&r), Some(0.05));
        let shards = shards_per_1k(&r);
        assert_eq!(shards, vec![0.025, 0.015, 0.01]);
        assert_eq!(busiest_cores(&r), Some(0.5));
        // One process: the total says it all.
        let single = report("herald-redis", "push", 10_000, 20_000.0, &[4.0]);
        assert!(shards_per_1k(&single).is_empty());
        assert_eq!(redis_cpu_per_1k(&single), Some(0.02));
        assert_eq!(
            redis_cpu_per_1k(&report("herald", "push", 1, 1.0, &[])),
            None
        );
    }

    #[test]
    fn ranks_take_their_own_medians() {
        let runs = vec![vec![3.0, 2.0, 1.0], vec![5.0, 2.0, 0.0], vec![4.0, 1.0]];
        assert_eq!(median_by_rank(&runs), vec![4.0, 2.0, 0.5]);
        assert!(median_by_rank(&[]).is_empty());
    }

    #[test]
    fn the_table_has_a_row_per_setup_at_the_redis_subscriber_count() {
        let reports = vec![
            report("herald", "push", 10_000, 90_000.0, &[]),
            // Embedded herald at another size: not this table's column.
            report("herald", "push", 1_000, 1.0, &[]),
            report("herald", "fanout", 10_000, 2_000_000.0, &[]),
            report("herald-redis", "push", 10_000, 20_000.0, &[4.0]),
            report("herald-redis", "push", 10_000, 30_000.0, &[6.0]),
            report("herald-redis", "fanout", 10_000, 300_000.0, &[1.0]),
            report("herald-cluster", "push", 10_000, 30_000.0, &[3.0, 2.0, 1.0]),
            report("nchan-redis", "push", 10_000, 5_000.0, &[9.0]),
        ];
        let (push, fanout, rows) = rows(&reports);
        assert_eq!((push, fanout), (Some(10_000), Some(10_000)));
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["herald", "herald-redis", "herald-cluster"]);
        assert_eq!(rows[0].push, Some((90_000.0, 1)));
        assert_eq!(rows[0].fanout, Some((2_000_000.0, 1)));
        assert_eq!(rows[0].redis_per_1k, None);
        assert_eq!(rows[1].push, Some((25_000.0, 2)));
        assert_eq!(rows[1].redis_per_1k, Some(0.02));
        assert!(rows[1].shards_per_1k.is_empty());
        assert_eq!(rows[2].fanout, None);
        assert_eq!(rows[2].redis_per_1k, Some(0.02));
        assert_eq!(rows[2].shards_per_1k.len(), 3);
        assert!((rows[2].shards_per_1k[0] - 0.01).abs() < 1e-12);
        let text = markdown(&reports, &[], &[]);
        assert!(text.contains("| herald-redis | 25,000 (n=2) | 300,000 | 0.0200 | - | 0.50 |"));
        assert!(text.contains(
            "| herald-cluster | 30,000 | - | 0.0200 | 0.0100 / 0.0067 / 0.0033 | 0.30 |"
        ));
        assert!(!text.contains("nchan-redis"));
        assert!(!text.contains("Failover"));
        // Without Redis setups there is nothing to compare.
        assert!(markdown(&reports[..3], &[], &[]).is_empty());
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(-1000), "-1,000");
        assert_eq!(group(999), "999");
        assert_eq!(num(Some(12_345.6)), "12,346");
    }
}
