//! The contract holds however a stream request arrives: on a new
//! connection or a reused keep-alive one, with headers spelled any way,
//! with the head split across packets, at the largest valid size.

use herald_testkit::{before_marker, data, Api, Item, Node, SseStream, TIMEOUT};
use serde_json::json;

#[tokio::test]
async fn stream_on_a_reused_keep_alive_connection_follows_the_same_contract() {
    let node = Node::start().await;
    let client = node.client_with_idle_connection().await;
    let mut stream = node.subscribe_request().topic("t").send_on(&client).await;
    assert_eq!(stream.status(), 200);
    let content_type = stream.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type:?}"
    );
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    assert_eq!(stream.next_item(TIMEOUT).await, Item::Retry(2000));
    assert!(matches!(stream.next_item(TIMEOUT).await, Item::Comment(_)));

    let first = node.api().publish_ok("t", json!("one\r\ntwo")).await;
    let event = stream.event().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.as_str(), "one\ntwo")
    );
    drop(stream);

    let missed = node.api().publish_ok("t", json!("missed")).await;
    let client = node.client_with_idle_connection().await;
    let mut resumed = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&first)
        .send_on(&client)
        .await;
    let events = before_marker(&node, &mut resumed, "t").await;
    assert_eq!(data(&events), ["missed"]);
    assert_eq!(events[0].id, missed);
}

#[tokio::test]
async fn refusal_on_a_reused_keep_alive_connection_closes_it() {
    let node = Node::builder()
        .env("HERALD__SERVER__MAX_CONNECTIONS", "1")
        .env("HERALD__SERVER__RETRY", "1s")
        .start()
        .await;
    let _admitted = node.subscribe(&["t"]).await;
    let client = node.client_with_idle_connection().await;
    let mut refused = node.subscribe_request().topic("t").send_on(&client).await;
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.header("connection"), Some("close"));
    let items = refused.expect_closed(TIMEOUT).await;
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Item::Retry(ms) if (1000..=3000).contains(ms))),
        "{items:?}"
    );
}

#[tokio::test]
async fn last_event_id_header_is_read_whatever_its_spelling() {
    let node = Node::start().await;
    let ids: Vec<String> = [
        node.api().publish_ok("t", json!("e1")).await,
        node.api().publish_ok("t", json!("e2")).await,
    ]
    .into();
    for spelling in [
        "Last-Event-ID",
        "last-event-id",
        "LAST-EVENT-ID",
        "Last-Event-Id",
    ] {
        let request = format!(
            "GET /v1/events?topic=t HTTP/1.1\r\nHost: herald\r\n{spelling}: {}\r\n\r\n",
            ids[0]
        );
        let mut stream = SseStream::send_raw(node.addr(), &[request.as_bytes()]).await;
        assert_eq!(stream.status(), 200, "{spelling}");
        let events = stream.events_until(TIMEOUT, |e| e.data == "e2").await;
        assert_eq!(data(&events), ["e2"], "{spelling}");
    }
}

#[tokio::test]
async fn request_head_arriving_in_pieces_is_read_whole() {
    let node = Node::start().await;
    let first = node.api().publish_ok("t", json!("e1")).await;
    node.api().publish_ok("t", json!("e2")).await;
    let header = format!("Last-Event-ID: {first}\r\n\r\n");
    let splits: [&[&[u8]]; 3] = [
        // Cut inside the request line.
        &[
            b"GET /v1/ev",
            b"ents?topic=t HTTP/1.1\r\nHost: h\r\n",
            header.as_bytes(),
        ],
        // Cut inside the query, then inside the final blank line.
        &[
            b"GET /v1/events?to",
            b"pic=t HTTP/1.1\r\nHost: h\r\n",
            &header.as_bytes()[..header.len() - 1],
            b"\n",
        ],
        // One byte at a time through the first line.
        &[
            b"G",
            b"E",
            b"T",
            b" ",
            b"/v1/events?topic=t HTTP/1.1\r\nHost: h\r\n",
            header.as_bytes(),
        ],
    ];
    for (n, parts) in splits.iter().enumerate() {
        let mut stream = SseStream::send_raw(node.addr(), parts).await;
        assert_eq!(stream.status(), 200, "split {n}");
        let events = stream.events_until(TIMEOUT, |e| e.data == "e2").await;
        assert_eq!(data(&events), ["e2"], "split {n}");
    }
}

