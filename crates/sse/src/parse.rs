//! An incremental SSE parser following the WHATWG `EventSource` rules.
//!
//! It exists so tests and the load generator read streams the way browsers
//! do: lines may end in CR, LF or CRLF (even split across reads), a leading
//! BOM is skipped, an `id` holding NUL is ignored, and a block without data
//! dispatches nothing but still updates the last event id.

/// What the parser found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Event),
    /// A comment line (`: text`), such as a heartbeat.
    Comment(String),
    /// A valid `retry:` field, in milliseconds.
    Retry(u64),
}

/// A dispatched event, as an `EventSource` would report it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The last event id at dispatch time (empty if none was ever set).
    pub id: String,
    /// The event type, `message` unless an `event:` field said otherwise.
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// Incremental parser state; feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    started: bool,
    skip_lf: bool,
    data: String,
    has_data: bool,
    event: String,
    last_id: String,
    dispatched_id: String,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, appending what it completes to `out`. A line cut at
    /// the end of `chunk` waits for the next call.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Item>) {
        if !self.started {
            // The BOM may itself arrive split; wait until three bytes or a
            // mismatch decide it.
            let wanted = 3 - self.line.len().min(3);
            let take = wanted.min(chunk.len());
            self.line.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return;
            }
            self.started = true;
            let pending = std::mem::take(&mut self.line);
            let pending = pending.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&pending);
            self.scan(pending, out);
        }
        self.scan(chunk, out);
    }

    /// The last event id as of the last completed block, which is what a
    /// reconnecting browser sends: an `id:` whose block was cut off by a
    /// closed connection does not count.
    pub fn last_event_id(&self) -> &str {
        &self.dispatched_id
    }

    fn scan(&mut self, bytes: &[u8], out: &mut Vec<Item>) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    start = i + 1;
                    continue;
                }
            }
            if b == b'\r' || b == b'\n' {
                self.line.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
                self.line = line;
                self.line.clear();
                self.skip_lf = b == b'\r';
                start = i + 1;
            }
        }
        self.line.extend_from_slice(&bytes[start..]);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Item>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(text) = line.strip_prefix(b":") {
            let text = text.strip_prefix(b" ").unwrap_or(text);
            out.push(Item::Comment(String::from_utf8_lossy(text).into_owned()));
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.last_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse() {
                    out.push(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        self.dispatched_id.clone_from(&self.last_id);
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(Item::Event(Event {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Item> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        out
    }

    fn event(id: &str, event: &str, data: &str) -> Item {
        Item::Event(Event {
            id: id.into(),
            event: event.into(),
            data: data.into(),
        })
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_break() {
        let items = parse_all(&[b"data: a\r", b"\ndata: b\r", b"\r\n"]);
        assert_eq!(items, vec![event("", "message", "a\nb")]);
    }

    #[test]
    fn bom_is_skipped_even_when_split() {
        let items = parse_all(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(items, vec![event("", "message", "x")]);
    }

    #[test]
    fn id_persists_and_nul_ids_are_ignored() {
        let items = parse_all(&[b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid\ndata: c\n\n"]);
        assert_eq!(
            items,
            vec![
                event("1", "message", "a"),
                event("1", "message", "b"),
                event("", "message", "c")
            ]
        );
    }

    #[test]
    fn blocks_without_data_dispatch_nothing_but_set_the_id() {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(b"id: 7\nevent: x\n\ndata: y\n\n", &mut out);
        assert_eq!(out, vec![event("7", "message", "y")]);
        assert_eq!(parser.last_event_id(), "7");
    }

    #[test]
    fn an_id_of_an_unfinished_block_is_not_the_last_event_id() {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n", &mut out);
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn comments_and_retry_are_reported() {
        let items = parse_all(&[b"retry: 2000\n: hb\nretry: x1\n"]);
        assert_eq!(items, vec![Item::Retry(2000), Item::Comment("hb".into())]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        let items = parse_all(&[b"data:  two\ndata:none\n\n"]);
        assert_eq!(items, vec![event("", "message", " two\nnone")]);
    }
}
