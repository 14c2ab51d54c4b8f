//! A real Redis Cluster for tests: every primary and replica its own
//! `redis-server` on a free loopback port, in its own fresh directory,
//! joined by `redis-cli --cluster create`, and the faults a deployment
//! meets: manual failovers, crashed or frozen primaries promoted away,
//! nodes rejoining, and slots resharded online while clients keep writing.
//!
//! Owns the cluster's processes and Redis's slot arithmetic ([`key_slot`],
//! [`topic_slot`]). Questions about the topology (which node owns a slot,
//! which replica follows which primary) are asked of the cluster each
//! time, never answered from a map the kit keeps, and answered only once
//! every running node says the same: a test must not act on one node's
//! stale view while gossip is still spreading a change.
//!
//! Every node runs with:
//!
//! - `cluster-node-timeout 2000`: a crashed primary is promoted away in
//!   about 4 s instead of the default 15 s;
//! - `cluster-require-full-coverage no`: a shard that is down (its primary
//!   crashed, not yet replaced) does not take the others down with it, so
//!   a test can check that topics on other shards keep flowing;
//!   `cluster-allow-reads-when-down` keeps its default (`no`): a cluster
//!   that is really down refuses reads too;
//! - `cluster-allow-replica-migration no`: replicas stay with the primary
//!   they were given, and a primary that lost all its slots in a resharding
//!   stays a primary, so the topology changes only when a test changes it;
//! - `cluster-replica-validity-factor 0`: a replica always takes over from
//!   a crashed primary, however long its link was down (a paused test
//!   machine must not leave a shard without a primary);
//! - `repl-diskless-sync-delay 0`: a replica's full sync starts at once
//!   instead of after the default 5 s wait for more replicas;
//! - no persistence (`save ""`, `appendonly no`): a restarted node comes
//!   back empty and, as a replica, resyncs from its primary. Only
//!   `nodes.conf` (its identity and the cluster layout) survives a restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    net::TcpListener,
    ops::RangeInclusive,
    path::Path,
    time::Duration,
};

use futures_util::future::join_all;

use crate::{
    child::{kill_and_reap, wait_exit},
    cluster::info_field,
    eventually, free_port,
    logs::{create_log_file, tail},
    redis::RedisProcess,
    Resp, TIMEOUT,
};

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// How far above a node's port its cluster bus listens (Redis's default).
const BUS_PORT_OFFSET: u16 = 10000;

/// How long to wait for the cluster to form or settle after a change
/// (create: about 1 s, a rejoin with a full sync: about 2 s). Generous
/// because the machine may be busy building; a passing test never waits
/// this long.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for a failover: a manual one takes under 0.1 s, a
/// crashed primary's replica takes over after about twice the node timeout
/// (4 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one poll of one node may take before it counts as not
/// answering (and the poll is tried again).
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// Keys moved by one `MIGRATE`, as `redis-cli --cluster reshard` does.
const MIGRATE_BATCH: usize = 100;

/// What a cluster is made of; [`RedisCluster::start`] covers the usual
/// case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Primaries, each serving an equal share of the slots; at least 3
    /// (`redis-cli --cluster create` refuses fewer).
    pub primaries: usize,
    /// Replicas following each primary.
    pub replicas_per_primary: usize,
    /// `requirepass` (and `masterauth`) of every node, for herald's
    /// `redis.password`; `None` leaves the nodes open.
    pub password: Option<String>,
}

impl Default for ClusterOptions {
    /// 3 primaries with one replica each, no password.
    fn default() -> Self {
        Self {
            primaries: 3,
            replicas_per_primary: 1,
            password: None,
        }
    }
}

/// A node's role, as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// A primary. It may serve no slot: a crashed primary whose slots went
    /// to its replica stays a slot-less primary until it rejoins.
    Primary,
    /// A replica of the primary listening on `primary_port`.
    Replica {
        /// The port of the primary it follows.
        primary_port: u16,
    },
}

/// One node, as the whole cluster agrees it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The port its clients connect to (the bus is 10000 above).
    pub port: u16,
    /// Its cluster node id (40 hex digits), kept across restarts.
    pub id: String,
    /// Primary or replica.
    pub role: ClusterRole,
    /// The slots it serves (none for a replica), in ascending order.
    pub slots: Vec<RangeInclusive<u16>>,
    /// Whether the kit has it running (neither killed nor paused).
    pub running: bool,
}

