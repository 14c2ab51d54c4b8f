//! How a node reaches Redis: which topology, with which credentials, and
//! whether a publish waits for replicas. Validated by the binary's
//! configuration; the broker only reads it.

use std::time::Duration;

/// Where the Redis data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One primary: `redis://[user:pass@]host:port[/db]` or `rediss://…`.
    Standalone {
        /// The primary's URL, credentials and database included.
        url: String,
    },
    /// A primary found, and followed through failovers, by Sentinel.
    Sentinel {
        /// The sentinels' URLs (`redis://host:port` or `rediss://…`).
        nodes: Vec<String>,
        /// The master name the sentinels monitor.
        master: String,
        /// The sentinels' own password, when they require one.
        sentinel_password: Option<String>,
    },
    /// Redis Cluster: topics sharded over its primaries by hash slot.
    Cluster {
        /// Seed nodes (`redis://host:port` or `rediss://…`); the rest is
        /// discovered.
        nodes: Vec<String>,
    },
}

/// Everything the Redis broker needs to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where the data lives.
    pub topology: RedisTopology,
    /// The data nodes' user in Sentinel and Cluster modes (standalone: in
    /// the URL).
    pub username: Option<String>,
    /// The data nodes' password in Sentinel and Cluster modes (standalone:
    /// in the URL).
    pub password: Option<String>,
    /// Replicas that must confirm a request's events (`WAIT`) before it is
    /// acknowledged; 0 acknowledges once the primary stored them.
    pub wait_replicas: u32,
    /// How long to wait for those replicas before refusing the request.
    pub wait_timeout: Duration,
}

impl RedisSettings {
    /// A standalone primary at `url`, acknowledging without replicas.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self {
            topology: RedisTopology::Standalone { url: url.into() },
            username: None,
            password: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}
