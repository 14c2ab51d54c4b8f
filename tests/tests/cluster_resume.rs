//! Resume on any node (docs/protocol.md §2): a cursor received from one node
//! resumes on another with exactly the missed events, for single- and
//! multi-topic streams; a cursor past the retained history gets one
//! `herald.resync` for just those topics; the clients of a node that dies
//! reconnect elsewhere and miss nothing.

use std::time::Duration;

use herald_testkit::{
    data, eventually, resync_topics, start_nodes, Event, Item, Next, Node, PublishLog,
    PublisherLoop, RedisServer, SseStream, RESYNC, TIMEOUT,
};
use serde_json::json;

async fn cluster(count: usize, env: &[(&str, &str)]) -> (RedisServer, Vec<Node>) {
    let redis = RedisServer::start().await;
    let builder = env.iter().fold(
        Node::builder().env("HERALD__REDIS__URL", &redis.url()),
        |builder, (k, v)| builder.env(k, v),
    );
    let nodes = start_nodes(&builder, count).await;
    (redis, nodes)
}

async fn publish_all(node: &Node, topic: &str, data: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for d in data {
        ids.push(node.api().publish_ok(topic, json!(d)).await);
    }
    ids
}

#[tokio::test]
async fn cursor_from_one_node_resumes_on_another_with_exactly_the_missed_events() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut stream = a.subscribe(&["t"]).await;
    publish_all(a, "t", &["k1", "k2"]).await;
    assert_eq!(data(&stream.events(2, TIMEOUT).await), ["k1", "k2"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);
    // Missed events published through two other nodes.
    let mut missed = publish_all(b, "t", &["m1", "m2"]).await;
    missed.extend(publish_all(c, "t", &["m3"]).await);

    let mut resumed = b
        .subscribe_request()
        .topic("t")
        .last_event_id(&last)
        .send()
        .await;
    let marker = a.api().publish_ok("t", json!("marker")).await;
    let events = resumed.events_until(TIMEOUT, |e| e.data == "marker").await;
    assert_eq!(data(&events), ["m1", "m2", "m3", "marker"]);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    missed.push(marker);
    assert_eq!(ids, missed);
}

#[tokio::test]
async fn composite_cursor_from_one_node_resumes_every_topic_on_another() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut stream = a.subscribe(&["x", "y", "z"]).await;
    a.api().publish_ok("x", json!("x1")).await;
    c.api().publish_ok("y", json!("y1")).await;
    a.api().publish_ok("x", json!("x2")).await;
    assert_eq!(data(&stream.events(3, TIMEOUT).await), ["x1", "y1", "x2"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);
    publish_all(b, "y", &["y2", "y3"]).await;
    publish_all(c, "x", &["x3"]).await;
    publish_all(a, "z", &["z1"]).await;

    // Resumed on the third node, with the topics in another order.
    let mut resumed = c
        .subscribe_request()
        .topics(&["z", "y", "x"])
        .last_event_id(&last)
        .send()
        .await;
    for topic in ["x", "y", "z"] {
        b.api()
            .publish_ok(topic, json!(format!("end-{topic}")))
            .await;
    }
    let events = resumed.events(7, TIMEOUT).await;
    let of = |topic: char| -> Vec<&str> {
        data(&events)
            .into_iter()
            .filter(|d| d.starts_with(topic) || d.ends_with(topic))
            .collect()
    };
    assert_eq!(of('x'), ["x3", "end-x"]);
    assert_eq!(of('y'), ["y2", "y3", "end-y"]);
    assert_eq!(of('z'), ["z1", "end-z"]);
    assert!(events.iter().all(|e| e.event == "message"), "{events:?}");

    // The last id covers all three topics: resuming with it on node B
    // replays nothing.
    let last = resumed.last_event_id().to_owned();
    drop(resumed);
    let mut again = b
        .subscribe_request()
        .topics(&["x", "y", "z"])
        .last_event_id(&last)
        .send()
        .await;
    a.api().publish_ok("y", json!("after")).await;
    assert_eq!(data(&again.events(1, TIMEOUT).await), ["after"]);
}

