//! `herald-bench ceiling`: how fast Redis itself runs herald's publish
//! step, with no HTTP in the way.
//!
//! The HTTP scenarios measure herald and Redis together; when herald's
//! Redis mode tops out, the question is whose core is full. This drives the
//! very code a node runs for `POST /v1/publish` (`herald_broker`'s
//! `RedisBroker::publish`: the publish script by `EVALSHA`, routed by hash
//! slot on a cluster) from `--concurrency` tasks over `--topics` topics, so
//! the only costs left are the broker's client side (the tasks on
//! `--threads` runtime workers, plus the broker's own `herald-redis` I/O
//! thread, as in a node) and Redis. The bench's CPU is reported too: when
//! it nears the cores Redis leaves free, the client is the limit, not
//! Redis. Redis's CPU
//! is read per process from `/proc` (one per shard on a cluster) and
//! `INFO commandstats` says what one script call costs inside Redis.
//!
//! One JSON object per run, like the other scenarios, but with its own
//! shape ([`CeilingReport`]): `summarize` tells them apart by `scenario`.
// The calling thread only orchestrates (the publishing tasks run on the
// runtime's workers); it reads `/proc` and Redis's INFO with blocking
// calls between the window's phases on purpose.
#![allow(clippy::disallowed_methods)]

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use herald_broker::{
    Broker, BrokerMetrics, HistorySettings, Message, RedisBroker, RedisSettings, RedisTopology,
    RegistryMetrics, Target, Topic,
};
use serde::{Deserialize, Serialize};

use crate::{
    accounting::{new_histogram, summarize, LatencySummary},
    cost::{per_1k_publishes, per_pid, round6, sample_each, sum, PidCpu},
    frames::{write_payload, Stamp},
    procstat::{machine_busy_s, sample_self},
    report::{round3, ProcWindow},
};

/// How long the broker may take to reach Redis before the run is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one INFO read of one node may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of `ceiling`.
#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// A standalone primary, `redis://host:port`.
    #[arg(
        long,
        conflicts_with = "cluster_nodes",
        required_unless_present = "cluster_nodes"
    )]
    pub redis_url: Option<String>,
    /// A Redis Cluster node, `redis://host:port`; repeat. The broker
    /// discovers the rest from any of them; list every primary so each
    /// one's `INFO commandstats` is read.
    #[arg(long = "cluster-node")]
    pub cluster_nodes: Vec<String>,
    /// Publish calls in flight at once (one task each).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Topics the publishes are spread over (each task owns every
    /// `concurrency`-th one, so a topic's publishes never overlap).
    #[arg(long, default_value_t = 10_000)]
    pub topics: usize,
    /// Measurement window, seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publishing before the window, seconds; not measured. It also
    /// creates every topic's keys, so the window measures steady state.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Size of each message's data, bytes (the bench payload shape).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Runtime worker threads driving the publishes (the broker adds its
    /// own I/O thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A redis-server process to measure; repeat (one per primary). When
    /// none is given, the `process_id` each listed node reports in `INFO
    /// server` is used if that process is visible here.
    #[arg(long = "aux-pid")]
    pub aux_pids: Vec<u32>,
    /// Label (e.g. `ceiling-redis`, `ceiling-cluster`), topic names and
    /// where the result goes.
    #[command(flatten)]
    pub output: crate::cli::Output,
}

/// One command's counters from `INFO commandstats`, over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandStat {
    /// Calls during the window.
    pub calls: u64,
    /// Microseconds Redis spent in them.
    pub usec: u64,
    /// `usec / calls`; `null` without calls.
    pub usec_per_call: Option<f64>,
}

/// What one Redis node's `INFO commandstats` says about the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeStats {
    /// The node, `host:port` as given.
    pub node: String,
    /// Its `process_id` (`INFO server`).
    pub pid: Option<u32>,
    /// `EVALSHA`: the publish script, the whole publish step inside Redis.
    pub evalsha: Option<CommandStat>,
    /// Every command called during the window (those the script runs
    /// included: Redis counts them under their own names), by name.
    pub commands: BTreeMap<String, CommandStat>,
}

