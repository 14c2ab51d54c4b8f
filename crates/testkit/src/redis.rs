//! A throwaway `redis-server` for tests: its own free port (never 6379),
//! its own temporary directory, stopped when dropped. Without persistence
//! by default ([`RedisServer::start`]); with an fsynced append-only file,
//! so restarts keep every acknowledged write, from
//! [`RedisServer::start_durable`]. Either can be frozen with SIGSTOP.
//!
//! Redis is driven over raw RESP ([`crate::Resp`]) so the kit does not
//! depend on the Redis client herald itself uses: a bug there cannot hide a
//! bug in the test.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::{
    child::{kill_and_reap, send_signal, wait_exit},
    free_port,
    logs::{create_log_file, tail},
    resp::{self, Resp},
    TIMEOUT,
};

/// Attempts at finding a free port when another process takes the one
/// picked between [`free_port`] and Redis binding it.
const PORT_ATTEMPTS: usize = 5;

/// A running (or stopped, between [`RedisServer::stop`] and
/// [`RedisServer::restart`]) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    durable: bool,
    paused: bool,
    log_path: PathBuf,
    // Redis's working directory; removed on drop, after the process.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed, or does not start; the message
    /// says how to install it or where its log is.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts `redis-server` with an append-only file fsynced on every
    /// write, so that [`RedisServer::restart`] keeps every acknowledged
    /// write.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub async fn start_durable() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let (log_path, _) = create_log_file(if durable { "redis-durable" } else { "redis" });
        let mut server = Self {
            port: 0,
            child: None,
            durable,
            paused: false,
            log_path,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!(
            "redis-server did not start after {PORT_ATTEMPTS} attempts; log {}:\n{}",
            server.log_path.display(),
            tail(&server.log_path, 20)
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, for `HERALD__REDIS__URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The file holding Redis's output.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Stops Redis (SIGTERM) and waits for it to exit. Nothing listens on
    /// the port afterwards until [`RedisServer::restart`].
    ///
    /// # Panics
    ///
    /// When it has not exited within [`TIMEOUT`] (it is then killed).
    pub async fn stop(&mut self) {
        self.resume();
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(&child, Signal::SIGTERM);
        if wait_exit(&mut child, TIMEOUT).await.is_none() {
            kill_and_reap(&mut child);
            panic!("redis-server ignored SIGTERM for {TIMEOUT:?}");
        }
    }

    /// Kills Redis at once (SIGKILL, which ends a frozen process too), as a
    /// crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }

    /// Freezes Redis (SIGSTOP): its connections stay open and nothing
    /// answers until [`RedisServer::resume`].
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            send_signal(child, Signal::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a frozen Redis run again (SIGCONT); it then serves what was sent
    /// to it meanwhile.
    pub fn resume(&mut self) {
        if let (Some(child), true) = (&self.child, self.paused) {
            send_signal(child, Signal::SIGCONT);
        }
        self.paused = false;
    }

    /// Starts Redis again on the same port (stopping it first if it runs):
    /// empty, or with its data when durable.
    ///
    /// # Panics
    ///
    /// When it does not start (for example, another process took the port).
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(
            self.launch().await,
            "redis-server did not restart on port {}; log {}:\n{}",
            self.port,
            self.log_path.display(),
            tail(&self.log_path, 20)
        );
    }

    /// Sends one command and returns the reply.
    ///
    /// # Panics
    ///
    /// When Redis cannot be reached or does not answer within [`TIMEOUT`].
    pub async fn command(&self, args: &[&str]) -> Resp {
        resp::command(self.addr(), args, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {}: {e}", self.port))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Spawns Redis on `self.port`; true once it answers (after loading its
    /// data, when durable), false if it exited (typically: the port was
    /// taken).
    async fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("opening the redis log");
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--daemonize", "no"])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the redis log"))
            .stderr(log)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; run scripts/test as root (it installs it) \
                 or apt-get install redis-server"
            ),
            Err(e) => panic!("spawning redis-server: {e}"),
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            // INFO rather than PING: the answer must come from this process,
            // not from another test's Redis that got the port first, and
            // only once it has loaded its data (`loading:0`).
            let info = resp::command(self.addr(), &["INFO"], Duration::from_secs(1)).await;
            if let Ok(Resp::Bulk(Some(text))) = info {
                let text = String::from_utf8_lossy(&text);
                let own = format!("process_id:{}\r\n", child.id());
                if text.contains(&own) && text.contains("loading:0\r\n") {
                    self.child = Some(child);
                    return true;
                }
            }
            if child.try_wait().expect("polling redis-server").is_some() {
                return false;
            }
            if tokio::time::Instant::now() >= deadline {
                kill_and_reap(&mut child);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
