//! Per-process log files under `target/test-logs/`, so a failing test can
//! be debugged after the fact: every panic message names the file.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
};

/// Numbers the logs of one test process, so two nodes of one test never
/// share a file.
static NEXT_LOG: AtomicUsize = AtomicUsize::new(0);

/// `<target>/test-logs/`, created if needed.
///
/// # Panics
///
/// When the directory cannot be created.
pub fn test_log_dir() -> PathBuf {
    let dir = crate::target_dir().join("test-logs");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Creates a fresh log file named after the running test (libtest names
/// each test's thread after the test) and `label`.
pub(crate) fn create_log_file(label: &str) -> (PathBuf, File) {
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("unnamed")
        .replace("::", ".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
    let path = test_log_dir().join(format!("{test}.{label}.{}-{n}.log", std::process::id()));
    let file =
        File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    (path, file)
}

/// Copies `source` line by line into `file` on a thread of its own, calling
/// `on_line` with each line first. The thread ends when `source` does (the
/// process exited and closed its end of the pipe).
pub(crate) fn pump_lines(
    source: impl Read + Send + 'static,
    mut file: File,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = String::new();
        // A read error means the pipe is gone: same as the end of output.
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            on_line(line.trim_end());
            // Written and flushed line by line so the file is complete up
            // to the moment a test panics.
            let _ = file.write_all(line.as_bytes());
            let _ = file.flush();
            line.clear();
        }
    })
}

/// The last `lines` lines of the log at `path`, for panic messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
