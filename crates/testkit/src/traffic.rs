//! Traffic through faults, and the verdict on what arrived.
//!
//! [`Traffic`] runs a [`PublisherLoop`] and a reader per stream while a
//! test breaks things; [`Traffic::finish`] publishes an end marker per
//! topic (retrying refusals), waits until every stream has read its
//! markers, and returns a [`Delivery`]: the publisher's record and what
//! each stream received. The checks compare the two event by event:
//!
//! - [`Delivery::assert_every_event_once`]: every accepted event arrived
//!   on every stream of its topic exactly once, in publish order, and no
//!   stream was told to resync.
//! - [`Delivery::assert_every_event_once_or_resync`]: the same, except
//!   that a topic whose stream got `herald.resync` may miss accepted
//!   events (the client was told to reload): never a silent gap.
//!
//! - [`Delivery::assert_no_accepted_event_lost`]: every accepted event
//!   arrived, resync or not (acknowledged means replicated); a stream may
//!   be told to resync only if it received an event that was never
//!   accepted (stored by a primary that then lost it).
//!
//! All of them also refuse duplicates, events out of order, events that
//! were never sent (phantoms), and refusals other than `503` with
//! `Retry-After`. An event that arrived although its publish was refused
//! is allowed: a refusal may come after the event was stored.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::{task::JoinHandle, time::Instant};

use crate::{eventually, Api, Event, PublishLog, PublisherLoop, SseStream, RESYNC, TIMEOUT};

/// Publishing and reading in the background.
#[derive(Debug)]
pub struct Traffic {
    publisher: PublisherLoop,
    api: Api,
    topics: Vec<String>,
    readers: Vec<Reader>,
    quiet: Duration,
}

#[derive(Debug)]
struct Reader {
    who: String,
    topics: Vec<String>,
    task: JoinHandle<Vec<Event>>,
}

/// What one stream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Names the stream in messages.
    pub who: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Everything it received up to its end markers.
    pub events: Vec<Event>,
}

/// The record of a [`Traffic`] run.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// What the publisher sent and what was answered.
    pub log: PublishLog,
    /// What each stream received.
    pub streams: Vec<Received>,
}

impl Traffic {
    /// Starts publishing through `api` round-robin over `topics` every
    /// `pace`, and reading each of `streams` (a name, the stream, its
    /// topics). `quiet` bounds how long a stream may receive nothing (it
    /// must cover the faults the test injects).
    pub fn start(
        api: &Api,
        run: &str,
        topics: &[&str],
        pace: Duration,
        streams: Vec<(String, SseStream, Vec<String>)>,
        quiet: Duration,
    ) -> Self {
        let readers = streams
            .into_iter()
            .map(|(who, stream, topics)| Reader {
                task: tokio::spawn(read_until_end(stream, topics.clone(), quiet)),
                who,
                topics,
            })
            .collect();
        Self {
            publisher: PublisherLoop::start(api.clone(), run, topics, pace),
            api: api.clone(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            readers,
            quiet,
        }
    }

    /// The publisher's record so far.
    pub fn snapshot(&self) -> PublishLog {
        self.publisher.snapshot()
    }

    /// Waits until `count` events were accepted after `since`.
    ///
    /// # Panics
    ///
    /// When that takes longer than the quiet time.
    pub async fn wait_accepted_after(&self, since: Instant, count: usize) {
        eventually(
            self.quiet,
            &format!("{count} events accepted after the mark"),
            || async { (self.publisher.snapshot().accepted_after(since) >= count).then_some(()) },
        )
        .await;
    }

    /// Stops publishing, publishes an end marker per topic (retrying
    /// refusals), and collects what every stream received.
    ///
    /// # Panics
    ///
    /// When a marker is refused for longer than the quiet time, or a
    /// stream does not receive its markers.
    pub async fn finish(self) -> Delivery {
        let log = self.publisher.stop().await;
        for topic in &self.topics {
            let body = json!({
                "topic": topic,
                "data": format!("end-{topic}"),
                "idempotency_key": format!("end-{topic}"),
            });
            eventually(
                self.quiet,
                &format!("the end marker of {topic} accepted"),
                || async { (self.api.publish(&body).await.status == 202).then_some(()) },
            )
            .await;
        }
        let mut streams = Vec::new();
        for reader in self.readers {
            streams.push(Received {
                who: reader.who,
                topics: reader.topics,
                events: reader.task.await.expect("a stream reader failed"),
            });
        }
        Delivery { log, streams }
    }
}

async fn read_until_end(mut stream: SseStream, topics: Vec<String>, quiet: Duration) -> Vec<Event> {
    let mut ended = 0;
    stream
        .events_until(quiet + TIMEOUT, |e| {
            ended += usize::from(
                e.data
                    .strip_prefix("end-")
                    .is_some_and(|t| topics.iter().any(|topic| topic == t)),
            );
            ended == topics.len()
        })
        .await
}

impl Delivery {
    /// Every accepted event exactly once, in order, on every stream of its
    /// topic; no resync; no phantom.
    ///
    /// # Panics
    ///
    /// Listing every violation.
    pub fn assert_every_event_once(&self) {
        self.check(Rule::NoResync);
    }

