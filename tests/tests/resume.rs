//! Resume by cursor: reconnecting with the last id replays exactly what was
//! missed; cursors the node cannot honour get one `herald.resync`
//! (docs/protocol.md §2, §3).

use std::collections::BTreeMap;

use herald_testkit::{before_marker, data, resync_topics, Node, Subscribe, RESYNC, TIMEOUT};
use serde_json::json;

async fn publish_all(node: &Node, topic: &str, data: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for d in data {
        ids.push(node.api().publish_ok(topic, json!(d)).await);
    }
    ids
}

/// Subscribes to `t`, receives `k1..k3`, disconnects, misses `m1..m4`, and
/// returns the last id received with the ids of the missed events.
async fn miss_four_events(node: &Node) -> (String, Vec<String>) {
    let mut stream = node.subscribe(&["t"]).await;
    publish_all(node, "t", &["k1", "k2", "k3"]).await;
    let received = stream.events(3, TIMEOUT).await;
    assert_eq!(data(&received), ["k1", "k2", "k3"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);
    let missed = publish_all(node, "t", &["m1", "m2", "m3", "m4"]).await;
    (last, missed)
}

async fn assert_resumes_exactly(node: &Node, request: Subscribe, missed: &[String]) {
    let mut stream = request.topic("t").send().await;
    let events = before_marker(node, &mut stream, "t").await;
    assert_eq!(data(&events), ["m1", "m2", "m3", "m4"]);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, missed);
}

#[tokio::test]
async fn reconnect_with_last_event_id_header_gets_exactly_the_missed_events() {
    let node = Node::start().await;
    let (last, missed) = miss_four_events(&node).await;
    assert_resumes_exactly(
        &node,
        node.subscribe_request().last_event_id(&last),
        &missed,
    )
    .await;
}

#[tokio::test]
async fn reconnect_with_last_event_id_query_parameter_gets_exactly_the_missed_events() {
    let node = Node::start().await;
    let (last, missed) = miss_four_events(&node).await;
    let request = node.subscribe_request().query("last_event_id", &last);
    assert_resumes_exactly(&node, request, &missed).await;
}

#[tokio::test]
async fn reconnect_with_polyfill_last_event_id_parameter_gets_exactly_the_missed_events() {
    let node = Node::start().await;
    let (last, missed) = miss_four_events(&node).await;
    let request = node.subscribe_request().query("lastEventId", &last);
    assert_resumes_exactly(&node, request, &missed).await;
}

#[tokio::test]
async fn last_event_id_header_wins_over_the_query_parameter() {
    let node = Node::start().await;
    let ids = publish_all(&node, "t", &["e1", "e2", "e3", "e4"]).await;
    for param in ["last_event_id", "lastEventId"] {
        let mut stream = node
            .subscribe_request()
            .topic("t")
            .query(param, &ids[0])
            .last_event_id(&ids[2])
            .send()
            .await;
        let events = stream.events_until(TIMEOUT, |e| e.data == "e4").await;
        assert_eq!(data(&events), ["e4"], "header vs {param}");
    }
    // A garbage query parameter does not spoil a good header either.
    let mut stream = node
        .subscribe_request()
        .topic("t")
        .query("last_event_id", "garbage")
        .last_event_id(&ids[2])
        .send()
        .await;
    let events = stream.events_until(TIMEOUT, |e| e.data == "e4").await;
    assert_eq!(data(&events), ["e4"]);
}

