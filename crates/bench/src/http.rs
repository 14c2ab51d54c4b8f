//! The little HTTP/1.1 the bench speaks: writing a request into a reusable
//! buffer and reading a response head.
//!
//! A general client (hyper, reqwest) would allocate per request and per
//! response and hide how bodies are framed; the bench needs neither
//! pipelining nor chunk decoding to be magic, so it writes requests with
//! `write!` into a `Vec` it reuses and parses heads in place.

use std::io::Write;

use memchr::memmem;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
    /// Neither: the body runs until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body that follows is framed.
    pub framing: BodyFraming,
    /// Length of the head, including its blank line.
    pub len: usize,
}

/// Errors in a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not an `HTTP/1.x NNN` status line or a malformed header.
    Malformed,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while the blank
/// line that ends it has not arrived yet.
///
/// # Errors
/// [`HeadError::Malformed`] for anything that is not an HTTP/1.x response.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let Some(end) = memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err(HeadError::Malformed)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().ok_or(HeadError::Malformed)?;
    if !status_line.starts_with(b"HTTP/1.") || status_line.len() < 12 {
        return Err(HeadError::Malformed);
    }
    let code = &status_line[9..12];
    if !code.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
    let mut framing = BodyFraming::UntilClose;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(HeadError::Malformed);
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if ends_with_ignore_case(value, b"chunked") {
                framing = BodyFraming::Chunked;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") && framing != BodyFraming::Chunked {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(HeadError::Malformed)?;
            framing = BodyFraming::Length(n);
        }
    }
    Ok(Some(ResponseHead {
        status,
        framing,
        len: end + 4,
    }))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

fn ends_with_ignore_case(value: &[u8], suffix: &[u8]) -> bool {
    value.len() >= suffix.len() && value[value.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Appends a `GET` request for an event stream.
pub fn write_get(out: &mut Vec<u8>, host: &str, path: &str) {
    write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n\r\n"
    )
    .expect("writing to a Vec cannot fail");
}

/// Appends a `POST` request whose body is `body`.
pub fn write_post(out: &mut Vec<u8>, host: &str, path: &str, content_type: &str, body: &[u8]) {
    write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("writing to a Vec cannot fail");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_framing() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\nC\r\n";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, BodyFraming::Chunked);
        assert_eq!(&raw[head.len..], b"C\r\n");

        let raw = b"HTTP/1.1 202 Accepted\r\nContent-Length:  23 \r\n\r\n";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!((head.status, head.framing), (202, BodyFraming::Length(23)));

        let raw = b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.framing, BodyFraming::UntilClose);
    }

    #[test]
    fn waits_for_the_whole_head_and_rejects_garbage() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse_response_head(&raw[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_response_head(b"SSH-2.0\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn writes_requests() {
        let mut out = Vec::new();
        write_post(&mut out, "h:1", "/pub/a", "text/plain", b"hi");
        assert_eq!(
            out,
            b"POST /pub/a HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
    }
}
