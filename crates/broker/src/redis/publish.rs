//! Storing and publishing a request's messages with `publish.lua`.
//!
//! **One primary** (standalone, Sentinel): the whole request is one
//! script, so it is stored whole or not at all, and a repeated
//! idempotency key is answered from the request's record inside the same
//! atomic step.
//!
//! **Redis Cluster**: no script may span two slots, so the request is cut
//! into one script per hash slot (each with the slot's topics, messages in
//! request order) and the scripts of one shard are pipelined into one round
//! trip. A shard that cannot be reached fails its scripts while others may
//! have stored theirs: the request is answered `503`, and its retry with
//! the same idempotency key stores exactly what is missing, because every
//! topic keeps its own record of the position it got under that key. The
//! request's record (what a repeat answers, whatever its body) lives on the
//! key's own slot: read before publishing, written after.

use std::collections::{BTreeMap, HashMap};

use super::{
    keys, script,
    slot::key_slot,
    topology::{Call, Topology},
    wire,
};
use crate::{
    history::{new_epoch, HistorySettings, IDEMPOTENCY_WINDOW},
    now_micros, BrokerError, Message, Position, Receipt, Target, Topic,
};

/// Stores and publishes `messages`; one receipt per message.
pub(crate) async fn publish(
    topology: &Topology,
    history: &HistorySettings,
    messages: &[Message],
) -> Result<Vec<Receipt>, BrokerError> {
    if topology.is_cluster() {
        publish_sharded(topology, history, messages).await
    } else {
        publish_whole(topology, history, messages).await
    }
}

async fn publish_whole(
    topology: &Topology,
    history: &HistorySettings,
    messages: &[Message],
) -> Result<Vec<Receipt>, BrokerError> {
    let mut script = ScriptArgs::default();
    for (index, message) in messages.iter().enumerate() {
        let topics: Vec<&Topic> = message.target.topics().iter().collect();
        script.message(index, message, &topics, true);
    }
    let call = script.into_call(0, topology, history);
    let reply = topology
        .execute_all(std::slice::from_ref(&call))
        .await?
        .pop()
        .ok_or_else(|| BrokerError::Protocol("no reply to the publish script".into()))?;
    let texts: Vec<String> = redis::from_redis_value(reply).map_err(protocol)?;
    if texts.len() != messages.len() {
        return Err(BrokerError::Protocol(
            "one receipt per message expected".into(),
        ));
    }
    texts
        .iter()
        .map(|text| {
            wire::parse_receipt(text.strip_prefix('=').unwrap_or(text))
                .ok_or_else(|| BrokerError::Protocol(format!("unexpected receipt {text:?}")))
        })
        .collect()
}

async fn publish_sharded(
    topology: &Topology,
    history: &HistorySettings,
    messages: &[Message],
) -> Result<Vec<Receipt>, BrokerError> {
    let mut receipts: Vec<Option<Receipt>> = messages.iter().map(|_| None).collect();
    // A key repeated inside one request answers as its first message, as
    // it would in a later request.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if let Some(key) = message.idempotency_key.as_deref() {
            match first_with_key.get(key) {
                Some(&first) => repeats.push((index, first)),
                None => {
                    first_with_key.insert(key, index);
                }
            }
        }
    }
    let repeated: Vec<usize> = repeats.iter().map(|(i, _)| *i).collect();

    // Requests already answered: their records.
    let keyed: Vec<usize> = first_with_key.values().copied().collect();
    let lookups: Vec<Call> = keyed
        .iter()
        .map(|&index| {
            let record = keys::request_idempotency(key_of(&messages[index]));
            let mut get = redis::cmd("GET");
            get.arg(&record);
            Call::command(key_slot(record.as_bytes()), get)
        })
        .collect();
    for (&index, value) in keyed.iter().zip(topology.execute_all(&lookups).await?) {
        if let Some(text) = redis::from_redis_value::<Option<String>>(value).map_err(protocol)? {
            receipts[index] = Some(
                wire::parse_receipt(&text)
                    .ok_or_else(|| BrokerError::Protocol(format!("unexpected record {text:?}")))?,
            );
        }
    }

    // One script per slot, with that slot's topics of every message still
    // to publish, in request order.
    let mut slots: BTreeMap<u16, ScriptArgs> = BTreeMap::new();
    for (index, message) in messages.iter().enumerate() {
        if receipts[index].is_some() || repeated.contains(&index) {
            continue;
        }
        let mut by_slot: BTreeMap<u16, Vec<&Topic>> = BTreeMap::new();
        for topic in message.target.topics() {
            by_slot
                .entry(key_slot(topic.as_str().as_bytes()))
                .or_default()
                .push(topic);
        }
        for (slot, topics) in by_slot {
            slots
                .entry(slot)
                .or_default()
                .message(index, message, &topics, false);
        }
    }
    let mut positions: HashMap<(usize, Topic), Position> = HashMap::new();
    let order: Vec<(u16, Vec<usize>)> = slots
        .iter()
        .map(|(slot, args)| (*slot, args.messages.clone()))
        .collect();
    let calls: Vec<Call> = slots
        .into_iter()
        .map(|(slot, args)| args.into_call(slot, topology, history))
        .collect();
    let mut failure = None;
    for ((_, indices), result) in order.iter().zip(topology.execute(&calls).await) {
        let value = match result {
            Ok(value) => value,
            Err(error) => {
                failure.get_or_insert(error);
                continue;
            }
        };
        let texts: Vec<String> = redis::from_redis_value(value).map_err(protocol)?;
        if texts.len() != indices.len() {
            return Err(BrokerError::Protocol(
                "one receipt per message expected".into(),
            ));
        }
        for (&index, text) in indices.iter().zip(&texts) {
            let lines = wire::parse_positions(text)
                .ok_or_else(|| BrokerError::Protocol(format!("unexpected receipt {text:?}")))?;
            for (topic, position) in lines {
                positions.insert((index, topic), position);
            }
        }
    }
    if let Some(error) = failure {
        // Some slots may have stored their events: a retry with the same
        // idempotency key completes the request without duplicates.
        return Err(error);
    }

    let mut records = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if receipts[index].is_some() || repeated.contains(&index) {
            continue;
        }
        let topics = message.target.topics();
        let found: Option<Vec<Position>> = topics
            .iter()
            .map(|t| positions.get(&(index, t.clone())).copied())
            .collect();
        let found = found.ok_or_else(|| BrokerError::Protocol("a topic got no position".into()))?;
        let receipt = Receipt::for_target(&message.target, found);
        if let Some(key) = message.idempotency_key.as_deref() {
            let record = keys::request_idempotency(key);
            let mut set = redis::cmd("SET");
            set.arg(&record)
                .arg(receipt_text(&receipt))
                .arg("PX")
                .arg(IDEMPOTENCY_WINDOW.as_millis() as u64);
            records.push(Call::command(key_slot(record.as_bytes()), set));
        }
        receipts[index] = Some(receipt);
    }
    // The events are stored; a lost request record only means a repeat
    // with a *different* body would publish (the per-topic records still
    // stop an identical repeat from storing anything twice).
    for result in topology.execute(&records).await {
        if let Err(error) = result {
            tracing::warn!(error = %crate::error_chain(&error), "idempotency record not stored");
        }
    }
    for (index, first) in repeats {
        receipts[index] = receipts[first].clone();
    }
    Ok(receipts
        .into_iter()
        .map(|r| r.expect("every message has a receipt"))
        .collect())
}

