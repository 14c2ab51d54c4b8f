//! A throwaway `redis-server` for tests: its own free port (never 6379),
//! its own temporary directory, stopped when dropped. Without persistence
//! by default ([`RedisServer::start`]); with an fsynced append-only file,
//! so restarts keep every acknowledged write, from
//! [`RedisServer::start_durable`]. Either can be frozen with SIGSTOP.
//!
//! Redis is driven over raw RESP ([`crate::Resp`]) so the kit does not
//! depend on the Redis client herald itself uses: a bug there cannot hide a
//! bug in the test.
//!
//! Also owns what every `redis-server` the kit runs has in common: the
//! launch that waits for *this* process to answer ([`launch`]) and, for
//! the members of a topology ([`crate::RedisCluster`],
//! [`crate::RedisSentinel`]), [`RedisProcess`]: one process with its port,
//! directory and log, kept across kill, pause and restart.

use std::{
    ffi::OsString,
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
        self.relaunch().await;
    }

    /// Stops Redis, throws its data away, and starts it again empty on the
    /// same port: what a restart without persistence does, also to a
    /// durable server.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::restart`], or when its files cannot be removed.
    pub async fn restart_empty(&mut self) {
        self.stop().await;
        for entry in std::fs::read_dir(self.dir.path()).expect("reading the redis directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        }
        self.relaunch().await;
    }

    async fn relaunch(&mut self) {
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
        let mut args: Vec<OsString> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .chain(if self.durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no", "--appendfsync", "everysec"]
        })
        .map(OsString::from)
        .collect();
        args.push("--dir".into());
        args.push(self.dir.path().into());
        let spec = Launch {
            port: self.port,
            dir: self.dir.path(),
            log_path: &self.log_path,
            args: &args,
            password: None,
            sentinel: false,
        };
        self.child = launch(&spec).await;
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start one `redis-server` process.
pub(crate) struct Launch<'a> {
    /// The port it will listen on (also given in `args` or its config
    /// file): where the launch looks for it.
    pub(crate) port: u16,
    /// Its working directory.
    pub(crate) dir: &'a Path,
    /// Where its output is appended.
    pub(crate) log_path: &'a Path,
    /// Everything after `redis-server`: a config file first if any, then
    /// `--option value` pairs, which override the file.
    pub(crate) args: &'a [OsString],
    /// Its `requirepass`, sent with `AUTH` while waiting for it.
    pub(crate) password: Option<&'a str>,
    /// A sentinel, whose `INFO` has no `loading` field to wait for.
    pub(crate) sentinel: bool,
}

