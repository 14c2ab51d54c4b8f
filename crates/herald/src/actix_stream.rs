//! Streams served by actix: the door for stream requests on a reused
//! keep-alive connection, as the response body actix polls.
//!
//! [`ActixBody`] adapts an [`EventStream`] to actix's `Stream` body, and
//! closes the stream's socket from outside when needed: actix stops polling a response body while the client's socket is full,
//! so a stream on an actix connection cannot notice that herald closed it
//! (a slow consumer, a drain) until the client reads again. Such a stream
//! keeps a duplicate of its connection's socket and shuts the socket down
//! when its queue closes; actix then sees the error and drops the
//! connection. The duplicate keeps the socket itself alive, so the shutdown
//! can never reach an unrelated connection that reused the descriptor
//! number.
//!
//! This is herald's only `unsafe` code.

use std::{
    convert::Infallible,
    net::Shutdown,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use actix_web::HttpRequest;
use bytes::Bytes;
use futures_util::Stream;

use crate::stream::EventStream;

/// How long a closed stream's body has to end by itself before its socket
/// is shut down from outside.
pub const CLOSER_GRACE: Duration = Duration::from_secs(1);

/// The body of a stream actix serves.
pub struct ActixBody {
    stream: EventStream,
    // Cleared when actix drops the body, so a pending closer does not touch
    // a socket whose stream already ended.
    alive: Arc<AtomicBool>,
}

impl ActixBody {
    /// Wraps `stream`, served for `req`. When herald closes the stream and
    /// the body is still alive [`CLOSER_GRACE`] later, the connection's
    /// socket is shut down. actix, still polling, ends the body normally
    /// within that time (writing its head and opening bytes first), so the
    /// closer only reaches bodies actix stopped polling (a client that
    /// stopped reading).
    pub fn new(stream: EventStream, req: &HttpRequest) -> Self {
        let alive = Arc::new(AtomicBool::new(true));
        if let Some(socket) = duplicate(req) {
            let still_alive = Arc::clone(&alive);
            stream.on_queue_closed(move || {
                let close_if_alive = move || {
                    if still_alive.load(Ordering::Acquire) {
                        shutdown(&socket);
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            tokio::time::sleep(CLOSER_GRACE).await;
                            close_if_alive();
                        });
                    }
                    Err(_) => close_if_alive(),
                }
            });
        }
        Self { stream, alive }
    }
}

impl Drop for ActixBody {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

impl Stream for ActixBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let stream = &mut self.stream;
        loop {
            if let Some(bytes) = stream.pending().pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if !std::task::ready!(stream.poll_more(cx)) {
                return Poll::Ready(None);
            }
        }
    }
}

/// The descriptor of an actix connection, recorded when it is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFd(RawFd);

impl ConnectionFd {
    /// Records the descriptor of `socket`.
    pub fn of(socket: &impl AsRawFd) -> Self {
        Self(socket.as_raw_fd())
    }
}

/// A duplicate of the socket serving `req`, or `None` outside actix's
/// workers (or if the process is out of descriptors).
fn duplicate(req: &HttpRequest) -> Option<OwnedFd> {
    let ConnectionFd(raw) = *req.conn_data::<ConnectionFd>()?;
    #[allow(unsafe_code)]
    // SAFETY: `raw` is the descriptor of the connection this request is
    // being served on. actix owns that socket until the connection ends,
    // which cannot happen while the request handler runs, so the descriptor
    // is open and refers to this connection for the duration of the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    fd.try_clone_to_owned().ok()
}

/// Shuts both directions of the socket down; errors mean it is already
/// gone.
fn shutdown(fd: &OwnedFd) {
    let _ = socket2::SockRef::from(fd).shutdown(Shutdown::Both);
}
