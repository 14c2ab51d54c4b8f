//! Reading and answering a stream request's head, without a framework.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use actix_web::http::{
    header::{HeaderName, CONTENT_TYPE},
    StatusCode,
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

/// A response head: the status line, `headers`, `Content-Length` when
/// given, and `Connection: close` (a stream's body ends when the connection
/// does, and every answer here ends its connection).
pub(super) fn response_head(
    status: StatusCode,
    headers: &[(HeaderName, String)],
    content_length: Option<usize>,
) -> Bytes {
    let mut head = BytesMut::with_capacity(192);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_slice(b" ");
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in headers {
        put_header(&mut head, name.as_str(), value);
    }
    if let Some(length) = content_length {
        put_header(&mut head, "content-length", &length.to_string());
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
pub(super) async fn write_error(socket: TcpStream, error: &ApiError) {
    let rendered = error.render();
    let mut headers = vec![(CONTENT_TYPE, PROBLEM_JSON.to_owned())];
    headers.extend(rendered.headers);
    let body = Bytes::from(rendered.body);
    let head = response_head(rendered.status, &headers, Some(body.len()));
    write_and_close(socket, head, body).await;
}

/// Writes a whole response (head and body) and closes.
pub(super) async fn write_and_close(mut socket: TcpStream, head: Bytes, body: Bytes) {
    let _ = socket.write_all(&head).await;
    let _ = socket.write_all(&body).await;
    let _ = socket.shutdown().await;
}
