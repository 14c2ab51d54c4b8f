//! What operators poll: `/healthz`, `/readyz`, `/metrics` and
//! `GET /v1/topics/{topic}` (docs/protocol.md §8).

use std::time::Duration;

use herald_testkit::{eventually, Exposition, MetricType, Node, TIMEOUT};
use serde_json::json;

/// Every metric the README lists, with its type.
const CONTRACT_METRICS: [(&str, MetricType); 12] = [
    ("herald_connections", MetricType::Gauge),
    ("herald_topics", MetricType::Gauge),
    ("herald_events_published_total", MetricType::Counter),
    ("herald_events_delivered_total", MetricType::Counter),
    ("herald_events_dropped_total", MetricType::Counter),
    ("herald_disconnects_total", MetricType::Counter),
    ("herald_resumes_total", MetricType::Counter),
    ("herald_publish_duration_seconds", MetricType::Histogram),
    ("herald_delivery_lag_seconds", MetricType::Histogram),
    ("herald_broker_up", MetricType::Gauge),
    ("herald_broker_reconnects_total", MetricType::Counter),
    ("herald_http_requests_total", MetricType::Counter),
];

/// Labelled series that must exist, at 0, before anything happened.
const SEEDED_SERIES: [(&str, &str, &str); 7] = [
    ("herald_events_dropped_total", "reason", "slow_consumer"),
    ("herald_disconnects_total", "reason", "slow_consumer"),
    ("herald_disconnects_total", "reason", "drain"),
    ("herald_disconnects_total", "reason", "capacity"),
    ("herald_disconnects_total", "reason", "token_expired"),
    ("herald_resumes_total", "result", "replayed"),
    ("herald_resumes_total", "result", "resync"),
];

