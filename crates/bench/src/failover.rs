//! `herald-bench failover`: how long publishes fail when a Redis primary
//! crashes, and how much of that is Redis electing a replacement versus
//! herald finding it.
//!
//! Each run starts a fresh topology with the test kit (Sentinel: a primary,
//! one replica and three sentinels; Cluster: three primaries with one
//! replica each), one herald node on it, and a publisher that sends one
//! `POST /v1/publish` every `--interval-ms` to a topic stored on the primary
//! that is then killed with SIGKILL. Requests are sent on a clock, each on
//! its own, not one after the other: a request that hangs during the
//! failover must not hold back the ones that would succeed.
//!
//! Two moments are taken after the kill:
//!
//! - **promotion visible**: some sentinel names another primary
//!   (`SENTINEL GET-MASTER-ADDR-BY-NAME`), or the killed primary's replica
//!   says it is a primary serving the topic's slot (`CLUSTER NODES` asked
//!   of that replica); polled every few milliseconds;
//! - **first 202**: the earliest answer `202` to a request sent after the
//!   kill.
//!
//! Their difference is herald's own share of the outage. Requests sent
//! after the kill and before the first accepted one are counted by answer
//! (refused with a status, or no answer in time).
//!
//! The herald binary is the test kit's: `$HERALD_BIN`, else `herald` next to
//! this executable (`target/release/herald` for a release build).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use herald_testkit::{
    herald_bin, topic_slot, Node, RedisCluster, RedisSentinel, Resp, SentinelOptions,
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::mpsc,
    task::JoinSet,
    time::{sleep, Instant, MissedTickBehavior},
};

use crate::{report::round3, summary::median};

/// How often the promotion is polled.
const POLL: Duration = Duration::from_millis(5);

/// Publishes accepted before the kill, so the run starts from a node that
/// publishes normally.
const ACCEPTED_BEFORE_KILL: usize = 50;

/// How long the node may take to accept its first publishes.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishing continues this long after the first accepted publish, so the
/// answers right after recovery are seen too.
const AFTER_RECOVERY: Duration = Duration::from_millis(200);

/// Which topology to fail over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverTopology {
    /// A primary, one replica, three sentinels.
    Sentinel,
    /// Three primaries with one replica each.
    Cluster,
}

impl FailoverTopology {
    fn name(self) -> &'static str {
        match self {
            FailoverTopology::Sentinel => "sentinel",
            FailoverTopology::Cluster => "cluster",
        }
    }
}

/// Arguments of `failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Which topology.
    #[arg(long, value_enum)]
    pub topology: FailoverTopology,
    /// Runs, each on a fresh topology and node.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Milliseconds between publishes.
    #[arg(long, default_value_t = 5)]
    pub interval_ms: u64,
    /// Longest wait after the kill for the promotion and the first accepted
    /// publish, seconds; a run that reaches it is reported unrecovered.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Longest wait for one publish's answer, milliseconds; longer counts
    /// as unanswered.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Label stored in the results (default `failover-<topology>`).
    #[arg(long)]
    pub label: Option<String>,
    /// Append the JSON results (each run, then the medians) to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// One publish request: when it left and how it ended, in milliseconds
/// since the run's clock started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// When it was sent.
    pub sent_ms: f64,
    /// When its answer (or failure) came.
    pub done_ms: f64,
    /// The HTTP status; `None` when there was no answer (a connection
    /// error or the request timeout).
    pub status: Option<u16>,
}

/// What the requests say about one failover.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The first request sent after the kill that was answered `202`.
    pub first_ok: Option<Attempt>,
    /// Requests sent after the kill and before `first_ok`'s, answered with
    /// another status.
    pub refused: u64,
    /// Those that got no answer.
    pub unanswered: u64,
    /// Their answers: the status, or `none`.
    pub statuses: BTreeMap<String, u64>,
    /// Requests sent before the kill and answered after it.
    pub in_flight_at_kill: u64,
}

