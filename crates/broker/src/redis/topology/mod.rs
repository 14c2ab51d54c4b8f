//! The one place that knows where herald's Redis data lives: a standalone
//! primary, the primary Sentinel points at, or the primaries of a Redis
//! Cluster. Everything else sends commands through [`Topology::execute`]
//! with the hash slot each command touches, and never names a server.
//!
//! **Routing.** Standalone and Sentinel modes have one primary and ignore
//! slots. In Cluster mode a [`cluster::ShardMap`] (from `CLUSTER SHARDS`)
//! names each slot's primary; a request's commands are grouped per primary
//! and pipelined, one round trip per shard. `MOVED` updates the map at once
//! and retries the command on the named node; `ASK` retries it there once,
//! after `ASKING`; `TRYAGAIN` (a multi-key command meeting a slot half
//! migrated) retries after a pause; `NOSCRIPT` loads the script and
//! retries. Each of those answers means the command did not run, so a retry
//! can never apply it twice. Nothing else is retried: a command whose
//! answer was lost may have run, and only the caller (with an idempotency
//! key) can repeat it safely.
//!
//! **Why not the crate's cluster client.** It retries commands after
//! connection errors (a publish could be stored twice), answers `WAIT` from
//! every primary instead of the one that took the write, and loses track
//! of sharded subscriptions when Redis moves a slot (see `live/`). Routing
//! by slot, with the redirections above, is all herald needs, and keeping
//! it here lets publish, history, presence and the live links share one
//! map.
//!
//! **Following failovers.** A monitor task refreshes the map (Cluster),
//! asks the sentinels (Sentinel) and probes every primary each second, and
//! at once when a command hints that something moved (a redirection,
//! `READONLY`, a connection failure). Each primary change it notices is
//! counted in `herald_broker_failovers_total`; each change of routing
//! bumps a generation that the live links watch to resubscribe where the
//! topics now live.

pub(crate) mod cluster;
mod primary;
mod sentinel;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value};
use tokio::sync::{watch, Notify};

use self::primary::Shared;
pub(crate) use self::primary::{Conn, LinkState, Primary};
use self::{cluster::ShardMap, primary::Replication, sentinel::SentinelResolver};
use super::{
    script::LuaScript,
    settings::{RedisSettings, RedisTopology},
    BrokerMetrics,
};
use crate::BrokerError;

/// Time allowed for one round trip to Redis. Past it the call fails with
/// [`BrokerError::Unavailable`]: callers answer `503` rather than hang.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the monitor checks the topology when nothing hints at a
/// change.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The sentinels are asked at least this often even while the primary
/// answers as one, in case a probe cannot tell (a partition).
const SENTINEL_EVERY: Duration = Duration::from_secs(5);
/// Redirections and retries one command may go through.
const MAX_ATTEMPTS: usize = 6;

/// One command of a request, with the slot it touches.
#[derive(Debug)]
pub(crate) struct Call {
    slot: u16,
    op: Op,
    writes: bool,
}

#[derive(Debug)]
enum Op {
    Command(redis::Cmd),
    Script {
        script: &'static LuaScript,
        keys: Vec<String>,
        /// Passed after the writer id when `writes` is set.
        args: Vec<String>,
    },
}

impl Call {
    /// A plain command touching `slot`.
    pub(crate) fn command(slot: u16, cmd: redis::Cmd) -> Self {
        Self {
            slot,
            op: Op::Command(cmd),
            writes: false,
        }
    }

