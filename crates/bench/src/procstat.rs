//! Memory and CPU time of processes, read from `/proc`.
//!
//! A server is one or more pids (several herald nodes; nginx's master and
//! workers); their numbers are summed. `with_children` adds the direct
//! children of each pid, so passing nginx's master pid also counts its
//! workers.

use std::{fs, io};

use serde::Serialize;

/// One reading of a set of processes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    /// Resident set size, KiB (`VmRSS`, which includes shared memory the
    /// processes touched, such as Nchan's shared-memory zone).
    pub rss_kib: u64,
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux has reported
/// `USER_HZ` = 100 to user space on every architecture for decades.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads one process.
///
/// # Errors
/// When the process does not exist or `/proc` cannot be read.
pub fn sample_pid(pid: u32) -> io::Result<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields are
    // counted after the last ')'. utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // `after` starts at field 3 (state), so field n is index n - 3.
    let cpu_ticks = ticks(14 - 3) + ticks(15 - 3);
    Ok(ProcSample {
        rss_kib,
        cpu_s: cpu_ticks as f64 / TICKS_PER_SECOND,
    })
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Expands `pids` with their direct children (nginx workers), without
/// repeats.
pub fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    for &pid in pids {
        for child in children(pid) {
            if !all.contains(&child) {
                all.push(child);
            }
        }
    }
    all
}

/// Sums a set of processes; pids that vanished count as zero.
pub fn sample_all(pids: &[u32]) -> ProcSample {
    pids.iter()
        .filter_map(|&pid| sample_pid(pid).ok())
        .fold(ProcSample::default(), |acc, s| ProcSample {
            rss_kib: acc.rss_kib + s.rss_kib,
            cpu_s: acc.cpu_s + s.cpu_s,
        })
}

/// CPU seconds the whole machine spent busy (all cores, every state but
/// idle and iowait), from the first line of `/proc/stat`.
pub fn machine_busy_s() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / TICKS_PER_SECOND
}

/// This process.
pub fn sample_self() -> ProcSample {
    sample_pid(std::process::id()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = sample_self();
        assert!(me.rss_kib > 0);
        assert!(me.cpu_s >= 0.0);
        assert!(sample_all(&[std::process::id(), u32::MAX]).rss_kib > 0);
        assert!(machine_busy_s() > 0.0);
    }
}
