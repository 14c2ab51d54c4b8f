//! Checking the first request head of a connection before actix reads it.
//!
//! actix answers a request head it cannot parse with an empty `400` or
//! `431`. herald promises problem+json for every rejected request, and it
//! sees every new connection first, so it reads the first head without
//! consuming it (`peek`) and answers a malformed one itself; a valid head is
//! left in the socket for actix, untouched. Later requests on a keep-alive
//! connection are actix's alone.

use std::io;

use tokio::{io::Interest, net::TcpStream};

// actix's limits, which the check applies too, so that whatever it lets
// through, actix accepts.
use super::head::{MAX_HEADERS, MAX_HEAD_BYTES};
use crate::error::ApiError;
/// Most heads fit here; the buffer grows to the limit only for larger ones.
const USUAL_HEAD_BYTES: usize = 4096;

/// What the peek found.
pub(super) enum FirstRequest {
    /// A well-formed head: hand the connection over.
    Valid,
    /// A malformed head: answer this and close.
    Invalid(ApiError),
    /// The client closed or the socket failed.
    Closed,
}

/// Peeks until the first request head is complete, then judges it.
pub(super) async fn check(stream: &TcpStream) -> FirstRequest {
    let mut buf = vec![0u8; USUAL_HEAD_BYTES];
    let mut seen = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return FirstRequest::Closed,
            Ok(n) => n,
        };
        if let Some(end) = head_end(&buf[..n]) {
            return judge(&buf[..end]);
        }
        if n > MAX_HEAD_BYTES {
            return FirstRequest::Invalid(ApiError::HeadersTooLarge(
                "the request head is over 128 KiB".into(),
            ));
        }
        if n == buf.len() {
            // Full, without an end: look at more of it.
            buf.resize(MAX_HEAD_BYTES + 1, 0);
            seen = n;
            continue;
        }
        if n == seen {
            // Nothing new since the last look. Peeking leaves the socket
            // "readable", so clear that first; then look once more, in case
            // bytes arrived just before the clear, and only then wait.
            let _ = stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            match stream.peek(&mut buf).await {
                Ok(again) if again > n => {}
                Ok(0) | Err(_) => return FirstRequest::Closed,
                Ok(_) => {
                    if stream.readable().await.is_err() {
                        return FirstRequest::Closed;
                    }
                }
            }
        }
        seen = n;
    }
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

fn judge(head: &[u8]) -> FirstRequest {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // httparse skips empty lines before a request line, so a head of
        // empty lines is still incomplete: there is no request in it.
        Ok(httparse::Status::Partial) => {
            return FirstRequest::Invalid(ApiError::BadRequest("no request line".into()));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return FirstRequest::Invalid(ApiError::HeadersTooLarge(format!(
                "the request has more than {MAX_HEADERS} header fields"
            )));
        }
        Err(error) => {
            return FirstRequest::Invalid(ApiError::BadRequest(format!(
                "malformed request: {error}"
            )));
        }
    }
    match framing(request.headers) {
        Ok(()) => FirstRequest::Valid,
        Err(detail) => FirstRequest::Invalid(ApiError::BadRequest(detail.into())),
    }
}

/// The body framing must be unambiguous: one numeric `Content-Length`, and
/// never both it and `Transfer-Encoding` (the request smuggling shape).
fn framing(headers: &[httparse::Header<'_>]) -> Result<(), &'static str> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let mut lengths = named("content-length").map(|h| h.value);
    let first = lengths.next();
    if let Some(value) = first {
        let valid = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if valid.is_none() {
            return Err("Content-Length is not a number");
        }
        if lengths.any(|other| other != value) {
            return Err("conflicting Content-Length headers");
        }
        if named("transfer-encoding").next().is_some() {
            return Err("both Content-Length and Transfer-Encoding");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &[u8]) -> Option<u16> {
        match judge(head) {
            FirstRequest::Valid => None,
            FirstRequest::Invalid(error) => Some(error.render().status.as_u16()),
            FirstRequest::Closed => Some(0),
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(verdict(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(
            verdict(b"POST /v1/publish HTTP/1.1\r\nContent-Length: 2\r\n\r\n"),
            None
        );
        assert_eq!(
            verdict(b"POST /v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            &b"GARBAGE\r\n\r\n"[..],
            b"\r\n\r\n",
            b"GET /healthz HTTP/9.9\r\n\r\n",
            b"GET /a\x00b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbroken\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                verdict(head),
                Some(400),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let many: String = (0..150).map(|n| format!("x-{n}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(verdict(head.as_bytes()), Some(431));
    }
}
