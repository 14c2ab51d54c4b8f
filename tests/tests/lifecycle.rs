//! SIGTERM and SIGINT: the node stops being ready, refuses new streams the
//! way browsers retry, closes open streams spread over
//! `server.drain_timeout`, finishes publishes, and exits 0 (docs/protocol.md §8).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use herald_testkit::{eventually, Item, Node, TIMEOUT};
use serde_json::json;

/// Time allowed beyond `drain_timeout` for the last stream to close and the
/// process to exit, on a machine that may be busy.
const SLACK: Duration = Duration::from_secs(3);

/// The last cursor in `topic`'s history, or `None` if the node no longer
/// answers (it may have finished draining).
async fn last_in_history(node: &Node, topic: &str) -> Option<String> {
    let response = reqwest::get(format!("{}/v1/topics/{topic}", node.url()))
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    Some(body["history"]["last"].as_str()?.to_owned())
}

#[tokio::test]
async fn sigterm_drains_open_streams_within_drain_timeout_and_exits_zero() {
    let drain_timeout = Duration::from_secs(1);
    let mut node = Node::builder()
        .env("HERALD__SERVER__DRAIN_TIMEOUT", "1s")
        .env("HERALD__SERVER__RETRY", "1s")
        .start()
        .await;
    let mut streams = Vec::new();
    for n in 0..4 {
        // Half on new connections, half on reused keep-alive ones: herald
        // serves them on different paths and must drain both.
        let mut stream = if n % 2 == 0 {
            node.subscribe(&["d"]).await
        } else {
            let client = node.client_with_idle_connection().await;
            node.subscribe_request().topic("d").send_on(&client).await
        };
        assert_eq!(stream.next_item(TIMEOUT).await, Item::Retry(1000));
        streams.push(stream);
    }

    let signalled = Instant::now();
    node.start_terminating();
    eventually(Duration::from_secs(2), "/readyz to answer 503", || async {
        (node.api().status_of("/readyz").await == Some(503)).then_some(())
    })
    .await;

    // A publish during the drain is accepted and stored.
    let reply = node
        .api()
        .publish(&json!({"topic": "d", "data": "late"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["id"].as_str().expect("an id").to_owned();
    let in_history = last_in_history(&node, "d").await.as_deref() == Some(id.as_str());

    // A new stream gets the come-back-later answer.
    let mut refused = node.subscribe(&["d"]).await;
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.header("connection"), Some("close"));
    let items = refused.expect_closed(TIMEOUT).await;
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Item::Retry(ms) if (1000..=3000).contains(ms))),
        "{items:?}"
    );

    let closings = join_all(streams.iter_mut().map(|stream| async {
        let items = stream.expect_closed(drain_timeout + SLACK).await;
        (signalled.elapsed(), items)
    }))
    .await;
    let delivered = closings.iter().any(|(_, items)| {
        items
            .iter()
            .any(|i| matches!(i, Item::Event(e) if e.id == id && e.data == "late"))
    });
    let first = closings.iter().map(|(at, _)| *at).min().expect("streams");
    let last = closings.iter().map(|(at, _)| *at).max().expect("streams");
    assert!(
        last <= drain_timeout + SLACK,
        "streams closed after {last:?}"
    );
    // Four streams over one second close about 250 ms apart; all at once
    // would send every client back at the same instant.
    assert!(
        last - first >= drain_timeout / 4,
        "streams closed within {:?} of each other, not spread over {drain_timeout:?}",
        last - first
    );
    let status = node.wait_exit(drain_timeout + SLACK).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        delivered || in_history,
        "the publish accepted during the drain was neither delivered nor stored"
    );
}

#[tokio::test]
async fn sigint_drains_like_sigterm_and_exits_zero() {
    let mut node = Node::builder()
        .env("HERALD__SERVER__DRAIN_TIMEOUT", "500ms")
        .start()
        .await;
    let mut stream = node.subscribe(&["d"]).await;
    assert!(matches!(stream.next_item(TIMEOUT).await, Item::Retry(_)));
    let status = node.interrupt(Duration::from_millis(500) + SLACK).await;
    assert!(status.success(), "exit status {status:?}");
    stream.expect_closed(TIMEOUT).await;
}

#[tokio::test]
async fn idle_node_exits_zero_at_once_on_sigterm() {
    let mut node = Node::start().await;
    // With no open stream there is nothing to spread over the default 10s
    // drain timeout: the node must not wait it out.
    let status = node.terminate(SLACK).await;
    assert!(status.success(), "exit status {status:?}");
}
