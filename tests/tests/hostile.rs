//! Hostile clients: SSE field injection through every value a client
//! controls, a table of malicious requests each answered with its status as
//! problem+json, raw HTTP garbage, and slow clients. Whatever they send,
//! herald never answers `5xx`, never lets one subscriber's stream be
//! forged, and keeps serving everyone else (docs/protocol.md §1, §4, §6).

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use herald_testkit::{Api, Node, Reply, RESYNC, TIMEOUT};
use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

// ---- field injection -------------------------------------------------------

/// Reads `events` with an independent parser (`eventsource-stream`, not
/// herald's own) until `markers` events with data `marker` have arrived.
async fn read_to_markers<E: std::fmt::Debug>(
    label: &str,
    events: &mut (impl futures_util::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin),
    marker: &str,
    markers: usize,
) -> Vec<eventsource_stream::Event> {
    let mut seen = Vec::new();
    let mut markers_seen = 0;
    while markers_seen < markers {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{label}: marker missing after {seen:#?}"))
            .expect("the stream is open")
            .expect("eventsource-stream parses herald's output");
        markers_seen += usize::from(event.data == marker);
        seen.push(event);
    }
    seen
}

/// Values that would add a field or an event if written unescaped.
const BREAKERS: [&str; 8] = [
    "\n",
    "\r",
    "\r\n",
    "\0",
    "\n\nevent: evil\ndata: injected\n\n",
    "\r\rid: 666\r\r",
    "\r\n\r\nretry: 1\r\n",
    "\u{2028}\u{2029}\u{85}",
];

#[tokio::test]
async fn cr_lf_nul_in_events_ids_and_topics_never_forge_a_field_or_an_event() {
    let node = Node::start().await;
    let api = node.api();
    let marker = "marker-after-the-attack";
    let mut accepted = Vec::new();
    let attack = async {
        for breaker in BREAKERS {
            let event = format!("ev{breaker}x");
            let reply = api
                .publish(&json!({"topic": "t", "data": "attack", "event": event}))
                .await;
            if breaker.contains(['\r', '\n', '\0']) {
                reply.assert_problem(400);
            } else {
                // U+2028, U+2029 and NEL end no SSE line: a valid name.
                assert_eq!(reply.status, 202, "{event:?}: {reply:?}");
                accepted.push(event);
            }
            for topic in [format!("t{breaker}"), format!("t{breaker}event: evil")] {
                api.publish(&json!({"topic": topic, "data": "attack"}))
                    .await
                    .assert_problem(400);
                api.publish(&json!({"topics": ["t", topic], "data": "attack"}))
                    .await
                    .assert_problem(400);
            }
            // Data may hold anything: it stays data.
            let data = format!("data{breaker}end");
            api.publish(
                &json!({"topic": "t", "data": data, "idempotency_key": format!("k{breaker}")}),
            )
            .await;
        }
        api.publish_ok("t", json!(marker)).await;
        api.publish_ok("u", json!(marker)).await;
    };
    // Cursors a client sends back are never echoed: a resume point full of
    // line breaks gets a resync whose id herald wrote.
    let hostile_cursor =
        "%0D%0Aid:%20666%0D%0A%0D%0Aevent:%20evil%0D%0Adata:%20injected%0D%0A%0D%0A";
    let single = format!(
        "{}/v1/events?topic=t&last_event_id={hostile_cursor}",
        node.url()
    );
    let multi = format!(
        "{}/v1/events?topic=t&topic=u&lastEventId={hostile_cursor}",
        node.url()
    );
    let client = Api::without_keep_alive(node.url()).client().clone();
    let reused = node.client_with_idle_connection().await;
    let single_response = client.get(&single).send().await.expect("subscribing");
    let multi_response = reused.get(&multi).send().await.expect("subscribing");
    let mut single_events = single_response.bytes_stream().eventsource();
    let mut multi_events = multi_response.bytes_stream().eventsource();
    attack.await;

    for (label, seen, markers) in [
        (
            "single-topic stream",
            read_to_markers("single", &mut single_events, marker, 1).await,
            1,
        ),
        (
            "two-topic stream on a reused connection",
            read_to_markers("multi", &mut multi_events, marker, 2).await,
            2,
        ),
    ] {
        let retries = seen.iter().filter(|e| e.retry.is_some()).count();
        assert!(retries <= 1, "{label}: {seen:#?}");
        let resyncs = seen.iter().filter(|e| e.event == RESYNC).count();
        assert_eq!(resyncs, 1, "{label}: {seen:#?}");
        for event in &seen {
            assert!(
                !event.id.is_empty()
                    && event
                        .id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{label}: an id herald did not write: {event:?}"
            );
            // The one `retry:` is herald's own, sent when the stream opens.
            assert!(
                event.retry.is_none() || event.retry == Some(Duration::from_secs(2)),
                "{label}: {event:?}"
            );
            assert_ne!(event.data, "injected", "{label}: a forged event");
            let expected_type = event.event == "message"
                || event.event == RESYNC
                || accepted.contains(&event.event);
            assert!(expected_type, "{label}: a forged event type: {event:?}");
        }
        // Exactly the accepted publishes arrived: one per valid event name,
        // one per data value, the marker(s), and the resync.
        let expected = accepted.len() + BREAKERS.len() + markers + 1;
        assert_eq!(seen.len(), expected, "{label}: {seen:#?}");
        for breaker in BREAKERS {
            let data = format!("data{breaker}end");
            let received = data.replace("\r\n", "\n").replace('\r', "\n");
            assert!(
                seen.iter()
                    .any(|e| e.data == received && e.event == "message"),
                "{label}: {data:?} did not arrive as one event of data"
            );
        }
    }
}

// ---- the table ---------------------------------------------------------------

/// One malicious request and the status it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body,
        status,
    }
}

