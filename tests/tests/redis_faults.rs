//! Redis faults (docs/protocol.md §1–4, §8): subscribers on two nodes stay
//! connected and a backend keeps publishing (retrying `503`s with the same
//! idempotency key) while Redis goes away and comes back.
//!
//! What each subscriber is owed, per topic:
//! - Redis restarted **without** persistence (history lost): every event
//!   accepted after the stop arrives exactly once, in order, after exactly
//!   one `herald.resync` for the topic. Events accepted before the stop may
//!   have reached the subscriber (in order, once) before the resync, or
//!   not at all: their history is gone, and the resync covers them.
//! - Redis restarted **with** persistence, or paused: nothing was lost, so
//!   every accepted event arrives exactly once, in order, and no resync.
//!
//! Either way the node answers `503` with `Retry-After` and problem+json
//! while it cannot store, is unready, shows `herald_broker_up 0`, and comes
//! back by itself (`herald_broker_reconnects_total` ≥ 1).

use std::time::Duration;

use herald_testkit::{
    eventually, live_channel, numsub_counts, start_nodes, Attempt, Event, Item, Node, PublishLog,
    PublisherLoop, RedisServer, SseStream, RESYNC, TIMEOUT,
};
use serde_json::{json, Value};
use tokio::{task::JoinHandle, time::Instant};

/// Topics the backend publishes to, round-robin.
const TOPICS: [&str; 2] = ["f1", "f2"];
/// Streams: (node index, topics).
const STREAMS: [(usize, &[&str]); 4] =
    [(0, &["f1"]), (1, &["f1"]), (1, &["f2"]), (0, &["f1", "f2"])];
/// How long a subscriber may see nothing: covers the outage.
const QUIET: Duration = Duration::from_secs(20);
/// Accepted events wanted before and after each fault.
const ENOUGH: usize = 20;

/// Two nodes, four subscribers, one publisher, all running.
struct Scenario {
    nodes: Vec<Node>,
    readers: Vec<JoinHandle<Vec<Event>>>,
    publisher: PublisherLoop,
}

impl Scenario {
    async fn start(redis_url: &str, run: &str) -> Self {
        let nodes = start_nodes(&Node::builder().env("HERALD__REDIS__URL", redis_url), 2).await;
        let mut readers = Vec::new();
        for (node, topics) in STREAMS {
            let stream = nodes[node].subscribe(topics).await;
            readers.push(tokio::spawn(read_until_end(stream, topics.len())));
        }
        let publisher = PublisherLoop::start(
            nodes[0].api().clone(),
            run,
            &TOPICS,
            Duration::from_millis(10),
        );
        Self {
            nodes,
            readers,
            publisher,
        }
    }

    async fn wait_accepted_after(&self, since: Instant) {
        eventually(QUIET, &format!("{ENOUGH} events accepted"), || async {
            (self.publisher.snapshot().accepted_after(since) >= ENOUGH).then_some(())
        })
        .await;
    }

    /// Both nodes unready and showing the broker down, and the publisher
    /// refused at least once.
    async fn expect_broker_down(&self) {
        for node in &self.nodes {
            eventually(QUIET, "/readyz to answer 503", || async {
                (node.api().status_of("/readyz").await == Some(503)).then_some(())
            })
            .await;
            let metrics = node.api().metrics().await;
            assert_eq!(metrics.value("herald_broker_up", &[]), Some(0.0));
        }
        eventually(QUIET, "a publish refused", || async {
            (!self.publisher.snapshot().refusals.is_empty()).then_some(())
        })
        .await;
    }

    /// Both nodes ready again, up, and counting a reconnection.
    async fn expect_broker_back(&self) {
        for node in &self.nodes {
            eventually(QUIET, "/readyz to answer 200", || async {
                (node.api().status_of("/readyz").await == Some(200)).then_some(())
            })
            .await;
            let metrics = node.api().metrics().await;
            assert_eq!(metrics.value("herald_broker_up", &[]), Some(1.0));
            let reconnects = metrics
                .value("herald_broker_reconnects_total", &[])
                .expect("herald_broker_reconnects_total");
            assert!(reconnects >= 1.0, "reconnects {reconnects}");
        }
    }

