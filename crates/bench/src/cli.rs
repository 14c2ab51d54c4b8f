//! Command-line arguments.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{ceiling::CeilingArgs, failover::FailoverArgs, target::TargetKind};

/// Load generator for herald, Nchan and the Node floor server.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N subscribers on one topic; publish at `--rate` (latency) or flat
    /// out (deliveries/s).
    Fanout(RunArgs),
    /// N subscribers each on its own topic; publishes spread over the
    /// topics, one delivery each.
    Push(RunArgs),
    /// N idle streams held for `--hold` seconds; RSS per connection.
    Idle(RunArgs),
    /// herald's publish step straight against Redis (no HTTP): how many
    /// publishes/s Redis sustains, and its CPU per publish and per shard.
    Ceiling(CeilingArgs),
    /// Kill a Redis primary (Sentinel or Cluster) under publishes and time
    /// the promotion and herald's first accepted publish after it.
    Failover(FailoverArgs),
    /// Print RSS and CPU time of processes as JSON.
    Procstat(ProcstatArgs),
    /// Read JSON results and print the table with herald/Nchan ratios,
    /// then the Redis-topology, ceiling and failover tables when those
    /// results are there.
    Summarize(SummarizeArgs),
    /// Read JSON results and write an SVG chart.
    Chart(ChartArgs),
}

/// A publish rate: a number per second, or flat out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second, paced.
    PerSecond(f64),
    /// As fast as the server sustains.
    Max,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.trim_end_matches("/s").parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!("expected a positive number or `max`, got `{s}`")),
    }
}

/// Arguments of a scenario run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kind of server under test.
    #[arg(long, value_enum, default_value = "herald")]
    pub target: TargetKind,
    /// Server address; repeat for several nodes (subscribers are spread
    /// over them round-robin).
    #[arg(long = "server", default_value = "127.0.0.1:8080")]
    pub servers: Vec<SocketAddr>,
    /// Where publishes go (default: the first `--server`).
    #[arg(long)]
    pub publish_server: Option<SocketAddr>,
    /// Subscribe path template (`{topic}` is replaced).
    #[arg(long)]
    pub sub_path: Option<String>,
    /// Publish path template (`{topic}` is replaced).
    #[arg(long)]
    pub pub_path: Option<String>,
    /// Subscriber streams.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Idle: one topic per stream unless set (then streams share this many).
    #[arg(long)]
    pub topics: Option<usize>,
    /// Publishes per second (all topics together), or `max`.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// Measurement window, seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publishing before the window, seconds; not measured.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait for deliveries still owed after publishing, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Idle: how long to hold the streams before reading RSS, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Size of each payload (the `data:` line), bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Publisher connections (each topic uses exactly one).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Requests in flight per publisher connection.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Flat out: events per topic owed to subscribers before publishers
    /// pause (counted over at most 128 topics).
    #[arg(long, default_value_t = 32)]
    pub backlog: u64,
    /// Subscriber threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Spread subscriber source addresses over 127.0.0.1..=127.0.0.K.
    #[arg(long, default_value_t = 16)]
    pub source_ips: u8,
    /// Streams opening at once (per thread).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Initial read buffer per stream, bytes.
    #[arg(long, default_value_t = 8192)]
    pub read_buffer: usize,
    /// Server process to measure; repeat for several.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Also measure the direct children of `--server-pid` (nginx workers).
    #[arg(long)]
    pub with_children: bool,
    /// Auxiliary process to measure separately (redis-server).
    #[arg(long = "aux-pid")]
    pub aux_pids: Vec<u32>,
    /// Labels, topic names and where the result goes.
    #[command(flatten)]
    pub output: Output,
}

/// What every measuring subcommand shares: how its result is labelled and
/// written, and its topic names.
#[derive(Debug, Clone, clap::Args)]
pub struct Output {
    /// Free-form label stored in the result.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Append the JSON result to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Topic name prefix (default: unique per run).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Do not print the human summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `procstat`.
#[derive(Debug, Args)]
pub struct ProcstatArgs {
    /// Process to read; repeat for several (summed).
    #[arg(long = "pid", required = true)]
    pub pids: Vec<u32>,
    /// Include direct children.
    #[arg(long)]
    pub with_children: bool,
}

/// Arguments of `summarize`.
#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// JSON-lines result files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Leave out runs during which other processes kept more than this many
    /// cores busy (`other_cpu_cores`): a noise filter, applied to every
    /// server alike.
    #[arg(long)]
    pub max_other_cpu: Option<f64>,
}

/// Arguments of `chart`.
#[derive(Debug, Args)]
pub struct ChartArgs {
    /// JSON-lines result files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// SVG file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// As for `summarize`.
    #[arg(long)]
    pub max_other_cpu: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("50"), Ok(Rate::PerSecond(50.0)));
        assert_eq!(parse_rate("50/s"), Ok(Rate::PerSecond(50.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