    /// A read-only script on `keys`, all in `slot`.
    pub(crate) fn read_script(
        slot: u16,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Self {
        Self::script(slot, script, keys, args, false)
    }

    /// A writing script on `keys`, all in `slot`. Its first argument is
    /// the replication id of the primary that runs it (the "writer"),
    /// inserted when it is sent; with `redis.wait_replicas` set, it is
    /// followed by `WAIT` on the same connection.
    pub(crate) fn write_script(
        slot: u16,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Self {
        Self::script(slot, script, keys, args, true)
    }

    fn script(
        slot: u16,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
        writes: bool,
    ) -> Self {
        Self {
            slot,
            op: Op::Script { script, keys, args },
            writes,
        }
    }

    fn add_to(&self, pipe: &mut redis::Pipeline, writer: &str) {
        match &self.op {
            Op::Command(cmd) => {
                pipe.add_command(cmd.clone());
            }
            Op::Script { script, keys, args } => {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(script.digest())
                    .arg(keys.len())
                    .arg(keys);
                if self.writes {
                    cmd.arg(writer);
                }
                cmd.arg(args);
            }
        }
    }

    fn lua(&self) -> Option<&'static LuaScript> {
        match &self.op {
            Op::Script { script, .. } => Some(script),
            Op::Command(_) => None,
        }
    }
}

/// Where the data lives, as configured.
enum Mode {
    Standalone,
    Sentinel {
        resolver: Arc<SentinelResolver>,
        last_asked: Mutex<Option<Instant>>,
    },
    Cluster {
        seeds: Vec<String>,
        tls: bool,
    },
}

/// Which primary serves what.
#[derive(Debug, Clone)]
enum Routes {
    /// Standalone and Sentinel: one primary (none before Sentinel answered).
    Single(Option<Arc<Primary>>),
    /// Cluster: the shard map and a primary per address in it.
    Slots {
        map: Arc<ShardMap>,
        primaries: Vec<Arc<Primary>>,
    },
}

/// Where Redis is, and how to reach it.
pub(crate) struct Topology {
    mode: Mode,
    /// Credentials and options every data-node connection uses.
    node_settings: RedisConnectionInfo,
    primaries: Mutex<HashMap<String, Arc<Primary>>>,
    routes: RwLock<Routes>,
    generation: watch::Sender<u64>,
    nudge: Arc<Notify>,
    wait: Option<(u32, Duration)>,
    metrics: BrokerMetrics,
    /// Serializes health snapshots, so two never interleave.
    health: Mutex<()>,
    /// What every primary shares: counters.
    shared: Arc<Shared>,
    /// Cluster mode: the connection `CLUSTER SHARDS` is asked on (any
    /// node, replica or primary), kept between refreshes.
    discovery: tokio::sync::Mutex<Option<(String, redis::aio::MultiplexedConnection)>>,
}

/// A call's index, and whether it goes after `ASKING` (an `ASK` answer).
type Routed = (usize, bool);

/// What happened to one command of a round.
enum Outcome {
    Done(Result<Value, BrokerError>),
    /// Send it again: to the slot's owner, or (ASK) to this node; after a
    /// pause, or after loading its script.
    Retry {
        ask: Option<String>,
        pause: bool,
        load: bool,
    },
}

impl Topology {
    /// The topology described by `settings`. Nothing is connected yet:
    /// [`Topology::monitor`] does that, and Redis being down is not an
    /// error here.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Protocol`] when a URL cannot be read.
    pub(crate) fn new(
        settings: &RedisSettings,
        metrics: BrokerMetrics,
    ) -> Result<Self, BrokerError> {
        let mut node_settings = RedisConnectionInfo::default();
        if let Some(username) = &settings.username {
            node_settings = node_settings.set_username(username);
        }
        if let Some(password) = &settings.password {
            node_settings = node_settings.set_password(password);
        }
        let primaries = Mutex::new(HashMap::new());
        let shared = Arc::new(Shared {
            connects: AtomicU64::new(0),
            reconnects: metrics.reconnects.clone(),
        });
        let (mode, routes) = match &settings.topology {
            RedisTopology::Standalone { url } => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| BrokerError::Protocol(format!("redis.url: {e}")))?;
                let addr = info.addr().to_string();
                let primary = Arc::new(Primary::new(addr.clone(), info, Arc::clone(&shared)));
                primaries.lock().insert(addr, Arc::clone(&primary));
                (Mode::Standalone, Routes::Single(Some(primary)))
            }
            RedisTopology::Sentinel {
                nodes,
                master,
                sentinel_password,
            } => {
                let resolver = SentinelResolver::new(
                    nodes,
                    master,
                    sentinel_password.as_deref(),
                    node_settings.clone(),
                )?;
                let mode = Mode::Sentinel {
                    resolver: Arc::new(resolver),
                    last_asked: Mutex::new(None),
                };
                (mode, Routes::Single(None))
            }
            RedisTopology::Cluster { nodes } => {
                for seed in nodes {
                    seed.as_str()
                        .into_connection_info()
                        .map_err(|e| BrokerError::Protocol(format!("redis.cluster_nodes: {e}")))?;
                }
                let mode = Mode::Cluster {
                    seeds: nodes.clone(),
                    tls: nodes.iter().any(|n| n.starts_with("rediss://")),
                };
                let routes = Routes::Slots {
                    map: Arc::new(ShardMap::empty()),
                    primaries: Vec::new(),
                };
                (mode, routes)
            }
        };
        metrics.up.set(0);
        Ok(Self {
            mode,
            node_settings,
            primaries,
            routes: RwLock::new(routes),
            generation: watch::Sender::new(0),
            nudge: Arc::new(Notify::new()),
            wait: (settings.wait_replicas > 0)
                .then_some((settings.wait_replicas, settings.wait_timeout)),
            metrics,
            shared,
            health: Mutex::new(()),
            discovery: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether topics are spread over several primaries by slot.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.mode, Mode::Cluster { .. })
    }

