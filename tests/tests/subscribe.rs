//! `GET /v1/events`: what a stream looks like, and what publishes of every
//! kind look like on it (docs/protocol.md §1–4).

use herald_testkit::{Event, Item, Node, TIMEOUT};
use serde_json::json;

/// Publishes a marker to `topic` and reads `stream` up to it: everything
/// before the marker is what reached the stream, with no waiting for
/// silence.
async fn events_before_marker(
    node: &Node,
    stream: &mut herald_testkit::SseStream,
    topic: &str,
) -> Vec<Event> {
    node.api().publish_ok(topic, json!("marker")).await;
    let mut events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    events.pop();
    events
}

#[tokio::test]
async fn stream_answers_with_sse_headers_then_retry_and_comment_before_any_event() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["news"]).await;

    assert_eq!(stream.status(), 200);
    let content_type = stream.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content type {content_type:?}"
    );
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));

    // Both arrive before anything is published: proxies flush the headers.
    assert_eq!(stream.next_item(TIMEOUT).await, Item::Retry(2000));
    assert!(matches!(stream.next_item(TIMEOUT).await, Item::Comment(_)));
    assert!(stream.raw().starts_with(b"retry: 2000\n:"));

    let id = node.api().publish_ok("news", json!("first")).await;
    let event = stream.event().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "first")
    );
}

#[tokio::test]
async fn idle_stream_receives_heartbeat_comments() {
    let node = Node::builder()
        .env("HERALD__SERVER__HEARTBEAT_INTERVAL", "200ms")
        .start()
        .await;
    let mut stream = node.subscribe(&["quiet"]).await;
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match stream.next_item(TIMEOUT).await {
            Item::Comment(text) if text == "hb" => heartbeats += 1,
            Item::Event(event) => panic!("no event was published, got {event:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn string_data_arrives_as_is_with_the_message_type() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    node.api().publish_ok("t", json!("plain text")).await;
    let event = stream.event().await;
    assert_eq!(event.data, "plain text");
    assert_eq!(event.event, "message");
}

#[tokio::test]
async fn json_data_arrives_compact_with_key_order_numbers_and_utf8_kept() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let body = r#"{"topic":"t","data": { "zeta": 1, "alpha": [1.50, 12345678901234567890123, -0.0] ,
        "text": "caf\u00e9 \u2713 \"q\"", "nested": {"b": null, "a": true} }}"#;
    let reply = node.api().post_bytes("/v1/publish", body).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(
        stream.event().await.data,
        r#"{"zeta":1,"alpha":[1.50,12345678901234567890123,-0.0],"text":"café ✓ \"q\"","nested":{"b":null,"a":true}}"#
    );
}

#[tokio::test]
async fn null_and_scalar_json_data_arrive_as_their_json_text() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    for (data, wire) in [
        (json!(null), "null"),
        (json!(42), "42"),
        (json!(true), "true"),
        (json!([]), "[]"),
    ] {
        node.api().publish_ok("t", data).await;
        assert_eq!(stream.event().await.data, wire);
    }
}

#[tokio::test]
async fn event_type_is_sent_and_the_message_type_is_left_out_of_the_wire() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let api = node.api();
    api.publish_body_ok(&json!({"topic": "t", "data": "a", "event": "order.updated"}))
        .await;
    api.publish_body_ok(&json!({"topic": "t", "data": "b", "event": "message"}))
        .await;
    api.publish_ok("t", json!("c")).await;

    let events = stream.events(3, TIMEOUT).await;
    let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(types, ["order.updated", "message", "message"]);
    let wire = String::from_utf8_lossy(stream.raw());
    assert_eq!(wire.matches("event:").count(), 1, "wire: {wire:?}");
    assert!(wire.contains("event: order.updated\n"), "wire: {wire:?}");
}

#[tokio::test]
async fn topics_publish_reaches_a_stream_once_per_subscribed_topic() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["a", "b"]).await;
    let reply = node
        .api()
        .publish(&json!({"topics": ["a", "b", "c"], "data": "fan"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let ids = reply.body["ids"].as_object().expect("ids by topic");
    assert_eq!(ids.len(), 3, "{}", reply.body);
    for topic in ["a", "b", "c"] {
        assert!(ids[topic].is_string(), "no id for {topic}: {}", reply.body);
    }

    let events = events_before_marker(&node, &mut stream, "a").await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["fan", "fan"]);
}

#[tokio::test]
async fn topic_named_twice_in_a_subscribe_counts_once() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["a", "a"]).await;
    assert_eq!(stream.status(), 200);
    node.api().publish_ok("a", json!("once")).await;
    let events = events_before_marker(&node, &mut stream, "a").await;
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn single_topic_stream_ids_equal_the_cursors_publish_returned() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["orders.42"]).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(node.api().publish_ok("orders.42", json!(n)).await);
    }
    let received: Vec<String> = stream
        .events(5, TIMEOUT)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(received, published);
    assert_eq!(stream.last_event_id(), published[4]);
}

#[tokio::test]
async fn stream_with_sixty_four_distinct_topics_is_accepted() {
    let node = Node::start().await;
    // 65 parameters, 64 distinct topics: a topic named twice counts once.
    let names: Vec<String> = (0..64)
        .map(|n| format!("topic-{n}"))
        .chain(["topic-0".to_owned()])
        .collect();
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut stream = node.subscribe(&topics).await;
    assert_eq!(stream.status(), 200);
    node.api().publish_ok("topic-63", json!("last")).await;
    assert_eq!(stream.event().await.data, "last");
}

#[tokio::test]
async fn every_subscriber_of_a_topic_gets_every_event_in_order() {
    let node = Node::start().await;
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(node.subscribe(&["fan"]).await);
    }
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(node.api().publish_ok("fan", json!(n)).await);
    }
    for (s, stream) in streams.iter_mut().enumerate() {
        let received: Vec<String> = stream
            .events(ids.len(), TIMEOUT)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(received, ids, "subscriber {s}");
    }
    let delivered = node
        .api()
        .metrics()
        .await
        .value("herald_events_delivered_total", &[]);
    assert_eq!(delivered, Some(40.0 * 25.0));
}
