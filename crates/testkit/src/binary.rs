//! Finding the `herald` binary the tests run.
//!
//! Tests never build it themselves: `cargo test` does not build other
//! packages' binaries, and building from inside a test would race with the
//! other tests. The README test command (`scripts/test`) builds it first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The `herald` binary: `$HERALD_BIN` when set, else `herald` in the cargo
/// profile directory of the running executable (test executables live in
/// `<target>/debug/deps/`, so this is `<target>/debug/herald`).
///
/// # Panics
///
/// When the binary does not exist, with the command that builds it.
pub fn herald_bin() -> PathBuf {
    let path = match std::env::var_os("HERALD_BIN") {
        Some(path) => PathBuf::from(path),
        None => profile_dir().join("herald"),
    };
    assert!(
        path.is_file(),
        "the herald binary is missing at {}: run `cargo build -p herald` \
         (or the README test command, scripts/test) first, or set HERALD_BIN",
        path.display()
    );
    path
}

/// A `Command` for the `herald` binary with no `HERALD__*` or `RUST_LOG`
/// inherited from the caller's environment, so a developer's shell cannot
/// change what a test sees.
pub fn herald_command() -> Command {
    let mut command = Command::new(herald_bin());
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("HERALD__") || key_text == "RUST_LOG" || key_text == "HERALD_URL" {
            command.env_remove(&key);
        }
    }
    command
}

/// The cargo target directory (`<target>`), derived from the running
/// executable.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(profile_dir)
}

/// `<target>/<profile>`: the directory of the running executable, or its
/// parent when that is `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}
