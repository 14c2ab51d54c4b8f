//! Running a node: state, broker, the accept loop and HTTP workers,
//! background tasks, and the drain that ends it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use herald_broker::{Broker, CloseReason, MemoryBroker, RedisBroker, RedisTopology, TopicRegistry};
use socket2::{Domain, Socket, Type};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
};

use crate::{
    auth::Auth, config::Settings, lean_door, metrics::Metrics, state::AppState, workers::Workers,
};

/// How long a stopping node waits for requests still in flight (publishes)
/// once its streams are closed.
const REQUEST_GRACE: Duration = Duration::from_secs(5);
/// Pending connections the kernel may queue before herald accepts them.
const BACKLOG: i32 = 4096;

/// Runs a node until it is stopped by SIGTERM or SIGINT and has drained.
///
/// # Errors
///
/// When the listen address cannot be bound or the broker cannot start.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Installed before anything can report the node ready: a SIGTERM that
    // arrives first must drain the node, not kill it.
    let mut signals = Signals::install()?;
    let stream_capacity = raise_fd_limit();
    if settings.server.max_connections > stream_capacity {
        tracing::warn!(
            max_connections = settings.server.max_connections,
            stream_capacity,
            "server.max_connections is above what the file descriptor limit allows"
        );
    }

    let metrics = Metrics::new();
    let broker = start_broker(&settings, &metrics)?;
    let state = Arc::new(AppState::new(
        settings.clone(),
        Arc::clone(&broker),
        metrics,
    )?);
    warn_if_publishing_is_exposed(&settings, &state.auth);
    let open_streams = Arc::clone(&state.open_streams);
    let lifecycle = Arc::clone(&state.lifecycle);

    let listener = bind(settings.server.bind)?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let worker_count = worker_count(&settings);
    let workers = Workers::start(worker_count, &state).context("starting HTTP workers")?;
    let (stop_accepting, stop) = watch::channel(false);
    let accept = tokio::spawn(lean_door::serve(
        listener,
        Arc::clone(&state),
        workers.handoff(),
        stop,
    ));
    tracing::info!(%addr, workers = worker_count, "listening");

    let heartbeats =
        tokio::spawn(Arc::clone(&open_streams).run_heartbeats(settings.server.heartbeat_interval));
    let expiries = tokio::spawn(Arc::clone(&open_streams).run_expiries());

    signals.recv().await;
    let drain_timeout = settings.server.drain_timeout;
    tracing::info!(streams = open_streams.count(), ?drain_timeout, "draining");
    lifecycle.start_draining();
    tokio::select! {
        () = open_streams.close_all_spread(CloseReason::Drain, drain_timeout) => {
            tracing::info!("all streams closed");
        }
        () = signals.recv() => tracing::warn!("second signal: stopping now"),
    }
    let _ = stop_accepting.send(true);
    let _ = accept.await;
    if !lifecycle.wait_idle(REQUEST_GRACE).await {
        tracing::warn!("requests still in flight after the grace period");
    }
    heartbeats.abort();
    expiries.abort();
    tokio::task::spawn_blocking(move || workers.stop())
        .await
        .context("stopping HTTP workers")?;
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn start_broker(settings: &Settings, metrics: &Metrics) -> anyhow::Result<Arc<dyn Broker>> {
    Ok(match &settings.redis {
        None => {
            let registry = Arc::new(TopicRegistry::new(metrics.topic_registry.clone()));
            metrics.broker.up.set(1);
            Arc::new(MemoryBroker::start(registry, settings.history))
        }
        Some(redis) => {
            let broker = RedisBroker::start(
                redis,
                settings.history,
                metrics.topic_registry.clone(),
                metrics.broker.clone(),
            )
            .context("redis")?;
            match &redis.topology {
                RedisTopology::Standalone { url } => {
                    tracing::info!(url = %redacted(url), "cluster node on a standalone redis");
                }
                RedisTopology::Sentinel { nodes, master, .. } => {
                    let nodes: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
                    tracing::info!(?nodes, %master, "cluster node on redis sentinel");
                }
                RedisTopology::Cluster { nodes } => {
                    let nodes: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
                    tracing::info!(?nodes, "cluster node on redis cluster");
                }
            }
            Arc::new(broker)
        }
    })
}

/// Threads for HTTP work: `server.workers`, or one per core.
pub fn worker_count(settings: &Settings) -> usize {
    match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let context = || format!("server.bind: cannot listen on {addr}");
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, None).with_context(context)?;
    socket.set_reuse_address(true).with_context(context)?;
    socket.set_nonblocking(true).with_context(context)?;
    socket.bind(&addr.into()).with_context(context)?;
    socket.listen(BACKLOG).with_context(context)?;
    TcpListener::from_std(socket.into()).with_context(context)
}

/// SIGTERM and SIGINT, both of which start the drain (and a second one ends
/// it at once).
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Raises the soft open-file limit to the hard limit: every stream holds a
/// socket. Returns roughly how many streams fit.
fn raise_fd_limit() -> usize {
    // Listening socket, epoll, Redis, log files and friends.
    const RESERVED: u64 = 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let capacity = limit.saturating_sub(RESERVED);
            tracing::info!(
                open_files = limit,
                stream_capacity = capacity,
                "file descriptor limit"
            );
            usize::try_from(capacity).unwrap_or(usize::MAX)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the file descriptor limit");
            usize::MAX
        }
    }
}

fn warn_if_publishing_is_exposed(settings: &Settings, auth: &Auth) {
    if auth.publishing_is_open() && !settings.server.bind.ip().is_loopback() {
        tracing::warn!(
            bind = %settings.server.bind,
            "publishing is open to anyone who can reach this address: \
             set auth.publish_keys or auth.jwt_secret"
        );
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}
