//! Incremental, in-place decoding of HTTP/1.1 chunked transfer encoding.
//!
//! actix-web, nginx and Node all send an SSE body chunked. The decoder moves
//! chunk payload bytes toward the front of the same buffer they were read
//! into (the payload is never longer than the raw bytes it came from, so the
//! write position never passes the read position) and keeps a partial
//! chunk-size line in its state, not in the buffer: every raw byte handed to
//! it is consumed, and nothing is allocated.

/// Where the decoder is in the chunk grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { size: u64, digits: u8 },
    /// Skipping a chunk extension (`;name=value`) up to the line end.
    Extension { size: u64 },
    /// Payload bytes of the current chunk still to come.
    Data { left: u64 },
    /// The CRLF that ends a chunk's payload.
    DataEnd,
    /// Trailer lines after the last (zero-size) chunk; `empty` while the
    /// current line has no byte yet, so an empty line ends the body.
    Trailer { empty: bool },
    /// The body is complete.
    Done,
}

/// Errors in the chunk framing; the connection cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line that is not hex, or too large.
    BadSize,
    /// A chunk payload not followed by a line end.
    MissingLineEnd,
}

/// Where a [`ChunkedDecoder::decode`] call stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// End of the decoded payload in the buffer.
    pub out_end: usize,
    /// End of the raw bytes consumed: the input's end unless the body ended.
    pub in_end: usize,
}

/// Incremental decoder state for one response body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the raw bytes `buf[src..end]`, writing payload bytes to
    /// `buf[dst..]`. Requires `dst <= src`. Stops at the end of the body:
    /// what follows it (a pipelined response) is left unread.
    ///
    /// # Errors
    /// [`ChunkError`] when the framing is malformed.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        mut dst: usize,
        mut src: usize,
        end: usize,
    ) -> Result<Decoded, ChunkError> {
        debug_assert!(dst <= src && end <= buf.len());
        while src < end {
            match self.state {
                State::Data { left } => {
                    let n = (left.min((end - src) as u64)) as usize;
                    if dst != src {
                        buf.copy_within(src..src + n, dst);
                    }
                    dst += n;
                    src += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data { left }
                    };
                }
                State::Size { size, digits } => {
                    let b = buf[src];
                    src += 1;
                    self.state = match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if digits >= 15 {
                                return Err(ChunkError::BadSize);
                            }
                            let v = (b as char).to_digit(16).expect("matched a hex digit");
                            State::Size {
                                size: size * 16 + u64::from(v),
                                digits: digits + 1,
                            }
                        }
                        b';' | b' ' | b'\t' if digits > 0 => State::Extension { size },
                        b'\r' if digits > 0 => State::Extension { size },
                        b'\n' if digits > 0 => Self::after_size(size),
                        _ => return Err(ChunkError::BadSize),
                    };
                }
                State::Extension { size } => {
                    let b = buf[src];
                    src += 1;
                    if b == b'\n' {
                        self.state = Self::after_size(size);
                    }
                }
                State::DataEnd => {
                    let b = buf[src];
                    src += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = State::Size { size: 0, digits: 0 },
                        _ => return Err(ChunkError::MissingLineEnd),
                    }
                }
                State::Trailer { empty } => {
                    let b = buf[src];
                    src += 1;
                    self.state = match b {
                        b'\n' if empty => State::Done,
                        b'\n' => State::Trailer { empty: true },
                        b'\r' => State::Trailer { empty },
                        _ => State::Trailer { empty: false },
                    };
                }
                State::Done => break,
            }
        }
        Ok(Decoded {
            out_end: dst,
            in_end: src,
        })
    }

    fn after_size(size: u64) -> State {
        if size == 0 {
            State::Trailer { empty: true }
        } else {
            State::Data { left: size }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"C\r\nretry: 2000\n\r\n15;ext=1\r\n: herald stream open\n\r\n\
        22\r\nid: AeQMKSxFDUTUAQ\ndata: {\"s\":1}\n\n\r\n0\r\nX-T: 1\r\n\r\n";
    const PAYLOAD: &[u8] =
        b"retry: 2000\n: herald stream open\nid: AeQMKSxFDUTUAQ\ndata: {\"s\":1}\n\n";

    /// Feeds `raw` in pieces cut at `cuts`, the way reads would deliver it,
    /// and returns the decoded payload.
    fn decode_in_pieces(raw: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
        let mut buf = vec![0u8; raw.len()];
        let mut dec = ChunkedDecoder::new();
        let mut dst = 0;
        let mut end = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(raw.len());
        for &cut in &bounds {
            let src = end;
            buf[src..cut].copy_from_slice(&raw[src..cut]);
            end = cut;
            let d = dec.decode(&mut buf, dst, src, end).expect("valid framing");
            assert_eq!(d.in_end, end, "everything up to the body's end is consumed");
            dst = d.out_end;
        }
        (buf[..dst].to_vec(), dec.is_done())
    }

    #[test]
    fn decodes_whole_body() {
        let (out, done) = decode_in_pieces(BODY, &[]);
        assert_eq!(out, PAYLOAD);
        assert!(done);
    }

    #[test]
    fn decodes_split_at_every_byte_boundary() {
        for cut in 0..=BODY.len() {
            let (out, done) = decode_in_pieces(BODY, &[cut]);
            assert_eq!(out, PAYLOAD, "cut at {cut}");
            assert!(done);
        }
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let cuts: Vec<usize> = (1..BODY.len()).collect();
        let (out, done) = decode_in_pieces(BODY, &cuts);
        assert_eq!(out, PAYLOAD);
        assert!(done);
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut buf = b"2\r\nok\r\n0\r\n\r\nHTTP/1.1".to_vec();
        let n = buf.len();
        let mut dec = ChunkedDecoder::new();
        let d = dec.decode(&mut buf, 0, 0, n).unwrap();
        assert!(dec.is_done());
        assert_eq!(&buf[..d.out_end], b"ok");
        assert_eq!(&buf[d.in_end..], b"HTTP/1.1");
    }

    #[test]
    fn rejects_bad_size_and_missing_line_end() {
        let mut buf = b"zz\r\n".to_vec();
        let n = buf.len();
        assert_eq!(
            ChunkedDecoder::new()
                .decode(&mut buf, 0, 0, n)
                .map(|d| d.out_end),
            Err(ChunkError::BadSize)
        );
        let mut buf = b"2\r\nabX".to_vec();
        let n = buf.len();
        assert_eq!(
            ChunkedDecoder::new()
                .decode(&mut buf, 0, 0, n)
                .map(|d| d.out_end),
            Err(ChunkError::MissingLineEnd)
        );
    }
}
