//! Starting `herald serve` for a test: settings, config files, and reading
//! the bound address back.
//!
//! The node binds `127.0.0.1:0` and the address is read from its JSON log
//! (the `listening` line), so tests run in parallel without port clashes.
//! It runs in a temporary working directory, so a developer's
//! `config/herald.toml` is never picked up by accident.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    thread::JoinHandle,
};

use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::{
    child::{kill_and_reap, wait_exit},
    herald_command,
    logs::{create_log_file, pump_lines, tail},
    Node, TIMEOUT,
};

/// Settings every test node gets unless the test overrides them. Two
/// workers keep a node small; the machine runs many nodes at once.
const DEFAULT_ENV: [(&str, &str); 2] = [
    ("HERALD__SERVER__BIND", "127.0.0.1:0"),
    ("HERALD__SERVER__WORKERS", "2"),
];

/// How a node is started: environment overrides and config files.
#[derive(Debug, Default, Clone)]
pub struct NodeBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    config_file: Option<String>,
    shipped_config: Option<String>,
}

impl NodeBuilder {
    /// Sets an environment variable, such as
    /// `("HERALD__HISTORY__MAX_EVENTS", "5")`. `HERALD__LOG__FORMAT` is
    /// always `json`: the kit reads the bound address from the log.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a command-line argument after `herald serve` (and after the
    /// `--config` of [`NodeBuilder::config_file`], if any).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Writes `toml` to a file in the node's directory and passes it as
    /// `--config FILE`.
    pub fn config_file(mut self, toml: &str) -> Self {
        self.config_file = Some(toml.to_owned());
        self
    }

    /// Writes `toml` as `config/herald.toml` in the node's working
    /// directory, where herald looks for its shipped file.
    pub fn shipped_config(mut self, toml: &str) -> Self {
        self.shipped_config = Some(toml.to_owned());
        self
    }

    /// Starts the node and waits until `/readyz` answers `200`.
    ///
    /// # Panics
    ///
    /// When the process exits, logs no address, or is not ready within
    /// [`TIMEOUT`]; the message holds the log file path and its last lines.
    pub async fn start(self) -> Node {
        let node = self.start_listening().await;
        node.wait_ready().await;
        node
    }

    /// Starts `herald serve` and returns as soon as it listens, ready or
    /// not (a node started while its Redis is unreachable).
    ///
    /// # Panics
    ///
    /// As [`NodeBuilder::start`], except for readiness.
    pub async fn start_listening(self) -> Node {
        let mut spawned = self.spawn();
        let addr = match tokio::time::timeout(TIMEOUT, &mut spawned.listening).await {
            Ok(Ok(addr)) => addr,
            outcome => {
                kill_and_reap(&mut spawned.child);
                let _ = spawned.pump.join();
                let why = if outcome.is_err() {
                    "logged no listening address in time"
                } else {
                    "exited before listening"
                };
                panic!(
                    "herald {why}; log {}:\n{}",
                    spawned.log_path.display(),
                    tail(&spawned.log_path, 30)
                );
            }
        };
        Node::new(spawned.child, addr, spawned.log_path, spawned.dir)
    }

    /// Starts `herald serve` expecting it to refuse to start, and returns
    /// how it exited and what it wrote to stderr.
    ///
    /// # Panics
    ///
    /// When the node starts listening instead, or has not exited within
    /// [`TIMEOUT`].
    pub async fn start_expecting_failure(self) -> StartupFailure {
        let mut spawned = self.spawn();
        if let Ok(Ok(addr)) = tokio::time::timeout(TIMEOUT, &mut spawned.listening).await {
            kill_and_reap(&mut spawned.child);
            panic!(
                "herald was expected to refuse to start but listens on {addr}; log {}",
                spawned.log_path.display()
            );
        }
        let Some(status) = wait_exit(&mut spawned.child, TIMEOUT).await else {
            kill_and_reap(&mut spawned.child);
            panic!(
                "herald neither listened nor exited in time; log {}",
                spawned.log_path.display()
            );
        };
        spawned
            .pump
            .join()
            .expect("the log pump thread does not panic");
        StartupFailure {
            status,
            stderr: fs::read_to_string(&spawned.log_path).unwrap_or_default(),
            log_path: spawned.log_path,
        }
    }

    fn spawn(self) -> Spawned {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let mut command = herald_command();
        command.arg("serve").current_dir(dir.path());
        if let Some(toml) = &self.shipped_config {
            let config_dir = dir.path().join("config");
            fs::create_dir_all(&config_dir).expect("creating config/");
            fs::write(config_dir.join("herald.toml"), toml).expect("writing config/herald.toml");
        }
        if let Some(toml) = &self.config_file {
            let path = dir.path().join("test-config.toml");
            fs::write(&path, toml).expect("writing the --config file");
            command.arg("--config").arg(path);
        }
        command.args(&self.args);
        command.envs(DEFAULT_ENV);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.env("HERALD__LOG__FORMAT", "json");

        let (log_path, log_file) = create_log_file("herald");
        let stdout = log_file.try_clone().expect("duplicating the log file");
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning herald");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (tx, listening) = oneshot::channel();
        let mut tx = Some(tx);
        let pump = pump_lines(stderr, log_file, move |line| {
            if tx.is_some() {
                if let Some(addr) = listening_addr(line) {
                    let _ = tx.take().expect("checked above").send(addr);
                }
            }
        });
        Spawned {
            child,
            listening,
            pump,
            log_path,
            dir,
        }
    }
}

struct Spawned {
    child: Child,
    listening: oneshot::Receiver<SocketAddr>,
    pump: JoinHandle<()>,
    log_path: PathBuf,
    dir: TempDir,
}

/// The address of a JSON log line `{"message":"listening","addr":…}`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "listening" {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}

/// How a node that refused to start ended.
#[derive(Debug)]
pub struct StartupFailure {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stderr (and stdout).
    pub stderr: String,
    /// Where that output is kept.
    pub log_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_gives_the_address() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"listening","addr":"127.0.0.1:36113","workers":2,"target":"herald::server"}"#;
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:36113".parse().unwrap())
        );
        assert_eq!(
            listening_addr(r#"{"message":"starting","addr":"127.0.0.1:1"}"#),
            None
        );
        assert_eq!(listening_addr("herald: invalid configuration"), None);
    }
}
