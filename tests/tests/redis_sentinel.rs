//! herald on a primary managed by Redis Sentinel (a primary, a replica,
//! three sentinels, all real): nodes find the primary through the
//! sentinels, follow a failover by themselves within seconds, keep their
//! streams open, and with `redis.wait_replicas` lose no acknowledged event
//! when the primary is killed under load.

use std::time::Duration;

use herald_testkit::{
    data, eventually, start_nodes, Node, RedisSentinel, SentinelOptions, Traffic, RESYNC, TIMEOUT,
};
use serde_json::json;
use tokio::time::Instant;

/// Longer than a failover (about 1 to 3 s here).
const QUIET: Duration = Duration::from_secs(30);
/// Events accepted before and after each fault.
const ENOUGH: usize = 20;
/// How often the test publisher publishes.
const PACE: Duration = Duration::from_millis(10);
/// The contract: publishes work again at most this long after a promotion.
const RECOVERY: Duration = Duration::from_secs(10);

fn builder(sentinel: &RedisSentinel) -> herald_testkit::NodeBuilder {
    let mut builder = Node::builder()
        .env("HERALD__REDIS__SENTINEL_NODES", &sentinel.sentinels_env())
        .env("HERALD__REDIS__SENTINEL_MASTER", sentinel.master_name());
    if let Some(password) = sentinel.password() {
        builder = builder.env("HERALD__REDIS__PASSWORD", password);
    }
    if let Some(password) = sentinel.sentinel_password() {
        builder = builder.env("HERALD__REDIS__SENTINEL_PASSWORD", password);
    }
    builder
}

/// Failovers `node` counted so far.
async fn failovers(node: &Node) -> f64 {
    let name = "herald_broker_failovers_total";
    node.api().metric(name, &[]).await.unwrap_or_default()
}

/// Two nodes with a stream each on both topics, a publisher on node 0.
async fn traffic(nodes: &[Node], run: &str) -> Traffic {
    let topics = ["s1", "s2"];
    let streams = vec![
        (
            "node 0, both topics".to_owned(),
            nodes[0].subscribe(&topics).await,
            vec!["s1".to_owned(), "s2".to_owned()],
        ),
        (
            "node 1, s1".to_owned(),
            nodes[1].subscribe(&["s1"]).await,
            vec!["s1".to_owned()],
        ),
    ];
    Traffic::start(nodes[0].api(), run, &topics, PACE, streams, QUIET)
}

