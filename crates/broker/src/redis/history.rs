//! Reading a topic's history out of Redis.
//!
//! The window (epoch, first and last sequence numbers) and the entries after
//! a position are read in one `MULTI` block, so trimming between the two
//! reads cannot open an unnoticed gap.

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

/// Adds the commands reading `topic`'s window and events after `after` to
/// `pipe`: three replies, decoded by [`decode`].
pub(crate) fn read_after(pipe: &mut redis::Pipeline, topic: &Topic, after: u64, max: usize) {
    let events = keys::events(topic);
    pipe.cmd("HMGET")
        .arg(keys::meta(topic))
        .arg("epoch")
        .arg("seq");
    pipe.cmd("XRANGE")
        .arg(&events)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    pipe.cmd("XRANGE")
        .arg(&events)
        .arg(format!("{}-0", after + 1))
        .arg("+")
        .arg("COUNT")
        .arg(max);
}

/// Adds the commands reading `topic`'s window (no events) to `pipe`: two
/// replies, decoded by [`decode_window`].
pub(crate) fn read_window(pipe: &mut redis::Pipeline, topic: &Topic) {
    pipe.cmd("HMGET")
        .arg(keys::meta(topic))
        .arg("epoch")
        .arg("seq");
    pipe.cmd("XRANGE")
        .arg(keys::events(topic))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
}

/// Decodes the window from the first two replies of [`read_after`] or
/// [`read_window`].
pub(crate) fn decode_window(meta: Value, first: Value) -> Result<HistoryWindow, BrokerError> {
    let (epoch, last): (Option<u32>, Option<u64>) =
        redis::from_redis_value(meta).map_err(protocol)?;
    let first: StreamRangeReply = redis::from_redis_value(first).map_err(protocol)?;
    let first_seq = first
        .ids
        .first()
        .map(|entry| seq_of(&entry.id))
        .transpose()?;
    Ok(match (epoch, last, first_seq) {
        (Some(epoch), Some(last), Some(first)) if epoch != 0 => {
            HistoryWindow { epoch, first, last }
        }
        // No epoch, or an epoch whose stream is gone: no usable history.
        _ => HistoryWindow::NONE,
    })
}

/// Decodes the three replies of [`read_after`].
pub(crate) fn decode(topic: &Topic, replies: [Value; 3]) -> Result<HistorySlice, BrokerError> {
    let [meta, first, range] = replies;
    let window = decode_window(meta, first)?;
    let range: StreamRangeReply = redis::from_redis_value(range).map_err(protocol)?;
    let mut events = Vec::with_capacity(range.ids.len());
    if window.epoch != 0 {
        for entry in range.ids {
            let seq = seq_of(&entry.id)?;
            let field = |name: &str| -> Result<String, BrokerError> {
                match entry.map.get(name) {
                    Some(value) => redis::from_redis_value(value.clone()).map_err(protocol),
                    None => Err(BrokerError::Protocol(format!(
                        "history entry without {name}"
                    ))),
                }
            };
            let event = field("e")?;
            let event = if event.is_empty() {
                None
            } else {
                Some(EventName::new(&event).map_err(|e| BrokerError::Protocol(e.to_string()))?)
            };
            let stored_at_us = field("t")?.parse().unwrap_or(0);
            events.push(Arc::new(SharedEvent::encode(
                topic.clone(),
                Position::new(window.epoch, seq),
                event.as_ref(),
                &field("d")?,
                stored_at_us,
            )));
        }
    }
    Ok(HistorySlice { window, events })
}

fn seq_of(id: &str) -> Result<u64, BrokerError> {
    id.split_once('-')
        .and_then(|(seq, _)| seq.parse().ok())
        .ok_or_else(|| BrokerError::Protocol(format!("unexpected stream id {id:?}")))
}

fn protocol(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(error.to_string())
}
