//! Errors of the SSE encoder.

/// A field value that SSE cannot carry on one line.
///
/// Refusing these is what makes field injection impossible: a value with a
/// line break would end the field early and start another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The value holds CR, LF or NUL (NUL makes clients drop an `id:` field).
    #[error("{field} must not contain CR, LF or NUL")]
    LineBreak {
        /// `"id"` or `"event"`.
        field: &'static str,
    },
}