#[tokio::test]
async fn multi_topic_stream_resumes_every_topic_from_its_composite_id() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["a", "b"]).await;
    publish_all(&node, "a", &["a1"]).await;
    publish_all(&node, "b", &["b1"]).await;
    publish_all(&node, "a", &["a2"]).await;
    assert_eq!(data(&stream.events(3, TIMEOUT).await), ["a1", "b1", "a2"]);
    let last = stream.last_event_id().to_owned();
    drop(stream);

    publish_all(&node, "b", &["b2"]).await;
    publish_all(&node, "a", &["a3"]).await;
    publish_all(&node, "b", &["b3"]).await;
    let mut resumed = node
        .subscribe_request()
        .topics(&["a", "b"])
        .last_event_id(&last)
        .send()
        .await;
    let events = before_marker(&node, &mut resumed, "a").await;
    let mut per_topic: BTreeMap<char, Vec<&str>> = BTreeMap::new();
    for e in &events {
        assert_ne!(e.event, RESYNC, "{events:?}");
        per_topic
            .entry(e.data.chars().next().unwrap())
            .or_default()
            .push(&e.data);
    }
    assert_eq!(per_topic[&'a'], ["a3"]);
    assert_eq!(per_topic[&'b'], ["b2", "b3"]);
    assert_eq!(events.len(), 3, "{events:?}");

    // Every id on the resumed stream is itself a resume point.
    let last = resumed.last_event_id().to_owned();
    drop(resumed);
    publish_all(&node, "b", &["b4"]).await;
    let mut again = node
        .subscribe_request()
        .topics(&["a", "b"])
        .last_event_id(&last)
        .send()
        .await;
    assert_eq!(data(&before_marker(&node, &mut again, "b").await), ["b4"]);
}

#[tokio::test]
async fn topic_added_on_reconnect_starts_live_while_known_topics_replay() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["a"]).await;
    publish_all(&node, "a", &["a1"]).await;
    stream.event().await;
    let last = stream.last_event_id().to_owned();
    drop(stream);

    publish_all(&node, "c", &["c-before"]).await;
    publish_all(&node, "a", &["a2"]).await;
    let mut resumed = node
        .subscribe_request()
        .topics(&["a", "c"])
        .last_event_id(&last)
        .send()
        .await;
    assert_eq!(resumed.event().await.data, "a2");
    publish_all(&node, "c", &["c-live"]).await;
    let events = resumed.events_until(TIMEOUT, |e| e.data == "c-live").await;
    assert_eq!(data(&events), ["c-live"]);
}

#[tokio::test]
async fn unreadable_cursor_gets_one_resync_listing_every_topic_then_live_events() {
    let node = Node::start().await;
    publish_all(&node, "a", &["old"]).await;
    for garbage in ["garbage", "!!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let mut stream = node
            .subscribe_request()
            .topics(&["a", "b"])
            .last_event_id(garbage)
            .send()
            .await;
        assert_eq!(stream.status(), 200);
        let first = stream.event().await;
        assert_eq!(resync_topics(&first), ["a", "b"], "cursor {garbage:?}");
        let events = before_marker(&node, &mut stream, "b").await;
        assert!(events.is_empty(), "cursor {garbage:?}: {events:?}");
    }
}

#[tokio::test]
async fn cursor_older_than_history_gets_one_resync_for_just_that_topic() {
    let node = Node::builder()
        .env("HERALD__HISTORY__MAX_EVENTS", "5")
        .start()
        .await;
    let mut stream = node.subscribe(&["a", "b"]).await;
    publish_all(&node, "a", &["a1"]).await;
    publish_all(&node, "b", &["b1"]).await;
    stream.events(2, TIMEOUT).await;
    let old = stream.last_event_id().to_owned();
    drop(stream);

    // Seven more on `a` push a2 and a3 out of its five-event history; `b`
    // keeps everything.
    publish_all(&node, "a", &["a2", "a3", "a4", "a5", "a6", "a7", "a8"]).await;
    publish_all(&node, "b", &["b2"]).await;

    let mut resumed = node
        .subscribe_request()
        .topics(&["a", "b"])
        .last_event_id(&old)
        .send()
        .await;
    let resync = resumed.event().await;
    assert_eq!(resync_topics(&resync), ["a"]);
    assert_eq!(resumed.event().await.data, "b2");
    publish_all(&node, "a", &["a9"]).await;
    let events = before_marker(&node, &mut resumed, "b").await;
    assert_eq!(data(&events), ["a9"], "no replay of a, no second resync");

    // The resync's id is a resume point: no second resync, and what came
    // after it (b2, a9, the marker) is replayed.
    drop(resumed);
    let mut again = node
        .subscribe_request()
        .topics(&["a", "b"])
        .last_event_id(&resync.id)
        .send()
        .await;
    let events = again.events_until(TIMEOUT, |e| e.data == "marker").await;
    let mut seen: Vec<&str> = data(&events);
    seen.sort();
    assert_eq!(seen, ["a9", "b2", "marker"], "{events:?}");
}