/// Waits until a publish through `node` is accepted; returns how long it
/// took from `since`.
async fn first_publish_after(node: &Node, since: Instant) -> Duration {
    eventually(
        RECOVERY,
        "a publish to be accepted after the promotion",
        || async {
            let reply = node
                .api()
                .publish(&json!({"topic": "probe", "data": "probe"}))
                .await;
            (reply.status == 202).then_some(())
        },
    )
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_the_primary_through_authenticated_sentinels() {
    let sentinel = RedisSentinel::start(SentinelOptions {
        password: Some("data-secret".into()),
        sentinel_password: Some("sentinel-secret".into()),
        ..SentinelOptions::default()
    })
    .await;
    let nodes = start_nodes(&builder(&sentinel), 2).await;
    let mut stream = nodes[1].subscribe(&["a", "b"]).await;
    nodes[0].api().publish_ok("a", json!("a1")).await;
    nodes[0].api().publish_ok("b", json!("b1")).await;
    assert_eq!(data(&stream.events(2, TIMEOUT).await), ["a1", "b1"]);
    let cursor = stream.last_event_id().to_owned();
    drop(stream);
    nodes[1].api().publish_ok("a", json!("a2")).await;
    let mut resumed = nodes[0]
        .subscribe_request()
        .topics(&["a", "b"])
        .last_event_id(&cursor)
        .send()
        .await;
    assert_eq!(resumed.event().await.data, "a2");
    // The events live on the primary the sentinels name.
    let primary = sentinel.primary_port().await;
    let length = sentinel
        .command(primary, &["XLEN", "herald:{a}:events"])
        .await;
    assert_eq!(length, herald_testkit::Resp::Integer(2));
    let metrics = nodes[0].api().metrics().await;
    assert_eq!(metrics.value("herald_broker_up", &[]), Some(1.0));
    assert_eq!(
        metrics.value("herald_broker_primaries", &[("state", "up")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_is_followed_within_seconds() {
    let sentinel = RedisSentinel::start(SentinelOptions::default()).await;
    let nodes = start_nodes(&builder(&sentinel), 2).await;
    let traffic = traffic(&nodes, "switch").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let old = sentinel.primary_port().await;
    let new = sentinel.failover().await;
    let promoted = Instant::now();
    assert_ne!(old, new);
    let took = first_publish_after(&nodes[1], promoted).await;
    eprintln!("first publish accepted {took:?} after the promotion");
    traffic.wait_accepted_after(promoted, ENOUGH).await;
    for node in &nodes {
        eventually(QUIET, "the failover to be counted", || async {
            (failovers(node).await >= 1.0).then_some(())
        })
        .await;
    }
    // The old primary may have acknowledged a few writes before the
    // sentinels demoted it: those are lost, and only a client that saw
    // one may be told to resync.
    let delivery = traffic.finish().await;
    delivery.assert_every_event_once_or_resync();
    eprintln!("resyncs: {}", delivery.resyncs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_under_load_is_replaced_within_seconds() {
    let mut sentinel = RedisSentinel::start(SentinelOptions::default()).await;
    let nodes = start_nodes(&builder(&sentinel), 2).await;
    let traffic = traffic(&nodes, "crash").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let old = sentinel.kill_primary().await;
    let new = sentinel.wait_new_primary(old).await;
    let promoted = Instant::now();
    let took = first_publish_after(&nodes[1], promoted).await;
    eprintln!("first publish accepted {took:?} after {new} was promoted");
    traffic.wait_accepted_after(promoted, ENOUGH).await;
    let delivery = traffic.finish().await;
    delivery.assert_every_event_once_or_resync();
    for node in &nodes {
        assert!(failovers(node).await >= 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_with_wait_replicas_loses_no_acknowledged_event() {
    let mut sentinel = RedisSentinel::start(SentinelOptions::default()).await;
    let nodes = start_nodes(
        &builder(&sentinel)
            .env("HERALD__REDIS__WAIT_REPLICAS", "1")
            .env("HERALD__REDIS__WAIT_TIMEOUT", "500ms"),
        2,
    )
    .await;
    let traffic = traffic(&nodes, "acked").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let old = sentinel.kill_primary().await;
    let new = sentinel.wait_new_primary(old).await;
    // The new primary has no replica to confirm writes (so every publish is
    // refused) until the old one is back as its replica.
    sentinel.restart(old).await;
    sentinel.wait_replicating(old).await;
    let back = Instant::now();
    let took = first_publish_after(&nodes[1], back).await;
    eprintln!("first publish accepted {took:?} after {old} replicated {new}");
    traffic.wait_accepted_after(back, ENOUGH).await;
    let delivery = traffic.finish().await;
    delivery.assert_no_accepted_event_lost();
    eprintln!("resyncs: {}", delivery.resyncs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_refuses_with_503_when_no_replica_confirms() {
    let mut sentinel = RedisSentinel::start(SentinelOptions::default()).await;
    let nodes = start_nodes(
        &builder(&sentinel)
            .env("HERALD__REDIS__WAIT_REPLICAS", "1")
            .env("HERALD__REDIS__WAIT_TIMEOUT", "200ms"),
        1,
    )
    .await;
    let mut stream = nodes[0].subscribe(&["w"]).await;
    nodes[0].api().publish_ok("w", json!("replicated")).await;
    assert_eq!(stream.event().await.data, "replicated");
    // Without its replica the primary cannot confirm: 503, Retry-After.
    let replicas = sentinel.replica_ports().await;
    for replica in &replicas {
        sentinel.pause(*replica);
    }
    let reply = nodes[0]
        .api()
        .publish(&json!({"topic": "w", "data": "unconfirmed", "idempotency_key": "u"}))
        .await;
    reply.assert_problem(503);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    for replica in &replicas {
        sentinel.resume(*replica);
    }
    // The retry with the same key is confirmed and stores nothing twice.
    let id = eventually(QUIET, "the retry to be confirmed", || async {
        let reply = nodes[0]
            .api()
            .publish(&json!({"topic": "w", "data": "unconfirmed", "idempotency_key": "u"}))
            .await;
        (reply.status == 202).then(|| reply.body["id"].clone())
    })
    .await;
    let event = stream.event().await;
    assert_eq!(event.data, "unconfirmed");
    assert_eq!(event.id, id.as_str().unwrap_or_default());
    assert!(event.event != RESYNC);
    assert_eq!(nodes[0].api().history_length("w").await, 2);
}

/// Stops `primary` from replicating: replicas may no longer sync from it
/// (an ACL rule on the user they connect as) and their links are cut.
async fn cut_replication(sentinel: &RedisSentinel, primary: u16) {
    let reply = sentinel
        .command(primary, &["ACL", "SETUSER", "default", "-psync", "-sync"])
        .await;
    assert_eq!(reply, herald_testkit::Resp::Simple("OK".into()));
    let killed = sentinel
        .command(primary, &["CLIENT", "KILL", "TYPE", "replica"])
        .await;
    assert_eq!(killed, herald_testkit::Resp::Integer(1));
}

/// A replica that missed the newest events of one topic is promoted: the
/// streams that received those events are told to resync that topic only,
/// a cursor naming a lost event resyncs, and the events published after
/// the failover get cursors no earlier id names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_writes_resyncs_exactly_the_affected_topic() {
    let mut sentinel = RedisSentinel::start(SentinelOptions::default()).await;
    let nodes = start_nodes(&builder(&sentinel), 1).await;
    let node = &nodes[0];
    let mut both = node.subscribe(&["lost", "kept"]).await;
    let mut lost_only = node.subscribe(&["lost"]).await;
    let mut kept_only = node.subscribe(&["kept"]).await;
    node.api().publish_ok("lost", json!("lost-1")).await;
    node.api().publish_ok("kept", json!("kept-1")).await;
    let primary = sentinel.primary_port().await;
    let replicated = sentinel.command(primary, &["WAIT", "1", "5000"]).await;
    assert_eq!(replicated, herald_testkit::Resp::Integer(1));

    // The replica stops hearing the primary (its link is cut, and the
    // primary refuses to feed it again); two more events of "lost" are
    // acknowledged and delivered, then the primary dies with them.
    let replica = sentinel.replica_ports().await[0];
    cut_replication(&sentinel, primary).await;
    let gone: Vec<String> = vec![
        node.api().publish_ok("lost", json!("lost-2")).await,
        node.api().publish_ok("lost", json!("lost-3")).await,
    ];
    assert_eq!(
        data(&both.events(4, TIMEOUT).await),
        ["lost-1", "kept-1", "lost-2", "lost-3"]
    );
    assert_eq!(
        data(&lost_only.events(3, TIMEOUT).await),
        ["lost-1", "lost-2", "lost-3"]
    );
    assert_eq!(data(&kept_only.events(1, TIMEOUT).await), ["kept-1"]);
    sentinel.kill(primary);
    assert_eq!(sentinel.wait_new_primary(primary).await, replica);

    let after = eventually(QUIET, "a publish on the promoted replica", || async {
        let reply = node
            .api()
            .publish(&json!({"topic": "lost", "data": "lost-4", "idempotency_key": "l4"}))
            .await;
        (reply.status == 202).then(|| reply.body["id"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(
        !gone.contains(&after),
        "a new event reuses a lost event's cursor"
    );
    node.api().publish_ok("kept", json!("kept-2")).await;

    let events = both.events_until(TIMEOUT, |e| e.data == "kept-2").await;
    let resyncs: Vec<Vec<String>> = events
        .iter()
        .filter(|e| e.event == RESYNC)
        .map(herald_testkit::resync_topics)
        .collect();
    assert_eq!(resyncs, [vec!["lost".to_owned()]], "{events:?}");
    let live: Vec<&str> = events
        .iter()
        .filter(|e| e.event != RESYNC)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(live, ["lost-4", "kept-2"]);
    let events = lost_only
        .events_until(TIMEOUT, |e| e.data == "lost-4")
        .await;
    assert_eq!(
        events.iter().filter(|e| e.event == RESYNC).count(),
        1,
        "{events:?}"
    );
    assert_eq!(events.last().map(|e| e.id.as_str()), Some(after.as_str()));
    let events = kept_only
        .events_until(TIMEOUT, |e| e.data == "kept-2")
        .await;
    assert!(events.iter().all(|e| e.event != RESYNC), "{events:?}");

    // A client that saw a lost event resyncs; one that did not replays.
    let mut late = node
        .subscribe_request()
        .topic("lost")
        .last_event_id(&gone[1])
        .send()
        .await;
    assert_eq!(late.event().await.event, RESYNC);
}
