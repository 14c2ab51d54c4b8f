//! herald's own events on a stream, as opposed to the events publishers
//! send: their names, in one place for the server, the test kit and the
//! tools that read streams.
//!
//! Publishers may not use any name under [`RESERVED_PREFIX`], so a client
//! can trust that an event named like this came from herald itself.

/// Every control event name starts with this; publishers' event names may
/// not.
pub const RESERVED_PREFIX: &str = "herald.";

/// Tells the client that some of its topics' history is gone: reload those
/// topics' state from the application. The data is
/// `{"topics": [...], "reason": "history_truncated"}`.
pub const RESYNC: &str = "herald.resync";

/// The `reason` a [`RESYNC`] event gives.
pub const RESYNC_REASON: &str = "history_truncated";
