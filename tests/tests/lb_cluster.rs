//! The deployment's load balancer, for real (docs/protocol.md §1, §8; README, "Deploy"): a
//! `redis-server`, three `herald serve` processes in Redis mode and
//! Debian's nginx running the very `deploy/nginx/nginx.conf` that
//! docker-compose runs (its include files rendered for local ports by
//! `deploy/nginx/render-local`).
//!
//! Streams opened through nginx spread over the nodes and get events
//! published through nginx at once (nginx must not buffer them); when a
//! node crashes or drains, its clients reconnect through nginx with their
//! last id, land on the other nodes and lose nothing; and herald's
//! "200, retry:, close" refusal reaches clients as herald sent it, not as an
//! nginx error page a browser would give up on.
//!
//! Clients that must survive a node behave like a browser's `EventSource`
//! ([`ReconnectingClient`]): on a closed stream they wait the `retry:` they
//! were given and reconnect with `Last-Event-ID`, always through nginx,
//! never to a node directly.

use std::{collections::BTreeSet, time::Duration};

use herald_testkit::{
    data, eventually, Item, Next, Nginx, Node, PublishLog, PublisherLoop, ReconnectingClient,
    RedisServer, SseStream, Subscribe, TIMEOUT,
};
use reqwest::StatusCode;
use serde_json::json;
use tokio::{task::JoinHandle, time::Instant};

/// Nodes behind nginx.
const NODES: usize = 3;

/// Streams a test opens: two per node, if round-robin is even.
const STREAMS: usize = 6;

/// The `retry:` the nodes send. Short, so clients that were refused come
/// back quickly; the protocol says refusals jitter it between 1× and 3×.
const RETRY: Duration = Duration::from_millis(200);

/// The bound on publish-to-delivery time through nginx. Generous for a busy
/// test machine; a buffering proxy would hold a lone small event until its
/// buffer fills or the stream ends, which is never within this.
const UNBUFFERED: Duration = Duration::from_secs(1);

/// Redis, the nodes and nginx in front of them. Fields drop in order:
/// nginx first, so no client is sent to a node that is already gone.
struct LbCluster {
    nginx: Nginx,
    nodes: Vec<Node>,
    _redis: RedisServer,
}

/// Starts Redis, `count` nodes on it with `env` on top of the short
/// [`RETRY`], and nginx in front of them.
async fn lb_cluster(count: usize, env: &[(&str, &str)]) -> LbCluster {
    let redis = RedisServer::start().await;
    let retry = format!("{}ms", RETRY.as_millis());
    let builder = env.iter().fold(
        Node::builder()
            .env("HERALD__REDIS__URL", &redis.url())
            .env("HERALD__SERVER__RETRY", &retry),
        |builder, (key, value)| builder.env(key, value),
    );
    let nodes = herald_testkit::start_nodes(&builder, count).await;
    let addrs: Vec<_> = nodes.iter().map(Node::addr).collect();
    let nginx = Nginx::start(&addrs).await;
    LbCluster {
        nginx,
        nodes,
        _redis: redis,
    }
}

/// `herald_connections` from the node's own `/metrics` (nginx does not
/// serve `/metrics`: it would show a random node's numbers).
async fn connections(node: &Node) -> u64 {
    let metrics = node.api().metrics().await;
    let value = metrics
        .value("herald_connections", &[])
        .unwrap_or_else(|| panic!("no herald_connections on {}", node.url()));
    value as u64
}

