//! Events as they enter herald (messages) and as they leave it (shared,
//! encoded events).

use std::time::{SystemTime, UNIX_EPOCH};

use herald_sse::EventFrame;

use crate::{cursor, EventNameError, Position, Topic};

/// Longest event type name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 64;

/// A valid SSE event type: 1–64 bytes, no control characters, not in the
/// reserved `herald.` namespace. No control characters means no CR, LF or
/// NUL, so a name can never add a field or an event to a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`EventNameError`] saying what is wrong with it.
    pub fn new(name: &str) -> Result<Self, EventNameError> {
        if name.is_empty() || name.len() > MAX_EVENT_NAME_LEN {
            return Err(EventNameError::Length { len: name.len() });
        }
        if name.chars().any(|c| c.is_ascii_control()) {
            return Err(EventNameError::ControlChar);
        }
        if name.starts_with(herald_sse::control::RESERVED_PREFIX) {
            return Err(EventNameError::Reserved);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated publish request for one or more topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where it goes, and the shape of the answer.
    pub target: Target,
    /// The SSE event type; `None` means `message`.
    pub event: Option<EventName>,
    /// The event data: the string, or the compact JSON encoding.
    pub data: String,
    /// A key that makes a repeat of this publish a no-op.
    pub idempotency_key: Option<String>,
}

/// The topics of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `"topic"`: one topic, answered with one cursor.
    One(Topic),
    /// `"topics"`: one event per distinct topic, answered with a cursor map.
    Many(Vec<Topic>),
}

impl Target {
    /// The topics, in request order.
    pub fn topics(&self) -> &[Topic] {
        match self {
            Target::One(topic) => std::slice::from_ref(topic),
            Target::Many(topics) => topics,
        }
    }
}

/// Where a published message was stored, in the shape of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// The position of a one-topic publish.
    One(Topic, Position),
    /// The position on each topic of a multi-topic publish, in request order.
    Many(Vec<(Topic, Position)>),
}

impl Receipt {
    /// Builds the receipt matching `target` from the position of each of its
    /// topics, in the same order.
    pub fn for_target(target: &Target, positions: Vec<Position>) -> Self {
        match target {
            Target::One(topic) => Receipt::One(topic.clone(), positions[0]),
            Target::Many(topics) => Receipt::Many(topics.iter().cloned().zip(positions).collect()),
        }
    }
}

/// A stored event, encoded once and shared by every local subscriber.
#[derive(Debug)]
pub struct SharedEvent {
    /// Its topic.
    pub topic: Topic,
    /// Its place in the topic's history.
    pub position: Position,
    /// The sequence number of the event before it in the same history
    /// (`position.seq - 1` unless sequence numbers skip there, as they do
    /// after a Redis primary changed; 0 for a history's first event). A
    /// stream at exactly `prev` has missed nothing before this event.
    pub prev: u64,
    /// The SSE frame, with the one-topic cursor as its `id:`.
    pub frame: EventFrame,
    /// When it was stored, in microseconds since the Unix epoch; the start of
    /// the delivery-lag measurement.
    pub stored_at_us: u64,
    /// What it is: an event to write, or a reset of the topic's position.
    pub kind: EventKind,
}

/// What a [`SharedEvent`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An event to write to subscribers.
    Message,
    /// No event: the topic's history was lost while this node could not
    /// follow it, so streams must resync the topic and continue from
    /// `position`.
    Reset,
}

impl SharedEvent {
    /// Encodes an event stored at `position` of `topic`.
    pub fn encode(
        topic: Topic,
        position: Position,
        event: Option<&EventName>,
        data: &str,
        stored_at_us: u64,
    ) -> Self {
        let id = cursor::encode_one(&topic, position);
        let frame = herald_sse::encode(Some(&id), event.map(EventName::as_str), data)
            .expect("cursors are base64url and event names hold no control characters");
        Self {
            topic,
            position,
            prev: position.seq.saturating_sub(1),
            frame,
            stored_at_us,
            kind: EventKind::Message,
        }
    }

    /// The same event, following `prev` instead of `position.seq - 1`.
    pub fn after(mut self, prev: u64) -> Self {
        self.prev = prev;
        self
    }

    /// A reset of `topic`: its history was lost; streams resync it and
    /// continue from `position`.
    pub fn reset(topic: Topic, position: Position) -> Self {
        Self {
            topic,
            position,
            prev: position.seq,
            frame: EventFrame::default(),
            stored_at_us: now_micros(),
            kind: EventKind::Reset,
        }
    }
}

/// The wall clock in microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
