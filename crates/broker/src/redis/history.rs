//! Reading topics' history out of Redis.
//!
//! A read is one read-only script (`read.lua`): the current incarnation
//! first, then each topic's window (epoch, first and last sequence numbers)
//! and, when asked, the entries after a position. One atomic step means
//! trimming between the reads cannot open an unnoticed gap; a history from
//! another incarnation (see `keys::INCARNATION`) reads as no history at all.

use std::sync::Arc;

use redis::{streams::StreamRangeReply, Value};

use super::keys;
use crate::{resume::HistoryWindow, BrokerError, EventName, Position, SharedEvent, Topic};

/// A window and the retained events after a position.
#[derive(Debug)]
pub(crate) struct HistorySlice {
    pub(crate) window: HistoryWindow,
    pub(crate) events: Vec<Arc<SharedEvent>>,
}

/// Builds a history read; add topics with [`HistoryRead::window`] and
/// [`HistoryRead::after`], run it, and decode the replies in the same order
/// with [`Replies`].
#[derive(Debug)]
pub(crate) struct HistoryRead {
    keys: Vec<String>,
    args: Vec<String>,
}

static READ_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("read.lua")));

impl HistoryRead {
    /// A read; its first reply is the current incarnation.
    pub(crate) fn new() -> Self {
        Self {
            keys: vec![keys::INCARNATION.to_owned()],
            args: Vec::new(),
        }
    }

    /// Reads `topic`'s window; decode with [`Replies::window`].
    pub(crate) fn window(&mut self, topic: &Topic) -> &mut Self {
        self.add(topic, None, 0, false)
    }

    /// Reads `topic`'s window and stream length; decode with
    /// [`Replies::window`] then [`Replies::value`].
    pub(crate) fn window_and_length(&mut self, topic: &Topic) -> &mut Self {
        self.add(topic, None, 0, true)
    }

    /// Reads `topic`'s window and up to `max` events after `after`; decode
    /// with [`Replies::slice`].
    pub(crate) fn after(&mut self, topic: &Topic, after: u64, max: usize) -> &mut Self {
        self.add(topic, Some(after), max, false)
    }

    fn add(&mut self, topic: &Topic, after: Option<u64>, max: usize, length: bool) -> &mut Self {
        self.keys.push(keys::meta(topic));
        self.keys.push(keys::events(topic));
        self.args
            .push(after.map_or_else(|| "-1".to_owned(), |a| a.to_string()));
        self.args.push(max.to_string());
        self.args.push(if length { "1" } else { "0" }.to_owned());
        self
    }

    /// Runs the read.
    pub(crate) async fn run(&self, pool: &deadpool_redis::Pool) -> Result<Replies, BrokerError> {
        let mut invocation = READ_SCRIPT.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        let values: Vec<Value> = super::invoke(pool, &invocation).await?;
        let mut values = values.into_iter();
        let incarnation: Option<String> =
            redis::from_redis_value(values.next().ok_or_else(short)?).map_err(protocol)?;
        Ok(Replies {
            incarnation: incarnation.unwrap_or_default(),
            values,
        })
    }
}

/// The replies of a [`HistoryRead`], decoded in the order the read was
/// built.
#[derive(Debug)]
pub(crate) struct Replies {
    incarnation: String,
    values: std::vec::IntoIter<Value>,
}

impl Replies {
    /// The next reply, as is.
    pub(crate) fn value(&mut self) -> Result<Value, BrokerError> {
        self.values.next().ok_or_else(short)
    }

    /// The next topic's window.
    pub(crate) fn window(&mut self) -> Result<HistoryWindow, BrokerError> {
        let (epoch, last, incarnation): (Option<u32>, Option<u64>, Option<String>) =
            redis::from_redis_value(self.value()?).map_err(protocol)?;
        let first: StreamRangeReply = redis::from_redis_value(self.value()?).map_err(protocol)?;
        let first_seq = first
            .ids
            .first()
            .map(|entry| seq_of(&entry.id))
            .transpose()?;
        let current = incarnation.unwrap_or_default() == self.incarnation;
        Ok(match (epoch, last, first_seq) {
            (Some(epoch), Some(last), Some(first)) if epoch != 0 && current => {
                HistoryWindow { epoch, first, last }
            }
            // No epoch, an epoch whose stream is gone, or one from before a
            // failover: no usable history.
            _ => HistoryWindow::NONE,
        })
    }

    /// The next topic's window and events.
    pub(crate) fn slice(&mut self, topic: &Topic) -> Result<HistorySlice, BrokerError> {
        let window = self.window()?;
        let range: StreamRangeReply = redis::from_redis_value(self.value()?).map_err(protocol)?;
        if window.epoch == 0 {
            return Ok(HistorySlice {
                window,
                events: Vec::new(),
            });
        }
        let events = range
            .ids
            .into_iter()
            .map(|entry| decode_entry(topic, window.epoch, &entry))
            .collect::<Result<_, _>>()?;
        Ok(HistorySlice { window, events })
    }
}

fn decode_entry(
    topic: &Topic,
    epoch: u32,
    entry: &redis::streams::StreamId,
) -> Result<Arc<SharedEvent>, BrokerError> {
    let field = |name: &str| -> Result<String, BrokerError> {
        match entry.map.get(name) {
            Some(value) => redis::from_redis_value(value.clone()).map_err(protocol),
            None => Err(BrokerError::Protocol(format!(
                "history entry without {name}"
            ))),
        }
    };
    let event = match field("e")?.as_str() {
        "" => None,
        name => Some(EventName::new(name).map_err(|e| BrokerError::Protocol(e.to_string()))?),
    };
    Ok(Arc::new(SharedEvent::encode(
        topic.clone(),
        Position::new(epoch, seq_of(&entry.id)?),
        event.as_ref(),
        &field("d")?,
        field("t")?.parse().unwrap_or(0),
    )))
}

fn seq_of(id: &str) -> Result<u64, BrokerError> {
    id.split_once('-')
        .and_then(|(seq, _)| seq.parse().ok())
        .ok_or_else(|| BrokerError::Protocol(format!("unexpected stream id {id:?}")))
}

fn short() -> BrokerError {
    BrokerError::Protocol("short pipeline reply".into())
}

fn protocol(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(error.to_string())
}
