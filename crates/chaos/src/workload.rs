//! The traffic of a run: publishers that retry refused publishes with the
//! same idempotency key (on any node), and clients that behave like a
//! browser's `EventSource` (reconnect after the `retry:` they were given,
//! with the id of the last event they received), all recording what they
//! did into the [`Recorder`].
//!
//! A client can also be told, by the fault schedule, to stop reading for a
//! while (a slow consumer) or to drop its stream and resume on another
//! node.

use std::{sync::Arc, time::Duration};

use herald_testkit::{Api, Item, Next, Subscribe};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::history::{Attempt, Client, Outcome, Publish, Received, Recorder, Segment};

/// How long a publish request may take before it counts as unanswered.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// A stream that brings nothing at all (not even the 1 s heartbeat) for
/// this long is taken for dead, as a browser's network stack eventually
/// would.
const STREAM_SILENCE: Duration = Duration::from_secs(5);
/// Longest pause between reconnects (herald's `retry:` is shorter; a
/// refused stream gets up to three times it).
const MAX_RETRY: Duration = Duration::from_secs(1);

/// What the fault schedule asks of a client.
#[derive(Debug, Clone, Copy)]
pub enum ClientFault {
    /// Stop reading for this long.
    Slow(Duration),
    /// Drop the stream and resume on another node.
    Switch,
}

/// What every publisher and client of a run shares.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The run's seed; each task derives its own random stream from it.
    pub seed: u64,
    /// The URL of each node's client-side proxy, by node index.
    pub urls: Arc<Vec<String>>,
    /// Where everything is recorded.
    pub recorder: Recorder,
}

