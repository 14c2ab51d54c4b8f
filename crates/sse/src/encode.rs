//! Encoding events into SSE frames.
//!
//! A frame is built once per event and then shared, by reference count, by
//! every subscriber that receives it. The `id:` line is kept at the front and
//! its length recorded, so a stream that needs its own id (a multi-topic
//! stream's composite cursor) can send its id line followed by the shared
//! body without copying or re-encoding the data.

use bytes::{BufMut, Bytes, BytesMut};

use crate::FieldError;

/// One encoded event: an optional `id:` line followed by the body
/// (`event:` and `data:` lines and the blank line that dispatches it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFrame {
    bytes: Bytes,
    body_start: usize,
}

impl EventFrame {
    /// The whole frame, id line included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The frame without its id line; a cheap slice of the same buffer.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(self.body_start..)
    }

    /// Length in bytes of the whole frame.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the frame is empty (only the default frame is: an encoded
    /// event holds at least its `data:` line).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes one event.
///
/// `event` of `None` or `"message"` is omitted (clients default to
/// `message`). `data` may hold any text: every `\r\n`, `\r` and `\n` starts a
/// new `data:` line, so spec-compliant clients rebuild it with `\n` line
/// breaks and every other character, NUL included, unchanged.
///
/// # Errors
///
/// [`FieldError::LineBreak`] when `id` or `event` contains CR, LF or NUL.
pub fn encode(id: Option<&str>, event: Option<&str>, data: &str) -> Result<EventFrame, FieldError> {
    if let Some(id) = id {
        check_field("id", id)?;
    }
    if let Some(event) = event {
        check_field("event", event)?;
    }
    let event = event.filter(|e| *e != "message");
    let id_len = id.map_or(0, |id| "id: ".len() + id.len() + 1);
    let event_len = event.map_or(0, |e| "event: ".len() + e.len() + 1);
    // Every line costs "data: " and "\n" on top of its bytes; count lines
    // once so the buffer is allocated exactly once.
    let lines = 1 + count_line_breaks(data);
    let mut buf = BytesMut::with_capacity(id_len + event_len + data.len() + lines * 7 + 1);
    if let Some(id) = id {
        put_field(&mut buf, "id", id);
    }
    let body_start = buf.len();
    if let Some(event) = event {
        put_field(&mut buf, "event", event);
    }
    put_data(&mut buf, data);
    buf.put_u8(b'\n');
    Ok(EventFrame {
        bytes: buf.freeze(),
        body_start,
    })
}

/// An `id:` line on its own, for streams that prefix a shared body with
/// their own cursor.
///
/// # Errors
///
/// [`FieldError::LineBreak`] when `id` contains CR, LF or NUL.
pub fn id_line(id: &str) -> Result<Bytes, FieldError> {
    check_field("id", id)?;
    let mut buf = BytesMut::with_capacity(id.len() + 5);
    put_field(&mut buf, "id", id);
    Ok(buf.freeze())
}

/// A `retry:` line telling clients how long to wait before reconnecting.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n"))
}

/// A comment line. Line breaks in `text` become spaces, since a comment
/// cannot span lines.
pub fn comment(text: &str) -> Bytes {
    let text: String = text
        .chars()
        .map(|c| if matches!(c, '\r' | '\n') { ' ' } else { c })
        .collect();
    Bytes::from(format!(": {text}\n"))
}

fn check_field(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err(FieldError::LineBreak { field });
    }
    Ok(())
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

fn count_line_breaks(data: &str) -> usize {
    let bytes = data.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                count += 1;
                i += 1;
            }
            b'\r' | b'\n' => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
}

fn put_data(buf: &mut BytesMut, data: &str) {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\r' || b == b'\n' {
            put_field_bytes(buf, &bytes[start..i]);
            if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    put_field_bytes(buf, &bytes[start..]);
}

fn put_field_bytes(buf: &mut BytesMut, line: &[u8]) {
    buf.put_slice(b"data: ");
    buf.put_slice(line);
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: &EventFrame) -> &str {
        std::str::from_utf8(frame.bytes()).unwrap()
    }

    #[test]
    fn message_type_is_omitted() {
        let frame = encode(Some("c1"), Some("message"), "hi").unwrap();
        assert_eq!(text(&frame), "id: c1\ndata: hi\n\n");
    }

    #[test]
    fn every_line_break_form_starts_a_data_line() {
        let frame = encode(None, Some("t"), "a\nb\r\nc\rd\r\n").unwrap();
        assert_eq!(
            text(&frame),
            "event: t\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
        );
    }

    #[test]
    fn empty_data_still_dispatches() {
        let frame = encode(None, None, "").unwrap();
        assert_eq!(text(&frame), "data: \n\n");
    }

    #[test]
    fn body_is_the_frame_without_its_id_line() {
        let frame = encode(Some("xyz"), Some("e"), "d").unwrap();
        assert_eq!(&frame.body()[..], b"event: e\ndata: d\n\n");
    }

    #[test]
    fn line_breaks_in_fields_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert!(encode(Some(bad), None, "x").is_err());
            assert!(encode(None, Some(bad), "x").is_err());
            assert!(id_line(bad).is_err());
        }
    }

    #[test]
    fn allocation_is_exact_for_mixed_line_breaks() {
        let data = "x\r\n\r\ny\rz\n";
        let frame = encode(Some("id"), Some("ev"), data).unwrap();
        assert_eq!(frame.len(), text(&frame).len());
    }

    #[test]
    fn comments_stay_on_one_line() {
        assert_eq!(&comment("a\nb")[..], b": a b\n");
    }
}
