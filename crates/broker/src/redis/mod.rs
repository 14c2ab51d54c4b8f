//! The Redis broker: what turns a node into a member of a cluster.
//!
//! Redis holds all shared state: each topic's history (a stream trimmed to
//! `history.max_events`, expiring after `history.ttl`), its epoch and last
//! sequence number, publish idempotency records, and presence counts. Nodes
//! share nothing else.
//!
//! **Topologies.** A standalone primary, a primary found through Sentinel,
//! or a Redis Cluster: `topology/` is the one place that knows which, and
//! every command goes through it with the hash slot it touches. Every key
//! of a topic carries the topic as hash tag (`keys.rs`), so a topic lives on
//! one shard and each script touches one slot.
//!
//! **Cursors across nodes.** Positions are assigned inside Redis by the
//! publish script (per-topic epoch and sequence number), so a cursor means
//! the same on every node: a client resumes anywhere. A multi-topic
//! stream's cursor holds one position per topic, and each topic's events
//! are numbered in one history, so "every event after position p on topic
//! t" is well defined for each topic on its own; there is no cross-topic
//! order to preserve, and none is promised.
//!
//! **Failovers that lose writes.** Redis replicates asynchronously: a
//! promoted replica may lack events the old primary acknowledged. Each
//! topic records the replication id of the primary that last wrote it; the
//! first write under another primary skips far ahead in sequence numbers
//! and names its real predecessor (`publish.lua`, `resume.rs`). Numbers the
//! old primary may have handed out are never reused, a client that saw
//! such an event is told to resync, and one that did not loses nothing it
//! could resume.
//!
//! - `publish.rs`, `history.rs`, `presence.rs`: what is written and read.
//! - `live/`: one pub/sub link per primary with local topics.
//! - `topology/`: routing, connections, failover detection.

mod history;
mod keys;
mod live;
mod presence;
mod publish;
mod script;
mod settings;
mod slot;
mod topology;
mod wire;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use prometheus::{IntCounter, IntGauge};
use tokio::{sync::mpsc, task::JoinHandle};

pub use self::settings::{RedisSettings, RedisTopology};
use self::{history::HistoryRead, live::LiveState, topology::Topology};
use crate::{
    resume::{plan, HistoryWindow, Plan},
    Broker, BrokerError, HistorySettings, Message, Position, Receipt, RegistryMetrics, Resume,
    SubscriberQueue, SubscriptionGuard, Topic, TopicInfo, TopicRegistry,
};

/// How long a starting stream waits for its topics' subscriptions.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Broker health metrics, owned by the node's metrics.
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    /// 1 while every primary the node needs is reachable.
    pub up: IntGauge,
    /// Reconnections after a lost connection.
    pub reconnects: IntCounter,
    /// Primary changes noticed (a failover, a replica promoted).
    pub failovers: IntCounter,
    /// Primaries the node needs that are reachable.
    pub primaries_up: IntGauge,
    /// Primaries the node needs that are not.
    pub primaries_down: IntGauge,
}

impl BrokerMetrics {
    /// Metrics not registered anywhere, for tests and tools.
    pub fn unregistered() -> Self {
        let gauge = |name| IntGauge::new(name, name).expect("valid metric name");
        let counter = |name| IntCounter::new(name, name).expect("valid metric name");
        Self {
            up: gauge("up"),
            reconnects: counter("reconnects"),
            failovers: counter("failovers"),
            primaries_up: gauge("primaries_up"),
            primaries_down: gauge("primaries_down"),
        }
    }
}

