//! The replies a pub/sub connection reads (RESP2), parsed in place.
//!
//! Only what a subscribed connection can receive is understood: arrays of
//! bulk strings and integers (messages, subscription changes, `PING`
//! answers), simple strings and errors. A message's channel and payload
//! are slices of the read buffer, so reading one allocates nothing.

use bytes::{Buf, Bytes, BytesMut};

/// Longest frame accepted; a live event is at most herald's payload limit
/// plus its header, far below this.
const MAX_FRAME: usize = 64 << 20;

/// One reply or push read from a pub/sub connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A published message (`message` or `smessage`).
    Message { channel: Bytes, payload: Bytes },
    /// A channel subscription took effect (`subscribe`, `ssubscribe`).
    Subscribed(Bytes),
    /// A channel subscription ended (`unsubscribe`, `sunsubscribe`), asked
    /// for or not: Redis drops sharded subscriptions when their slot moves.
    Unsubscribed(Bytes),
    /// The answer to `PING`.
    Pong,
    /// `+OK` and other simple answers.
    Ok,
    /// An error answer.
    Error(String),
}

/// The connection sent something that is not a pub/sub reply.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply on the pub/sub connection: {0}")]
pub(crate) struct FrameError(&'static str);

/// Takes the next complete frame off `buffer`; `None` until one is there.
pub(crate) fn next(buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some((len, shape)) = measure(buffer)? else {
        return Ok(None);
    };
    let frame = buffer.split_to(len).freeze();
    Ok(Some(build(frame, shape)?))
}

/// Where the parts of a complete frame lie, found without consuming it.
enum Shape {
    Simple,
    Error,
    /// The array's elements: `(start, end)` of each bulk string, or `None`
    /// for an integer.
    Array(Vec<Option<(usize, usize)>>),
}

fn measure(buffer: &[u8]) -> Result<Option<(usize, Shape)>, FrameError> {
    let Some((kind, header, mut at)) = line(buffer, 0)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((at, Shape::Simple))),
        b'-' => Ok(Some((at, Shape::Error))),
        b'*' => {
            let count = number(header)?;
            if count > 16 {
                return Err(FrameError("array too long"));
            }
            let mut parts = Vec::with_capacity(count);
            for _ in 0..count {
                let Some((kind, header, after)) = line(buffer, at)? else {
                    return Ok(None);
                };
                match kind {
                    b'$' if header == b"-1" => {
                        parts.push(None);
                        at = after;
                    }
                    b'$' => {
                        let len = number(header)?;
                        if len > MAX_FRAME {
                            return Err(FrameError("bulk string too long"));
                        }
                        let end = after + len;
                        if buffer.len() < end + 2 {
                            return Ok(None);
                        }
                        if &buffer[end..end + 2] != b"\r\n" {
                            return Err(FrameError("bulk string not terminated"));
                        }
                        parts.push(Some((after, end)));
                        at = end + 2;
                    }
                    b':' => {
                        parts.push(None);
                        at = after;
                    }
                    _ => return Err(FrameError("unexpected array element")),
                }
            }
            Ok(Some((at, Shape::Array(parts))))
        }
        _ => Err(FrameError("unexpected reply type")),
    }
}

/// A header line: its type byte, the rest of the line, and where the next
/// line starts.
type Line<'a> = (u8, &'a [u8], usize);

fn line(buffer: &[u8], from: usize) -> Result<Option<Line<'_>>, FrameError> {
    let rest = buffer.get(from..).unwrap_or_default();
    let Some(end) = memchr::memchr(b'\n', rest) else {
        if rest.len() > 1024 {
            return Err(FrameError("header line too long"));
        }
        return Ok(None);
    };
    if end < 2 || rest[end - 1] != b'\r' {
        return Err(FrameError("malformed line"));
    }
    Ok(Some((rest[0], &rest[1..end - 1], from + end + 1)))
}

fn number(text: &[u8]) -> Result<usize, FrameError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(FrameError("bad length"))
}

fn build(frame: Bytes, shape: Shape) -> Result<Frame, FrameError> {
    let text = |frame: &Bytes| {
        let mut line = frame.clone();
        line.advance(1);
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    };
    match shape {
        Shape::Simple => Ok(Frame::Ok),
        Shape::Error => Ok(Frame::Error(text(&frame))),
        Shape::Array(parts) => {
            let bulk = |i: usize| -> Option<Bytes> {
                parts
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|(s, e)| frame.slice(s..e))
            };
            let kind = bulk(0).ok_or(FrameError("array without a kind"))?;
            let frame = match &kind[..] {
                b"message" | b"smessage" => Frame::Message {
                    channel: bulk(1).ok_or(FrameError("message without channel"))?,
                    payload: bulk(2).ok_or(FrameError("message without payload"))?,
                },
                b"subscribe" | b"ssubscribe" => {
                    Frame::Subscribed(bulk(1).ok_or(FrameError("subscribe without channel"))?)
                }
                b"unsubscribe" | b"sunsubscribe" => {
                    // A null channel (unsubscribing while subscribed to
                    // nothing) names no topic.
                    Frame::Unsubscribed(bulk(1).unwrap_or_default())
                }
                b"pong" => Frame::Pong,
                _ => return Err(FrameError("unknown push kind")),
            };
            Ok(frame)
        }
    }
}

/// A command as RESP: an array of bulk strings.
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Frame> {
        let mut buffer = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = next(&mut buffer).unwrap() {
            frames.push(frame);
        }
        assert!(buffer.is_empty(), "left over: {buffer:?}");
        frames
    }

    #[test]
    fn reads_every_pubsub_reply() {
        let frames = all(b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:1\r\n\
              *3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\na\r\nbc\r\n\
              *3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n\
              *3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n\
              *2\r\n$4\r\npong\r\n$0\r\n\r\n+OK\r\n-MOVED 3 127.0.0.1:7001\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        assert_eq!(
            frames,
            [
                Frame::Subscribed(Bytes::from_static(b"ch")),
                Frame::Message {
                    channel: Bytes::from_static(b"ch"),
                    payload: Bytes::from_static(b"a\r\nbc"),
                },
                Frame::Message {
                    channel: Bytes::from_static(b"ch"),
                    payload: Bytes::new(),
                },
                Frame::Unsubscribed(Bytes::from_static(b"ch")),
                Frame::Pong,
                Frame::Ok,
                Frame::Error("MOVED 3 127.0.0.1:7001".into()),
                Frame::Unsubscribed(Bytes::new()),
            ]
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_split_frame() {
        let whole = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            let mut buffer = BytesMut::from(&whole[..cut]);
            assert_eq!(next(&mut buffer).unwrap(), None, "cut at {cut}");
            buffer.extend_from_slice(&whole[cut..]);
            assert!(matches!(
                next(&mut buffer).unwrap(),
                Some(Frame::Message { .. })
            ));
        }
    }

    #[test]
    fn refuses_what_pubsub_never_sends() {
        for bad in [
            &b"$3\r\nabc\r\n"[..],
            b"*1\r\n*0\r\n",
            b"*2\r\n$1\r\nx\r\n:1\r\n",
        ] {
            assert!(next(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }
}
