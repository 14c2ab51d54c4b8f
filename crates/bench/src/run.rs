//! Running one scenario: open the streams, publish, measure, report.
//!
//! The calling thread only orchestrates (sleeps and reads counters and
//! `/proc`); subscribers run on `--threads` threads and publishers on one
//! more. Publishing starts only once every stream is open, so each stream
//! expects every sequence number of its topic from 0. The measurement
//! window starts after a warm-up, and server CPU is read at its two ends.
// This thread only orchestrates (no async runtime runs on it): it times
// the scenario's phases and paces with blocking sleeps on purpose.
#![allow(clippy::disallowed_methods)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Result};
use tokio::sync::watch;

use crate::{
    accounting::{summarize, SubscriberTotals},
    cli::{Rate, RunArgs},
    clock::now_ns,
    cost::{per_pid, sample_each, sum},
    procstat::{machine_busy_s, sample_all, sample_self, with_children, ProcSample},
    publisher::{self, PublishTopic, PublisherPlan, PublisherTotals},
    report::{round3, ProcWindow, Report},
    shared::Shared,
    subscriber::{self, SubscriberPlan, ThreadSettings},
    target::Target,
};

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One topic, many subscribers.
    Fanout,
    /// One topic per subscriber.
    Push,
    /// Streams held open, nothing published.
    Idle,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Push => "push",
            Scenario::Idle => "idle",
        }
    }
}

/// Longest wait for every stream to open.
const OPEN_ALL_TIMEOUT: Duration = Duration::from_secs(180);
/// Pause after the last stream opened, so servers that join topics
/// asynchronously (a Redis SUBSCRIBE) are ready before the first publish.
const SETTLE: Duration = Duration::from_millis(500);

/// Raises this process's soft fd limit to the hard limit; returns it.
pub fn raise_fd_limit() -> u64 {
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(_, hard)| hard);
    rlimit::increase_nofile_limit(hard).unwrap_or(1024)
}

