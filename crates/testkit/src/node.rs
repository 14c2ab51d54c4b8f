//! One `herald serve` process, started for a test and stopped with it.
//!
//! The node binds `127.0.0.1:0` and the address is read back from its JSON
//! log (the `listening` line), so tests run in parallel without port
//! clashes. It runs in a temporary working directory, so a developer's
//! `config/herald.toml` is never picked up by accident.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::{
    child::{kill_and_reap, send_signal, wait_exit},
    herald_command,
    logs::{create_log_file, pump_lines, tail},
    Api, SseStream, Subscribe, TIMEOUT,
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
        let url = format!("http://{addr}");
        let node = Node {
            child: spawned.child,
            addr,
            api: Api::new(&url),
            url,
            log_path: spawned.log_path,
            _dir: spawned.dir,
        };
        node.wait_ready().await;
        node
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

/// A running `herald serve`. Dropping it kills the process (SIGKILL, by its
/// own PID) and reaps it.
#[derive(Debug)]
pub struct Node {
    child: Child,
    addr: SocketAddr,
    url: String,
    api: Api,
    log_path: PathBuf,
    // Removed when the node is dropped, after the process is gone.
    _dir: TempDir,
}

impl Node {
    /// A builder for a node with non-default settings.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Starts a node with default settings.
    ///
    /// # Panics
    ///
    /// As [`NodeBuilder::start`].
    pub async fn start() -> Node {
        NodeBuilder::default().start().await
    }

    /// The base URL, such as `http://127.0.0.1:36113`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding the node's stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the node has logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A client for the node's HTTP API.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// A subscribe request to this node, to add topics and resume points to.
    pub fn subscribe_request(&self) -> Subscribe {
        Subscribe::new(&self.url)
    }

    /// Opens a stream on `topics`.
    ///
    /// # Panics
    ///
    /// As [`Subscribe::send`].
    pub async fn subscribe(&self, topics: &[&str]) -> SseStream {
        self.subscribe_request().topics(topics).send().await
    }

    /// Polls `/readyz` until it answers `200`.
    ///
    /// # Panics
    ///
    /// When it does not within [`TIMEOUT`], or the process exits.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.api.status_of("/readyz").await {
                if status == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "herald at {} was not ready within {TIMEOUT:?}; log {}:\n{}",
                self.url,
                self.log_path.display(),
                tail(&self.log_path, 30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    ///
    /// # Panics
    ///
    /// When it is still running after `timeout` (it is then killed).
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM, timeout).await
    }

    /// Sends SIGINT and waits up to `timeout` for the process to exit.
    ///
    /// # Panics
    ///
    /// When it is still running after `timeout` (it is then killed).
    pub async fn interrupt(&mut self, timeout: Duration) -> ExitStatus {
        self.signal_and_wait(Signal::SIGINT, timeout).await
    }

    /// Sends SIGTERM without waiting, for tests that watch the drain.
    pub fn start_terminating(&self) {
        send_signal(&self.child, Signal::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit on its own.
    ///
    /// # Panics
    ///
    /// When it is still running after `timeout` (it is then killed).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_exit(&mut self.child, timeout).await {
            Some(status) => status,
            None => {
                kill_and_reap(&mut self.child);
                panic!(
                    "herald (pid {}) did not exit within {timeout:?}; log {}:\n{}",
                    self.child.id(),
                    self.log_path.display(),
                    tail(&self.log_path, 30)
                );
            }
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    async fn signal_and_wait(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        send_signal(&self.child, signal);
        self.wait_exit(timeout).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
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