    /// Stops the publisher, publishes an end marker per topic, and returns
    /// the record and what each stream received up to its markers.
    async fn finish(self) -> (PublishLog, Vec<Vec<Event>>) {
        let log = self.publisher.stop().await;
        for topic in TOPICS {
            self.nodes[1]
                .api()
                .publish_ok(topic, json!(format!("end-{topic}")))
                .await;
        }
        let mut received = Vec::new();
        for reader in self.readers {
            received.push(reader.await.expect("a stream reader failed"));
        }
        for refusal in &log.refusals {
            let reply = &refusal.reply;
            reply.assert_problem(503);
            let retry_after = reply.header("retry-after").unwrap_or_default();
            assert!(
                retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
                "Retry-After {retry_after:?} on {reply:?}"
            );
        }
        (log, received)
    }
}

/// Reads `stream` until it has seen `ends` end markers.
async fn read_until_end(mut stream: SseStream, ends: usize) -> Vec<Event> {
    let mut seen = 0;
    stream
        .events_until(QUIET * 2, |e| {
            seen += usize::from(e.data.starts_with("end-"));
            seen == ends
        })
        .await
}

/// The events of `topic` in `events` (data `"<topic>#n"` or its end
/// marker), and the resyncs that list it.
fn of_topic<'a>(events: &'a [Event], topic: &str) -> Vec<&'a Event> {
    let prefix = format!("{topic}#");
    let end = format!("end-{topic}");
    events
        .iter()
        .filter(|e| {
            if e.event == RESYNC {
                let body: Value = serde_json::from_str(&e.data).expect("resync data is JSON");
                assert_eq!(body["reason"], "history_truncated", "{body}");
                body["topics"]
                    .as_array()
                    .expect("resync lists topics")
                    .iter()
                    .any(|t| t == topic)
            } else {
                e.data.starts_with(&prefix) || e.data == end
            }
        })
        .collect()
}