/// Runs `scenario` with `args` and returns its report.
///
/// # Errors
/// Bad arguments, or a scenario that could not open any stream.
pub fn run(scenario: Scenario, args: &RunArgs) -> Result<Report> {
    let fd_limit = raise_fd_limit();
    if args.servers.is_empty() {
        bail!("--server is required");
    }
    if args.subs as u64 + 64 > fd_limit {
        bail!(
            "{} streams need more file descriptors than this process may open ({fd_limit}); \
             run several bench processes",
            args.subs
        );
    }
    let target = Target::new(args.target, args.sub_path.clone(), args.pub_path.clone());
    let topic_count = match scenario {
        Scenario::Fanout => 1,
        Scenario::Push => args.subs.max(1),
        Scenario::Idle => args.topics.unwrap_or(args.subs).clamp(1, args.subs.max(1)),
    };
    let prefix = args
        .output
        .topic_prefix
        .clone()
        .unwrap_or_else(default_prefix);
    let names: Vec<String> = (0..topic_count).map(|i| format!("{prefix}-{i}")).collect();
    let shared = Arc::new(Shared::new(topic_count));
    let server_pids = if args.with_children {
        with_children(&args.server_pids)
    } else {
        args.server_pids.clone()
    };
    let server_before = sample_all(&server_pids);
    let bench_before = sample_self();

    // Subscribers.
    let threads = args.threads.max(1);
    let mut plans: Vec<Vec<SubscriberPlan>> = vec![Vec::new(); threads];
    for i in 0..args.subs {
        let server = args.servers[i % args.servers.len()];
        let topic = i % topic_count;
        let source = (args.source_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % args.source_ips as usize) as u8));
        plans[i % threads].push(SubscriberPlan {
            topic: topic as u32,
            server,
            host: server.to_string(),
            path: target.subscribe_path(&names[topic]),
            source,
        });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = ThreadSettings {
        connect_concurrency: args.connect_concurrency,
        read_buffer: args.read_buffer,
    };
    let sub_threads: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, plan)| {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            thread::Builder::new()
                .name(format!("sub-{i}"))
                .spawn(move || subscriber::run_thread(plan, shared, stop, settings))
                .expect("spawning a thread")
        })
        .collect();

    let opening = Instant::now();
    while shared.settled() < args.subs as u64 && opening.elapsed() < OPEN_ALL_TIMEOUT {
        thread::sleep(Duration::from_millis(20));
    }
    let open_secs = opening.elapsed().as_secs_f64();
    eprintln!(
        "opened {} of {} streams in {open_secs:.1}s ({} failed)",
        shared.connected.load(Relaxed),
        args.subs,
        shared.connect_failed.load(Relaxed)
    );
    thread::sleep(SETTLE);

    let aux_pids = args.aux_pids.clone();
    let measured = match scenario {
        Scenario::Idle => measure_idle(args, &server_pids, &aux_pids),
        Scenario::Fanout | Scenario::Push => {
            measure_publishing(args, &target, &names, &shared, &server_pids, &aux_pids)
        }
    };

    let _ = stop_tx.send(true);
    let mut subs = SubscriberTotals::default();
    for t in sub_threads {
        if let Ok(totals) = t.join() {
            subs.merge(&totals);
        }
    }
    let mut subscribers = vec![0u64; topic_count];
    (0..args.subs).for_each(|i| subscribers[i % topic_count] += 1);
    let expected: u64 = (0..topic_count)
        .map(|t| shared.topics.acked[t].load(Relaxed) * subscribers[t])
        .sum();
    let bench = ProcWindow::new(
        vec![std::process::id()],
        bench_before,
        measured.bench_start,
        measured.bench_end,
        measured.window_s,
    );
    let server = ProcWindow::new(
        server_pids,
        server_before,
        measured.server_start,
        measured.server_end,
        measured.window_s,
    );
    let connected = subs.connected;
    let rss_per_conn_bytes = (scenario == Scenario::Idle && connected > 0).then(|| {
        round3(
            (server.rss_after_kib as f64 - server.rss_before_kib as f64) * 1024.0
                / connected as f64,
        )
    });
    if connected == 0 {
        bail!("no stream could be opened to {:?}", args.servers);
    }
    let pubs = measured.publishers;
    let machine_cpu_cores = measured.machine_busy_s / measured.window_s.max(1e-9);
    let aux_per_pid = per_pid(
        &aux_pids,
        &measured.aux_start,
        &measured.aux_end,
        measured.window_s,
        measured.acked_in_window,
    );
    let aux = (!aux_pids.is_empty()).then(|| {
        let (start, end) = (sum(&measured.aux_start), sum(&measured.aux_end));
        ProcWindow::new(aux_pids, start, start, end, measured.window_s)
    });
    let ours = server.cpu_cores + bench.cpu_cores + aux.as_ref().map_or(0.0, |a| a.cpu_cores);
    Ok(Report {
        scenario: scenario.name().to_owned(),
        target: args.target,
        label: args.output.label.clone(),
        nodes: args.servers.len(),
        subs: args.subs,
        topics: topic_count,
        connected,
        connect_failures: subs.connect_failures,
        disconnects: subs.disconnects,
        rate: match (scenario, args.rate) {
            (Scenario::Idle, _) | (_, Rate::Max) => None,
            (_, Rate::PerSecond(r)) => Some(r),
        },
        backlog: (scenario != Scenario::Idle && args.rate == Rate::Max).then_some(args.backlog),
        window_s: round3(measured.window_s),
        payload_bytes: args.payload_bytes,
        published: pubs.published,
        acked: pubs.acked,
        publish_failures: pubs.failed,
        publishes_per_s: round3(measured.acked_in_window as f64 / measured.window_s.max(1e-9)),
        deliveries: subs.deliveries,
        deliveries_per_s: round3(measured.delivered_in_window as f64 / measured.window_s.max(1e-9)),
        expected_deliveries: expected,
        lost: subs.lost,
        gaps: subs.gaps,
        duplicates: subs.duplicates,
        reordered: subs.reordered,
        unparsed: subs.unparsed,
        latency_us: summarize(&subs.latency),
        publish_rtt_us: summarize(&pubs.rtt),
        server,
        aux,
        aux_per_pid,
        bench,
        machine_cpu_cores: round3(machine_cpu_cores),
        other_cpu_cores: round3((machine_cpu_cores - ours).max(0.0)),
        rss_per_conn_bytes,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// What was measured while streams were open.
struct Measured {
    window_s: f64,
    server_start: ProcSample,
    server_end: ProcSample,
    /// Each `--aux-pid` on its own (summed for `aux`).
    aux_start: Vec<ProcSample>,
    aux_end: Vec<ProcSample>,
    bench_start: ProcSample,
    bench_end: ProcSample,
    machine_busy_s: f64,
    delivered_in_window: u64,
    acked_in_window: u64,
    publishers: PublisherTotals,
}

fn measure_idle(args: &RunArgs, server_pids: &[u32], aux_pids: &[u32]) -> Measured {
    // The line a multi-process runner waits for before reading RSS itself.
    eprintln!("HOLDING {}", args.subs);
    let server_start = sample_all(server_pids);
    let aux_start = sample_each(aux_pids);
    let bench_start = sample_self();
    let machine_start = machine_busy_s();
    let started = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.hold.max(0.0)));
    Measured {
        machine_busy_s: machine_busy_s() - machine_start,
        window_s: started.elapsed().as_secs_f64(),
        server_start,
        server_end: sample_all(server_pids),
        aux_start,
        aux_end: sample_each(aux_pids),
        bench_start,
        bench_end: sample_self(),
        delivered_in_window: 0,
        acked_in_window: 0,
        publishers: PublisherTotals::default(),
    }
}

