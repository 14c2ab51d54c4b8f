//! Cluster-wide subscriber counts.
//!
//! Each node writes its local count per topic into the topic's presence hash
//! (node id → count, on the topic's slot) when it changes, and its own
//! heartbeat into a sorted set of nodes. A reader sums the counts of nodes
//! whose heartbeat is recent, so a node that dies stops counting within
//! [`NODE_TTL`] even though its entries are still there. Writes scale with
//! topics whose count changed, never with clients; in Redis Cluster each
//! shard gets the writes of its own topics.

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::Value;

use super::{
    keys,
    slot::key_slot,
    topology::{Call, Topology},
};
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

fn nodes_slot() -> u16 {
    key_slot(keys::NODES.as_bytes())
}

fn topic_slot(topic: &Topic) -> u16 {
    key_slot(topic.as_str().as_bytes())
}

/// Publishes this node's counts. Owned by the task spawned in
/// `RedisBroker::start`; runs until aborted.
pub(crate) async fn run(topology: Arc<Topology>, registry: Arc<TopicRegistry>, node: String) {
    let mut flushed: HashMap<Topic, usize> = HashMap::new();
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    let mut round = 0u32;
    let mut failed = true;
    let mut connects = topology.connects();
    loop {
        ticker.tick().await;
        let counts: HashMap<Topic, usize> = registry.counts().into_iter().collect();
        // After a failure or a new connection, Redis may have lost what was
        // written before (a restart, a failover): write everything again.
        let now_connects = topology.connects();
        let full = failed || now_connects != connects || round.is_multiple_of(FULL_REFRESH_EVERY);
        connects = now_connects;
        round = round.wrapping_add(1);
        let mut calls = Vec::new();
        let mut heartbeat = redis::cmd("ZADD");
        heartbeat.arg(keys::NODES).arg(now_millis()).arg(&node);
        calls.push(Call::command(nodes_slot(), heartbeat));
        let stale = now_millis().saturating_sub(4 * NODE_TTL.as_millis() as u64);
        let mut expire = redis::cmd("ZREMRANGEBYSCORE");
        expire.arg(keys::NODES).arg("-inf").arg(stale);
        calls.push(Call::command(nodes_slot(), expire));
        for (topic, count) in &counts {
            if full || flushed.get(topic) != Some(count) {
                let key = keys::presence(topic);
                let mut set = redis::cmd("HSET");
                set.arg(&key).arg(&node).arg(*count);
                let mut ttl = redis::cmd("PEXPIRE");
                ttl.arg(&key).arg(HASH_TTL.as_millis() as u64);
                calls.push(Call::command(topic_slot(topic), set));
                calls.push(Call::command(topic_slot(topic), ttl));
            }
        }
        for topic in flushed.keys().filter(|t| !counts.contains_key(*t)) {
            let mut delete = redis::cmd("HDEL");
            delete.arg(keys::presence(topic)).arg(&node);
            calls.push(Call::command(topic_slot(topic), delete));
        }
        let results = topology.execute(&calls).await;
        match results.into_iter().find_map(Result::err) {
            None => {
                flushed = counts;
                failed = false;
            }
            // Redis is (partly) down; the next round rewrites everything.
            Some(error) => {
                tracing::debug!(error = %crate::error_chain(&error), "presence not flushed");
                failed = true;
            }
        }
    }
}

/// Removes this node's heartbeat, so it stops counting at once.
pub(crate) async fn leave(topology: &Topology, node: &str) {
    let mut remove = redis::cmd("ZREM");
    remove.arg(keys::NODES).arg(node);
    if let Err(error) = topology
        .execute_all(&[Call::command(nodes_slot(), remove)])
        .await
    {
        tracing::debug!(error = %crate::error_chain(&error), "presence not removed");
    }
}

/// Subscribers of `topic` on other live nodes.
pub(crate) async fn remote_count(
    topology: &Topology,
    topic: &Topic,
    node: &str,
) -> Result<u64, BrokerError> {
    let mut all = redis::cmd("HGETALL");
    all.arg(keys::presence(topic));
    let reply = topology
        .execute_all(&[Call::command(topic_slot(topic), all)])
        .await?
        .pop()
        .unwrap_or(Value::Nil);
    let entries: HashMap<String, u64> =
        redis::from_redis_value(reply).map_err(|e| BrokerError::Protocol(e.to_string()))?;
    let others: Vec<(&String, u64)> = entries
        .iter()
        .filter(|(id, _)| id.as_str() != node)
        .map(|(id, n)| (id, *n))
        .collect();
    if others.is_empty() {
        return Ok(0);
    }
    let mut scores = redis::cmd("ZMSCORE");
    scores
        .arg(keys::NODES)
        .arg(others.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
    let reply = topology
        .execute_all(&[Call::command(nodes_slot(), scores)])
        .await?
        .pop()
        .unwrap_or(Value::Nil);
    let scores: Vec<Option<f64>> =
        redis::from_redis_value(reply).map_err(|e| BrokerError::Protocol(e.to_string()))?;
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