/// Reads `attempts` against a kill at `kill_ms`. The first success is the
/// earliest *answered* `202` among requests sent after the kill: requests
/// sent earlier may still be hanging when a later one gets through.
pub fn analyze(attempts: &[Attempt], kill_ms: f64) -> Outcome {
    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.sent_ms >= kill_ms).collect();
    let first_ok = after
        .iter()
        .filter(|a| a.status == Some(202))
        .min_by(|a, b| a.done_ms.total_cmp(&b.done_ms))
        .map(|a| **a);
    let until = first_ok.map_or(f64::INFINITY, |a| a.sent_ms);
    let mut outcome = Outcome {
        first_ok,
        in_flight_at_kill: attempts
            .iter()
            .filter(|a| a.sent_ms < kill_ms && a.done_ms >= kill_ms)
            .count() as u64,
        ..Outcome::default()
    };
    for a in after
        .iter()
        .filter(|a| a.sent_ms < until && a.status != Some(202))
    {
        match a.status {
            Some(status) => {
                outcome.refused += 1;
                *outcome.statuses.entry(status.to_string()).or_default() += 1;
            }
            None => {
                outcome.unanswered += 1;
                *outcome.statuses.entry("none".to_owned()).or_default() += 1;
            }
        }
    }
    outcome
}

/// One failover run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverRun {
    /// Always `failover`.
    pub scenario: String,
    /// `failover-sentinel`, `failover-cluster` unless `--label` said.
    pub label: String,
    /// Which topology.
    pub topology: FailoverTopology,
    /// 1-based run number.
    pub run: usize,
    /// The herald binary that ran.
    pub herald_bin: String,
    /// The topic published to.
    pub topic: String,
    /// The primary killed.
    pub killed_port: u16,
    /// The node seen taking over (sentinel's answer, or the replica).
    pub promoted_port: Option<u16>,
    /// Milliseconds between publishes.
    pub interval_ms: u64,
    /// Kill → promotion visible, ms.
    pub kill_to_promotion_ms: Option<f64>,
    /// Kill → first `202` to a request sent after the kill, ms.
    pub kill_to_first_202_ms: Option<f64>,
    /// Promotion visible → that first `202`, ms: herald's share.
    pub promotion_to_first_202_ms: Option<f64>,
    /// Requests sent after the kill and before the first accepted one that
    /// were answered with another status.
    pub refused: u64,
    /// Those that got no answer within the request timeout.
    pub unanswered: u64,
    /// Their answers by status (`none`: no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Requests sent before the kill, answered after it.
    pub in_flight_at_kill: u64,
    /// Whether a publish was accepted again within `--timeout`.
    pub recovered: bool,
    /// Seconds since the Unix epoch at the end of the run.
    pub unix_time: u64,
}

/// The medians over the runs of one invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverMedian {
    /// Always `failover-median`.
    pub scenario: String,
    /// As the runs'.
    pub label: String,
    /// Which topology.
    pub topology: FailoverTopology,
    /// Runs attempted.
    pub runs: usize,
    /// Runs that recovered (the medians are over these).
    pub recovered: usize,
    /// Median kill → promotion visible, ms.
    pub kill_to_promotion_ms: Option<f64>,
    /// Median kill → first `202`, ms.
    pub kill_to_first_202_ms: Option<f64>,
    /// Median promotion → first `202`, ms.
    pub promotion_to_first_202_ms: Option<f64>,
    /// Median requests refused or unanswered meanwhile.
    pub failed_publishes: Option<f64>,
}

impl FailoverMedian {
    /// The medians of `runs` (`attempted` runs were started; the others
    /// failed to set up).
    pub fn of(
        label: &str,
        topology: FailoverTopology,
        attempted: usize,
        runs: &[FailoverRun],
    ) -> Self {
        let ok: Vec<&FailoverRun> = runs.iter().filter(|r| r.recovered).collect();
        let med = |get: fn(&FailoverRun) -> Option<f64>| {
            let mut v: Vec<f64> = ok.iter().filter_map(|r| get(r)).collect();
            median(&mut v).map(round3)
        };
        Self {
            scenario: "failover-median".into(),
            label: label.to_owned(),
            topology,
            runs: attempted,
            recovered: ok.len(),
            kill_to_promotion_ms: med(|r| r.kill_to_promotion_ms),
            kill_to_first_202_ms: med(|r| r.kill_to_first_202_ms),
            promotion_to_first_202_ms: med(|r| r.promotion_to_first_202_ms),
            failed_publishes: med(|r| Some((r.refused + r.unanswered) as f64)),
        }
    }
}

/// Whether a `CLUSTER NODES` answer, asked of a node, says that node
/// (`myself`) is a primary serving `slot`.
pub fn serves_slot(cluster_nodes: &str, slot: u16) -> bool {
    cluster_nodes.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return false;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        flags.contains(&"myself")
            && flags.contains(&"master")
            && fields[8..].iter().any(|range| {
                // `[slot->-id]` marks a migration, not a served slot.
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            })
    })
}

