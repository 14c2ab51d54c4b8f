//! The node's one pub/sub connection: one Redis subscription per topic with
//! local subscribers, reconnection with catch-up, and dispatch of live
//! events to the topic registry.
//!
//! **One subscription per topic.** The registry reports topics gaining their
//! first or losing their last local subscriber; this task reconciles each
//! reported topic with the registry's current state instead of replaying
//! join/leave messages, so any interleaving of joins and leaves ends with a
//! subscription exactly for the subscribed topics. Before unsubscribing, a
//! topic is removed from the live set and only then is the registry checked:
//! a stream that joined in between either sees the topic not live (and waits
//! for the resubscription) or joined early enough that the check sees it.
//!
//! **No gap on join.** A stream waits until its topics' SUBSCRIBE is
//! confirmed before it reads history. Redis delivers every PUBLISH that
//! follows the confirmation on this connection, and the publish script
//! stores before it publishes, so each event is in the history the stream
//! reads, or arrives live, or both (and the stream drops the duplicate).
//!
//! **No gap on reconnect.** The task remembers the last position it
//! dispatched per topic. After a reconnect it resubscribes every live topic,
//! then reads each topic's history after that position and dispatches what
//! was missed before processing live messages; live messages already
//! covered are dropped here and again by each stream. When history was
//! trimmed or lost meanwhile, streams see the jump in sequence or epoch and
//! send their clients `herald.resync`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_redis::Pool;
use futures_util::StreamExt;
use rand::Rng;
use redis::{aio::PubSubSink, Msg};
use tokio::sync::mpsc;

use super::{history::HistoryRead, keys, live::LiveState, wire, BrokerMetrics, COMMAND_TIMEOUT};
use crate::{BrokerError, EventName, Position, SharedEvent, Topic, TopicRegistry};

/// Topics per SUBSCRIBE command and per catch-up pipeline.
const CHUNK: usize = 500;
/// How often the connection is checked with PING, and how long it may take.
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The subscriber task's state. Owned by the task spawned in
/// `RedisBroker::start`; it runs until that task is aborted.
pub(crate) struct Subscriber {
    pub(crate) client: redis::Client,
    pub(crate) pool: Pool,
    pub(crate) registry: Arc<TopicRegistry>,
    pub(crate) interest: mpsc::UnboundedReceiver<Topic>,
    pub(crate) live: Arc<LiveState>,
    pub(crate) metrics: BrokerMetrics,
    pub(crate) max_events: usize,
    /// The last position dispatched (or known at subscription) per live
    /// topic: where catch-up starts after a reconnect.
    pub(crate) last: HashMap<Topic, Position>,
}

#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the connection closed")]
    Closed,
    #[error("redis did not answer in time")]
    PingTimeout,
}

