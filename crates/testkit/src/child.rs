//! Signalling, waiting for and reaping child processes, by their own PID
//! only.

use std::{
    process::{Child, ExitStatus},
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tokio::time::{sleep, Instant};

/// Sends `signal` to `child` (and to no other process).
pub(crate) fn send_signal(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).expect("PIDs fit in i32");
    // ESRCH means it already exited, which is what the caller wants anyway.
    let _ = kill(Pid::from_raw(pid), signal);
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Kills `child` with SIGKILL and reaps it, so no zombie is left behind.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}
