//! The embedded broker: history and idempotency keys in this process, for a
//! single node with nothing else installed.
//!
//! One mutex guards all histories and keys. A publish holds it for a few
//! hundred nanoseconds (append, trim, hand the event to the dispatcher) and
//! never for the fan-out: a dispatcher task pushes events to subscriber
//! queues, so a publish is acknowledged as soon as it is stored. Events are
//! handed to the dispatcher under the lock, which keeps each topic's events
//! in sequence order all the way to the subscribers.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{
    history::{new_epoch, HistorySettings, IDEMPOTENCY_WINDOW},
    now_micros,
    resume::{plan, HistoryWindow, Plan},
    Broker, BrokerError, Message, Position, Receipt, Resume, SharedEvent, SubscriberQueue,
    SubscriptionGuard, Topic, TopicInfo, TopicRegistry,
};

/// The in-process broker.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    registry: Arc<TopicRegistry>,
    dispatch: mpsc::UnboundedSender<Arc<SharedEvent>>,
    settings: HistorySettings,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<Topic, TopicLog>,
    idempotency: HashMap<String, (Instant, Receipt)>,
}

#[derive(Debug)]
struct TopicLog {
    epoch: u32,
    last_seq: u64,
    events: VecDeque<Arc<SharedEvent>>,
    touched: Instant,
}

impl TopicLog {
    fn window(&self) -> HistoryWindow {
        let first = self
            .events
            .front()
            .map_or(self.last_seq + 1, |e| e.position.seq);
        HistoryWindow {
            epoch: self.epoch,
            first,
            first_prev: first - 1,
            last: self.last_seq,
        }
    }
}

impl MemoryBroker {
    /// Starts the broker: a dispatcher task feeding `registry`, and a task
    /// expiring old histories and keys. Both belong to the broker and stop
    /// when its last clone is dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(registry: Arc<TopicRegistry>, settings: HistorySettings) -> Self {
        let (dispatch, mut events) = mpsc::unbounded_channel::<Arc<SharedEvent>>();
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            registry,
            dispatch,
            settings,
        });

        let registry = Arc::clone(&inner.registry);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            while events.recv_many(&mut batch, 64).await > 0 {
                for event in batch.drain(..) {
                    registry.dispatch(&event);
                }
            }
        });

        let weak = Arc::downgrade(&inner);
        tokio::spawn(sweep(weak, settings.ttl.min(Duration::from_secs(5))));
        Self { inner }
    }

    /// The registry this broker feeds.
    pub fn registry(&self) -> &Arc<TopicRegistry> {
        &self.inner.registry
    }
}

/// Drops expired histories and idempotency keys every `period`, until the
/// broker is gone. Reads also treat an expired history as absent, so this
/// only bounds memory; it does not decide correctness.
async fn sweep(inner: Weak<Inner>, period: Duration) {
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let ttl = inner.settings.ttl;
        let mut state = inner.state.lock();
        state
            .topics
            .retain(|_, log| now.duration_since(log.touched) < ttl);
        state
            .idempotency
            .retain(|_, (at, _)| now.duration_since(*at) < IDEMPOTENCY_WINDOW);
    }
}

impl Inner {
    fn live_log<'a>(&self, state: &'a State, topic: &Topic, now: Instant) -> Option<&'a TopicLog> {
        state
            .topics
            .get(topic)
            .filter(|log| now.duration_since(log.touched) < self.settings.ttl)
    }

    fn window(&self, state: &State, topic: &Topic, now: Instant) -> HistoryWindow {
        self.live_log(state, topic, now)
            .map_or(HistoryWindow::NONE, TopicLog::window)
    }

    fn resume(&self, state: &State, topic: &Topic, from: Position, now: Instant) -> Resume {
        let Some(log) = self.live_log(state, topic, now) else {
            return match plan(from, HistoryWindow::NONE, None) {
                Plan::Replay { .. } => Resume::Replay(Vec::new()),
                Plan::Resync => Resume::Resync {
                    head: Position::EMPTY,
                },
            };
        };
        let window = log.window();
        // Sequence numbers are contiguous here, so a position is an index.
        let skip = (from.seq + 1).saturating_sub(window.first) as usize;
        let next = if from.epoch == window.epoch {
            log.events.get(skip)
        } else {
            log.events.front()
        };
        match plan(from, window, next.map(|e| e.prev)) {
            Plan::Resync => Resume::Resync {
                head: window.head(),
            },
            Plan::Replay { after } => Resume::Replay(
                log.events
                    .iter()
                    .skip((after + 1).saturating_sub(window.first) as usize)
                    .cloned()
                    .collect(),
            ),
        }
    }

    fn append(
        &self,
        state: &mut State,
        topic: &Topic,
        message: &Message,
        now: Instant,
    ) -> Position {
        let ttl = self.settings.ttl;
        let log = state
            .topics
            .entry(topic.clone())
            .or_insert_with(|| new_log(now));
        if now.duration_since(log.touched) >= ttl {
            *log = new_log(now);
        }
        log.last_seq += 1;
        log.touched = now;
        let position = Position::new(log.epoch, log.last_seq);
        let event = Arc::new(SharedEvent::encode(
            topic.clone(),
            position,
            message.event.as_ref(),
            &message.data,
            now_micros(),
        ));
        if log.events.len() >= self.settings.max_events {
            log.events.pop_front();
        }
        log.events.push_back(Arc::clone(&event));
        // The receiver lives as long as the broker; if it is gone the node
        // is shutting down and nobody is left to deliver to.
        let _ = self.dispatch.send(event);
        position
    }
}