    /// The channel command that carries live events: sharded pub/sub in
    /// Cluster mode, so a shard only carries its own topics' events.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The primary serving `slot` right now.
    pub(crate) fn route(&self, slot: u16) -> Option<Arc<Primary>> {
        match &*self.routes.read() {
            Routes::Single(primary) => primary.clone(),
            Routes::Slots { map, primaries } => map
                .slots
                .get(usize::from(slot))
                .copied()
                .flatten()
                .map(|i| Arc::clone(&primaries[usize::from(i)])),
        }
    }

    /// Every primary currently routed to.
    pub(crate) fn primaries(&self) -> Vec<Arc<Primary>> {
        match &*self.routes.read() {
            Routes::Single(primary) => primary.iter().cloned().collect(),
            Routes::Slots { primaries, .. } => primaries.clone(),
        }
    }

    /// The primary at `addr`, if the node ever routed to it.
    pub(crate) fn primary_named(&self, addr: &str) -> Option<Arc<Primary>> {
        self.primaries.lock().get(addr).cloned()
    }

    /// Changes whenever routing changes; live links watch it.
    pub(crate) fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Asks the monitor to look at the topology now.
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Whether some primary can be reached: the node can serve at least
    /// part of its topics, so it stays in rotation. Read from the same
    /// snapshot as the metrics, so `/readyz` and `herald_broker_up` agree.
    pub(crate) fn is_up(&self) -> bool {
        self.metrics.primaries_up.get() > 0
    }

    /// Takes a snapshot of the primaries' health: `herald_broker_up` (every
    /// primary healthy), the per-state primary counts, and readiness.
    pub(crate) fn publish_health(&self) {
        let primaries = self.primaries();
        let up = primaries.iter().filter(|p| p.is_healthy()).count();
        let down = primaries.len() - up;
        let _guard = self.health.lock();
        self.metrics
            .up
            .set(i64::from(!primaries.is_empty() && down == 0));
        self.metrics.primaries_down.set(down as i64);
        self.metrics.primaries_up.set(up as i64);
    }

    /// How many command connections were made so far: a change means some
    /// primary was reconnected to (it may have restarted empty).
    pub(crate) fn connects(&self) -> u64 {
        self.shared.connects.load(Ordering::Acquire)
    }

    /// Counts a reconnection after a lost connection.
    pub(crate) fn count_reconnect(&self) {
        self.metrics.reconnects.inc();
    }

    fn primary_at(
        &self,
        addr: &str,
        info: impl FnOnce() -> Result<ConnectionInfo, BrokerError>,
    ) -> Result<Arc<Primary>, BrokerError> {
        if let Some(primary) = self.primaries.lock().get(addr) {
            return Ok(Arc::clone(primary));
        }
        let primary = Arc::new(Primary::new(
            addr.to_owned(),
            info()?,
            Arc::clone(&self.shared),
        ));
        Ok(Arc::clone(
            self.primaries
                .lock()
                .entry(addr.to_owned())
                .or_insert(primary),
        ))
    }