    /// As [`Delivery::assert_every_event_once`], but a stream told to
    /// resync a topic may miss that topic's accepted events.
    ///
    /// # Panics
    ///
    /// Listing every violation.
    pub fn assert_every_event_once_or_resync(&self) {
        self.check(Rule::ResyncExcuses);
    }

    /// Every accepted event exactly once, in order, on every stream of its
    /// topic, whether or not it was told to resync; a resync only on a
    /// stream that received an event never accepted.
    ///
    /// # Panics
    ///
    /// Listing every violation.
    pub fn assert_no_accepted_event_lost(&self) {
        self.check(Rule::NothingAcceptedLost);
    }

    /// Resyncs received, over all streams and topics.
    pub fn resyncs(&self) -> usize {
        self.streams
            .iter()
            .flat_map(|s| s.topics.iter().map(move |t| resyncs_of(&s.events, t)))
            .sum()
    }

    fn check(&self, rule: Rule) {
        let mut problems = Vec::new();
        for refusal in &self.log.refusals {
            let reply = &refusal.reply;
            let retry_after = reply.header("retry-after").unwrap_or_default();
            let problem_json = reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/problem+json"));
            if reply.status != 503
                || !problem_json
                || !retry_after.parse::<u64>().is_ok_and(|s| s >= 1)
            {
                problems.push(format!("a refusal other than 503 + Retry-After: {reply:?}"));
            }
        }
        for stream in &self.streams {
            for topic in &stream.topics {
                problems.extend(self.check_topic(stream, topic, rule));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    fn check_topic(&self, stream: &Received, topic: &str, rule: Rule) -> Vec<String> {
        let who = &stream.who;
        let mut problems = Vec::new();
        let resyncs = resyncs_of(&stream.events, topic);
        let prefix = format!("{topic}#");
        let got: Vec<&Event> = stream
            .events
            .iter()
            .filter(|e| e.event != RESYNC && e.data.starts_with(&prefix))
            .collect();
        let sent: Vec<&str> = self
            .log
            .topics
            .get(topic)
            .map(|attempts| attempts.iter().map(|a| a.data.as_str()).collect())
            .unwrap_or_default();
        // Order and uniqueness: positions in publish order must increase.
        let mut last = None;
        for event in &got {
            match sent.iter().position(|d| *d == event.data) {
                None => problems.push(format!("{who}: {} was never sent (a phantom)", event.data)),
                Some(index) => {
                    if last.is_some_and(|l| index <= l) {
                        problems.push(format!(
                            "{who}: {} arrived twice or out of order",
                            event.data
                        ));
                    }
                    last = Some(index);
                }
            }
        }
        let missing: Vec<&str> = self
            .log
            .accepted_on(topic)
            .iter()
            .map(|a| a.data.as_str())
            .filter(|d| !got.iter().any(|e| e.data == *d))
            .collect();
        let excused = rule == Rule::ResyncExcuses && resyncs > 0;
        if !missing.is_empty() && !excused {
            problems.push(format!(
                "{who}: accepted events of {topic} never arrived{}: {missing:?}",
                if rule == Rule::ResyncExcuses {
                    " and no resync explains it"
                } else {
                    ""
                }
            ));
        }
        let unaccepted: Vec<&str> = got
            .iter()
            .map(|e| e.data.as_str())
            .filter(|d| !self.log.accepted_on(topic).iter().any(|a| a.data == *d))
            .collect();
        match rule {
            Rule::NoResync if resyncs > 0 => {
                problems.push(format!("{who}: {resyncs} resync(s) for {topic}"));
            }
            Rule::NothingAcceptedLost if resyncs > 0 && unaccepted.is_empty() => {
                problems.push(format!(
                    "{who}: {resyncs} resync(s) for {topic} without having received an unaccepted event"
                ));
            }
            _ => {}
        }
        problems
    }
}

/// What a missing event or a resync means in a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Nothing may be missing, and nothing resynced.
    NoResync,
    /// A resync of the topic excuses missing events of it.
    ResyncExcuses,
    /// Nothing accepted may be missing; a resync only after an event that
    /// was never accepted.
    NothingAcceptedLost,
}

fn resyncs_of(events: &[Event], topic: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event == RESYNC)
        .filter(|e| {
            let body: Value = serde_json::from_str(&e.data).unwrap_or_default();
            body["topics"]
                .as_array()
                .is_some_and(|topics| topics.iter().any(|t| t == topic))
        })
        .count()
}