/// The port in a `SENTINEL GET-MASTER-ADDR-BY-NAME` answer.
pub fn named_port(reply: &Resp) -> Option<u16> {
    let Resp::Array(Some(items)) = reply else {
        return None;
    };
    match items.get(1)? {
        Resp::Bulk(Some(port)) => std::str::from_utf8(port).ok()?.parse().ok(),
        _ => None,
    }
}

/// Runs `failover` as `args` say; prints and appends each run's JSON and
/// then the medians.
///
/// # Errors
/// When the runtime cannot start or the output cannot be written. A run
/// whose topology or node fails to start is reported and skipped.
pub fn run(args: &FailoverArgs) -> Result<()> {
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("failover-{}", args.topology.name()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    let bin = herald_bin();
    eprintln!("herald binary: {}", bin.display());
    let mut runs = Vec::new();
    for n in 1..=args.runs {
        // Each run in its own task: the test kit panics when a topology
        // does not form, and that must end the run, not the campaign. The
        // topology's processes are killed as the task unwinds.
        let task = runtime.spawn(one_run(args.clone(), label.clone(), n, bin.clone()));
        match runtime.block_on(task) {
            Ok(result) => {
                eprintln!(
                    "run {n}: promotion visible after {} ms, first 202 after {} ms \
                     (herald's share {} ms); {} refused, {} unanswered meanwhile",
                    show(result.kill_to_promotion_ms),
                    show(result.kill_to_first_202_ms),
                    show(result.promotion_to_first_202_ms),
                    result.refused,
                    result.unanswered
                );
                println!("{}", serde_json::to_string(&result)?);
                append(args.json_out.as_deref(), &result)?;
                runs.push(result);
            }
            Err(e) => eprintln!("failover run {n} failed to run: {e}"),
        }
    }
    let median = FailoverMedian::of(&label, args.topology, args.runs, &runs);
    println!("{}", serde_json::to_string(&median)?);
    append(args.json_out.as_deref(), &median)?;
    Ok(())
}

fn show(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"))
}

fn append<T: serde::Serialize>(path: Option<&Path>, value: &T) -> Result<()> {
    if let Some(path) = path {
        crate::report::append_json_line(value, path)
            .with_context(|| format!("appending to {}", path.display()))?;
    }
    Ok(())
}

/// The topology of one run, and how to watch its promotion.
enum Deployment {
    Sentinel(RedisSentinel),
    Cluster {
        cluster: RedisCluster,
        /// The replica expected to take over, and the topic's slot.
        replica: u16,
        slot: u16,
    },
}

impl Deployment {
    /// The port that now holds the topic, once the failover is visible.
    async fn promoted(&self, old: u16) -> Option<u16> {
        match self {
            Deployment::Sentinel(sentinel) => {
                let name = sentinel.master_name();
                for port in sentinel.sentinel_ports() {
                    let reply = sentinel
                        .command(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])
                        .await;
                    if let Some(new) = named_port(&reply).filter(|&p| p != old) {
                        return Some(new);
                    }
                }
                None
            }
            Deployment::Cluster {
                cluster,
                replica,
                slot,
            } => match cluster.command(*replica, &["CLUSTER", "NODES"]).await {
                Resp::Bulk(Some(text)) => {
                    serves_slot(&String::from_utf8_lossy(&text), *slot).then_some(*replica)
                }
                _ => None,
            },
        }
    }
}

