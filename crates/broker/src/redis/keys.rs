//! Redis key and channel names.
//!
//! Every key of a topic carries the topic in a `{…}` hash tag, so all of a
//! topic's keys (history, meta, presence, idempotency records) and its live
//! channel share one hash slot: in Redis Cluster they live on one shard and
//! one script can touch them all. Topic names cannot contain braces, so the
//! tag is always exactly the topic.

use crate::Topic;

/// The topic's history: a Redis Stream whose entry ids are `<seq>-0`.
pub(crate) fn events(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:events")
}

/// The topic's epoch, last sequence number and the replication id of the
/// primary that wrote it last (a hash).
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
pub(crate) fn topic_of_channel(channel: &[u8]) -> Option<Topic> {
    let name = channel.strip_prefix(b"herald:{")?.strip_suffix(b"}:live")?;
    Topic::new(std::str::from_utf8(name).ok()?).ok()
}

/// The positions this topic's events got under idempotency keys (a hash:
/// key → `epoch:seq`), so a retried request publishes exactly the topics it
/// has not published yet. One hash per topic rather than a key per record:
/// while Redis Cluster migrates the topic's slot, a script may only touch
/// keys that exist (else `TRYAGAIN`), and this hash already does.
pub(crate) fn topic_idempotency(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:idem")
}

/// When each record of [`topic_idempotency`] expires (a sorted set: key →
/// milliseconds), since hash fields have no TTL of their own in Redis 7.0.
pub(crate) fn topic_idempotency_expiry(topic: &Topic) -> String {
    format!("herald:{{{topic}}}:idem-at")
}

/// A request's whole receipt under an idempotency key, so a repeat answers
/// what the first request answered, whatever its body. The key is its own
/// hash tag: in Redis Cluster the record lives on the key's shard.
pub(crate) fn request_idempotency(key: &str) -> String {
    format!("herald:idem:{{{key}}}")
}

/// Live nodes, scored by their last heartbeat in milliseconds.
pub(crate) const NODES: &str = "herald:nodes";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::slot::key_slot;

    #[test]
    fn channel_names_round_trip() {
        let topic = Topic::new("a/b:c@d~e").unwrap();
        assert_eq!(topic_of_channel(channel(&topic).as_bytes()), Some(topic));
        assert_eq!(topic_of_channel(b"other"), None);
    }

    #[test]
    fn a_topics_keys_share_its_slot() {
        let topic = Topic::new("orders.42").unwrap();
        let slot = key_slot(topic.as_str().as_bytes());
        for key in [
            events(&topic),
            meta(&topic),
            presence(&topic),
            channel(&topic),
            topic_idempotency(&topic),
            topic_idempotency_expiry(&topic),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }
}
