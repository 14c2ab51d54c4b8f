//! Per-connection limits: a slow consumer is cut off without delaying
//! anyone else, and streams past `server.max_connections` get the
//! come-back-later answer (docs/protocol.md §1, §8).

use std::time::Duration;

use herald_testkit::{eventually, Item, Next, Node, SseStream, TIMEOUT};
use serde_json::json;
use socket2::{Domain, Socket, Type};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream};

/// Which kind of connection a raw subscriber uses.
#[derive(Debug, Clone, Copy)]
enum Connection {
    /// A new connection that opens with the stream request.
    New,
    /// A keep-alive connection that first served `GET /healthz`.
    Reused,
}

/// Opens a stream on `topic` over a raw socket with a tiny receive buffer,
/// sends the request and never reads: the slowest consumer there is.
async fn stalled_subscriber(node: &Node, topic: &str, connection: Connection) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("setting SO_RCVBUF");
    socket.connect(&node.addr().into()).expect("connecting");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut stream = TcpStream::from_std(socket.into()).expect("a tokio stream");
    let host = node.addr();
    if let Connection::Reused = connection {
        let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
        stream.write_all(healthz.as_bytes()).await.expect("sending");
        read_one_response(&mut stream).await;
    }
    let request = format!("GET /v1/events?topic={topic} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the request");
    stream
}

/// Reads one complete response with a `Content-Length` body.
async fn read_one_response(socket: &mut TcpStream) {
    let mut received = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                if received.len() >= end + 4 + length {
                    return;
                }
            }
            let n = socket.read_buf(&mut received).await.expect("reading");
            assert!(n > 0, "the connection closed after {received:?}");
        }
    })
    .await
    .expect("a response within the timeout");
}

/// Reads `socket` until the server closes it and returns every byte
/// received; `None` if it is still open after `timeout`. A reset counts as
/// closed.
async fn read_until_closed(socket: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let reading = async {
        loop {
            match socket.read_buf(&mut received).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, reading).await.ok()?;
    Some(received)
}

/// The body of a raw HTTP/1.1 response, as far as it arrived: de-chunked
/// when the transfer encoding is chunked, else everything up to the close
/// (a stream has no `Content-Length`).
fn http_body(response: &[u8]) -> Vec<u8> {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let mut rest = &response[head_end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        assert!(!head.contains("content-length"), "{head}");
        return rest.to_vec();
    }
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.trim(), 16).expect("a chunk size");
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size {
            body.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = data.get(size + 2..).unwrap_or_default();
    }
    body
}

/// The data of the `n`th big event.
fn big_data(n: usize) -> String {
    format!("{n:05}{}", "x".repeat(60 * 1024))
}

