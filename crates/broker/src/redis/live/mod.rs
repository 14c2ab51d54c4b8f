//! Live events: one pub/sub subscription per topic with local subscribers,
//! held by a link to the primary that owns the topic.
//!
//! **Links.** Standalone and Sentinel modes have one link, to the primary,
//! kept open even without topics (its health is part of the node's
//! readiness). In Cluster mode each primary that owns a topic with local
//! subscribers gets a link using sharded pub/sub (`SSUBSCRIBE`), so a node
//! only hears the shards it needs. See `link.rs` for what a link does.
//!
//! **Why not the `redis` crate's pub/sub.** Redis ends sharded
//! subscriptions by itself (slot migration, failover) with a `sunsubscribe`
//! nobody asked for. The crate takes such a message as the answer to
//! whatever subscription command is in flight, or drops it, and keeps
//! believing the channel is subscribed; the topic then silently stops
//! receiving events. Reading the connection here (`frames.rs`) is a few
//! hundred lines and lets every unasked `sunsubscribe` move its topic.
//!
//! **The coordinator** (this module's task) places topics on links. The
//! registry reports topics gaining their first or losing their last local
//! subscriber; the coordinator reconciles each reported topic with the
//! registry's current state instead of replaying join/leave messages, so
//! any interleaving ends with a subscription exactly for the subscribed
//! topics. Before releasing a topic it removes the topic from the live set
//! and only then checks the registry: a stream that joined in between
//! either sees the topic not live (and waits for the next subscription) or
//! joined early enough that the check sees it. When routing changes (a
//! failover, a slot moved) it releases each topic from its old link and,
//! once the link hands it back with its last position, joins it on the
//! new one, which catches up from that position.

mod frames;
mod link;
mod socket;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    sync::{mpsc, watch, Notify},
    task::JoinHandle,
    time::Instant,
};

use self::link::{Command, Link, Report};
use super::{slot::key_slot, topology::Topology};
use crate::{Position, Topic, TopicRegistry};

/// How often topics without a primary (a shard down, a map not refreshed
/// yet) are placed again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Distinguishes links, so a stopped link cannot overwrite the state of
/// its successor on the same primary.
static LINK_IDS: AtomicU64 = AtomicU64::new(1);

/// Topics whose subscription Redis confirmed, shared by the links (which
/// change it) and streams that are starting (which wait on it).
#[derive(Debug, Default)]
pub(crate) struct LiveState {
    active: Mutex<HashSet<Topic>>,
    changed: Notify,
}

impl LiveState {
    /// Marks `topics` as live.
    pub(crate) fn activate(&self, topics: impl IntoIterator<Item = Topic>) {
        self.active.lock().extend(topics);
        self.changed.notify_waiters();
    }

    /// Removes `topic` from the live set; returns whether it was there.
    pub(crate) fn deactivate(&self, topic: &Topic) -> bool {
        self.active.lock().remove(topic)
    }

    fn is_active(&self, topic: &Topic) -> bool {
        self.active.lock().contains(topic)
    }