/// A running Redis Cluster: its nodes are killed when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
    password: Option<String>,
    /// What each killed or paused primary served, and which nodes followed
    /// it, for [`RedisCluster::wait_promoted`].
    lost: BTreeMap<u16, Shard>,
}

/// A primary's slots and its replicas' ids, at the time it went away.
#[derive(Debug, Clone)]
struct Shard {
    slots: Vec<(u16, u16)>,
    replicas: Vec<String>,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas_per_primary` replicas
    /// each and waits until the cluster is settled (see
    /// [`RedisCluster::wait_settled`]).
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start_with`].
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        Self::start_with(ClusterOptions {
            primaries,
            replicas_per_primary,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts the cluster `options` describes: every node on a free port
    /// whose bus port (10000 above) is free too, then `redis-cli --cluster
    /// create`, then waits until it is settled.
    ///
    /// # Panics
    ///
    /// When there are fewer than 3 primaries, when `redis-server` or
    /// `redis-cli` is missing or fails (the message names the log), or when
    /// the cluster has not settled within 30 s.
    pub async fn start_with(options: ClusterOptions) -> Self {
        assert!(
            options.primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries, got {}",
            options.primaries
        );
        let count = options.primaries * (1 + options.replicas_per_primary);
        let password = options.password.clone();
        // Start-up is mostly waiting, so the nodes start at once.
        let nodes = join_all((0..count).map(|i| {
            let password = password.clone();
            async move {
                let label = format!("redis-cluster-node{i}");
                let args_password = password.clone();
                RedisProcess::start(&label, password, false, cluster_port, |port, dir| {
                    node_args(port, dir, args_password.as_deref())
                })
                .await
            }
        }))
        .await;
        let cluster = Self {
            nodes,
            password,
            lost: BTreeMap::new(),
        };
        cluster.create(options.replicas_per_primary).await;
        cluster.wait_settled().await;

        let nodes = cluster.nodes().await;
        let primaries: Vec<&ClusterNode> = nodes.iter().filter(|n| !n.slots.is_empty()).collect();
        assert_eq!(
            primaries.len(),
            options.primaries,
            "primaries serving slots in {nodes:#?}"
        );
        for primary in primaries {
            let replicas = nodes
                .iter()
                .filter(|n| {
                    n.role
                        == ClusterRole::Replica {
                            primary_port: primary.port,
                        }
                })
                .count();
            assert_eq!(
                replicas, options.replicas_per_primary,
                "replicas of {} in {nodes:#?}",
                primary.port
            );
        }
        cluster
    }

    /// Runs `redis-cli --cluster create` over every node; it assigns the
    /// slots, introduces the nodes and makes the replicas, then returns
    /// once the nodes agree on the slots (the replicas may still be
    /// syncing, and `cluster_state` may not be `ok` yet).
    async fn create(&self, replicas_per_primary: usize) {
        let (log_path, log) = create_log_file("redis-cli-cluster-create");
        let mut command = std::process::Command::new("redis-cli");
        command
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("duplicating the redis-cli log"))
            .stderr(log);
        if let Some(password) = &self.password {
            // Rather than `-a`, which makes redis-cli warn on every run.
            command.env("REDISCLI_AUTH", password);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-cli (apt-get install redis-tools): {e}"));
        let status = wait_exit(&mut child, SETTLE_TIMEOUT).await;
        if status.is_none() {
            kill_and_reap(&mut child);
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed ({status:?}); log {}:\n{}",
            log_path.display(),
            tail(&log_path, 30)
        );
    }

    /// Every node's port, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisProcess::port).collect()
    }

    /// `redis://127.0.0.1:<port>` of every node (killed ones included):
    /// seeds for a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// [`RedisCluster::seed_urls`] joined by commas, for
    /// `HERALD__REDIS__CLUSTER_NODES`.
    pub fn seeds_env(&self) -> String {
        self.seed_urls().join(",")
    }

    /// The nodes' password, when they have one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The file holding the output of the node on `port`.
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`.
    pub fn log_path(&self, port: u16) -> &Path {
        self.node(port).log_path()
    }

    /// Every node, as all running nodes agree they are, sorted by port.
    ///
    /// # Panics
    ///
    /// When the running nodes do not agree within 30 s.
    pub async fn nodes(&self) -> Vec<ClusterNode> {
        let view = self.agreed_view().await;
        let mut nodes: Vec<ClusterNode> = view
            .entries
            .iter()
            .map(|(id, entry)| ClusterNode {
                port: entry.port,
                id: id.clone(),
                role: match &entry.primary {
                    None => ClusterRole::Primary,
                    Some(primary) => ClusterRole::Replica {
                        primary_port: view.entries.get(primary).map_or(0, |p| p.port),
                    },
                },
                slots: entry.slots.iter().map(|&(a, b)| a..=b).collect(),
                running: self
                    .nodes
                    .iter()
                    .any(|n| n.port() == entry.port && n.is_running()),
            })
            .collect();
        nodes.sort_by_key(|n| n.port);
        nodes
    }

    /// The ports of the primaries serving at least one slot, ascending.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::nodes`].
    pub async fn primaries(&self) -> Vec<u16> {
        self.nodes()
            .await
            .into_iter()
            .filter(|n| n.role == ClusterRole::Primary && !n.slots.is_empty())
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the replicas following the primary on `primary_port`
    /// (killed ones included), ascending.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::nodes`].
    pub async fn replicas_of(&self, primary_port: u16) -> Vec<u16> {
        self.nodes()
            .await
            .into_iter()
            .filter(|n| n.role == ClusterRole::Replica { primary_port })
            .map(|n| n.port)
            .collect()
    }

    /// The port of the (first, by port) replica following the primary on
    /// `primary_port`.
    ///
    /// # Panics
    ///
    /// When it has no replica, or as [`RedisCluster::nodes`].
    pub async fn replica_of(&self, primary_port: u16) -> u16 {
        let replicas = self.replicas_of(primary_port).await;
        *replicas
            .first()
            .unwrap_or_else(|| panic!("the primary on {primary_port} has no replica"))
    }

    /// The port of the primary serving `slot`, as every running node
    /// agrees (during a migration: the source, until it is finished).
    ///
    /// # Panics
    ///
    /// When no node serves `slot`, or as [`RedisCluster::nodes`].
    pub async fn owner_of_slot(&self, slot: u16) -> u16 {
        let view = self.agreed_view().await;
        view.owner_of(slot)
            .unwrap_or_else(|| panic!("no node serves slot {slot}: {view:#?}"))
            .1
            .port
    }

    /// For each primary serving slots (ascending by port), the first
    /// `per_primary` topic names `<prefix>0`, `<prefix>1`, … whose slot it
    /// serves: topics spread over every shard.
    ///
    /// # Panics
    ///
    /// When some primary serves too few slots to find them, or as
    /// [`RedisCluster::nodes`].
    pub async fn topics_on_each_primary(
        &self,
        prefix: &str,
        per_primary: usize,
    ) -> Vec<(u16, Vec<String>)> {
        let view = self.agreed_view().await;
        let owners = view.slot_owners();
        let mut shards: BTreeMap<u16, Vec<String>> = view
            .entries
            .values()
            .filter(|e| e.primary.is_none() && !e.slots.is_empty())
            .map(|e| (e.port, Vec::new()))
            .collect();
        // Slots are spread evenly by CRC16, so a shard of n slots gets
        // about n/16384 of the names; a million names fill any shard that
        // serves a handful of slots.
        for i in 0..1_000_000 {
            if shards.values().all(|topics| topics.len() >= per_primary) {
                return shards.into_iter().collect();
            }
            let topic = format!("{prefix}{i}");
            let owner = owners[usize::from(topic_slot(&topic))];
            if let Some(topics) = shards.get_mut(&owner) {
                if topics.len() < per_primary {
                    topics.push(topic);
                }
            }
        }
        panic!("no {per_primary} topics `{prefix}N` found for every primary: {shards:?}");
    }

    /// Sends one command to the node on `port` (after `AUTH` when the
    /// cluster has a password) and returns its reply, errors such as
    /// `MOVED` included.
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`, or it does not
    /// answer within [`TIMEOUT`].
    pub async fn command(&self, port: u16, args: &[&str]) -> Resp {
        self.node(port).command(args).await
    }

    /// Waits until the cluster is settled: every running node answers,
    /// reports `cluster_state:ok`, and gives the same `CLUSTER NODES`
    /// layout (nodes, roles, slots); no running node is flagged failing or
    /// in handshake by any other; every slot is served by a running
    /// primary; and every running replica's link to its primary is up.
    ///
    /// # Panics
    ///
    /// When that has not happened within 30 s; the message has the last
    /// state seen.
    pub async fn wait_settled(&self) {
        eventually(
            SETTLE_TIMEOUT,
            &format!("the cluster on ports {:?} to settle", self.ports()),
            || self.settled_view(),
        )
        .await;
    }

    /// Makes the replica on `replica_port` take over from its primary with
    /// `CLUSTER FAILOVER` (the primary, which must be running, hands over
    /// without losing writes), then waits until the cluster is settled
    /// with it as the primary and the former primary as its replica.
    ///
    /// # Panics
    ///
    /// When the node is not a replica, refuses, or the failover does not
    /// happen within 30 s.
    pub async fn failover(&self, replica_port: u16) {
        let view = self.agreed_view().await;
        let (replica_id, replica) = view
            .by_port(replica_port)
            .unwrap_or_else(|| panic!("no node on {replica_port}: {view:#?}"));
        let replica_id = replica_id.to_owned();
        let primary_id = replica
            .primary
            .clone()
            .unwrap_or_else(|| panic!("the node on {replica_port} is not a replica"));
        let old_port = view.entries[&primary_id].port;
        let reply = self.command(replica_port, &["CLUSTER", "FAILOVER"]).await;
        assert_eq!(
            reply,
            Resp::Simple("OK".into()),
            "CLUSTER FAILOVER on {replica_port}"
        );
        eventually(
            FAILOVER_TIMEOUT,
            &format!("replica {replica_port} to take over from {old_port}"),
            || async {
                let view = self.settled_view().await?;
                let new = view.entries.get(&replica_id)?;
                let old = view.entries.get(&primary_id)?;
                let old_follows =
                    !self.node(old_port).is_running() || old.primary.as_ref() == Some(&replica_id);
                (new.primary.is_none() && !new.slots.is_empty() && old_follows).then_some(())
            },
        )
        .await;
    }

    /// Kills the node on `port` at once (SIGKILL), as a crash would. Its
    /// replica takes over after about 4 s when it was a primary
    /// ([`RedisCluster::wait_promoted`]).
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`, or the running
    /// nodes do not agree on the layout beforehand within 30 s.
    pub async fn kill(&mut self, port: u16) {
        self.remember_shard(port).await;
        self.node_mut(port).kill();
    }

    /// Freezes the node on `port` (SIGSTOP): its connections stay open and
    /// it answers nothing, not even the cluster bus, so after the node
    /// timeout (2 s) the others fail it over as if it had crashed.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::kill`].
    pub async fn pause(&mut self, port: u16) {
        self.remember_shard(port).await;
        self.node_mut(port).pause();
    }

    /// Lets a frozen node run again (SIGCONT). A primary that was failed
    /// over meanwhile learns so and becomes a replica; call
    /// [`RedisCluster::wait_settled`] to wait for that.
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`.
    pub fn resume(&mut self, port: u16) {
        self.node_mut(port).resume();
    }

    /// Starts the killed (or running: it is killed first) node on `port`
    /// again, on the same port and in the same directory: its `nodes.conf`
    /// gives it back its id and its view of the cluster, so a primary that
    /// was failed over rejoins as a replica of the node that took over.
    /// Its data is gone (no persistence); a replica resyncs. Waits until
    /// the cluster is settled.
    ///
    /// # Panics
    ///
    /// When it does not start (another process took its port or bus port)
    /// or the cluster has not settled within 30 s.
    pub async fn restart(&mut self, port: u16) {
        self.node_mut(port).restart(&[]).await;
        self.lost.remove(&port);
        self.wait_settled().await;
    }

    /// Waits until the slots the primary on `old_primary_port` served when
    /// it was killed or paused are served by one of its former replicas,
    /// and the cluster is settled (the old primary aside); returns the new
    /// primary's port.
    ///
    /// # Panics
    ///
    /// When that node was not a primary serving slots when it was killed
    /// or paused by [`RedisCluster::kill`] or [`RedisCluster::pause`], or
    /// no replica took over within 30 s.
    pub async fn wait_promoted(&self, old_primary_port: u16) -> u16 {
        let shard = self.lost.get(&old_primary_port).unwrap_or_else(|| {
            panic!(
                "the node on {old_primary_port} was not a primary serving slots \
                 when RedisCluster::kill or ::pause stopped it"
            )
        });
        eventually(
            FAILOVER_TIMEOUT,
            &format!("a replica of {old_primary_port} to take over its slots"),
            || async {
                let view = self.settled_view().await?;
                let owners = view.slot_owners();
                let (_, new) = shard
                    .replicas
                    .iter()
                    .filter_map(|id| view.entries.get_key_value(id))
                    .find(|(_, e)| e.primary.is_none())?;
                let all_moved = shard
                    .slots
                    .iter()
                    .flat_map(|&(a, b)| a..=b)
                    .all(|slot| owners[usize::from(slot)] == new.port);
                all_moved.then_some(new.port)
            },
        )
        .await
    }

    /// Moves `slot`, keys and all, from the primary serving it to the
    /// primary on `to_port` with the online resharding protocol (see
    /// [`RedisCluster::begin_migration`]), and waits until every node
    /// agrees on the new owner.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::begin_migration`] and [`SlotMigration::finish`].
    pub async fn migrate_slot(&self, slot: u16, to_port: u16) {
        self.begin_migration(slot, to_port).await.finish().await;
    }

    /// Starts moving `slot` to the primary on `to_port`: `CLUSTER SETSLOT
    /// <slot> IMPORTING <source>` on the target, then `MIGRATING <target>`
    /// on the source. From then on the source still serves the keys it
    /// holds and answers `-ASK` for the others, so a test can publish while
    /// keys move ([`SlotMigration::move_keys`]) before
    /// [`SlotMigration::finish`] hands the slot over.
    ///
    /// # Panics
    ///
    /// When `to_port` is not a primary, already serves the slot, or a node
    /// refuses.
    pub async fn begin_migration(&self, slot: u16, to_port: u16) -> SlotMigration<'_> {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} out of range");
        let view = self.agreed_view().await;
        let (source_id, source) = view
            .owner_of(slot)
            .unwrap_or_else(|| panic!("no node serves slot {slot}: {view:#?}"));
        let (target_id, target) = view
            .by_port(to_port)
            .unwrap_or_else(|| panic!("no node on {to_port}: {view:#?}"));
        assert!(
            target.primary.is_none(),
            "the node on {to_port} is a replica"
        );
        assert_ne!(source.port, to_port, "{to_port} already serves slot {slot}");
        let migration = SlotMigration {
            cluster: self,
            slot,
            source_port: source.port,
            target_port: to_port,
            target_id: target_id.to_owned(),
            others: view
                .entries
                .values()
                .filter(|e| e.primary.is_none() && e.port != source.port && e.port != to_port)
                .map(|e| e.port)
                .collect(),
        };
        let slot_arg = slot.to_string();
        // Importing first: once the source says `-ASK`, the target must
        // already accept the slot's keys.
        expect_ok(
            self.command(
                to_port,
                &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", source_id],
            )
            .await,
            "SETSLOT IMPORTING",
        );
        expect_ok(
            self.command(
                source.port,
                &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", target_id],
            )
            .await,
            "SETSLOT MIGRATING",
        );
        migration
    }

    /// Records which slots the node on `port` serves and which replicas
    /// follow it, before it goes away.
    async fn remember_shard(&mut self, port: u16) {
        let view = self.agreed_view().await;
        let (id, entry) = view
            .by_port(port)
            .unwrap_or_else(|| panic!("no node on {port}: {view:#?}"));
        if entry.primary.is_none() && !entry.slots.is_empty() {
            let replicas = view
                .entries
                .iter()
                .filter(|(_, e)| e.primary.as_deref() == Some(id))
                .map(|(id, _)| id.clone())
                .collect();
            let slots = entry.slots.clone();
            self.lost.insert(port, Shard { slots, replicas });
        }
    }

    fn node(&self, port: u16) -> &RedisProcess {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"))
    }

    /// The layout every running node gives, once they all give the same.
    async fn agreed_view(&self) -> View {
        eventually(
            SETTLE_TIMEOUT,
            &format!("the nodes on ports {:?} to agree", self.ports()),
            || async {
                let mut agreed: Option<View> = None;
                for node in self.nodes.iter().filter(|n| n.is_running()) {
                    let reply = node
                        .try_command(&["CLUSTER", "NODES"], POLL_TIMEOUT)
                        .await
                        .ok()?;
                    let view = View::parse(&bulk_text(&reply)?);
                    match &agreed {
                        Some(first) if first.entries != view.entries => return None,
                        Some(_) => {}
                        None => agreed = Some(view),
                    }
                }
                agreed
            },
        )
        .await
    }

    /// The layout, when the cluster is settled (see
    /// [`RedisCluster::wait_settled`]); `None` while it is not.
    async fn settled_view(&self) -> Option<View> {
        let running: Vec<&RedisProcess> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let mut agreed: Option<View> = None;
        for node in &running {
            let replies = node
                .pipeline(
                    &[
                        &["CLUSTER", "INFO"][..],
                        &["CLUSTER", "NODES"],
                        &["INFO", "replication"],
                    ],
                    POLL_TIMEOUT,
                )
                .await
                .ok()?;
            let [info, nodes, replication] = replies.as_slice() else {
                return None;
            };
            if info_field(&bulk_text(info)?, "cluster_state") != Some("ok") {
                return None;
            }
            let view = View::parse(&bulk_text(nodes)?);
            let replication = bulk_text(replication)?;
            if let Some(primary) = &view.entries.get(&view.myself)?.primary {
                // Following the primary the cluster says, and in sync.
                let primary_port = view.entries.get(primary)?.port.to_string();
                if info_field(&replication, "master_port") != Some(&primary_port)
                    || info_field(&replication, "master_link_status") != Some("up")
                {
                    return None;
                }
            }
            match &agreed {
                Some(first) if first.entries != view.entries => return None,
                Some(_) => {}
                None => agreed = Some(view),
            }
        }
        let view = agreed?;
        if view.entries.len() != self.nodes.len() {
            // A node not met yet, or one still in handshake under a
            // temporary id.
            return None;
        }
        for node in &running {
            let (id, _) = view.by_port(node.port())?;
            // Any node's flags will do: a running node flagged failing by
            // anyone is not settled.
            if view.flags[id]
                .iter()
                .any(|f| UNHEALTHY.contains(&f.as_str()))
            {
                return None;
            }
        }
        let owners = view.slot_owners();
        let all_served = owners
            .iter()
            .all(|&port| running.iter().any(|n| n.port() == port));
        all_served.then_some(view)
    }
}

