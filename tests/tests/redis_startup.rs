//! A cluster node whose Redis is down when it starts (DESIGN.md §5): it
//! starts unready instead of failing, and becomes ready by itself once
//! Redis is up.

use std::time::Duration;

use herald_testkit::{Node, RedisServer, TIMEOUT};
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
