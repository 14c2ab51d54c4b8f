//! Redis up but not fully available (docs/protocol.md §4, §8): down when a node
//! starts (the node starts unready and becomes ready by itself), or
//! refusing writes because it is out of memory or has become a read-only
//! replica (as an old primary does after a failover): publishes cannot be
//! stored and must say "retry later"; reads and open streams are
//! unaffected.

use std::time::Duration;

use herald_testkit::{Node, RedisServer, Resp, TIMEOUT};
use serde_json::json;

#[tokio::test]
async fn node_started_before_redis_becomes_ready_when_redis_comes_up() {
    let mut redis = RedisServer::start().await;
    // The port stays reserved for this Redis; nothing listens on it now.
    redis.stop().await;
    let builder = Node::builder().env("HERALD__REDIS__URL", &redis.url());
    let (node, ()) = tokio::join!(builder.start(), async {
        // Not a wait for a condition: this shapes the scenario, so the
        // node is already up and retrying when Redis appears.
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart().await;
    });
    assert!(
        node.log_text().contains("redis subscriber connection lost"),
        "the node started while Redis was down; log {}",
        node.log_path().display()
    );
    let metrics = node.api().metrics().await;
    assert_eq!(metrics.value("herald_broker_up", &[]), Some(1.0));

    let mut stream = node.subscribe(&["t"]).await;
    let id = node.api().publish_ok("t", json!("hello")).await;
    let event = stream.next_event(TIMEOUT).await;
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("hello", id.as_str())
    );
}

/// A node on a Redis that refuses every write (`maxmemory 1`, the default
/// `noeviction` policy), with one stored event per returned cursor.
async fn full_redis() -> (RedisServer, Node, Vec<String>) {
    let redis = RedisServer::start().await;
    let node = Node::builder()
        .env("HERALD__REDIS__URL", &redis.url())
        .start()
        .await;
    let mut ids = Vec::new();
    for data in ["e0", "e1"] {
        ids.push(node.api().publish_ok("t", json!(data)).await);
    }
    let reply = redis.command(&["CONFIG", "SET", "maxmemory", "1"]).await;
    assert_eq!(reply, Resp::Simple("OK".into()));
    (redis, node, ids)
}

#[tokio::test]
async fn publish_while_redis_refuses_writes_is_503_with_retry_after() {
    let (redis, node, _) = full_redis().await;
    let mut stream = node.subscribe(&["t"]).await;
    let reply = node
        .api()
        .publish(&json!({"topic": "t", "data": "refused"}))
        .await;
    reply.assert_problem(503);
    let retry_after = reply.header("retry-after").unwrap_or_default();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After {retry_after:?}"
    );
    // Nothing was stored; once Redis has room again publishing resumes.
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).await;
    node.api().publish_ok("t", json!("later")).await;
    assert_eq!(stream.event().await.data, "later");
}

#[tokio::test]
async fn reads_keep_working_while_redis_refuses_writes() {
    let (_redis, node, ids) = full_redis().await;
    let info = node.api().topic_info("t").await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.body["history"]["length"], 2, "{}", info.body);
    // A reconnecting client still gets what it missed.
    let mut stream = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&ids[0])
        .send()
        .await;
    let event = stream.next_event(TIMEOUT).await;
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("e1", ids[1].as_str())
    );
}

#[tokio::test]
async fn publish_while_redis_is_a_read_only_replica_is_503_with_retry_after() {
    let redis = RedisServer::start().await;
    let node = Node::builder()
        .env("HERALD__REDIS__URL", &redis.url())
        .start()
        .await;
    let mut stream = node.subscribe(&["t"]).await;
    node.api().publish_ok("t", json!("before")).await;
    // Demoted, as a failover demotes the old primary; its primary (port 1)
    // never answers, so its data stays as it was.
    let reply = redis.command(&["REPLICAOF", "127.0.0.1", "1"]).await;
    assert_eq!(reply, Resp::Simple("OK".into()));
    let reply = node
        .api()
        .publish(&json!({"topic": "t", "data": "refused"}))
        .await;
    reply.assert_problem(503);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    // Promoted again, it takes publishes; the stream lost nothing.
    redis.command(&["REPLICAOF", "NO", "ONE"]).await;
    node.api().publish_ok("t", json!("after")).await;
    let events = stream.events(2, TIMEOUT).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["before", "after"]);
}
