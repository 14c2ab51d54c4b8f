//! One run: start the world and the traffic, inject the planned faults,
//! heal everything, let the traffic settle, stop, and judge.
//!
//! Phases: faults for `duration`; then a quiet tail (everything healed,
//! traffic still flowing) in which nodes' memory is sampled at the start
//! and the end; then publishers stop taking new events and finish the
//! ones still being retried; clients read until nothing new arrives; the
//! nodes are stopped with SIGTERM (each must exit `0`).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde::Serialize;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    checker::{self, Verdict},
    history::{Fault, History, Recorder},
    schedule::{self, Capabilities, FaultKind, Planned},
    workload::{self, ClientFault, Traffic},
    world::{rss_kib, NodeSettings, Topology, World},
};

/// What a run looks like.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seed of the fault plan and of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long faults are injected (e.g. `60s`, `30m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Average time between the starts of two faults.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub fault_every: Duration,
    /// Quiet time after the faults, with traffic, before stopping (memory
    /// is sampled at its start and end).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub tail: Duration,
    /// Which Redis the nodes share.
    #[arg(long, value_enum, default_value = "standalone")]
    pub topology: Topology,
    /// herald nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Topics published to.
    #[arg(long, default_value_t = 6)]
    pub topics: usize,
    /// Subscribing clients (each on 1 to 3 topics).
    #[arg(long, default_value_t = 12)]
    pub clients: usize,
    /// Publishers (each publishes one event per `--pace`).
    #[arg(long, default_value_t = 3)]
    pub publishers: usize,
    /// Time between two events of one publisher.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub pace: Duration,
    /// `history.max_events` of the nodes: small, so that clients left
    /// behind find their history trimmed.
    #[arg(long, default_value_t = 300)]
    pub max_events: usize,
}

/// The outcome of a run, for people and for the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The seed of the run.
    pub seed: u64,
    /// Which Redis topology.
    pub topology: String,
    /// Seconds of faults.
    pub duration_s: f64,
    /// Faults applied, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Planned faults not applied because their target was busy.
    pub faults_skipped: usize,
    /// The checker's conclusion.
    pub verdict: Verdict,
}

/// Runs once and returns the summary and the full history.
pub async fn run(options: &Options) -> (Summary, History) {
    let recorder = Recorder::new();
    let settings = NodeSettings {
        max_events: options.max_events,
        client_buffer_events: 64,
    };
    let mut world =
        World::start(options.topology, options.nodes, &settings, recorder.clone()).await;
    let capabilities = match options.topology {
        Topology::Standalone => Capabilities::Standalone,
        Topology::Sentinel | Topology::Cluster => Capabilities::Replicated,
    };
    let plan = schedule::plan(
        options.seed,
        options.duration,
        options.fault_every,
        options.nodes,
        options.clients,
        capabilities,
    );
    let traffic = Traffic {
        seed: options.seed,
        urls: Arc::new((0..world.nodes()).map(|i| world.node_url(i)).collect()),
        recorder: recorder.clone(),
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let topic_names: Arc<Vec<String>> = Arc::new(
        (0..options.topics)
            .map(|i| format!("chaos{}.t{i}", options.seed))
            .collect(),
    );

    let (stop_clients, clients_stop) = watch::channel(false);
    let mut client_faults = Vec::new();
    let mut client_tasks = Vec::new();
    for id in 0..options.clients {
        let count = rng.random_range(1..=3.min(topic_names.len()));
        let topics: Vec<String> = topic_names
            .choose_multiple(&mut rng, count)
            .cloned()
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        client_faults.push(tx);
        client_tasks.push(tokio::spawn(workload::client(
            id,
            traffic.clone(),
            topics,
            rx,
            clients_stop.clone(),
        )));
    }
    // Clients open their streams before anything is published.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stop_publishing, publishing_stop) = watch::channel(false);
    let (give_up, giving_up) = watch::channel(false);
    let publisher_tasks: Vec<_> = (0..options.publishers)
        .map(|id| {
            tokio::spawn(workload::publisher(
                id,
                traffic.clone(),
                Arc::clone(&topic_names),
                options.pace,
                publishing_stop.clone(),
                giving_up.clone(),
            ))
        })
        .collect();

    let skipped = inject(&mut world, &plan, &recorder, &client_faults, &mut rng).await;

    // Quiet tail: everything healed and ready, traffic still flowing.
    world.wait_ready().await;
    let quiet: Vec<(usize, u64)> = world
        .node_pids()
        .into_iter()
        .filter_map(|(i, pid)| rss_kib(pid).map(|kib| (i, kib)))
        .collect();
    tokio::time::sleep(options.tail).await;
    let memory = world
        .node_pids()
        .into_iter()
        .filter_map(|(i, pid)| {
            let end = rss_kib(pid)?;
            let start = quiet.iter().find(|(n, _)| *n == i)?.1;
            Some((i, start, end))
        })
        .collect();

    // Publishers finish the events they are retrying, then clients read
    // until nothing new has arrived for a while.
    let _ = stop_publishing.send(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    for task in publisher_tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, task).await.is_err() {
            let _ = give_up.send(true);
        }
    }
    let _ = give_up.send(true);
    settle(&recorder).await;
    let _ = stop_clients.send(true);
    for task in client_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    world.stop().await;

    let mut history = recorder.snapshot();
    history.memory = memory;
    let verdict = checker::check(&history, options.max_events);
    let mut faults = BTreeMap::new();
    for fault in &history.faults {
        *faults.entry(fault.kind.name().to_owned()).or_insert(0) += 1;
    }
    let summary = Summary {
        seed: options.seed,
        topology: format!("{:?}", options.topology).to_lowercase(),
        duration_s: options.duration.as_secs_f64(),
        faults,
        faults_skipped: skipped,
        verdict,
    };
    (summary, history)
}

