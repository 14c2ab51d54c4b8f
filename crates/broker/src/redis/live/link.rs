//! A live link: the node's pub/sub connection to one primary, subscribed to
//! the live channels of the topics the coordinator placed on it.
//!
//! **No gap on join.** A stream waits until its topics are confirmed here
//! (`SUBSCRIBE` answered) before it reads history. Redis delivers every
//! message published after the confirmation, and the publish script stores
//! before it publishes, so each event is in the history the stream reads,
//! or arrives live, or both (and the stream drops the duplicate).
//!
//! **No gap on reconnect or move.** The link remembers the last position it
//! dispatched per topic. When a topic is subscribed again (after the
//! connection was lost, or when the topic moved here from another
//! primary), the link reads the topic's history after that position as
//! soon as Redis confirms the subscription, and dispatches what was missed
//! before any live message that follows the confirmation. Live messages
//! already covered are dropped here and again by each stream. When history
//! was trimmed or lost meanwhile, streams see the jump and resync.
//!
//! **Unsolicited unsubscriptions.** Redis Cluster ends sharded
//! subscriptions by itself when their slot moves to another shard or the
//! primary is demoted. A `sunsubscribe` the link did not ask for (or a
//! `MOVED` answer to `SSUBSCRIBE`) hands the topic back to the coordinator
//! with its position, to be subscribed on the slot's current owner.
//!
//! The link carries no commands besides (un)subscribing and `PING`: a
//! reply can never be confused with a push Redis sends unasked.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, WriteHalf},
    sync::mpsc,
    time::Instant,
};

use super::{
    frames::{self, Frame},
    socket::{self, Socket},
    LiveState,
};
use crate::{
    error_chain,
    redis::{
        history::HistoryRead,
        keys,
        slot::key_slot,
        topology::{backoff, LinkState, Primary, Topology, COMMAND_TIMEOUT},
        wire,
    },
    EventName, Position, SharedEvent, Topic, TopicRegistry,
};

/// Channels per (un)subscribe command, and topics per catch-up read.
const CHUNK: usize = 500;
/// How often the connection is checked with `PING`, and how long the
/// answer may take.
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the coordinator asks of a link.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribe to the topic; `Some` position when it was live elsewhere
    /// (catch up from there), `None` for a topic new to this node.
    Join(Topic, Option<Position>),
    /// Unsubscribe; the link answers with [`Report::Homeless`].
    Release(Topic),
    /// Stop, after handing back every topic still held.
    Stop,
}

/// What a link tells the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    /// The link no longer holds `topic`: released on request, or dropped by
    /// Redis (`orphaned`), in which case it belongs elsewhere now.
    Homeless {
        topic: Topic,
        last: Option<Position>,
        link: u64,
        orphaned: bool,
    },
}

/// A topic held by the link.
#[derive(Debug)]
pub(super) struct Held {
    topic: Topic,
    last: Option<Position>,
    /// Redis confirmed the subscription on the current connection.
    subscribed: bool,
    /// Its history must be read after `last` once confirmed.
    catch_up: bool,
}

/// A command sent on the connection and not answered yet.
#[derive(Debug)]
enum Pending {
    Subscribe {
        topics: Vec<Topic>,
        remaining: usize,
        initial: bool,
    },
    Unsubscribe {
        topics: Vec<Topic>,
        remaining: usize,
    },
    Ping,
}

/// Which way a subscription command goes.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// `initial` when sent as the connection starts (the link is up once
    /// those are answered).
    Subscribe {
        initial: bool,
    },
    Unsubscribe,
}

enum End {
    Stop,
    Failed(String),
}

/// A link's task state; see the module docs.
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) primary: Arc<Primary>,
    pub(crate) topology: Arc<Topology>,
    pub(crate) registry: Arc<TopicRegistry>,
    pub(crate) state: Arc<LiveState>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    /// Sharded pub/sub (Cluster) rather than classic channels.
    pub(crate) sharded: bool,
    /// Stay connected without topics (the one primary of standalone and
    /// Sentinel modes, whose link is part of the node's readiness).
    pub(crate) keep_alive: bool,
    pub(crate) max_events: usize,
    pub(crate) held: HashMap<Topic, Held>,
}

