//! The actix worker threads that serve everything except new streams.
//!
//! Each worker runs its own single-threaded actix runtime with one instance
//! of the app, and receives connections from herald's accept loop. Building
//! the service by hand (rather than with `HttpServer`) is what lets herald
//! keep the accept loop, and so the lean stream path, to itself.

use std::{rc::Rc, sync::Arc, thread, time::Duration};

use actix_http::{HttpService, KeepAlive};
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::{dev::AppConfig, web};
use tokio::{net::TcpStream, sync::mpsc};

use crate::{
    actix_stream::ConnectionFd, app, lean_door::Handoff, lean_door::REQUEST_HEAD_TIMEOUT,
    state::AppState,
};

/// Idle keep-alive connections are closed after this long.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Running workers. Dropping the senders (in [`Workers::stop`]) ends them.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers serving the app over `state`.
    ///
    /// # Errors
    ///
    /// When a thread cannot be spawned.
    pub fn start(count: usize, state: &Arc<AppState>) -> std::io::Result<Self> {
        let mut senders = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let state = Arc::clone(state);
            threads.push(
                thread::Builder::new()
                    .name(format!("herald-http-{i}"))
                    .spawn(move || actix_rt::System::new().block_on(serve(rx, state)))?,
            );
            senders.push(tx);
        }
        Ok(Self { senders, threads })
    }

    /// Where the accept loop sends connections for these workers.
    pub fn handoff(&self) -> Handoff {
        Handoff::new(self.senders.clone())
    }

    /// Stops accepting handed-off connections and waits for the workers to
    /// finish; connections still open on them are dropped.
    pub fn stop(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

async fn serve(
    mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    state: Arc<AppState>,
) {
    let factory = HttpService::build()
        .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
        .client_request_timeout(REQUEST_HEAD_TIMEOUT)
        .client_disconnect_timeout(Duration::from_secs(1))
        // A client closing its side ends its stream at once; otherwise an
        // idle stream would linger until a write fails.
        .h1_allow_half_closed(false)
        .on_connect_ext(|socket: &TcpStream, data: &mut actix_http::Extensions| {
            data.insert(ConnectionFd::of(socket));
        })
        .finish(map_config(app::build(web::Data::from(state)), |()| {
            AppConfig::default()
        }))
        .tcp();
    let service = match factory.new_service(()).await {
        Ok(service) => Rc::new(service),
        Err(()) => {
            tracing::error!("cannot build the HTTP service");
            return;
        }
    };
    while let Some(stream) = connections.recv().await {
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        let service = Rc::clone(&service);
        actix_rt::spawn(async move {
            // Protocol errors were answered by actix already; nothing to add.
            let _ = service.call(stream).await;
        });
    }
}
