//! A real headless Chromium and the chromedriver that drives it, for tests
//! of the demo page, plus where their screenshots go.
//!
//! The kit starts Chromium itself (with `--remote-debugging-port=0`) and
//! attaches chromedriver to it (`goog:chromeOptions.debuggerAddress`),
//! instead of letting chromedriver launch it: that way the kit holds
//! Chromium's PID and can stop it, and the processes it started, even when
//! a test panics before closing its WebDriver session. The WebDriver client
//! itself is the test's choice; the kit only hands out the URL and the
//! capabilities.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};
use tempfile::TempDir;

use crate::{
    free_port,
    logs::{create_log_file, tail},
    process_tree::stop_tree,
    target_dir, TIMEOUT,
};

/// Chromium's flags. `--headless=new --no-sandbox` run it as root with no
/// display; `--disable-dev-shm-usage` keeps it off a small `/dev/shm`. The
/// rest stop every connection of its own (updates, sync, field trials,
/// QUIC probes): the test machine's network refuses them, and Chromium can
/// stall on them.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
];

/// Attempts at a free port for chromedriver, when another process takes
/// the one picked before chromedriver binds it.
const PORT_ATTEMPTS: usize = 5;

/// How long Chromium gets to stop its own processes on SIGTERM before the
/// whole tree is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A headless Chromium and a chromedriver attached to it. Dropping it
/// stops both, and the processes Chromium started, by PID.
#[derive(Debug)]
pub struct Browser {
    chromium: Child,
    chromedriver: Child,
    debugger_address: String,
    webdriver_url: String,
    chromium_log: PathBuf,
    chromedriver_log: PathBuf,
    // Chromium's profile (--user-data-dir), fresh for each browser; removed
    // on drop, after the processes.
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium on a fresh profile and chromedriver on a free port,
    /// and waits until both answer.
    ///
    /// # Panics
    ///
    /// When `chromium` or `chromedriver` is not installed (the message says
    /// how to install them), or either does not start; the message holds
    /// its log.
    pub async fn start() -> Browser {
        let chromium_bin = find_bin("chromium");
        let chromedriver_bin = find_bin("chromedriver");
        let profile = tempfile::tempdir().expect("creating a temporary directory");

        let (chromium_log, log) = create_log_file("chromium");
        let mut chromium = Command::new(&chromium_bin)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args([
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the chromium log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", chromium_bin.display()));
        let debugger_address = match devtools_address(&mut chromium, profile.path()).await {
            Some(address) => address,
            None => {
                stop_tree(&mut chromium, Signal::SIGKILL, Duration::ZERO);
                panic!(
                    "chromium opened no DevTools port within {TIMEOUT:?}; log {}:\n{}",
                    chromium_log.display(),
                    tail(&chromium_log, 30)
                );
            }
        };

        let (chromedriver_log, _) = create_log_file("chromedriver");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let log = fs::OpenOptions::new()
                .append(true)
                .open(&chromedriver_log)
                .expect("opening the chromedriver log");
            let mut chromedriver = Command::new(&chromedriver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("duplicating the chromedriver log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", chromedriver_bin.display()));
            let webdriver_url = format!("http://127.0.0.1:{port}");
            if driver_ready(&mut chromedriver, &webdriver_url).await {
                return Browser {
                    chromium,
                    chromedriver,
                    debugger_address,
                    webdriver_url,
                    chromium_log,
                    chromedriver_log,
                    _profile: profile,
                };
            }
            stop_tree(&mut chromedriver, Signal::SIGKILL, Duration::ZERO);
        }
        stop_tree(&mut chromium, Signal::SIGKILL, Duration::ZERO);
        panic!(
            "chromedriver did not start after {PORT_ATTEMPTS} attempts; log {}:\n{}",
            chromedriver_log.display(),
            tail(&chromedriver_log, 30)
        );
    }

    /// chromedriver's URL, for the WebDriver client to connect to.
    pub fn webdriver_url(&self) -> &str {
        &self.webdriver_url
    }

    /// The capabilities of a new WebDriver session on this Chromium:
    /// chromedriver attaches to it instead of launching its own.
    pub fn capabilities(&self) -> Map<String, Value> {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "debuggerAddress": self.debugger_address },
        });
        match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }

    /// Chromium's DevTools address, `127.0.0.1:<port>`.
    pub fn debugger_address(&self) -> &str {
        &self.debugger_address
    }

    /// Chromium's (main process) id.
    pub fn chromium_pid(&self) -> u32 {
        self.chromium.id()
    }

    /// chromedriver's process id.
    pub fn chromedriver_pid(&self) -> u32 {
        self.chromedriver.id()
    }

    /// The file holding Chromium's output (its console and network errors).
    pub fn chromium_log(&self) -> &Path {
        &self.chromium_log
    }

    /// The file holding chromedriver's output.
    pub fn chromedriver_log(&self) -> &Path {
        &self.chromedriver_log
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop_tree(&mut self.chromedriver, Signal::SIGTERM, STOP_GRACE);
        stop_tree(&mut self.chromium, Signal::SIGTERM, STOP_GRACE);
    }
}

/// `<target>/test-artifacts/`, created if needed: screenshots and other
/// files a test leaves for people to look at.
///
/// # Panics
///
/// When the directory cannot be created.
pub fn test_artifact_dir() -> PathBuf {
    let dir = target_dir().join("test-artifacts");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// `name` on `PATH`, else in `/usr/bin` (Debian's `chromium` and
/// `chromium-driver` packages put both there).
///
/// # Panics
///
/// When it is not installed, naming the packages.
fn find_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let debian = Path::new("/usr/bin").join(name);
            debian.is_file().then_some(debian)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; run scripts/test as root (it installs it) \
                 or apt-get install chromium chromium-driver"
            )
        })
}

/// Waits for Chromium to write `DevToolsActivePort` into its profile (the
/// port it picked, then the browser target's path) and returns
/// `127.0.0.1:<port>`; `None` if it exits first or takes longer than
/// [`TIMEOUT`].
async fn devtools_address(chromium: &mut Child, profile: &Path) -> Option<String> {
    let file = profile.join("DevToolsActivePort");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if chromium.try_wait().expect("polling chromium").is_some() {
            return None;
        }
        // Written whole once the port is open; a partial read has no
        // newline after the port yet.
        if let Ok(text) = fs::read_to_string(&file) {
            if let Some((port, _)) = text.split_once('\n') {
                if let Ok(port) = port.trim().parse::<u16>() {
                    return Some(format!("127.0.0.1:{port}"));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until chromedriver answers `GET /status` with `ready: true`; false
/// if it exits first (typically: the port was taken) or takes longer than
/// [`TIMEOUT`].
async fn driver_ready(chromedriver: &mut Child, url: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client builds");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if chromedriver
            .try_wait()
            .expect("polling chromedriver")
            .is_some()
        {
            return false;
        }
        if let Ok(response) = client.get(format!("{url}/status")).send().await {
            if let Ok(body) = response.json::<Value>().await {
                if body["value"]["ready"] == json!(true) {
                    // Still ours: another chromedriver cannot hold the port
                    // while this one runs.
                    return chromedriver
                        .try_wait()
                        .expect("polling chromedriver")
                        .is_none();
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "apt-get install chromium chromium-driver")]
    fn a_missing_browser_names_the_packages_to_install() {
        find_bin("herald-no-such-browser");
    }
}