/// Starts and heals the planned faults at their times. Returns how many
/// were skipped because their target was busy with another fault.
async fn inject(
    world: &mut World,
    plan: &[Planned],
    recorder: &Recorder,
    client_faults: &[mpsc::UnboundedSender<ClientFault>],
    rng: &mut StdRng,
) -> usize {
    let started = Instant::now();
    // Heals due, earliest first: (when, index into the fault record).
    let mut heals: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut active: Vec<(usize, FaultKind)> = Vec::new();
    let mut skipped = 0;
    let mut next = plan.iter().peekable();
    loop {
        let next_start = next.peek().map(|p| p.at);
        let next_heal = heals.peek().map(|Reverse((at, _))| *at);
        let (at, is_heal) = match (next_start, next_heal) {
            (None, None) => break,
            (Some(s), Some(h)) if h <= s => (h, true),
            (None, Some(h)) => (h, true),
            (Some(s), _) => (s, false),
        };
        tokio::time::sleep_until(started + at).await;
        if is_heal {
            let Reverse((_, record)) = heals.pop().expect("peeked");
            let kind = recorder.with(|h| h.faults[record].kind);
            let note = world.heal(kind).await;
            active.retain(|(r, _)| *r != record);
            let now = recorder.now();
            recorder.with(|h| {
                let fault = &mut h.faults[record];
                fault.ended_ms = Some(now);
                if !note.is_empty() {
                    fault.note = format!("{}; {note}", fault.note)
                        .trim_start_matches("; ")
                        .to_owned();
                }
            });
            continue;
        }
        let planned = next.next().expect("peeked");
        let kinds: Vec<FaultKind> = active.iter().map(|(_, k)| *k).collect();
        if !schedule::compatible(&planned.kind, &kinds, world.nodes()) {
            skipped += 1;
            continue;
        }
        let started_ms = recorder.now();
        match planned.kind {
            FaultKind::SlowClient(c) => {
                let _ = client_faults[c].send(ClientFault::Slow(planned.lasts));
            }
            FaultKind::SwitchNode(c) => {
                let _ = client_faults[c].send(ClientFault::Switch);
            }
            _ => {}
        }
        let note = world.apply(planned.kind, rng).await;
        let record = recorder.with(|h| {
            h.faults.push(Fault {
                kind: planned.kind,
                started_ms,
                ended_ms: None,
                note,
            });
            h.faults.len() - 1
        });
        active.push((record, planned.kind));
        heals.push(Reverse((started.elapsed() + planned.lasts, record)));
    }
    skipped
}

/// Waits until no client has received anything new for two seconds (at
/// most thirty).
async fn settle(recorder: &Recorder) {
    let count = || {
        recorder.with(|h| {
            h.clients
                .iter()
                .flat_map(|c| &c.segments)
                .map(|s| s.received.len())
                .sum::<usize>()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = usize::MAX;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = count();
        if now == last {
            return;
        }
        last = now;
    }
}

/// A few lines for a person: figures, and on failure the first violation
/// with the faults around it.
pub fn report(summary: &Summary, history: &History) -> String {
    let v = &summary.verdict;
    let mut text = format!(
        "seed {} ({}, {:.0} s of faults): {} faults ({} skipped: target busy), {} publishes \
         ({} attempts: {} accepted, {} refused 503, {} unanswered), {} streams, {} events received, \
         {} acknowledged events checked; resyncs: {} history lost, {} trimmed, {} unjustified\n",
        summary.seed,
        summary.topology,
        summary.duration_s,
        history.faults.len(),
        summary.faults_skipped,
        v.publishes,
        v.attempts,
        v.accepted,
        v.refused_503,
        v.no_answer,
        v.streams_opened,
        v.events_received,
        v.events_checked,
        v.resyncs.history_lost,
        v.resyncs.trimmed,
        v.resyncs.unjustified,
    );
    for (kind, count) in &summary.faults {
        text.push_str(&format!("  {count:>4} × {kind}\n"));
    }
    if v.passed() {
        text.push_str("verdict: PASS (0 violations)\n");
        return text;
    }
    text.push_str(&format!(
        "verdict: FAIL, {} violation(s); reproduce with --seed {}\n",
        v.violations.len(),
        summary.seed
    ));
    let first = &v.violations[0];
    text.push_str(&format!(
        "first violation at {} ms: {}\n",
        first.at_ms, first.what
    ));
    text.push_str("faults around it:\n");
    let at = first.at_ms.min(u64::MAX - 1);
    for fault in history
        .faults
        .iter()
        .filter(|f| f.started_ms + 15_000 >= at && f.started_ms <= at.saturating_add(5_000))
    {
        text.push_str(&format!(
            "  {:>8} ms {:?} until {} {}\n",
            fault.started_ms,
            fault.kind,
            fault
                .ended_ms
                .map_or_else(|| "-".to_owned(), |e| format!("{e} ms")),
            fault.note
        ));
    }
    for violation in v.violations.iter().skip(1).take(9) {
        text.push_str(&format!(
            "  also at {} ms: {}\n",
            violation.at_ms, violation.what
        ));
    }
    text
}
