//! Positions in a topic's history and the cursors clients echo back.
//!
//! A topic's history is numbered per *epoch*: a random id drawn when the
//! history is created, with sequence numbers starting at 1. A history that is
//! lost and recreated (expired, Redis flushed) gets a new epoch, so an old
//! position can never be mistaken for a position in the new history, and
//! "the history still starts at 1" tells whether nothing was trimmed.
//!
//! A cursor is a list of `(topic tag, epoch, seq)` entries, base64url
//! encoded. A single-topic stream's ids and a publish's returned id are
//! one-entry cursors, so the two are the same string. A multi-topic stream
//! writes every topic's position into each id: the client echoes back one
//! string and herald learns where it stood on every topic. The tag (a hash of
//! the topic name) lets a cursor be read against a different topic list:
//! topics it does not mention start live, entries for topics no longer
//! requested are ignored.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::{CursorError, Topic};

/// Format version written as the first byte of every cursor.
const VERSION: u8 = 1;
/// Cursors longer than this are refused before decoding. 64 topics at their
/// largest encoding (4 + 4 + 10 bytes) fit with room to spare.
const MAX_ENCODED_LEN: usize = 4096;

/// A point in one topic's history: after the event numbered `seq` of the
/// history `epoch`. [`Position::EMPTY`] is "before anything" of a topic that
/// had no history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The history's random epoch; 0 when the topic had no history.
    pub epoch: u32,
    /// The last event seen; events of an epoch are numbered from 1.
    pub seq: u64,
}

impl Position {
    /// Before anything, on a topic that has no history.
    pub const EMPTY: Position = Position { epoch: 0, seq: 0 };

    /// A position in epoch `epoch` after event `seq`.
    pub fn new(epoch: u32, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

/// A decoded cursor: where a client stood on each topic it knew.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    entries: Vec<(u32, Position)>,
}

impl Cursor {
    /// A cursor holding `entries` of `(topic tag, position)`.
    pub fn new(entries: Vec<(u32, Position)>) -> Self {
        Self { entries }
    }

    /// The position recorded for `topic`, if the cursor knows it.
    pub fn position(&self, topic: &Topic) -> Option<Position> {
        let tag = topic.tag();
        self.entries
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, p)| *p)
    }

    /// Reads a cursor string written by [`encode`] or [`encode_one`].
    ///
    /// # Errors
    ///
    /// [`CursorError::Malformed`] for anything herald did not write.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        if text.is_empty() || text.len() > MAX_ENCODED_LEN {
            return Err(CursorError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Malformed)?;
        let (&version, mut rest) = bytes.split_first().ok_or(CursorError::Malformed)?;
        if version != VERSION || rest.is_empty() {
            return Err(CursorError::Malformed);
        }
        let mut entries = Vec::new();
        while !rest.is_empty() {
            let tag = read_u32(&mut rest)?;
            let epoch = read_u32(&mut rest)?;
            let seq = read_varint(&mut rest)?;
            if epoch == 0 && seq != 0 {
                return Err(CursorError::Malformed);
            }
            entries.push((tag, Position { epoch, seq }));
        }
        Ok(Self { entries })
    }
}

/// Encodes a one-topic cursor: a publish's id, and every id of a
/// single-topic stream.
pub fn encode_one(topic: &Topic, position: Position) -> String {
    encode([(topic.tag(), position)])
}

/// Encodes a cursor from `(topic tag, position)` entries.
pub fn encode(entries: impl IntoIterator<Item = (u32, Position)>) -> String {
    let mut bytes = Vec::with_capacity(16);
    bytes.push(VERSION);
    for (tag, position) in entries {
        bytes.extend_from_slice(&tag.to_be_bytes());
        bytes.extend_from_slice(&position.epoch.to_be_bytes());
        write_varint(&mut bytes, position.seq);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

fn read_u32(rest: &mut &[u8]) -> Result<u32, CursorError> {
    let (head, tail) = rest
        .split_first_chunk::<4>()
        .ok_or(CursorError::Malformed)?;
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(rest: &mut &[u8]) -> Result<u64, CursorError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or(CursorError::Malformed)?;
        *rest = tail;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(CursorError::Malformed);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CursorError::Malformed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_topic_cursor_round_trips() {
        let topic = Topic::new("orders").unwrap();
        let text = encode_one(&topic, Position::new(7, 42));
        let cursor = Cursor::decode(&text).unwrap();
        assert_eq!(cursor.position(&topic), Some(Position::new(7, 42)));
        assert_eq!(cursor.position(&Topic::new("other").unwrap()), None);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "!!!", "AA", "AQ", &"A".repeat(5000), "AgAAAAAAAAAAAA"] {
            assert_eq!(Cursor::decode(bad), Err(CursorError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn cursors_are_header_safe() {
        let text = encode([(u32::MAX, Position::new(u32::MAX, u64::MAX))]);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    proptest! {
        #[test]
        fn any_entries_round_trip(entries in prop::collection::vec(
            (any::<u32>(), 1u32.., any::<u64>()), 1..64)
        ) {
            let entries: Vec<_> = entries
                .into_iter()
                .map(|(tag, epoch, seq)| (tag, Position::new(epoch, seq)))
                .collect();
            let decoded = Cursor::decode(&encode(entries.clone())).unwrap();
            prop_assert_eq!(decoded, Cursor::new(entries));
        }

        #[test]
        fn decoding_never_panics(text in ".{0,200}") {
            let _ = Cursor::decode(&text);
        }
    }
}
