//! The `herald` command: `herald serve` and `herald publish`.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use herald::{
    cli::{self, Cli, Command},
    config, logging, server,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Publish(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|runtime| runtime.block_on(cli::publish(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How much nicer than the HTTP workers the stream threads run.
///
/// These threads write events to streams; the HTTP workers answer
/// publishes (and, in Redis mode, talk to Redis for them). During a large
/// fan-out the stream threads have work for every core, and a publish would
/// wait for a time slice behind them: on two cores with 10,000 subscribers,
/// publish p99 went from 17-21 ms to 10-11 ms with this, fan-out throughput
/// unchanged. 10 took throughput from streams without lowering the p99
/// further. Raising one's own niceness needs no privilege; where it fails
/// (a seccomp profile) the threads just keep the default priority.
const STREAM_THREAD_NICENESS: i32 = 5;

fn lower_priority() {
    let _ = rustix::process::setpriority_process(
        Some(rustix::thread::gettid()),
        STREAM_THREAD_NICENESS,
    );
}

fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = config::load(config)?;
    logging::init(&settings.log)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server::worker_count(&settings))
        .thread_name("herald-io")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(server::run(settings))
}
