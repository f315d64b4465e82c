//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded incrementally: each
//! call continues where the last stopped, so a body that trickles in byte by byte costs linear
//! time. Chunk sizes that overflow, lines without CRLF, chunk data not followed by CRLF and bodies
//! over the limit are refused; chunk extensions and trailer fields are checked for shape, bounded
//! and ignored.

use super::error::RequestError;
use super::{CHUNKED_OVERHEAD_ALLOWANCE, MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes to go.
    Data { remaining: usize },
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

/// Decodes one chunked body. Positions are offsets into the caller's buffer, which starts at the
/// request's first byte and only grows between calls.
#[derive(Debug, Clone)]
pub(super) struct ChunkedDecoder {
    state: State,
    /// First byte of the body (the head's length).
    start: usize,
    /// Next byte not yet decoded.
    pos: usize,
    /// Bytes after `pos` already known to hold no line feed.
    line_checked: usize,
    trailer_bytes: usize,
    max_body: usize,
    body: Vec<u8>,
}

impl ChunkedDecoder {
    pub(super) fn new(start: usize, max_body: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            start,
            pos: start,
            line_checked: 0,
            trailer_bytes: 0,
            max_body,
            body: Vec::new(),
        }
    }

    /// Decodes what `buf` adds. `Some(end)` once the body is complete: it ends at offset `end`.
    pub(super) fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, RequestError> {
        loop {
            match self.state {
                State::Size => {
                    let too_long = RequestError::BadChunk("chunk size line too long");
                    let Some(line) = self.next_line(buf, MAX_CHUNK_LINE_BYTES, too_long)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(line)?;
                    if size > self.max_body - self.body.len() {
                        return Err(RequestError::BodyTooLarge { max: self.max_body });
                    }
                    self.check_framing_cost()?;
                    self.state = match size {
                        0 => State::Trailers,
                        remaining => State::Data { remaining },
                    };
                }
                State::Data { remaining } => {
                    let available = &buf[self.pos.min(buf.len())..];
                    let take = remaining.min(available.len());
                    self.body.extend_from_slice(&available[..take]);
                    self.pos += take;
                    if take < remaining {
                        self.state = State::Data {
                            remaining: remaining - take,
                        };
                        return Ok(None);
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => match buf.get(self.pos..).unwrap_or_default() {
                    [b'\r', b'\n', ..] => {
                        self.pos += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(None),
                    _ => return Err(RequestError::BadChunk("chunk data not followed by CRLF")),
                },
                State::Trailers => {
                    let budget = MAX_TRAILER_BYTES - self.trailer_bytes;
                    let too_large = RequestError::TrailersTooLarge {
                        max: MAX_TRAILER_BYTES,
                    };
                    let Some(line) = self.next_line(buf, budget, too_large.clone())? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        return Ok(Some(self.pos));
                    }
                    if !is_field_line(line) {
                        return Err(RequestError::BadChunk("malformed trailer field"));
                    }
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes >= MAX_TRAILER_BYTES {
                        return Err(too_large);
                    }
                }
            }
        }
    }

    /// The decoded body, once [`feed`](Self::feed) said it is complete.
    pub(super) fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The next CRLF-terminated line (without its CRLF), if it has arrived within `max` bytes.
    fn next_line<'b>(
        &mut self,
        buf: &'b [u8],
        max: usize,
        too_long: RequestError,
    ) -> Result<Option<&'b [u8]>, RequestError> {
        let rest = buf.get(self.pos..).unwrap_or_default();
        let searched = &rest[..rest.len().min(max)];
        let from = self.line_checked.min(searched.len());
        match searched[from..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = from + at;
                let line = rest[..end]
                    .strip_suffix(b"\r")
                    .ok_or(RequestError::BadChunk("line not ended by CRLF"))?;
                self.pos += end + 1;
                self.line_checked = 0;
                Ok(Some(line))
            }
            None if searched.len() >= max => Err(too_long),
            None => {
                self.line_checked = searched.len();
                Ok(None)
            }
        }
    }

    /// Refuses framing that costs more than the body limit plus [`CHUNKED_OVERHEAD_ALLOWANCE`].
    fn check_framing_cost(&self) -> Result<(), RequestError> {
        let max = self.max_body.saturating_add(CHUNKED_OVERHEAD_ALLOWANCE);
        let framing = self.pos - self.start - self.body.len();
        if framing > max {
            return Err(RequestError::ChunkedFramingTooLarge { max });
        }
        Ok(())
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]`: the size in hexadecimal, extensions checked and ignored.
fn chunk_size(line: &[u8]) -> Result<usize, RequestError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(RequestError::BadChunk("chunk size is not hexadecimal"));
    }
    let size = line[..digits].iter().try_fold(0usize, |size, &digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        size.checked_mul(16)?.checked_add(usize::from(value))
    });
    let size = size.ok_or(RequestError::ChunkSizeOverflow)?;
    let extension = line[digits..].trim_ascii_start();
    let well_formed = match extension {
        [] => digits == line.len(),
        [b';', rest @ ..] => rest.iter().all(|&b| b == b'\t' || !b.is_ascii_control()),
        _ => false,
    };
    if !well_formed {
        return Err(RequestError::BadChunk("malformed chunk extension"));
    }
    Ok(size)
}

/// `field-name ":" field-value` with a token name and no control bytes but HTAB in the value.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_token_byte(b))
        && value.iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, RequestError> {
        let mut decoder = ChunkedDecoder::new(0, max);
        Ok(decoder.feed(body)?.map(|end| (decoder.into_body(), end)))
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let wire = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE ; x\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (body, end) = decode(wire, 100).expect("valid").expect("complete");
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&wire[end..], b"NEXT");
    }

    #[test]
    fn sizes_are_hexadecimal_and_may_not_overflow() {
        assert_eq!(chunk_size(b"fF"), Ok(255));
        assert_eq!(chunk_size(b"000000000000000000000001"), Ok(1));
        assert_eq!(
            chunk_size(b"1ffffffffffffffff"),
            Err(RequestError::ChunkSizeOverflow)
        );
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"+1",
            b"1 ",
            b"1 x",
            b"1;\x01",
            b"0x1",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_body_limit_is_checked_against_each_declared_size() {
        assert_eq!(
            decode(b"5\r\n", 4),
            Err(RequestError::BodyTooLarge { max: 4 })
        );
        assert_eq!(
            decode(b"2\r\nab\r\n3\r\n", 4),
            Err(RequestError::BodyTooLarge { max: 4 })
        );
        let exact = decode(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n", 4).expect("fits");
        assert_eq!(exact.map(|(b, _)| b), Some(b"abcd".to_vec()));
    }

    #[test]
    fn framing_errors() {
        for bad in [
            &b"3\r\nabcX"[..],
            b"3\nabc\r\n",
            b"3\r\nabc\r\n0\r\nnot a field\r\n\r\n",
            b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n",
        ] {
            assert!(
                matches!(decode(bad, 100), Err(RequestError::BadChunk(_))),
                "{bad:?}"
            );
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE_BYTES]].concat();
        assert!(matches!(
            decode(&long_line, 100),
            Err(RequestError::BadChunk(_))
        ));
    }

    #[test]
    fn trailers_are_bounded() {
        let field = format!("X-Pad: {}\r\n", "p".repeat(100));
        let wire = format!(
            "0\r\n{}\r\n",
            field.repeat(MAX_TRAILER_BYTES / field.len() + 1)
        );
        assert_eq!(
            decode(wire.as_bytes(), 100),
            Err(RequestError::TrailersTooLarge {
                max: MAX_TRAILER_BYTES
            })
        );
    }

    #[test]
    fn tiny_chunks_cannot_cost_much_more_than_the_limit() {
        let max = 16;
        let mut wire = Vec::new();
        // Each one-byte chunk with a long extension costs ~400 bytes of framing.
        for _ in 0..max {
            wire.extend_from_slice(b"1;");
            wire.extend_from_slice(&[b'e'; 400]);
            wire.extend_from_slice(b"\r\nx\r\n");
        }
        assert_eq!(
            decode(&wire, max),
            Err(RequestError::ChunkedFramingTooLarge {
                max: max + CHUNKED_OVERHEAD_ALLOWANCE
            })
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_body() {
        let wire = b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(0, 100);
        for cut in 0..wire.len() {
            assert_eq!(decoder.feed(&wire[..cut]), Ok(None), "at {cut}");
        }
        assert_eq!(decoder.feed(wire), Ok(Some(wire.len())));
        assert_eq!(decoder.into_body(), b"abc0123456789abcdef");
    }
}
