//! Cluster mode (docs/protocol.md §4, §7, §8): several `herald serve` processes on
//! one real Redis. An event published on any node reaches every node's
//! subscribers exactly once; idempotency keys and subscriber counts are
//! cluster-wide; a node without `redis.url` never touches Redis.

use std::time::Duration;

use herald_testkit::{
    data, eventually, info_field, reply_integer, reply_text, start_nodes, Event, Node, NodeBuilder,
    RedisServer, SseStream, TIMEOUT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The design's node liveness is a 15 s heartbeat; the contract's bound on
/// a dead node still counting is 30 s.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(30);

/// Redis and `count` nodes on it.
async fn cluster(count: usize) -> (RedisServer, Vec<Node>) {
    let redis = RedisServer::start().await;
    let builder = Node::builder().env("HERALD__REDIS__URL", &redis.url());
    let nodes = start_nodes(&builder, count).await;
    (redis, nodes)
}

/// Reads `stream` up to the first event whose data is `marker`.
async fn until(stream: &mut SseStream, marker: &str) -> Vec<Event> {
    stream.events_until(TIMEOUT, |e| e.data == marker).await
}

/// The cluster-wide subscriber count `node` reports for `topic`.
async fn subscribers(node: &Node, topic: &str) -> u64 {
    let reply = node.api().topic_info(topic).await;
    assert_eq!(reply.status, StatusCode::OK, "topic info: {reply:?}");
    reply.body["subscribers"]
        .as_u64()
        .unwrap_or_else(|| panic!("no subscribers count in {}", reply.body))
}

/// Waits until every node reports `expected` subscribers of `topic`.
async fn wait_subscribers(nodes: &[&Node], topic: &str, expected: u64, timeout: Duration) {
    eventually(
        timeout,
        &format!("every node to count {expected} subscribers of {topic}"),
        || async {
            for node in nodes {
                if subscribers(node, topic).await != expected {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

#[tokio::test]
async fn publish_on_one_node_reaches_subscribers_on_every_node_exactly_once() {
    let (_redis, nodes) = cluster(3).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut on_a = a.subscribe(&["orders"]).await;
    let mut on_b = b.subscribe(&["orders"]).await;
    let mut on_c = c.subscribe(&["orders"]).await;
    let first = a.api().publish_ok("orders", json!("from a")).await;
    let second = c.api().publish_ok("orders", json!({"from": "c"})).await;
    let marker = b.api().publish_ok("orders", json!("marker")).await;
    for stream in [&mut on_a, &mut on_b, &mut on_c] {
        let events = until(stream, "marker").await;
        assert_eq!(data(&events), ["from a", r#"{"from":"c"}"#, "marker"]);
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        // A single-topic stream's ids are the publish cursors, whichever
        // node published and whichever node delivers.
        assert_eq!(ids, [&first, &second, &marker]);
    }
}

#[tokio::test]
async fn topics_publish_reaches_each_subscribed_topic_on_other_nodes() {
    let (_redis, nodes) = cluster(3).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut both = b.subscribe(&["x", "y"]).await;
    let mut only_x = c.subscribe(&["x"]).await;
    let reply = a
        .api()
        .publish(&json!({"topics": ["x", "y"], "data": "fan", "event": "e.fan"}))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let ids = &reply.body["ids"];
    a.api().publish_ok("x", json!("end-x")).await;
    a.api().publish_ok("y", json!("end-y")).await;

    // Once per topic on a connection that subscribes to both.
    let events = both.events(4, TIMEOUT).await;
    let mut seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str()))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            ("e.fan", "fan"),
            ("e.fan", "fan"),
            ("message", "end-x"),
            ("message", "end-y")
        ]
    );
    let events = until(&mut only_x, "end-x").await;
    assert_eq!(data(&events), ["fan", "end-x"]);
    assert_eq!(events[0].event, "e.fan");
    assert_eq!(Value::from(events[0].id.as_str()), ids["x"], "{ids}");
}

#[tokio::test]
async fn batch_keeps_per_topic_order_on_other_nodes() {
    let (_redis, nodes) = cluster(3).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut x_on_b = b.subscribe(&["x"]).await;
    let mut both_on_c = c.subscribe(&["x", "y"]).await;
    let messages: Vec<Value> = (0..60)
        .map(|i| {
            let topic = if i % 3 == 0 { "y" } else { "x" };
            json!({"topic": topic, "data": format!("{topic}{i}")})
        })
        .collect();
    let reply = a.api().publish_batch(&json!({"messages": messages})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let results = reply.body["results"].as_array().expect("results");
    let x_ids: Vec<&str> = (0..60)
        .filter(|i| i % 3 != 0)
        .map(|i| results[i]["id"].as_str().expect("an id per message"))
        .collect();
    let expected_x: Vec<String> = (0..60)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("x{i}"))
        .collect();
    let expected_y: Vec<String> = (0..60)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("y{i}"))
        .collect();

    let events = x_on_b.events(expected_x.len(), TIMEOUT).await;
    assert_eq!(data(&events), expected_x);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, x_ids);

    let events = both_on_c.events(60, TIMEOUT).await;
    let of = |prefix: char| -> Vec<&str> {
        events
            .iter()
            .map(|e| e.data.as_str())
            .filter(|d| d.starts_with(prefix))
            .collect()
    };
    assert_eq!(of('x'), expected_x);
    assert_eq!(of('y'), expected_y);
}

#[tokio::test]
async fn idempotency_key_is_shared_by_all_nodes() {
    let (_redis, nodes) = cluster(3).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut on_c = c.subscribe(&["pay"]).await;
    let mut on_a = a.subscribe(&["pay"]).await;
    let first = a
        .api()
        .publish_body_ok(&json!({"topic": "pay", "data": "first", "idempotency_key": "k-1"}))
        .await;
    // A retry on another node, whatever its body, publishes nothing and
    // answers with the first cursor.
    let retry = b
        .api()
        .publish_body_ok(&json!({"topic": "pay", "data": "second", "idempotency_key": "k-1"}))
        .await;
    assert_eq!(retry, first);
    let retry = c
        .api()
        .publish_body_ok(&json!({"topic": "pay", "data": "third", "idempotency_key": "k-1"}))
        .await;
    assert_eq!(retry, first);
    b.api().publish_ok("pay", json!("marker")).await;
    for stream in [&mut on_c, &mut on_a] {
        let events = until(stream, "marker").await;
        assert_eq!(data(&events), ["first", "marker"]);
        assert_eq!(events[0].id, first);
    }
    assert_eq!(b.api().history_length("pay").await, 2);

    // A `topics` publish repeated on another node with a one-topic body
    // answers with the first publish's cursors, in the first one's shape.
    let first = c
        .api()
        .publish(&json!({"topics": ["pay", "refund"], "data": "both", "idempotency_key": "k-2"}))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let retry = a
        .api()
        .publish(&json!({"topic": "pay", "data": "again", "idempotency_key": "k-2"}))
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.body, first.body);
    b.api().publish_ok("pay", json!("marker 2")).await;
    let events = until(&mut on_c, "marker 2").await;
    assert_eq!(data(&events), ["both", "marker 2"]);
}

#[tokio::test]
async fn topic_info_counts_subscribers_across_nodes_and_forgets_a_killed_node() {
    let (_redis, mut nodes) = cluster(3).await;
    let mut streams = Vec::new();
    for (node, count) in nodes.iter().zip([1, 2, 3]) {
        for _ in 0..count {
            streams.push(node.subscribe(&["room"]).await);
        }
    }
    let all: Vec<&Node> = nodes.iter().collect();
    wait_subscribers(&all, "room", 6, TIMEOUT).await;
    // A stream that leaves stops counting too (one of node A's).
    drop(streams.remove(0));
    wait_subscribers(&all, "room", 5, TIMEOUT).await;

    // SIGKILL: the node cannot say goodbye; its heartbeat has to age out.
    nodes[2].kill();
    let killed = Instant::now();
    let survivors: Vec<&Node> = nodes[..2].iter().collect();
    wait_subscribers(&survivors, "room", 2, DEAD_NODE_BOUND).await;
    eprintln!(
        "a killed node's 3 subscribers stopped counting after {:?}",
        killed.elapsed()
    );
    // The survivors' own streams are still counted and still served.
    let info = nodes[0].api().topic_info("room").await;
    assert_eq!(info.body["topic"], "room", "{}", info.body);
    nodes[1].api().publish_ok("room", json!("still here")).await;
    for stream in &mut streams[..2] {
        assert_eq!(stream.event().await.data, "still here");
    }
}

#[tokio::test]
async fn embedded_node_never_touches_redis() {
    let redis = RedisServer::start().await;
    let info = |text: &str| {
        info_field(text, "total_connections_received")
            .and_then(|n| n.parse::<u64>().ok())
            .expect("INFO stats has total_connections_received")
    };
    // This INFO's own connection is counted in its answer.
    let before = info(&reply_text(&redis.command(&["INFO", "stats"]).await));
    // Environment a Redis client library might pick up on its own.
    let node = NodeBuilder::default()
        .env("REDIS_URL", &redis.url())
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", &redis.port().to_string())
        .start()
        .await;
    let mut stream = node.subscribe(&["t"]).await;
    let id = node.api().publish_ok("t", json!("local")).await;
    let batch = node
        .api()
        .publish_batch(&json!({"messages": [{"topic": "t", "data": "b", "idempotency_key": "k"}]}))
        .await;
    assert_eq!(batch.status, StatusCode::ACCEPTED, "{batch:?}");
    assert_eq!(data(&stream.events(2, TIMEOUT).await), ["local", "b"]);
    let resumed = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&id)
        .send()
        .await
        .event()
        .await;
    assert_eq!(resumed.data, "b");
    assert_eq!(node.api().history_length("t").await, 2);
    assert_eq!(node.api().status_of("/readyz").await, Some(200));

    let after = info(&reply_text(&redis.command(&["INFO", "stats"]).await));
    assert_eq!(
        after,
        before + 1,
        "only the test's own INFO connected to Redis while an embedded node served"
    );
    assert_eq!(reply_integer(&redis.command(&["DBSIZE"]).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_publish_to_delivery_latency_across_two_nodes() {
    const EVENTS: usize = 500;
    let (_redis, nodes) = cluster(2).await;
    let [a, b] = &nodes[..] else { unreachable!() };
    let mut remote = b.subscribe(&["lat"]).await;
    let mut local = a.subscribe(&["lat"]).await;
    let base = Instant::now();
    let api = a.api().clone();
    let publisher = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(4));
        for _ in 0..EVENTS {
            ticker.tick().await;
            // The data is when the publish request started, in µs since
            // `base`; the clock is this process's, on both ends.
            let sent = base.elapsed().as_micros().to_string();
            api.publish_ok("lat", json!(sent)).await;
        }
    });
    let (remote_micros, local_micros) = tokio::join!(
        latencies(&mut remote, base, EVENTS),
        latencies(&mut local, base, EVENTS)
    );
    publisher.await.expect("the publisher finished");
    for (label, mut micros) in [
        ("node A -> node B", remote_micros),
        ("node A -> node A", local_micros),
    ] {
        micros.sort_unstable();
        let at = |p: usize| {
            Duration::from_micros(micros[(micros.len() * p / 100).min(micros.len() - 1)] as u64)
        };
        eprintln!(
            "publish-to-delivery latency {label} (debug build, {EVENTS} events, 4 ms apart): \
             p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            at(50),
            at(90),
            at(99),
            at(100)
        );
    }
}

/// Reads `count` events whose data is when they were published (µs since
/// `base`) and returns how long each took to arrive, checking their order.
async fn latencies(stream: &mut SseStream, base: Instant, count: usize) -> Vec<u128> {
    let mut micros = Vec::with_capacity(count);
    let mut last = None;
    for _ in 0..count {
        let event = stream.next_event(TIMEOUT).await;
        let received = base.elapsed().as_micros();
        let sent: u128 = event.data.parse().expect("a timestamp");
        assert!(last < Some(sent), "events arrive in publish order");
        last = Some(sent);
        micros.push(received - sent);
    }
    micros
}
