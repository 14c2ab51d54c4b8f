//! Cluster-wide subscriber counts.
//!
//! Each node writes its local count per topic into the topic's presence hash
//! (node id → count) when it changes, and its own heartbeat into a sorted
//! set of nodes. A reader sums the counts of nodes whose heartbeat is
//! recent, so a node that dies stops counting within [`NODE_TTL`] even
//! though its entries are still there. Writes scale with topics whose count
//! changed, never with clients.

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_redis::Pool;

use super::{keys, live::LiveState};
use crate::{now_micros, BrokerError, Topic, TopicRegistry};

/// How often a node publishes its counts and heartbeat.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// A node whose heartbeat is older than this no longer counts.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(15);
/// Presence hashes outlive their last write by this much, so hashes of
/// topics nobody subscribes to any more disappear.
const HASH_TTL: Duration = Duration::from_secs(60);
/// Every count is rewritten this often even if unchanged, to refresh TTLs.
const FULL_REFRESH_EVERY: u32 = 10;

/// Publishes this node's counts. Owned by the task spawned in
/// `RedisBroker::start`; runs until aborted.
pub(crate) async fn run(
    pool: Pool,
    registry: Arc<TopicRegistry>,
    live: Arc<LiveState>,
    node: String,
) {
    let mut flushed: HashMap<Topic, usize> = HashMap::new();
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    let mut round = 0u32;
    let mut connection = live.connections();
    loop {
        ticker.tick().await;
        let counts: HashMap<Topic, usize> = registry.counts().into_iter().collect();
        // After a reconnect, Redis may have restarted without what was
        // written before: write everything again.
        let reconnected = std::mem::replace(&mut connection, live.connections()) != connection;
        let full = reconnected || round.is_multiple_of(FULL_REFRESH_EVERY);
        round = round.wrapping_add(1);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(keys::NODES)
            .arg(now_millis())
            .arg(&node)
            .ignore();
        let stale = now_millis().saturating_sub(4 * NODE_TTL.as_millis() as u64);
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(keys::NODES)
            .arg("-inf")
            .arg(stale)
            .ignore();
        for (topic, count) in &counts {
            if full || flushed.get(topic) != Some(count) {
                let key = keys::presence(topic);
                pipe.cmd("HSET").arg(&key).arg(&node).arg(*count).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(HASH_TTL.as_millis() as u64)
                    .ignore();
            }
        }
        for topic in flushed.keys().filter(|t| !counts.contains_key(*t)) {
            pipe.cmd("HDEL")
                .arg(keys::presence(topic))
                .arg(&node)
                .ignore();
        }
        match super::query::<()>(&pool, &pipe).await {
            Ok(()) => flushed = counts,
            // Redis is down; the next round rewrites everything that differs.
            Err(error) => tracing::debug!(%error, "presence not flushed"),
        }
    }
}

/// Removes this node's heartbeat, so it stops counting at once.
pub(crate) async fn leave(pool: &Pool, node: &str) {
    let mut pipe = redis::pipe();
    pipe.cmd("ZREM").arg(keys::NODES).arg(node).ignore();
    if let Err(error) = super::query::<()>(pool, &pipe).await {
        tracing::debug!(%error, "presence not removed");
    }
}

/// Subscribers of `topic` on other live nodes.
pub(crate) async fn remote_count(
    pool: &Pool,
    topic: &Topic,
    node: &str,
) -> Result<u64, BrokerError> {
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(keys::presence(topic));
    let (entries,): (HashMap<String, u64>,) = super::query(pool, &pipe).await?;
    let others: Vec<(&String, u64)> = entries
        .iter()
        .filter(|(id, _)| id.as_str() != node)
        .map(|(id, n)| (id, *n))
        .collect();
    if others.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    pipe.cmd("ZMSCORE")
        .arg(keys::NODES)
        .arg(others.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
    let (scores,): (Vec<Option<f64>>,) = super::query(pool, &pipe).await?;
    let alive_since = now_millis().saturating_sub(NODE_TTL.as_millis() as u64) as f64;
    Ok(others
        .iter()
        .zip(scores)
        .filter(|(_, score)| score.is_some_and(|s| s >= alive_since))
        .map(|((_, n), _)| n)
        .sum())
}

fn now_millis() -> u64 {
    now_micros() / 1000
}
