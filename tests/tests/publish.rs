//! `POST /v1/publish` and `/v1/publish/batch`: answers, idempotency, batch
//! order and all-or-nothing validation (docs/protocol.md §4).

use herald_testkit::{Node, SseStream, TIMEOUT};
use serde_json::{json, Value};

/// Reads `stream` up to a marker published to `topic` and returns the data
/// of everything before it.
async fn data_before_marker(node: &Node, stream: &mut SseStream, topic: &str) -> Vec<String> {
    node.api().publish_ok(topic, json!("marker")).await;
    let mut events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    events.pop();
    events.into_iter().map(|e| e.data).collect()
}

/// The numbers in `text`, for checking that a detail names an index.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[tokio::test]
async fn publish_answers_202_with_a_cursor_and_stores_the_event() {
    let node = Node::start().await;
    let reply = node
        .api()
        .publish(&json!({"topic": "t", "data": "x"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["id"].as_str().expect("an id");
    assert!(!id.is_empty());
    let info = node.api().topic_info("t").await;
    assert_eq!(info.body["history"]["length"], 1);
    assert_eq!(info.body["history"]["last"], json!(id));
}

#[tokio::test]
async fn repeated_idempotency_key_answers_the_first_cursor_and_delivers_once() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let api = node.api();
    let first = api
        .publish_body_ok(&json!({"topic": "t", "data": "first", "idempotency_key": "k-1"}))
        .await;
    // A retry with another body is still the same publish.
    let again = api
        .publish_body_ok(&json!({
            "topic": "t", "data": "second", "event": "other", "idempotency_key": "k-1"
        }))
        .await;
    assert_eq!(again, first);

    assert_eq!(data_before_marker(&node, &mut stream, "t").await, ["first"]);
    assert_eq!(api.history_length("t").await, 2);
}

#[tokio::test]
async fn repeated_idempotency_key_on_a_topics_publish_answers_the_first_ids() {
    let node = Node::start().await;
    let api = node.api();
    let body = json!({"topics": ["a", "b"], "data": 1, "idempotency_key": "multi"});
    let first = api.publish(&body).await;
    assert_eq!(first.status, 202, "{first:?}");
    let again = api
        .publish(&json!({"topics": ["a", "b"], "data": 2, "idempotency_key": "multi"}))
        .await;
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.body["ids"], first.body["ids"]);
    assert_eq!(api.history_length("a").await, 1);
    assert_eq!(api.history_length("b").await, 1);
}

#[tokio::test]
async fn batch_messages_with_seen_idempotency_keys_are_not_published_again() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let api = node.api();
    let first = api
        .publish_batch(&json!({"messages": [
            {"topic": "t", "data": "one", "idempotency_key": "b-1"},
            {"topic": "t", "data": "two", "idempotency_key": "b-2"},
        ]}))
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    let second = api
        .publish_batch(&json!({"messages": [
            {"topic": "t", "data": "one again", "idempotency_key": "b-1"},
            {"topic": "t", "data": "three", "idempotency_key": "b-3"},
        ]}))
        .await;
    assert_eq!(second.status, 202, "{second:?}");
    assert_eq!(second.body["results"][0], first.body["results"][0]);
    assert_ne!(second.body["results"][1], first.body["results"][1]);
    // The key space is shared by single and batch publishes.
    let single = api
        .publish_body_ok(&json!({"topic": "t", "data": "two again", "idempotency_key": "b-2"}))
        .await;
    assert_eq!(json!({ "id": single }), first.body["results"][1]);

    assert_eq!(
        data_before_marker(&node, &mut stream, "t").await,
        ["one", "two", "three"]
    );
}

