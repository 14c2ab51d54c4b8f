//! An event-stream response body read into one reusable buffer.
//!
//! Reads land after the bytes kept from the previous read; chunk framing is
//! stripped in place; complete events are scanned and handed out as slices;
//! the partial event at the end moves to the front. The buffer is allocated
//! on the first read and grows only when a single event does not fit.

use crate::{chunked::ChunkError, chunked::ChunkedDecoder, frames::scan_events, http::BodyFraming};

/// The largest single event the bench accepts.
const MAX_BUFFER: usize = 1 << 20;

/// Why a body can no longer be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Bad chunk framing.
    Chunk(ChunkError),
    /// One event larger than the largest buffer.
    EventTooLarge,
}

/// The read side of one SSE response.
#[derive(Debug)]
pub struct EventBody {
    buf: Vec<u8>,
    /// Decoded bytes not yet scanned into events.
    kept: usize,
    chunked: Option<ChunkedDecoder>,
    initial: usize,
}

impl EventBody {
    /// A body framed as `framing`, whose buffer starts at `initial` bytes.
    pub fn new(framing: BodyFraming, initial: usize) -> Self {
        Self {
            buf: Vec::new(),
            kept: 0,
            chunked: (framing == BodyFraming::Chunked).then(ChunkedDecoder::new),
            initial: initial.max(64),
        }
    }

    /// Room for the next read.
    ///
    /// # Errors
    /// [`BodyError::EventTooLarge`] when a partial event fills the largest
    /// buffer.
    pub fn spare(&mut self) -> Result<&mut [u8], BodyError> {
        if self.kept == self.buf.len() {
            let len = if self.buf.is_empty() {
                self.initial
            } else {
                self.buf.len() * 2
            };
            if len > MAX_BUFFER {
                return Err(BodyError::EventTooLarge);
            }
            self.buf.resize(len, 0);
        }
        Ok(&mut self.buf[self.kept..])
    }

    /// Takes `n` bytes just read into [`Self::spare`], calling `on_event`
    /// for each complete event. Returns whether the body has ended (the
    /// last chunk arrived).
    ///
    /// # Errors
    /// [`BodyError::Chunk`] on bad chunk framing.
    pub fn filled(
        &mut self,
        n: usize,
        on_event: impl FnMut(Option<&[u8]>),
    ) -> Result<bool, BodyError> {
        let start = self.kept;
        let end = start + n;
        let (decoded_end, done) = match &mut self.chunked {
            Some(dec) => {
                let d = dec
                    .decode(&mut self.buf, start, start, end)
                    .map_err(BodyError::Chunk)?;
                (d.out_end, dec.is_done())
            }
            None => (end, false),
        };
        let used = scan_events(&self.buf[..decoded_end], on_event);
        self.buf.copy_within(used..decoded_end, 0);
        self.kept = decoded_end - used;
        Ok(done)
    }

    /// Feeds bytes that arrived with the response head.
    ///
    /// # Errors
    /// As [`Self::filled`].
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(Option<&[u8]>),
    ) -> Result<bool, BodyError> {
        let mut done = false;
        while !bytes.is_empty() {
            let spare = self.spare()?;
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            done |= self.filled(n, &mut on_event)?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::parse_stamp;

    fn chunked_stream(events: u64) -> (Vec<u8>, Vec<u64>) {
        let mut raw = Vec::new();
        let mut seqs = Vec::new();
        let pre = b"retry: 2000\n: herald stream open\n";
        raw.extend_from_slice(format!("{:x}\r\n", pre.len()).as_bytes());
        raw.extend_from_slice(pre);
        raw.extend_from_slice(b"\r\n");
        for seq in 0..events {
            let ev = format!("id: {seq}\ndata: {{\"s\":{seq},\"t\":5,\"p\":\"xxxx\"}}\n\n");
            raw.extend_from_slice(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
            seqs.push(seq);
        }
        (raw, seqs)
    }

    fn read_all(raw: &[u8], cuts: &[usize], initial: usize) -> Vec<u64> {
        let mut body = EventBody::new(BodyFraming::Chunked, initial);
        let mut seen = Vec::new();
        let mut start = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(raw.len());
        for &cut in &bounds {
            body.feed(&raw[start..cut], |d| {
                seen.extend(d.and_then(parse_stamp).map(|s| s.seq));
            })
            .unwrap();
            start = cut;
        }
        seen
    }

    #[test]
    fn chunked_events_split_at_every_byte_boundary() {
        let (raw, seqs) = chunked_stream(6);
        for cut in 0..=raw.len() {
            assert_eq!(read_all(&raw, &[cut], 4096), seqs, "cut at {cut}");
        }
    }

    #[test]
    fn small_buffer_grows_for_large_events() {
        let (raw, seqs) = chunked_stream(20);
        let cuts: Vec<usize> = (1..raw.len()).step_by(7).collect();
        assert_eq!(read_all(&raw, &cuts, 16), seqs);
    }

    #[test]
    fn plain_body_needs_no_decoding() {
        let raw = b"data: {\"s\":0,\"t\":1}\n\ndata: {\"s\":1,\"t\":1}\n\n";
        let mut body = EventBody::new(BodyFraming::UntilClose, 8);
        let mut seen = Vec::new();
        body.feed(raw, |d| seen.extend(d.and_then(parse_stamp).map(|s| s.seq)))
            .unwrap();
        assert_eq!(seen, vec![0, 1]);
    }
}