fn key_of(message: &Message) -> &str {
    message.idempotency_key.as_deref().unwrap_or_default()
}

/// A receipt as the publish script writes it.
fn receipt_text(receipt: &Receipt) -> String {
    let (shape, positions): (&str, Vec<(&Topic, &Position)>) = match receipt {
        Receipt::One(topic, position) => ("o", vec![(topic, position)]),
        Receipt::Many(list) => ("m", list.iter().map(|(t, p)| (t, p)).collect()),
    };
    let mut text = shape.to_owned();
    for (topic, position) in positions {
        text.push_str(&format!("\n{}:{}:{topic}", position.epoch, position.seq));
    }
    text
}

/// The keys and arguments of one publish script.
#[derive(Debug, Default)]
struct ScriptArgs {
    keys: Vec<String>,
    args: Vec<String>,
    /// The request index of each message in the script, in order.
    messages: Vec<usize>,
}

impl ScriptArgs {
    /// Adds `message` (the request's `index`th) with `topics` (all of its
    /// topics, or those of one slot); `with_record` lets the script check
    /// and write the request record.
    fn message(&mut self, index: usize, message: &Message, topics: &[&Topic], with_record: bool) {
        let key = message.idempotency_key.as_deref();
        let record = with_record && key.is_some();
        if record {
            self.keys.push(keys::request_idempotency(key_of(message)));
        }
        self.args.extend([
            if record { "1" } else { "0" }.to_owned(),
            key.unwrap_or_default().to_owned(),
            match message.target {
                Target::One(_) => "o",
                Target::Many(_) => "m",
            }
            .to_owned(),
            topics.len().to_string(),
            message
                .event
                .as_ref()
                .map_or_else(String::new, |e| e.as_str().to_owned()),
            message.data.clone(),
        ]);
        for topic in topics {
            self.keys.push(keys::events(topic));
            self.keys.push(keys::meta(topic));
            if key.is_some() {
                self.keys.push(keys::topic_idempotency(topic));
                self.keys.push(keys::topic_idempotency_expiry(topic));
            }
            self.args.extend([
                topic.as_str().to_owned(),
                keys::channel(topic),
                new_epoch().to_string(),
            ]);
        }
        self.messages.push(index);
    }

    fn into_call(self, slot: u16, topology: &Topology, history: &HistorySettings) -> Call {
        let mut args = Vec::with_capacity(self.args.len() + 6);
        args.extend([
            history.max_events.to_string(),
            (history.ttl.as_millis() as u64).to_string(),
            (IDEMPOTENCY_WINDOW.as_millis() as u64).to_string(),
            now_micros().to_string(),
            topology.publish_command().to_owned(),
            self.messages.len().to_string(),
        ]);
        args.extend(self.args);
        Call::write_script(slot, &script::PUBLISH, self.keys, args)
    }
}

fn protocol(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(error.to_string())
}
