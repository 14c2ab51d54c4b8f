//! A real Redis Sentinel deployment for tests: one primary and its
//! replicas, watched by three sentinels, every one a `redis-server` on a
//! free loopback port in its own fresh directory; and the faults a
//! deployment meets: a failover on demand, a crashed or frozen primary
//! replaced by a vote of the sentinels, a node coming back.
//!
//! Owns those processes and their config files. Each node gets its own
//! writable config file, because Sentinel rewrites them: a sentinel records
//! the sentinels and replicas it found and the current primary in its own,
//! and sends `CONFIG REWRITE` to a data node it reconfigures.
//!
//! The sentinels watch the primary with a quorum of 2 of 3,
//! `down-after-milliseconds 1000` (a crashed primary is down for them
//! after 1 s instead of 30 s) and `failover-timeout 5000` (a failover that
//! stalls, or a split vote, is retried after 10 s instead of 6 minutes).
//! Data nodes run with `repl-diskless-sync-delay 0` (a replica's full sync
//! starts at once, not after 5 s) and without persistence: a restarted
//! node comes back empty and resyncs.
//!
//! Which node is the primary is always asked of the sentinels, and only
//! taken once every running sentinel gives the same answer.

use std::{collections::BTreeMap, ffi::OsString, path::Path, time::Duration};

use futures_util::future::join_all;

use crate::{
    cluster::info_field,
    eventually, free_port,
    redis::RedisProcess,
    resp::{self, Resp},
    TIMEOUT,
};

/// Sentinels watching the primary.
const SENTINELS: usize = 3;

/// Sentinels that must agree the primary is down before one of them fails
/// it over.
const QUORUM: usize = 2;

/// How long to wait for the deployment to form or a node to rejoin: the
/// sentinels find each other through hello messages sent every 2 s.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for a new primary: a crashed one is replaced in 2–5 s,
/// but a split vote is only retried after twice the failover timeout
/// (10 s).
const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// How long to wait for Sentinel to turn a former primary that is still
/// running into a replica: it waits 8 s after seeing it claim to be a
/// primary, and looks only every 10 s.
const DEMOTION_WAIT: Duration = Duration::from_secs(60);

/// How long one poll of one process may take before it counts as not
/// answering (and the poll is tried again).
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// What a Sentinel deployment is made of; the default is what most tests
/// need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    /// Replicas of the primary (at least one, for a failover to have a
    /// node to promote).
    pub replicas: usize,
    /// The name the sentinels monitor the primary under
    /// (`redis.sentinel_master`).
    pub master_name: String,
    /// `requirepass` and `masterauth` of the data nodes (herald's
    /// `redis.password`); the sentinels get it as `sentinel auth-pass`.
    /// Without spaces or quotes: Sentinel 7.0 writes it back unquoted when
    /// it rewrites its config file, which a restart then cannot read.
    pub password: Option<String>,
    /// `requirepass` of the sentinels themselves
    /// (`redis.sentinel_password`); they get it as `sentinel sentinel-pass`
    /// to talk to each other. Without spaces or quotes, as `password`.
    pub sentinel_password: Option<String>,
}

impl Default for SentinelOptions {
    /// One replica, master name `herald`, no passwords.
    fn default() -> Self {
        Self {
            replicas: 1,
            master_name: "herald".into(),
            password: None,
            sentinel_password: None,
        }
    }
}

/// A running Sentinel deployment: its processes are killed when it is
/// dropped.
#[derive(Debug)]
pub struct RedisSentinel {
    options: SentinelOptions,
    /// The data nodes; the first started as the primary.
    data: Vec<RedisProcess>,
    sentinels: Vec<RedisProcess>,
}