/// Flags of a node that others cannot use (yet).
const UNHEALTHY: [&str; 4] = ["fail", "fail?", "handshake", "noaddr"];

/// A slot on its way between two primaries (from
/// [`RedisCluster::begin_migration`]): the source serves the keys it still
/// holds and redirects the others with `-ASK`. Dropping it without
/// [`SlotMigration::finish`] leaves the slot half-moved.
#[derive(Debug)]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    source_port: u16,
    target_port: u16,
    target_id: String,
    /// The other primaries when it began, told the new owner directly.
    others: Vec<u16>,
}

impl SlotMigration<'_> {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The primary the slot moves from.
    pub fn source_port(&self) -> u16 {
        self.source_port
    }

    /// The primary the slot moves to.
    pub fn target_port(&self) -> u16 {
        self.target_port
    }

    /// How many of the slot's keys the source still holds
    /// (`CLUSTER COUNTKEYSINSLOT`).
    ///
    /// # Panics
    ///
    /// When the source does not answer with a count.
    pub async fn keys_left(&self) -> usize {
        let slot = self.slot.to_string();
        match self
            .cluster
            .command(self.source_port, &["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .await
        {
            Resp::Integer(n) => usize::try_from(n).expect("a count is not negative"),
            other => panic!("CLUSTER COUNTKEYSINSLOT {slot}: {other:?}"),
        }
    }

    /// Moves up to `max` of the slot's keys from the source to the target
    /// (`CLUSTER GETKEYSINSLOT`, then `MIGRATE … KEYS`, 100 at a time);
    /// returns how many moved, 0 once the source holds none.
    ///
    /// # Panics
    ///
    /// When a node refuses (for example `-BUSYKEY`: the target already has
    /// a key of that name).
    pub async fn move_keys(&self, max: usize) -> usize {
        let source = self.cluster.node(self.source_port);
        let slot = self.slot.to_string();
        let mut moved = 0;
        while moved < max {
            let batch = (max - moved).min(MIGRATE_BATCH).to_string();
            let reply = source
                .command(&["CLUSTER", "GETKEYSINSLOT", &slot, &batch])
                .await;
            let Resp::Array(Some(keys)) = reply else {
                panic!("CLUSTER GETKEYSINSLOT {slot}: {reply:?}");
            };
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<Vec<u8>> = [
                "MIGRATE",
                "127.0.0.1",
                &self.target_port.to_string(),
                "",
                "0",
                "5000",
            ]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
            if let Some(password) = self.cluster.password() {
                args.push(b"AUTH".to_vec());
                args.push(password.as_bytes().to_vec());
            }
            args.push(b"KEYS".to_vec());
            for key in &keys {
                let Resp::Bulk(Some(key)) = key else {
                    panic!("CLUSTER GETKEYSINSLOT {slot}: {key:?} is not a key");
                };
                args.push(key.clone());
            }
            let replies = source
                .pipeline(&[&args[..]], TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("MIGRATE on {}: {e}", self.source_port));
            // NOKEY: the keys were deleted (or expired) meanwhile.
            assert!(
                matches!(&replies[..], [Resp::Simple(s)] if s == "OK" || s == "NOKEY"),
                "MIGRATE of slot {slot} from {} to {}: {replies:?}",
                self.source_port,
                self.target_port
            );
            moved += keys.len();
        }
        moved
    }

    /// Moves the keys left, then gives the slot to the target with
    /// `CLUSTER SETSLOT <slot> NODE <target>` on the target, the source and
    /// every other running primary, and waits until the cluster is settled
    /// with the target serving it.
    ///
    /// # Panics
    ///
    /// When a node refuses, or the cluster has not settled within 30 s.
    pub async fn finish(self) {
        self.move_keys(usize::MAX).await;
        let slot = self.slot.to_string();
        let setslot = ["CLUSTER", "SETSLOT", &slot, "NODE", &self.target_id];
        // The target first: it bumps its config epoch, so its claim wins
        // over the source's older one everywhere.
        expect_ok(
            self.cluster.command(self.target_port, &setslot).await,
            "SETSLOT NODE on the target",
        );
        expect_ok(
            self.cluster.command(self.source_port, &setslot).await,
            "SETSLOT NODE on the source",
        );
        // The others would learn it by gossip; telling them saves a
        // round of redirections.
        for &port in &self.others {
            let node = self.cluster.node(port);
            if node.is_running() {
                expect_ok(node.command(&setslot).await, "SETSLOT NODE on a primary");
            }
        }
        eventually(
            SETTLE_TIMEOUT,
            &format!("slot {slot} to be served by {}", self.target_port),
            || async {
                let view = self.cluster.settled_view().await?;
                (view.slot_owners()[usize::from(self.slot)] == self.target_port).then_some(())
            },
        )
        .await;
    }
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part
/// between the first `{` and the next `}`, when not empty) or else of the
/// whole key, modulo 16384, as Redis Cluster computes it.
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    let key = key.as_ref();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let len = rest.iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &rest[..len])
    });
    crc16(tagged.unwrap_or(key)) % CLUSTER_SLOTS
}

