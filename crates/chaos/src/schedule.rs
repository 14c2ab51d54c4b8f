//! The fault schedule: which fault starts when, drawn from a seed, so a run
//! can be repeated exactly (the same seed gives the same faults at the same
//! offsets; what the processes do in between is up to them).
//!
//! Faults overlap: a new one starts every `every` on average whatever is
//! still going on, each lasts a random while, and a target that is already
//! faulted (a node that is down, a link already cut) is skipped rather
//! than faulted twice.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

/// What breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FaultKind {
    /// SIGKILL a node, restart it later.
    NodeKill(usize),
    /// SIGTERM a node (drain), restart it later.
    NodeDrain(usize),
    /// SIGSTOP a node, SIGCONT it later.
    NodePause(usize),
    /// SIGSTOP Redis (every primary), SIGCONT it later.
    RedisPause,
    /// Restart Redis keeping its data (append-only file).
    RedisRestart,
    /// Restart Redis without its data (as without persistence).
    RedisRestartEmpty,
    /// Kill the primary; Sentinel or Cluster promotes a replica (writes
    /// not yet replicated are lost).
    PrimaryKill,
    /// SIGSTOP a primary, SIGCONT it later; frozen long enough, it is
    /// failed over like a dead one.
    PrimaryPause,
    /// A failover that loses nothing (`CLUSTER FAILOVER`, or `SENTINEL
    /// FAILOVER`, which may lose the old primary's last writes).
    Failover,
    /// Close a node's connections to Redis and refuse new ones.
    CutRedisLink(usize),
    /// Stop moving bytes between a node and Redis.
    StallRedisLink(usize),
    /// Close clients' connections to a node and refuse new ones.
    CutClientLink(usize),
    /// Stop moving bytes between clients and a node.
    StallClientLink(usize),
    /// A client stops reading for a while.
    SlowClient(usize),
    /// A client drops its stream and resumes on another node.
    SwitchNode(usize),
}

impl FaultKind {
    /// A short name for counts and tables.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::NodeKill(_) => "node SIGKILL + restart",
            FaultKind::NodeDrain(_) => "node SIGTERM drain + restart",
            FaultKind::NodePause(_) => "node SIGSTOP/SIGCONT",
            FaultKind::RedisPause => "Redis SIGSTOP/SIGCONT",
            FaultKind::RedisRestart => "Redis restart, data kept",
            FaultKind::RedisRestartEmpty => "Redis restart, data lost",
            FaultKind::PrimaryKill => "primary SIGKILL (promotion)",
            FaultKind::PrimaryPause => "primary SIGSTOP/SIGCONT",
            FaultKind::Failover => "manual failover",
            FaultKind::CutRedisLink(_) => "node-Redis link cut",
            FaultKind::StallRedisLink(_) => "node-Redis link stalled",
            FaultKind::CutClientLink(_) => "client-node link cut",
            FaultKind::StallClientLink(_) => "client-node link stalled",
            FaultKind::SlowClient(_) => "slow subscriber",
            FaultKind::SwitchNode(_) => "client switches node",
        }
    }

    /// Whether it can lose history that was acknowledged: resyncs after it
    /// are expected.
    pub fn loses_history(&self) -> bool {
        matches!(
            self,
            FaultKind::RedisRestartEmpty | FaultKind::PrimaryKill | FaultKind::Failover
        )
    }

    /// The Redis-wide resource it holds, if any (one Redis fault at a time).
    fn is_redis(&self) -> bool {
        matches!(
            self,
            FaultKind::RedisPause
                | FaultKind::RedisRestart
                | FaultKind::RedisRestartEmpty
                | FaultKind::PrimaryKill
                | FaultKind::PrimaryPause
                | FaultKind::Failover
        )
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// When it starts, from the start of the fault phase.
    pub at: Duration,
    /// What breaks.
    pub kind: FaultKind,
    /// How long until it is healed.
    pub lasts: Duration,
}

/// Which faults a topology supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capabilities {
    /// One primary behind proxies the tool owns: every fault.
    Standalone,
    /// Primaries found through Sentinel or Cluster announce their own
    /// addresses, so node-Redis links cannot be proxied: no link faults on
    /// that side, and data loss comes from failovers instead of restarts.
    Replicated,
}