impl RedisSentinel {
    /// Starts the primary, then its replicas, then three sentinels
    /// monitoring it, and waits until the deployment has formed: every
    /// sentinel names the primary, `SENTINEL CKQUORUM` passes, each
    /// sentinel knows the two others and every replica, and every replica
    /// is in sync.
    ///
    /// # Panics
    ///
    /// When a password has spaces or quotes (see [`SentinelOptions`]),
    /// `redis-server` is missing or a process does not start (the message
    /// names its log), or the deployment has not formed within 30 s.
    pub async fn start(options: SentinelOptions) -> Self {
        // Sentinel 7.0 writes `sentinel auth-pass` and `sentinel
        // sentinel-pass` back unquoted when it rewrites its config file, so
        // a sentinel restarted with such a password fails to start.
        for password in [&options.password, &options.sentinel_password]
            .into_iter()
            .flatten()
        {
            assert!(
                !password.contains(|c: char| c.is_whitespace() || "\"'\\".contains(c)),
                "Sentinel cannot restart with a password containing spaces or quotes: \
                 {password:?}"
            );
        }
        let password = options.password.clone();
        let primary = start_data_node(0, password.clone(), None).await;
        let primary_port = primary.port();
        let mut data = vec![primary];
        data.extend(
            join_all(
                (1..=options.replicas)
                    .map(|i| start_data_node(i, password.clone(), Some(primary_port))),
            )
            .await,
        );
        // Sentinels learn the replicas from the primary's INFO: start them
        // once the replicas are there to be seen.
        eventually(
            FORM_TIMEOUT,
            "the replicas to sync with the primary",
            || async {
                for replica in &data[1..] {
                    if !follows(replica, primary_port).await {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        let sentinels = join_all((0..SENTINELS).map(|i| {
            let options = options.clone();
            async move {
                let label = format!("redis-sentinel{i}");
                let config_options = options.clone();
                RedisProcess::start(
                    &label,
                    options.sentinel_password,
                    true,
                    sentinel_port,
                    |port, dir| sentinel_config(port, dir, &config_options, primary_port),
                )
                .await
            }
        }))
        .await;
        let deployment = Self {
            options,
            data,
            sentinels,
        };
        eventually(
            FORM_TIMEOUT,
            &format!(
                "sentinels {:?} to agree on the primary {primary_port} and its replicas",
                deployment.sentinel_ports()
            ),
            || deployment.formed(primary_port),
        )
        .await;
        deployment
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(RedisProcess::port).collect()
    }

    /// `redis://127.0.0.1:<port>` of every sentinel, for
    /// `redis.sentinel_nodes`.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// [`RedisSentinel::sentinel_urls`] joined by commas, for an
    /// environment variable.
    pub fn sentinels_env(&self) -> String {
        self.sentinel_urls().join(",")
    }

    /// The name the sentinels monitor the primary under.
    pub fn master_name(&self) -> &str {
        &self.options.master_name
    }

    /// The data nodes' password, when they have one.
    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// The sentinels' own password, when they have one.
    pub fn sentinel_password(&self) -> Option<&str> {
        self.options.sentinel_password.as_deref()
    }

    /// The data nodes' ports (the primary's and the replicas'), in start
    /// order: the first was the primary at start.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(RedisProcess::port).collect()
    }

    /// The file holding the output of the process on `port`.
    ///
    /// # Panics
    ///
    /// When no process of this deployment listens on `port`.
    pub fn log_path(&self, port: u16) -> &Path {
        self.process(port).log_path()
    }

    /// The primary's port, as every running sentinel names it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    ///
    /// # Panics
    ///
    /// When the sentinels do not agree within 30 s.
    pub async fn primary_port(&self) -> u16 {
        eventually(
            FAILOVER_WAIT,
            "the sentinels to agree on the primary",
            || self.agreed_primary(),
        )
        .await
    }

    /// The ports of the running data nodes that say they are replicas
    /// (`ROLE`), ascending. Right after [`RedisSentinel::failover`] the old
    /// primary is not one yet (see [`RedisSentinel::wait_replicating`]).
    pub async fn replica_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for node in self.data.iter().filter(|n| n.is_running()) {
            if let Ok(Resp::Array(Some(role))) = node.try_command(&["ROLE"], TIMEOUT).await {
                if role.first() == Some(&Resp::Bulk(Some(b"slave".to_vec()))) {
                    ports.push(node.port());
                }
            }
        }
        ports.sort_unstable();
        ports
    }

    /// Sends one command to the process on `port` (after `AUTH` with the
    /// data nodes' or the sentinels' password, when it has one) and
    /// returns its reply, errors included.
    ///
    /// # Panics
    ///
    /// When no process of this deployment listens on `port`, it refuses
    /// the password, or it does not answer within [`TIMEOUT`].
    pub async fn command(&self, port: u16, args: &[&str]) -> Resp {
        self.process(port).command(args).await
    }

    /// Sends one command to the process on `port` without `AUTH`, to see
    /// a password required (`-NOAUTH`).
    ///
    /// # Panics
    ///
    /// When it does not answer within [`TIMEOUT`].
    pub async fn command_without_auth(&self, port: u16, args: &[&str]) -> Resp {
        let addr = self.process(port).addr();
        resp::command(addr, args, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {port}: {e}"))
    }

    /// Has a sentinel fail the primary over (`SENTINEL FAILOVER`, retried
    /// while it answers `-NOGOODSLAVE` because it has not yet seen a
    /// replica fit to promote), then waits as
    /// [`RedisSentinel::wait_new_primary`] does; returns the new primary's
    /// port.
    ///
    /// The old primary is not told: it stays a primary, serving its
    /// clients, until Sentinel turns it into a replica about 10 s later (up
    /// to 20 s; [`RedisSentinel::wait_replicating`] waits for that).
    ///
    /// # Panics
    ///
    /// When no sentinel accepts, or there is no new primary within 30 s.
    pub async fn failover(&self) -> u16 {
        let old = self.primary_port().await;
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .expect("a running sentinel");
        let name = self.master_name();
        eventually(
            FAILOVER_WAIT,
            "a sentinel to accept SENTINEL FAILOVER",
            || async {
                match sentinel
                    .try_command(&["SENTINEL", "FAILOVER", name], POLL_TIMEOUT)
                    .await
                    .ok()?
                {
                    Resp::Simple(ok) if ok == "OK" => Some(()),
                    Resp::Error(e) if e.starts_with("NOGOODSLAVE") || e.starts_with("INPROG") => {
                        None
                    }
                    other => panic!("SENTINEL FAILOVER {name}: {other:?}"),
                }
            },
        )
        .await;
        self.wait_new_primary(old).await
    }

    /// Kills the process (data node or sentinel) on `port` at once
    /// (SIGKILL), as a crash would.
    ///
    /// # Panics
    ///
    /// When no process of this deployment listens on `port`.
    pub fn kill(&mut self, port: u16) {
        self.process_mut(port).kill();
    }

    /// Kills the primary (SIGKILL) and returns its port; the sentinels
    /// elect a replacement within a few seconds
    /// ([`RedisSentinel::wait_new_primary`]).
    ///
    /// # Panics
    ///
    /// As [`RedisSentinel::primary_port`].
    pub async fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port().await;
        self.kill(port);
        port
    }

    /// Waits until every running sentinel names a primary other than
    /// `old_primary_port`, that node says it is a primary (`ROLE`), and
    /// every other running data node but the old primary replicates from
    /// it; returns its port.
    ///
    /// # Panics
    ///
    /// When that has not happened within 30 s.
    pub async fn wait_new_primary(&self, old_primary_port: u16) -> u16 {
        eventually(
            FAILOVER_WAIT,
            &format!("the sentinels to replace the primary {old_primary_port}"),
            || async {
                let new = self
                    .agreed_primary()
                    .await
                    .filter(|&p| p != old_primary_port)?;
                let role = self
                    .data_node(new)?
                    .try_command(&["ROLE"], POLL_TIMEOUT)
                    .await
                    .ok()?;
                let Resp::Array(Some(role)) = role else {
                    return None;
                };
                if role.first() != Some(&Resp::Bulk(Some(b"master".to_vec()))) {
                    return None;
                }
                for node in self.data.iter().filter(|n| n.is_running()) {
                    if ![old_primary_port, new].contains(&node.port()) && !follows(node, new).await
                    {
                        return None;
                    }
                }
                Some(new)
            },
        )
        .await
    }

    /// Starts the killed (or running: it is killed first) process on
    /// `port` again, on the same port with the same config file, which
    /// Sentinel may have rewritten meanwhile.
    ///
    /// A data node other than the current primary comes back as its
    /// replica: a former primary is started with `--replicaof` the current
    /// one, which is what Sentinel would tell it, but only about 10 s after
    /// it came back as a second, empty primary. Waits until it is in sync
    /// and every sentinel lists it as a healthy replica (as
    /// [`RedisSentinel::wait_replicating`]). The current primary itself
    /// (killed before the sentinels replaced it) comes back as the primary,
    /// empty. A sentinel: waits until it names the same primary as the
    /// others again.
    ///
    /// # Panics
    ///
    /// When it does not start, or does not rejoin within 60 s.
    pub async fn restart(&mut self, port: u16) {
        if self.data_node(port).is_some() {
            let primary = self.primary_port().await;
            if primary == port {
                self.process_mut(port).restart(&[]).await;
            } else {
                let primary_arg = primary.to_string();
                self.process_mut(port)
                    .restart(&["--replicaof", "127.0.0.1", &primary_arg])
                    .await;
                self.wait_replicating(port).await;
            }
        } else {
            self.process_mut(port).restart(&[]).await;
            self.primary_port().await;
        }
    }

    /// Freezes the process on `port` (SIGSTOP): its connections stay open
    /// and it answers nothing. A frozen primary is down for the sentinels
    /// after 1 s, and replaced.
    ///
    /// # Panics
    ///
    /// When no process of this deployment listens on `port`.
    pub fn pause(&mut self, port: u16) {
        self.process_mut(port).pause();
    }

    /// Lets a frozen process run again (SIGCONT). A primary replaced
    /// meanwhile goes on as a primary until Sentinel turns it into a
    /// replica ([`RedisSentinel::wait_replicating`]).
    ///
    /// # Panics
    ///
    /// When no process of this deployment listens on `port`.
    pub fn resume(&mut self, port: u16) {
        self.process_mut(port).resume();
    }

    /// Waits until the data node on `port` replicates from the primary the
    /// sentinels name, in sync, and every running sentinel lists it as a
    /// replica that is neither down nor disconnected (so a failover can
    /// promote it). Waits up to 60 s, since Sentinel takes 10–20 s to turn
    /// a former primary that is still running into a replica.
    ///
    /// # Panics
    ///
    /// When that has not happened within 60 s.
    pub async fn wait_replicating(&self, port: u16) {
        let node = self
            .data_node(port)
            .unwrap_or_else(|| panic!("no data node on port {port}"));
        eventually(
            DEMOTION_WAIT,
            &format!("the data node {port} to replicate from the primary"),
            || async {
                let primary = self.agreed_primary().await?;
                if primary == port || !follows(node, primary).await {
                    return None;
                }
                for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                    let reply = sentinel
                        .try_command(&["SENTINEL", "REPLICAS", self.master_name()], POLL_TIMEOUT)
                        .await
                        .ok()?;
                    let healthy = replica_entries(&reply)?
                        .iter()
                        .any(|r| field_is(r, "port", port) && field_is(r, "flags", "slave"));
                    if !healthy {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// The primary every running sentinel names; `None` while they differ
    /// or one does not answer.
    async fn agreed_primary(&self) -> Option<u16> {
        let mut agreed = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let reply = sentinel
                .try_command(
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name()],
                    POLL_TIMEOUT,
                )
                .await
                .ok()?;
            let port = addr_port(&reply)?;
            if agreed.is_some_and(|p| p != port) {
                return None;
            }
            agreed = Some(port);
        }
        agreed
    }

    /// `Some` once the deployment has formed around `primary` (see
    /// [`RedisSentinel::start`]).
    async fn formed(&self, primary: u16) -> Option<()> {
        let replicas: Vec<&RedisProcess> = self
            .data
            .iter()
            .filter(|n| n.is_running() && n.port() != primary)
            .collect();
        for replica in &replicas {
            if !follows(replica, primary).await {
                return None;
            }
        }
        let name = self.master_name();
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let replies = sentinel
                .pipeline(
                    &[
                        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name][..],
                        &["SENTINEL", "CKQUORUM", name],
                        &["SENTINEL", "MASTER", name],
                        &["SENTINEL", "REPLICAS", name],
                    ],
                    POLL_TIMEOUT,
                )
                .await
                .ok()?;
            let [addr, quorum, master, known_replicas] = replies.as_slice() else {
                return None;
            };
            if addr_port(addr)? != primary
                || !matches!(quorum, Resp::Simple(ok) if ok.starts_with("OK"))
            {
                return None;
            }
            let master = fields(master)?;
            if master.get("flags")? != "master"
                || master.get("num-other-sentinels")? != &(SENTINELS - 1).to_string()
            {
                return None;
            }
            let known_replicas = replica_entries(known_replicas)?;
            for replica in &replicas {
                let known = known_replicas.iter().any(|r| {
                    field_is(r, "port", replica.port())
                        && field_is(r, "flags", "slave")
                        && field_is(r, "master-link-status", "ok")
                        && field_is(r, "master-port", primary)
                });
                if !known {
                    return None;
                }
            }
        }
        Some(())
    }

    fn data_node(&self, port: u16) -> Option<&RedisProcess> {
        self.data.iter().find(|n| n.port() == port)
    }

    fn process(&self, port: u16) -> &RedisProcess {
        self.data
            .iter()
            .chain(&self.sentinels)
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no process of this deployment on port {port}"))
    }

    fn process_mut(&mut self, port: u16) -> &mut RedisProcess {
        self.data
            .iter_mut()
            .chain(&mut self.sentinels)
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no process of this deployment on port {port}"))
    }
}

/// Starts data node number `index`, a replica of `primary` when given.
async fn start_data_node(
    index: usize,
    password: Option<String>,
    primary: Option<u16>,
) -> RedisProcess {
    let label = format!("redis-sentinel-data{index}");
    let config_password = password.clone();
    RedisProcess::start(&label, password, false, sentinel_port, |port, dir| {
        data_config(port, dir, config_password.as_deref(), primary)
    })
    .await
}

/// Whether `node` answers that it replicates from `primary`, in sync.
async fn follows(node: &RedisProcess, primary: u16) -> bool {
    let Ok(Resp::Bulk(Some(info))) = node
        .try_command(&["INFO", "replication"], POLL_TIMEOUT)
        .await
    else {
        return false;
    };
    let info = String::from_utf8_lossy(&info);
    info_field(&info, "role") == Some("slave")
        && info_field(&info, "master_port") == Some(&primary.to_string())
        && info_field(&info, "master_link_status") == Some("up")
}

/// A free port that is neither Redis's nor Sentinel's default.
fn sentinel_port() -> u16 {
    loop {
        let port = free_port();
        if port != 26379 {
            return port;
        }
    }
}

/// What every process of the topology is told: its port and directory, on
/// loopback, in the foreground.
fn process_config(port: u16, dir: &Path) -> String {
    format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode no\n\
         daemonize no\n\
         dir {}\n",
        quote(&dir.to_string_lossy())
    )
}

/// Writes the config file of a data node on `port` into `dir` and returns
/// the arguments that start it from there.
fn data_config(
    port: u16,
    dir: &Path,
    password: Option<&str>,
    primary: Option<u16>,
) -> Vec<OsString> {
    let mut config = process_config(port, dir);
    config.push_str(
        "save \"\"\n\
         appendonly no\n\
         repl-diskless-sync-delay 0\n",
    );
    if let Some(password) = password {
        // masterauth on the primary too: it becomes a replica after a
        // failover.
        let password = quote(password);
        config.push_str(&format!("requirepass {password}\nmasterauth {password}\n"));
    }
    if let Some(primary) = primary {
        config.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
    }
    write_config(dir, "redis.conf", &config)
}

/// Writes the config file of a sentinel on `port` into `dir` and returns
/// the arguments that start it from there.
fn sentinel_config(
    port: u16,
    dir: &Path,
    options: &SentinelOptions,
    primary: u16,
) -> Vec<OsString> {
    let name = &options.master_name;
    let mut config = process_config(port, dir);
    config.push_str(&format!(
        "sentinel monitor {name} 127.0.0.1 {primary} {QUORUM}\n\
         sentinel down-after-milliseconds {name} 1000\n\
         sentinel failover-timeout {name} 5000\n\
         sentinel parallel-syncs {name} 1\n"
    ));
    if let Some(password) = &options.password {
        config.push_str(&format!("sentinel auth-pass {name} {}\n", quote(password)));
    }
    if let Some(password) = &options.sentinel_password {
        // The sentinels ask each other whether the primary is down, and
        // vote: each needs the others' password.
        let password = quote(password);
        config.push_str(&format!(
            "requirepass {password}\nsentinel sentinel-pass {password}\n"
        ));
    }
    let mut args = write_config(dir, "sentinel.conf", &config);
    args.push("--sentinel".into());
    args
}

/// Writes `text` to `dir/name` and returns its path as the first argument
/// of `redis-server`.
fn write_config(dir: &Path, name: &str, text: &str) -> Vec<OsString> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    vec![path.into()]
}

