//! The per-node topic registry: which local connections want which topics.
//!
//! Brokers hand every event of a topic to [`TopicRegistry::dispatch`], which
//! pushes the one shared event into each local subscriber's queue. The
//! registry also reports when a topic gains its first local subscriber or
//! loses its last, which is when a clustered broker subscribes to or leaves
//! the topic's channel: one broker subscription per topic per node, however
//! many local clients share it.

use std::{collections::HashMap, sync::Arc};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntGauge};
use slab::Slab;
use tokio::sync::mpsc;

use crate::{Pushed, SharedEvent, SubscriberQueue, Topic};

/// Counters the registry keeps up to date; owned by the node's metrics.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    /// Topics with at least one local subscriber.
    pub topics: IntGauge,
    /// Events dropped because a subscriber's queue overflowed.
    pub dropped_slow_consumer: IntCounter,
}

impl RegistryMetrics {
    /// Metrics not registered anywhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self {
            topics: IntGauge::new("topics", "topics").expect("valid metric name"),
            dropped_slow_consumer: IntCounter::new("dropped", "dropped")
                .expect("valid metric name"),
        }
    }
}

/// The local subscribers of every topic on this node.
#[derive(Debug)]
pub struct TopicRegistry {
    // Read-mostly: dispatch and joins of existing topics only read the map;
    // it is written when a topic gains its first or loses its last
    // subscriber.
    topics: RwLock<HashMap<Topic, Arc<TopicEntry>>>,
    metrics: RegistryMetrics,
    interest: Option<mpsc::UnboundedSender<Topic>>,
}

#[derive(Debug, Default)]
struct TopicEntry {
    // Held while an event is pushed to every subscriber of the topic, so a
    // join either happens before a dispatch (and gets the event) or after it
    // (and finds it in history).
    subscribers: Mutex<Subscribers>,
}

#[derive(Debug, Default)]
struct Subscribers {
    queues: Slab<Arc<SubscriberQueue>>,
    // Set when the last subscriber left and the entry is being removed from
    // the map; a join that finds a retired entry installs a fresh one.
    retired: bool,
}

impl TopicRegistry {
    /// An empty registry.
    pub fn new(metrics: RegistryMetrics) -> Self {
        Self {
            topics: RwLock::default(),
            metrics,
            interest: None,
        }
    }

    /// An empty registry that sends a topic to `interest` whenever it gains
    /// its first local subscriber or loses its last. The receiver should
    /// reconcile with [`TopicRegistry::is_subscribed`] rather than trust the
    /// order of messages, which makes quick join/leave sequences harmless.
    pub fn with_interest(metrics: RegistryMetrics, interest: mpsc::UnboundedSender<Topic>) -> Self {
        Self {
            topics: RwLock::default(),
            metrics,
            interest: Some(interest),
        }
    }

    /// Registers `queue` for the live events of `topics`. The queue stays
    /// registered until the returned guard is dropped.
    pub fn join(
        self: &Arc<Self>,
        topics: &[Topic],
        queue: &Arc<SubscriberQueue>,
    ) -> SubscriptionGuard {
        let keys = topics
            .iter()
            .map(|topic| (topic.clone(), self.join_one(topic, queue)))
            .collect();
        SubscriptionGuard {
            registry: Arc::clone(self),
            keys,
        }
    }

    fn join_one(&self, topic: &Topic, queue: &Arc<SubscriberQueue>) -> usize {
        let existing = self.topics.read().get(topic).cloned();
        if let Some(entry) = existing {
            let mut subscribers = entry.subscribers.lock();
            if !subscribers.retired {
                return subscribers.queues.insert(Arc::clone(queue));
            }
        }
        let mut topics = self.topics.write();
        let entry = topics.entry(topic.clone()).or_default();
        if entry.subscribers.lock().retired {
            *entry = Arc::default();
        }
        let entry = Arc::clone(entry);
        let mut subscribers = entry.subscribers.lock();
        let first = subscribers.queues.is_empty();
        let key = subscribers.queues.insert(Arc::clone(queue));
        if first {
            self.metrics.topics.set(topics.len() as i64);
            self.notify(topic);
        }
        key
    }

    fn leave_one(&self, topic: &Topic, key: usize) {
        let Some(entry) = self.topics.read().get(topic).cloned() else {
            return;
        };
        let mut subscribers = entry.subscribers.lock();
        subscribers.queues.try_remove(key);
        if !subscribers.queues.is_empty() {
            return;
        }
        subscribers.retired = true;
        drop(subscribers);
        let mut topics = self.topics.write();
        if topics
            .get(topic)
            .is_some_and(|current| Arc::ptr_eq(current, &entry))
        {
            topics.remove(topic);
            self.metrics.topics.set(topics.len() as i64);
            self.notify(topic);
        }
    }

