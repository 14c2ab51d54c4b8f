//! A stream request sent as exact bytes over a plain TCP connection, for
//! tests about what clients other than reqwest send: header spelling,
//! request heads split across packets, HTTP/1.0.
//!
//! The response head is parsed here and the body is de-chunked when the
//! transfer encoding is chunked, so the result reads like any other
//! [`crate::SseStream`].

use std::{net::SocketAddr, pin::Pin, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{stream, Stream};
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    StatusCode,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::TIMEOUT;

/// A response body as a stream of chunks; an error ends it.
pub(crate) type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Pause between the parts of a request, so each reaches the server as a
/// read of its own rather than coalesced with the next.
const PART_GAP: Duration = Duration::from_millis(20);

/// Sends each of `parts` in its own write, [`PART_GAP`] apart and with
/// `TCP_NODELAY`, and reads the response head.
///
/// # Panics
///
/// When the connection fails or no complete head arrives within
/// [`TIMEOUT`].
pub(crate) async fn send(addr: SocketAddr, parts: &[&[u8]]) -> (StatusCode, HeaderMap, BodyStream) {
    let mut socket = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    socket.set_nodelay(true).expect("setting TCP_NODELAY");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(PART_GAP).await;
        }
        socket.write_all(part).await.expect("sending the request");
    }
    let mut buffer = BytesMut::new();
    let head_end = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                return end;
            }
            let n = socket
                .read_buf(&mut buffer)
                .await
                .expect("reading the head");
            assert!(n > 0, "the connection closed before a response head");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no response head from {addr} within {TIMEOUT:?}"));
    let head = buffer.split_to(head_end + 4);
    let (status, headers) = parse_head(&head[..head_end]);
    let framing = if header_is(&headers, "transfer-encoding", "chunked") {
        Framing::Chunked(Dechunker::default())
    } else if let Some(length) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    (status, headers, body(socket, buffer, framing))
}

fn parse_head(head: &[u8]) -> (StatusCode, HeaderMap) {
    let text = std::str::from_utf8(head).expect("the response head is ASCII");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.trim()).expect("a header value"),
        );
    }
    (code, headers)
}

fn header_is(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case(value)))
}

/// How the body's end is known.
enum Framing {
    Chunked(Dechunker),
    Length(usize),
    UntilClose,
}

impl Framing {
    /// Takes the body bytes out of `raw`; `true` once the body is complete.
    fn take(&mut self, raw: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Framing::Chunked(dechunker) => dechunker.feed(raw, out),
            Framing::Length(left) => {
                let n = (*left).min(raw.len());
                out.extend_from_slice(&raw.split_to(n));
                *left -= n;
                Ok(*left == 0)
            }
            Framing::UntilClose => {
                out.extend_from_slice(&raw.split());
                Ok(false)
            }
        }
    }
}

/// The body as a stream: whatever `leftover` holds first, then reads.
fn body(socket: TcpStream, leftover: BytesMut, framing: Framing) -> BodyStream {
    let state = Some((socket, leftover, framing));
    Box::pin(stream::unfold(state, |state| async move {
        let (mut socket, mut raw, mut framing) = state?;
        loop {
            let mut out = Vec::new();
            let done = match framing.take(&mut raw, &mut out) {
                Ok(done) => done,
                Err(error) => return Some((Err(error), None)),
            };
            if done {
                return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), None));
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), Some((socket, raw, framing))));
            }
            match socket.read_buf(&mut raw).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => return Some((Err(error.to_string()), None)),
            }
        }
    }))
}

/// Incremental decoder of chunked transfer encoding.
#[derive(Default)]
struct Dechunker {
    // Bytes of the current chunk still to come; `None` between chunks.
    left: Option<usize>,
}

impl Dechunker {
    /// Moves decoded bytes from `raw` to `out`; `true` at the last chunk.
    fn feed(&mut self, raw: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            match self.left {
                Some(0) => {
                    if raw.len() < 2 {
                        return Ok(false);
                    }
                    if &raw[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF".into());
                    }
                    raw.advance(2);
                    self.left = None;
                }
                Some(left) => {
                    if raw.is_empty() {
                        return Ok(false);
                    }
                    let n = left.min(raw.len());
                    out.extend_from_slice(&raw.split_to(n));
                    self.left = Some(left - n);
                }
                None => {
                    let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(false);
                    };
                    let line = String::from_utf8_lossy(&raw[..end]).into_owned();
                    raw.advance(end + 2);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| format!("bad chunk size {line:?}"))?;
                    if size == 0 {
                        return Ok(true);
                    }
                    self.left = Some(size);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_anywhere_decode_to_the_body() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut dechunker = Dechunker::default();
            let mut out = Vec::new();
            let mut raw = BytesMut::from(&wire[..split]);
            let mut done = dechunker.feed(&mut raw, &mut out).unwrap();
            if !done {
                raw.extend_from_slice(&wire[split..]);
                done = dechunker.feed(&mut raw, &mut out).unwrap();
            }
            assert!(done, "split at {split}");
            assert_eq!(out, b"hello world", "split at {split}");
        }
    }

    #[test]
    fn heads_give_status_and_headers() {
        let (status, headers) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-a: 1");
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["x-a"], "1");
    }
}
