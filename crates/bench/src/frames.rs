//! SSE event scanning and the bench payload, without allocating.
//!
//! The load generator reads hundreds of thousands of events per second on
//! one thread, so it does not run a full `EventSource` parser (that is
//! `herald_sse::Parser`, used by the tests to cross-check this one). It finds
//! event ends (`\n\n`) with memchr, takes the first `data:` line of each
//! event as a slice of the read buffer, and parses the sequence number and
//! publish timestamp out of it in place. All three servers under test end
//! lines with LF, as herald's contract and Nchan do; a CR before the LF of a
//! data line is tolerated.

use std::io::Write;

use memchr::{memchr, memmem};

/// Calls `on_event` with the first data line of every complete event in
/// `buf` (`None` for a block without data, e.g. comments only) and returns
/// how many bytes were consumed: everything up to and including the last
/// blank line. The rest is a partial event to keep for the next read.
pub fn scan_events(buf: &[u8], mut on_event: impl FnMut(Option<&[u8]>)) -> usize {
    let mut consumed = 0;
    for blank in memmem::find_iter(buf, b"\n\n") {
        // Matches do not overlap, so `blank >= consumed`; in "\n\n\n" the
        // third newline starts the next block as an empty line.
        let block = &buf[consumed..=blank];
        on_event(first_data_line(block));
        consumed = blank + 2;
    }
    consumed
}

/// The value of the first `data:` field in `block` (lines ending in LF).
pub fn first_data_line(block: &[u8]) -> Option<&[u8]> {
    let mut rest = block;
    while !rest.is_empty() {
        let line_end = memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            return Some(value.strip_suffix(b"\r").unwrap_or(value));
        }
        rest = rest.get(line_end + 1..).unwrap_or_default();
    }
    None
}

/// The sequence number and publish time the bench embeds in each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Per-topic sequence number, from 0.
    pub seq: u64,
    /// Nanoseconds since the bench's clock started, taken just before the
    /// publish request was written.
    pub sent_ns: u64,
}

const SEQ_PREFIX: &[u8] = b"{\"s\":";
const TIME_PREFIX: &[u8] = b",\"t\":";

/// Writes the payload `{"s":SEQ,"t":NS,"p":"xxx…"}`, padded with `x` to
/// `size` bytes when it is shorter. The same text is the JSON `data` of a
/// herald publish and the raw body of an Nchan publish, so every server
/// puts the same `data:` line on the wire.
pub fn write_payload(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    let start = out.len();
    write!(
        out,
        "{{\"s\":{},\"t\":{},\"p\":\"",
        stamp.seq, stamp.sent_ns
    )
    .expect("writing to a Vec cannot fail");
    let used = out.len() - start + 2;
    out.resize(out.len() + size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\"}");
}

/// Reads the stamp from a data line written by [`write_payload`].
pub fn parse_stamp(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(SEQ_PREFIX)?;
    let (seq, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(TIME_PREFIX)?;
    let (sent_ns, _) = parse_u64(rest)?;
    Some(Stamp { seq, sent_ns })
}

fn parse_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = bytes[..digits]
        .iter()
        .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sse::{Item, Parser};

    fn payload(seq: u64, t: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_payload(&mut out, Stamp { seq, sent_ns: t }, size);
        out
    }

    fn stream() -> Vec<u8> {
        let mut s = b"retry: 2000\n: herald stream open\n".to_vec();
        for seq in 0..5u64 {
            s.extend_from_slice(format!("id: c{seq}\n").as_bytes());
            if seq == 2 {
                s.extend_from_slice(b": hb\nevent: tick\n");
            }
            s.extend_from_slice(b"data: ");
            s.extend_from_slice(&payload(seq, 1000 + seq, 64));
            s.extend_from_slice(b"\n\n");
        }
        s.extend_from_slice(b": hb\n\n\n");
        s
    }

    /// Runs the scanner the way the subscriber does: append a read, scan,
    /// keep the unconsumed tail.
    fn scan_in_pieces(raw: &[u8], cuts: &[usize]) -> Vec<Option<Stamp>> {
        let mut found = Vec::new();
        let mut buf = Vec::new();
        let mut start = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(raw.len());
        for &cut in &bounds {
            buf.extend_from_slice(&raw[start..cut]);
            start = cut;
            let used = scan_events(&buf, |data| {
                found.push(data.map(|d| parse_stamp(d).unwrap()))
            });
            buf.drain(..used);
        }
        found
    }

    #[test]
    fn payload_has_requested_size_and_round_trips() {
        let p = payload(123, 456_789, 100);
        assert_eq!(p.len(), 100);
        assert!(p.starts_with(b"{\"s\":123,\"t\":456789,\"p\":\"xx"));
        assert!(p.ends_with(b"x\"}"));
        serde_json::from_slice::<serde_json::Value>(&p).expect("valid JSON");
        assert_eq!(
            parse_stamp(&p),
            Some(Stamp {
                seq: 123,
                sent_ns: 456_789
            })
        );
        // Shorter than the stamp itself: no padding, still valid.
        assert_eq!(payload(1, 2, 3), b"{\"s\":1,\"t\":2,\"p\":\"\"}");
    }

    #[test]
    fn rejects_foreign_payloads() {
        assert_eq!(parse_stamp(b"hello"), None);
        assert_eq!(parse_stamp(b"{\"s\":,\"t\":1}"), None);
        assert_eq!(parse_stamp(b"{\"s\":1}"), None);
    }

    #[test]
    fn scans_events_split_at_every_byte_boundary() {
        let raw = stream();
        let whole = scan_in_pieces(&raw, &[]);
        let stamps: Vec<_> = whole.iter().flatten().map(|s| s.seq).collect();
        assert_eq!(stamps, vec![0, 1, 2, 3, 4]);
        assert_eq!(whole.last(), Some(&None), "the heartbeat block has no data");
        for cut in 0..=raw.len() {
            assert_eq!(scan_in_pieces(&raw, &[cut]), whole, "cut at {cut}");
        }
        let every: Vec<usize> = (1..raw.len()).collect();
        assert_eq!(scan_in_pieces(&raw, &every), whole);
    }

    #[test]
    fn agrees_with_the_reference_parser() {
        let raw = stream();
        let mut items = Vec::new();
        Parser::new().feed(&raw, &mut items);
        let reference: Vec<Vec<u8>> = items
            .into_iter()
            .filter_map(|item| match item {
                Item::Event(e) => Some(e.data.into_bytes()),
                _ => None,
            })
            .collect();
        let mut ours = Vec::new();
        scan_events(&raw, |data| ours.extend(data.map(<[u8]>::to_vec)));
        assert_eq!(ours, reference);
    }

    #[test]
    fn tolerates_crlf_before_lf_on_data_lines() {
        assert_eq!(first_data_line(b"id: 1\ndata:x\r\n"), Some(&b"x"[..]));
        assert_eq!(first_data_line(b": only a comment\n"), None);
    }
}
