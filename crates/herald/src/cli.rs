//! The command line: `herald serve` and `herald publish`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

/// A horizontally scaled Server-Sent Events push gateway.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// herald's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve {
        /// A TOML file overriding config/herald.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Publish one event to a running node.
    Publish(PublishArgs),
}

/// Arguments of `herald publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// The event data (a string, or JSON with --json).
    #[arg(long)]
    data: String,
    /// The SSE event type.
    #[arg(long)]
    event: Option<String>,
    /// Send --data as a JSON value instead of a string.
    #[arg(long)]
    json: bool,
    /// An idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The node's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A publish key or JWT, sent as a bearer token.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Publishes one event and prints its cursor.
///
/// # Errors
///
/// When the node cannot be reached or refuses the event; the message holds
/// the problem's detail.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let data = if args.json {
        serde_json::from_str::<Value>(&args.data).context("--data is not valid JSON")?
    } else {
        Value::String(args.data)
    };
    let mut body = json!({ "topic": args.topic, "data": data });
    if let Some(event) = args.event {
        body["event"] = Value::String(event);
    }
    if let Some(key) = args.idempotency_key {
        body["idempotency_key"] = Value::String(key);
    }
    let url = format!("{}/v1/publish", args.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url).json(&body);
    if let Some(token) = args.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = answer["detail"].as_str().unwrap_or("no detail");
        bail!("{url} answered {status}: {detail}");
    }
    println!("{}", answer["id"].as_str().unwrap_or_default());
    Ok(())
}
