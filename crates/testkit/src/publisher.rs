//! A backend that keeps publishing through faults: one event at a time,
//! retried with the same idempotency key until it is accepted, every answer
//! recorded.
//!
//! Fault tests compare what subscribers received with this record: an
//! event that got `202` is owed to every subscriber; one that never did is
//! not (it may still arrive, if Redis stored it but the answer was lost).
//! Retrying with the same idempotency key is what a careful backend does,
//! so a lost answer is not published twice while Redis keeps its keys.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{Api, Reply};

/// Pause between two attempts at one event after a refusal. Shorter than
/// the `Retry-After` herald sends, on purpose: the test wants to see the
/// first attempt Redis accepts, not to be polite.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One event the publisher tried to publish.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Its data, `"<topic>#<n>"`, unique in the run.
    pub data: String,
    /// The cursor of the `202`, once one came.
    pub id: Option<String>,
    /// When the `202` arrived.
    pub accepted_at: Option<Instant>,
    /// Requests sent for it.
    pub tries: u32,
}

/// A non-`202` answer.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The event it was for.
    pub data: String,
    /// The whole answer.
    pub reply: Reply,
}

/// Everything the publisher did.
#[derive(Debug, Clone, Default)]
pub struct PublishLog {
    /// Per topic, the events in the order they were published.
    pub topics: BTreeMap<String, Vec<Attempt>>,
    /// Every refusal, in order.
    pub refusals: Vec<Refusal>,
}

impl PublishLog {
    /// Events that got `202`, all topics.
    pub fn accepted(&self) -> usize {
        self.topics
            .values()
            .flatten()
            .filter(|a| a.id.is_some())
            .count()
    }

    /// Events accepted after `instant`, all topics.
    pub fn accepted_after(&self, instant: Instant) -> usize {
        self.topics
            .values()
            .flatten()
            .filter(|a| a.accepted_at.is_some_and(|at| at > instant))
            .count()
    }

    /// The accepted events of `topic`, in publish order.
    pub fn accepted_on(&self, topic: &str) -> Vec<&Attempt> {
        self.topics
            .get(topic)
            .map(|attempts| attempts.iter().filter(|a| a.id.is_some()).collect())
            .unwrap_or_default()
    }

    /// Whether `data` names an event the publisher sent at least once.
    pub fn was_sent(&self, data: &str) -> bool {
        self.topics.values().flatten().any(|a| a.data == data)
    }
}

/// A publisher running in the background until [`PublisherLoop::stop`].
#[derive(Debug)]
pub struct PublisherLoop {
    log: Arc<Mutex<PublishLog>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PublisherLoop {
    /// Starts publishing to `api`, round-robin over `topics`, one event
    /// every `pace` (or slower, while refusals are retried). Each event
    /// carries an idempotency key unique to `run` and the event.
    pub fn start(api: Api, run: &str, topics: &[&str], pace: Duration) -> Self {
        let log = Arc::new(Mutex::new(PublishLog {
            topics: topics
                .iter()
                .map(|t| ((*t).to_owned(), Vec::new()))
                .collect(),
            refusals: Vec::new(),
        }));
        let (stop, stopped) = watch::channel(false);
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let task = tokio::spawn(publish(
            api,
            run.to_owned(),
            topics,
            pace,
            Arc::clone(&log),
            stopped,
        ));
        Self { log, stop, task }
    }

    /// A copy of the record so far.
    pub fn snapshot(&self) -> PublishLog {
        self.log
            .lock()
            .expect("the publisher does not panic")
            .clone()
    }

    /// Stops after the event in flight (which may stay unaccepted) and
    /// returns the record.
    ///
    /// # Panics
    ///
    /// When the publisher task panicked (the node could not be reached).
    pub async fn stop(self) -> PublishLog {
        let _ = self.stop.send(true);
        self.task.await.expect("the publisher task panicked");
        let log = self.log.lock().expect("the publisher does not panic");
        log.clone()
    }
}

async fn publish(
    api: Api,
    run: String,
    topics: Vec<String>,
    pace: Duration,
    log: Arc<Mutex<PublishLog>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        let topic = &topics[(n % topics.len() as u64) as usize];
        let data = format!("{topic}#{}", n / topics.len() as u64);
        let body = json!({
            "topic": topic,
            "data": data,
            "idempotency_key": format!("{run}:{data}"),
        });
        let index = {
            let mut log = log.lock().expect("not poisoned");
            let attempts = log.topics.get_mut(topic).expect("topics are known");
            attempts.push(Attempt {
                data: data.clone(),
                id: None,
                accepted_at: None,
                tries: 0,
            });
            attempts.len() - 1
        };
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        loop {
            let reply = api.publish(&body).await;
            if record(&log, topic, index, reply) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// Records one answer for the event at `index` of `topic`; true when it was
/// accepted.
fn record(log: &Mutex<PublishLog>, topic: &str, index: usize, reply: Reply) -> bool {
    let mut log = log.lock().expect("not poisoned");
    let attempt = &mut log.topics.get_mut(topic).expect("topics are known")[index];
    attempt.tries += 1;
    if reply.status == StatusCode::ACCEPTED {
        attempt.id = reply.body["id"].as_str().map(str::to_owned);
        attempt.accepted_at = Some(Instant::now());
        return true;
    }
    let data = attempt.data.clone();
    log.refusals.push(Refusal { data, reply });
    false
}