/// The hash slot of every key of `topic` (they all carry `{<topic>}` as
/// hash tag, so a topic lives on one shard): for a valid topic name, which
/// has no braces, the slot of the name itself.
pub fn topic_slot(topic: &str) -> u16 {
    key_slot(format!("herald:{{{topic}}}:events"))
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), bit by bit: the kit
/// hashes a few thousand keys at most.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

/// A port for a cluster node: free, and with its bus port (10000 above)
/// free too.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else {
            continue;
        };
        if port != 26379 && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
    panic!("no free port with a free port 10000 above it");
}

/// The command line of a cluster node on `port` working in `dir` (see the
/// module documentation for the settings).
fn node_args(port: u16, dir: &Path, password: Option<&str>) -> Vec<OsString> {
    let port = port.to_string();
    let mut args: Vec<OsString> = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        "--cluster-require-full-coverage",
        "no",
        "--cluster-allow-replica-migration",
        "no",
        "--cluster-replica-validity-factor",
        "0",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if let Some(password) = password {
        for arg in ["--requirepass", password, "--masterauth", password] {
            args.push(arg.into());
        }
    }
    args.push("--dir".into());
    args.push(dir.into());
    args
}

/// Panics unless `reply` is `+OK`.
fn expect_ok(reply: Resp, what: &str) {
    assert_eq!(reply, Resp::Simple("OK".into()), "{what}");
}