/// Waits until the nodes' `herald_connections` add up to `total`, and
/// returns them per node.
async fn wait_connections(nodes: &[&Node], total: u64) -> Vec<u64> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut counts = Vec::new();
        for node in nodes {
            counts.push(connections(node).await);
        }
        if counts.iter().sum::<u64>() == total {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes hold {counts:?} streams after {TIMEOUT:?}, not {total} in all"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `herald_resumes_total` over `nodes`: (`replayed`, `resync`).
async fn resumes(nodes: &[&Node]) -> (usize, usize) {
    let mut replayed = 0.0;
    let mut resync = 0.0;
    for node in nodes {
        let metrics = node.api().metrics().await;
        let value = |result| {
            metrics
                .value("herald_resumes_total", &[("result", result)])
                .unwrap_or_else(|| panic!("no herald_resumes_total{{result={result}}}"))
        };
        replayed += value("replayed");
        resync += value("resync");
    }
    (replayed as usize, resync as usize)
}

/// Publishes `data` through nginx, retrying refusals (`502`/`503` while a
/// node goes away) until it is accepted, and returns the cursor.
async fn publish_through(nginx: &Nginx, topic: &str, data: &str) -> String {
    let body = json!({"topic": topic, "data": data, "idempotency_key": data});
    eventually(TIMEOUT, &format!("publishing {data} through nginx"), || {
        let body = body.clone();
        async move {
            let reply = nginx.api().publish(&body).await;
            if reply.status == StatusCode::ACCEPTED {
                return reply.body["id"].as_str().map(str::to_owned);
            }
            assert!(
                matches!(reply.status.as_u16(), 502 | 503),
                "publish through nginx: {reply:?}"
            );
            None
        }
    })
    .await
}

/// Opens a stream through nginx and checks that it is an event stream: a
/// node that is down is nginx's to skip (`proxy_next_upstream error`), so a
/// client never sees a `502`.
async fn open_through_nginx(request: Subscribe) -> SseStream {
    let stream = request.send().await;
    assert_eq!(
        stream.status(),
        StatusCode::OK,
        "a stream through nginx: {stream:?}"
    );
    assert_eq!(
        stream.header("content-type"),
        Some("text/event-stream"),
        "{stream:?}"
    );
    stream
}

/// Checks what `client` received against what the publisher was told: every
/// accepted event exactly once, in publish order, under the cursor its
/// publish returned; nothing that was never sent; no resync (Redis kept the
/// history, so every resume replays); the marker last.
fn assert_received_everything(
    client: &ReconnectingClient,
    log: &PublishLog,
    topic: &str,
    marker: &str,
) {
    let received = client.received();
    assert_eq!(
        received.last().map(|e| e.data.as_str()),
        Some(marker),
        "the marker ends the stream"
    );
    let ids: BTreeSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        received.len(),
        "a duplicate: {:?}",
        data(received)
    );
    for event in &received[..received.len() - 1] {
        assert_eq!(event.event, "message", "{event:?}");
        assert!(log.was_sent(&event.data), "never published: {event:?}");
    }
    let accepted = log.accepted_on(topic);
    let accepted_data: BTreeSet<&str> = accepted.iter().map(|a| a.data.as_str()).collect();
    // An event sent but never answered 202 (its node died after storing it)
    // may arrive too; the accepted ones must all arrive, in order.
    let delivered: Vec<(&str, &str)> = received
        .iter()
        .filter(|e| accepted_data.contains(e.data.as_str()))
        .map(|e| (e.data.as_str(), e.id.as_str()))
        .collect();
    let expected: Vec<(&str, &str)> = accepted
        .iter()
        .map(|a| (a.data.as_str(), a.id.as_deref().expect("accepted")))
        .collect();
    assert_eq!(
        delivered,
        expected,
        "accepted events, in order, with their cursors ({} reconnects)",
        client.reconnects()
    );
}

#[tokio::test]
async fn streams_through_nginx_spread_over_the_nodes_and_get_events_published_through_it() {
    let cluster = lb_cluster(NODES, &[]).await;
    let nginx = &cluster.nginx;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let stream = open_through_nginx(nginx.subscribe_request().topic("news")).await;
        assert_eq!(stream.header("cache-control"), Some("no-cache"));
        // nginx honours herald's X-Accel-Buffering and, by its config, passes
        // it on to any proxy in front of it.
        assert_eq!(stream.header("x-accel-buffering"), Some("no"));
        streams.push(stream);
    }
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let per_node = wait_connections(&nodes, STREAMS as u64).await;
    assert!(
        per_node.iter().all(|&n| n >= 1),
        "round-robin puts streams on every node: {per_node:?}"
    );
    // The cluster-wide count, asked through nginx of whichever node.
    eventually(TIMEOUT, "6 subscribers of news cluster-wide", || async {
        let reply = nginx.api().topic_info("news").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        (reply.body["subscribers"] == json!(STREAMS)).then_some(())
    })
    .await;

    let mut cursors = Vec::new();
    for n in 0..3 {
        let cursor = nginx
            .api()
            .publish_ok("news", json!(format!("headline {n}")))
            .await;
        cursors.push(cursor);
    }
    for stream in &mut streams {
        let events = stream.events(3, TIMEOUT).await;
        assert_eq!(data(&events), ["headline 0", "headline 1", "headline 2"]);
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, cursors, "a single-topic stream's ids are the cursors");
    }
}

