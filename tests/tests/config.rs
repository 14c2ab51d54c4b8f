//! Configuration sources and their precedence, and start-up refusing bad
//! settings with a message naming the key (README, "Configuration").

use futures_util::future::join_all;
use herald_testkit::{Item, Node, NodeBuilder, TIMEOUT};

/// The `retry:` a fresh stream on `node` starts with: a setting every
/// source can change and every stream shows.
async fn stream_retry(node: &Node) -> u64 {
    let mut stream = node.subscribe(&["t"]).await;
    match stream.next_item(TIMEOUT).await {
        Item::Retry(ms) => ms,
        other => panic!("a stream starts with retry:, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_setting_stops_startup_with_one_line_naming_the_key() {
    let cases = [
        (
            "HERALD__SERVER__MAX_CONNECTIONS",
            "abc",
            "server.max_connections",
        ),
        (
            "HERALD__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections",
        ),
        ("HERALD__SERVER__RETRY", "soon", "server.retry"),
        (
            "HERALD__SERVER__HEARTBEAT_INTERVAL",
            "0s",
            "server.heartbeat_interval",
        ),
        (
            "HERALD__SERVER__DRAIN_TIMEOUT",
            "10 parsecs",
            "server.drain_timeout",
        ),
        ("HERALD__SERVER__BIND", "not an address", "server.bind"),
        ("HERALD__HISTORY__MAX_EVENTS", "0", "history.max_events"),
        ("HERALD__HISTORY__TTL", "forever", "history.ttl"),
        (
            "HERALD__LIMITS__MAX_PAYLOAD_BYTES",
            "-1",
            "limits.max_payload_bytes",
        ),
        (
            "HERALD__LIMITS__CLIENT_BUFFER_EVENTS",
            "many",
            "limits.client_buffer_events",
        ),
        ("HERALD__REDIS__URL", "http://127.0.0.1:1", "redis.url"),
    ];
    let failures = join_all(
        cases
            .iter()
            .map(|(key, value, _)| Node::builder().env(key, value).start_expecting_failure()),
    )
    .await;
    for ((key, value, named), failure) in cases.iter().zip(failures) {
        assert!(
            !failure.status.success(),
            "{key}={value:?} exited with {:?}",
            failure.status
        );
        let lines: Vec<&str> = failure
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{key}={value:?} wrote {lines:?}");
        assert!(
            lines[0].contains(named),
            "{key}={value:?}: {:?} does not name {named}",
            lines[0]
        );
    }
}

#[tokio::test]
async fn unknown_key_in_a_config_file_stops_startup_naming_it() {
    let failure = Node::builder()
        .config_file("[server]\nretry = \"3s\"\nretri = \"4s\"\n")
        .start_expecting_failure()
        .await;
    assert!(!failure.status.success());
    assert!(failure.stderr.contains("retri"), "{}", failure.stderr);
}

#[tokio::test]
async fn missing_config_file_stops_startup() {
    let failure = Node::builder()
        .arg("--config")
        .arg("/nonexistent/herald.toml")
        .start_expecting_failure()
        .await;
    assert!(!failure.status.success());
    assert!(
        failure.stderr.contains("/nonexistent/herald.toml"),
        "{}",
        failure.stderr
    );
}

#[tokio::test]
async fn config_flag_file_sets_values() {
    let node = Node::builder()
        .config_file("[server]\nretry = \"3s\"\n")
        .start()
        .await;
    assert_eq!(stream_retry(&node).await, 3000);
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let node = Node::builder()
        .config_file("[server]\nretry = \"3s\"\n")
        .env("HERALD__SERVER__RETRY", "4s")
        .start()
        .await;
    assert_eq!(stream_retry(&node).await, 4000);
}

#[tokio::test]
async fn shipped_file_in_the_working_directory_is_read_and_the_config_flag_overrides_it() {
    let shipped = "[server]\nretry = \"5s\"\nheartbeat_interval = \"30s\"\n";
    let node = Node::builder().shipped_config(shipped).start().await;
    assert_eq!(stream_retry(&node).await, 5000);

    let node = Node::builder()
        .shipped_config(shipped)
        .config_file("[server]\nretry = \"3s\"\n")
        .start()
        .await;
    assert_eq!(stream_retry(&node).await, 3000);
}

#[tokio::test]
async fn defaults_apply_without_any_file_or_environment() {
    let node = Node::start().await;
    assert_eq!(stream_retry(&node).await, 2000);
}

#[tokio::test]
async fn port_zero_binds_a_free_port_for_each_node() {
    let nodes = join_all((0..3).map(|_| NodeBuilder::default().start())).await;
    let mut ports: Vec<u16> = nodes.iter().map(|n| n.addr().port()).collect();
    assert!(ports.iter().all(|p| *p != 0));
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for node in &nodes {
        assert_eq!(node.api().get("/healthz").await.status, 200);
    }
}