    /// The primary object for a cluster node address.
    fn cluster_primary(&self, addr: &str) -> Result<Arc<Primary>, BrokerError> {
        let Mode::Cluster { tls, .. } = &self.mode else {
            return Err(BrokerError::Protocol(format!(
                "redirected to {addr} outside Redis Cluster"
            )));
        };
        let scheme = if *tls { "rediss" } else { "redis" };
        self.primary_at(addr, || {
            let info = format!("{scheme}://{addr}")
                .as_str()
                .into_connection_info()
                .map_err(|e| BrokerError::Protocol(format!("cluster node {addr}: {e}")))?;
            Ok(info.set_redis_settings(self.node_settings.clone()))
        })
    }

    /// Runs `calls`, pipelined per primary, and returns one result per call
    /// in order. Redirections and `NOSCRIPT` are handled here (see the
    /// module docs); every other failure is that call's result.
    pub(crate) async fn execute(&self, calls: &[Call]) -> Vec<Result<Value, BrokerError>> {
        let mut results: Vec<Option<Result<Value, BrokerError>>> =
            calls.iter().map(|_| None).collect();
        let mut pending: Vec<(usize, Option<String>)> =
            (0..calls.len()).map(|i| (i, None)).collect();
        let mut pause = Duration::from_millis(10);
        for attempt in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            // Per primary: the calls to send it, each with "after ASKING".
            let mut groups: HashMap<String, (Arc<Primary>, Vec<Routed>)> = HashMap::new();
            for (index, ask) in pending.drain(..) {
                let target = match &ask {
                    Some(addr) => self.cluster_primary(addr).map(Some),
                    None => Ok(self.route(calls[index].slot)),
                };
                match target {
                    Ok(Some(primary)) => groups
                        .entry(primary.addr.clone())
                        .or_insert_with(|| (primary, Vec::new()))
                        .1
                        .push((index, ask.is_some())),
                    Ok(None) => {
                        self.nudge();
                        results[index] = Some(Err(BrokerError::unavailable(
                            "no Redis primary serves this topic right now",
                        )));
                    }
                    Err(error) => results[index] = Some(Err(error)),
                }
            }
            let rounds = join_all(
                groups
                    .into_values()
                    .map(|(primary, items)| self.run_group(primary, calls, items)),
            )
            .await;
            let mut should_pause = false;
            for (index, outcome) in rounds.into_iter().flatten() {
                match outcome {
                    Outcome::Done(result) => results[index] = Some(result),
                    Outcome::Retry { ask, pause, .. } => {
                        should_pause |= pause;
                        if attempt + 1 == MAX_ATTEMPTS {
                            results[index] = Some(Err(BrokerError::unavailable(
                                "redis kept redirecting the command",
                            )));
                        } else {
                            pending.push((index, ask));
                        }
                    }
                }
            }
            if should_pause {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every call gets a result"))
            .collect()
    }

    /// Like [`Topology::execute`], failing as a whole on the first failed
    /// call.
    pub(crate) async fn execute_all(&self, calls: &[Call]) -> Result<Vec<Value>, BrokerError> {
        self.execute(calls).await.into_iter().collect()
    }

    /// One pipeline on one primary.
    async fn run_group(
        &self,
        primary: Arc<Primary>,
        calls: &[Call],
        items: Vec<Routed>,
    ) -> Vec<(usize, Outcome)> {
        let fail_all = |error: BrokerError| {
            let unavailable = matches!(error, BrokerError::Unavailable { .. });
            let detail = crate::error_chain(&error);
            items
                .iter()
                .map(|(i, _)| {
                    let error = if unavailable {
                        BrokerError::unavailable(detail.clone())
                    } else {
                        BrokerError::Protocol(detail.clone())
                    };
                    (*i, Outcome::Done(Err(error)))
                })
                .collect::<Vec<_>>()
        };
        let conn = match primary.conn().await {
            Ok(conn) => conn,
            Err(error) => {
                primary.mark_failed();
                self.publish_health();
                self.nudge();
                return fail_all(error);
            }
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // Which call each reply answers; `None` for ASKING and WAIT.
        let mut replies: Vec<Option<usize>> = Vec::with_capacity(items.len() + 1);
        for &(index, asking) in &items {
            if asking {
                pipe.cmd("ASKING");
                replies.push(None);
            }
            calls[index].add_to(&mut pipe, &conn.writer);
            replies.push(Some(index));
        }
        let wait = self
            .wait
            .filter(|_| items.iter().any(|(i, _)| calls[*i].writes));
        if let Some((replicas, timeout)) = wait {
            pipe.cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis() as u64);
            replies.push(None);
        }
        let budget = COMMAND_TIMEOUT + wait.map_or(Duration::ZERO, |(_, t)| t);
        let mut mux = conn.mux.clone();
        let values =
            match tokio::time::timeout(budget, pipe.query_async::<Vec<Value>>(&mut mux)).await {
                Ok(Ok(values)) if values.len() == replies.len() => values,
                Ok(Ok(values)) => {
                    return fail_all(BrokerError::Protocol(format!(
                        "{} replies to {} commands",
                        values.len(),
                        replies.len()
                    )))
                }
                Ok(Err(error)) => {
                    primary.discard(&conn);
                    primary.mark_failed();
                    self.nudge();
                    return fail_all(primary.unavailable(error));
                }
                Err(_) => {
                    primary.discard(&conn);
                    primary.mark_failed();
                    self.nudge();
                    return fail_all(primary.unavailable("no answer in time"));
                }
            };
        let replicated = match (wait, values.last()) {
            (Some((replicas, _)), Some(Value::Int(n))) => *n >= i64::from(replicas),
            (Some(_), _) => false,
            (None, _) => true,
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut loaded: Vec<&'static LuaScript> = Vec::new();
        for (value, reply) in values.into_iter().zip(replies) {
            let Some(index) = reply else { continue };
            let outcome = match value {
                Value::ServerError(error) => {
                    self.on_error(&primary, &conn, calls[index].slot, error)
                }
                _ if calls[index].writes && !replicated => {
                    Outcome::Done(Err(BrokerError::unavailable(format!(
                        "redis {}: replicas did not confirm the write in time",
                        primary.addr
                    ))))
                }
                value => Outcome::Done(Ok(value)),
            };
            if let (Outcome::Retry { load: true, .. }, Some(script)) =
                (&outcome, calls[index].lua())
            {
                if !loaded.iter().any(|s| std::ptr::eq(*s, script)) {
                    loaded.push(script);
                }
            }
            outcomes.push((index, outcome));
        }
        // Scripts answered NOSCRIPT are loaded before they are retried
        // (loading one that exists is harmless).
        for script in loaded {
            let mut mux = conn.mux.clone();
            let load = script.load_cmd();
            let _ =
                tokio::time::timeout(COMMAND_TIMEOUT, load.query_async::<Value>(&mut mux)).await;
        }
        outcomes
    }

    fn on_error(
        &self,
        primary: &Primary,
        conn: &Conn,
        slot: u16,
        error: redis::ServerError,
    ) -> Outcome {
        let details = error.details().unwrap_or_default().to_owned();
        match error.code() {
            "MOVED" => {
                let target = details.split(' ').nth(1).unwrap_or_default();
                if self.note_moved(slot, target).is_err() {
                    return Outcome::Done(Err(BrokerError::Protocol(format!(
                        "redis answered MOVED {details} outside Redis Cluster"
                    ))));
                }
                Outcome::Retry {
                    ask: None,
                    pause: false,
                    load: false,
                }
            }
            "ASK" => match details.split(' ').nth(1) {
                Some(target) if self.is_cluster() => Outcome::Retry {
                    ask: Some(target.to_owned()),
                    pause: false,
                    load: false,
                },
                _ => Outcome::Done(Err(BrokerError::Protocol(format!(
                    "redis answered ASK {details} outside Redis Cluster"
                )))),
            },
            "TRYAGAIN" => Outcome::Retry {
                ask: None,
                pause: true,
                load: false,
            },
            "NOSCRIPT" => Outcome::Retry {
                ask: None,
                pause: false,
                load: true,
            },
            code @ ("READONLY" | "MASTERDOWN" | "CLUSTERDOWN") => {
                // A demoted primary or a shard without one: look again.
                primary.discard(conn);
                primary.mark_failed();
                self.publish_health();
                self.nudge();
                Outcome::Done(Err(primary.unavailable(format!("{code} {details}"))))
            }
            code @ ("LOADING" | "OOM" | "BUSY" | "NOREPLICAS") => {
                Outcome::Done(Err(primary.unavailable(format!("{code} {details}"))))
            }
            code => Outcome::Done(Err(BrokerError::Protocol(format!(
                "redis {}: {code} {details}",
                primary.addr
            )))),
        }
    }

    /// Routes `slot` to `addr` at once (a `MOVED` answer) and asks for a
    /// full refresh.
    fn note_moved(&self, slot: u16, addr: &str) -> Result<(), BrokerError> {
        let primary = self.cluster_primary(addr)?;
        self.nudge();
        let mut routes = self.routes.write();
        let Routes::Slots { map, primaries } = &mut *routes else {
            return Err(BrokerError::Protocol("MOVED outside Redis Cluster".into()));
        };
        let index = match primaries.iter().position(|p| p.addr == addr) {
            Some(index) => index,
            None => {
                primaries.push(primary);
                Arc::make_mut(map).primaries.push(addr.to_owned());
                primaries.len() - 1
            }
        };
        Arc::make_mut(map).slots[usize::from(slot)] = Some(index as u16);
        drop(routes);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Follows the topology until aborted: refreshes routes and probes the
    /// primaries every second, and at once when nudged. In Sentinel mode it
    /// also listens to the sentinels' announcements (stopped with it).
    pub(crate) async fn monitor(self: Arc<Self>) {
        let watch = async {
            match &self.mode {
                Mode::Sentinel { resolver, .. } => {
                    Arc::clone(resolver).watch(Arc::clone(&self.nudge)).await;
                }
                _ => std::future::pending().await,
            }
        };
        let follow = async {
            let mut nudged = true;
            loop {
                self.refresh(nudged).await;
                nudged = tokio::select! {
                    () = tokio::time::sleep(REFRESH_EVERY) => false,
                    () = self.nudge.notified() => {
                        // Several hints in a burst make one refresh.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        true
                    }
                };
            }
        };
        tokio::join!(watch, follow);
    }

    /// Follows the topology once; `nudged` when something hinted at a
    /// change (the sentinels are then asked at once).
    async fn refresh(&self, nudged: bool) {
        match &self.mode {
            Mode::Standalone => {}
            Mode::Sentinel {
                resolver,
                last_asked,
            } => {
                let due = last_asked
                    .lock()
                    .is_none_or(|at| at.elapsed() >= SENTINEL_EVERY);
                let current_ok = self.primaries().iter().all(|p| p.is_healthy());
                if nudged || due || !current_ok {
                    *last_asked.lock() = Some(Instant::now());
                    self.follow_sentinel(resolver).await;
                }
            }
            Mode::Cluster { seeds, tls } => self.follow_cluster(seeds, *tls).await,
        }
        let primaries = self.primaries();
        let probes = join_all(primaries.iter().map(|p| p.probe(COMMAND_TIMEOUT))).await;
        for (primary, probe) in primaries.iter().zip(probes) {
            if let Ok(replication) = probe {
                self.note_replication(primary, &replication);
            }
        }
        self.publish_health();
    }

    async fn follow_sentinel(&self, resolver: &SentinelResolver) {
        let (addr, info) = match resolver.resolve().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "cannot resolve the primary through the sentinels");
                return;
            }
        };
        let current = self.primaries();
        if current.first().is_some_and(|p| p.addr == addr) {
            return;
        }
        let primary = match self.primary_at(&addr, || Ok(info)) {
            Ok(primary) => primary,
            Err(_) => return,
        };
        if let Some(old) = current.first() {
            tracing::warn!(from = %old.addr, to = %addr, "the sentinels promoted a new primary");
            self.metrics.failovers.inc();
        } else {
            tracing::info!(primary = %addr, "primary found through the sentinels");
        }
        *self.routes.write() = Routes::Single(Some(primary));
        self.generation.send_modify(|g| *g += 1);
    }

