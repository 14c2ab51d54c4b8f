//! Test harness for herald: real processes on free ports, and clients that
//! read them the way browsers and Prometheus do.
//!
//! Everything here drives the real `herald` binary and a real
//! `redis-server`; nothing is mocked. Every wait is a poll on a condition
//! with a deadline, never a fixed sleep, so tests are as fast as the system
//! under test and fail with a message (and a log file path) instead of
//! hanging. (The one pause is between the parts of a deliberately split raw
//! request, to shape the traffic, not to wait for anything.)
//!
//! - [`Node`] / [`NodeBuilder`]: `herald serve` on `127.0.0.1:0` in a
//!   temporary working directory, its stderr copied to
//!   `target/test-logs/`, ready once `/readyz` answers `200`.
//! - [`RedisServer`]: `redis-server` on a free port in a temporary directory.
//! - [`RedisServer::start_durable`]: the same with an fsynced append-only
//!   file (restarts keep data); either can be paused with SIGSTOP.
//! - [`RedisCluster`]: a real Redis Cluster (3 primaries and a replica
//!   each, typically) with failovers, crashes, frozen nodes and online
//!   slot migration ([`SlotMigration`]); [`key_slot`] and [`topic_slot`]
//!   say which shard a key or topic lives on.
//! - [`RedisSentinel`]: a primary, its replicas and three sentinels, with
//!   failovers on demand or after a crash, optionally with passwords on the
//!   data nodes and on the sentinels.
//! - [`start_nodes`], [`live_channel`] and readers of Redis replies for
//!   multi-node tests.
//! - [`PublisherLoop`]: a backend publishing through faults, retrying
//!   refusals with the same idempotency key, every answer in a [`PublishLog`].
//! - [`Traffic`] / [`Delivery`]: a publisher and stream readers running
//!   through faults, and the event-by-event verdict on what arrived.
//! - [`SseStream`] / [`Subscribe`]: an SSE client over reqwest streaming
//!   that parses with [`herald_sse::Parser`]; on a new connection, on a
//!   reused keep-alive one ([`Node::client_with_idle_connection`]), or as
//!   exact request bytes over raw TCP ([`SseStream::send_raw`]).
//! - [`Api`] / [`Reply`]: publish and query helpers returning status,
//!   headers and JSON body.
//! - [`ReconnectingClient`]: a stream that reconnects with `Last-Event-ID`
//!   as a browser's `EventSource` does.
//! - [`Nginx`]: Debian's nginx running the shipped `deploy/nginx/nginx.conf`
//!   in front of local nodes.
//! - [`Browser`]: headless Chromium and chromedriver, for the demo page;
//!   screenshots go to [`test_artifact_dir`].
//! - [`Exposition`]: a strict parser of the Prometheus text format.
//! - [`TokenSigner`]: HS256, RS256 and ES256 tokens signed by `openssl`.
//! - [`JwksServer`]: an identity provider's key set over HTTP, for key
//!   rotation and a provider that is down, then back on the same port.
//! - [`HookServer`]: a subscribe hook that records what herald sends and
//!   answers as the test scripts it ([`HookBehavior`]).
//! - [`Proxy`]: a TCP proxy to cut or stall a link between two processes.
//! - [`eventually`], [`free_port`], [`restartable_port`], [`herald_bin`].
#![warn(missing_docs)]

mod api;
mod binary;
mod browser;
mod child;
mod cluster;
mod events;
mod hook;
mod jwks;
mod jwt;
mod logs;
mod nginx;
mod node;
mod node_builder;
mod port;
mod process_tree;
mod prometheus;
mod proxy;
mod publisher;
mod raw;
mod reconnecting;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod resp;
mod restartable_port;
mod sse;
mod traffic;
mod wait;

use std::time::Duration;

pub use api::{encode_path_segment, Api, Reply};
pub use binary::{herald_bin, herald_command, target_dir};
pub use browser::{test_artifact_dir, Browser};
pub use cluster::{
    client_list, info_field, live_channel, numsub_counts, reply_integer, reply_strings, reply_text,
    start_nodes,
};
pub use events::{before_marker, data, resync_topics, RESYNC};
pub use herald_sse::{Event, Item};
pub use hook::{HookBehavior, HookRequest, HookServer};
pub use jwks::JwksServer;
pub use jwt::{base64url, unix_now, unsigned_token, TokenSigner};
pub use logs::test_log_dir;
pub use nginx::Nginx;
pub use node::Node;
pub use node_builder::{NodeBuilder, StartupFailure};
pub use port::free_port;
pub use prometheus::{Exposition, Family, MetricType, ParseError, Sample};
pub use proxy::{LinkState, Proxy};
pub use publisher::{Attempt, PublishLog, PublisherLoop, Refusal};
pub use reconnecting::ReconnectingClient;
pub use redis::RedisServer;
pub use redis_cluster::{
    key_slot, topic_slot, ClusterNode, ClusterOptions, ClusterRole, RedisCluster, SlotMigration,
    CLUSTER_SLOTS,
};
pub use redis_sentinel::{RedisSentinel, SentinelOptions};
pub use resp::Resp;
pub use restartable_port::restartable_port;
pub use sse::{Next, SseStream, Subscribe};
pub use traffic::{Delivery, Received, Traffic};
pub use wait::eventually;

/// How long tests wait for something that should happen "at once" (an
/// event after its publish, a process start). Generous, because the
/// machine may be busy building; a passing test never waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
