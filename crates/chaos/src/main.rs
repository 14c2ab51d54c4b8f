//! `herald-chaos`: runs seeded chaos soaks against real herald nodes and
//! Redis and prints the verdict; exits non-zero on any violation.
//!
//! ```sh
//! herald-chaos --seed 7 --duration 60s                  # one run
//! herald-chaos --seeds 1,2,3 --duration 40s             # the CI set
//! herald-chaos --duration 30m --seed 42 --history h.json   # a long run, history kept
//! ```

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use herald_chaos::run::{self, Options};

#[derive(Debug, Parser)]
#[command(name = "herald-chaos", about = "Seeded chaos soak for herald")]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Several seeds, run one after the other (overrides --seed).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Append each run's summary as a JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write the full history of the (last) run to this file.
    #[arg(long)]
    history: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(soak(cli)))
    {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("herald-chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn soak(cli: Cli) -> anyhow::Result<bool> {
    let seeds = if cli.seeds.is_empty() {
        vec![cli.options.seed]
    } else {
        cli.seeds.clone()
    };
    let mut passed = true;
    for seed in seeds {
        let options = Options {
            seed,
            ..cli.options.clone()
        };
        eprintln!(
            "herald-chaos: seed {seed}, {:?} topology, {:?} of faults",
            options.topology, options.duration
        );
        let (summary, history) = run::run(&options).await;
        print!("{}", run::report(&summary, &history));
        passed &= summary.verdict.passed();
        if let Some(path) = &cli.json_out {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(file, "{}", serde_json::to_string(&summary)?)?;
        }
        if let Some(path) = &cli.history {
            std::fs::write(path, serde_json::to_vec(&history)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(passed)
}
