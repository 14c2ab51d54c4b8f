//! What Redis spends per publish, process by process.
//!
//! On a Redis Cluster every primary is its own single-threaded process, so
//! a sum over `--aux-pid`s hides the question that matters: does one shard
//! saturate while the others idle? Each auxiliary process is therefore
//! sampled on its own at both ends of the window, and its CPU time is also
//! expressed per 1,000 acknowledged publishes, the unit that compares a
//! standalone primary with a sharded cluster at different throughputs.

use serde::{Deserialize, Serialize};

use crate::{
    procstat::{sample_pid, ProcSample},
    report::round3,
};

/// One process's CPU over a measurement window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PidCpu {
    /// The process.
    pub pid: u32,
    /// CPU seconds used during the window (user + system).
    pub cpu_s: f64,
    /// `cpu_s` divided by the window: cores busy on average.
    pub cpu_cores: f64,
    /// `cpu_s` per 1,000 publishes acknowledged in the window; `null` when
    /// none was.
    pub cpu_s_per_1k_publishes: Option<f64>,
    /// What the process is, when known (a Redis node's `host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Reads each of `pids` on its own, in order; a process that vanished
/// reads as zero, as in [`crate::procstat::sample_all`].
pub fn sample_each(pids: &[u32]) -> Vec<ProcSample> {
    pids.iter()
        .map(|&pid| sample_pid(pid).unwrap_or_default())
        .collect()
}

/// The sum of per-process samples.
pub fn sum(samples: &[ProcSample]) -> ProcSample {
    samples
        .iter()
        .fold(ProcSample::default(), |acc, s| ProcSample {
            rss_kib: acc.rss_kib + s.rss_kib,
            cpu_s: acc.cpu_s + s.cpu_s,
        })
}

/// CPU seconds per 1,000 publishes; `None` without publishes, where the
/// ratio means nothing.
pub fn per_1k_publishes(cpu_s: f64, publishes: u64) -> Option<f64> {
    (publishes > 0).then(|| cpu_s * 1000.0 / publishes as f64)
}

/// Per-process CPU over a window of `secs` seconds in which `publishes`
/// were acknowledged, from samples taken at its `start` and `end` (same
/// order as `pids`). A process whose counter went backwards (it died and
/// its pid reads as zero) counts as having used nothing.
pub fn per_pid(
    pids: &[u32],
    start: &[ProcSample],
    end: &[ProcSample],
    secs: f64,
    publishes: u64,
) -> Vec<PidCpu> {
    pids.iter()
        .zip(start.iter().zip(end))
        .map(|(&pid, (s, e))| {
            let cpu_s = (e.cpu_s - s.cpu_s).max(0.0);
            PidCpu {
                pid,
                cpu_s: round3(cpu_s),
                cpu_cores: round3(if secs > 0.0 { cpu_s / secs } else { 0.0 }),
                cpu_s_per_1k_publishes: per_1k_publishes(cpu_s, publishes).map(round6),
                node: None,
            }
        })
        .collect()
}

/// Rounds to six decimals: per-publish costs are small numbers, and
/// three decimals would round a lightly loaded shard to zero.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(cpu_s: f64) -> ProcSample {
        ProcSample { rss_kib: 1, cpu_s }
    }

    #[test]
    fn each_process_gets_its_own_share_of_the_window() {
        let pids = [10, 11, 12];
        let start = [cpu(1.0), cpu(2.0), cpu(3.0)];
        let end = [cpu(3.0), cpu(3.0), cpu(3.5)];
        let out = per_pid(&pids, &start, &end, 2.0, 20_000);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].pid, 10);
        assert_eq!(out[0].cpu_s, 2.0);
        assert_eq!(out[0].cpu_cores, 1.0);
        // 2 s for 20,000 publishes: 0.1 s per 1,000.
        assert_eq!(out[0].cpu_s_per_1k_publishes, Some(0.1));
        assert_eq!(out[1].cpu_s_per_1k_publishes, Some(0.05));
        assert_eq!(out[2].cpu_cores, 0.25);
        // The shares add up to what a sum over the processes says.
        let total: f64 = out.iter().filter_map(|p| p.cpu_s_per_1k_publishes).sum();
        let summed = per_1k_publishes(sum(&end).cpu_s - sum(&start).cpu_s, 20_000);
        assert!((total - summed.unwrap()).abs() < 1e-9);
    }

    #[test]
    fn no_publishes_and_vanished_processes_say_so() {
        let out = per_pid(&[1], &[cpu(5.0)], &[cpu(0.0)], 1.0, 0);
        assert_eq!(out[0].cpu_s, 0.0);
        assert_eq!(out[0].cpu_s_per_1k_publishes, None);
        assert_eq!(
            per_pid(&[1], &[cpu(0.0)], &[cpu(1.0)], 0.0, 1)[0].cpu_cores,
            0.0
        );
        assert_eq!(sum(&[cpu(1.0), cpu(2.5)]).cpu_s, 3.5);
        assert_eq!(sum(&[cpu(1.0), cpu(2.5)]).rss_kib, 2);
    }

    #[test]
    fn reads_processes_one_by_one() {
        let me = std::process::id();
        let samples = sample_each(&[me, u32::MAX]);
        assert!(samples[0].rss_kib > 0);
        assert_eq!(samples[1], ProcSample::default());
    }
}
