//! Accepting connections and routing each one by its first bytes.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::{timeout_at, Instant},
};

use super::{
    first_request::{self, FirstRequest},
    head::REQUEST_HEAD_TIMEOUT,
};
use crate::{metrics::route, state::AppState};

/// The first bytes of a request served by the lean stream door.
const STREAM_PREFIX: &[u8] = b"GET /v1/events";

/// Where connections that are not new streams go: the actix workers, in
/// turn.
#[derive(Clone, Debug)]
pub struct Handoff {
    workers: Arc<[mpsc::UnboundedSender<std::net::TcpStream>]>,
    next: Arc<AtomicUsize>,
}

impl Handoff {
    /// A handoff to `workers`.
    pub fn new(workers: Vec<mpsc::UnboundedSender<std::net::TcpStream>>) -> Self {
        Self {
            workers: workers.into(),
            next: Arc::default(),
        }
    }

    fn send(&self, stream: TcpStream) {
        // Leaving this runtime's reactor lets the worker register the socket
        // with its own, so its I/O is driven on the worker's thread.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        // A closed worker means the node is stopping; the connection drops.
        let _ = self.workers[i].send(stream);
    }
}

/// Accepts connections until `stop` turns true. Owned by the server, which
/// flips `stop` when it shuts down.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    handoff: Handoff,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(route(stream, Arc::clone(&state), handoff.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, typically: pause instead of
                    // spinning on the same error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn route(stream: TcpStream, state: Arc<AppState>, handoff: Handoff) {
    let _ = stream.set_nodelay(true);
    // One deadline for the whole first head, however it is read.
    let deadline = Instant::now() + REQUEST_HEAD_TIMEOUT;
    let mut start = [0u8; STREAM_PREFIX.len() + 1];
    match timeout_at(deadline, stream.peek(&mut start)).await {
        Ok(Ok(n)) if is_new_stream(&start[..n]) => {
            super::pump::serve_stream(stream, state, deadline).await;
        }
        Ok(Ok(n)) if n > 0 => {
            let checked = timeout_at(deadline, first_request::check(&stream));
            match checked.await {
                Ok(FirstRequest::Valid) => handoff.send(stream),
                Ok(FirstRequest::Invalid(error)) => {
                    let status = error.render().status;
                    state.metrics.count_request(route::OTHER, status.as_str());
                    super::head::write_error(stream, &error).await;
                }
                // Closed, or too slow to send a head.
                Ok(FirstRequest::Closed) | Err(_) => {}
            }
        }
        // Closed, failed, or silent for too long.
        _ => {}
    }
}

/// Whether a connection starts with a stream request. A request line that
/// arrived in smaller pieces than this goes to actix, which serves streams
/// too: routing stays correct, only the memory saving is lost.
fn is_new_stream(start: &[u8]) -> bool {
    start.len() == STREAM_PREFIX.len() + 1
        && start.starts_with(STREAM_PREFIX)
        && matches!(start[STREAM_PREFIX.len()], b'?' | b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_events_path_is_a_new_stream() {
        assert!(is_new_stream(b"GET /v1/events?"));
        assert!(is_new_stream(b"GET /v1/events "));
        assert!(!is_new_stream(b"GET /v1/eventsx"));
        assert!(!is_new_stream(b"GET /v1/events/"));
        assert!(!is_new_stream(b"POST /v1/publis"));
        assert!(!is_new_stream(b"GET /v1/ev"));
    }
}
