//! One Redis primary: its address, the node's command connections to it,
//! and whether it is healthy.
//!
//! Each thread has one multiplexed connection per primary (see
//! [`CONNECTIONS`]): the thread's concurrent requests are pipelined on it,
//! so nothing is checked out of a pool and a publish costs no round trip of
//! its own beyond Redis's answer. Connections are made lazily, retired all
//! together when one fails, and never retry a command by themselves (a
//! retried publish script could store an event twice).
//!
//! On connecting, herald reads the server's role and replication id. A
//! server that is not a primary is refused (a failover demoted it); the
//! replication id is what the publish script records in each topic it
//! writes, so that the first write under a different primary skips
//! sequence numbers (see `resume.rs`).

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, ConnectionInfo};

use crate::BrokerError;

/// How long connecting (TCP, TLS, auth, the role check) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Numbers primaries, to find each one's connection of this thread.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// What the node's live-event link to this primary reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// No link: the node has no live topics on this primary.
    None,
    /// Connected and subscribed.
    Up,
    /// Wanted but not connected.
    Down,
}

/// A primary the node sends commands to.
#[derive(Debug)]
pub(crate) struct Primary {
    /// `host:port`, as Redis names it in redirections.
    pub(crate) addr: String,
    info: ConnectionInfo,
    /// Names this primary in every thread's [`CONNECTIONS`].
    id: u64,
    /// Bumped to retire every thread's connection at once.
    generation: AtomicU64,
    /// The last generation whose first connection was counted as a
    /// reconnection.
    reconnected: AtomicU64,
    probe_ok: AtomicBool,
    /// The live link that reports here (by id), and its state.
    link: Mutex<(u64, LinkState)>,
    /// The replication id its last probe saw, to notice a replacement.
    last_replid: Mutex<Option<String>>,
    shared: Arc<Shared>,
}

/// What every primary of a topology shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Counts connections made to any primary of the topology.
    pub(crate) connects: AtomicU64,
    /// `herald_broker_reconnects_total`.
    pub(crate) reconnects: prometheus::IntCounter,
}

/// A working command connection and what was learnt when it was made.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) mux: MultiplexedConnection,
    /// The server's replication id when the connection was made.
    pub(crate) writer: Arc<str>,
    /// The primary's generation it was made in (see [`Primary::discard`]).
    generation: u64,
}

thread_local! {
    /// This thread's command connection to each primary, by primary id.
    ///
    /// A multiplexed connection is driven by a task of the runtime that
    /// made it, and every answer from Redis passes through that task. One
    /// connection shared by the whole node would make each publish hop
    /// from the HTTP worker to the connection's task and back, and would
    /// queue its answer behind whatever else that runtime does (stream
    /// writers, during a large fan-out: about 100 ms for 10,000
    /// subscribers). So each thread talks to Redis on its own connection,
    /// driven on its own runtime: an HTTP worker sends a publish and reads
    /// the answer itself, and concurrent requests of the thread still share
    /// one pipelined connection.
    static CONNECTIONS: RefCell<HashMap<u64, Conn>> = RefCell::new(HashMap::new());
}

/// What `INFO replication` says about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replication {
    pub(crate) is_primary: bool,
    pub(crate) replid: String,
    pub(crate) replid2: String,
}

impl Replication {
    pub(crate) fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map_or_else(String::new, |v| v.trim().to_owned())
        };
        Self {
            is_primary: field("role") == "master",
            replid: field("master_replid"),
            replid2: field("master_replid2"),
        }
    }
}

impl Primary {
    pub(crate) fn new(addr: String, info: ConnectionInfo, shared: Arc<Shared>) -> Self {
        Self {
            addr,
            info,
            id: SERIAL.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            probe_ok: AtomicBool::new(false),
            link: Mutex::new((0, LinkState::None)),
            last_replid: Mutex::new(None),
            shared,
        }
    }