/// A cluster node's broker, backed by Redis.
#[derive(Debug)]
pub struct RedisBroker {
    topology: Arc<Topology>,
    registry: Arc<TopicRegistry>,
    live: Arc<LiveState>,
    history: HistorySettings,
    node: String,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisBroker {
    /// Starts a broker on the Redis `settings` describe: the topology
    /// monitor, the live-event links and the presence task, owned by the
    /// broker and stopped by [`Broker::close`] or when it is dropped. Redis
    /// being down is not an error here: the node starts unready and
    /// connects when Redis comes up.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Protocol`] when a URL is not a valid Redis URL.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(
        settings: &RedisSettings,
        history: HistorySettings,
        registry_metrics: RegistryMetrics,
        metrics: BrokerMetrics,
    ) -> Result<Self, BrokerError> {
        // `rediss://` URLs use rustls; its process-wide crypto provider is
        // chosen here, once (a second install is a harmless no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let topology = Arc::new(Topology::new(settings, metrics)?);
        let (interest_tx, interest) = mpsc::unbounded_channel();
        let registry = Arc::new(TopicRegistry::with_interest(registry_metrics, interest_tx));
        let node = uuid::Uuid::new_v4().simple().to_string();
        let (live, coordinator) = live::start(
            Arc::clone(&topology),
            Arc::clone(&registry),
            interest,
            history.max_events,
        );
        let tasks = vec![
            tokio::spawn(Arc::clone(&topology).monitor()),
            coordinator,
            tokio::spawn(presence::run(
                Arc::clone(&topology),
                Arc::clone(&registry),
                node.clone(),
            )),
        ];
        Ok(Self {
            topology,
            registry,
            live,
            history,
            node,
            tasks,
        })
    }

    /// The registry this broker feeds.
    pub fn registry(&self) -> &Arc<TopicRegistry> {
        &self.registry
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, messages: Vec<Message>) -> Result<Vec<Receipt>, BrokerError> {
        publish::publish(&self.topology, &self.history, &messages).await
    }

    async fn heads(&self, topics: &[Topic]) -> Result<Vec<Position>, BrokerError> {
        let mut read = HistoryRead::new();
        for topic in topics {
            read.window(topic);
        }
        Ok(read
            .run(&self.topology)
            .await?
            .iter()
            .map(|h| h.window.head())
            .collect())
    }

    async fn subscribe(
        &self,
        topics: &[Topic],
        queue: &Arc<SubscriberQueue>,
    ) -> Result<SubscriptionGuard, BrokerError> {
        let guard = self.registry.join(topics, queue);
        if self.live.wait_active(topics, SUBSCRIBE_TIMEOUT).await {
            Ok(guard)
        } else {
            Err(BrokerError::unavailable(
                "redis subscription not confirmed in time",
            ))
        }
    }

    async fn resume(&self, from: &[(Topic, Position)]) -> Result<Vec<Resume>, BrokerError> {
        let mut read = HistoryRead::new();
        for (topic, position) in from {
            let after = if position.epoch == 0 { 0 } else { position.seq };
            read.after(topic, after, self.history.max_events);
        }
        let histories = read.run(&self.topology).await?;
        Ok(from
            .iter()
            .zip(histories)
            .map(|((_, position), history)| {
                let next_prev = history.events.first().map(|e| e.prev);
                match plan(*position, history.window, next_prev) {
                    Plan::Resync => Resume::Resync {
                        head: history.window.head(),
                    },
                    Plan::Replay { after } => Resume::Replay(
                        history
                            .events
                            .into_iter()
                            .filter(|e| e.position.seq > after)
                            .collect(),
                    ),
                }
            })
            .collect())
    }

    async fn topic_info(&self, topic: &Topic) -> Result<TopicInfo, BrokerError> {
        let mut read = HistoryRead::new();
        read.window_and_length(topic);
        let history = read
            .run(&self.topology)
            .await?
            .pop()
            .ok_or_else(|| BrokerError::Protocol("no history reply".into()))?;
        let remote = presence::remote_count(&self.topology, topic, &self.node).await?;
        let local = self.registry.subscriber_count(topic) as u64;
        let (first, last, length) = match history.window {
            HistoryWindow { epoch: 0, .. } => (None, None, 0),
            w => (
                Some(Position::new(w.epoch, w.first)),
                Some(w.head()),
                history.length,
            ),
        };
        Ok(TopicInfo {
            subscribers: local + remote,
            length,
            first,
            last,
        })
    }

    fn is_up(&self) -> bool {
        self.topology.is_up()
    }

    async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        presence::leave(&self.topology, &self.node).await;
    }
}
