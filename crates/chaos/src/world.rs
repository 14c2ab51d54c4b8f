//! The system under test, real processes only: herald nodes, Redis in one
//! of its three topologies, and the proxies the tool owns between them.
//!
//! Clients reach node `i` through a proxy of their own ([`World::node_url`]),
//! which stays put while the node behind it is killed and restarted on
//! another port. With a standalone Redis, each node also reaches Redis
//! through a proxy, so its link can be cut or stalled. Sentinel and Cluster
//! nodes announce their own addresses, which herald then dials directly,
//! so there the Redis-side faults are failovers instead.
//!
//! [`World::apply`] starts a fault and [`World::heal`] ends it; both return
//! a note for the timeline.

use std::time::Duration;

use herald_testkit::{
    Node, NodeBuilder, Proxy, RedisCluster, RedisSentinel, RedisServer, SentinelOptions,
};
use rand::{rngs::StdRng, Rng};

use crate::{history::Recorder, schedule::FaultKind};

/// How long a draining node may take to exit.
const DRAIN_EXIT: Duration = Duration::from_secs(20);

/// Which Redis the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One primary with an append-only file, behind per-node proxies.
    Standalone,
    /// A primary, a replica and three sentinels.
    Sentinel,
    /// Three primaries with a replica each.
    Cluster,
}

enum Redis {
    Standalone {
        server: RedisServer,
        links: Vec<Proxy>,
    },
    Sentinel(RedisSentinel),
    Cluster(RedisCluster),
}

/// One node's place: the proxy clients use, and the process behind it.
struct Slot {
    front: Proxy,
    node: Option<Node>,
}

/// Everything started for a run; dropped at its end.
pub struct World {
    redis: Redis,
    slots: Vec<Slot>,
    builders: Vec<NodeBuilder>,
    recorder: Recorder,
    /// Ports of primaries killed and not restarted yet (Sentinel, Cluster).
    killed: Vec<u16>,
    paused: Option<u16>,
}

/// Settings every node gets: short timers, so faults play out quickly, and
/// a small history and client buffer, so trimming and slow consumers
/// happen.
pub struct NodeSettings {
    /// `history.max_events`.
    pub max_events: usize,
    /// `limits.client_buffer_events`.
    pub client_buffer_events: usize,
}

impl World {
    /// Starts Redis and `nodes` herald nodes.
    pub async fn start(
        topology: Topology,
        nodes: usize,
        settings: &NodeSettings,
        recorder: Recorder,
    ) -> Self {
        let (redis, mut builders) = match topology {
            Topology::Standalone => {
                let server = RedisServer::start_durable().await;
                let upstream = ([127, 0, 0, 1], server.port()).into();
                let mut links = Vec::new();
                let mut builders = Vec::new();
                for _ in 0..nodes {
                    let link = Proxy::start(upstream).await;
                    builders.push(Node::builder().env("HERALD__REDIS__URL", &link.redis_url()));
                    links.push(link);
                }
                (Redis::Standalone { server, links }, builders)
            }
            Topology::Sentinel => {
                let sentinel = RedisSentinel::start(SentinelOptions::default()).await;
                let builder = Node::builder()
                    .env("HERALD__REDIS__SENTINEL_NODES", &sentinel.sentinels_env())
                    .env("HERALD__REDIS__SENTINEL_MASTER", sentinel.master_name());
                (Redis::Sentinel(sentinel), vec![builder; nodes])
            }
            Topology::Cluster => {
                let cluster = RedisCluster::start(3, 1).await;
                let builder =
                    Node::builder().env("HERALD__REDIS__CLUSTER_NODES", &cluster.seeds_env());
                (Redis::Cluster(cluster), vec![builder; nodes])
            }
        };
        for builder in &mut builders {
            *builder = builder
                .clone()
                .env("HERALD__SERVER__RETRY", "300ms")
                .env("HERALD__SERVER__DRAIN_TIMEOUT", "2s")
                .env("HERALD__SERVER__HEARTBEAT_INTERVAL", "1s")
                .env(
                    "HERALD__HISTORY__MAX_EVENTS",
                    &settings.max_events.to_string(),
                )
                .env(
                    "HERALD__LIMITS__CLIENT_BUFFER_EVENTS",
                    &settings.client_buffer_events.to_string(),
                );
        }
        let mut slots = Vec::new();
        for builder in &builders {
            let node = builder.clone().start().await;
            let front = Proxy::start(node.addr()).await;
            slots.push(Slot {
                front,
                node: Some(node),
            });
        }
        Self {
            redis,
            slots,
            builders,
            recorder,
            killed: Vec::new(),
            paused: None,
        }
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.slots.len()
    }

