//! Redis key and channel names.
//!
//! Every key of a topic carries the topic in a `{…}` hash tag, so a topic's
//! keys live on one shard and the publish script touches one slot per topic.

use crate::Topic;

/// The topic's history: a Redis Stream whose entry ids are `<seq>-0`.
pub(crate) fn events(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:events")
}

/// The topic's epoch and last sequence number (a hash).
pub(crate) fn meta(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:meta")
}

/// Subscriber counts of every node on the topic (a hash: node id → count).
pub(crate) fn presence(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:subs")
}

/// The pub/sub channel carrying the topic's live events.
pub(crate) fn channel(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:live")
}

/// The topic named by a live channel, if it is one of ours.
pub(crate) fn topic_of_channel(channel: &str) -> Option<Topic> {
    let name = channel.strip_prefix("herald:{")?.strip_suffix("}:live")?;
    Topic::new(name).ok()
}

/// A publish idempotency key (one key space for the whole cluster).
pub(crate) fn idempotency(key: &str) -> String {
    format!("herald:idem:{key}")
}

/// A random token naming the current "incarnation" of the data: histories
/// record the token they were created under, and only histories of the
/// current one count. Rotated when the primary changed (a failover), so
/// events a promoted replica never received cannot be silently replaced by
/// new events reusing their sequence numbers.
pub(crate) const INCARNATION: &str = "herald:incarnation";

/// The replication id of the primary herald last saw, to notice failovers.
pub(crate) const REPLICATION_ID: &str = "herald:replid";

/// Live nodes, scored by their last heartbeat in milliseconds.
pub(crate) const NODES: &str = "herald:nodes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let topic = Topic::new("a/b:c@d~e").unwrap();
        assert_eq!(topic_of_channel(&channel(&topic)), Some(topic));
        assert_eq!(topic_of_channel("other"), None);
    }
}
