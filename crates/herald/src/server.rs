//! Running a node: state, broker, HTTP server, background tasks, and the
//! drain that ends it.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{web, HttpServer};
use anyhow::Context;
use herald_broker::{Broker, BrokerMetrics, CloseReason, MemoryBroker, RedisBroker, TopicRegistry};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    app, auth::Auth, config::Settings, connections::Connections, lifecycle::Lifecycle,
    metrics::Metrics, state::AppState,
};

/// How long actix waits for requests still in flight (publishes) once the
/// streams are closed. Streams are closed by the drain itself, never by
/// this timeout.
const REQUEST_GRACE: Duration = Duration::from_secs(5);
/// Time a client has to send its request head; bounds slowloris clients.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a node until it is stopped by SIGTERM or SIGINT and has drained.
///
/// # Errors
///
/// When the listen address cannot be bound or the broker cannot start.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let stream_capacity = raise_fd_limit();
    if settings.server.max_connections > stream_capacity {
        tracing::warn!(
            max_connections = settings.server.max_connections,
            stream_capacity,
            "server.max_connections is above what the file descriptor limit allows"
        );
    }

    let metrics = Metrics::new();
    let broker: Arc<dyn Broker> = match &settings.redis_url {
        None => {
            let registry = Arc::new(TopicRegistry::new(metrics.registry.clone()));
            metrics.broker_up.set(1);
            Arc::new(MemoryBroker::start(registry, settings.history))
        }
        Some(url) => {
            let broker_metrics = BrokerMetrics {
                up: metrics.broker_up.clone(),
                reconnects: metrics.broker_reconnects.clone(),
            };
            let broker = RedisBroker::start(
                url,
                settings.history,
                metrics.registry.clone(),
                broker_metrics,
            )
            .context("redis.url")?;
            tracing::info!(url = %redacted(url), "cluster node on redis");
            Arc::new(broker)
        }
    };
    let auth = Auth::new(&settings.auth)?;
    warn_if_publishing_is_exposed(&settings, &auth);

    let connections = Arc::new(Connections::new(
        settings.server.max_connections,
        metrics.clone(),
    ));
    let lifecycle = Arc::new(Lifecycle::new());
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        broker: Arc::clone(&broker),
        metrics,
        connections: Arc::clone(&connections),
        lifecycle: Arc::clone(&lifecycle),
        auth,
    });

    let listener = TcpListener::bind(settings.server.bind)
        .with_context(|| format!("server.bind: cannot listen on {}", settings.server.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let server = HttpServer::new({
        let state = state.clone();
        move || app::build(state.clone())
    })
    .workers(workers)
    // herald enforces server.max_connections itself, with an answer browsers
    // retry; actix's own per-worker limit must never be reached first.
    .max_connections(settings.server.max_connections + 1024)
    .backlog(4096)
    .client_request_timeout(REQUEST_HEAD_TIMEOUT)
    // A client closing its side ends its stream at once; otherwise an idle
    // stream would linger (and count as a subscriber) until a write fails.
    .h1_allow_half_closed(false)
    .shutdown_timeout(REQUEST_GRACE.as_secs())
    .disable_signals()
    .listen(listener)?
    .run();
    tracing::info!(%addr, workers, "listening");

    let expiries = tokio::spawn(Arc::clone(&connections).run_expiries());
    let heartbeats =
        tokio::spawn(Arc::clone(&connections).run_heartbeats(settings.server.heartbeat_interval));
    let handle = server.handle();
    let drain_timeout = settings.server.drain_timeout;
    let drain = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            streams = connections.open_streams(),
            ?drain_timeout,
            "draining"
        );
        lifecycle.start_draining();
        let closing = connections.close_all_spread(CloseReason::Drain, drain_timeout);
        tokio::select! {
            () = closing => tracing::info!("all streams closed"),
            () = wait_for_signal() => tracing::warn!("second signal: stopping now"),
        }
        handle.stop(true).await;
    });

    server.await.context("HTTP server failed")?;
    heartbeats.abort();
    expiries.abort();
    drain.abort();
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; the node can only be killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
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