fn value(metrics: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .value(name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

/// Polls `/metrics` until `name` (no labels) equals `expected`.
async fn wait_for_value(node: &Node, name: &str, labels: &[(&str, &str)], expected: f64) {
    let what = format!("{name}{labels:?} == {expected}");
    eventually(TIMEOUT, &what, || async {
        (node.api().metrics().await.value(name, labels) == Some(expected)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let node = Node::start().await;
    assert_eq!(node.api().get("/healthz").await.status, 200);
    assert_eq!(node.api().get("/readyz").await.status, 200);
}

#[tokio::test]
async fn metrics_parse_and_hold_every_contract_metric_with_labelled_series_at_zero() {
    let node = Node::start().await;
    let reply = node.api().get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{reply:?}"
    );
    let metrics = Exposition::parse(&reply.text).expect("valid Prometheus text");

    for (name, kind) in CONTRACT_METRICS {
        let family = metrics
            .family(name)
            .unwrap_or_else(|| panic!("{name} is missing"));
        assert_eq!(family.kind, kind, "{name}");
        assert!(!family.samples.is_empty(), "{name} has no samples");
    }
    for (name, label, label_value) in SEEDED_SERIES {
        assert_eq!(value(&metrics, name, &[(label, label_value)]), 0.0);
    }
    assert_eq!(value(&metrics, "herald_connections", &[]), 0.0);
    assert_eq!(value(&metrics, "herald_events_published_total", &[]), 0.0);
    assert_eq!(value(&metrics, "herald_broker_up", &[]), 1.0);
    let http = metrics.family("herald_http_requests_total").unwrap();
    assert!(
        http.samples
            .iter()
            .all(|s| s.labels.keys().map(String::as_str).eq(["route", "status"])),
        "{http:?}"
    );
    for family in metrics.families() {
        if !family.name.starts_with("process_") {
            assert!(
                family.name.starts_with("herald_"),
                "{} is not prefixed",
                family.name
            );
        }
    }
}

#[tokio::test]
async fn metrics_carry_no_topic_names() {
    let node = Node::start().await;
    let _stream = node.subscribe(&["secret-topic-name"]).await;
    node.api().publish_ok("secret-topic-name", json!(1)).await;
    node.api().topic_info("secret-topic-name").await;
    let text = node.api().get("/metrics").await.text;
    assert!(!text.contains("secret-topic-name"), "{text}");
}

#[tokio::test]
async fn counters_follow_connections_publishes_deliveries_and_resumes() {
    let node = Node::start().await;
    let api = node.api();
    let mut t1 = node.subscribe(&["t"]).await;
    let mut t2 = node.subscribe(&["t"]).await;
    let mut tu = node.subscribe(&["t", "u"]).await;
    wait_for_value(&node, "herald_connections", &[], 3.0).await;
    wait_for_value(&node, "herald_topics", &[], 2.0).await;

    let mut last_t = String::new();
    for n in 0..3 {
        last_t = api.publish_ok("t", json!(n)).await;
    }
    api.publish_ok("u", json!("u")).await;
    // One publish to two topics is two events.
    let reply = api
        .publish(&json!({"topics": ["u", "v"], "data": "uv"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    t1.events(3, TIMEOUT).await;
    t2.events(3, TIMEOUT).await;
    tu.events(5, TIMEOUT).await;
    let metrics = api.metrics().await;
    assert_eq!(value(&metrics, "herald_events_published_total", &[]), 6.0);
    // Three streams got 3 events of t; one of them also got u's two.
    assert_eq!(value(&metrics, "herald_events_delivered_total", &[]), 11.0);
    let publish_202 = [("route", "/v1/publish"), ("status", "202")];
    assert_eq!(
        value(&metrics, "herald_http_requests_total", &publish_202),
        5.0
    );
    let publishes = value(&metrics, "herald_publish_duration_seconds_count", &[]);
    assert_eq!(publishes, 5.0);

    drop(t2);
    drop(tu);
    wait_for_value(&node, "herald_connections", &[], 1.0).await;
    wait_for_value(&node, "herald_topics", &[], 1.0).await;

    let mut resumed = node
        .subscribe_request()
        .topic("t")
        .last_event_id(&last_t)
        .send()
        .await;
    api.publish_ok("t", json!("after")).await;
    assert_eq!(resumed.event().await.data, "after");
    t1.event().await;
    let metrics = api.metrics().await;
    assert_eq!(
        value(&metrics, "herald_resumes_total", &[("result", "replayed")]),
        1.0
    );
    assert_eq!(value(&metrics, "herald_events_delivered_total", &[]), 13.0);
    assert_eq!(value(&metrics, "herald_connections", &[]), 2.0);
}

#[tokio::test]
async fn connection_gauge_falls_when_a_client_goes_away_from_an_idle_stream() {
    let node = Node::start().await;
    let stream = node.subscribe(&["idle"]).await;
    wait_for_value(&node, "herald_connections", &[], 1.0).await;
    drop(stream);
    // Nothing is written to the stream, so herald must notice the closed
    // socket itself rather than on its next write.
    wait_for_value(&node, "herald_connections", &[], 0.0).await;
    let info = node.api().topic_info("idle").await;
    assert_eq!(info.body["subscribers"], 0, "{}", info.body);
}

#[tokio::test]
async fn topic_info_reports_subscribers_and_history_for_a_percent_encoded_topic() {
    let node = Node::start().await;
    let topic = "orders/42:eu@shop~1";
    let _a = node.subscribe(&[topic]).await;
    let _b = node.subscribe(&[topic, "other"]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(node.api().publish_ok(topic, json!(n)).await);
    }
    let reply = node.api().topic_info(topic).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({
            "topic": topic,
            "subscribers": 2,
            "history": {"length": 3, "first": ids[0], "last": ids[2]},
        })
    );
}

#[tokio::test]
async fn topic_info_of_an_unknown_topic_is_200_with_zeros_and_nulls() {
    let node = Node::start().await;
    let reply = node.api().topic_info("never/used").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({
            "topic": "never/used",
            "subscribers": 0,
            "history": {"length": 0, "first": null, "last": null},
        })
    );
}

#[tokio::test]
async fn delivery_lag_is_observed_for_delivered_events() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["t"]).await;
    node.api().publish_ok("t", json!(1)).await;
    stream.event().await;
    eventually(
        Duration::from_secs(5),
        "a delivery lag observation",
        || async {
            let metrics = node.api().metrics().await;
            (metrics.value("herald_delivery_lag_seconds_count", &[]) >= Some(1.0)).then_some(())
        },
    )
    .await;
}
