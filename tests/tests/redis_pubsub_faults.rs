//! A node that loses its Redis pub/sub connection while Redis keeps
//! storing events (docs/protocol.md §1–3, §8): when it is back it catches every
//! topic up from history, resyncs the topics whose history was trimmed or
//! lost meanwhile, and its presence counts come back.
//!
//! The pub/sub connection is cut with `CLIENT KILL TYPE pubsub`, and kept
//! from coming back by taking `SUBSCRIBE` away from Redis's default user
//! (`ACL SETUSER default -subscribe`); publishes, which do not subscribe,
//! keep being stored meanwhile. That makes "events accepted while a node
//! could not receive them" deterministic instead of a race.

use std::time::Duration;

use herald_testkit::{
    eventually, start_nodes, Event, Node, RedisServer, Resp, SseStream, RESYNC, TIMEOUT,
};
use serde_json::{json, Value};

async fn cluster(redis: &RedisServer, env: &[(&str, &str)]) -> Vec<Node> {
    let builder = env.iter().fold(
        Node::builder().env("HERALD__REDIS__URL", &redis.url()),
        |builder, (k, v)| builder.env(k, v),
    );
    start_nodes(&builder, 2).await
}

/// Cuts the pub/sub connection of every node that subscribes to something
/// (`nodes`) and keeps it from coming back.
async fn cut_pubsub(redis: &RedisServer, nodes: &[Node]) {
    let reply = redis
        .command(&["ACL", "SETUSER", "default", "-subscribe"])
        .await;
    assert_eq!(reply, Resp::Simple("OK".into()));
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert_eq!(
        killed,
        Resp::Integer(nodes.len() as i64),
        "one pub/sub connection per node"
    );
    for node in nodes {
        eventually(TIMEOUT, "/readyz to answer 503", || async {
            (node.api().status_of("/readyz").await == Some(503)).then_some(())
        })
        .await;
    }
}

/// Lets the nodes subscribe again and waits until they are ready.
async fn restore_pubsub(redis: &RedisServer, nodes: &[Node]) {
    let reply = redis
        .command(&["ACL", "SETUSER", "default", "+subscribe"])
        .await;
    assert_eq!(reply, Resp::Simple("OK".into()));
    wait_ready(nodes).await;
}

async fn wait_ready(nodes: &[Node]) {
    for node in nodes {
        eventually(TIMEOUT, "/readyz to answer 200", || async {
            (node.api().status_of("/readyz").await == Some(200)).then_some(())
        })
        .await;
    }
}

async fn publish_series(node: &Node, topic: &str, from: usize, to: usize) -> Vec<String> {
    let mut data = Vec::new();
    for i in from..to {
        let d = format!("{topic}-{i}");
        node.api().publish_ok(topic, json!(d)).await;
        data.push(d);
    }
    data
}

/// The topics a `herald.resync` lists (empty for other events).
fn resynced(event: &Event) -> Vec<String> {
    if event.event != RESYNC {
        return Vec::new();
    }
    let body: Value = serde_json::from_str(&event.data).expect("resync data is JSON");
    assert_eq!(body["reason"], "history_truncated", "{body}");
    body["topics"]
        .as_array()
        .expect("resync lists topics")
        .iter()
        .map(|t| t.as_str().expect("topic names").to_owned())
        .collect()
}

/// `events` as data strings, a resync shown as `RESYNC[topics]`, keeping
/// only what concerns `topic`.
fn timeline(events: &[Event], topic: &str) -> Vec<String> {
    let prefix = format!("{topic}-");
    events
        .iter()
        .filter_map(|e| {
            let topics = resynced(e);
            if e.event == RESYNC {
                topics
                    .contains(&topic.to_owned())
                    .then(|| format!("RESYNC{topics:?}"))
            } else {
                e.data.starts_with(&prefix).then(|| e.data.clone())
            }
        })
        .collect()
}

/// Reads `stream` up to the end markers of `topics` (`"<topic>-end"`).
async fn read_to_ends(stream: &mut SseStream, topics: usize) -> Vec<Event> {
    let mut ends = 0;
    stream
        .events_until(TIMEOUT, |e| {
            ends += usize::from(e.data.ends_with("-end"));
            ends == topics
        })
        .await
}

#[tokio::test]
async fn events_stored_while_nodes_could_not_subscribe_are_caught_up_exactly_once() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &[]).await;
    let mut on_a = nodes[0].subscribe(&["t"]).await;
    let mut on_b = nodes[1].subscribe(&["t", "u"]).await;
    let mut want_t = publish_series(&nodes[0], "t", 0, 3).await;
    let mut want_u = publish_series(&nodes[0], "u", 0, 3).await;
    let mut seen_a = on_a.events(3, TIMEOUT).await;
    let mut seen_b = on_b.events(6, TIMEOUT).await;

    cut_pubsub(&redis, &nodes).await;
    // Stored (202) while no node can receive them live.
    want_t.extend(publish_series(&nodes[1], "t", 3, 13).await);
    want_u.extend(publish_series(&nodes[0], "u", 3, 8).await);
    restore_pubsub(&redis, &nodes).await;

    let metrics = nodes[0].api().metrics().await;
    assert!(
        metrics.value("herald_broker_reconnects_total", &[]) >= Some(1.0),
        "a reconnection is counted"
    );
    for (topic, want) in [("t", &mut want_t), ("u", &mut want_u)] {
        nodes[1]
            .api()
            .publish_ok(topic, json!(format!("{topic}-end")))
            .await;
        want.push(format!("{topic}-end"));
    }
    seen_a.extend(read_to_ends(&mut on_a, 1).await);
    assert_eq!(timeline(&seen_a, "t"), want_t, "stream [t] on node A");
    seen_b.extend(read_to_ends(&mut on_b, 2).await);
    assert_eq!(timeline(&seen_b, "t"), want_t, "stream [t, u] on node B");
    assert_eq!(timeline(&seen_b, "u"), want_u, "stream [t, u] on node B");
}