/// Spawns `redis-server` as `spec` says; `Some` once it answers (after
/// loading its data), `None` if it exited (typically: the port, or a
/// cluster node's bus port, was taken) or did not answer within
/// [`TIMEOUT`].
///
/// # Panics
///
/// When `redis-server` is not installed or cannot be spawned.
pub(crate) async fn launch(spec: &Launch<'_>) -> Option<Child> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(spec.log_path)
        .expect("opening the redis log");
    let spawned = std::process::Command::new("redis-server")
        .args(spec.args)
        .current_dir(spec.dir)
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
    let addr = SocketAddr::from(([127, 0, 0, 1], spec.port));
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        // INFO rather than PING: the answer must come from this process,
        // not from another test's Redis that got the port first, and
        // only once it has loaded its data (`loading:0`).
        let info = resp::pipeline(addr, spec.password, &[&["INFO"]], Duration::from_secs(1)).await;
        if let Ok([Resp::Bulk(Some(text))]) = info.as_deref() {
            let text = String::from_utf8_lossy(text);
            let own = format!("process_id:{}\r\n", child.id());
            if text.contains(&own) && (spec.sentinel || text.contains("loading:0\r\n")) {
                return Some(child);
            }
        }
        if child.try_wait().expect("polling redis-server").is_some() {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            kill_and_reap(&mut child);
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `redis-server` of a topology (a cluster node, a Sentinel data node
/// or a sentinel): its port, directory and log outlive the process, so it
/// can be killed, paused and restarted in place. Killed when dropped.
#[derive(Debug)]
pub(crate) struct RedisProcess {
    port: u16,
    child: Option<Child>,
    paused: bool,
    log_path: PathBuf,
    /// What it was started with, for restarts on the same port.
    args: Vec<OsString>,
    password: Option<String>,
    sentinel: bool,
    // Its working directory (nodes.conf, sentinel.conf); removed on drop,
    // after the process.
    dir: TempDir,
}

impl RedisProcess {
    /// Starts a process on a port from `pick_port`, with the arguments
    /// `args` gives for that port and directory (it may write a config
    /// file there first), trying new ports when one turns out taken.
    ///
    /// # Panics
    ///
    /// When it does not start after [`PORT_ATTEMPTS`] ports; the message
    /// has the end of its log.
    pub(crate) async fn start(
        label: &str,
        password: Option<String>,
        sentinel: bool,
        mut pick_port: impl FnMut() -> u16,
        mut args: impl FnMut(u16, &Path) -> Vec<OsString>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let (log_path, _) = create_log_file(label);
        let mut process = Self {
            port: 0,
            child: None,
            paused: false,
            log_path,
            args: Vec::new(),
            password,
            sentinel,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            process.port = pick_port();
            process.args = args(process.port, process.dir.path());
            if process.launch(&[]).await {
                return process;
            }
        }
        panic!(
            "{label} did not start after {PORT_ATTEMPTS} attempts; log {}:\n{}",
            process.log_path.display(),
            tail(&process.log_path, 20)
        );
    }

    /// Starts it again on its port, in its directory, with its arguments
    /// and then `extra` ones (which override them); kills it first if it
    /// runs.
    ///
    /// # Panics
    ///
    /// When it does not start (for example, another process took the
    /// port meanwhile).
    pub(crate) async fn restart(&mut self, extra: &[&str]) {
        self.kill();
        assert!(
            self.launch(extra).await,
            "redis-server did not restart on port {}; log {}:\n{}",
            self.port,
            self.log_path.display(),
            tail(&self.log_path, 20)
        );
    }

    async fn launch(&mut self, extra: &[&str]) -> bool {
        let mut args = self.args.clone();
        args.extend(extra.iter().map(OsString::from));
        let spec = Launch {
            port: self.port,
            dir: self.dir.path(),
            log_path: &self.log_path,
            args: &args,
            password: self.password.as_deref(),
            sentinel: self.sentinel,
        };
        self.child = launch(&spec).await;
        self.child.is_some()
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The file holding its output.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its `requirepass`, if any.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Started and neither killed nor paused: it should answer.
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// Kills it at once (SIGKILL, which ends a frozen process too), as a
    /// crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }

    /// Freezes it (SIGSTOP): its connections stay open, nothing answers.
    pub(crate) fn pause(&mut self) {
        if let Some(child) = &self.child {
            send_signal(child, Signal::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a frozen process run again (SIGCONT).
    pub(crate) fn resume(&mut self) {
        if let (Some(child), true) = (&self.child, self.paused) {
            send_signal(child, Signal::SIGCONT);
        }
        self.paused = false;
    }

    /// Sends `commands` on one connection (after `AUTH` when it has a
    /// password) and returns their replies; `Err` when it cannot be
    /// reached or does not answer within `timeout`.
    pub(crate) async fn pipeline<A: AsRef<[u8]>>(
        &self,
        commands: &[&[A]],
        timeout: Duration,
    ) -> std::io::Result<Vec<Resp>> {
        resp::pipeline(self.addr(), self.password(), commands, timeout).await
    }

    /// Sends one command (after `AUTH` when it has a password).
    ///
    /// # Panics
    ///
    /// When it cannot be reached or does not answer within [`TIMEOUT`].
    pub(crate) async fn command(&self, args: &[&str]) -> Resp {
        self.try_command(args, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {}: {e}", self.port))
    }

    /// Sends one command (after `AUTH` when it has a password); `Err`
    /// when it cannot be reached or does not answer within `timeout`.
    pub(crate) async fn try_command(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> std::io::Result<Resp> {
        let mut replies = self.pipeline(&[args], timeout).await?;
        Ok(replies.remove(0))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
