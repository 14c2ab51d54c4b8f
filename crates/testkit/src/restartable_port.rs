//! A port for a server that a test stops and starts again on the same
//! address, such as a node restarted under a browser that must reconnect
//! to it.
//!
//! [`crate::free_port`] hands out ports from the kernel's ephemeral range,
//! which any other process's `bind(…:0)` or outgoing connection may take
//! while the server is down, and the restart would then fail. Ports below
//! that range are only taken by explicit binds, so one picked there stays
//! free between the stop and the start.

use std::{
    collections::{hash_map::RandomState, BTreeSet},
    hash::{BuildHasher, Hasher},
    net::TcpListener,
    sync::Mutex,
};

/// The lowest port handed out: above the well-known and most registered
/// service ports a developer's machine may run.
const LOWEST: u16 = 10_000;

/// Where the kernel's ephemeral range starts when it cannot be read.
const EPHEMERAL_START: u16 = 32_768;

/// Ports already handed out in this process, so two tests never share one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free port on 127.0.0.1 below the ephemeral range, not handed out
/// before in this test process.
///
/// # Panics
///
/// When none is found in 1000 random tries.
pub fn restartable_port() -> u16 {
    let end = ephemeral_start().max(LOWEST + 1);
    let span = u64::from(end - LOWEST);
    for _ in 0..1000 {
        let offset = u16::try_from(random() % span).expect("below a u16 span");
        let port = LOWEST + offset;
        let mut handed_out = HANDED_OUT.lock().expect("never poisoned: no panics inside");
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{end} after 1000 tries");
}

/// The first port of `net.ipv4.ip_local_port_range`.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}

/// A random number from the standard library's per-process hash keys,
/// mixed with the time (no RNG dependency for one number per test).
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_distinct() {
        let a = restartable_port();
        let b = restartable_port();
        assert_ne!(a, b);
        for port in [a, b] {
            assert!((LOWEST..ephemeral_start()).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
