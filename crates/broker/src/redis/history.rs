//! Reading topics' history out of Redis.
//!
//! A read is the read-only script `read.lua`: each topic's window (epoch,
//! first and last sequence numbers) and, when asked, the entries after a
//! position, in one atomic step, so trimming between the reads cannot open
//! an unnoticed gap. The script reads the topics of one hash slot (Cluster)
//! or of a whole chunk of topics (one primary); the topology pipelines the
//! scripts of a primary into one round trip.

use std::{collections::BTreeMap, sync::Arc};

use redis::{streams::StreamRangeReply, Value};

use super::{
    keys, script,
    slot::key_slot,
    topology::{Call, Topology},
};
use crate::{resume::HistoryWindow, BrokerError, EventName, Position, SharedEvent, Topic};

/// Topics per script on a single primary; bounds one script's run time.
const CHUNK: usize = 500;

/// What was read of one topic.
#[derive(Debug)]
pub(crate) struct TopicHistory {
    pub(crate) window: HistoryWindow,
    /// The retained events after the requested position, oldest first
    /// (empty for a window-only read, or when the topic has no history).
    pub(crate) events: Vec<Arc<SharedEvent>>,
    /// The stream's length, when asked.
    pub(crate) length: u64,
}

/// A read of several topics; add them, then [`HistoryRead::run`].
#[derive(Debug, Default)]
pub(crate) struct HistoryRead {
    topics: Vec<TopicRead>,
}

#[derive(Debug)]
struct TopicRead {
    topic: Topic,
    after: Option<u64>,
    max: usize,
    length: bool,
}

impl HistoryRead {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads `topic`'s window.
    pub(crate) fn window(&mut self, topic: &Topic) -> &mut Self {
        self.add(topic, None, 0, false)
    }

    /// Reads `topic`'s window and stream length.
    pub(crate) fn window_and_length(&mut self, topic: &Topic) -> &mut Self {
        self.add(topic, None, 0, true)
    }

    /// Reads `topic`'s window and up to `max` events after `after`.
    pub(crate) fn after(&mut self, topic: &Topic, after: u64, max: usize) -> &mut Self {
        self.add(topic, Some(after), max, false)
    }

    fn add(&mut self, topic: &Topic, after: Option<u64>, max: usize, length: bool) -> &mut Self {
        self.topics.push(TopicRead {
            topic: topic.clone(),
            after,
            max,
            length,
        });
        self
    }