#[tokio::test]
async fn single_topic_cursor_older_than_history_resyncs_once_and_not_again() {
    let node = Node::builder()
        .env("HERALD__HISTORY__MAX_EVENTS", "5")
        .start()
        .await;
    let ids = publish_all(&node, "t", &["1", "2", "3", "4", "5", "6", "7"]).await;
    let mut stream = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&ids[0])
        .send()
        .await;
    let resync = stream.event().await;
    assert_eq!(resync_topics(&resync), ["t"]);
    publish_all(&node, "t", &["8"]).await;
    assert_eq!(stream.event().await.data, "8");
    let last = stream.last_event_id().to_owned();
    drop(stream);

    let mut again = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&last)
        .send()
        .await;
    assert!(before_marker(&node, &mut again, "t").await.is_empty());
}

#[tokio::test]
async fn cursor_at_the_oldest_kept_event_replays_without_resync() {
    let node = Node::builder()
        .env("HERALD__HISTORY__MAX_EVENTS", "5")
        .start()
        .await;
    let ids = publish_all(&node, "t", &["1", "2", "3", "4", "5", "6", "7"]).await;
    // History holds 3..7; a client that saw 2 has missed nothing lost.
    let mut stream = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&ids[1])
        .send()
        .await;
    let events = before_marker(&node, &mut stream, "t").await;
    assert_eq!(data(&events), ["3", "4", "5", "6", "7"]);
}

#[tokio::test]
async fn cursor_from_a_lost_history_gets_resync_never_a_silent_gap() {
    // The embedded broker keeps history in memory: a restarted node has
    // lost it, and its new history must not be mistaken for the old one.
    let mut first = Node::start().await;
    let ids = publish_all(&first, "t", &["1", "2", "3"]).await;
    let old_on_t = ids[1].clone();
    let old_on_u = publish_all(&first, "u", &["u1"]).await.remove(0);
    first.kill();

    let second = Node::start().await;
    publish_all(&second, "t", &["new1", "new2", "new3", "new4"]).await;
    // `t` has a new history with more events than the old cursor's
    // position; `u` has none at all.
    for (topic, cursor) in [("t", &old_on_t), ("u", &old_on_u)] {
        let mut stream = second
            .subscribe_request()
            .topic(topic)
            .last_event_id(cursor)
            .send()
            .await;
        let resync = stream.event().await;
        assert_eq!(resync_topics(&resync), [topic]);
        assert!(before_marker(&second, &mut stream, topic).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_repeatedly_during_a_publish_burst_sees_every_event_exactly_once() {
    const EVENTS: usize = 300;
    let node = Node::start().await;
    let mut stream = node.subscribe(&["a", "b"]).await;
    let api = node.api().clone();
    let publisher = tokio::spawn(async move {
        for n in 0..EVENTS {
            let topic = if n % 2 == 0 { "a" } else { "b" };
            api.publish_ok(topic, json!(format!("{topic}{n}"))).await;
        }
    });

    let mut seen = Vec::with_capacity(EVENTS);
    while seen.len() < EVENTS {
        // A few events per connection, then reconnect from the last id.
        for _ in 0..7 {
            if seen.len() == EVENTS {
                break;
            }
            let event = stream.event().await;
            assert_ne!(event.event, RESYNC, "after {} events", seen.len());
            seen.push(event.data);
        }
        let last = stream.last_event_id().to_owned();
        stream = node
            .subscribe_request()
            .topics(&["a", "b"])
            .last_event_id(&last)
            .send()
            .await;
    }
    publisher.await.expect("the publisher finishes");

    for topic in ["a", "b"] {
        let received: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|d| d.starts_with(topic))
            .collect();
        let expected: Vec<String> = (0..EVENTS)
            .filter(|n| (n % 2 == 0) == (topic == "a"))
            .map(|n| format!("{topic}{n}"))
            .collect();
        assert_eq!(received, expected, "topic {topic}: a gap or a duplicate");
    }
    assert!(before_marker(&node, &mut stream, "a").await.is_empty());
}
