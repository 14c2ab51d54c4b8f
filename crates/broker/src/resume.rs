//! Deciding what a reconnecting client gets: a replay or a resync.
//!
//! Both brokers describe a topic's retained history as a [`HistoryWindow`]
//! and let [`plan`] decide, so the rules live in one place.
//!
//! **Sequence numbers may skip.** Each event records the sequence number of
//! the event before it (`prev`). Usually that is `seq - 1`; after the Redis
//! primary holding a topic changed (a failover, a slot moved to another
//! shard, a restart), the next event skips far ahead instead, so that no
//! number the old primary may have handed out without the new one knowing
//! is ever given to a different event. A skip is not a gap: the event after
//! it still names its real predecessor. A client whose position lies inside
//! a skip saw events that did not survive, and is told to resync.

use crate::Position;

/// The retained part of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryWindow {
    /// The history's epoch; 0 when the topic has no history.
    pub epoch: u32,
    /// Sequence number of the oldest retained event; 0 when empty.
    pub first: u64,
    /// The `prev` of the oldest retained event: 0 while nothing was trimmed.
    pub first_prev: u64,
    /// Sequence number of the newest event; 0 when empty.
    pub last: u64,
}

impl HistoryWindow {
    /// A topic without history.
    pub const NONE: HistoryWindow = HistoryWindow {
        epoch: 0,
        first: 0,
        first_prev: 0,
        last: 0,
    };

    /// The position after the newest event: where a stream that starts now
    /// stands.
    pub fn head(&self) -> Position {
        Position::new(self.epoch, self.last)
    }
}

/// What to do for a client whose last position on a topic was `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Send every retained event with a sequence number above `after`
    /// (possibly none).
    Replay {
        /// The last sequence number the client has.
        after: u64,
    },
    /// The client may have missed events that are gone: tell it to reload.
    Resync,
}

/// Decides between replay and resync. `next_prev` is the `prev` of the
/// oldest retained event after `from` (`None` when there is none).
///
/// - A client that saw the topic empty (`epoch` 0) gets the whole current
///   history if nothing of it was trimmed, since every event of it is newer
///   than what the client saw.
/// - A client on the current epoch gets the events after its position if
///   the first of them follows exactly that position.
/// - Anything else (another epoch, a lost history, a position past the end
///   or inside a skip, trimmed events) may hide a gap, so it is a resync.
pub fn plan(from: Position, window: HistoryWindow, next_prev: Option<u64>) -> Plan {
    if from.epoch == 0 {
        return match window.epoch {
            0 => Plan::Replay { after: 0 },
            _ if window.first_prev == 0 => Plan::Replay { after: 0 },
            _ => Plan::Resync,
        };
    }
    if from.epoch != window.epoch || from.seq > window.last {
        return Plan::Resync;
    }
    match next_prev {
        None if from.seq == window.last => Plan::Replay { after: from.seq },
        Some(prev) if prev == from.seq => Plan::Replay { after: from.seq },
        _ => Plan::Resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events 5..=10 retained, 1..=4 trimmed.
    const W: HistoryWindow = HistoryWindow {
        epoch: 9,
        first: 5,
        first_prev: 4,
        last: 10,
    };

    #[test]
    fn replays_from_inside_the_window() {
        assert_eq!(
            plan(Position::new(9, 4), W, Some(4)),
            Plan::Replay { after: 4 }
        );
        assert_eq!(
            plan(Position::new(9, 7), W, Some(7)),
            Plan::Replay { after: 7 }
        );
        assert_eq!(
            plan(Position::new(9, 10), W, None),
            Plan::Replay { after: 10 }
        );
    }

    #[test]
    fn resyncs_when_events_were_trimmed() {
        assert_eq!(plan(Position::new(9, 3), W, Some(4)), Plan::Resync);
    }

    #[test]
    fn resyncs_on_another_epoch_a_lost_history_or_a_future_position() {
        assert_eq!(plan(Position::new(8, 7), W, Some(7)), Plan::Resync);
        assert_eq!(
            plan(Position::new(9, 7), HistoryWindow::NONE, None),
            Plan::Resync
        );
        assert_eq!(plan(Position::new(9, 11), W, None), Plan::Resync);
    }

    #[test]
    fn a_skip_is_crossed_but_a_position_inside_it_resyncs() {
        // Events 1..=8, then a skip: the next event is 100, following 8.
        let skipped = HistoryWindow {
            epoch: 3,
            first: 1,
            first_prev: 0,
            last: 100,
        };
        assert_eq!(
            plan(Position::new(3, 8), skipped, Some(8)),
            Plan::Replay { after: 8 }
        );
        // The client saw 9 and 10, which the new primary never had.
        assert_eq!(plan(Position::new(3, 10), skipped, Some(8)), Plan::Resync);
    }

    #[test]
    fn empty_position_replays_a_complete_history_only() {
        let complete = HistoryWindow {
            epoch: 3,
            first: 1,
            first_prev: 0,
            last: 4,
        };
        assert_eq!(
            plan(Position::EMPTY, complete, Some(0)),
            Plan::Replay { after: 0 }
        );
        assert_eq!(
            plan(Position::EMPTY, HistoryWindow::NONE, None),
            Plan::Replay { after: 0 }
        );
        assert_eq!(plan(Position::EMPTY, W, Some(4)), Plan::Resync);
    }
}