    /// Waits until every topic of `topics` is live; false on timeout.
    pub(crate) async fn wait_active(&self, topics: &[Topic], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Register for the wake-up before checking, so an activation
            // between the check and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if topics.iter().all(|topic| self.is_active(topic)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// Starts the coordinator; it stops (and stops its links) when aborted.
pub(crate) fn start(
    topology: Arc<Topology>,
    registry: Arc<TopicRegistry>,
    interest: mpsc::UnboundedReceiver<Topic>,
    max_events: usize,
) -> (Arc<LiveState>, JoinHandle<()>) {
    let state = Arc::new(LiveState::default());
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let coordinator = Coordinator {
        generation: topology.generation(),
        topology,
        registry,
        state: Arc::clone(&state),
        max_events,
        interest,
        reports_tx,
        reports,
        links: HashMap::new(),
        placed: HashMap::new(),
        moving: HashSet::new(),
        homeless: HashMap::new(),
    };
    (state, tokio::spawn(coordinator.run()))
}

struct LinkHandle {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    topics: usize,
    keep_alive: bool,
}

struct Coordinator {
    topology: Arc<Topology>,
    registry: Arc<TopicRegistry>,
    state: Arc<LiveState>,
    max_events: usize,
    interest: mpsc::UnboundedReceiver<Topic>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    generation: watch::Receiver<u64>,
    /// Links by primary address.
    links: HashMap<String, LinkHandle>,
    /// Which link holds each topic.
    placed: HashMap<Topic, String>,
    /// Released for a move, not handed back yet.
    moving: HashSet<Topic>,
    /// Wanted, with no primary to hold them right now.
    homeless: HashMap<Topic, Option<Position>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

impl Coordinator {
    async fn run(mut self) {
        self.ensure_keep_alive();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                Some(topic) = self.interest.recv() => {
                    let mut topics = vec![topic];
                    while let Ok(topic) = self.interest.try_recv() {
                        topics.push(topic);
                    }
                    topics.sort_unstable();
                    topics.dedup();
                    for topic in topics {
                        self.reconcile(topic);
                    }
                }
                Some(report) = self.reports.recv() => self.on_report(report),
                Ok(()) = self.generation.changed() => self.reroute(),
                _ = retry.tick() => self.place_homeless(),
            }
        }
    }

    /// Brings `topic`'s placement in line with the registry.
    fn reconcile(&mut self, topic: Topic) {
        if self.moving.contains(&topic) {
            // Its hand-back decides (see `on_report`).
            return;
        }
        if let Some(addr) = self.placed.get(&topic).cloned() {
            if self.registry.is_subscribed(&topic) {
                return;
            }
            let was_active = self.state.deactivate(&topic);
            if self.registry.is_subscribed(&topic) {
                if was_active {
                    self.state.activate([topic]);
                }
                return;
            }
            self.placed.remove(&topic);
            self.send(&addr, Command::Release(topic));
            self.count_topic(&addr, false);
            self.release_link_if_idle(&addr);
        } else if self.registry.is_subscribed(&topic) {
            if !self.homeless.contains_key(&topic) {
                self.place(topic, None);
            }
        } else {
            self.homeless.remove(&topic);
        }
    }

    fn on_report(&mut self, report: Report) {
        let Report::Homeless {
            topic,
            last,
            link,
            orphaned,
        } = report;
        self.moving.remove(&topic);
        if orphaned {
            let addr = self
                .links
                .iter()
                .find(|(_, handle)| handle.id == link)
                .map(|(addr, _)| addr.clone());
            if let Some(addr) = addr {
                if self.placed.get(&topic) == Some(&addr) {
                    self.placed.remove(&topic);
                    self.count_topic(&addr, false);
                    self.release_link_if_idle(&addr);
                }
            }
        }
        if self.placed.contains_key(&topic) || !self.registry.is_subscribed(&topic) {
            return;
        }
        if orphaned {
            // Redis dropped it, so the map this node has may still point at
            // the same primary: wait for the refresh the link asked for.
            self.homeless.insert(topic, last);
        } else {
            self.place(topic, last);
        }
    }

    /// Moves every topic whose primary changed.
    fn reroute(&mut self) {
        self.ensure_keep_alive();
        let moved: Vec<(Topic, String)> = self
            .placed
            .iter()
            .filter(|(topic, addr)| {
                self.topology
                    .route(key_slot(topic.as_str().as_bytes()))
                    .is_none_or(|p| p.addr != **addr)
            })
            .map(|(t, a)| (t.clone(), a.clone()))
            .collect();
        for (topic, addr) in moved {
            self.placed.remove(&topic);
            self.moving.insert(topic.clone());
            self.send(&addr, Command::Release(topic));
            self.count_topic(&addr, false);
        }
        let addrs: Vec<String> = self.links.keys().cloned().collect();
        for addr in addrs {
            self.release_link_if_idle(&addr);
        }
        self.place_homeless();
    }

    fn place_homeless(&mut self) {
        let homeless: Vec<(Topic, Option<Position>)> = self.homeless.drain().collect();
        for (topic, last) in homeless {
            if self.registry.is_subscribed(&topic) {
                self.place(topic, last);
            }
        }
    }

    fn place(&mut self, topic: Topic, last: Option<Position>) {
        let Some(primary) = self.topology.route(key_slot(topic.as_str().as_bytes())) else {
            self.homeless.insert(topic, last);
            self.topology.nudge();
            return;
        };
        let addr = primary.addr.clone();
        self.ensure_link(&primary, false);
        self.placed.insert(topic.clone(), addr.clone());
        self.count_topic(&addr, true);
        self.send(&addr, Command::Join(topic, last));
    }

    /// Standalone and Sentinel: the primary's link exists, topics or not.
    fn ensure_keep_alive(&mut self) {
        if self.topology.is_cluster() {
            return;
        }
        let current = self.topology.route(0);
        for (addr, handle) in &mut self.links {
            handle.keep_alive = current.as_ref().is_some_and(|p| p.addr == *addr);
        }
        if let Some(primary) = current {
            self.ensure_link(&primary, true);
        }
    }

    fn ensure_link(&mut self, primary: &Arc<super::topology::Primary>, keep_alive: bool) {
        if self.links.contains_key(&primary.addr) {
            return;
        }
        let id = LINK_IDS.fetch_add(1, Ordering::Relaxed);
        let (commands, receiver) = mpsc::unbounded_channel();
        let link = Link {
            id,
            primary: Arc::clone(primary),
            topology: Arc::clone(&self.topology),
            registry: Arc::clone(&self.registry),
            state: Arc::clone(&self.state),
            commands: receiver,
            reports: self.reports_tx.clone(),
            sharded: self.topology.is_cluster(),
            keep_alive,
            max_events: self.max_events,
            held: HashMap::new(),
        };
        primary.claim_link(id);
        let task = tokio::spawn(link.run());
        self.links.insert(
            primary.addr.clone(),
            LinkHandle {
                id,
                commands,
                task,
                topics: 0,
                keep_alive,
            },
        );
    }

    /// Stops the link of `addr` once it holds nothing and is not needed
    /// for readiness.
    fn release_link_if_idle(&mut self, addr: &str) {
        let idle = self
            .links
            .get(addr)
            .is_some_and(|handle| !handle.keep_alive && handle.topics == 0);
        if idle {
            if let Some(handle) = self.links.remove(addr) {
                // Stop comes after any release already sent: the link hands
                // those back first.
                let _ = handle.commands.send(Command::Stop);
                if let Some(primary) = self.topology.primary_named(addr) {
                    primary.release_link(handle.id);
                    self.topology.publish_health();
                }
            }
        }
    }

    fn count_topic(&mut self, addr: &str, added: bool) {
        if let Some(handle) = self.links.get_mut(addr) {
            handle.topics = if added {
                handle.topics + 1
            } else {
                handle.topics.saturating_sub(1)
            };
        }
    }

    fn send(&mut self, addr: &str, command: Command) {
        if let Some(handle) = self.links.get(addr) {
            // A link that stopped has handed back its topics already.
            let _ = handle.commands.send(command);
        }
    }
}
