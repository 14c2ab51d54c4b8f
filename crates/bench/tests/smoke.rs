//! Smoke runs of every bench scenario against a real herald, at tiny N.
//!
//! They check that the load generator and herald agree on the wire: every
//! acknowledged publish reaches every subscriber exactly once. They assert
//! no timing: the bench reports numbers, it does not judge them.
//!
//! Nothing is built here: `herald` is found next to this test executable
//! (`<target>/debug/herald`, built by `cargo build --workspace --bins`, as
//! scripts/test does) unless `HERALD_BIN` names it; `herald-bench` is this
//! package's own binary.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

/// A herald process on a free port, stopped when dropped.
struct HeraldGuard {
    child: Child,
    addr: SocketAddr,
}

impl Drop for HeraldGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn herald_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe.parent().expect("it lives in a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir.join("herald")
}

/// Reads `addr=127.0.0.1:PORT` from the line that says herald is listening.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    let rest = rest.trim_start_matches('"');
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn start_herald() -> HeraldGuard {
    start_herald_with(&[])
}

fn start_herald_with(env: &[(&str, String)]) -> HeraldGuard {
    let bin = herald_bin();
    assert!(
        bin.is_file(),
        "the herald binary is missing at {}: run `cargo build --workspace --bins` \
         (scripts/test does) or set HERALD_BIN",
        bin.display()
    );
    let mut command = Command::new(&bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERALD__") || key == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
    let mut child = command
        .arg("serve")
        .env("HERALD__SERVER__BIND", "127.0.0.1:0")
        .env("HERALD__LOG__LEVEL", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    // Keeps draining herald's log so it never blocks on a full pipe; ends
    // when herald exits and the pipe closes.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = listening_addr(&line) {
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("herald logs its listening address");
    HeraldGuard { child, addr }
}

/// Runs one bench scenario and returns its JSON report.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("herald-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("herald-bench printed no JSON ({e}): {stdout}"))
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report}"))
}

fn assert_exactly_once(report: &Value) {
    assert_eq!(n(report, "connected"), 20, "{report}");
    assert_eq!(n(report, "connect_failures"), 0, "{report}");
    assert_eq!(n(report, "disconnects"), 0, "{report}");
    assert_eq!(n(report, "publish_failures"), 0, "{report}");
    assert!(n(report, "acked") > 0, "{report}");
    assert_eq!(n(report, "lost"), 0, "{report}");
    assert_eq!(n(report, "duplicates"), 0, "{report}");
    assert_eq!(n(report, "unparsed"), 0, "{report}");
    assert_eq!(
        n(report, "deliveries"),
        n(report, "expected_deliveries"),
        "{report}"
    );
}

fn run_args<'a>(scenario: &'a str, server: &'a str, rate: &'a str) -> Vec<&'a str> {
    vec![
        scenario,
        "--server",
        server,
        "--subs",
        "20",
        "--rate",
        rate,
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--quiet",
    ]
}

#[test]
fn fanout_at_a_fixed_rate_delivers_every_event_once() {
    let herald = start_herald();
    let server = herald.addr.to_string();
    let report = bench(&run_args("fanout", &server, "50"));
    assert_exactly_once(&report);
    assert_eq!(n(&report, "topics"), 1);
}

#[test]
fn fanout_flat_out_delivers_every_event_once() {
    let herald = start_herald();
    let server = herald.addr.to_string();
    assert_exactly_once(&bench(&run_args("fanout", &server, "max")));
}

#[test]
fn push_delivers_every_event_once() {
    let herald = start_herald();
    let server = herald.addr.to_string();
    for rate in ["200", "max"] {
        let report = bench(&run_args("push", &server, rate));
        assert_exactly_once(&report);
        assert_eq!(n(&report, "topics"), 20);
    }
}

#[test]
fn idle_holds_every_stream() {
    let herald = start_herald();
    let pid = herald.child.id().to_string();
    let server = herald.addr.to_string();
    let report = bench(&[
        "idle",
        "--server",
        &server,
        "--subs",
        "20",
        "--hold",
        "0.5",
        "--server-pid",
        &pid,
        "--quiet",
    ]);
    assert_eq!(n(&report, "connected"), 20, "{report}");
    assert_eq!(n(&report, "disconnects"), 0, "{report}");
    assert!(report["rss_per_conn_bytes"].is_number(), "{report}");
}

/// A `redis-server` on a free port with no persistence, stopped when
/// dropped.
struct RedisGuard {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped (redis-server needs a working dir).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_redis() -> RedisGuard {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = probe.local_addr().expect("bound").port();
    drop(probe);
    let dir =
        std::env::temp_dir().join(format!("herald-bench-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "redis-server is not installed; run scripts/test as root (it installs it) \
             or apt-get install redis-server"
        );
    };
    let guard = RedisGuard {
        child,
        port,
        _dir: TempDir(dir),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return guard;
        }
        #[allow(clippy::disallowed_methods)] // a sync test polling for the port
        thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not start on port {port}");
}

#[test]
fn two_redis_nodes_deliver_every_event_once() {
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let a = start_herald_with(&[("HERALD__REDIS__URL", url.clone())]);
    let b = start_herald_with(&[("HERALD__REDIS__URL", url)]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let redis_pid = redis.child.id().to_string();
    for (scenario, rate) in [("fanout", "50"), ("push", "max")] {
        let mut args = run_args(scenario, &a_addr, rate);
        args.extend(["--server", &b_addr, "--aux-pid", &redis_pid]);
        let report = bench(&args);
        assert_exactly_once(&report);
        assert_eq!(n(&report, "nodes"), 2);
        // Redis's CPU is kept per process as well as summed.
        assert_eq!(
            n(&report["aux_per_pid"][0], "pid"),
            u64::from(redis.child.id())
        );
        assert_eq!(report["aux_per_pid"].as_array().map(Vec::len), Some(1));
    }
}

#[test]
fn ceiling_publishes_through_the_broker_and_reads_redis() {
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let pid = redis.child.id().to_string();
    let report = bench(&[
        "ceiling",
        "--redis-url",
        &url,
        "--concurrency",
        "8",
        "--topics",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--aux-pid",
        &pid,
        "--label",
        "ceiling-redis",
        "--quiet",
    ]);
    assert_eq!(report["scenario"], "ceiling", "{report}");
    assert!(n(&report, "publishes") > 0, "{report}");
    assert_eq!(n(&report, "failures"), 0, "{report}");
    assert_eq!(
        n(&report["redis_per_pid"][0], "pid"),
        u64::from(redis.child.id())
    );
    assert!(n(&report["call_us"], "count") > 0, "{report}");
    // INFO commandstats was read: the publish script ran by digest.
    assert!(n(&report["evalsha"], "calls") > 0, "{report}");
    assert_eq!(
        report["commandstats"][0]["pid"],
        report["redis_per_pid"][0]["pid"]
    );
}

#[test]
fn listening_line_is_understood() {
    let line =
        "2026-11-24T08:15:53Z  INFO herald::server: listening addr=127.0.0.1:18931 workers=2";
    assert_eq!(
        listening_addr(line),
        Some("127.0.0.1:18931".parse().unwrap())
    );
    assert_eq!(listening_addr("starting 2 workers"), None);
}