/// The result of one `ceiling` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CeilingReport {
    /// Always `ceiling`.
    pub scenario: String,
    /// Free-form label.
    pub label: String,
    /// `standalone` or `cluster`.
    pub topology: String,
    /// The Redis nodes named on the command line.
    pub redis_nodes: Vec<String>,
    /// Publish calls in flight.
    pub concurrency: usize,
    /// Topics.
    pub topics: usize,
    /// Bytes of data per message.
    pub payload_bytes: usize,
    /// Measurement window, seconds.
    pub window_s: f64,
    /// Publish calls that succeeded in the window.
    pub publishes: u64,
    /// Publish calls that failed in the window.
    pub failures: u64,
    /// `publishes / window_s`.
    pub publishes_per_s: f64,
    /// Duration of one publish call (µs), calls started in the window.
    pub call_us: LatencySummary,
    /// The Redis processes, summed.
    pub redis: Option<ProcWindow>,
    /// Each Redis process on its own (one per shard).
    pub redis_per_pid: Vec<PidCpu>,
    /// Redis CPU seconds per 1,000 publishes, all processes.
    pub redis_cpu_s_per_1k_publishes: Option<f64>,
    /// `INFO commandstats` of each node that answered.
    pub commandstats: Vec<NodeStats>,
    /// `EVALSHA` over all nodes: calls and µs per call inside Redis.
    pub evalsha: Option<CommandStat>,
    /// The bench process.
    pub bench: ProcWindow,
    /// CPU cores busy on the whole machine during the window.
    pub machine_cpu_cores: f64,
    /// Machine minus Redis minus the bench: other tenants, i.e. noise.
    pub other_cpu_cores: f64,
    /// Seconds since the Unix epoch at the end of the run.
    pub unix_time: u64,
}

impl CeilingReport {
    /// Appends the JSON line to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn append_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::report::append_json_line(self, path)
    }

    /// A few lines for a person.
    pub fn table(&self) -> String {
        let mut s = format!(
            "ceiling {} {} | {} tasks over {} topics | {:.0} publishes/s ({} failed) | call us p50 {} p99 {}\n",
            self.topology,
            self.label,
            self.concurrency,
            self.topics,
            self.publishes_per_s,
            self.failures,
            self.call_us.p50,
            self.call_us.p99
        );
        s.push_str(&format!(
            "  redis cores {:.2} ({} s per 1k publishes) | bench {:.2} | other {:.2}\n",
            self.redis.as_ref().map_or(0.0, |r| r.cpu_cores),
            fmt_opt(self.redis_cpu_s_per_1k_publishes, 4),
            self.bench.cpu_cores,
            self.other_cpu_cores
        ));
        for p in &self.redis_per_pid {
            s.push_str(&format!(
                "  pid {}{}: {:.2} cores, {} s per 1k publishes\n",
                p.pid,
                p.node
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                p.cpu_cores,
                fmt_opt(p.cpu_s_per_1k_publishes, 4)
            ));
        }
        for n in &self.commandstats {
            if let Some(e) = &n.evalsha {
                s.push_str(&format!(
                    "  {} evalsha: {} calls, {} us/call\n",
                    n.node,
                    e.calls,
                    fmt_opt(e.usec_per_call, 2)
                ));
            }
        }
        s
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Counters shared by the publishing tasks and the orchestrating thread.
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Latency is recorded for calls started while this is set.
    recording: AtomicBool,
    stop: AtomicBool,
}