#[tokio::test]
async fn events_reach_clients_through_nginx_unbuffered() {
    let cluster = lb_cluster(NODES, &[("HERALD__SERVER__HEARTBEAT_INTERVAL", "300ms")]).await;
    let nginx = &cluster.nginx;
    let connected = Instant::now();
    let mut stream = open_through_nginx(nginx.subscribe_request().topic("ticks")).await;
    // The stream's opening `retry:` and comment are flushed through at once,
    // headers included, before any event exists.
    match stream.try_next_item(UNBUFFERED).await {
        Next::Item(Item::Retry(ms)) => assert_eq!(ms, RETRY.as_millis() as u64),
        other => panic!("expected the stream's retry: at once, got {other:?}"),
    }
    let opened = connected.elapsed();
    assert!(opened < UNBUFFERED, "stream start took {opened:?}");

    // A slow trickle of tiny events, each published alone: a buffering
    // proxy would sit on every one of them.
    let mut slowest = Duration::ZERO;
    for n in 0..8 {
        let published = Instant::now();
        let cursor = nginx
            .api()
            .publish_ok("ticks", json!(format!("tick {n}")))
            .await;
        let event = stream.next_event(UNBUFFERED).await;
        let latency = published.elapsed();
        assert_eq!(event.data, format!("tick {n}"));
        assert_eq!(event.id, cursor);
        assert!(
            latency < UNBUFFERED,
            "tick {n} took {latency:?} from publish to delivery through nginx"
        );
        slowest = slowest.max(latency);
    }
    eprintln!("slowest publish-to-delivery through nginx: {slowest:?}");

    // The largest event the default limits allow arrives whole and as
    // promptly, over many of nginx's proxy buffers.
    let big = "x".repeat(65_536);
    let published = Instant::now();
    nginx.api().publish_ok("ticks", json!(big)).await;
    let event = stream.next_event(UNBUFFERED).await;
    assert!(event.data == big, "a 64 KiB event arrives whole");
    assert!(
        published.elapsed() < UNBUFFERED,
        "{:?}",
        published.elapsed()
    );

    // An idle stream gets its heartbeat through nginx, which is what keeps
    // it open through proxies that drop quiet connections.
    match stream.try_next_item(UNBUFFERED).await {
        Next::Item(Item::Comment(text)) => assert_eq!(text, "hb"),
        other => panic!("expected a heartbeat on the idle stream, got {other:?}"),
    }
}

/// How a node leaves the cluster in [`clients_move_to_the_other_nodes`].
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, as a crash.
    Crash,
    /// SIGTERM: the node drains its streams over `server.drain_timeout`
    /// and exits 0.
    Drain,
}

/// Six clients on three nodes through nginx and a backend publishing
/// through nginx, 50 events a second; one node leaves by `fault` while
/// both go on. Every client must end up on the other two nodes, through
/// nginx, with every accepted event once and in order.
async fn clients_move_to_the_other_nodes(fault: Fault) {
    let mut cluster = lb_cluster(NODES, &[("HERALD__SERVER__DRAIN_TIMEOUT", "1s")]).await;
    let topic = "orders";
    let mut clients = Vec::new();
    for _ in 0..STREAMS {
        let request = cluster.nginx.subscribe_request().topic(topic);
        clients.push(ReconnectingClient::open(request).await);
    }
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let per_node = wait_connections(&nodes, STREAMS as u64).await;
    let victim = (0..NODES).max_by_key(|&i| per_node[i]).expect("nodes");
    let victim_streams = per_node[victim] as usize;
    assert!(victim_streams >= 1, "{per_node:?}");

    let run = format!("{fault:?}");
    let publisher = PublisherLoop::start(
        cluster.nginx.api().clone(),
        &run,
        &[topic],
        Duration::from_millis(20),
    );
    eventually(TIMEOUT, "10 events accepted before the fault", || async {
        (publisher.snapshot().accepted() >= 10).then_some(())
    })
    .await;

    // Clients read (and reconnect) on tasks of their own while the node
    // goes, as browsers would.
    let marker = format!("marker after the {run}");
    let readers: Vec<JoinHandle<ReconnectingClient>> = clients
        .into_iter()
        .map(|client| {
            let marker = marker.clone();
            tokio::spawn(client.read_until(2 * TIMEOUT, move |e| e.data == marker))
        })
        .collect();
    let faulted = Instant::now();
    match fault {
        Fault::Crash => cluster.nodes[victim].kill(),
        Fault::Drain => {
            let status = cluster.nodes[victim].terminate(TIMEOUT).await;
            assert!(status.success(), "a drained node exits 0: {status:?}");
        }
    }
    eventually(TIMEOUT, "10 events accepted after the fault", || async {
        (publisher.snapshot().accepted_after(faulted) >= 10).then_some(())
    })
    .await;
    let log = publisher.stop().await;
    publish_through(&cluster.nginx, topic, &marker).await;

    let mut clients = Vec::new();
    for reader in readers {
        let client = reader.await.expect("a reader panicked");
        assert_received_everything(&client, &log, topic, &marker);
        clients.push(client);
    }
    let moved = clients.iter().filter(|c| c.reconnects() > 0).count();
    assert_eq!(
        moved, victim_streams,
        "exactly the {run} node's clients moved"
    );
    let survivors: Vec<&Node> = (0..NODES)
        .filter(|&i| i != victim)
        .map(|i| &cluster.nodes[i])
        .collect();
    wait_connections(&survivors, STREAMS as u64).await;
    assert_eq!(
        resumes(&survivors).await,
        (moved, 0),
        "each moved client resumed once by its cursor (replayed, resync)"
    );
}