/// Runs one publisher until `stop` turns true and its last event is
/// accepted (or `give_up` turns true).
pub async fn publisher(
    id: usize,
    traffic: Traffic,
    topics: Arc<Vec<String>>,
    pace: Duration,
    mut stop: watch::Receiver<bool>,
    give_up: watch::Receiver<bool>,
) {
    let Traffic {
        seed,
        urls,
        recorder,
    } = traffic;
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed_0000 + id as u64));
    let apis: Vec<Api> = urls.iter().map(|u| Api::new(u)).collect();
    let mut ticker = tokio::time::interval(pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let topic = topics[rng.random_range(0..topics.len())].clone();
        let data = format!("p{id}e{n}");
        let body = json!({"topic": topic, "data": data, "idempotency_key": format!("k-{data}")});
        let index = recorder.with(|h| {
            h.publishes.push(Publish {
                data: data.clone(),
                topic: topic.clone(),
                first_sent_ms: recorder.now(),
                attempts: Vec::new(),
                cursor: None,
                accepted_ms: None,
            });
            h.publishes.len() - 1
        });
        let mut pause = Duration::from_millis(50);
        loop {
            let node = rng.random_range(0..apis.len());
            let sent_ms = recorder.now();
            let outcome = match apis[node].try_publish(&body, PUBLISH_TIMEOUT).await {
                Ok(reply) if reply.status == 202 => {
                    Outcome::Accepted(reply.body["id"].as_str().unwrap_or_default().to_owned())
                }
                Ok(reply) => Outcome::Refused {
                    status: reply.status.as_u16(),
                    retry_after: reply.header("retry-after").is_some(),
                    problem: reply
                        .header("content-type")
                        .is_some_and(|t| t.starts_with("application/problem+json")),
                },
                Err(error) => Outcome::NoAnswer(error),
            };
            let accepted = match &outcome {
                Outcome::Accepted(cursor) => Some(cursor.clone()),
                _ => None,
            };
            let now = recorder.now();
            recorder.with(|h| {
                let publish = &mut h.publishes[index];
                publish.attempts.push(Attempt {
                    node,
                    sent_ms,
                    outcome,
                });
                if let Some(cursor) = &accepted {
                    publish.cursor = Some(cursor.clone());
                    publish.accepted_ms = Some(now);
                }
            });
            if accepted.is_some() || *give_up.borrow() {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// Runs one client until `stop` turns true.
pub async fn client(
    id: usize,
    traffic: Traffic,
    topics: Vec<String>,
    mut faults: mpsc::UnboundedReceiver<ClientFault>,
    stop: watch::Receiver<bool>,
) {
    let Traffic {
        seed,
        urls,
        recorder,
    } = traffic;
    let mut rng = StdRng::seed_from_u64(seed ^ (0xc11e_0000 + id as u64));
    recorder.with(|h| {
        h.clients.push(Client {
            id,
            topics: topics.clone(),
            segments: Vec::new(),
        })
    });
    let mut last_id = String::new();
    let mut retry = Duration::from_millis(300);
    let mut node = rng.random_range(0..urls.len());
    while !*stop.borrow() {
        let mut request = Subscribe::new(&urls[node])
            .topics(&topics.iter().map(String::as_str).collect::<Vec<_>>());
        if !last_id.is_empty() {
            request = request.last_event_id(&last_id);
        }
        let mut segment = Segment {
            node,
            requested_ms: recorder.now(),
            resumed_from: (!last_id.is_empty()).then(|| last_id.clone()),
            status: Err(String::new()),
            opened_ms: None,
            received: Vec::new(),
            end: String::new(),
        };
        match request.try_send().await {
            Err(error) => {
                segment.status = Err(error.clone());
                segment.end = error;
            }
            Ok(mut stream) => {
                segment.status = Ok(stream.status().as_u16());
                if stream.status() == 200 {
                    segment.end = read(
                        &mut stream,
                        &mut segment,
                        &mut last_id,
                        &mut retry,
                        &recorder,
                        &mut faults,
                        &stop,
                    )
                    .await;
                } else {
                    segment.end = format!("status {}", stream.status());
                }
            }
        }
        let switch = segment.end == "switched";
        recorder.with(|h| {
            if let Some(client) = h.clients.iter_mut().find(|c| c.id == id) {
                client.segments.push(segment);
            }
        });
        if *stop.borrow() {
            break;
        }
        // A browser waits its retry before reconnecting; herald spreads
        // refused clients with a jittered one.
        if !switch {
            tokio::time::sleep(retry.min(MAX_RETRY)).await;
        }
        let others = urls.len();
        node = if switch && others > 1 {
            (node + rng.random_range(1..others)) % others
        } else {
            rng.random_range(0..others)
        };
    }
}

/// Reads one stream until it ends; returns why it ended.
async fn read(
    stream: &mut herald_testkit::SseStream,
    segment: &mut Segment,
    last_id: &mut String,
    retry: &mut Duration,
    recorder: &Recorder,
    faults: &mut mpsc::UnboundedReceiver<ClientFault>,
    stop: &watch::Receiver<bool>,
) -> String {
    loop {
        if *stop.borrow() {
            return "stopped".into();
        }
        while let Ok(fault) = faults.try_recv() {
            match fault {
                ClientFault::Switch => return "switched".into(),
                // Not reading: the socket fills up, herald's queue for the
                // stream overflows, and herald closes it as too slow.
                ClientFault::Slow(pause) => tokio::time::sleep(pause).await,
            }
        }
        let next = tokio::select! {
            next = stream.try_next_item(STREAM_SILENCE) => next,
            Some(fault) = faults.recv() => {
                match fault {
                    ClientFault::Switch => return "switched".into(),
                    ClientFault::Slow(pause) => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                }
            }
        };
        match next {
            Next::Item(Item::Event(event)) => {
                last_id.clone_from(&event.id);
                segment.received.push(Received {
                    at_ms: recorder.now(),
                    id: event.id,
                    event: event.event,
                    data: event.data,
                });
            }
            Next::Item(Item::Retry(ms)) => *retry = Duration::from_millis(ms),
            Next::Item(Item::Comment(text)) => {
                if segment.opened_ms.is_none() && text.contains("stream open") {
                    segment.opened_ms = Some(recorder.now());
                }
            }
            Next::Closed => {
                return stream
                    .close_error()
                    .map_or_else(|| "closed".to_owned(), |e| format!("closed: {e}"))
            }
            Next::TimedOut => return "silent".into(),
        }
    }
}
