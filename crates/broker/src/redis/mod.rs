//! The Redis broker: what turns a node into a member of a cluster.
//!
//! Redis holds all shared state: each topic's history (a stream trimmed to
//! `history.max_events`, expiring after `history.ttl`), its epoch and last
//! sequence number, publish idempotency keys, and presence counts. Nodes
//! share nothing else. A node has one pub/sub connection (see
//! `subscriber.rs`) and a pool for commands.
//!
//! **Cursors across nodes.** Positions are assigned inside Redis by the
//! publish script (per-topic epoch and sequence number), so a cursor means
//! the same on every node: a client resumes anywhere. A multi-topic stream's
//! cursor holds one position per topic, and each topic's events are numbered
//! contiguously in one history, so "every event after position p on topic t"
//! is well defined for each topic on its own; there is no cross-topic order
//! to preserve, and none is promised.
//!
//! This implementation targets a standalone Redis 7 (or one reached through
//! a proxy that keeps a request's keys together): the publish script of a
//! request touches every topic of the request at once.

mod history;
mod keys;
mod live;
mod presence;
mod subscriber;
mod wire;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime};
use prometheus::{IntCounter, IntGauge};
use tokio::{sync::mpsc, task::JoinHandle};

use self::{history::HistoryRead, live::LiveState, subscriber::Subscriber};
use crate::{
    memory::{new_epoch, IDEMPOTENCY_WINDOW},
    now_micros,
    resume::{plan, HistoryWindow, Plan},
    Broker, BrokerError, HistorySettings, Message, Position, Receipt, RegistryMetrics, Resume,
    SubscriberQueue, SubscriptionGuard, Target, Topic, TopicInfo, TopicRegistry,
};

/// Time allowed for one round trip to Redis. Past it the call fails with
/// [`BrokerError::Unavailable`]: callers answer `503` rather than hang.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a starting stream waits for its topics' subscriptions.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands in flight at once from one node.
const POOL_SIZE: usize = 32;

static PUBLISH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("publish.lua")));

/// Broker health metrics, owned by the node's metrics.
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    /// 1 while the broker is reachable.
    pub up: IntGauge,
    /// Reconnections after a lost connection.
    pub reconnects: IntCounter,
}