#[tokio::test]
async fn percent_encoded_topics_in_the_query_are_decoded() {
    let node = Node::start().await;
    let request =
        b"GET /v1/events?topic=orders%2F42&topic=a%3Ab%40c%7Ed HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut stream = SseStream::send_raw(node.addr(), &[request]).await;
    assert_eq!(stream.status(), 200);
    node.api().publish_ok("orders/42", json!("slash")).await;
    node.api().publish_ok("a:b@c~d", json!("marker")).await;
    let events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    assert_eq!(data(&events), ["slash", "marker"]);
}

/// 64 distinct topics of 200 bytes each, cycling through `alphabet`.
fn largest_topics(alphabet: &str) -> Vec<String> {
    (0..64)
        .map(|n| {
            let prefix = format!("{n:02}");
            let fill: String = alphabet.chars().cycle().take(200 - prefix.len()).collect();
            format!("{prefix}{fill}")
        })
        .collect()
}

/// Characters allowed in topics that stay as they are in a query string.
const PLAIN: &str = "ABCXYZabcxyz0189_-.";
/// Every character allowed in topics; `: / @ ~` are percent-encoded in a
/// query string, as `URLSearchParams` does, which makes the request longer.
const EVERY: &str = "ABCXYZabcxyz0189_-.:/@~";

#[tokio::test]
async fn sixty_four_topics_of_200_bytes_stream_and_resume_on_new_and_reused_connections() {
    let node = Node::start().await;
    let names = largest_topics(PLAIN);
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    let last = topics[63];

    let mut fresh = node.subscribe(&topics).await;
    let client = node.client_with_idle_connection().await;
    let mut reused = node
        .subscribe_request()
        .topics(&topics)
        .send_on(&client)
        .await;
    let statuses = [fresh.status(), reused.status()];
    assert_eq!(statuses, [200, 200], "on a new and a reused connection");
    node.api()
        .publish_ok(last, json!("to the last topic"))
        .await;
    for stream in [&mut fresh, &mut reused] {
        assert_eq!(stream.event().await.data, "to the last topic");
    }

    // The composite cursor of 64 topics works as a resume point.
    let cursor = fresh.last_event_id().to_owned();
    drop(fresh);
    node.api().publish_ok(topics[0], json!("missed")).await;
    let mut resumed = node
        .subscribe_request()
        .topics(&topics)
        .last_event_id(&cursor)
        .send()
        .await;
    assert_eq!(resumed.status(), 200);
    let events = before_marker(&node, &mut resumed, last).await;
    assert_eq!(data(&events), ["missed"]);
}

#[tokio::test]

async fn largest_valid_subscribe_request_is_accepted_on_new_and_reused_connections() {
    let node = Node::start().await;
    let names = largest_topics(EVERY);
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fresh = node.subscribe(&topics).await;
    let client = node.client_with_idle_connection().await;
    let mut reused = node
        .subscribe_request()
        .topics(&topics)
        .send_on(&client)
        .await;
    let statuses = [fresh.status(), reused.status()];
    assert_eq!(statuses, [200, 200], "on a new and a reused connection");
    node.api().publish_ok(topics[63], json!("last")).await;
    for stream in [&mut fresh, &mut reused] {
        assert_eq!(stream.event().await.data, "last");
    }
}

#[tokio::test]
async fn bad_stream_requests_get_problem_json_on_new_connections_too() {
    let node = Node::builder()
        .env("HERALD__LIMITS__MAX_TOPICS_PER_CONNECTION", "2")
        .start()
        .await;
    let api = Api::without_keep_alive(node.url());
    for path in [
        "/v1/events",
        "/v1/events?topic=",
        "/v1/events?topic=a%20b",
        "/v1/events?topic=a+b",
        "/v1/events?topic=%ZZ",
        "/v1/events?topic=a&topic=b&topic=c",
    ] {
        let reply = api.get(path).await;
        reply.assert_problem(400);
        assert_eq!(api.get("/healthz").await.status, 200, "after {path}");
    }
    let reply = api
        .request(reqwest::Method::POST, "/v1/events?topic=a")
        .await;
    reply.assert_problem(405);
}
