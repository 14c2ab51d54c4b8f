//! The formats herald writes into Redis: live event payloads and publish
//! receipts. Both are produced by the publish script and read here.

use crate::{Position, Receipt, Topic};

/// A live event as published on a topic's channel:
/// `"<epoch> <seq> <prev> <stored_at_us> <event_len>\n<event><data>"`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LiveEvent<'a> {
    pub(crate) position: Position,
    /// The sequence number of the event before it (see `resume.rs`).
    pub(crate) prev: u64,
    pub(crate) stored_at_us: u64,
    pub(crate) event: &'a str,
    pub(crate) data: &'a str,
}

/// Parses a live payload; `None` for anything herald did not write.
pub(crate) fn parse_live(payload: &[u8]) -> Option<LiveEvent<'_>> {
    let newline = memchr::memchr(b'\n', payload)?;
    let header = std::str::from_utf8(&payload[..newline]).ok()?;
    let mut fields = header.split(' ');
    let epoch = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let prev = fields.next()?.parse().ok()?;
    let stored_at_us = fields.next()?.parse().ok()?;
    let event_len: usize = fields.next()?.parse().ok()?;
    if fields.next().is_some() || prev >= seq {
        return None;
    }
    let body = std::str::from_utf8(&payload[newline + 1..]).ok()?;
    if !body.is_char_boundary(event_len) {
        return None;
    }
    let (event, data) = body.split_at(event_len);
    Some(LiveEvent {
        position: Position::new(epoch, seq),
        prev,
        stored_at_us,
        event,
        data,
    })
}

/// Parses a whole receipt returned by the publish script: its shape
/// letter, then one `epoch:seq:topic` line per topic.
pub(crate) fn parse_receipt(text: &str) -> Option<Receipt> {
    let (shape, _) = text.split_once('\n')?;
    let mut positions = parse_positions(text)?;
    match shape {
        "o" if positions.len() == 1 => positions.pop().map(|(t, p)| Receipt::One(t, p)),
        "m" if !positions.is_empty() => Some(Receipt::Many(positions)),
        _ => None,
    }
}

/// The `epoch:seq:topic` lines of a receipt (after its shape letter).
pub(crate) fn parse_positions(text: &str) -> Option<Vec<(Topic, Position)>> {
    text.split('\n')
        .skip(1)
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let epoch = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            let topic = Topic::new(parts.next()?).ok()?;
            Some((topic, Position::new(epoch, seq)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_payload_splits_event_and_data_by_length() {
        let payload = "7 42 41 1000 5\nhello{\"x\":\"a\nb\"}".as_bytes();
        let live = parse_live(payload).unwrap();
        assert_eq!(live.position, Position::new(7, 42));
        assert_eq!(live.prev, 41);
        assert_eq!(live.event, "hello");
        assert_eq!(live.data, "{\"x\":\"a\nb\"}");
        assert!(parse_live(b"7 42 41 1000 99\nshort").is_none());
        assert!(parse_live(b"7 42 42 1000 0\nx").is_none());
        assert!(parse_live(b"garbage").is_none());
    }

    #[test]
    fn receipts_keep_their_shape_and_topics() {
        let one = parse_receipt("o\n5:1:a:b").unwrap();
        assert_eq!(
            one,
            Receipt::One(Topic::new("a:b").unwrap(), Position::new(5, 1))
        );
        let many = parse_receipt("m\n5:1:x\n6:9:y").unwrap();
        assert!(matches!(many, Receipt::Many(p) if p.len() == 2));
        assert!(parse_receipt("o\n5:1:x\n6:9:y").is_none());
        assert_eq!(parse_positions("m\n5:1:x").unwrap().len(), 1);
    }
}