/// Runs `ceiling` with `args`.
///
/// # Errors
/// Bad arguments, a broker that cannot start, or Redis not reachable
/// within 15 s.
pub fn run(args: &CeilingArgs) -> Result<CeilingReport> {
    let (settings, nodes, topology) = match (&args.redis_url, args.cluster_nodes.as_slice()) {
        (Some(url), []) => (
            RedisSettings::standalone(url.clone()),
            vec![url.clone()],
            "standalone",
        ),
        (None, seeds) if !seeds.is_empty() => (
            RedisSettings {
                topology: RedisTopology::Cluster {
                    nodes: seeds.to_vec(),
                },
                ..RedisSettings::standalone("")
            },
            seeds.to_vec(),
            "cluster",
        ),
        _ => bail!("give either --redis-url or --cluster-node"),
    };
    if args.concurrency == 0 || args.topics == 0 {
        bail!("--concurrency and --topics must be positive");
    }
    let prefix = args.output.topic_prefix.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("c{}x{}", std::process::id(), secs % 1_000_000)
    });
    let topics: Vec<Topic> = (0..args.topics)
        .map(|i| Topic::new(&format!("{prefix}-{i}")))
        .collect::<Result<_, _>>()
        .context("topic names")?;
    let topics = Arc::new(topics);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the runtime")?;
    let broker = runtime.block_on(async {
        let broker = RedisBroker::start(
            &settings,
            HistorySettings {
                max_events: 1000,
                ttl: Duration::from_secs(3600),
            },
            RegistryMetrics::unregistered(),
            BrokerMetrics::unregistered(),
        )
        .context("starting the Redis broker")?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while !broker.is_up() {
            if Instant::now() > deadline {
                bail!("the broker did not reach Redis at {nodes:?} within {CONNECT_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Arc::new(broker))
    })?;

    let counters = Arc::new(Counters::default());
    let tasks: Vec<_> = (0..args.concurrency.min(args.topics))
        .map(|task| {
            let broker = Arc::clone(&broker);
            let topics = Arc::clone(&topics);
            let counters = Arc::clone(&counters);
            let (step, payload_bytes) = (args.concurrency, args.payload_bytes);
            runtime.spawn(publish_loop(
                broker,
                topics,
                counters,
                task,
                step,
                payload_bytes,
            ))
        })
        .collect();

    // The timer is created inside the runtime: it needs its clock.
    let pause = |secs: f64| {
        runtime
            .block_on(async { tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await });
    };
    pause(args.warmup);
    // Window start: counters, processes, then Redis's own statistics.
    let stats_start = read_stats(&nodes);
    let aux_pids = if args.aux_pids.is_empty() {
        local_pids(&stats_start)
    } else {
        args.aux_pids.clone()
    };
    // A wrong pid (a wrapper shell's, say) would silently read as an idle
    // Redis: say so when the nodes name other processes.
    let reported: Vec<u32> = stats_start.iter().filter_map(|s| s.pid).collect();
    for pid in aux_pids
        .iter()
        .filter(|p| !reported.is_empty() && !reported.contains(p))
    {
        eprintln!("warning: --aux-pid {pid} is none of the Redis nodes' process ids {reported:?}");
    }
    let (aux_start, bench_start, machine_start) =
        (sample_each(&aux_pids), sample_self(), machine_busy_s());
    let (ok_start, failed_start) = (counters.ok.load(Relaxed), counters.failed.load(Relaxed));
    counters.recording.store(true, Relaxed);
    let started = Instant::now();
    pause(args.duration);
    let (ok_end, failed_end) = (counters.ok.load(Relaxed), counters.failed.load(Relaxed));
    let window_s = started.elapsed().as_secs_f64();
    let machine_busy = machine_busy_s() - machine_start;
    let (aux_end, bench_end) = (sample_each(&aux_pids), sample_self());
    counters.recording.store(false, Relaxed);
    let stats_end = read_stats(&nodes);
    counters.stop.store(true, Relaxed);

    let mut latency = new_histogram();
    runtime.block_on(async {
        for task in tasks {
            if let Ok(h) = task.await {
                // Same bounds on both sides: adding cannot fail.
                let _ = latency.add(&h);
            }
        }
        broker.close().await;
    });
    {
        // The broker's connections go with it: drop it where the runtime
        // they belong to is still reachable.
        let _inside = runtime.enter();
        drop(broker);
    }
    drop(runtime);

    let publishes = ok_end - ok_start;
    let mut redis_per_pid = per_pid(&aux_pids, &aux_start, &aux_end, window_s, publishes);
    for p in &mut redis_per_pid {
        p.node = stats_end
            .iter()
            .find(|s| s.pid == Some(p.pid))
            .map(|s| s.node.clone());
    }
    let redis = (!aux_pids.is_empty()).then(|| {
        let (start, end) = (sum(&aux_start), sum(&aux_end));
        ProcWindow::new(aux_pids.clone(), start, start, end, window_s)
    });
    let bench = ProcWindow::new(
        vec![std::process::id()],
        bench_start,
        bench_start,
        bench_end,
        window_s,
    );
    let commandstats = diff_stats(&stats_start, &stats_end);
    let evalsha = total_of(&commandstats, "evalsha");
    let machine_cpu_cores = machine_busy / window_s.max(1e-9);
    let ours = bench.cpu_cores + redis.as_ref().map_or(0.0, |r| r.cpu_cores);
    Ok(CeilingReport {
        scenario: "ceiling".into(),
        label: args.output.label.clone(),
        topology: topology.into(),
        redis_nodes: nodes,
        concurrency: args.concurrency,
        topics: args.topics,
        payload_bytes: args.payload_bytes,
        window_s: round3(window_s),
        publishes,
        failures: failed_end - failed_start,
        publishes_per_s: round3(publishes as f64 / window_s.max(1e-9)),
        call_us: summarize(&latency),
        redis_cpu_s_per_1k_publishes: redis
            .as_ref()
            .and_then(|r| per_1k_publishes(r.cpu_s, publishes))
            .map(round6),
        redis,
        redis_per_pid,
        commandstats,
        evalsha,
        bench,
        machine_cpu_cores: round3(machine_cpu_cores),
        other_cpu_cores: round3((machine_cpu_cores - ours).max(0.0)),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// One task: publishes to its topics (`task`, `task + step`, …) in turn,
/// one call at a time, until told to stop; returns the latencies of the
/// calls it started in the window.
async fn publish_loop(
    broker: Arc<RedisBroker>,
    topics: Arc<Vec<Topic>>,
    counters: Arc<Counters>,
    task: usize,
    step: usize,
    payload_bytes: usize,
) -> Histogram<u64> {
    let mut latency = new_histogram();
    let mut payload = Vec::with_capacity(payload_bytes + 64);
    let mut seq = 0u64;
    let mut index = task;
    while !counters.stop.load(Relaxed) {
        payload.clear();
        write_payload(
            &mut payload,
            Stamp {
                seq,
                sent_ns: crate::clock::now_ns(),
            },
            payload_bytes,
        );
        let message = Message {
            target: Target::One(topics[index].clone()),
            event: None,
            data: String::from_utf8_lossy(&payload).into_owned(),
            idempotency_key: None,
        };
        let recording = counters.recording.load(Relaxed);
        let started = Instant::now();
        let outcome = broker.publish(vec![message]).await;
        let us = started.elapsed().as_micros() as u64;
        match outcome {
            Ok(_) => counters.ok.fetch_add(1, Relaxed),
            Err(_) => counters.failed.fetch_add(1, Relaxed),
        };
        if recording {
            let _ = latency.record(us.max(1));
        }
        seq += 1;
        index += step;
        if index >= topics.len() {
            index = task;
        }
    }
    latency
}

/// A node's raw counters at one moment.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    node: String,
    pid: Option<u32>,
    /// Command name → (calls, usec).
    commands: BTreeMap<String, (u64, u64)>,
}

/// `INFO server` and `INFO commandstats` of each node; nodes that do not
/// answer are left out (the numbers are context, not the measurement).
fn read_stats(nodes: &[String]) -> Vec<Snapshot> {
    nodes
        .iter()
        .filter_map(|url| {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut con = client.get_connection_with_timeout(INFO_TIMEOUT).ok()?;
            con.set_read_timeout(Some(INFO_TIMEOUT)).ok()?;
            let server: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut con)
                .ok()?;
            Some(Snapshot {
                node: url
                    .trim_start_matches("redis://")
                    .trim_start_matches("rediss://")
                    .trim_end_matches('/')
                    .to_owned(),
                pid: info_value(&server, "process_id").and_then(|p| p.parse().ok()),
                commands: parse_commandstats(&stats),
            })
        })
        .collect()
}

/// The pids nodes reported that this machine can see.
fn local_pids(stats: &[Snapshot]) -> Vec<u32> {
    stats
        .iter()
        .filter_map(|s| s.pid)
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// The value of `field` in an INFO answer (`field:value` lines).
pub fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// `cmdstat_<name>:calls=N,usec=N,…` lines → name → (calls, usec). Names
/// are lower case; subcommands keep Redis's `|` (`client|list`).
pub fn parse_commandstats(info: &str) -> BTreeMap<String, (u64, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let mut calls = None;
            let mut usec = None;
            for field in fields.split(',') {
                match field.split_once('=') {
                    Some(("calls", v)) => calls = v.parse().ok(),
                    Some(("usec", v)) => usec = v.parse().ok(),
                    _ => {}
                }
            }
            Some((name.to_ascii_lowercase(), (calls?, usec?)))
        })
        .collect()
}

/// Per node, the commands whose call count grew between the snapshots.
/// A node missing from either side is left out; a counter that went
/// backwards (`CONFIG RESETSTAT`, a restart) counts from zero.
fn diff_stats(start: &[Snapshot], end: &[Snapshot]) -> Vec<NodeStats> {
    end.iter()
        .filter_map(|e| {
            let s = start.iter().find(|s| s.node == e.node)?;
            let commands: BTreeMap<String, CommandStat> = e
                .commands
                .iter()
                .filter_map(|(name, &(calls, usec))| {
                    let (c0, u0) = s.commands.get(name).copied().unwrap_or((0, 0));
                    let (calls, usec) = if calls >= c0 {
                        (calls - c0, usec.saturating_sub(u0))
                    } else {
                        (calls, usec)
                    };
                    (calls > 0).then(|| (name.clone(), command_stat(calls, usec)))
                })
                .collect();
            Some(NodeStats {
                node: e.node.clone(),
                pid: e.pid,
                evalsha: commands.get("evalsha").cloned(),
                commands,
            })
        })
        .collect()
}

fn command_stat(calls: u64, usec: u64) -> CommandStat {
    CommandStat {
        calls,
        usec,
        usec_per_call: (calls > 0).then(|| round3(usec as f64 / calls as f64)),
    }
}

/// One command summed over the nodes; `None` when no node ran it.
pub fn total_of(nodes: &[NodeStats], command: &str) -> Option<CommandStat> {
    let (calls, usec) = nodes
        .iter()
        .filter_map(|n| n.commands.get(command))
        .fold((0, 0), |(c, u), s| (c + s.calls, u + s.usec));
    (calls > 0).then(|| command_stat(calls, usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
cmdstat_evalsha:calls=1500,usec=60000,usec_per_call=40.00,rejected_calls=0,failed_calls=2\r\n\
cmdstat_xadd:calls=1500,usec=9000,usec_per_call=6.00,rejected_calls=0,failed_calls=0\r\n\
cmdstat_client|list:calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn commandstats_lines_are_read() {
        let stats = parse_commandstats(INFO);
        assert_eq!(stats["evalsha"], (1500, 60000));
        assert_eq!(stats["xadd"], (1500, 9000));
        assert_eq!(stats["client|list"], (1, 5));
        assert_eq!(stats.len(), 3);
        assert_eq!(
            info_value(
                "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\n",
                "process_id"
            ),
            Some("4242")
        );
        assert_eq!(info_value("process_idx:1\r\n", "process_id"), None);
    }

    #[test]
    fn the_window_is_the_difference_of_two_snapshots() {
        let snap = |evalsha: (u64, u64), xadd: (u64, u64)| Snapshot {
            node: "127.0.0.1:7000".into(),
            pid: Some(7),
            commands: [("evalsha".to_owned(), evalsha), ("xadd".to_owned(), xadd)]
                .into_iter()
                .collect(),
        };
        let start = [snap((100, 4000), (100, 600))];
        let end = [snap((1100, 44000), (100, 600))];
        let diff = diff_stats(&start, &end);
        assert_eq!(diff.len(), 1);
        let evalsha = diff[0].evalsha.clone().unwrap();
        assert_eq!((evalsha.calls, evalsha.usec), (1000, 40000));
        assert_eq!(evalsha.usec_per_call, Some(40.0));
        // Commands not called in the window are left out.
        assert!(!diff[0].commands.contains_key("xadd"));
        // Summed over shards: a call-weighted mean per call.
        let other = NodeStats {
            node: "b".into(),
            pid: None,
            evalsha: None,
            commands: [("evalsha".to_owned(), command_stat(1000, 20000))]
                .into_iter()
                .collect(),
        };
        let total = total_of(&[diff[0].clone(), other], "evalsha").unwrap();
        assert_eq!((total.calls, total.usec_per_call), (2000, Some(30.0)));
        assert_eq!(total_of(&diff, "spublish"), None);
        // A node that was reset counts from zero; one missing is left out.
        let reset = diff_stats(&[snap((5000, 1), (0, 0))], &end);
        assert_eq!(reset[0].evalsha.clone().unwrap().calls, 1100);
        assert!(diff_stats(&[], &end).is_empty());
    }
}
