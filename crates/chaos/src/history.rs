//! What a run did and saw, recorded as it happens: every publish attempt
//! and its outcome, every stream a client opened and every event it
//! received, every fault. The checker judges this record alone, so a
//! verdict can be re-derived from a saved history.
//!
//! Times are milliseconds since the run started.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::Serialize;

use crate::schedule::FaultKind;

/// One event the publishers tried to publish.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    /// Its data, unique in the run (`e<n>`).
    pub data: String,
    /// Its topic.
    pub topic: String,
    /// When its first request was sent.
    pub first_sent_ms: u64,
    /// Every request sent for it, in order.
    pub attempts: Vec<Attempt>,
    /// The cursor of the `202`, once one came.
    pub cursor: Option<String>,
    /// When the `202` arrived.
    pub accepted_ms: Option<u64>,
}

/// One request for a [`Publish`].
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The node it went to.
    pub node: usize,
    /// When it was sent.
    pub sent_ms: u64,
    /// What it got.
    pub outcome: Outcome,
}

/// What a publish request got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// `202` with this cursor.
    Accepted(String),
    /// Any other status, with whether it carried `Retry-After` and was
    /// problem+json.
    Refused {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` header came with it.
        retry_after: bool,
        /// Its body was `application/problem+json`.
        problem: bool,
    },
    /// No complete answer: a timeout or a broken connection. The event may
    /// or may not have been stored.
    NoAnswer(String),
}

/// One client: a browser-like subscriber that reconnects with its last id.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    /// Its number in the run.
    pub id: usize,
    /// The topics of its stream.
    pub topics: Vec<String>,
    /// Its connections, in order.
    pub segments: Vec<Segment>,
}

/// One connection of a client.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// The node it went to.
    pub node: usize,
    /// When the request was sent.
    pub requested_ms: u64,
    /// The `Last-Event-ID` it sent.
    pub resumed_from: Option<String>,
    /// The HTTP status, or why there was none.
    pub status: Result<u16, String>,
    /// When the stream's opening comment arrived (it is open: live events
    /// flow from here on).
    pub opened_ms: Option<u64>,
    /// The events it received, in order.
    pub received: Vec<Received>,
    /// Why it ended.
    pub end: String,
}

/// One event a client received.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// When it arrived.
    pub at_ms: u64,
    /// Its `id:`.
    pub id: String,
    /// `message`, or `herald.resync`.
    pub event: String,
    /// Its data.
    pub data: String,
}

/// A fault as injected.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// What broke.
    pub kind: FaultKind,
    /// When it was applied.
    pub started_ms: u64,
    /// When it was healed (the node restarted, the link restored).
    pub ended_ms: Option<u64>,
    /// What happened when it was applied or healed, if notable.
    pub note: String,
}

/// A process-level observation that breaks a promise by itself.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// When it was seen.
    pub at_ms: u64,
    /// What happened.
    pub what: String,
}

/// Everything recorded in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// Every event the publishers tried, in the order they were created.
    pub publishes: Vec<Publish>,
    /// Every client.
    pub clients: Vec<Client>,
    /// Every fault, in the order they were applied.
    pub faults: Vec<Fault>,
    /// Process-level promises broken.
    pub incidents: Vec<Incident>,
    /// RSS of each node (KiB) when the faults stopped and at the end.
    pub memory: Vec<(usize, u64, u64)>,
}

/// The record, shared by every task of a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    started: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    /// An empty record; its clock starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            history: Arc::default(),
        }
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `f` on the record.
    pub fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self
            .history
            .lock()
            .expect("no task panics holding the record"))
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }

    /// Notes something that breaks a promise by itself.
    pub fn incident(&self, what: impl Into<String>) {
        let at_ms = self.now();
        self.with(|h| {
            h.incidents.push(Incident {
                at_ms,
                what: what.into(),
            })
        });
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
