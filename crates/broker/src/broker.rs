//! The broker interface every node talks to, whatever carries the events.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    BrokerError, Message, Position, Receipt, SharedEvent, SubscriberQueue, SubscriptionGuard, Topic,
};

/// What a stream gets on a topic when it starts.
#[derive(Debug)]
pub enum Resume {
    /// These events, oldest first, then live events.
    Replay(Vec<Arc<SharedEvent>>),
    /// Events may be missing: tell the client to reload, then go live from
    /// `head`.
    Resync {
        /// The newest position at the time of the decision.
        head: Position,
    },
}

/// What a node knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Subscribers across all live nodes.
    pub subscribers: u64,
    /// Retained events.
    pub length: u64,
    /// Position of the oldest retained event.
    pub first: Option<Position>,
    /// Position of the newest retained event.
    pub last: Option<Position>,
}

/// Stores events, keeps their history, and feeds live events to the node's
/// topic registry.
///
/// A stream starts in this order, which is what makes "no gap, no
/// duplicate" hold: read the [`heads`](Broker::heads) of topics it has no
/// position for, [`subscribe`](Broker::subscribe), then
/// [`resume`](Broker::resume) each topic from its position; live events at or
/// before a position the stream has already passed are dropped by the
/// stream.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Stores and publishes `messages` in order, as one all-or-nothing step.
    /// Returns one receipt per message. A message whose idempotency key was
    /// seen in the last few minutes is not published again; its receipt is
    /// the first publish's.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Unavailable`] when nothing could be stored.
    async fn publish(&self, messages: Vec<Message>) -> Result<Vec<Receipt>, BrokerError>;

    /// The newest position of each topic, in order.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Unavailable`] when history cannot be read.
    async fn heads(&self, topics: &[Topic]) -> Result<Vec<Position>, BrokerError>;

    /// Registers `queue` for the live events of `topics`; resolves once live
    /// events of every topic flow to it.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Unavailable`] when live delivery cannot be set up.
    async fn subscribe(
        &self,
        topics: &[Topic],
        queue: &Arc<SubscriberQueue>,
    ) -> Result<SubscriptionGuard, BrokerError>;

    /// What a stream gets on each topic, positioned as given: one answer per
    /// `(topic, position)`, in order. A clustered broker reads the topics
    /// of one shard in one round trip.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Unavailable`] when history cannot be read.
    async fn resume(&self, from: &[(Topic, Position)]) -> Result<Vec<Resume>, BrokerError>;

    /// Subscribers and history of `topic`.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Unavailable`] when it cannot be read.
    async fn topic_info(&self, topic: &Topic) -> Result<TopicInfo, BrokerError>;

    /// Whether the broker is reachable right now.
    fn is_up(&self) -> bool;

    /// Stops background work and withdraws this node from the cluster's
    /// presence counts. Called once, when the node stops.
    async fn close(&self) {}
}