#[tokio::test]
async fn truncated_history_resyncs_only_its_topics_on_another_node_and_the_resync_id_does_not_resync_again(
) {
    let (_redis, nodes) = cluster(3, &[("HERALD__HISTORY__MAX_EVENTS", "3")]).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    let mut stream = a.subscribe(&["x", "y"]).await;
    a.api().publish_ok("x", json!("x1")).await;
    a.api().publish_ok("y", json!("y1")).await;
    assert_eq!(data(&stream.events(2, TIMEOUT).await), ["x1", "y1"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);
    // x2..x6 push x's retained history (3 events) past the cursor; y2 is
    // still retained.
    publish_all(b, "x", &["x2", "x3", "x4", "x5", "x6"]).await;
    publish_all(c, "y", &["y2"]).await;
    assert_eq!(a.api().history_length("x").await, 3);

    let mut resumed = b
        .subscribe_request()
        .topics(&["x", "y"])
        .last_event_id(&last)
        .send()
        .await;
    let first = resumed.event().await;
    assert_eq!(resync_topics(&first), ["x"]);
    let resync_id = first.id.clone();
    a.api().publish_ok("x", json!("end-x")).await;
    a.api().publish_ok("y", json!("end-y")).await;
    let events = resumed.events(3, TIMEOUT).await;
    let mut got = data(&events);
    got.sort_unstable();
    assert_eq!(got, ["end-x", "end-y", "y2"]);
    let y: Vec<&str> = data(&events)
        .into_iter()
        .filter(|d| d.contains('y'))
        .collect();
    assert_eq!(y, ["y2", "end-y"]);
    drop(resumed);
    let metrics = b.api().metrics().await;
    assert_eq!(
        metrics.value("herald_resumes_total", &[("result", "resync")]),
        Some(1.0)
    );

    // The resync's own id is a resume point: x from where the resync left
    // it (after x6), y from y1. No second resync.
    let mut again = c
        .subscribe_request()
        .topics(&["x", "y"])
        .last_event_id(&resync_id)
        .send()
        .await;
    a.api().publish_ok("x", json!("final")).await;
    let events = again.events_until(TIMEOUT, |e| e.data == "final").await;
    assert!(events.iter().all(|e| e.event != RESYNC), "{events:?}");
    let x: Vec<&str> = data(&events)
        .into_iter()
        .filter(|d| !d.contains('y'))
        .collect();
    let y: Vec<&str> = data(&events)
        .into_iter()
        .filter(|d| d.contains('y'))
        .collect();
    assert_eq!(x, ["end-x", "final"]);
    assert_eq!(y, ["y2", "end-y"]);
}

/// Reads `stream` until its connection ends, returning the events.
async fn events_until_closed(stream: &mut SseStream) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match stream.try_next_item(TIMEOUT).await {
            Next::Item(Item::Event(event)) => events.push(event),
            Next::Item(_) => {}
            Next::Closed => return events,
            Next::TimedOut => panic!("the stream of a killed node stayed open"),
        }
    }
}

/// Checks that `events` hold every accepted event of each of `topics`
/// exactly once, in publish order, with nothing else but the markers.
fn assert_exactly_the_accepted(events: &[Event], topics: &[&str], log: &PublishLog, who: &str) {
    assert!(
        events.iter().all(|e| e.event == "message"),
        "{who}: only plain events (no resync) expected: {events:?}"
    );
    for topic in topics {
        let prefix = format!("{topic}#");
        let got: Vec<&str> = data(events)
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .collect();
        let accepted: Vec<&str> = log
            .accepted_on(topic)
            .iter()
            .map(|a| a.data.as_str())
            .collect();
        assert_eq!(got, accepted, "{who}: events of {topic}");
    }
}

/// How a node goes away under its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: connections reset, no goodbye.
    Kill,
    /// SIGTERM: streams closed over the drain timeout, presence removed.
    Drain,
}