    /// Where clients reach node `i`.
    pub fn node_url(&self, i: usize) -> String {
        self.slots[i].front.url()
    }

    /// Process ids of the running nodes, by node index.
    pub fn node_pids(&self) -> Vec<(usize, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, n.pid())))
            .collect()
    }

    /// Starts `kind`; returns a note for the timeline.
    pub async fn apply(&mut self, kind: FaultKind, rng: &mut StdRng) -> String {
        match kind {
            FaultKind::NodeKill(i) => {
                if let Some(mut node) = self.slots[i].node.take() {
                    node.kill();
                }
                String::new()
            }
            FaultKind::NodeDrain(i) => {
                let Some(mut node) = self.slots[i].node.take() else {
                    return String::new();
                };
                let status = node.terminate(DRAIN_EXIT).await;
                if !status.success() {
                    self.recorder
                        .incident(format!("node {i} exited with {status} after SIGTERM"));
                }
                format!("exited {status}")
            }
            FaultKind::NodePause(i) => {
                if let Some(node) = &self.slots[i].node {
                    node.pause();
                }
                String::new()
            }
            FaultKind::RedisPause | FaultKind::PrimaryPause => match &mut self.redis {
                Redis::Standalone { server, .. } => {
                    server.pause();
                    String::new()
                }
                Redis::Sentinel(sentinel) => {
                    let port = sentinel.primary_port().await;
                    sentinel.pause(port);
                    self.paused = Some(port);
                    format!("primary {port}")
                }
                Redis::Cluster(cluster) => {
                    let primaries = cluster.primaries().await;
                    let port = primaries[rng.random_range(0..primaries.len())];
                    cluster.pause(port).await;
                    self.paused = Some(port);
                    format!("primary {port}")
                }
            },
            FaultKind::RedisRestart => {
                if let Redis::Standalone { server, .. } = &mut self.redis {
                    server.restart().await;
                }
                String::new()
            }
            FaultKind::RedisRestartEmpty => {
                if let Redis::Standalone { server, .. } = &mut self.redis {
                    server.restart_empty().await;
                }
                String::new()
            }
            FaultKind::PrimaryKill => match &mut self.redis {
                Redis::Sentinel(sentinel) => {
                    let port = sentinel.kill_primary().await;
                    self.killed.push(port);
                    format!("primary {port}")
                }
                Redis::Cluster(cluster) => {
                    let primaries = cluster.primaries().await;
                    let port = primaries[rng.random_range(0..primaries.len())];
                    cluster.kill(port).await;
                    self.killed.push(port);
                    format!("primary {port}")
                }
                Redis::Standalone { .. } => String::new(),
            },
            FaultKind::Failover => match &mut self.redis {
                Redis::Sentinel(sentinel) => format!("new primary {}", sentinel.failover().await),
                Redis::Cluster(cluster) => {
                    let primaries = cluster.primaries().await;
                    let primary = primaries[rng.random_range(0..primaries.len())];
                    let replica = cluster.replica_of(primary).await;
                    cluster.failover(replica).await;
                    format!("{replica} took over from {primary}")
                }
                Redis::Standalone { .. } => String::new(),
            },
            FaultKind::CutRedisLink(i) => {
                if let Redis::Standalone { links, .. } = &self.redis {
                    links[i].cut();
                }
                String::new()
            }
            FaultKind::StallRedisLink(i) => {
                if let Redis::Standalone { links, .. } = &self.redis {
                    links[i].stall();
                }
                String::new()
            }
            FaultKind::CutClientLink(i) => {
                self.slots[i].front.cut();
                String::new()
            }
            FaultKind::StallClientLink(i) => {
                self.slots[i].front.stall();
                String::new()
            }
            // Client faults are carried out by the clients themselves.
            FaultKind::SlowClient(_) | FaultKind::SwitchNode(_) => String::new(),
        }
    }

    /// Ends `kind`; returns a note for the timeline.
    pub async fn heal(&mut self, kind: FaultKind) -> String {
        match kind {
            FaultKind::NodeKill(i) | FaultKind::NodeDrain(i) => self.restart_node(i).await,
            FaultKind::NodePause(i) => {
                if let Some(node) = &self.slots[i].node {
                    node.resume();
                }
                String::new()
            }
            FaultKind::RedisPause | FaultKind::PrimaryPause => match &mut self.redis {
                Redis::Standalone { server, .. } => {
                    server.resume();
                    String::new()
                }
                Redis::Sentinel(sentinel) => {
                    if let Some(port) = self.paused.take() {
                        sentinel.resume(port);
                    }
                    String::new()
                }
                Redis::Cluster(cluster) => {
                    if let Some(port) = self.paused.take() {
                        cluster.resume(port);
                    }
                    String::new()
                }
            },
            FaultKind::PrimaryKill => {
                let Some(port) = self.killed.pop() else {
                    return String::new();
                };
                match &mut self.redis {
                    Redis::Sentinel(sentinel) => {
                        let new = sentinel.wait_new_primary(port).await;
                        sentinel.restart(port).await;
                        format!("{new} promoted; {port} back as a replica")
                    }
                    Redis::Cluster(cluster) => {
                        let new = cluster.wait_promoted(port).await;
                        cluster.restart(port).await;
                        format!("{new} promoted; {port} back as a replica")
                    }
                    Redis::Standalone { .. } => String::new(),
                }
            }
            FaultKind::CutRedisLink(i) | FaultKind::StallRedisLink(i) => {
                if let Redis::Standalone { links, .. } = &self.redis {
                    links[i].restore();
                }
                String::new()
            }
            FaultKind::CutClientLink(i) | FaultKind::StallClientLink(i) => {
                self.slots[i].front.restore();
                String::new()
            }
            FaultKind::RedisRestart
            | FaultKind::RedisRestartEmpty
            | FaultKind::Failover
            | FaultKind::SlowClient(_)
            | FaultKind::SwitchNode(_) => String::new(),
        }
    }

    async fn restart_node(&mut self, i: usize) -> String {
        if self.slots[i].node.is_some() {
            return String::new();
        }
        let node = self.builders[i].clone().start_listening().await;
        let note = format!("back on {}", node.addr());
        self.slots[i].front.set_upstream(node.addr());
        self.slots[i].node = Some(node);
        note
    }

    /// Waits until every node answers `/readyz` with `200`.
    pub async fn wait_ready(&self) {
        for slot in &self.slots {
            if let Some(node) = &slot.node {
                node.wait_ready().await;
            }
        }
    }

    /// Stops every node with SIGTERM; a node that does not exit `0` is an
    /// incident.
    pub async fn stop(&mut self) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(mut node) = slot.node.take() {
                let status = node.terminate(DRAIN_EXIT).await;
                if !status.success() {
                    self.recorder.incident(format!(
                        "node {i} exited with {status} after the final SIGTERM"
                    ));
                }
            }
        }
    }
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