/// `value` as a double-quoted config argument.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The port of a `SENTINEL GET-MASTER-ADDR-BY-NAME` answer.
fn addr_port(reply: &Resp) -> Option<u16> {
    let Resp::Array(Some(addr)) = reply else {
        return None;
    };
    let [_, Resp::Bulk(Some(port))] = addr.as_slice() else {
        return None;
    };
    std::str::from_utf8(port).ok()?.parse().ok()
}

/// A flat array of field/value pairs (`SENTINEL MASTER`) as a map.
fn fields(reply: &Resp) -> Option<BTreeMap<String, String>> {
    let Resp::Array(Some(items)) = reply else {
        return None;
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [Resp::Bulk(Some(k)), Resp::Bulk(Some(v))] => Some((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The entries of a `SENTINEL REPLICAS` answer.
fn replica_entries(reply: &Resp) -> Option<Vec<BTreeMap<String, String>>> {
    let Resp::Array(Some(items)) = reply else {
        return None;
    };
    items.iter().map(fields).collect()
}

/// Whether `entry` has `field` equal to `value`.
fn field_is(entry: &BTreeMap<String, String>, field: &str, value: impl ToString) -> bool {
    entry.get(field) == Some(&value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Resp {
        Resp::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn sentinel_answers_are_read_into_plain_values() {
        let addr = Resp::Array(Some(vec![bulk("127.0.0.1"), bulk("40123")]));
        assert_eq!(addr_port(&addr), Some(40123));
        assert_eq!(addr_port(&Resp::Array(None)), None);
        let master = Resp::Array(Some(vec![bulk("flags"), bulk("master")]));
        assert_eq!(fields(&master).unwrap()["flags"], "master");
        let replicas = Resp::Array(Some(vec![master]));
        let entries = replica_entries(&replicas).unwrap();
        assert!(field_is(&entries[0], "flags", "master"));
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
