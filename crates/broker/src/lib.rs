//! herald's broker layer: topics, cursors and history, the per-node topic
//! registry that fans events out to local connections, and the brokers that
//! store and carry events (in memory for one node, Redis for a cluster).
//!
//! Nothing here knows about HTTP or configuration files: the binary turns
//! requests into [`Message`]s and streams into [`SubscriberQueue`]s.
#![warn(missing_docs)]

mod broker;
pub mod cursor;
mod error;
mod event;
pub mod history;
pub mod memory;
mod queue;
pub mod redis;
mod registry;
pub mod resume;
mod topic;

pub use crate::redis::{BrokerMetrics, RedisBroker, RedisSettings, RedisTopology};
pub use broker::{Broker, Resume, TopicInfo};
pub use cursor::{Cursor, Position};
pub use error::{error_chain, BrokerError, CursorError, EventNameError, TopicError};
pub use event::{
    now_micros, EventKind, EventName, Message, Receipt, SharedEvent, Target, MAX_EVENT_NAME_LEN,
};
pub use history::HistorySettings;
pub use memory::MemoryBroker;
pub use queue::{Batch, CloseReason, Pushed, SubscriberQueue, IDLE_CAPACITY};
pub use registry::{RegistryMetrics, SubscriptionGuard, TopicRegistry};
pub use topic::{Topic, MAX_TOPIC_LEN};
