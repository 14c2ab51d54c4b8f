//! `herald-bench`: load generator for herald and its peers.
//!
//! It asserts nothing; it reports numbers (a JSON object per run on stdout,
//! a table on stderr). See BENCHMARKS.md for the scenarios and how the
//! head-to-head runner in `bench/run` uses it.

use anyhow::{Context, Result};
use clap::Parser;

use herald_bench::{
    ceiling, chart,
    cli::{Cli, Command},
    clock, failover, procstat, run,
    run::Scenario,
    summary, topologies,
};

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (scenario, args) = match cli.command {
        Command::Fanout(args) => (Scenario::Fanout, args),
        Command::Push(args) => (Scenario::Push, args),
        Command::Idle(args) => (Scenario::Idle, args),
        Command::Ceiling(args) => {
            let report = ceiling::run(&args)?;
            return emit(&report, report.table(), &args.output);
        }
        Command::Failover(args) => return failover::run(&args),
        Command::Procstat(args) => {
            let pids = if args.with_children {
                procstat::with_children(&args.pids)
            } else {
                args.pids
            };
            let sample = procstat::sample_all(&pids);
            println!("{}", serde_json::to_string(&sample)?);
            return Ok(());
        }
        Command::Summarize(args) => {
            let mut reports = summary::load(&args.inputs)?;
            let mut ceilings: Vec<ceiling::CeilingReport> = topologies::load(&args.inputs)?;
            let failovers: Vec<failover::FailoverRun> = topologies::load(&args.inputs)?;
            if let Some(max) = args.max_other_cpu {
                let before = reports.len();
                reports.retain(|r| r.other_cpu_cores <= max);
                // The same noise filter for the ceiling runs; failover
                // times are not throughput and are kept.
                ceilings.retain(|c| c.other_cpu_cores <= max);
                println!(
                    "_{} of {before} runs kept: other processes used at most {max} cores during them._",
                    reports.len()
                );
            }
            print!("{}", summary::markdown(&reports));
            print!("{}", topologies::markdown(&reports, &ceilings, &failovers));
            return Ok(());
        }
        Command::Chart(args) => {
            let mut reports = summary::load(&args.inputs)?;
            if let Some(max) = args.max_other_cpu {
                reports.retain(|r| r.other_cpu_cores <= max);
            }
            let svg = chart::render(&reports);
            std::fs::write(&args.output, svg)
                .with_context(|| format!("writing {}", args.output.display()))?;
            return Ok(());
        }
    };
    clock::now_ns();
    let report = run::run(scenario, &args)?;
    emit(&report, report.table(), &args.output)
}

/// Prints a result (its table for a person unless quiet, its JSON on
/// stdout) and appends it to the results file, if one was named.
fn emit<T: serde::Serialize>(
    report: &T,
    table: String,
    output: &herald_bench::cli::Output,
) -> Result<()> {
    if !output.quiet {
        eprint!("{table}");
    }
    println!("{}", serde_json::to_string(report)?);
    if let Some(path) = &output.json_out {
        herald_bench::report::append_json_line(report, path)
            .with_context(|| format!("appending to {}", path.display()))?;
    }
    Ok(())
}
