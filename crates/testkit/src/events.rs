//! Reading what streams received: the helpers every resume test needs.

use serde_json::{json, Value};

use crate::{Event, Node, SseStream, TIMEOUT};

pub use herald_sse::control::RESYNC;

/// The data of each event, in order.
pub fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// The topics a `herald.resync` event lists, sorted.
///
/// # Panics
///
/// When `event` is not a well-formed resync event.
pub fn resync_topics(event: &Event) -> Vec<String> {
    assert_eq!(event.event, RESYNC, "{event:?}");
    let body: Value = serde_json::from_str(&event.data).expect("resync data is JSON");
    assert_eq!(body["reason"], "history_truncated", "{body}");
    let mut topics: Vec<String> = body["topics"]
        .as_array()
        .expect("resync lists topics")
        .iter()
        .map(|t| t.as_str().expect("topic names").to_owned())
        .collect();
    topics.sort();
    topics
}

/// Publishes a marker to `topic` on `node` and reads `stream` up to it;
/// returns what came before it. A way to say "everything sent so far has
/// arrived" without waiting for a fixed time.
pub async fn before_marker(node: &Node, stream: &mut SseStream, topic: &str) -> Vec<Event> {
    node.api().publish_ok(topic, json!("marker")).await;
    let mut events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    events.pop();
    events
}
