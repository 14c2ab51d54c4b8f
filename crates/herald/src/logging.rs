//! Log output: human-readable lines by default, one JSON object per line
//! with `log.format = "json"`. Logs go to stderr; stdout stays free for
//! command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// actix-http logs every request it cannot parse at ERROR: any client could
/// fill the log with garbage. herald answers those requests; it does not need
/// them logged. `log.level` can still name the target to see them.
const QUIET: &str = "actix_http::h1::dispatcher=off";

/// Installs the global subscriber. `RUST_LOG`, when set, overrides
/// `log.level`.
///
/// # Errors
///
/// When `log.level` is not a valid filter.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(value)?,
        _ => EnvFilter::try_new(format!("{QUIET},{}", settings.level)).map_err(|e| {
            anyhow::anyhow!(
                "log.level: {:?} is not a valid filter ({e})",
                settings.level
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    Ok(())
}
