//! Topic names: validated once at the edge, then shared by reference count.

use std::{fmt, sync::Arc};

use crate::TopicError;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// A valid topic name: 1–200 bytes of `A–Z a–z 0–9 _ - . : / @ ~`.
///
/// Cloning is a reference-count increment, so every event and subscription
/// can hold its topic without copying the name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`TopicError`] saying what is wrong with the name.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong { len: name.len() });
        }
        if let Some(c) = name.chars().find(|&c| !is_topic_char(c)) {
            return Err(TopicError::BadChar(c));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable 32-bit hash of the name (FNV-1a), written into cursors so a
    /// cursor can tell which of a stream's topics each position belongs to.
    /// It must never change: cursors outlive herald versions.
    pub fn tag(&self) -> u32 {
        self.0.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@' | '~')
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Maps keyed by topic can be searched with a `&str` (a channel name read
// off the wire) without allocating; `Arc<str>` hashes as its `str`.
impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(Topic::new("orders.42:user/alice@example~x_y-z").is_ok());
        assert!(Topic::new(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert_eq!(
            Topic::new(&"a".repeat(201)),
            Err(TopicError::TooLong { len: 201 })
        );
        for bad in ["a b", "a\nb", "é", "a*", "a?b", "a%2F"] {
            assert!(Topic::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_is_fnv1a() {
        // Reference values of 32-bit FNV-1a; cursors depend on them.
        assert_eq!(Topic::new("a").unwrap().tag(), 0xe40c_292c);
        assert_eq!(Topic::new("foobar").unwrap().tag(), 0xbf9c_f968);
    }
}