#[tokio::test]
async fn batch_results_are_in_order_and_subscribers_see_batch_order() {
    let node = Node::start().await;
    let mut a = node.subscribe(&["a"]).await;
    let mut b = node.subscribe(&["b"]).await;
    let messages: Vec<Value> = (0..20)
        .map(|n| {
            let topic = if n % 3 == 0 { "b" } else { "a" };
            json!({"topic": topic, "data": format!("{topic}{n}")})
        })
        .chain([json!({"topics": ["a", "b"], "data": "both"})])
        .collect();
    let reply = node
        .api()
        .publish_batch(&json!({ "messages": messages }))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let results = reply.body["results"].as_array().expect("results");
    assert_eq!(results.len(), messages.len());

    for (topic, stream) in [("a", &mut a), ("b", &mut b)] {
        let expected: Vec<(String, String)> = messages
            .iter()
            .zip(results)
            .filter_map(|(message, result)| {
                if message["topic"] == topic {
                    Some((
                        result["id"].as_str()?.to_owned(),
                        message["data"].to_string(),
                    ))
                } else if message["topics"].is_array() {
                    Some((result["ids"][topic].as_str()?.to_owned(), "\"both\"".into()))
                } else {
                    None
                }
            })
            .collect();
        let received: Vec<(String, String)> = stream
            .events(expected.len(), TIMEOUT)
            .await
            .into_iter()
            .map(|e| (e.id, json!(e.data).to_string()))
            .collect();
        assert_eq!(received, expected, "topic {topic}");
    }
}

#[tokio::test]
async fn one_bad_message_rejects_the_whole_batch_naming_its_index() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let api = node.api();
    let bad_topic = api
        .publish_batch(&json!({"messages": [
            {"topic": "t", "data": 0},
            {"topic": "t", "data": 1},
            {"topic": "not valid", "data": 2},
            {"topic": "t", "data": 3},
        ]}))
        .await;
    let detail = bad_topic.assert_problem(400);
    assert!(numbers_in(detail).contains(&2), "detail {detail:?}");

    let big = "x".repeat(70_000);
    let too_big = api
        .publish_batch(&json!({"messages": [
            {"topic": "t", "data": 0},
            {"topic": "t", "data": big},
        ]}))
        .await;
    let detail = too_big.assert_problem(413);
    assert!(numbers_in(detail).contains(&1), "detail {detail:?}");

    let bad_event = api
        .publish_batch(&json!({"messages": [
            {"topic": "t", "data": 0, "event": "bad\nname"},
        ]}))
        .await;
    let detail = bad_event.assert_problem(400);
    assert!(numbers_in(detail).contains(&0), "detail {detail:?}");

    assert_eq!(api.history_length("t").await, 0);
    assert!(data_before_marker(&node, &mut stream, "t").await.is_empty());
}

#[tokio::test]
async fn batch_of_more_than_1000_messages_is_413_and_1000_are_accepted() {
    let node = Node::start().await;
    let api = node.api();
    let messages =
        |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"topic": "t", "data": i})).collect() };
    api.publish_batch(&json!({ "messages": messages(1001) }))
        .await
        .assert_problem(413);
    assert_eq!(api.history_length("t").await, 0);

    let reply = api
        .publish_batch(&json!({ "messages": messages(1000) }))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["results"].as_array().map(Vec::len), Some(1000));
    assert_eq!(api.history_length("t").await, 1000);
}

#[tokio::test]
async fn empty_or_missing_batch_is_400() {
    let node = Node::start().await;
    for body in [json!({"messages": []}), json!({}), json!({"messages": "x"})] {
        node.api().publish_batch(&body).await.assert_problem(400);
    }
}

#[tokio::test]
async fn request_body_over_max_request_bytes_is_413() {
    let node = Node::builder()
        .env("HERALD__LIMITS__MAX_REQUEST_BYTES", "2048")
        .start()
        .await;
    let api = node.api();
    let padding = "p".repeat(3000);
    api.publish(&json!({"topic": "t", "data": padding}))
        .await
        .assert_problem(413);
    api.publish_batch(&json!({"messages": [{"topic": "t", "data": padding}]}))
        .await
        .assert_problem(413);
    assert_eq!(api.history_length("t").await, 0);

    let fits = "p".repeat(1900);
    api.publish_ok("t", json!(fits)).await;
}

#[tokio::test]
async fn data_at_the_default_payload_limit_is_accepted_and_one_byte_more_is_413() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let at_limit = "é".repeat(65_536 / 2);
    node.api().publish_ok("t", json!(at_limit)).await;
    assert!(stream.event().await.data == at_limit);
    node.api()
        .publish(&json!({"topic": "t", "data": format!("{at_limit}x")}))
        .await
        .assert_problem(413);
    assert_eq!(node.api().history_length("t").await, 1);
}