fn measure_publishing(
    args: &RunArgs,
    target: &Target,
    names: &[String],
    shared: &Arc<Shared>,
    server_pids: &[u32],
    aux_pids: &[u32],
) -> Measured {
    let topic_count = names.len();
    let conns = args.publishers.clamp(1, topic_count);
    let publish_server: SocketAddr = args.publish_server.unwrap_or(args.servers[0]);
    let start_ns = now_ns() + 50_000_000;
    let window_start = start_ns + secs_ns(args.warmup);
    let window_end = window_start + secs_ns(args.duration);
    shared.record_from_ns.store(window_start, Relaxed);
    shared.record_until_ns.store(window_end, Relaxed);
    let subs_per_topic = (shared.connected.load(Relaxed) as usize)
        .div_ceil(topic_count)
        .max(1);
    let backlog_limit = match args.rate {
        Rate::Max => (args.backlog * (subs_per_topic * topic_count.min(128)) as u64) as i64,
        Rate::PerSecond(_) => 0,
    };
    let plans: Vec<PublisherPlan> = (0..conns)
        .map(|c| PublisherPlan {
            server: publish_server,
            host: publish_server.to_string(),
            topics: (c..topic_count)
                .step_by(conns)
                .map(|t| PublishTopic {
                    index: t as u32,
                    name: names[t].clone(),
                    path: target.publish_path(&names[t]),
                })
                .collect(),
            rate: match args.rate {
                Rate::PerSecond(r) => Some(r / conns as f64),
                Rate::Max => None,
            },
            start_ns: match args.rate {
                Rate::PerSecond(r) => start_ns + (c as f64 * 1e9 / r) as u64,
                Rate::Max => start_ns,
            },
            end_ns: window_end,
            pipeline: args.pipeline,
            payload_bytes: args.payload_bytes,
            backlog_limit,
        })
        .collect();
    let publisher = {
        let shared = shared.clone();
        let target = target.clone();
        thread::Builder::new()
            .name("pub".into())
            .spawn(move || publisher::run_thread(plans, shared, target))
            .expect("spawning a thread")
    };
    let total_acked = || -> u64 { shared.topics.acked.iter().map(|a| a.load(Relaxed)).sum() };

    sleep_until_ns(window_start);
    let (server_start, aux_start, bench_start) = (
        sample_all(server_pids),
        sample_each(aux_pids),
        sample_self(),
    );
    let machine_start = machine_busy_s();
    let delivered_start = shared.deliveries.load(Relaxed);
    let acked_start = total_acked();
    let started = Instant::now();
    sleep_until_ns(window_end);
    let window_s = started.elapsed().as_secs_f64();
    let machine_busy = machine_busy_s() - machine_start;
    let (server_end, aux_end, bench_end) = (
        sample_all(server_pids),
        sample_each(aux_pids),
        sample_self(),
    );
    let delivered_in_window = shared.deliveries.load(Relaxed) - delivered_start;
    let acked_in_window = total_acked() - acked_start;
    let publishers = publisher.join().unwrap_or_default();

    // Let the deliveries still owed arrive, or stop when they stop coming.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain.max(0.0));
    let mut last = shared.deliveries.load(Relaxed);
    let mut quiet_since = Instant::now();
    while shared.outstanding.load(Relaxed) > 0 && Instant::now() < drain_until {
        thread::sleep(Duration::from_millis(20));
        let now = shared.deliveries.load(Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    Measured {
        window_s,
        server_start,
        server_end,
        aux_start,
        aux_end,
        bench_start,
        bench_end,
        machine_busy_s: machine_busy,
        delivered_in_window,
        acked_in_window,
        publishers,
    }
}

fn secs_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

fn sleep_until_ns(at: u64) {
    let now = now_ns();
    if at > now {
        thread::sleep(Duration::from_nanos(at - now));
    }
}

fn default_prefix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("b{}x{}", std::process::id(), secs % 1_000_000)
}