fn data<'a>(events: &[&'a Event]) -> Vec<&'a str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// Nothing lost, nothing doubled, no resync: each stream got every
/// accepted event of its topics, in order, then the end marker; a
/// single-topic stream with the publish cursors as ids. Every violation is
/// listed, not just the first.
fn assert_every_accepted_event_once(log: &PublishLog, received: &[Vec<Event>]) {
    let mut problems = Vec::new();
    for ((node, topics), events) in STREAMS.iter().zip(received) {
        let who = format!("stream {topics:?} on node {node}");
        for topic in *topics {
            let got = of_topic(events, topic);
            let resyncs = got.iter().filter(|e| e.event == RESYNC).count();
            if resyncs > 0 {
                problems.push(format!("{who}: {resyncs} resync(s) for {topic}"));
            }
            let got: Vec<&Event> = got.into_iter().filter(|e| e.event != RESYNC).collect();
            let accepted = log.accepted_on(topic);
            let mut want: Vec<&str> = accepted.iter().map(|a| a.data.as_str()).collect();
            let end = format!("end-{topic}");
            want.push(&end);
            let got_data = data(&got);
            if got_data != want {
                let missing: Vec<&&str> = want.iter().filter(|d| !got_data.contains(d)).collect();
                let extra: Vec<&&str> = got_data.iter().filter(|d| !want.contains(d)).collect();
                problems.push(format!(
                    "{who}: events of {topic} differ from the accepted ones: \
                     missing {missing:?}, not accepted {extra:?}, received {got_data:?}"
                ));
            } else if topics.len() == 1 {
                let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
                let want: Vec<&str> = accepted
                    .iter()
                    .map(|a| a.id.as_deref().expect("accepted"))
                    .collect();
                if ids[..want.len()] != want {
                    problems.push(format!("{who}: ids are not the publish cursors"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence_delivers_every_later_event_after_one_resync() {
    restart_without_persistence(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_without_persistence_delivers_every_later_event_after_one_resync() {
    restart_without_persistence(true).await;
}

/// Redis stopped (SIGTERM) or crashed (SIGKILL) mid-stream, and started
/// again empty on the same port.
async fn restart_without_persistence(crash: bool) {
    let mut redis = RedisServer::start().await;
    let scenario = Scenario::start(&redis.url(), "lost").await;
    let started = Instant::now();
    scenario.wait_accepted_after(started).await;

    if crash {
        redis.kill();
    } else {
        redis.stop().await;
    }
    let stopped = Instant::now();
    scenario.expect_broker_down().await;
    // A new stream meanwhile is not an error (EventSource would give up
    // for good): 200, a retry, and the connection closes.
    let mut refused = scenario.nodes[1].subscribe(&["f1"]).await;
    assert_eq!(refused.status(), 200);
    let items = refused.expect_closed(TIMEOUT).await;
    assert!(
        items.iter().any(|i| matches!(i, Item::Retry(_))),
        "{items:?}"
    );
    assert!(
        !items.iter().any(|i| matches!(i, Item::Event(_))),
        "{items:?}"
    );
    let restarting = Instant::now();
    redis.restart().await;
    scenario.expect_broker_back().await;
    // Every node resubscribed to every topic it has streams for.
    let numsub = numsub_counts(
        &redis
            .command(&["PUBSUB", "NUMSUB", &live_channel("f1"), &live_channel("f2")])
            .await,
    );
    assert_eq!(numsub[&live_channel("f1")], 2, "{numsub:?}");
    assert_eq!(numsub[&live_channel("f2")], 2, "{numsub:?}");
    scenario.wait_accepted_after(restarting).await;
    let (log, received) = scenario.finish().await;

    let accepted_while_down = log
        .topics
        .values()
        .flatten()
        .filter(|a| {
            a.accepted_at
                .is_some_and(|at| at > stopped && at < restarting)
        })
        .count();
    assert_eq!(accepted_while_down, 0, "202 while nothing could store it");

    for ((node, topics), events) in STREAMS.iter().zip(&received) {
        let who = format!("stream {topics:?} on node {node}");
        for topic in *topics {
            let got = of_topic(events, topic);
            let resyncs: Vec<usize> = (0..got.len()).filter(|&i| got[i].event == RESYNC).collect();
            assert_eq!(
                resyncs.len(),
                1,
                "{who}: exactly one resync for {topic} (its history was lost): {:?}",
                data(&got)
            );
            let (before, after) = got.split_at(resyncs[0]);
            let after = &after[1..];

            // After the resync: exactly the events accepted after the stop,
            // in order, then the end marker.
            let accepted = log.accepted_on(topic);
            let (old, new): (Vec<&Attempt>, Vec<&Attempt>) = accepted
                .iter()
                .partition(|a| a.accepted_at.is_some_and(|at| at <= stopped));
            let mut want: Vec<&str> = new.iter().map(|a| a.data.as_str()).collect();
            let end = format!("end-{topic}");
            want.push(&end);
            assert_eq!(
                data(after),
                want,
                "{who}: events of {topic} after the resync"
            );
            if topics.len() == 1 {
                let ids: Vec<&str> = after.iter().map(|e| e.id.as_str()).collect();
                let want: Vec<&str> = new.iter().map(|a| a.id.as_deref().expect("id")).collect();
                assert_eq!(
                    ids[..want.len()],
                    want,
                    "{who}: ids are the publish cursors"
                );
            }

            // Before it: events accepted before the stop, in order, once
            // each, up to wherever delivery stopped (a prefix); anything
            // else must be an event whose publish was refused (stored, but
            // its answer lost).
            let old_data: Vec<&str> = old.iter().map(|a| a.data.as_str()).collect();
            let before_accepted: Vec<&str> = data(before)
                .into_iter()
                .filter(|d| old_data.contains(d))
                .collect();
            assert_eq!(
                before_accepted,
                old_data[..before_accepted.len()],
                "{who}: events of {topic} before the resync"
            );
            for extra in data(before).into_iter().filter(|d| !old_data.contains(d)) {
                assert!(
                    log.refusals.iter().any(|r| r.data == extra),
                    "{who}: {extra} arrived but was never accepted nor refused"
                );
            }
            eprintln!(
                "{who}, {topic}: {} of {} events accepted before the stop arrived, {} after",
                before_accepted.len(),
                old_data.len(),
                new.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_persistence_catches_up_from_history_without_resync() {
    let mut redis = RedisServer::start_durable().await;
    let scenario = Scenario::start(&redis.url(), "durable").await;
    scenario.wait_accepted_after(Instant::now()).await;

    redis.stop().await;
    scenario.expect_broker_down().await;
    let restarting = Instant::now();
    redis.restart().await;
    scenario.expect_broker_back().await;
    scenario.wait_accepted_after(restarting).await;
    let (log, received) = scenario.finish().await;

    assert_every_accepted_event_once(&log, &received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_loses_nothing_and_resyncs_nothing() {
    let mut redis = RedisServer::start_durable().await;
    let scenario = Scenario::start(&redis.url(), "paused").await;
    scenario.wait_accepted_after(Instant::now()).await;

    redis.pause();
    scenario.expect_broker_down().await;
    let resuming = Instant::now();
    redis.resume();
    scenario.expect_broker_back().await;
    scenario.wait_accepted_after(resuming).await;
    let (log, received) = scenario.finish().await;

    assert_every_accepted_event_once(&log, &received);
}