/// The text of a bulk-string reply; `None` for anything else (an error
/// while a node is still starting, for example).
fn bulk_text(reply: &Resp) -> Option<String> {
    match reply {
        Resp::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// One node's `CLUSTER NODES` answer.
#[derive(Debug, Clone)]
struct View {
    /// What must be the same on every node: each node's address, role and
    /// slots, by node id.
    entries: BTreeMap<String, Entry>,
    /// Each node's flags, as this one sees them (`fail?` is one node's
    /// opinion, so flags are not compared).
    flags: BTreeMap<String, BTreeSet<String>>,
    /// The id of the node that answered.
    myself: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    port: u16,
    /// The id of the primary it follows; `None` for a primary.
    primary: Option<String>,
    /// Slot ranges served, ascending.
    slots: Vec<(u16, u16)>,
}

impl View {
    /// Parses lines of `<id> <ip:port@cport[,hostname]> <flags> <primary>
    /// <ping> <pong> <epoch> <link> <slot>…`. Epochs, timestamps and link
    /// states are left out: they differ between nodes of a settled cluster.
    /// So are the `[slot->-id]` markers of a slot being migrated, which
    /// only its source and target show.
    fn parse(text: &str) -> Self {
        let mut view = Self {
            entries: BTreeMap::new(),
            flags: BTreeMap::new(),
            myself: String::new(),
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                continue;
            }
            let id = fields[0].to_owned();
            let port = fields[1]
                .split([',', '@'])
                .next()
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|port| port.parse().ok())
                .unwrap_or(0);
            let mut flags: BTreeSet<String> = fields[2].split(',').map(str::to_owned).collect();
            if flags.remove("myself") {
                view.myself.clone_from(&id);
            }
            let primary =
                (flags.contains("slave") && fields[3] != "-").then(|| fields[3].to_owned());
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s, s));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            view.entries.insert(
                id.clone(),
                Entry {
                    port,
                    primary,
                    slots,
                },
            );
            view.flags.insert(id, flags);
        }
        view
    }

    fn by_port(&self, port: u16) -> Option<(&str, &Entry)> {
        self.entries
            .iter()
            .find(|(_, e)| e.port == port)
            .map(|(id, e)| (id.as_str(), e))
    }

    fn owner_of(&self, slot: u16) -> Option<(&str, &Entry)> {
        self.entries
            .iter()
            .find(|(_, e)| e.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|(id, e)| (id.as_str(), e))
    }

    /// The port serving each slot; 0 where none does.
    fn slot_owners(&self) -> Vec<u16> {
        let mut owners = vec![0; usize::from(CLUSTER_SLOTS)];
        for entry in self.entries.values() {
            for &(a, b) in &entry.slots {
                for slot in a..=b.min(CLUSTER_SLOTS - 1) {
                    owners[usize::from(slot)] = entry.port;
                }
            }
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_crc16_of_the_hash_tag() {
        // Answers of CLUSTER KEYSLOT from redis-server 7.0.
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot(""), 0);
        assert_eq!(key_slot("{user1000}.following"), 3443);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot("foo{}{bar}"), 8363);
        assert_eq!(key_slot("foo{{bar}}zap"), 4015);
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
        assert_eq!(topic_slot("foo"), 12182);
        assert_eq!(topic_slot("a/b:c"), key_slot("a/b:c"));
    }

    #[test]
    fn cluster_nodes_answers_are_read_without_local_details() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n\
67ed 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922\n\
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [7001->-67ed]\n\
6ec2 127.0.0.1:30005@40005 master,fail - 0 0 5 disconnected\n";
        let view = View::parse(text);
        assert_eq!(view.myself, "e7d1");
        assert_eq!(view.entries.len(), 4);
        assert_eq!(view.entries["07c3"].primary.as_deref(), Some("e7d1"));
        assert_eq!(view.entries["67ed"].port, 30002);
        assert_eq!(view.entries["e7d1"].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(view.flags["6ec2"].contains("fail"));
        assert!(!view.flags["e7d1"].contains("myself"));
        let owners = view.slot_owners();
        assert_eq!(owners[7000], 30001);
        assert_eq!(owners[7001], 30002);
        assert_eq!(owners[12000], 0);
        assert_eq!(view.owner_of(6000).map(|(id, _)| id), Some("67ed"));
    }
}
