//! A stream on herald's own HTTP/1.1 path: parse the request head, open the
//! stream, then pump frames to the socket.
//!
//! The pump waits on three things at once: bytes to write, room in the
//! socket, and the client closing its side. It writes everything pending
//! with one `writev`, straight from the shared frames. When herald closes a
//! stream (slow consumer, drain, token expiry) the socket is closed at once,
//! even if the client has stopped reading.

use std::{
    collections::VecDeque,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use tokio::{io::AsyncWrite, net::TcpStream};

use super::head::{self, HeadError, MAX_HEADERS};
use crate::{
    error::ApiError,
    state::AppState,
    stream::EventStream,
    subscribe::{self, AnswerBody, Received, SubscribeHead},
};

/// Frames handed to one `writev`.
const MAX_SLICES: usize = 64;
/// Reads of unexpected client bytes per wake-up, so a client sending
/// garbage cannot hold the task.
const MAX_DISCARDS: usize = 16;

/// Serves one connection that opened with `GET /v1/events`, whose head
/// must be complete by `deadline`.
pub(super) async fn serve_stream(
    mut socket: TcpStream,
    state: Arc<AppState>,
    deadline: tokio::time::Instant,
) {
    let received = match tokio::time::timeout_at(deadline, head::read(&mut socket)).await {
        Ok(Ok(head)) => receive(&state, &head, socket.peer_addr().ok().map(|a| a.ip())),
        // The stream route refuses requests with 400, 401 or 403 only
        // (docs/protocol.md, section 1).
        Ok(Err(HeadError::TooLarge)) => Received::invalid(ApiError::BadRequest(format!(
            "the request head is over {} KiB",
            head::MAX_HEAD_BYTES / 1024
        ))),
        Ok(Err(HeadError::Closed)) | Err(_) => return,
    };
    let answer = subscribe::answer(&state, received).await;
    match answer.body {
        AnswerBody::Whole(body) => {
            let response_head =
                head::response_head(answer.status, &answer.headers, Some(body.len()));
            head::write_and_close(socket, response_head, body).await;
        }
        AnswerBody::Stream(mut stream) => {
            let response_head = head::response_head(answer.status, &answer.headers, None);
            stream.pending().push_front(response_head);
            // A task of its own, sized for the pump alone rather than for
            // the setup above.
            tokio::spawn(Pump {
                socket,
                stream,
                ended: false,
            });
        }
    }
}

/// Parses the head into what [`subscribe::receive`] takes. Synchronous, so
/// the parser's scratch space never becomes part of a long-lived task.
fn receive(state: &AppState, head: &[u8], peer: Option<std::net::IpAddr>) -> Received {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Received::invalid(ApiError::BadRequest("malformed request head".into()));
    }
    let find = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let head = SubscribeHead::read(request.path.unwrap_or(""), peer, find);
    subscribe::receive(state, &head)
}

/// Moves a stream's frames to its socket until either side ends.
struct Pump {
    socket: TcpStream,
    stream: EventStream,
    ended: bool,
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if client_gone(&this.socket, cx) {
                return Poll::Ready(());
            }
            if this.stream.pending().is_empty() {
                if this.ended {
                    return Poll::Ready(());
                }
                // The next batch is taken only once the previous one is
                // written, so events wait in the bounded queue, where a
                // client that stops reading overflows and is cut off.
                match this.stream.poll_more(cx) {
                    Poll::Ready(true) => {}
                    Poll::Ready(false) => this.ended = true,
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if !this.ended && this.stream.poll_closed(cx).is_ready() {
                this.ended = true;
            }
            match write_some(&mut this.socket, this.stream.pending(), cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                // Closed by herald while the client is not reading: close
                // now rather than wait for room.
                Poll::Pending if this.ended => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether the client closed its side (or the socket failed). Anything the
/// client sends after its request is read and ignored, into a stack buffer.
fn client_gone(socket: &TcpStream, cx: &mut Context<'_>) -> bool {
    for _ in 0..MAX_DISCARDS {
        match socket.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => {
                let mut discard = [0u8; 64];
                match socket.try_read(&mut discard) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                }
            }
        }
    }
    // Still more to discard: come back after other work.
    cx.waker().wake_by_ref();
    false
}

/// One `writev` of the pending frames; drops what was written.
fn write_some(
    socket: &mut TcpStream,
    pending: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut count = 0;
    for (slot, bytes) in slices.iter_mut().zip(pending.iter()) {
        *slot = IoSlice::new(bytes);
        count += 1;
    }
    let mut written = ready!(Pin::new(socket).poll_write_vectored(cx, &slices[..count]))?;
    if written == 0 {
        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
    }
    while written > 0 {
        let Some(front) = pending.front_mut() else {
            break;
        };
        if front.len() <= written {
            written -= front.len();
            pending.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writev_drops_exactly_what_was_written() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut all)
                .await
                .unwrap();
            all
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut pending: VecDeque<Bytes> = [&b"alpha "[..], b"beta ", b"gamma"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        while !pending.is_empty() {
            std::future::poll_fn(|cx| write_some(&mut socket, &mut pending, cx))
                .await
                .unwrap();
        }
        drop(socket);
        assert_eq!(client.await.unwrap(), b"alpha beta gamma");
    }
}
