//! Stopping a program together with the processes it started itself (nginx
//! workers; Chromium's zygotes, renderers and network service), each by its
//! own PID.
//!
//! Those helpers are not our children, so killing the program alone can
//! leave them running: nginx workers keep the listening socket open after a
//! SIGKILLed master. The tree is read from `/proc` while the program is still
//! alive (after it dies its helpers are re-parented and no longer findable
//! through it), and only those PIDs are signalled, never a process name;
//! each with its start time, so a PID reused since is left alone.

use std::{
    fs,
    process::Child,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// How often a stopping process is checked again.
const POLL: Duration = Duration::from_millis(10);

/// Sends `signal` to `child` and waits up to `grace` for it to exit on its
/// own; then, or if it does not, SIGKILLs whatever is left of its process
/// tree and reaps it. Blocking on purpose: it runs in `Drop`.
#[allow(clippy::disallowed_methods)] // polls a child's exit from sync Drop code
pub(crate) fn stop_tree(child: &mut Child, signal: Signal, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let helpers = descendants(child.id());
    let _ = kill(pid(child.id()), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(POLL);
    }
    kill_tree(child, &helpers);
}

/// SIGKILLs `child` and `helpers` (its descendants, read before it died)
/// and reaps `child`.
fn kill_tree(child: &mut Child, helpers: &[Helper]) {
    let _ = child.kill();
    let _ = child.wait();
    for helper in helpers {
        let same = stat_of(helper.pid).is_some_and(|s| s.start == helper.start && s.state != 'Z');
        if same {
            // ESRCH: it exited just now, as it should once its parent is gone.
            let _ = kill(pid(helper.pid), Signal::SIGKILL);
        }
    }
}

/// A descendant process: its PID and its start time (in clock ticks after
/// boot), which tells it apart from a later process given the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Helper {
    pid: u32,
    start: u64,
}

/// Every live descendant of `root` (children, grandchildren, …), from
/// `/proc/<pid>/stat`.
pub(crate) fn descendants(root: u32) -> Vec<Helper> {
    let all: Vec<(Helper, u32)> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let stat = stat_of(p)?;
                    Some((
                        Helper {
                            pid: p,
                            start: stat.start,
                        },
                        stat.parent,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found: Vec<Helper> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (helper, _) in all.iter().filter(|(_, ppid)| *ppid == parent) {
            found.push(*helper);
            parents.push(helper.pid);
        }
    }
    found
}

/// The fields of `/proc/<pid>/stat` this file uses.
struct Stat {
    state: char,
    parent: u32,
    start: u64,
}

/// Reads `/proc/<pid>/stat`. The command name before the fields is in
/// parentheses and may itself hold spaces or `)`, so fields are counted
/// from the last `)`: state is field 3, the parent 4, the start time 22.
fn stat_of(process: u32) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn pid(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("PIDs fit in i32"))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests poll process state synchronously
mod tests {
    use super::*;

    #[test]
    fn finds_grandchildren_and_stops_them() {
        // sh starts a sleep in the background and waits: the sleep is a
        // grandchild of this test only through sh.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("spawning sh");
        let deadline = Instant::now() + Duration::from_secs(5);
        let helpers = loop {
            let helpers = descendants(sh.id());
            if !helpers.is_empty() || Instant::now() > deadline {
                break helpers;
            }
            std::thread::sleep(POLL);
        };
        assert_eq!(helpers.len(), 1, "the background sleep under sh");
        let sleep = helpers[0];
        assert_eq!(stat_of(sleep.pid).map(|s| s.parent), Some(sh.id()));
        stop_tree(&mut sh, Signal::SIGKILL, Duration::ZERO);
        // The killed sleep is re-parented and reaped: its stat vanishes, or
        // shows a zombie (state Z) until its new parent reaps it.
        let gone = Instant::now() + Duration::from_secs(5);
        while Instant::now() < gone {
            match stat_of(sleep.pid) {
                Some(stat) if stat.start == sleep.start && stat.state != 'Z' => {}
                _ => return,
            }
            std::thread::sleep(POLL);
        }
        panic!("the grandchild {} survived", sleep.pid);
    }
}