/// A cluster node's broker, backed by Redis.
#[derive(Debug)]
pub struct RedisBroker {
    pool: Pool,
    registry: Arc<TopicRegistry>,
    live: Arc<LiveState>,
    history: HistorySettings,
    node: String,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisBroker {
    /// Starts a broker on `url`: the subscriber and presence tasks, owned by
    /// the broker and stopped by [`Broker::close`] or when it is dropped. A
    /// Redis that is down is not an error here: the node starts unready and
    /// connects when Redis comes up.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Protocol`] when `url` is not a valid Redis URL.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(
        url: &str,
        history: HistorySettings,
        registry_metrics: RegistryMetrics,
        metrics: BrokerMetrics,
    ) -> Result<Self, BrokerError> {
        // `rediss://` URLs use rustls; its process-wide crypto provider is
        // chosen here, once (a second install is a harmless no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| BrokerError::Protocol(e.to_string()))?
            .max_size(POOL_SIZE)
            .wait_timeout(Some(COMMAND_TIMEOUT))
            .create_timeout(Some(COMMAND_TIMEOUT))
            .recycle_timeout(Some(COMMAND_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let (interest_tx, interest) = mpsc::unbounded_channel();
        let registry = Arc::new(TopicRegistry::with_interest(registry_metrics, interest_tx));
        let live = Arc::new(LiveState::default());
        let node = uuid::Uuid::new_v4().simple().to_string();
        metrics.up.set(0);
        let subscriber = Subscriber {
            client,
            pool: pool.clone(),
            registry: Arc::clone(&registry),
            interest,
            live: Arc::clone(&live),
            metrics,
            max_events: history.max_events,
            last: Default::default(),
        };
        let tasks = vec![
            tokio::spawn(subscriber.run()),
            tokio::spawn(presence::run(
                pool.clone(),
                Arc::clone(&registry),
                Arc::clone(&live),
                node.clone(),
            )),
        ];
        Ok(Self {
            pool,
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

/// Runs `pipe` on a pooled connection within [`COMMAND_TIMEOUT`].
pub(crate) async fn query<T: redis::FromRedisValue>(
    pool: &Pool,
    pipe: &redis::Pipeline,
) -> Result<T, BrokerError> {
    let work = async {
        let mut conn = pool.get().await.map_err(BrokerError::unavailable)?;
        pipe.query_async::<T>(&mut conn).await.map_err(classify)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| BrokerError::unavailable("redis did not answer in time"))?
}

/// Runs a prepared script on a pooled connection within
/// [`COMMAND_TIMEOUT`].
pub(crate) async fn invoke<T: redis::FromRedisValue>(
    pool: &Pool,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<T, BrokerError> {
    let work = async {
        let mut conn = pool.get().await.map_err(BrokerError::unavailable)?;
        invocation
            .invoke_async::<T>(&mut conn)
            .await
            .map_err(classify)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| BrokerError::unavailable("redis did not answer in time"))?
}

/// Failures that pass mean "try again later": a lost connection, a Redis
/// still loading, out of memory, or a read-only replica (as during a
/// failover). Anything else is a protocol surprise.
fn classify(error: redis::RedisError) -> BrokerError {
    let refusing = matches!(
        error.code(),
        Some("OOM" | "READONLY" | "LOADING" | "MASTERDOWN")
    );
    if refusing
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        )
    {
        BrokerError::unavailable(error)
    } else {
        BrokerError::Protocol(error.to_string())
    }
}

/// The newest position of each of `topics`.
pub(crate) async fn read_heads(
    pool: &Pool,
    topics: &[Topic],
) -> Result<Vec<Position>, BrokerError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let mut read = HistoryRead::new();
    for topic in topics {
        read.window(topic);
    }
    let mut replies = read.run(pool).await?;
    topics
        .iter()
        .map(|_| replies.window().map(|w| w.head()))
        .collect()
}

/// Notices a failover and rotates the incarnation (see
/// `keys::INCARNATION`). A promoted replica names its old primary's
/// replication id as `master_replid2`, and carries the id herald recorded
/// (it travels with the data): when the two match, the primary changed and
/// may lack the newest events. Any other change of id (a restart, with or
/// without its data) is only recorded: a restart that kept its data lost
/// nothing, and one that lost it shows up as missing histories anyway.
pub(crate) async fn check_failover(pool: &Pool) -> Result<(), BrokerError> {
    let mut pipe = redis::pipe();
    pipe.cmd("INFO")
        .arg("replication")
        .cmd("GET")
        .arg(keys::REPLICATION_ID);
    let (info, recorded): (String, Option<String>) = query(pool, &pipe).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .map(str::to_owned)
    };
    let Some(current) = field("master_replid:") else {
        return Ok(());
    };
    if recorded.as_deref() == Some(current.as_str()) {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    if recorded.is_some() && recorded == field("master_replid2:") {
        tracing::warn!("a replica was promoted: histories are invalidated, clients resync");
        pipe.cmd("SET")
            .arg(keys::INCARNATION)
            .arg(new_epoch())
            .ignore();
    }
    pipe.cmd("SET")
        .arg(keys::REPLICATION_ID)
        .arg(current)
        .ignore();
    query::<()>(pool, &pipe).await
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, messages: Vec<Message>) -> Result<Vec<Receipt>, BrokerError> {
        let mut invocation = PUBLISH_SCRIPT.prepare_invoke();
        invocation.key(keys::INCARNATION);
        invocation
            .arg(self.history.max_events)
            .arg(self.history.ttl.as_millis() as u64)
            .arg(IDEMPOTENCY_WINDOW.as_millis() as u64)
            .arg(now_micros())
            .arg(messages.len());
        for message in &messages {
            let topics = message.target.topics();
            let key = message.idempotency_key.as_deref().unwrap_or("");
            invocation.key(keys::idempotency(key));
            invocation
                .arg(key)
                .arg(match message.target {
                    Target::One(_) => "o",
                    Target::Many(_) => "m",
                })
                .arg(topics.len())
                .arg(message.event.as_ref().map_or("", |e| e.as_str()))
                .arg(&message.data);
            for topic in topics {
                invocation.key(keys::events(topic)).key(keys::meta(topic));
                invocation
                    .arg(topic.as_str())
                    .arg(keys::channel(topic))
                    .arg(new_epoch());
            }
        }
        let receipts: Vec<String> = invoke(&self.pool, &invocation).await?;
        receipts
            .iter()
            .map(|text| {
                wire::parse_receipt(text)
                    .ok_or_else(|| BrokerError::Protocol(format!("unexpected receipt {text:?}")))
            })
            .collect()
    }

    async fn heads(&self, topics: &[Topic]) -> Result<Vec<Position>, BrokerError> {
        read_heads(&self.pool, topics).await
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

    async fn resume(&self, topic: &Topic, from: Position) -> Result<Resume, BrokerError> {
        let after = if from.epoch == 0 { 0 } else { from.seq };
        let mut read = HistoryRead::new();
        read.after(topic, after, self.history.max_events);
        let slice = read.run(&self.pool).await?.slice(topic)?;
        Ok(match plan(from, slice.window) {
            Plan::Resync => Resume::Resync {
                head: slice.window.head(),
            },
            Plan::Replay { after } => Resume::Replay(
                slice
                    .events
                    .into_iter()
                    .filter(|e| e.position.seq > after)
                    .collect(),
            ),
        })
    }

    async fn topic_info(&self, topic: &Topic) -> Result<TopicInfo, BrokerError> {
        let mut read = HistoryRead::new();
        read.window_and_length(topic);
        let mut replies = read.run(&self.pool).await?;
        let window = replies.window()?;
        let length: u64 = redis::from_redis_value(replies.value()?)
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let remote = presence::remote_count(&self.pool, topic, &self.node).await?;
        let local = self.registry.subscriber_count(topic) as u64;
        let (first, last, length) = match window {
            HistoryWindow { epoch: 0, .. } => (None, None, 0),
            w => (
                Some(Position::new(w.epoch, w.first)),
                Some(w.head()),
                length,
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
        self.live.is_up()
    }

    async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        presence::leave(&self.pool, &self.node).await;
    }
}
