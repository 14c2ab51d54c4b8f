//! Bad requests get the right status as `application/problem+json`, and
//! the node keeps serving (docs/protocol.md §1, §4).

use herald_testkit::{Api, Node, Reply};
use reqwest::Method;

/// One request and the status it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    status: u16,
}

fn publish(what: &'static str, body: &str, status: u16) -> Case {
    Case {
        what,
        method: Method::POST,
        path: "/v1/publish".into(),
        body: Some(body.to_owned()),
        status,
    }
}

fn request(what: &'static str, method: Method, path: &str, status: u16) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body: None,
        status,
    }
}

/// The table. The node runs with `limits.max_payload_bytes = 16`.
fn cases() -> Vec<Case> {
    let long_topic = "t".repeat(201);
    let longest_topic = "t".repeat(200);
    let long_key = "k".repeat(201);
    let longest_key = "k".repeat(200);
    let many_topics: String = (0..65).map(|n| format!("topic={n}&")).collect();
    vec![
        publish("bad JSON", r#"{"topic": "t", "data": "#, 400),
        publish("not an object", r#"["t", "x"]"#, 400),
        publish("empty body", "", 400),
        publish("missing data", r#"{"topic": "t"}"#, 400),
        publish("no topic", r#"{"data": 1}"#, 400),
        publish(
            "topic and topics",
            r#"{"topic": "a", "topics": ["b"], "data": 1}"#,
            400,
        ),
        publish("empty topics", r#"{"topics": [], "data": 1}"#, 400),
        publish("topic with a space", r#"{"topic": "a b", "data": 1}"#, 400),
        publish("empty topic", r#"{"topic": "", "data": 1}"#, 400),
        publish("unicode topic", r#"{"topic": "café", "data": 1}"#, 400),
        publish("topic with #", r#"{"topic": "a#b", "data": 1}"#, 400),
        publish("topic not a string", r#"{"topic": 7, "data": 1}"#, 400),
        publish(
            "bad topic in topics",
            r#"{"topics": ["ok", "not ok"], "data": 1}"#,
            400,
        ),
        publish(
            "topic over 200 bytes",
            &format!(r#"{{"topic": "{long_topic}", "data": 1}}"#),
            400,
        ),
        publish(
            "topic of 200 bytes",
            &format!(r#"{{"topic": "{longest_topic}", "data": 1}}"#),
            202,
        ),
        publish(
            "every allowed topic character",
            r#"{"topic": "AZaz09_-.:/@~", "data": 1}"#,
            202,
        ),
        publish(
            "string data of 9 chars, 18 UTF-8 bytes",
            r#"{"topic": "t", "data": "ééééééééé"}"#,
            413,
        ),
        publish(
            "string data of 16 UTF-8 bytes",
            r#"{"topic": "t", "data": "éééééééé"}"#,
            202,
        ),
        publish(
            "escaped data counts as UTF-8, 18 bytes",
            r#"{"topic": "t", "data": "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}"#,
            413,
        ),
        publish(
            "JSON data of 16 compact bytes sent with spaces",
            r#"{"topic": "t", "data": [ "éééééé" ] }"#,
            202,
        ),
        publish(
            "JSON data of 18 compact bytes",
            r#"{"topic": "t", "data": ["ééééééé"]}"#,
            413,
        ),
        publish(
            "empty idempotency key",
            r#"{"topic": "t", "data": 1, "idempotency_key": ""}"#,
            400,
        ),
        publish(
            "idempotency key over 200 bytes",
            &format!(r#"{{"topic": "t", "data": 1, "idempotency_key": "{long_key}"}}"#),
            400,
        ),
        publish(
            "idempotency key of 200 bytes",
            &format!(r#"{{"topic": "t", "data": 1, "idempotency_key": "{longest_key}"}}"#),
            202,
        ),
        publish(
            "event not a string",
            r#"{"topic": "t", "data": 1, "event": 5}"#,
            400,
        ),
        request("subscribe without topic", Method::GET, "/v1/events", 400),
        request(
            "subscribe with only other parameters",
            Method::GET,
            "/v1/events?last_event_id=x",
            400,
        ),
        request(
            "subscribe to empty topic",
            Method::GET,
            "/v1/events?topic=",
            400,
        ),
        request(
            "subscribe to topic with a space",
            Method::GET,
            "/v1/events?topic=a%20b",
            400,
        ),
        request(
            "subscribe to unicode topic",
            Method::GET,
            "/v1/events?topic=caf%C3%A9",
            400,
        ),
        request(
            "subscribe to topic over 200 bytes",
            Method::GET,
            &format!("/v1/events?topic={long_topic}"),
            400,
        ),
        request(
            "subscribe to 65 topics",
            Method::GET,
            &format!("/v1/events?{many_topics}"),
            400,
        ),
        request(
            "subscribe with bad percent-encoding",
            Method::GET,
            "/v1/events?topic=%ZZ",
            400,
        ),
        request(
            "subscribe to a topic that is not UTF-8",
            Method::GET,
            "/v1/events?topic=%FF",
            400,
        ),
        request("GET publish", Method::GET, "/v1/publish", 405),
        request("PUT publish", Method::PUT, "/v1/publish", 405),
        request("GET batch", Method::GET, "/v1/publish/batch", 405),
        request("POST events", Method::POST, "/v1/events?topic=a", 405),
        request("DELETE topic", Method::DELETE, "/v1/topics/a", 405),
        request("POST healthz", Method::POST, "/healthz", 405),
        request("unknown path", Method::GET, "/nope", 404),
        request("unknown v1 path", Method::GET, "/v1/nope", 404),
        request(
            "topic info of a bad topic",
            Method::GET,
            "/v1/topics/a%20b",
            400,
        ),
    ]
}

async fn send(api: &Api, case: &Case) -> Reply {
    match &case.body {
        Some(body) => api.post_bytes(&case.path, body.as_bytes()).await,
        None => api.request(case.method.clone(), &case.path).await,
    }
}

#[tokio::test]
async fn every_bad_request_gets_its_status_as_problem_json_and_the_node_keeps_serving() {
    let node = Node::builder()
        .env("HERALD__LIMITS__MAX_PAYLOAD_BYTES", "16")
        .start()
        .await;
    // Stream requests on a new connection and on a reused one take
    // different paths through herald; both must answer alike.
    let clients = [
        ("reused connections", node.api().clone()),
        ("new connections", Api::without_keep_alive(node.url())),
    ];
    let mut failures = Vec::new();
    for (connections, api) in &clients {
        for case in cases() {
            let reply = send(api, &case).await;
            let outcome = std::panic::catch_unwind(|| {
                if case.status >= 400 {
                    reply.assert_problem(case.status);
                } else {
                    assert_eq!(reply.status.as_u16(), case.status);
                }
            });
            if outcome.is_err() {
                failures.push(format!(
                    "{}, on {connections}: {} {} expected {}, got {} {}",
                    case.what, case.method, case.path, case.status, reply.status, reply.text
                ));
            }
            let health = api.get("/healthz").await;
            assert_eq!(health.status, 200, "after {}", case.what);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_method() {
    let node = Node::start().await;
    let reply = node.api().get("/v1/publish").await;
    reply.assert_problem(405);
    assert_eq!(reply.header("allow"), Some("POST"));
}
