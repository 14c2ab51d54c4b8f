//! herald-bench: the load generator's parts, as a library so its binary
//! stays glue and each part is tested where it lives.
//!
//! The hot path is `subscriber` → `body` → `chunked` + `frames` →
//! `accounting`: bytes are read into one buffer per stream, chunk framing is
//! stripped in place, events are scanned with memchr, and per-event work is
//! a few integer operations and a histogram increment. Nothing on it
//! allocates per byte or per event.
//!
//! Beside the HTTP scenarios: `ceiling` (herald's publish step straight
//! against Redis, through `herald_broker`), `failover` (how long publishes
//! fail when a Redis primary dies, on topologies the test kit starts),
//! `cost` (Redis CPU per process and per publish) and `topologies` (their
//! tables in the summary).
#![warn(missing_docs)]

pub mod accounting;
pub mod body;
pub mod ceiling;
pub mod chart;
pub mod chunked;
pub mod cli;
pub mod clock;
pub mod cost;
pub mod failover;
pub mod frames;
pub mod http;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod run;
pub mod shared;
pub mod subscriber;
pub mod summary;
pub mod target;
pub mod topologies;
