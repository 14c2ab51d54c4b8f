//! A running `herald serve`, stopped with the test that started it.
//!
//! Stopping is by signal to the node's own PID only: SIGTERM or SIGINT to
//! watch the drain, SIGKILL to simulate a crash and on drop.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::Duration,
};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::{
    child::{kill_and_reap, send_signal, wait_exit},
    logs::tail,
    Api, NodeBuilder, Reply, SseStream, Subscribe, TIMEOUT,
};

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
    /// Wraps a spawned process that listens on `addr`.
    pub(crate) fn new(child: Child, addr: SocketAddr, log_path: PathBuf, dir: TempDir) -> Self {
        let url = format!("http://{addr}");
        Self {
            child,
            addr,
            api: Api::new(&url),
            url,
            log_path,
            _dir: dir,
        }
    }

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

    /// An HTTP client holding one idle keep-alive connection to this node
    /// (it has served `GET /healthz`), so that the client's next request
    /// reuses a connection instead of opening one. Pass it to
    /// [`Subscribe::send_on`] to test streams on reused connections.
    ///
    /// # Panics
    ///
    /// When the node does not answer `200`.
    pub async fn client_with_idle_connection(&self) -> reqwest::Client {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("a plain HTTP client builds");
        let response = client
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /healthz on {}: {e}", self.url));
        assert_eq!(response.status(), 200, "GET /healthz on {}", self.url);
        // Reading the body to its end returns the connection to the pool.
        response.bytes().await.expect("reading /healthz");
        client
    }

    /// Clients for the two ways a stream request reaches herald, each with
    /// its label: one that opens a new connection per request (herald's own
    /// lean stream path) and one whose next request reuses an idle
    /// keep-alive connection (actix). Tests of stream behaviour run on both.
    pub async fn clients_of_both_kinds(&self) -> [(&'static str, reqwest::Client); 2] {
        [
            (
                "a new connection",
                Api::without_keep_alive(&self.url).client().clone(),
            ),
            (
                "a reused connection",
                self.client_with_idle_connection().await,
            ),
        ]
    }

    /// Sends `GET /v1/events?{query}` with `headers` on both connection
    /// kinds ([`Node::clients_of_both_kinds`]) and returns each answer
    /// (a stream's head only, see [`Reply::read`]).
    pub async fn subscribe_on_both_kinds(
        &self,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Vec<(&'static str, Reply)> {
        let url = format!("{}/v1/events?{query}", self.url);
        let mut replies = Vec::new();
        for (label, client) in self.clients_of_both_kinds().await {
            let reply = Reply::send(&client, reqwest::Method::GET, &url, headers, None).await;
            replies.push((label, reply));
        }
        replies
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

    /// Freezes the process (SIGSTOP): its sockets stay open and nothing
    /// answers until [`Node::resume`].
    pub fn pause(&self) {
        send_signal(&self.child, Signal::SIGSTOP);
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn resume(&self) {
        send_signal(&self.child, Signal::SIGCONT);
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
