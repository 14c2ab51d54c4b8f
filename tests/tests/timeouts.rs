//! Connections that hold resources without completing a request are cut
//! off: silent connections, and slowloris request heads on both the stream
//! path and the API, while the node keeps serving everyone else
//! (docs/protocol.md §5, §8: errors, slow clients).

use std::time::{Duration, Instant};

use herald_testkit::{Node, TIMEOUT};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// herald's limit on receiving a request head.
const HEAD_LIMIT: Duration = Duration::from_secs(5);
/// Slack for a busy machine.
const SLACK: Duration = Duration::from_secs(5);

/// Reads until the server closes the connection and returns what arrived.
/// Panics if the server keeps it open past `limit`.
async fn wait_for_close(socket: &mut (impl AsyncRead + Unpin), limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let reading = async {
        loop {
            match socket.read_buf(&mut received).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {limit:?}"));
    received
}

/// Sends a header line every second, forever (or until the server closes):
/// a client trickling its request head to hold the connection.
async fn trickle_headers(socket: &mut (impl AsyncWrite + Unpin)) {
    for i in 0.. {
        let line = format!("x-slow-{i}: 1\r\n");
        if socket.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts a request with `request_line`, trickles headers, and returns how
/// long the server took to close the connection and what it answered.
async fn slowloris(node: &Node, request_line: &str) -> (Duration, String) {
    let mut socket = TcpStream::connect(node.addr()).await.expect("connecting");
    socket
        .write_all(request_line.as_bytes())
        .await
        .expect("sending the request line");
    let start = Instant::now();
    let (mut read, mut write) = socket.split();
    let received = tokio::select! {
        received = wait_for_close(&mut read, HEAD_LIMIT + SLACK) => received,
        () = trickle_headers(&mut write) => wait_for_close(&mut read, SLACK).await,
    };
    (
        start.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
    let node = Node::start().await;
    let mut socket = TcpStream::connect(node.addr()).await.expect("connecting");
    let start = Instant::now();
    let received = wait_for_close(&mut socket, HEAD_LIMIT + SLACK).await;
    let took = start.elapsed();
    assert!(
        took >= HEAD_LIMIT - Duration::from_millis(500),
        "closed too early: {took:?}"
    );
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_stream_request_head_trickled_slowly_is_cut_off() {
    let node = Node::start().await;
    let (took, answer) = slowloris(&node, "GET /v1/events?topic=slow HTTP/1.1\r\n").await;
    assert!(took < HEAD_LIMIT + SLACK, "{took:?}");
    assert!(answer.is_empty(), "{answer}");
    assert_eq!(
        node.api().status_of("/healthz").await,
        Some(200),
        "the node still serves"
    );
}

#[tokio::test]
async fn an_api_request_head_trickled_slowly_is_cut_off() {
    let node = Node::start().await;
    let (took, answer) = slowloris(&node, "POST /v1/publish HTTP/1.1\r\n").await;
    assert!(took < HEAD_LIMIT + SLACK, "{took:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(
        node.api().status_of("/healthz").await,
        Some(200),
        "the node still serves"
    );
}

#[tokio::test]
async fn silent_connections_do_not_block_streams_or_publishes() {
    let node = Node::start().await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(node.addr()).await.expect("connecting"));
    }
    let mut stream = node.subscribe(&["busy"]).await;
    node.api().publish_ok("busy", json!("still here")).await;
    let event = stream.next_event(TIMEOUT).await;
    assert_eq!(event.data, "still here");
    drop(silent);
}

#[tokio::test]
async fn the_head_timeout_counts_from_the_connection_not_from_the_first_byte() {
    let node = Node::start().await;
    for request_line in [
        "GET /v1/events?topic=slow HTTP/1.1\r\n",
        "POST /v1/publish HTTP/1.1\r\n",
    ] {
        let mut socket = TcpStream::connect(node.addr()).await.expect("connecting");
        let connected = Instant::now();
        // Silent for most of the allowance, then a slow head: the node must
        // not start the allowance over when the first byte arrives.
        let quiet = HEAD_LIMIT - Duration::from_secs(2);
        let mut silent = [0u8; 1];
        let answered_early = tokio::time::timeout(quiet, socket.read(&mut silent)).await;
        assert!(answered_early.is_err(), "closed before any byte was sent");
        socket
            .write_all(request_line.as_bytes())
            .await
            .expect("sending the request line");
        let (mut read, mut write) = socket.split();
        tokio::select! {
            _ = wait_for_close(&mut read, HEAD_LIMIT + SLACK) => {}
            () = trickle_headers(&mut write) => {}
        }
        let took = connected.elapsed();
        assert!(
            took < HEAD_LIMIT + Duration::from_millis(1500),
            "{request_line:?}: closed {took:?} after connecting, past the {HEAD_LIMIT:?} allowance"
        );
    }
}