impl Link {
    /// Connects, serves and reconnects until stopped.
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        let mut was_up = false;
        'outer: loop {
            if !self.keep_alive && self.held.is_empty() {
                match self.commands.recv().await {
                    None | Some(Command::Stop) => break,
                    Some(command) => {
                        self.apply_offline(command);
                        continue;
                    }
                }
            }
            self.set_state(LinkState::Down);
            let primary = Arc::clone(&self.primary);
            let connect =
                tokio::time::timeout(COMMAND_TIMEOUT, socket::connect(primary.connection_info()));
            tokio::pin!(connect);
            let connected = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    command = self.commands.recv() => match command {
                        None | Some(Command::Stop) => break 'outer,
                        Some(command) => self.apply_offline(command),
                    },
                }
            };
            let reason = match connected {
                Ok(Ok(socket)) => match self.session(socket, &mut was_up, &mut failures).await {
                    End::Stop => break,
                    End::Failed(reason) => reason,
                },
                Ok(Err(error)) => error.to_string(),
                Err(_) => "connecting timed out".to_owned(),
            };
            tracing::warn!(primary = %self.primary.addr, %reason, "redis subscriber connection lost; reconnecting");
            self.disconnected();
            let pause = tokio::time::sleep(backoff(failures));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = self.commands.recv() => match command {
                        None | Some(Command::Stop) => break 'outer,
                        Some(command) => self.apply_offline(command),
                    },
                }
            }
            failures = failures.saturating_add(1);
        }
        for (_, held) in std::mem::take(&mut self.held) {
            self.hand_back(held, false);
        }
    }

    fn set_state(&self, state: LinkState) {
        if self.primary.set_link(self.id, state) {
            self.topology.publish_health();
        }
    }

    /// The connection is gone: nothing is subscribed any more. The server
    /// may have restarted or gone away, so the command connection to it is
    /// replaced too, and the primary counts as down until a probe succeeds.
    fn disconnected(&mut self) {
        self.primary.reset();
        self.topology.nudge();
        self.set_state(LinkState::Down);
        self.topology.publish_health();
        for held in self.held.values_mut() {
            held.subscribed = false;
            if held.last.is_some() {
                held.catch_up = true;
            }
            self.state.deactivate(&held.topic);
        }
    }

    fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Join(topic, last) => {
                self.held.insert(
                    topic.clone(),
                    Held {
                        topic,
                        catch_up: last.is_some(),
                        last,
                        subscribed: false,
                    },
                );
            }
            Command::Release(topic) => {
                if let Some(held) = self.held.remove(&topic) {
                    self.hand_back(held, false);
                }
            }
            Command::Stop => {}
        }
    }

    fn hand_back(&self, held: Held, orphaned: bool) {
        self.state.deactivate(&held.topic);
        // The coordinator outlives its links; if it is gone the node is
        // stopping.
        let _ = self.reports.send(Report::Homeless {
            topic: held.topic,
            last: held.last,
            link: self.id,
            orphaned,
        });
    }

    async fn session(&mut self, socket: Socket, was_up: &mut bool, failures: &mut u32) -> End {
        let (mut reader, mut writer) = tokio::io::split(socket);
        let mut pending = VecDeque::new();
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let topics: Vec<Topic> = self.held.keys().cloned().collect();
        if let Err(end) = self
            .subscribe(&topics, &mut writer, &mut pending, true)
            .await
        {
            return end;
        }
        let mut up = false;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut ping_sent: Option<Instant> = None;
        let mut frames = Vec::new();
        loop {
            if !up
                && !pending
                    .iter()
                    .any(|p| matches!(p, Pending::Subscribe { initial: true, .. }))
            {
                up = true;
                self.set_state(LinkState::Up);
                if *was_up {
                    self.topology.count_reconnect();
                    tracing::info!(primary = %self.primary.addr, "redis subscriber reconnected");
                }
                *was_up = true;
                *failures = 0;
            }
            tokio::select! {
                read = reader.read_buf(&mut buffer) => {
                    match read {
                        Ok(0) => return End::Failed("the connection closed".into()),
                        Ok(_) => {}
                        Err(error) => return End::Failed(error.to_string()),
                    }
                    loop {
                        match frames::next(&mut buffer) {
                            Ok(Some(frame)) => frames.push(frame),
                            Ok(None) => break,
                            Err(error) => return End::Failed(error.to_string()),
                        }
                    }
                    if let Err(end) = self.on_frames(&mut frames, &mut pending, &mut ping_sent).await {
                        return end;
                    }
                    if buffer.capacity() > 1 << 20 && buffer.is_empty() {
                        buffer = BytesMut::with_capacity(64 * 1024);
                    }
                }
                command = self.commands.recv() => {
                    let mut commands = Vec::new();
                    match command {
                        None => return End::Stop,
                        Some(command) => commands.push(command),
                    }
                    while let Ok(command) = self.commands.try_recv() {
                        commands.push(command);
                    }
                    if let Err(end) = self.apply_online(commands, &mut writer, &mut pending).await {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    match ping_sent {
                        Some(at) if at.elapsed() >= PING_TIMEOUT => {
                            return End::Failed("redis did not answer PING in time".into());
                        }
                        Some(_) => {}
                        None => {
                            let mut out = Vec::new();
                            frames::encode(&mut out, &[b"PING"]);
                            if let Err(end) = send(&mut writer, &out).await {
                                return end;
                            }
                            pending.push_back(Pending::Ping);
                            ping_sent = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }

    async fn apply_online(
        &mut self,
        commands: Vec<Command>,
        writer: &mut WriteHalf<Socket>,
        pending: &mut VecDeque<Pending>,
    ) -> Result<(), End> {
        let mut joined = Vec::new();
        let mut left = Vec::new();
        let mut stop = false;
        for command in commands {
            match command {
                Command::Join(topic, last) => {
                    left.retain(|t| *t != topic);
                    self.apply_offline(Command::Join(topic.clone(), last));
                    joined.push(topic);
                }
                Command::Release(topic) => {
                    joined.retain(|t| *t != topic);
                    if let Some(held) = self.held.remove(&topic) {
                        self.hand_back(held, false);
                        left.push(topic);
                    }
                }
                Command::Stop => stop = true,
            }
        }
        if !left.is_empty() {
            let mut out = Vec::new();
            self.queue(&left, Change::Unsubscribe, &mut out, pending);
            send(writer, &out).await?;
        }
        if stop {
            return Err(End::Stop);
        }
        self.subscribe(&joined, writer, pending, false).await
    }

    /// Reads the heads of topics new to the node, then subscribes `topics`.
    async fn subscribe(
        &mut self,
        topics: &[Topic],
        writer: &mut WriteHalf<Socket>,
        pending: &mut VecDeque<Pending>,
        initial: bool,
    ) -> Result<(), End> {
        if topics.is_empty() {
            return Ok(());
        }
        let fresh: Vec<Topic> = topics
            .iter()
            .filter(|t| self.held.get(*t).is_some_and(|h| h.last.is_none()))
            .cloned()
            .collect();
        for chunk in fresh.chunks(CHUNK) {
            let mut read = HistoryRead::new();
            for topic in chunk {
                read.window(topic);
            }
            let windows = read
                .run(&self.topology)
                .await
                .map_err(|e| End::Failed(error_chain(&e)))?;
            for (topic, history) in chunk.iter().zip(windows) {
                if let Some(held) = self.held.get_mut(topic) {
                    held.last = Some(history.window.head());
                }
            }
        }
        let mut out = Vec::new();
        self.queue(topics, Change::Subscribe { initial }, &mut out, pending);
        send(writer, &out).await
    }

    /// Encodes the (un)subscribe commands for `topics` into `out`, one per
    /// hash slot in Cluster mode (one command may only name channels of one
    /// slot) or per chunk otherwise, and records what each awaits.
    fn queue(
        &self,
        topics: &[Topic],
        change: Change,
        out: &mut Vec<u8>,
        pending: &mut VecDeque<Pending>,
    ) {
        let command: &[u8] = match (change, self.sharded) {
            (Change::Subscribe { .. }, true) => b"SSUBSCRIBE",
            (Change::Subscribe { .. }, false) => b"SUBSCRIBE",
            (Change::Unsubscribe, true) => b"SUNSUBSCRIBE",
            (Change::Unsubscribe, false) => b"UNSUBSCRIBE",
        };
        for chunk in self.chunks(topics) {
            encode_channels(out, command, &chunk);
            let remaining = chunk.len();
            pending.push_back(match change {
                Change::Subscribe { initial } => Pending::Subscribe {
                    remaining,
                    topics: chunk,
                    initial,
                },
                Change::Unsubscribe => Pending::Unsubscribe {
                    remaining,
                    topics: chunk,
                },
            });
        }
    }

    /// `topics` cut into (un)subscribe commands: per hash slot in Cluster
    /// mode, in chunks otherwise.
    fn chunks(&self, topics: &[Topic]) -> Vec<Vec<Topic>> {
        let mut groups: BTreeMap<u16, Vec<Topic>> = BTreeMap::new();
        for topic in topics {
            let slot = if self.sharded {
                key_slot(topic.as_str().as_bytes())
            } else {
                0
            };
            groups.entry(slot).or_default().push(topic.clone());
        }
        groups
            .into_values()
            .flat_map(|topics| {
                topics
                    .chunks(CHUNK)
                    .map(<[Topic]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn on_frames(
        &mut self,
        frames: &mut Vec<Frame>,
        pending: &mut VecDeque<Pending>,
        ping_sent: &mut Option<Instant>,
    ) -> Result<(), End> {
        // Topics confirmed whose history must be read before any later
        // message is dispatched.
        let mut confirmed = Vec::new();
        for frame in frames.drain(..) {
            match frame {
                Frame::Message { channel, payload } => {
                    if !confirmed.is_empty() {
                        self.catch_up(std::mem::take(&mut confirmed)).await?;
                    }
                    self.on_message(&channel, &payload);
                }
                Frame::Subscribed(channel) => {
                    match pending.front_mut() {
                        Some(Pending::Subscribe { remaining, .. }) => {
                            *remaining -= 1;
                            if *remaining == 0 {
                                pending.pop_front();
                            }
                        }
                        _ => {
                            return Err(End::Failed(
                                "an unexpected subscription confirmation".into(),
                            ))
                        }
                    }
                    let state = Arc::clone(&self.state);
                    if let Some(held) = self.held_mut(&channel) {
                        if !held.subscribed {
                            held.subscribed = true;
                            if held.catch_up {
                                confirmed.push(held.topic.clone());
                            } else {
                                state.activate([held.topic.clone()]);
                            }
                        }
                    }
                }
                Frame::Unsubscribed(channel) => {
                    let asked = match pending.front_mut() {
                        Some(Pending::Unsubscribe { topics, remaining })
                            if keys::topic_of_channel(&channel)
                                .is_some_and(|t| topics.contains(&t)) =>
                        {
                            *remaining -= 1;
                            if *remaining == 0 {
                                pending.pop_front();
                            }
                            true
                        }
                        _ => false,
                    };
                    if !asked {
                        self.orphan_channel(&channel);
                    }
                }
                Frame::Pong | Frame::Ok => {
                    if matches!(pending.front(), Some(Pending::Ping)) {
                        pending.pop_front();
                        *ping_sent = None;
                    }
                }
                Frame::Error(message) => match pending.pop_front() {
                    Some(Pending::Subscribe { topics, .. })
                        if message.starts_with("MOVED") || message.starts_with("ASK") =>
                    {
                        // The slot lives elsewhere now.
                        for topic in topics {
                            if let Some(held) = self.held.remove(&topic) {
                                self.hand_back(held, true);
                            }
                        }
                        self.topology.nudge();
                    }
                    Some(Pending::Unsubscribe { .. }) => {}
                    _ => return Err(End::Failed(format!("redis refused: {message}"))),
                },
            }
        }
        if !confirmed.is_empty() {
            self.catch_up(confirmed).await?;
        }
        Ok(())
    }

    fn held_mut(&mut self, channel: &Bytes) -> Option<&mut Held> {
        let name = topic_name(channel)?;
        self.held.get_mut(name)
    }

    fn orphan_channel(&mut self, channel: &Bytes) {
        let Some(name) = topic_name(channel) else {
            return;
        };
        if let Some(held) = self.held.remove(name) {
            tracing::info!(topic = %held.topic, primary = %self.primary.addr, "redis dropped a live subscription; moving it");
            self.hand_back(held, true);
            self.topology.nudge();
        }
    }

    /// Dispatches what `topics` missed since their last position, then
    /// marks them live.
    async fn catch_up(&mut self, topics: Vec<Topic>) -> Result<(), End> {
        for chunk in topics.chunks(CHUNK) {
            let mut read = HistoryRead::new();
            let mut asked = Vec::with_capacity(chunk.len());
            for topic in chunk {
                let Some(last) = self.held.get(topic).and_then(|h| h.last) else {
                    continue;
                };
                // A topic that had no history, or whose history was
                // recreated, is read from its start.
                read.after(topic, last.seq, self.max_events);
                asked.push((topic.clone(), last));
            }
            let mut histories = read
                .run(&self.topology)
                .await
                .map_err(|e| End::Failed(error_chain(&e)))?;
            let mut again = HistoryRead::new();
            let mut reread = Vec::new();
            for ((topic, last), history) in asked.iter().zip(&histories) {
                if history.window.epoch != last.epoch && history.window.epoch != 0 && last.seq != 0
                {
                    again.after(topic, 0, self.max_events);
                    reread.push(topic.clone());
                }
            }
            let mut replaced: HashMap<Topic, _> = HashMap::new();
            if !reread.is_empty() {
                let histories = again
                    .run(&self.topology)
                    .await
                    .map_err(|e| End::Failed(error_chain(&e)))?;
                replaced.extend(reread.into_iter().zip(histories));
            }
            for ((topic, last), history) in asked.into_iter().zip(histories.drain(..)) {
                let history = replaced.remove(&topic).unwrap_or(history);
                if last.epoch != 0 && history.window.epoch != last.epoch {
                    // What this node had delivered is gone from Redis, and so
                    // may be events accepted after it: its streams resync the
                    // topic now, then follow the new history from its start.
                    let start = Position::new(history.window.epoch, history.window.first_prev);
                    if let Some(held) = self.held.get_mut(&topic) {
                        held.last = Some(start);
                    }
                    self.registry
                        .dispatch(&Arc::new(SharedEvent::reset(topic.clone(), start)));
                }
                for event in history.events {
                    self.dispatch(event);
                }
            }
            for topic in chunk {
                if let Some(held) = self.held.get_mut(topic) {
                    held.catch_up = false;
                    if held.subscribed {
                        self.state.activate([topic.clone()]);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_message(&mut self, channel: &Bytes, payload: &Bytes) {
        let Some(held) = self.held_mut(channel) else {
            // A late message for a topic just released.
            return;
        };
        let topic = held.topic.clone();
        let Some(live) = wire::parse_live(payload) else {
            tracing::warn!(%topic, "ignoring a malformed live event");
            return;
        };
        let event = match live.event {
            "" => None,
            name => match EventName::new(name) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(%topic, "ignoring a live event with an invalid name");
                    return;
                }
            },
        };
        self.dispatch(Arc::new(
            SharedEvent::encode(
                topic,
                live.position,
                event.as_ref(),
                live.data,
                live.stored_at_us,
            )
            .after(live.prev),
        ));
    }

    /// Hands `event` to local subscribers unless it was already dispatched.
    fn dispatch(&mut self, event: Arc<SharedEvent>) {
        let Some(held) = self.held.get_mut(&event.topic) else {
            return;
        };
        if let Some(last) = held.last {
            if event.position.epoch == last.epoch && event.position.seq <= last.seq {
                return;
            }
        }
        held.last = Some(event.position);
        self.registry.dispatch(&event);
    }
}

/// The topic name inside a live channel name, without allocating.
fn topic_name(channel: &[u8]) -> Option<&str> {
    let name = channel.strip_prefix(b"herald:{")?.strip_suffix(b"}:live")?;
    std::str::from_utf8(name).ok()
}

fn encode_channels(out: &mut Vec<u8>, command: &[u8], topics: &[Topic]) {
    let channels: Vec<String> = topics.iter().map(keys::channel).collect();
    let mut args: Vec<&[u8]> = Vec::with_capacity(channels.len() + 1);
    args.push(command);
    args.extend(channels.iter().map(String::as_bytes));
    frames::encode(out, &args);
}

async fn send(writer: &mut WriteHalf<Socket>, bytes: &[u8]) -> Result<(), End> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(End::Failed(error.to_string())),
        Err(_) => Err(End::Failed("writing to redis timed out".into())),
    }
}