#[tokio::test]
async fn events_trimmed_while_nodes_could_not_subscribe_give_one_resync_for_just_that_topic() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &[("HERALD__HISTORY__MAX_EVENTS", "5")]).await;
    let mut on_a = nodes[0].subscribe(&["t"]).await;
    let mut on_b = nodes[1].subscribe(&["t", "u"]).await;
    let before = publish_series(&nodes[0], "t", 0, 2).await;
    let seen_a = on_a.events(2, TIMEOUT).await;
    let seen_b = on_b.events(2, TIMEOUT).await;

    cut_pubsub(&redis, &nodes).await;
    // Twelve events on t while history keeps five: seven are gone before
    // any node can catch up. Two on u, which stay in its history.
    let during = publish_series(&nodes[1], "t", 2, 14).await;
    let mut want_u = publish_series(&nodes[1], "u", 0, 2).await;
    restore_pubsub(&redis, &nodes).await;
    nodes[0].api().publish_ok("t", json!("t-end")).await;
    nodes[0].api().publish_ok("u", json!("u-end")).await;
    want_u.push("u-end".into());

    for (name, stream, mut events, topics) in [
        ("[t] on A", &mut on_a, seen_a, 1),
        ("[t, u] on B", &mut on_b, seen_b, 2),
    ] {
        events.extend(read_to_ends(stream, topics).await);
        let t = timeline(&events, "t");
        // Exactly one resync, listing t alone, after what was delivered
        // before the cut; after it, retained events in order, then the
        // marker.
        let resyncs: Vec<usize> = (0..t.len())
            .filter(|&i| t[i].starts_with("RESYNC"))
            .collect();
        assert_eq!(resyncs.len(), 1, "stream {name}: one resync for t: {t:?}");
        assert_eq!(t[resyncs[0]], r#"RESYNC["t"]"#, "stream {name}");
        let (head, tail) = t.split_at(resyncs[0]);
        assert_eq!(head, before, "stream {name}: events before the resync");
        let tail = &tail[1..];
        let replayed = &tail[..tail.len() - 1];
        assert_eq!(
            tail.last().map(String::as_str),
            Some("t-end"),
            "stream {name}"
        );
        assert!(
            during.ends_with(replayed),
            "stream {name}: after the resync only retained events, in order: {tail:?}"
        );
        if topics == 2 {
            assert_eq!(
                timeline(&events, "u"),
                want_u,
                "stream {name}: u is not resynced"
            );
        }
    }
}

#[tokio::test]
async fn history_lost_while_nodes_could_not_subscribe_is_resynced_once_they_are_back() {
    let mut redis = RedisServer::start().await;
    let nodes = cluster(&redis, &[]).await;
    let mut stream = nodes[1].subscribe(&["t"]).await;
    nodes[0].api().publish_ok("t", json!("t-0")).await;
    assert_eq!(stream.event().await.data, "t-0");

    cut_pubsub(&redis, &nodes[1..]).await;
    // Accepted and stored, but no node received it live ...
    nodes[0].api().publish_ok("t", json!("t-1")).await;
    // ... and then its history is gone: Redis restarts without data (and
    // with its default ACL, so nodes can subscribe again).
    redis.restart().await;
    wait_ready(&nodes).await;

    // The client missed t-1 and nothing can replay it: it is owed a
    // resync now, not whenever t happens to get its next event.
    let event = stream.next_event(TIMEOUT).await;
    assert_eq!(resynced(&event), ["t"], "{event:?}");
    nodes[0].api().publish_ok("t", json!("t-2")).await;
    let event = stream.event().await;
    assert_eq!(event.data, "t-2", "no second resync: {event:?}");
}

#[tokio::test]
async fn presence_counts_come_back_after_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let nodes = cluster(&redis, &[]).await;
    let mut streams = Vec::new();
    for (node, count) in nodes.iter().zip([2, 3]) {
        for _ in 0..count {
            streams.push(node.subscribe(&["room"]).await);
        }
    }
    let count = |node: &Node| {
        let api = node.api().clone();
        async move { api.topic_info("room").await.body["subscribers"].as_u64() }
    };
    for node in &nodes {
        eventually(TIMEOUT, "5 subscribers counted", || async {
            (count(node).await == Some(5)).then_some(())
        })
        .await;
    }
    redis.restart().await;
    wait_ready(&nodes).await;
    // Presence is flushed every 2 s; a few flushes are plenty.
    let restarted = tokio::time::Instant::now();
    for node in &nodes {
        eventually(
            Duration::from_secs(8),
            "5 subscribers counted again",
            || async { (count(node).await == Some(5)).then_some(()) },
        )
        .await;
    }
    eprintln!(
        "counts were back {:?} after the restart",
        restarted.elapsed()
    );
}