impl Subscriber {
    /// Connects, serves, and reconnects with jittered exponential backoff,
    /// forever.
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        let mut connected_before = false;
        loop {
            let result = self.session(&mut connected_before, &mut failures).await;
            self.live.clear();
            self.metrics.up.set(0);
            if let Err(error) = result {
                tracing::warn!(%error, "redis subscriber connection lost; reconnecting");
            }
            tokio::time::sleep(backoff(failures)).await;
            failures = failures.saturating_add(1);
        }
    }

    async fn session(
        &mut self,
        connected_before: &mut bool,
        failures: &mut u32,
    ) -> Result<(), SessionEnd> {
        let pubsub = tokio::time::timeout(COMMAND_TIMEOUT * 2, self.client.get_async_pubsub())
            .await
            .map_err(|_| SessionEnd::Closed)??;
        let (mut sink, mut stream) = pubsub.split();
        super::check_failover(&self.pool).await?;

        let topics = self.registry.topics();
        self.subscribe(&mut sink, topics).await?;
        self.catch_up().await?;

        self.live.set_up();
        self.metrics.up.set(1);
        if *connected_before {
            self.metrics.reconnects.inc();
            tracing::info!("redis subscriber reconnected");
        }
        *connected_before = true;
        *failures = 0;

        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.on_message(&message),
                    None => return Err(SessionEnd::Closed),
                },
                Some(topic) = self.interest.recv() => {
                    let mut topics = vec![topic];
                    while let Ok(topic) = self.interest.try_recv() {
                        topics.push(topic);
                    }
                    self.reconcile(&mut sink, topics).await?;
                }
                _ = ping.tick() => {
                    // In subscribed (RESP2) mode PING answers ["pong", ""].
                    tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| SessionEnd::PingTimeout)??;
                }
            }
        }
    }

    /// Brings the subscriptions of `topics` in line with the registry.
    async fn reconcile(
        &mut self,
        sink: &mut PubSubSink,
        mut topics: Vec<Topic>,
    ) -> Result<(), SessionEnd> {
        topics.sort_unstable();
        topics.dedup();
        let mut join = Vec::new();
        let mut leave = Vec::new();
        for topic in topics {
            if self.live.deactivate(&topic) {
                if self.registry.is_subscribed(&topic) {
                    self.live.activate([topic]);
                } else {
                    leave.push(topic);
                }
            } else if self.registry.is_subscribed(&topic) {
                join.push(topic);
            }
        }
        for chunk in leave.chunks(CHUNK) {
            let channels: Vec<String> = chunk.iter().map(keys::channel).collect();
            bounded(sink.unsubscribe(channels)).await?;
            for topic in chunk {
                self.last.remove(topic);
            }
        }
        self.subscribe(sink, join).await
    }

    /// Subscribes to `topics`, remembering where each one's history stood
    /// just before, then marks them live.
    async fn subscribe(
        &mut self,
        sink: &mut PubSubSink,
        topics: Vec<Topic>,
    ) -> Result<(), SessionEnd> {
        for chunk in topics.chunks(CHUNK) {
            let fresh: Vec<Topic> = chunk
                .iter()
                .filter(|t| !self.last.contains_key(*t))
                .cloned()
                .collect();
            let heads = super::read_heads(&self.pool, &fresh).await?;
            let channels: Vec<String> = chunk.iter().map(keys::channel).collect();
            bounded(sink.subscribe(channels)).await?;
            self.last.extend(fresh.into_iter().zip(heads));
            self.live.activate(chunk.iter().cloned());
        }
        Ok(())
    }

    /// Dispatches what each live topic missed while the connection was down.
    async fn catch_up(&mut self) -> Result<(), SessionEnd> {
        let positions: Vec<(Topic, Position)> = self
            .last
            .iter()
            .filter(|(topic, _)| self.live.is_active(topic))
            .map(|(t, p)| (t.clone(), *p))
            .collect();
        for chunk in positions.chunks(CHUNK) {
            let mut read = HistoryRead::new();
            for (topic, position) in chunk {
                read.after(topic, position.seq, self.max_events);
            }
            let mut replies = read.run(&self.pool).await?;
            for (topic, position) in chunk {
                let mut slice = replies.slice(topic)?;
                if slice.window.epoch != position.epoch && slice.window.epoch != 0 {
                    // The history was recreated: everything in it is new.
                    let mut again = HistoryRead::new();
                    again.after(topic, 0, self.max_events);
                    slice = again.run(&self.pool).await?.slice(topic)?;
                }
                if position.epoch != 0 && slice.window.epoch != position.epoch {
                    // What this node had delivered is gone from Redis, and so
                    // may be events accepted after it: its streams resync the
                    // topic now, then follow the new history from its start.
                    let start =
                        Position::new(slice.window.epoch, slice.window.first.saturating_sub(1));
                    self.last.insert(topic.clone(), start);
                    self.registry
                        .dispatch(&Arc::new(SharedEvent::reset(topic.clone(), start)));
                }
                for event in slice.events {
                    self.dispatch(event);
                }
            }
        }
        Ok(())
    }

    fn on_message(&mut self, message: &Msg) {
        let Some(topic) = keys::topic_of_channel(message.get_channel_name()) else {
            return;
        };
        let Some(live) = wire::parse_live(message.get_payload_bytes()) else {
            tracing::warn!(%topic, "ignoring a malformed live event");
            return;
        };
        let event = match live.event {
            "" => None,
            name => match EventName::new(name) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(%topic, "ignoring a live event with an invalid name");
                    return;
                }
            },
        };
        self.dispatch(Arc::new(SharedEvent::encode(
            topic,
            live.position,
            event.as_ref(),
            live.data,
            live.stored_at_us,
        )));
    }

    /// Hands `event` to local subscribers unless it was already dispatched.
    fn dispatch(&mut self, event: Arc<SharedEvent>) {
        let Some(last) = self.last.get_mut(&event.topic) else {
            // A late message for a topic just unsubscribed.
            return;
        };
        if event.position.epoch == last.epoch && event.position.seq <= last.seq {
            return;
        }
        *last = event.position;
        self.registry.dispatch(&event);
    }
}

/// A subscription change that Redis must confirm within [`COMMAND_TIMEOUT`];
/// past it the connection is treated as dead and rebuilt.
async fn bounded(
    change: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> Result<(), SessionEnd> {
    tokio::time::timeout(COMMAND_TIMEOUT, change)
        .await
        .map_err(|_| SessionEnd::PingTimeout)??;
    Ok(())
}

/// Exponential backoff from 100 ms to 5 s, with jitter so nodes that lost
/// Redis together do not reconnect in lockstep.
fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(3) >= Duration::from_millis(400));
        for failures in [10, 100, u32::MAX] {
            assert!(backoff(failures) <= Duration::from_secs(5));
        }
    }
}
