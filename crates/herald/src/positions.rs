//! Where a stream stands on each of its topics, and the ids it writes.
//!
//! A single-topic stream's ids are the events' own cursors, shared with
//! every other subscriber. A multi-topic stream writes a composite cursor
//! holding every topic's position, so one echoed id resumes all of them.

use herald_broker::{cursor, Position, SharedEvent, Topic};

/// Positions of one stream, in the order its topics were requested.
#[derive(Debug)]
pub struct StreamPositions {
    topics: Vec<TopicPosition>,
}

#[derive(Debug)]
struct TopicPosition {
    topic: Topic,
    tag: u32,
    position: Position,
}

/// What a stream does with a live or replayed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than the stream's position: write it.
    Deliver,
    /// At or before the stream's position (it came from history already):
    /// skip it.
    Duplicate,
    /// Events may be missing before it (a jump in sequence, or a new
    /// history): tell the client to resync, then write it.
    Gap,
}

impl StreamPositions {
    /// Positions for `topics`, all [`Position::EMPTY`] until set.
    pub fn new(topics: &[Topic]) -> Self {
        let topics = topics
            .iter()
            .map(|topic| TopicPosition {
                topic: topic.clone(),
                tag: topic.tag(),
                position: Position::EMPTY,
            })
            .collect();
        Self { topics }
    }

    /// Whether the stream has a single topic (and so shares event ids).
    pub fn is_single(&self) -> bool {
        self.topics.len() == 1
    }

    /// Sets the position of `topic`.
    pub fn set(&mut self, topic: &Topic, position: Position) {
        if let Some(entry) = self.find(topic) {
            entry.position = position;
        }
    }

    /// Judges `event` and, unless it is a duplicate, moves the stream's
    /// position to it.
    ///
    /// A stream sees every event of its topics in order, so anything but
    /// the event that follows the stream's position in the same history is
    /// either old (a duplicate) or a sign that events went missing: an event
    /// whose predecessor is not the stream's position (history trimmed while
    /// the broker was unreachable, or the stream saw events a failed-over
    /// Redis lost) or a new epoch (history lost and recreated). Only a topic
    /// that had no history when the stream started may move to a new
    /// epoch's first event.
    pub fn accept(&mut self, event: &SharedEvent) -> Verdict {
        let Some(entry) = self.find(&event.topic) else {
            return Verdict::Duplicate;
        };
        let current = entry.position;
        let next = event.position;
        let verdict = if next.epoch == current.epoch {
            if next.seq <= current.seq {
                return Verdict::Duplicate;
            }
            if event.prev == current.seq {
                Verdict::Deliver
            } else {
                Verdict::Gap
            }
        } else if current.epoch == 0 && event.prev == 0 {
            Verdict::Deliver
        } else {
            Verdict::Gap
        };
        entry.position = next;
        verdict
    }

    /// Moves `topic` to `position` after its history was lost. Returns
    /// whether the stream must resync it: false when the stream already is
    /// at or past that point of the new history.
    pub fn reset(&mut self, topic: &Topic, position: Position) -> bool {
        let Some(entry) = self.find(topic) else {
            return false;
        };
        let current = entry.position;
        if current.epoch == position.epoch && current.seq >= position.seq {
            return false;
        }
        entry.position = position;
        true
    }

    /// The stream's current resume point, as an `id:` value.
    pub fn id(&self) -> String {
        cursor::encode(self.topics.iter().map(|t| (t.tag, t.position)))
    }

    fn find(&mut self, topic: &Topic) -> Option<&mut TopicPosition> {
        let tag = topic.tag();
        self.topics
            .iter_mut()
            .find(|t| t.tag == tag && t.topic == *topic)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_broker::Cursor;

    use super::*;

    fn event(topic: &Topic, epoch: u32, seq: u64) -> Arc<SharedEvent> {
        Arc::new(SharedEvent::encode(
            topic.clone(),
            Position::new(epoch, seq),
            None,
            "x",
            0,
        ))
    }

    #[test]
    fn duplicates_are_skipped_and_new_events_advance() {
        let t = Topic::new("t").unwrap();
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        positions.set(&t, Position::new(5, 3));
        assert_eq!(positions.accept(&event(&t, 5, 3)), Verdict::Duplicate);
        assert_eq!(positions.accept(&event(&t, 5, 4)), Verdict::Deliver);
        assert_eq!(positions.accept(&event(&t, 5, 4)), Verdict::Duplicate);
        assert_eq!(positions.accept(&event(&t, 5, 7)), Verdict::Gap);
        assert_eq!(positions.accept(&event(&t, 6, 1)), Verdict::Gap);
    }

    #[test]
    fn a_skip_in_sequence_numbers_is_followed_unless_the_stream_is_inside_it() {
        let t = Topic::new("t").unwrap();
        let skipped = |seq| {
            Arc::new(SharedEvent::encode(t.clone(), Position::new(5, seq), None, "x", 0).after(8))
        };
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        positions.set(&t, Position::new(5, 8));
        assert_eq!(positions.accept(&skipped(1 << 32)), Verdict::Deliver);
        // This stream saw 9 and 10 from a primary that then lost them.
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        positions.set(&t, Position::new(5, 10));
        assert_eq!(positions.accept(&skipped(1 << 32)), Verdict::Gap);
    }

    #[test]
    fn a_topic_without_history_accepts_the_first_event_of_an_epoch() {
        let t = Topic::new("t").unwrap();
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        assert_eq!(positions.accept(&event(&t, 9, 1)), Verdict::Deliver);
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        assert_eq!(positions.accept(&event(&t, 9, 2)), Verdict::Gap);
    }

    #[test]
    fn a_reset_moves_the_stream_unless_it_is_already_there() {
        let t = Topic::new("t").unwrap();
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        positions.set(&t, Position::new(5, 9));
        assert!(positions.reset(&t, Position::new(8, 0)));
        assert!(!positions.reset(&t, Position::new(8, 0)));
        assert_eq!(positions.accept(&event(&t, 8, 1)), Verdict::Deliver);
    }

    #[test]
    fn composite_id_resumes_every_topic() {
        let (a, b) = (Topic::new("a").unwrap(), Topic::new("b").unwrap());
        let mut positions = StreamPositions::new(&[a.clone(), b.clone()]);
        positions.set(&a, Position::new(1, 10));
        positions.accept(&event(&b, 2, 1));
        let cursor = Cursor::decode(&positions.id()).unwrap();
        assert_eq!(cursor.position(&a), Some(Position::new(1, 10)));
        assert_eq!(cursor.position(&b), Some(Position::new(2, 1)));
    }

    #[test]
    fn single_topic_id_equals_the_event_cursor() {
        let t = Topic::new("orders.42").unwrap();
        let mut positions = StreamPositions::new(std::slice::from_ref(&t));
        positions.set(&t, Position::new(77, 4));
        let e = event(&t, 77, 5);
        positions.accept(&e);
        assert_eq!(cursor::encode_one(&t, e.position), positions.id());
    }
}