async fn one_run(args: FailoverArgs, label: String, n: usize, bin: PathBuf) -> FailoverRun {
    let (mut deployment, builder, topic, victim) = match args.topology {
        FailoverTopology::Sentinel => {
            let sentinel = RedisSentinel::start(SentinelOptions::default()).await;
            let builder = Node::builder()
                .env("HERALD__REDIS__SENTINEL_NODES", &sentinel.sentinels_env())
                .env("HERALD__REDIS__SENTINEL_MASTER", sentinel.master_name());
            let primary = sentinel.primary_port().await;
            (
                Deployment::Sentinel(sentinel),
                builder,
                format!("failover-{n}"),
                primary,
            )
        }
        FailoverTopology::Cluster => {
            let cluster = RedisCluster::start(3, 1).await;
            let builder = Node::builder().env("HERALD__REDIS__CLUSTER_NODES", &cluster.seeds_env());
            let (victim, topics) = cluster
                .topics_on_each_primary(&format!("failover-{n}-"), 1)
                .await
                .into_iter()
                .next()
                .expect("a cluster has primaries");
            let topic = topics[0].clone();
            let replica = cluster.replica_of(victim).await;
            let slot = topic_slot(&topic);
            (
                Deployment::Cluster {
                    cluster,
                    replica,
                    slot,
                },
                builder,
                topic,
                victim,
            )
        }
    };
    let node = builder.start().await;
    eprintln!(
        "run {n}: {} topology up, herald on {}, topic {topic} on primary {victim}",
        args.topology.name(),
        node.url()
    );

    let clock = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(publish_loop(
        format!("{}/v1/publish", node.url()),
        topic.clone(),
        Duration::from_millis(args.interval_ms.max(1)),
        Duration::from_millis(args.request_timeout_ms),
        clock,
        tx,
        stop_rx,
    ));
    let mut attempts: Vec<Attempt> = Vec::new();
    let warm_until = Instant::now() + WARMUP_TIMEOUT;
    while attempts.iter().filter(|a| a.status == Some(202)).count() < ACCEPTED_BEFORE_KILL {
        match tokio::time::timeout_at(warm_until, rx.recv()).await {
            Ok(Some(a)) => attempts.push(a),
            _ => panic!(
                "herald accepted {} publishes of {} in {WARMUP_TIMEOUT:?}; log {}",
                attempts.iter().filter(|a| a.status == Some(202)).count(),
                attempts.len(),
                node.log_path().display()
            ),
        }
    }

    match &mut deployment {
        Deployment::Sentinel(sentinel) => sentinel.kill(victim),
        Deployment::Cluster { cluster, .. } => cluster.kill(victim).await,
    }
    let kill_ms = ms(clock.elapsed());
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));

    // Watch for the promotion while the answers come in.
    let mut promotion: Option<(f64, u16)> = None;
    let mut recovered_at: Option<Instant> = None;
    let mut next_poll = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(at) = recovered_at {
            if promotion.is_some() && now >= at + AFTER_RECOVERY {
                break;
            }
        }
        if promotion.is_none() && now >= next_poll {
            if let Some(port) = deployment.promoted(victim).await {
                promotion = Some((ms(clock.elapsed()), port));
            }
            next_poll = Instant::now() + POLL;
        }
        match tokio::time::timeout(POLL, rx.recv()).await {
            Ok(Some(a)) => {
                if recovered_at.is_none() && a.sent_ms >= kill_ms && a.status == Some(202) {
                    recovered_at = Some(Instant::now());
                }
                attempts.push(a);
            }
            // The publisher is gone (it only stops when told): keep
            // polling the promotion at the same pace.
            Ok(None) => sleep(POLL).await,
            Err(_) => {}
        }
    }
    let _ = stop_tx.send(true);
    // The loop returns once every request it sent has ended (at most the
    // request timeout); gather what is left.
    let _ = publisher.await;
    while let Ok(a) = rx.try_recv() {
        attempts.push(a);
    }
    drop(node);
    drop(deployment);

    let outcome = analyze(&attempts, kill_ms);
    let first_202 = outcome.first_ok.map(|a| a.done_ms);
    FailoverRun {
        scenario: "failover".into(),
        label,
        topology: args.topology,
        run: n,
        herald_bin: bin.display().to_string(),
        topic,
        killed_port: victim,
        promoted_port: promotion.map(|(_, p)| p),
        interval_ms: args.interval_ms,
        kill_to_promotion_ms: promotion.map(|(t, _)| round3(t - kill_ms)),
        kill_to_first_202_ms: first_202.map(|t| round3(t - kill_ms)),
        promotion_to_first_202_ms: first_202.zip(promotion).map(|(t, (p, _))| round3(t - p)),
        refused: outcome.refused,
        unanswered: outcome.unanswered,
        statuses: outcome.statuses,
        in_flight_at_kill: outcome.in_flight_at_kill,
        recovered: first_202.is_some(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends one publish every `interval` until told to stop, each request on
/// its own task, and reports every one's end on `out`; returns once every
/// request sent has ended.
async fn publish_loop(
    url: String,
    topic: String,
    interval: Duration,
    request_timeout: Duration,
    clock: Instant,
    out: mpsc::UnboundedSender<Attempt>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(request_timeout)
        .build()
        .expect("a default HTTP client builds");
    let url = Arc::new(url);
    let mut ticks = tokio::time::interval(interval);
    // A late tick is skipped rather than caught up in a burst: the rate
    // stays one request per interval when the runtime is busy.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut requests = JoinSet::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        let body = format!(r#"{{"topic":"{topic}","data":{{"s":{seq}}}}}"#);
        seq += 1;
        let (client, url, out) = (client.clone(), Arc::clone(&url), out.clone());
        requests.spawn(async move {
            let sent = clock.elapsed();
            let status = client
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            let _ = out.send(Attempt {
                sent_ms: ms(sent),
                done_ms: ms(clock.elapsed()),
                status,
            });
        });
        // Reap finished requests as we go so the set stays small.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(sent_ms: f64, done_ms: f64, status: Option<u16>) -> Attempt {
        Attempt {
            sent_ms,
            done_ms,
            status,
        }
    }

    #[test]
    fn the_first_accepted_publish_after_the_kill_ends_the_outage() {
        let attempts = [
            a(0.0, 1.0, Some(202)),
            // In flight at the kill (100): not counted against the outage.
            a(99.0, 150.0, Some(503)),
            a(100.0, 101.0, Some(503)),
            a(105.0, 2105.0, None),
            a(110.0, 111.0, Some(503)),
            // Sent later but answered first: this is the recovery.
            a(3000.0, 3002.0, Some(202)),
            a(2990.0, 3010.0, Some(202)),
            // After the recovery: not counted, whatever the answer.
            a(3005.0, 3006.0, Some(503)),
        ];
        let out = analyze(&attempts, 100.0);
        assert_eq!(out.first_ok, Some(a(3000.0, 3002.0, Some(202))));
        // Sent after the kill and before 3000.0, not accepted.
        assert_eq!(out.refused, 2);
        assert_eq!(out.unanswered, 1);
        assert_eq!(out.statuses["503"], 2);
        assert_eq!(out.statuses["none"], 1);
        assert_eq!(out.in_flight_at_kill, 1);
    }

    #[test]
    fn no_recovery_counts_every_failure_after_the_kill() {
        let out = analyze(&[a(10.0, 11.0, Some(503)), a(0.0, 1.0, Some(202))], 5.0);
        assert_eq!(out.first_ok, None);
        assert_eq!(out.refused, 1);
        assert_eq!(out.in_flight_at_kill, 0);
    }

    #[test]
    fn a_replica_serves_the_slot_once_it_calls_itself_a_primary_with_it() {
        let before = "\
e7d1 127.0.0.1:30001@40001 master - 0 0 1 connected 0-5460\n\
07c3 127.0.0.1:30004@40004 myself,slave e7d1 0 1426238317239 4 connected\n";
        let after = "\
e7d1 127.0.0.1:30001@40001 master,fail - 0 0 1 disconnected\n\
07c3 127.0.0.1:30004@40004 myself,master - 0 1426238317239 4 connected 0-5460 7000 [7001->-67ed]\n";
        assert!(!serves_slot(before, 100));
        assert!(serves_slot(after, 100));
        assert!(serves_slot(after, 7000));
        assert!(!serves_slot(after, 7001));
        assert!(!serves_slot(after, 6000));
    }

    #[test]
    fn sentinel_answers_name_a_port() {
        let reply = Resp::Array(Some(vec![
            Resp::Bulk(Some(b"127.0.0.1".to_vec())),
            Resp::Bulk(Some(b"6390".to_vec())),
        ]));
        assert_eq!(named_port(&reply), Some(6390));
        assert_eq!(named_port(&Resp::Array(None)), None);
        assert_eq!(named_port(&Resp::Error("ERR".into())), None);
    }

    #[test]
    fn medians_are_over_recovered_runs() {
        let run = |t: Option<f64>, refused| FailoverRun {
            scenario: "failover".into(),
            label: "failover-cluster".into(),
            topology: FailoverTopology::Cluster,
            run: 1,
            herald_bin: String::new(),
            topic: "t".into(),
            killed_port: 1,
            promoted_port: Some(2),
            interval_ms: 5,
            kill_to_promotion_ms: t.map(|t| t - 100.0),
            kill_to_first_202_ms: t,
            promotion_to_first_202_ms: t.map(|_| 100.0),
            refused,
            unanswered: 0,
            statuses: BTreeMap::new(),
            in_flight_at_kill: 0,
            recovered: t.is_some(),
            unix_time: 0,
        };
        let runs = [
            run(Some(4000.0), 800),
            run(Some(5000.0), 1000),
            run(None, 9999),
            run(Some(4500.0), 900),
        ];
        let m = FailoverMedian::of("failover-cluster", FailoverTopology::Cluster, 5, &runs);
        assert_eq!((m.runs, m.recovered), (5, 3));
        assert_eq!(m.kill_to_first_202_ms, Some(4500.0));
        assert_eq!(m.kill_to_promotion_ms, Some(4400.0));
        assert_eq!(m.promotion_to_first_202_ms, Some(100.0));
        assert_eq!(m.failed_publishes, Some(900.0));
    }
}