/// Draws the faults of a run of `duration`, one every `every` on average.
pub fn plan(
    seed: u64,
    duration: Duration,
    every: Duration,
    nodes: usize,
    clients: usize,
    capabilities: Capabilities,
) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds: Vec<fn(&mut StdRng, usize, usize) -> FaultKind> = vec![
        |r, n, _| FaultKind::NodeKill(r.random_range(0..n)),
        |r, n, _| FaultKind::NodeDrain(r.random_range(0..n)),
        |r, n, _| FaultKind::NodePause(r.random_range(0..n)),
        |r, _, c| FaultKind::SlowClient(r.random_range(0..c)),
        |r, _, c| FaultKind::SwitchNode(r.random_range(0..c)),
        |r, n, _| FaultKind::CutClientLink(r.random_range(0..n)),
        |r, n, _| FaultKind::StallClientLink(r.random_range(0..n)),
    ];
    match capabilities {
        Capabilities::Standalone => kinds.extend([
            (|_, _, _| FaultKind::RedisPause) as fn(&mut StdRng, usize, usize) -> FaultKind,
            |_, _, _| FaultKind::RedisRestart,
            |_, _, _| FaultKind::RedisRestartEmpty,
            |r, n, _| FaultKind::CutRedisLink(r.random_range(0..n)),
            |r, n, _| FaultKind::StallRedisLink(r.random_range(0..n)),
        ]),
        Capabilities::Replicated => kinds.extend([
            (|_, _, _| FaultKind::PrimaryKill) as fn(&mut StdRng, usize, usize) -> FaultKind,
            |_, _, _| FaultKind::PrimaryPause,
            |_, _, _| FaultKind::Failover,
        ]),
    }
    let mut planned = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        // Exponential-ish gaps around `every`, so faults sometimes bunch up.
        let gap = every.mul_f64(rng.random_range(0.2..1.8));
        at += gap;
        if at >= duration {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())](&mut rng, nodes, clients);
        let lasts = match kind {
            FaultKind::SwitchNode(_) | FaultKind::RedisRestart | FaultKind::RedisRestartEmpty => {
                Duration::ZERO
            }
            FaultKind::PrimaryKill => Duration::from_millis(rng.random_range(500..3000)),
            // Sometimes past the failure detection (Cluster 2 s, Sentinel
            // 1 s), sometimes not.
            FaultKind::PrimaryPause => Duration::from_millis(rng.random_range(300..5000)),
            _ => Duration::from_millis(rng.random_range(300..4000)),
        };
        planned.push(Planned { at, kind, lasts });
    }
    planned
}

/// Whether `kind` may start while `active` faults are going on: one fault
/// per target, one Redis-wide fault at a time, and at least one node up.
pub fn compatible(kind: &FaultKind, active: &[FaultKind], nodes: usize) -> bool {
    let node_down = |k: &FaultKind| match k {
        FaultKind::NodeKill(n) | FaultKind::NodeDrain(n) | FaultKind::NodePause(n) => Some(*n),
        _ => None,
    };
    let target = |k: &FaultKind| -> Option<(u8, usize)> {
        match k {
            FaultKind::NodeKill(n) | FaultKind::NodeDrain(n) | FaultKind::NodePause(n) => {
                Some((0, *n))
            }
            FaultKind::CutRedisLink(n) | FaultKind::StallRedisLink(n) => Some((1, *n)),
            FaultKind::CutClientLink(n) | FaultKind::StallClientLink(n) => Some((2, *n)),
            FaultKind::SlowClient(c) | FaultKind::SwitchNode(c) => Some((3, *c)),
            _ => None,
        }
    };
    if kind.is_redis() && active.iter().any(FaultKind::is_redis) {
        return false;
    }
    if let Some(t) = target(kind) {
        if active.iter().any(|a| target(a) == Some(t)) {
            return false;
        }
    }
    if let Some(n) = node_down(kind) {
        let down: Vec<usize> = active.iter().filter_map(node_down).collect();
        if down.contains(&n) || down.len() + 1 >= nodes {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_plan() {
        let plan_of = |seed| {
            plan(
                seed,
                Duration::from_secs(60),
                Duration::from_secs(2),
                3,
                8,
                Capabilities::Standalone,
            )
        };
        assert_eq!(plan_of(7), plan_of(7));
        assert_ne!(plan_of(7), plan_of(8));
        let planned = plan_of(7);
        assert!(planned.len() > 15, "{}", planned.len());
        assert!(planned.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn replicated_topologies_get_failovers_instead_of_restarts() {
        let planned = plan(
            3,
            Duration::from_secs(600),
            Duration::from_secs(1),
            3,
            8,
            Capabilities::Replicated,
        );
        assert!(planned.iter().any(|p| p.kind == FaultKind::PrimaryKill));
        assert!(!planned.iter().any(|p| matches!(
            p.kind,
            FaultKind::RedisRestartEmpty | FaultKind::CutRedisLink(_)
        )));
    }

    #[test]
    fn one_fault_per_target_and_a_node_always_up() {
        let active = [FaultKind::NodeKill(0), FaultKind::RedisPause];
        assert!(!compatible(&FaultKind::NodePause(0), &active, 3));
        assert!(!compatible(&FaultKind::RedisRestart, &active, 3));
        assert!(!compatible(&FaultKind::NodeDrain(1), &active, 2));
        assert!(compatible(&FaultKind::NodeDrain(1), &active, 3));
        assert!(compatible(&FaultKind::CutRedisLink(0), &active, 3));
    }
}
