//! SSE field injection is impossible: event names that could end a field
//! or a frame are refused, and data that looks like fields stays data
//! (docs/protocol.md §4).

use herald_testkit::{Node, TIMEOUT};
use serde_json::json;

#[tokio::test]
async fn event_names_with_control_characters_or_the_herald_prefix_are_refused_and_never_delivered()
{
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let too_long = "e".repeat(65);
    let refused = [
        "a\nb",
        "a\rb",
        "a\r\nid: 666",
        "x\ndata: injected",
        "nul\0name",
        "tab\tname",
        "del\u{7f}",
        "esc\u{1b}[31m",
        "\n",
        "",
        too_long.as_str(),
        "herald.resync",
        "herald.anything",
    ];
    for name in refused {
        let reply = node
            .api()
            .publish(&json!({"topic": "t", "data": "x", "event": name}))
            .await;
        reply.assert_problem(400);
    }
    assert_eq!(node.api().history_length("t").await, 0);

    let longest = "e".repeat(64);
    for name in [longest.as_str(), "héraut", "herald", "x.herald.y"] {
        node.api()
            .publish_body_ok(&json!({"topic": "t", "data": name, "event": name}))
            .await;
    }
    node.api().publish_ok("t", json!("marker")).await;
    let events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        types,
        [
            longest.as_str(),
            "héraut",
            "herald",
            "x.herald.y",
            "message"
        ]
    );
}

#[tokio::test]
async fn data_that_looks_like_sse_fields_arrives_as_one_event_of_data() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    let sneaky = "x\n\nevent: evil\nid: 666\nretry: 1\ndata: injected\n\n";
    let id = node.api().publish_ok("t", json!(sneaky)).await;
    node.api().publish_ok("t", json!("marker")).await;

    let events = stream.events_until(TIMEOUT, |e| e.data == "marker").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].data, sneaky);
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].id, id);
    let wire = String::from_utf8_lossy(stream.raw());
    assert_eq!(wire.matches("\nretry:").count(), 0, "wire: {wire:?}");
}