async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    node.api()
        .metrics()
        .await
        .value(name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

const SLOW: &[(&str, &str)] = &[("reason", "slow_consumer")];

/// A node with an 8-event client buffer, one stalled and one fast
/// subscriber on `big`, and 60 KB events published until the stalled
/// socket's buffers are full and its queue has overflowed. The fast
/// subscriber reads each event as it goes and must get every one, in order.
/// Returns the ids of the events published.
async fn overflow_a_stalled_subscriber(
    connection: Connection,
) -> (Node, TcpStream, SseStream, Vec<String>) {
    let node = Node::builder()
        .env("HERALD__LIMITS__CLIENT_BUFFER_EVENTS", "8")
        .start()
        .await;
    let slow = stalled_subscriber(&node, "big", connection).await;
    let mut fast = node.subscribe(&["big"]).await;
    eventually(TIMEOUT, "both subscribers registered", || async {
        let info = node.api().topic_info("big").await;
        (info.body["subscribers"] == 2).then_some(())
    })
    .await;

    let mut ids = Vec::new();
    while metric(&node, "herald_events_dropped_total", SLOW).await == 0.0 {
        assert!(
            ids.len() < 600,
            "600 events of 60 KB did not overflow a stalled subscriber"
        );
        for _ in 0..5 {
            let n = ids.len();
            let data = big_data(n);
            let id = node.api().publish_ok("big", json!(data)).await;
            let event = fast.event().await;
            assert_eq!(event.id, id, "fast subscriber, event {n}");
            assert!(event.data == data, "fast subscriber, event {n}");
            ids.push(id);
        }
    }
    (node, slow, fast, ids)
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_resumes_from_history_while_a_fast_one_gets_every_event() {
    let (node, mut slow, mut fast, ids) = overflow_a_stalled_subscriber(Connection::New).await;
    let response = read_until_closed(&mut slow, TIMEOUT)
        .await
        .expect("the slow consumer's connection is closed");
    eventually(
        TIMEOUT,
        "the slow consumer's disconnect counted",
        || async {
            let closed = metric(&node, "herald_disconnects_total", SLOW).await >= 1.0;
            let open = metric(&node, "herald_connections", &[]).await;
            (closed && open == 1.0).then_some(())
        },
    )
    .await;

    // What the slow consumer got is a prefix of what was published...
    let mut parser = herald_sse::Parser::new();
    let mut items = Vec::new();
    parser.feed(&http_body(&response), &mut items);
    let got: Vec<herald_sse::Event> = items
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event),
            _ => None,
        })
        .collect();
    assert!(got.len() < ids.len(), "the slow consumer got everything");
    for (n, event) in got.iter().enumerate() {
        assert_eq!(event.id, ids[n], "slow consumer, event {n}");
        assert!(event.data == big_data(n), "slow consumer, event {n}");
    }
    // ...and reconnecting with the id of the last complete event it got
    // (what a browser sends: an event cut off by the close does not count)
    // gets exactly the rest.
    let last = &got.last().expect("the slow consumer got some events").id;
    let mut resumed = node
        .subscribe_request()
        .topic("big")
        .last_event_id(last)
        .send()
        .await;
    for (n, id) in ids.iter().enumerate().skip(got.len()) {
        let event = resumed.event().await;
        assert_eq!(&event.id, id, "resumed slow consumer, event {n}");
        assert!(
            event.data == big_data(n),
            "resumed slow consumer, event {n}"
        );
    }

    // The fast subscriber was not disturbed and keeps receiving.
    let id = node.api().publish_ok("big", json!("after")).await;
    for stream in [&mut fast, &mut resumed] {
        let event = stream.event().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), "after")
        );
    }
}

/// Overflows a stalled subscriber and checks that herald closes it by
/// itself: a client that never reads again must not hold its connection
/// (and a `server.max_connections` slot) forever.
async fn assert_stalled_consumer_closed_before_it_reads(connection: Connection) {
    let (node, mut slow, _fast, _) = overflow_a_stalled_subscriber(connection).await;
    eventually(TIMEOUT, "the slow consumer's disconnect", || async {
        let closed = metric(&node, "herald_disconnects_total", SLOW).await >= 1.0;
        let open = metric(&node, "herald_connections", &[]).await;
        (closed && open == 1.0).then_some(())
    })
    .await;
    assert!(read_until_closed(&mut slow, TIMEOUT).await.is_some());
}

#[tokio::test]
async fn stalled_consumer_is_closed_and_counted_before_it_reads_anything() {
    assert_stalled_consumer_closed_before_it_reads(Connection::New).await;
}

#[tokio::test]

async fn stalled_consumer_on_a_reused_connection_is_closed_and_counted_before_it_reads_anything() {
    assert_stalled_consumer_closed_before_it_reads(Connection::Reused).await;
}

/// Whether a fresh stream is admitted: admitted streams stay open after
/// their preamble, refused ones end at once.
async fn try_admit(node: &Node, topic: &str) -> Option<SseStream> {
    let mut stream = node.subscribe(&[topic]).await;
    loop {
        match stream.try_next_item(Duration::from_millis(300)).await {
            Next::Item(Item::Event(event)) => panic!("unexpected event {event:?}"),
            Next::Item(_) => {}
            Next::Closed => return None,
            Next::TimedOut => return Some(stream),
        }
    }
}