    /// Where the live-event link connects to (same server, same
    /// credentials).
    pub(crate) fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// This thread's command connection, made now if there is none (or
    /// only a retired one).
    pub(crate) async fn conn(&self) -> Result<Conn, BrokerError> {
        let generation = self.generation.load(Ordering::Acquire);
        let current = CONNECTIONS.with(|connections| {
            connections
                .borrow()
                .get(&self.id)
                .filter(|conn| conn.generation == generation)
                .cloned()
        });
        if let Some(conn) = current {
            return Ok(conn);
        }
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(generation))
            .await
            .map_err(|_| self.unavailable("connecting timed out"))??;
        CONNECTIONS.with(|connections| connections.borrow_mut().insert(self.id, conn.clone()));
        self.shared.connects.fetch_add(1, Ordering::AcqRel);
        // The first connection after a retirement counts, once, however
        // many threads reconnect.
        if generation > 0 && self.reconnected.fetch_max(generation, Ordering::AcqRel) < generation {
            self.shared.reconnects.inc();
        }
        Ok(conn)
    }

    async fn connect(&self, generation: u64) -> Result<Conn, BrokerError> {
        let client = redis::Client::open(self.info.clone()).map_err(|e| self.unavailable(e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut mux = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.unavailable(e))?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut mux)
            .await
            .map_err(|e| self.unavailable(e))?;
        let replication = Replication::parse(&info);
        if !replication.is_primary {
            return Err(self.unavailable("the server is not a primary (any more)"));
        }
        Ok(Conn {
            mux,
            writer: Arc::from(replication.replid),
            generation,
        })
    }

    /// Retires `conn` after it failed, and with it every thread's
    /// connection of the same generation: whatever broke one (a restart, a
    /// demotion, a new replication id) broke them all. Each thread connects
    /// again on its next command.
    pub(crate) fn discard(&self, conn: &Conn) {
        let _ = self.generation.compare_exchange(
            conn.generation,
            conn.generation + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Checks the primary (connecting if needed): it must answer, still be
    /// a primary, and still have the replication id the connection was
    /// made under (else the connection is replaced, so writes name the
    /// right primary). Returns its replication state.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<Replication, BrokerError> {
        let check = async {
            let conn = self.conn().await?;
            let mut mux = conn.mux.clone();
            let info: Result<String, _> = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut mux)
                .await;
            match info {
                Ok(info) => {
                    let replication = Replication::parse(&info);
                    if !replication.is_primary || *replication.replid != *conn.writer {
                        self.discard(&conn);
                    }
                    Ok(replication)
                }
                Err(error) => {
                    self.discard(&conn);
                    Err(self.unavailable(error))
                }
            }
        };
        let result = tokio::time::timeout(timeout, check)
            .await
            .unwrap_or_else(|_| Err(self.unavailable("no answer in time")));
        if let Err(error) = &result {
            // A frozen or dead server must not keep connections whose
            // requests will never be answered.
            self.retire();
            tracing::debug!(addr = %self.addr, error = %crate::error_chain(error), "primary probe failed");
        }
        let ok = result.as_ref().is_ok_and(|r| r.is_primary);
        self.probe_ok.store(ok, Ordering::Release);
        result
    }

    /// Records the replication id a probe saw; returns the one before.
    pub(crate) fn swap_replid(&self, replid: &str) -> Option<String> {
        self.last_replid.lock().replace(replid.to_owned())
    }

    /// Makes link `id` the one whose state counts; it starts down.
    pub(crate) fn claim_link(&self, id: u64) {
        *self.link.lock() = (id, LinkState::Down);
    }

    /// Forgets link `id` (stopped), unless another link took over.
    pub(crate) fn release_link(&self, id: u64) {
        let mut link = self.link.lock();
        if link.0 == id {
            *link = (0, LinkState::None);
        }
    }

    /// Records what link `id` reports; false when another link took over
    /// or nothing changed.
    pub(crate) fn set_link(&self, id: u64, state: LinkState) -> bool {
        let mut link = self.link.lock();
        if link.0 != id || link.1 == state {
            return false;
        }
        link.1 = state;
        true
    }

    /// Whether the primary answered its last probe as a primary and its
    /// live-event link, if it has one, is up.
    pub(crate) fn is_healthy(&self) -> bool {
        self.probe_ok.load(Ordering::Acquire) && self.link.lock().1 != LinkState::Down
    }

    /// Drops the command connection and marks the primary unhealthy until
    /// its next successful probe (its server may have restarted).
    pub(crate) fn reset(&self) {
        self.retire();
        self.mark_failed();
    }

    /// Retires every thread's connection, whatever its generation.
    fn retire(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the primary unhealthy until its next successful probe (a
    /// command found it gone or demoted).
    pub(crate) fn mark_failed(&self) {
        self.probe_ok.store(false, Ordering::Release);
    }

    pub(crate) fn unavailable(&self, error: impl std::fmt::Display) -> BrokerError {
        BrokerError::unavailable(format!("redis {}: {error}", self.addr))
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("writer", &self.writer)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_fields_are_read_from_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
                    master_replid:abc\r\nmaster_replid2:def\r\n";
        let r = Replication::parse(info);
        assert!(r.is_primary);
        assert_eq!((r.replid.as_str(), r.replid2.as_str()), ("abc", "def"));
        assert!(!Replication::parse("role:slave\r\n").is_primary);
    }
}