    /// Runs the read: one result per added topic, in order.
    pub(crate) async fn run(&self, topology: &Topology) -> Result<Vec<TopicHistory>, BrokerError> {
        if self.topics.is_empty() {
            return Ok(Vec::new());
        }
        // Indices of the topics each script reads.
        let groups: Vec<(u16, Vec<usize>)> = if topology.is_cluster() {
            let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (index, read) in self.topics.iter().enumerate() {
                by_slot
                    .entry(key_slot(read.topic.as_str().as_bytes()))
                    .or_default()
                    .push(index);
            }
            by_slot.into_iter().collect()
        } else {
            let indices: Vec<usize> = (0..self.topics.len()).collect();
            indices.chunks(CHUNK).map(|c| (0, c.to_vec())).collect()
        };
        let calls: Vec<Call> = groups
            .iter()
            .map(|(slot, indices)| {
                let mut keys = Vec::with_capacity(indices.len() * 2);
                let mut args = Vec::with_capacity(indices.len() * 3);
                for &index in indices {
                    let read = &self.topics[index];
                    keys.push(keys::meta(&read.topic));
                    keys.push(keys::events(&read.topic));
                    args.push(
                        read.after
                            .map_or_else(|| "-1".to_owned(), |a| a.to_string()),
                    );
                    args.push(read.max.to_string());
                    args.push(if read.length { "1" } else { "0" }.to_owned());
                }
                Call::read_script(*slot, &script::READ, keys, args)
            })
            .collect();
        let replies = topology.execute_all(&calls).await?;
        let mut results: Vec<Option<TopicHistory>> = self.topics.iter().map(|_| None).collect();
        for ((_, indices), reply) in groups.iter().zip(replies) {
            let values: Vec<Value> = redis::from_redis_value(reply).map_err(protocol)?;
            let mut values = values.into_iter();
            for &index in indices {
                results[index] = Some(decode(&self.topics[index], &mut values)?);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every topic is read"))
            .collect())
    }
}

fn decode(
    read: &TopicRead,
    values: &mut impl Iterator<Item = Value>,
) -> Result<TopicHistory, BrokerError> {
    let mut next = || values.next().ok_or_else(short);
    let (epoch, last): (Option<u32>, Option<u64>) =
        redis::from_redis_value(next()?).map_err(protocol)?;
    let first: StreamRangeReply = redis::from_redis_value(next()?).map_err(protocol)?;
    let range: Option<StreamRangeReply> = match read.after {
        Some(_) => Some(redis::from_redis_value(next()?).map_err(protocol)?),
        None => None,
    };
    let length: u64 = if read.length {
        redis::from_redis_value(next()?).map_err(protocol)?
    } else {
        0
    };
    let first = first.ids.first().map(entry_seqs).transpose()?;
    let window = match (epoch, last, first) {
        (Some(epoch), Some(last), Some((first, first_prev))) if epoch != 0 => HistoryWindow {
            epoch,
            first,
            first_prev,
            last,
        },
        // No epoch, or an epoch whose stream is gone: no usable history.
        _ => HistoryWindow::NONE,
    };
    let events = match range {
        Some(range) if window.epoch != 0 => range
            .ids
            .iter()
            .map(|entry| decode_entry(&read.topic, window.epoch, entry))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(TopicHistory {
        window,
        events,
        length: if window.epoch == 0 { 0 } else { length },
    })
}

fn decode_entry(
    topic: &Topic,
    epoch: u32,
    entry: &redis::streams::StreamId,
) -> Result<Arc<SharedEvent>, BrokerError> {
    let field = |name: &str| -> Result<Option<String>, BrokerError> {
        entry
            .map
            .get(name)
            .map(|value| redis::from_redis_value(value.clone()).map_err(protocol))
            .transpose()
    };
    let required = |name: &str| {
        field(name)?.ok_or_else(|| BrokerError::Protocol(format!("history entry without {name}")))
    };
    let event = match required("e")?.as_str() {
        "" => None,
        name => Some(EventName::new(name).map_err(|e| BrokerError::Protocol(e.to_string()))?),
    };
    let (seq, prev) = entry_seqs(entry)?;
    Ok(Arc::new(
        SharedEvent::encode(
            topic.clone(),
            Position::new(epoch, seq),
            event.as_ref(),
            &required("d")?,
            required("t")?.parse().unwrap_or(0),
        )
        .after(prev),
    ))
}

/// An entry's sequence number and its predecessor's (the `p` field, written
/// only where sequence numbers skip).
fn entry_seqs(entry: &redis::streams::StreamId) -> Result<(u64, u64), BrokerError> {
    let seq = entry
        .id
        .split_once('-')
        .and_then(|(seq, _)| seq.parse::<u64>().ok())
        .filter(|seq| *seq > 0)
        .ok_or_else(|| BrokerError::Protocol(format!("unexpected stream id {:?}", entry.id)))?;
    let prev = match entry.map.get("p") {
        Some(value) => redis::from_redis_value::<String>(value.clone())
            .ok()
            .and_then(|p| p.parse().ok())
            .filter(|p| *p < seq)
            .ok_or_else(|| BrokerError::Protocol("unexpected predecessor field".into()))?,
        None => seq - 1,
    };
    Ok((seq, prev))
}

fn short() -> BrokerError {
    BrokerError::Protocol("short history reply".into())
}

fn protocol(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(error.to_string())
}