#[tokio::test]
async fn stream_past_max_connections_gets_200_a_jittered_retry_and_a_closed_connection() {
    let node = Node::builder()
        .env("HERALD__SERVER__MAX_CONNECTIONS", "2")
        .env("HERALD__SERVER__RETRY", "1s")
        .start()
        .await;
    let mut first = node.subscribe(&["a"]).await;
    let mut second = node.subscribe(&["a"]).await;
    assert_eq!(first.next_item(TIMEOUT).await, Item::Retry(1000));
    assert_eq!(second.next_item(TIMEOUT).await, Item::Retry(1000));

    let mut retries = Vec::new();
    for _ in 0..5 {
        let mut refused = node.subscribe(&["a"]).await;
        assert_eq!(refused.status(), 200);
        let content_type = refused.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type:?}"
        );
        assert_eq!(refused.header("connection"), Some("close"));
        let items = refused.expect_closed(TIMEOUT).await;
        let retry = items.iter().find_map(|item| match item {
            Item::Retry(ms) => Some(*ms),
            _ => None,
        });
        let retry = retry.unwrap_or_else(|| panic!("no retry: in {items:?}"));
        assert!((1000..=3000).contains(&retry), "retry {retry} ms");
        assert!(
            !items.iter().any(|i| matches!(i, Item::Event(_))),
            "{items:?}"
        );
        retries.push(retry);
    }
    retries.sort_unstable();
    retries.dedup();
    assert!(
        retries.len() > 1,
        "retry: is not jittered: always {retries:?}"
    );

    // The TCP connection is closed too, not just the response.
    let mut raw = TcpStream::connect(node.addr()).await.expect("connecting");
    let request = format!(
        "GET /v1/events?topic=a HTTP/1.1\r\nHost: {}\r\n\r\n",
        node.addr()
    );
    raw.write_all(request.as_bytes()).await.expect("sending");
    assert!(
        read_until_closed(&mut raw, TIMEOUT).await.is_some(),
        "the refused connection stays open"
    );

    let capacity = metric(&node, "herald_disconnects_total", &[("reason", "capacity")]).await;
    assert_eq!(capacity, 6.0);

    // The admitted streams still work.
    node.api().publish_ok("a", json!("live")).await;
    assert_eq!(first.event().await.data, "live");
    assert_eq!(second.event().await.data, "live");

    // Once one closes, a new stream is admitted again.
    drop(first);
    let mut admitted = eventually(TIMEOUT, "a stream admitted after one closed", || {
        try_admit(&node, "a")
    })
    .await;
    node.api().publish_ok("a", json!("again")).await;
    assert_eq!(admitted.event().await.data, "again");
}

/// Sends a subscribe request whose head is about `head_bytes` long (padded
/// with cookies, as a browser with many cookies would send) on `connection`
/// and returns the response's status line.
async fn subscribe_with_head_of(node: &Node, connection: Connection, head_bytes: usize) -> String {
    let mut socket = TcpStream::connect(node.addr()).await.expect("connecting");
    if let Connection::Reused = connection {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            .await
            .expect("sending the first request");
        read_one_response(&mut socket).await;
    }
    let mut request = String::from("GET /v1/events?topic=big-head HTTP/1.1\r\nHost: herald\r\n");
    let mut i = 0;
    while request.len() + 4 < head_bytes {
        let line = format!("cookie: c{i}={}\r\n", "v".repeat(2000));
        request.push_str(&line);
        i += 1;
    }
    request.push_str("\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .expect("sending the subscribe request");
    let mut received = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while !received.windows(2).any(|w| w == b"\r\n") {
            if socket.read_buf(&mut received).await.unwrap_or(0) == 0 {
                break;
            }
        }
    })
    .await
    .expect("an answer within the timeout");
    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_subscribe_head_between_64_and_128_kib_opens_on_either_connection_kind() {
    let node = Node::start().await;
    for connection in [Connection::New, Connection::Reused] {
        for size in [60 * 1024, 100 * 1024, 120 * 1024] {
            let status = subscribe_with_head_of(&node, connection, size).await;
            assert_eq!(
                status, "HTTP/1.1 200 OK",
                "a {size}-byte head on a {connection:?} connection"
            );
        }
    }
}
