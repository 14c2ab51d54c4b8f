//! Reading topics' history out of Redis.
//!
//! A read is one `MULTI` block: the current incarnation first, then each
//! topic's window (epoch, first and last sequence numbers) and, when asked,
//! the entries after a position. One block means trimming between the reads
//! cannot open an unnoticed gap, and a history from another incarnation (see
//! `keys::INCARNATION`) reads as no history at all.

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
    pipe: redis::Pipeline,
}

impl HistoryRead {
    /// An atomic read starting with the current incarnation.
    pub(crate) fn new() -> Self {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("GET").arg(keys::INCARNATION);
        Self { pipe }
    }

    /// Reads `topic`'s window; decode with [`Replies::window`].
    pub(crate) fn window(&mut self, topic: &Topic) -> &mut Self {
        self.pipe
            .cmd("HMGET")
            .arg(keys::meta(topic))
            .arg("epoch")
            .arg("seq")
            .arg("inc");
        self.pipe
            .cmd("XRANGE")
            .arg(keys::events(topic))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        self
    }

    /// Reads `topic`'s window and up to `max` events after `after`; decode
    /// with [`Replies::slice`].
    pub(crate) fn after(&mut self, topic: &Topic, after: u64, max: usize) -> &mut Self {
        self.window(topic);
        let from = format!("{}-0", after + 1);
        self.pipe
            .cmd("XRANGE")
            .arg(keys::events(topic))
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(max);
        self
    }

    /// Any further command, decoded with [`Replies::value`].
    pub(crate) fn command(&mut self, name: &str, key: &str) -> &mut Self {
        self.pipe.cmd(name).arg(key);
        self
    }

    /// Runs the read.
    pub(crate) async fn run(&self, pool: &deadpool_redis::Pool) -> Result<Replies, BrokerError> {
        let mut values: std::vec::IntoIter<Value> = super::query::<Vec<Value>>(pool, &self.pipe)
            .await?
            .into_iter();
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
