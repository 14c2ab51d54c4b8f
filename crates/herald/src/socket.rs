//! Reaching the socket of a connection actix owns, to close it from outside.
//!
//! actix stops polling a response body while the client's socket is full,
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
    net::Shutdown,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
};

use actix_web::HttpRequest;

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
pub fn duplicate(req: &HttpRequest) -> Option<OwnedFd> {
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
pub fn shutdown(fd: &OwnedFd) {
    let _ = socket2::SockRef::from(fd).shutdown(Shutdown::Both);
}
