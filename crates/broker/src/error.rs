//! The broker's errors: what a caller can act on.

use std::time::Duration;

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than 200 bytes.
    #[error("topic name is {len} bytes, the limit is 200")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `A–Z a–z 0–9 _ - . : / @ ~`.
    #[error("topic name contains {0:?}; allowed are A-Z a-z 0-9 _ - . : / @ ~")]
    BadChar(char),
}

/// Why an event type name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventNameError {
    /// Empty or longer than 64 bytes.
    #[error("event name is {len} bytes; it must be 1 to 64")]
    Length {
        /// Its length in bytes.
        len: usize,
    },
    /// Holds a control character (U+0000–U+001F or U+007F).
    #[error("event name contains a control character")]
    ControlChar,
    /// Starts with `herald.`, which herald keeps for its own events.
    #[error("event names starting with \"herald.\" are reserved")]
    Reserved,
}

/// Why a cursor string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not a cursor herald wrote (bad encoding, version or length).
    #[error("not a herald cursor")]
    Malformed,
}

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The shared broker (Redis) cannot be reached; nothing was applied.
    /// Try again after `retry_after`.
    #[error("broker unavailable")]
    Unavailable {
        /// A hint for clients' `Retry-After`.
        retry_after: Duration,
        /// What failed underneath.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The broker answered something herald did not expect.
    #[error("broker protocol error: {0}")]
    Protocol(String),
}

impl BrokerError {
    /// An [`BrokerError::Unavailable`] with its cause.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable {
            retry_after: Duration::from_secs(1),
            source: Some(source.into()),
        }
    }
}

/// An error and its causes on one line, for logs and for errors that wrap
/// another's message.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
