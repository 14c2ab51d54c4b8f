//! The Server-Sent Events wire format, and nothing else: no HTTP, no runtime.
//!
//! [`encode`] turns one event into an immutable [`EventFrame`] that every
//! subscriber shares; [`Parser`] reads a stream back incrementally, following
//! the WHATWG `EventSource` parsing rules, for tests and the load generator.
#![warn(missing_docs)]

pub mod control;
mod encode;
mod error;
mod parse;

pub use encode::{comment, encode, id_line, retry, EventFrame};
pub use error::FieldError;
pub use parse::{Event, Item, Parser};
