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

fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = config::load(config)?;
    logging::init(&settings.log)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server::worker_count(&settings))
        .thread_name("herald-io")
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(server::run(settings))
}
