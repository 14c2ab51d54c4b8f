//! Reading and answering a stream request's head, without a framework.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::error::{ApiError, PROBLEM_JSON};

/// Time a client has to send its first request head, from the moment its
/// connection is accepted; bounds slowloris clients.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted, on every connection kind: actix's own
/// limit, so a request is judged the same whether it opens a connection
/// (checked here) or reuses one (checked by actix). The largest valid
/// subscribe request (64 topics of 200 bytes, percent-encoded as browsers
/// do) is about 40 KB before its cursor, token and cookies.
pub(super) const MAX_HEAD_BYTES: usize = 128 * 1024;
/// Most header fields accepted in one request head: actix's limit too.
pub(super) const MAX_HEADERS: usize = 96;

/// Why a head could not be read.
#[derive(Debug)]
pub(super) enum HeadError {
    /// The connection closed or failed first.
    Closed,
    /// More than [`MAX_HEAD_BYTES`] without an end.
    TooLarge,
}

/// Reads up to the end of the request head. The buffer lives only until the
/// request is parsed; streams keep no read buffer.
pub(super) async fn read(socket: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        let searched = buf.len().saturating_sub(3);
        buf.reserve(4096.min(MAX_HEAD_BYTES - buf.len()));
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
        if buf[searched..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
    }
}

/// The response head of a stream or refusal: status 200, the stream headers,
/// any CORS headers, and `Connection: close` (the body ends when the
/// connection does).
pub(super) fn stream_head(cors: &[(&'static str, String)]) -> Bytes {
    let mut head = BytesMut::with_capacity(160);
    head.put_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in crate::subscribe::STREAM_HEADERS {
        put_header(&mut head, name, value);
    }
    for (name, value) in cors {
        put_header(&mut head, name, value);
    }
    head.put_slice(b"connection: close\r\n\r\n");
    head.freeze()
}

fn put_header(head: &mut BytesMut, name: &str, value: &str) {
    head.put_slice(name.as_bytes());
    head.put_slice(b": ");
    head.put_slice(value.as_bytes());
    head.put_slice(b"\r\n");
}

/// Writes `error` as a complete problem+json response and closes.
pub(super) async fn write_error(
    mut socket: TcpStream,
    error: &ApiError,
    cors: &[(&'static str, String)],
) {
    let response = error_response(error, cors);
    let _ = socket.write_all(&response).await;
    let _ = socket.shutdown().await;
}

fn error_response(error: &ApiError, cors: &[(&'static str, String)]) -> Bytes {
    let rendered = error.render();
    let status = rendered.status;
    let mut out = BytesMut::with_capacity(256 + rendered.body.len());
    out.put_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    put_header(&mut out, "content-type", PROBLEM_JSON);
    for (name, value) in &rendered.headers {
        put_header(&mut out, name.as_str(), value);
    }
    for (name, value) in cors {
        put_header(&mut out, name, value);
    }
    put_header(&mut out, "content-length", &rendered.body.len().to_string());
    out.put_slice(b"connection: close\r\n\r\n");
    out.put_slice(rendered.body.as_bytes());
    out.freeze()
}

/// Writes a whole response (head and body) and closes.
pub(super) async fn write_and_close(mut socket: TcpStream, head: Bytes, body: Bytes) {
    let _ = socket.write_all(&head).await;
    let _ = socket.write_all(&body).await;
    let _ = socket.shutdown().await;
}
