//! Debian's nginx in front of local nodes, running the load balancer
//! config the compose deployment ships.
//!
//! The main file is `deploy/nginx/nginx.conf` itself, copied unchanged by
//! `deploy/nginx/render-local`, which writes only the include files that
//! differ locally (listen port, fixed upstream addresses, paths inside a
//! temporary directory). So a cluster test checks the shipped SSE settings
//! (no buffering, fail-over, timeouts), not a test copy of them.
//!
//! nginx cannot bind port 0 and report back, so a free port is picked and
//! the start is retried on another one when the bind fails.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::{
    free_port,
    logs::{create_log_file, tail, test_log_dir},
    process_tree::stop_tree,
    Api, SseStream, Subscribe, TIMEOUT,
};

/// Attempts at a free port, when another process takes the one picked
/// before nginx binds it.
const PORT_ATTEMPTS: usize = 5;

/// How long nginx gets to stop its workers on SIGTERM (its fast shutdown,
/// which closes open streams at once) before the whole tree is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running nginx master (and its workers). Dropping it stops them, by
/// PID, and copies its error and access logs to `target/test-logs/`.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    url: String,
    api: Api,
    log_path: PathBuf,
    // The rendered config, pid file, logs and temp directories; removed on
    // drop, after the processes.
    dir: TempDir,
}

impl Nginx {
    /// Renders the deploy config for `upstreams` (the nodes' addresses, in
    /// the order nginx's round-robin visits them), starts nginx on a free
    /// port of 127.0.0.1 and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When nginx is not installed (the message says how to install it),
    /// the config does not render, or nginx does not start; the message
    /// holds its error log.
    pub async fn start(upstreams: &[SocketAddr]) -> Nginx {
        assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
        let binary = nginx_bin();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let (log_path, _) = create_log_file("nginx");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            render(dir.path(), port, upstreams);
            let mut child = spawn(&binary, dir.path(), &log_path);
            if wait_listening(&mut child, dir.path(), port).await {
                let url = format!("http://127.0.0.1:{port}");
                return Nginx {
                    child,
                    port,
                    api: Api::new(&url),
                    url,
                    log_path,
                    dir,
                };
            }
            stop_tree(&mut child, Signal::SIGKILL, Duration::ZERO);
            if !error_log_text(dir.path()).contains("Address already in use") {
                break;
            }
        }
        panic!(
            "nginx did not start; error log:\n{}\nstderr ({}):\n{}",
            tail(&dir.path().join("error.log"), 30),
            log_path.display(),
            tail(&log_path, 30)
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The master process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for herald's API through nginx.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// A subscribe request through nginx.
    pub fn subscribe_request(&self) -> Subscribe {
        Subscribe::new(&self.url)
    }

    /// Opens a stream on `topics` through nginx.
    ///
    /// # Panics
    ///
    /// As [`Subscribe::send`].
    pub async fn subscribe(&self, topics: &[&str]) -> SseStream {
        self.subscribe_request().topics(topics).send().await
    }

    /// The access log so far: one line per finished request, with the
    /// gateway that served it (`upstream=`).
    pub fn access_log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's error log so far (connection failures to gateways are
    /// logged there).
    pub fn error_log_text(&self) -> String {
        error_log_text(self.dir.path())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_tree(&mut self.child, Signal::SIGTERM, STOP_GRACE);
        // Kept beside the nodes' logs for debugging after the fact.
        let stem = self.log_path.with_extension("");
        for name in ["error.log", "access.log"] {
            let kept = test_log_dir().join(format!(
                "{}.{name}",
                stem.file_name().unwrap_or_default().to_string_lossy()
            ));
            let _ = fs::copy(self.dir.path().join(name), kept);
        }
    }
}

/// The nginx binary: `nginx` on `PATH`, else Debian's `/usr/sbin/nginx`
/// (`/usr/sbin` is not on every user's `PATH`).
///
/// # Panics
///
/// When neither exists, naming the package to install.
fn nginx_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    let found = on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        debian.is_file().then_some(debian)
    });
    found.unwrap_or_else(|| {
        panic!(
            "nginx is not installed; run scripts/test as root (it installs it) \
             or apt-get install nginx"
        )
    })
}

/// `deploy/nginx/render-local`, found from this crate's source directory.
fn render_local() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/render-local")
}

/// Writes the config for `port` and `upstreams` into `dir`.
fn render(dir: &Path, port: u16, upstreams: &[SocketAddr]) {
    let script = render_local();
    let output = Command::new(&script)
        .arg(dir)
        .arg(port.to_string())
        .args(upstreams.iter().map(SocketAddr::to_string))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}): {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts nginx in the foreground on the config in `dir`, as render-local
/// documents it.
fn spawn(binary: &Path, dir: &Path, log_path: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .expect("opening the nginx log");
    Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the nginx log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()))
}

/// Waits until this nginx has written its pid file (which it does after
/// binding its listening socket) and accepts a TCP connection on `port`;
/// false if it exits first (typically: the port was taken) or takes longer
/// than [`TIMEOUT`].
async fn wait_listening(child: &mut Child, dir: &Path, port: u16) -> bool {
    let pid_file = dir.join("nginx.pid");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if child.try_wait().expect("polling nginx").is_some() {
            return false;
        }
        // The pid file must name this process, not a previous attempt's.
        let written =
            fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == child.id().to_string());
        if written
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn error_log_text(dir: &Path) -> String {
    fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}