    fn notify(&self, topic: &Topic) {
        if let Some(interest) = &self.interest {
            // A closed receiver means the broker is shutting down; nothing
            // is left to subscribe.
            let _ = interest.send(topic.clone());
        }
    }

    /// Pushes `event` to every local subscriber of its topic. Returns how
    /// many queues received it.
    pub fn dispatch(&self, event: &Arc<SharedEvent>) -> usize {
        let Some(entry) = self.topics.read().get(&event.topic).cloned() else {
            return 0;
        };
        let subscribers = entry.subscribers.lock();
        let mut queued = 0;
        let mut dropped = 0;
        for (_, queue) in subscribers.queues.iter() {
            match queue.push(event) {
                Pushed::Queued => queued += 1,
                Pushed::Overflowed(n) => dropped += n,
                Pushed::Closed => {}
            }
        }
        if dropped > 0 {
            self.metrics.dropped_slow_consumer.inc_by(dropped as u64);
        }
        queued
    }

    /// Whether any local connection subscribes to `topic`.
    pub fn is_subscribed(&self, topic: &Topic) -> bool {
        self.topics.read().contains_key(topic)
    }

    /// Local subscribers of `topic`.
    pub fn subscriber_count(&self, topic: &Topic) -> usize {
        let entry = self.topics.read().get(topic).cloned();
        entry.map_or(0, |entry| entry.subscribers.lock().queues.len())
    }

    /// Every topic with local subscribers (for resubscribing after a broker
    /// reconnect).
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.read().keys().cloned().collect()
    }

    /// Local subscriber counts of every topic, for presence reporting.
    pub fn counts(&self) -> Vec<(Topic, usize)> {
        let entries: Vec<_> = self
            .topics
            .read()
            .iter()
            .map(|(t, e)| (t.clone(), Arc::clone(e)))
            .collect();
        entries
            .into_iter()
            .map(|(t, e)| (t, e.subscribers.lock().queues.len()))
            .collect()
    }
}

/// A connection's registration on its topics; dropping it leaves them.
#[derive(Debug)]
pub struct SubscriptionGuard {
    registry: Arc<TopicRegistry>,
    keys: Vec<(Topic, usize)>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        for (topic, key) in self.keys.drain(..) {
            self.registry.leave_one(&topic, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::Position;

    fn registry() -> (Arc<TopicRegistry>, mpsc::UnboundedReceiver<Topic>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(TopicRegistry::with_interest(
                RegistryMetrics::unregistered(),
                tx,
            )),
            rx,
        )
    }

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    fn event(topic: &Topic) -> Arc<SharedEvent> {
        Arc::new(SharedEvent::encode(
            topic.clone(),
            Position::new(1, 1),
            None,
            "x",
            0,
        ))
    }

    #[test]
    fn interest_is_reported_on_first_join_and_last_leave_only() {
        let (registry, mut interest) = registry();
        let t = topic("t");
        let a = registry.join(std::slice::from_ref(&t), &Arc::new(SubscriberQueue::new(4)));
        let b = registry.join(std::slice::from_ref(&t), &Arc::new(SubscriberQueue::new(4)));
        assert_eq!(interest.try_recv().ok(), Some(t.clone()));
        assert!(interest.try_recv().is_err());
        drop(a);
        assert!(interest.try_recv().is_err());
        assert!(registry.is_subscribed(&t));
        drop(b);
        assert_eq!(interest.try_recv().ok(), Some(t.clone()));
        assert!(!registry.is_subscribed(&t));
    }

    #[test]
    fn dispatch_reaches_every_subscriber_of_the_topic_only() {
        let (registry, _interest) = registry();
        let (t, other) = (topic("t"), topic("other"));
        let queues: Vec<_> = (0..3).map(|_| Arc::new(SubscriberQueue::new(4))).collect();
        let _guards: Vec<_> = queues
            .iter()
            .map(|q| registry.join(std::slice::from_ref(&t), q))
            .collect();
        let bystander = Arc::new(SubscriberQueue::new(4));
        let _g = registry.join(&[other], &bystander);
        assert_eq!(registry.dispatch(&event(&t)), 3);
        assert_eq!(registry.subscriber_count(&t), 3);
    }

    #[test]
    fn concurrent_joins_and_leaves_leave_no_stale_topic() {
        let (registry, _interest) = registry();
        let topics: Vec<_> = (0..4).map(|i| topic(&format!("t{i}"))).collect();
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for round in 0..2000 {
                        let queue = Arc::new(SubscriberQueue::new(4));
                        let guard = registry.join(&topics[round % 4..=round % 4], &queue);
                        registry.dispatch(&event(&topics[(round + 1) % 4]));
                        drop(guard);
                    }
                });
            }
        });
        assert!(registry.topics().is_empty());
        // A join after all the churn still receives events.
        let queue = Arc::new(SubscriberQueue::new(4));
        let _guard = registry.join(&topics[..1], &queue);
        assert_eq!(registry.dispatch(&event(&topics[0])), 1);
    }
}