fn new_log(now: Instant) -> TopicLog {
    TopicLog {
        epoch: new_epoch(),
        last_seq: 0,
        events: VecDeque::new(),
        touched: now,
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, messages: Vec<Message>) -> Result<Vec<Receipt>, BrokerError> {
        let inner = &self.inner;
        let now = Instant::now();
        let mut state = inner.state.lock();
        let mut receipts = Vec::with_capacity(messages.len());
        for message in &messages {
            if let Some(key) = &message.idempotency_key {
                if let Some((at, receipt)) = state.idempotency.get(key) {
                    if now.duration_since(*at) < IDEMPOTENCY_WINDOW {
                        receipts.push(receipt.clone());
                        continue;
                    }
                }
            }
            let positions = message
                .target
                .topics()
                .iter()
                .map(|topic| inner.append(&mut state, topic, message, now))
                .collect();
            let receipt = Receipt::for_target(&message.target, positions);
            if let Some(key) = &message.idempotency_key {
                state
                    .idempotency
                    .insert(key.clone(), (now, receipt.clone()));
            }
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    async fn heads(&self, topics: &[Topic]) -> Result<Vec<Position>, BrokerError> {
        let now = Instant::now();
        let state = self.inner.state.lock();
        Ok(topics
            .iter()
            .map(|t| self.inner.window(&state, t, now).head())
            .collect())
    }

    async fn subscribe(
        &self,
        topics: &[Topic],
        queue: &Arc<SubscriberQueue>,
    ) -> Result<SubscriptionGuard, BrokerError> {
        Ok(self.inner.registry.join(topics, queue))
    }

    async fn resume(&self, from: &[(Topic, Position)]) -> Result<Vec<Resume>, BrokerError> {
        let now = Instant::now();
        let state = self.inner.state.lock();
        Ok(from
            .iter()
            .map(|(topic, position)| self.inner.resume(&state, topic, *position, now))
            .collect())
    }

    async fn topic_info(&self, topic: &Topic) -> Result<TopicInfo, BrokerError> {
        let now = Instant::now();
        let subscribers = self.inner.registry.subscriber_count(topic) as u64;
        let state = self.inner.state.lock();
        let log = self.inner.live_log(&state, topic, now);
        let events = log.map(|log| &log.events);
        Ok(TopicInfo {
            subscribers,
            length: events.map_or(0, |e| e.len() as u64),
            first: events.and_then(|e| e.front()).map(|e| e.position),
            last: events.and_then(|e| e.back()).map(|e| e.position),
        })
    }

    fn is_up(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RegistryMetrics, Target};

    fn broker(max_events: usize, ttl: Duration) -> MemoryBroker {
        let registry = Arc::new(TopicRegistry::new(RegistryMetrics::unregistered()));
        MemoryBroker::start(registry, HistorySettings { max_events, ttl })
    }

    fn message(topic: &str, data: &str, key: Option<&str>) -> Message {
        Message {
            target: Target::One(Topic::new(topic).unwrap()),
            event: None,
            data: data.to_owned(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    fn position(receipt: &Receipt) -> Position {
        match receipt {
            Receipt::One(_, p) => *p,
            Receipt::Many(_) => panic!("one topic expected"),
        }
    }

    fn seqs(resume: Resume) -> Vec<u64> {
        match resume {
            Resume::Replay(events) => events.iter().map(|e| e.position.seq).collect(),
            Resume::Resync { .. } => panic!("unexpected resync"),
        }
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_missed_events() {
        let broker = broker(100, Duration::from_secs(60));
        let t = Topic::new("t").unwrap();
        let mut receipts = Vec::new();
        for i in 0..5 {
            receipts.extend(
                broker
                    .publish(vec![message("t", &i.to_string(), None)])
                    .await
                    .unwrap(),
            );
        }
        let from = position(&receipts[1]);
        let resumed = broker
            .resume(&[(t.clone(), from), (t.clone(), Position::EMPTY)])
            .await
            .unwrap();
        let [from_second, from_start] = <[Resume; 2]>::try_from(resumed).unwrap();
        assert_eq!(seqs(from_second), [3, 4, 5]);
        assert_eq!(seqs(from_start), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn trimmed_history_means_resync() {
        let broker = broker(3, Duration::from_secs(60));
        let t = Topic::new("t").unwrap();
        let first = broker.publish(vec![message("t", "a", None)]).await.unwrap();
        for _ in 0..5 {
            broker.publish(vec![message("t", "b", None)]).await.unwrap();
        }
        let resume = broker.resume(&[(t, position(&first[0]))]).await.unwrap();
        assert!(matches!(resume[..], [Resume::Resync { head }] if head.seq == 6));
    }

    #[tokio::test]
    async fn expired_history_starts_a_new_epoch() {
        let broker = broker(10, Duration::from_millis(30));
        let t = Topic::new("t").unwrap();
        let old = position(&broker.publish(vec![message("t", "a", None)]).await.unwrap()[0]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let new = position(&broker.publish(vec![message("t", "b", None)]).await.unwrap()[0]);
        assert_ne!(old.epoch, new.epoch);
        assert_eq!(new.seq, 1);
        assert!(matches!(
            broker.resume(&[(t, old)]).await.unwrap()[..],
            [Resume::Resync { .. }]
        ));
    }

    #[tokio::test]
    async fn idempotency_key_publishes_once() {
        let broker = broker(10, Duration::from_secs(60));
        let a = broker
            .publish(vec![message("t", "a", Some("k"))])
            .await
            .unwrap();
        let b = broker
            .publish(vec![message("other", "b", Some("k"))])
            .await
            .unwrap();
        assert_eq!(a, b);
        let info = broker.topic_info(&Topic::new("t").unwrap()).await.unwrap();
        assert_eq!(info.length, 1);
    }
}