fn publish(what: &'static str, body: impl Into<Vec<u8>>, status: u16) -> Case {
    case(what, Method::POST, "/v1/publish", Some(body.into()), status)
}

fn subscribe(what: &'static str, query: &str, status: u16) -> Case {
    case(
        what,
        Method::GET,
        &format!("/v1/events?{query}"),
        None,
        status,
    )
}

/// The table. The node runs with its default limits and publish key
/// [`KEY`], sent with every publish unless a case sets its own
/// `Authorization`.
fn cases() -> Vec<Case> {
    const MIB: usize = 1024 * 1024;
    let nested = |depth: usize| {
        format!(
            r#"{{"topic":"t","data":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let many_topics: Vec<String> = (0..101).map(|n| format!("t{n}")).collect();
    let batch_of = |n: usize| {
        let message = r#"{"topic":"t","data":1}"#;
        format!(r#"{{"messages":[{}]}}"#, vec![message; n].join(","))
    };
    let mut cases = vec![
        publish("JSON nested 100 000 deep", nested(100_000), 400),
        publish("JSON nested past serde's limit", nested(130), 400),
        publish("JSON nested within the limit", nested(100), 202),
        publish("an unterminated string", r#"{"topic":"t","data":"#, 400),
        publish(
            "invalid UTF-8 in data",
            b"{\"topic\":\"t\",\"data\":\"\xff\xfe\"}".to_vec(),
            400,
        ),
        publish(
            "a lone surrogate in data",
            r#"{"topic":"t","data":"\ud800"}"#,
            400,
        ),
        publish(
            "a NUL escape in data",
            r#"{"topic":"t","data":"a\u0000b"}"#,
            202,
        ),
        publish(
            "a raw NUL byte in a string",
            b"{\"topic\":\"t\",\"data\":\"a\x00b\"}".to_vec(),
            400,
        ),
        publish("a NUL in the topic", r#"{"topic":"t\u0000","data":1}"#, 400),
        publish(
            "CRLF in the topic",
            r#"{"topic":"t\r\nevent: x","data":1}"#,
            400,
        ),
        publish(
            "a topic that is a path traversal",
            r#"{"topic":"../../etc/passwd","data":1}"#,
            202,
        ),
        publish(
            "a number over any float",
            r#"{"topic":"t","data":1e999999}"#,
            202,
        ),
        publish(
            "101 topics",
            json!({"topics": many_topics, "data": 1}).to_string(),
            400,
        ),
        publish(
            "an event of 65 bytes of é",
            json!({"topic": "t", "data": 1, "event": "é".repeat(33)}).to_string(),
            400,
        ),
        publish(
            "an event with U+2028",
            json!({"topic": "t", "data": 1, "event": "a\u{2028}b"}).to_string(),
            202,
        ),
        publish(
            "a reserved event name",
            r#"{"topic":"t","data":1,"event":"herald.resync"}"#,
            400,
        ),
        publish(
            "data of 64 KiB + 1",
            json!({"topic": "t", "data": "x".repeat(65_537)}).to_string(),
            413,
        ),
        publish(
            "a body over 1 MiB",
            json!({"topic": "t", "data": "x".repeat(MIB)}).to_string(),
            413,
        ),
        case(
            "a batch of 1001",
            Method::POST,
            "/v1/publish/batch",
            Some(batch_of(1001).into_bytes()),
            413,
        ),
        case(
            "an empty batch",
            Method::POST,
            "/v1/publish/batch",
            Some(b"{\"messages\":[]}".to_vec()),
            400,
        ),
        case(
            "a batch that is not a list",
            Method::POST,
            "/v1/publish/batch",
            Some(b"{\"messages\":{}}".to_vec()),
            400,
        ),
        subscribe(
            "65 distinct topics",
            &(0..65)
                .map(|n| format!("topic=t{n}"))
                .collect::<Vec<_>>()
                .join("&"),
            400,
        ),
        subscribe(
            "64 topics named many times",
            &(0..640)
                .map(|n| format!("topic=t{}", n % 64))
                .collect::<Vec<_>>()
                .join("&"),
            200,
        ),
        subscribe("a NUL in a topic", "topic=a%00b", 400),
        subscribe("CRLF in a topic", "topic=a%0D%0Aevent:%20x", 400),
        subscribe("a topic of invalid UTF-8", "topic=%C3%28", 400),
        subscribe(
            "a topic that is a path traversal",
            "topic=..%2F..%2Fadmin",
            200,
        ),
        subscribe(
            "a cursor of invalid UTF-8",
            "topic=t&last_event_id=%FF%FE",
            200,
        ),
        subscribe(
            "a 4 KiB cursor",
            &format!("topic=t&last_event_id={}", "A".repeat(4096)),
            200,
        ),
        subscribe("no topic among many parameters", &"x=1&".repeat(2000), 400),
        case(
            "a NUL in a topic path",
            Method::GET,
            "/v1/topics/a%00b",
            None,
            400,
        ),
        case(
            "a topic path of invalid UTF-8",
            Method::GET,
            "/v1/topics/%FF",
            None,
            400,
        ),
        case(
            "a 300-byte topic path",
            Method::GET,
            &format!("/v1/topics/{}", "t".repeat(300)),
            None,
            400,
        ),
        case("TRACE", Method::TRACE, "/v1/publish", None, 405),
        case(
            "PATCH on events",
            Method::PATCH,
            "/v1/events?topic=t",
            None,
            405,
        ),
        case("DELETE on metrics", Method::DELETE, "/metrics", None, 405),
        case(
            "an unknown long path",
            Method::GET,
            &format!("/{}", "a/".repeat(2000)),
            None,
            404,
        ),
    ];
    let mut unauthenticated = publish("publish without the key", r#"{"topic":"t","data":1}"#, 401);
    unauthenticated
        .headers
        .push(("authorization", String::new()));
    cases.push(unauthenticated);
    let mut huge_token = publish("a 60 KiB bearer token", r#"{"topic":"t","data":1}"#, 401);
    huge_token
        .headers
        .push(("authorization", format!("Bearer {}", "k".repeat(60 * 1024))));
    cases.push(huge_token);
    let mut non_utf8_cursor = subscribe("a Last-Event-ID of invalid UTF-8", "topic=t", 200);
    non_utf8_cursor
        .headers
        .push(("last-event-id", String::new()));
    cases.push(non_utf8_cursor);
    cases
}

const KEY: &str = "hostile-key";

async fn send(client: &Client, base: &str, case: &Case) -> Reply {
    let mut request = client
        .request(case.method.clone(), format!("{base}{}", case.path))
        .timeout(TIMEOUT);
    let custom_auth = case
        .headers
        .iter()
        .any(|(name, _)| *name == "authorization");
    if !custom_auth {
        request = request.header("authorization", format!("Bearer {KEY}"));
    }
    for (name, value) in &case.headers {
        if *name == "last-event-id" {
            let raw = reqwest::header::HeaderValue::from_bytes(b"\xff\xfe\x80")
                .expect("obs-text is a header value");
            request = request.header(*name, raw);
        } else if !value.is_empty() {
            request = request.header(*name, value);
        }
    }
    if let Some(body) = &case.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", case.what));
    Reply::read(response)
        .await
        .unwrap_or_else(|e| panic!("{}: reading the answer: {e}", case.what))
}

#[tokio::test]
async fn every_hostile_request_gets_its_status_as_problem_json_and_the_node_keeps_serving() {
    let node = Node::builder()
        .env("HERALD__AUTH__PUBLISH_KEYS", KEY)
        .start()
        .await;
    let clients = [
        ("reused connections", node.api().client().clone()),
        (
            "new connections",
            Api::without_keep_alive(node.url()).client().clone(),
        ),
    ];
    let mut failures = Vec::new();
    for (connections, client) in &clients {
        for case in cases() {
            let reply = send(client, node.url(), &case).await;
            let outcome = std::panic::catch_unwind(|| {
                if case.status >= 400 {
                    reply.assert_problem(case.status);
                } else {
                    assert_eq!(reply.status.as_u16(), case.status);
                }
            });
            if outcome.is_err() {
                failures.push(format!(
                    "{} on {connections}: expected {}, got {} {:.200}",
                    case.what, case.status, reply.status, reply.text
                ));
            }
            let health = node.api().get("/healthz").await;
            assert_eq!(health.status, 200, "after {}", case.what);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- raw HTTP ------------------------------------------------------------------

/// What came back for raw request bytes: the status line's code (if a
/// response head arrived before the connection ended), the head, the body.
#[derive(Debug)]
struct RawAnswer {
    status: Option<u16>,
    head: String,
    body: Vec<u8>,
}

/// Sends `request` on a new connection and reads the answer until the
/// connection ends, the body's `Content-Length` is complete, or `patience`
/// passes.
async fn raw(node: &Node, request: &[u8], patience: Duration) -> RawAnswer {
    let mut socket = TcpStream::connect(node.addr()).await.expect("connecting");
    // The node may answer and close before reading everything.
    let _ = socket.write_all(request).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(patience, async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                // A stream's body never ends: its head is the answer.
                if head.contains("text/event-stream") {
                    return;
                }
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| received.len() >= end + 4 + n) {
                    return;
                }
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let end = received.windows(4).position(|w| w == b"\r\n\r\n");
    let head = end.map_or_else(String::new, |end| {
        String::from_utf8_lossy(&received[..end]).into_owned()
    });
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok());
    let body = end.map_or_else(Vec::new, |end| received[end + 4..].to_vec());
    RawAnswer { status, head, body }
}

/// Requests no real client sends. Each goes to a fresh connection; its
/// first bytes decide whether herald's stream path or actix reads it.
fn garbage() -> Vec<(&'static str, Vec<u8>)> {
    let big = "a".repeat(70 * 1024);
    let many: String = (0..150).map(|n| format!("x-h{n}: v\r\n")).collect();
    vec![
        ("a garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("an empty request line", b"\r\n\r\n".to_vec()),
        ("binary noise", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a]),
        ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("a NUL in the stream path", b"GET /v1/events?topic=a\x00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a NUL in another path", b"GET /v1/topics/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a raw non-UTF-8 Last-Event-ID on a new stream", b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe\xfd\r\n\r\n".to_vec()),
        ("a control byte in a header value", b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: a\x01b\r\n\r\n".to_vec()),
        ("a header without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n".to_vec()),
        ("a 70 KiB header on a stream request", format!("GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\n\r\n").into_bytes()),
        ("a 70 KiB header on a publish", format!("POST /v1/publish HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes()),
        ("150 headers on a stream request", format!("GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes()),
        ("150 headers on a health check", format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes()),
        ("a negative Content-Length", b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}".to_vec()),
        ("an enormous Content-Length", b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n{}".to_vec()),
        ("two Content-Lengths", b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec()),
        ("Content-Length and chunked", b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("a bad chunk size", b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec()),
        ("an obsolete folded header", b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: a\r\n b\r\n\r\n".to_vec()),
        ("HTTP/1.0 stream without Host", b"GET /v1/events?topic=t HTTP/1.0\r\n\r\n".to_vec()),
        ("a websocket upgrade", b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec()),
        ("an h2c preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
    ]
}

#[tokio::test]
async fn raw_http_garbage_never_gets_a_5xx_and_the_node_keeps_serving() {
    let node = Node::start().await;
    for (what, request) in garbage() {
        let answer = raw(&node, &request, Duration::from_secs(3)).await;
        if let Some(status) = answer.status {
            assert!(status < 500, "{what}: {answer:?}");
        }
        let health = node.api().get("/healthz").await;
        assert_eq!(health.status, 200, "after {what}");
    }
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{}", node.log_path().display());
}

#[tokio::test]
async fn raw_http_garbage_is_answered_with_problem_json() {
    let node = Node::start().await;
    let mut failures = Vec::new();
    for (what, request) in garbage() {
        let answer = raw(&node, &request, Duration::from_secs(3)).await;
        let Some(status) = answer.status.filter(|s| *s >= 400) else {
            continue;
        };
        let problem: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let is_problem = answer
            .head
            .to_ascii_lowercase()
            .contains("application/problem+json")
            && problem["status"] == json!(status);
        if !is_problem {
            failures.push(format!(
                "{what}: {}",
                answer.head.lines().next().unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn unparseable_requests_are_not_logged_as_errors() {
    let node = Node::start().await;
    for (_, request) in garbage() {
        raw(&node, &request, Duration::from_secs(3)).await;
    }
    node.api().get("/healthz").await;
    let errors: Vec<String> = node
        .log_text()
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .map(str::to_owned)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

// ---- slow clients ----------------------------------------------------------------

/// Longest herald lets a client take over its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `partial` and then nothing, and measures how long the node keeps
/// the connection open; `None` if it is still open after `patience`.
async fn time_to_close(node: &Node, partial: &[u8], patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let answer = raw(node, partial, patience).await;
    let elapsed = started.elapsed();
    (elapsed < patience)
        .then_some(elapsed)
        .filter(|_| answer.status.is_none_or(|s| s < 500))
}

#[tokio::test]
async fn slowloris_heads_are_cut_off_while_everyone_else_is_served() {
    let node = Node::start().await;
    let partial_heads: [&[u8]; 4] = [
        b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\n",
        b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc",
        b"POST /v1/publish HTTP/1.1\r\nHost: x\r\n",
        b"G",
    ];
    let slow: Vec<_> = partial_heads
        .iter()
        .map(|head| {
            let node = &node;
            async move { time_to_close(node, head, HEAD_TIMEOUT + TIMEOUT).await }
        })
        .collect();
    let others = async {
        // While the slow clients hold their connections, others get
        // streams and publishes through.
        let mut stream = node.subscribe(&["t"]).await;
        node.api().publish_ok("t", json!("served")).await;
        assert_eq!(stream.event().await.data, "served");
    };
    let (closed, ()) = tokio::join!(futures_util::future::join_all(slow), others);
    for (head, closed) in partial_heads.iter().zip(closed) {
        let closed = closed.unwrap_or_else(|| {
            panic!(
                "{:?} still open after {:?}",
                String::from_utf8_lossy(head),
                HEAD_TIMEOUT + TIMEOUT
            )
        });
        assert!(
            closed >= HEAD_TIMEOUT - Duration::from_millis(500),
            "{closed:?}"
        );
    }
}

/// How long a publisher may pause in the middle of its body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_stalled_publish_body_is_cut_off_with_408() {
    let node = Node::start().await;
    let partial = b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":";
    let started = Instant::now();
    let answer = raw(&node, partial, BODY_IDLE_TIMEOUT + TIMEOUT).await;
    let waited = started.elapsed();
    assert!(
        waited < BODY_IDLE_TIMEOUT + TIMEOUT,
        "a stalled body is still open after {waited:?}"
    );
    assert_eq!(answer.status, Some(408), "{answer:?}");
    let problem: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    assert_eq!(problem["status"], json!(408), "{answer:?}");
    assert_eq!(node.api().history_length("t").await, 0);
}

#[tokio::test]
async fn a_publish_body_that_is_a_json_array_is_400() {
    let node = Node::start().await;
    let reply = node
        .api()
        .post_bytes("/v1/publish", r#"["t",null,"x",null,null]"#)
        .await;
    reply.assert_problem(400);
    let reply = node
        .api()
        .post_bytes(
            "/v1/publish/batch",
            r#"{"messages":[["t",null,"x",null,null]]}"#,
        )
        .await;
    reply.assert_problem(400);
    assert_eq!(node.api().history_length("t").await, 0);
}

#[tokio::test]
async fn a_publish_body_naming_a_field_twice_is_400() {
    let node = Node::start().await;
    for body in [
        r#"{"topic":"a","topic":"b","data":1}"#,
        r#"{"topic":"a","data":1,"data":2}"#,
        r#"{"messages":[{"topic":"a","data":1}],"messages":[]}"#,
    ] {
        let path = if body.contains("messages") {
            "/v1/publish/batch"
        } else {
            "/v1/publish"
        };
        node.api().post_bytes(path, body).await.assert_problem(400);
    }
    for topic in ["a", "b"] {
        assert_eq!(node.api().history_length(topic).await, 0, "{topic}");
    }
}