#[tokio::test]
async fn a_killed_nodes_clients_resume_through_nginx_on_the_others_losing_nothing() {
    clients_move_to_the_other_nodes(Fault::Crash).await;
}

#[tokio::test]
async fn a_draining_nodes_clients_move_through_nginx_to_the_others_losing_nothing() {
    clients_move_to_the_other_nodes(Fault::Drain).await;
}

/// What a refused stream must look like to a client behind nginx: `200`,
/// `text/event-stream`, a `retry:` between 1× and 3× the configured one, no
/// event, and the end of the response.
async fn assert_refused(stream: &mut SseStream, why: &str) {
    assert_eq!(stream.status(), StatusCode::OK, "{why}: {stream:?}");
    assert_eq!(
        stream.header("content-type"),
        Some("text/event-stream"),
        "{why}: {stream:?}"
    );
    let items = stream.expect_closed(TIMEOUT).await;
    let retries: Vec<u64> = items
        .iter()
        .filter_map(|item| match item {
            Item::Retry(ms) => Some(*ms),
            _ => None,
        })
        .collect();
    let base = RETRY.as_millis() as u64;
    assert!(
        matches!(retries[..], [ms] if (base..=3 * base).contains(&ms)),
        "{why}: one retry: in {base}..={}ms, got {items:?}",
        3 * base
    );
    assert!(
        !items.iter().any(|item| matches!(item, Item::Event(_))),
        "{why}: no event on a refused stream: {items:?}"
    );
}

#[tokio::test]
async fn refusals_reach_clients_through_nginx_as_200_event_streams_with_retry() {
    // One node, so the refused stream cannot land anywhere else; three
    // streams fill it, and later spread its drain over 4 s (one closed every
    // 2 s), long enough to be refused while it drains.
    let cluster = lb_cluster(
        1,
        &[
            ("HERALD__SERVER__MAX_CONNECTIONS", "3"),
            ("HERALD__SERVER__DRAIN_TIMEOUT", "6s"),
        ],
    )
    .await;
    let node = &cluster.nodes[0];
    let nginx = &cluster.nginx;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(open_through_nginx(nginx.subscribe_request().topic("full")).await);
    }
    wait_connections(&[node], 3).await;

    let mut over = nginx.subscribe_request().topic("full").send().await;
    assert_refused(&mut over, "over capacity").await;
    let metrics = node.api().metrics().await;
    assert_eq!(
        metrics.value("herald_disconnects_total", &[("reason", "capacity")]),
        Some(1.0),
        "the node refused it, not nginx"
    );

    node.start_terminating();
    eventually(TIMEOUT, "the node to report draining", || async {
        (node.api().status_of("/readyz").await == Some(503)).then_some(())
    })
    .await;
    let mut drained = nginx.subscribe_request().topic("full").send().await;
    assert_refused(&mut drained, "draining").await;
}