    async fn follow_cluster(&self, seeds: &[String], tls: bool) {
        let Some(map) = self.fetch_shards(seeds, tls).await else {
            tracing::warn!("no Redis Cluster node answered CLUSTER SHARDS");
            return;
        };
        let primaries: Vec<Arc<Primary>> = match map
            .primaries
            .iter()
            .map(|addr| self.cluster_primary(addr))
            .collect()
        {
            Ok(primaries) => primaries,
            Err(_) => return,
        };
        let mut routes = self.routes.write();
        let Routes::Slots { map: old, .. } = &*routes else {
            return;
        };
        if **old == map {
            return;
        }
        let promoted = map.promoted_since(old);
        if promoted > 0 {
            tracing::warn!(promoted, "Redis Cluster promoted replicas");
            self.metrics.failovers.inc_by(promoted as u64);
        }
        *routes = Routes::Slots {
            map: Arc::new(map),
            primaries,
        };
        drop(routes);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Asks a cluster node for the shard map: the node asked last time,
    /// else the known primaries, else the seeds.
    async fn fetch_shards(&self, seeds: &[String], tls: bool) -> Option<ShardMap> {
        let mut discovery = self.discovery.lock().await;
        if let Some((addr, mux)) = discovery.as_mut() {
            match ask_shards(mux, tls).await {
                Ok(map) => return Some(map),
                Err(error) => {
                    tracing::debug!(%addr, error = %crate::error_chain(&error), "CLUSTER SHARDS failed");
                    *discovery = None;
                }
            }
        }
        let mut candidates: Vec<String> = self.primaries().iter().map(|p| p.addr.clone()).collect();
        for seed in seeds {
            if let Ok(info) = seed.as_str().into_connection_info() {
                let addr = info.addr().to_string();
                if !candidates.contains(&addr) {
                    candidates.push(addr);
                }
            }
        }
        for addr in candidates {
            let Ok(primary) = self.cluster_primary(&addr) else {
                continue;
            };
            let connect = async {
                redis::Client::open(primary.connection_info().clone())?
                    .get_multiplexed_async_connection()
                    .await
            };
            let Ok(Ok(mut mux)) = tokio::time::timeout(COMMAND_TIMEOUT, connect).await else {
                continue;
            };
            if let Ok(map) = ask_shards(&mut mux, tls).await {
                *discovery = Some((addr, mux));
                return Some(map);
            }
        }
        None
    }

    /// Counts a promotion a probe reveals on its own (standalone: a replica
    /// put in the primary's place behind the same address).
    fn note_replication(&self, primary: &Primary, replication: &Replication) {
        let previous = primary.swap_replid(&replication.replid);
        if let Some(previous) = previous {
            if previous != replication.replid
                && replication.replid2 == previous
                && matches!(self.mode, Mode::Standalone)
            {
                tracing::warn!(addr = %primary.addr, "the primary was replaced by a promoted replica");
                self.metrics.failovers.inc();
            }
        }
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("routes", &*self.routes.read())
            .finish_non_exhaustive()
    }
}

async fn ask_shards(
    mux: &mut redis::aio::MultiplexedConnection,
    tls: bool,
) -> Result<ShardMap, BrokerError> {
    let reply = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query_async::<Value>(mux),
    )
    .await
    .map_err(|_| BrokerError::unavailable("CLUSTER SHARDS timed out"))?
    .map_err(BrokerError::unavailable)?;
    ShardMap::parse(&reply, tls)
}

/// Exponential backoff from 100 ms to 5 s, with jitter so nodes that lost
/// Redis together do not reconnect in lockstep.
pub(crate) fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(3) >= Duration::from_millis(400));
        for failures in [10, 100, u32::MAX] {
            assert!(backoff(failures) <= Duration::from_secs(5));
        }
    }
}
