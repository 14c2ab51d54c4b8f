//! Deciding what a reconnecting client gets: a replay or a resync.
//!
//! Both brokers describe a topic's retained history as a [`HistoryWindow`]
//! and let [`plan`] decide, so the rules live in one place.

use crate::Position;

/// The retained part of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryWindow {
    /// The history's epoch; 0 when the topic has no history.
    pub epoch: u32,
    /// Sequence number of the oldest retained event (1 while nothing was
    /// trimmed); 0 when empty.
    pub first: u64,
    /// Sequence number of the newest event; 0 when empty.
    pub last: u64,
}

impl HistoryWindow {
    /// A topic without history.
    pub const NONE: HistoryWindow = HistoryWindow {
        epoch: 0,
        first: 0,
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

/// Decides between replay and resync.
///
/// - A client that saw the topic empty (`epoch` 0) gets the whole current
///   history if it still starts at event 1, since every event of it is
///   newer than what the client saw.
/// - A client on the current epoch gets the events after its position, if
///   the next one it needs is still retained.
/// - Anything else (another epoch, a lost history, a position past the end)
///   may hide a gap, so it is a resync.
pub fn plan(from: Position, window: HistoryWindow) -> Plan {
    if from.epoch == 0 {
        return match window.epoch {
            0 => Plan::Replay { after: 0 },
            _ if window.first <= 1 => Plan::Replay { after: 0 },
            _ => Plan::Resync,
        };
    }
    if from.epoch != window.epoch || from.seq > window.last {
        return Plan::Resync;
    }
    if from.seq + 1 >= window.first {
        Plan::Replay { after: from.seq }
    } else {
        Plan::Resync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: HistoryWindow = HistoryWindow {
        epoch: 9,
        first: 5,
        last: 10,
    };

    #[test]
    fn replays_from_inside_the_window() {
        assert_eq!(plan(Position::new(9, 4), W), Plan::Replay { after: 4 });
        assert_eq!(plan(Position::new(9, 7), W), Plan::Replay { after: 7 });
        assert_eq!(plan(Position::new(9, 10), W), Plan::Replay { after: 10 });
    }

    #[test]
    fn resyncs_when_events_were_trimmed() {
        assert_eq!(plan(Position::new(9, 3), W), Plan::Resync);
    }

    #[test]
    fn resyncs_on_another_epoch_a_lost_history_or_a_future_position() {
        assert_eq!(plan(Position::new(8, 7), W), Plan::Resync);
        assert_eq!(plan(Position::new(9, 7), HistoryWindow::NONE), Plan::Resync);
        assert_eq!(plan(Position::new(9, 11), W), Plan::Resync);
    }

    #[test]
    fn empty_position_replays_a_complete_history_only() {
        let complete = HistoryWindow {
            epoch: 3,
            first: 1,
            last: 4,
        };
        assert_eq!(plan(Position::EMPTY, complete), Plan::Replay { after: 0 });
        assert_eq!(
            plan(Position::EMPTY, HistoryWindow::NONE),
            Plan::Replay { after: 0 }
        );
        assert_eq!(plan(Position::EMPTY, W), Plan::Resync);
    }
}
