//! The framing of the store wire: a 4-byte big-endian length, then a postcard-encoded message.
//! The length is checked against [`MAX_FRAME_LEN`] before anything is allocated, so a peer
//! cannot make either side buffer more than one frame's worth.

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Largest frame either side accepts (the length prefix excluded).
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Framing failures. `TooLarge` and `Malformed` are the peer's fault.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Appends one framed message to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    let mut body = postcard::to_extend(msg, std::mem::take(out))?;
    let len = body.len() - start - LENGTH_PREFIX;
    if len > MAX_FRAME_LEN {
        body.truncate(start);
        *out = body;
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    body[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    *out = body;
    Ok(())
}

/// Length of the frame at the front of `buf`, once its prefix is there; refuses oversize frames
/// before their bytes arrive.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Some(len))
}

/// The payload of the complete frame at the front of `buf` and the bytes the frame uses, or
/// `None` while it is incomplete.
pub fn frame_payload(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    Ok(buf
        .get(LENGTH_PREFIX..LENGTH_PREFIX + len)
        .map(|payload| (payload, LENGTH_PREFIX + len)))
}

/// Decodes the frame at the front of `buf`: `Ok(None)` while it is incomplete, otherwise the
/// message and the number of bytes it used.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, WireError> {
    let Some((payload, used)) = frame_payload(buf)? else {
        return Ok(None);
    };
    Ok(Some((postcard::from_bytes(payload)?, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{PinAddr, PinKind};
    use crate::store::{PinWrite, Request, RequestEnvelope};

    #[test]
    fn frames_round_trip_in_any_fragmentation() {
        let msgs = vec![
            RequestEnvelope {
                id: 1,
                acting: None,
                request: Request::Ping,
            },
            RequestEnvelope {
                id: 2,
                acting: None,
                request: Request::WritePins {
                    writes: vec![PinWrite {
                        device: 7,
                        pin: PinAddr::new(PinKind::Virtual, 5),
                        value: b"42".to_vec(),
                        at_ms: 1,
                    }],
                },
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut stream).expect("encodes");
        }
        for cut in 0..=stream.len() {
            let mut pending = stream[..cut].to_vec();
            let mut got = Vec::new();
            let mut rest = &stream[cut..];
            loop {
                match decode_frame::<RequestEnvelope>(&pending).expect("valid") {
                    Some((m, used)) => {
                        got.push(m);
                        pending.drain(..used);
                    }
                    None if !rest.is_empty() => {
                        pending.extend_from_slice(rest);
                        rest = &[];
                    }
                    None => break,
                }
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn oversize_and_garbage_are_refused() {
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_frame::<RequestEnvelope>(&huge),
            Err(WireError::TooLarge { .. })
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<RequestEnvelope>(&garbage),
            Err(WireError::Malformed(_))
        ));
    }
}