/// Two clients of node C (one single-topic, one multi-topic) while a
/// backend publishes on node A; C goes away; the clients reconnect to node
/// B with the last id they received and must end up with every accepted
/// event exactly once, in order.
async fn clients_resume_elsewhere(stop: Stop) {
    let (_redis, mut nodes) = cluster(3, &[("HERALD__SERVER__DRAIN_TIMEOUT", "1s")]).await;
    let mut single = nodes[2].subscribe(&["p"]).await;
    let mut multi = nodes[2].subscribe(&["p", "q"]).await;
    let publisher = PublisherLoop::start(
        nodes[0].api().clone(),
        "kill",
        &["p", "q"],
        Duration::from_millis(5),
    );
    let mut single_events = single.events(10, TIMEOUT).await;
    let mut multi_events = multi.events(10, TIMEOUT).await;

    match stop {
        Stop::Kill => nodes[2].kill(),
        Stop::Drain => nodes[2].start_terminating(),
    }
    single_events.extend(events_until_closed(&mut single).await);
    multi_events.extend(events_until_closed(&mut multi).await);
    // Reconnect to a surviving node with the last id each client received,
    // while the publisher keeps going.
    let mut single = nodes[1]
        .subscribe_request()
        .topic("p")
        .last_event_id(single.last_event_id())
        .send()
        .await;
    let mut multi = nodes[1]
        .subscribe_request()
        .topics(&["p", "q"])
        .last_event_id(multi.last_event_id())
        .send()
        .await;
    single_events.extend(single.events(10, TIMEOUT).await);
    multi_events.extend(multi.events(10, TIMEOUT).await);
    let log = publisher.stop().await;
    assert!(log.refusals.is_empty(), "{:?}", log.refusals);
    nodes[0].api().publish_ok("p", json!("end-p")).await;
    nodes[0].api().publish_ok("q", json!("end-q")).await;
    single_events.extend(single.events_until(TIMEOUT, |e| e.data == "end-p").await);
    let mut ends = 0;
    multi_events.extend(
        multi
            .events_until(TIMEOUT, |e| {
                ends += usize::from(e.data.starts_with("end-"));
                ends == 2
            })
            .await,
    );

    assert_exactly_the_accepted(&single_events, &["p"], &log, "single-topic client");
    let ids: Vec<&str> = single_events
        .iter()
        .filter(|e| e.data.starts_with("p#"))
        .map(|e| e.id.as_str())
        .collect();
    let accepted: Vec<&str> = log
        .accepted_on("p")
        .iter()
        .map(|a| a.id.as_deref().expect("accepted"))
        .collect();
    assert_eq!(ids, accepted, "single-topic ids are the publish cursors");
    assert_exactly_the_accepted(&multi_events, &["p", "q"], &log, "multi-topic client");

    if stop == Stop::Drain {
        // A node that stops cleanly stops counting at once, not after its
        // heartbeat ages out: only the two reconnected clients remain.
        assert!(nodes[2].wait_exit(TIMEOUT).await.success());
        eventually(TIMEOUT, "2 subscribers of p", || async {
            let info = nodes[0].api().topic_info("p").await;
            (info.body["subscribers"] == 2).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn clients_of_a_killed_node_resume_on_another_and_miss_nothing() {
    clients_resume_elsewhere(Stop::Kill).await;
}

#[tokio::test]
async fn clients_of_a_draining_node_resume_on_another_and_miss_nothing() {
    clients_resume_elsewhere(Stop::Drain).await;
}

#[tokio::test]
async fn cursor_from_before_redis_lost_its_data_resyncs_once_on_any_node() {
    let mut redis = RedisServer::start().await;
    let builder = Node::builder().env("HERALD__REDIS__URL", &redis.url());
    let nodes = start_nodes(&builder, 2).await;
    let mut stream = nodes[0].subscribe(&["x", "y"]).await;
    nodes[0].api().publish_ok("x", json!("x1")).await;
    nodes[0].api().publish_ok("y", json!("y1")).await;
    assert_eq!(data(&stream.events(2, TIMEOUT).await), ["x1", "y1"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);

    // Redis comes back empty; x gets a new history, y none yet.
    redis.restart().await;
    for node in &nodes {
        node.wait_ready().await;
    }
    nodes[1].api().publish_ok("x", json!("x-new")).await;

    let mut resumed = nodes[1]
        .subscribe_request()
        .topics(&["x", "y"])
        .last_event_id(&last)
        .send()
        .await;
    let first = resumed.event().await;
    assert_eq!(resync_topics(&first), ["x", "y"], "both histories are gone");
    let resync_id = first.id.clone();
    nodes[0].api().publish_ok("y", json!("y-new")).await;
    nodes[0].api().publish_ok("x", json!("x-end")).await;
    // After a resync the topics continue live: x-new predates it.
    let events = resumed.events_until(TIMEOUT, |e| e.data == "x-end").await;
    assert_eq!(data(&events), ["y-new", "x-end"]);
    drop(resumed);

    // The resync's id is a resume point in the new histories.
    let mut again = nodes[0]
        .subscribe_request()
        .topics(&["x", "y"])
        .last_event_id(&resync_id)
        .send()
        .await;
    nodes[1].api().publish_ok("x", json!("final")).await;
    let events = again.events_until(TIMEOUT, |e| e.data == "final").await;
    assert!(events.iter().all(|e| e.event != RESYNC), "{events:?}");
    let mut got = data(&events);
    got.sort_unstable();
    assert_eq!(got, ["final", "x-end", "y-new"]);
    let x: Vec<&str> = data(&events)
        .into_iter()
        .filter(|d| !d.starts_with('y'))
        .collect();
    assert_eq!(x, ["x-end", "final"]);
}
