//! herald's chaos soak: a real topology (herald nodes, Redis standalone,
//! Sentinel or Cluster, proxies the tool owns), publishers and resuming
//! subscribers running against it, and faults drawn from a seed — crashes,
//! drains, freezes, Redis restarts with and without data, failovers, cut
//! and stalled links, slow and wandering clients — overlapping as they
//! come. Every operation is recorded, and the checker turns the record
//! into a verdict: every acknowledged event reached every client exactly
//! once and in order, or the client was told `herald.resync` for a reason
//! that really happened.
//!
//! - [`schedule`]: the seeded fault plan.
//! - [`world`]: the processes and the faults applied to them.
//! - [`workload`]: publishers and clients.
//! - [`history`]: what was recorded.
//! - [`checker`]: the verdict.
//! - [`run`]: one run, start to verdict.
#![warn(missing_docs)]

pub mod checker;
pub mod history;
pub mod run;
pub mod schedule;
pub mod workload;
pub mod world;
