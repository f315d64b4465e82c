//! The Blynk hardware frame: a 5-byte big-endian header (`cmd u8, msg_id u16, len|status u16`) and a
//! body. This module owns decoding from an arbitrarily fragmented byte stream and encoding into a
//! caller-owned buffer; it never allocates while decoding.
//!
//! RESPONSE frames (command 0) carry a status in the third field and have no body, so a response is
//! always exactly 5 bytes. Decoding distinguishes "need more bytes" (the caller keeps the tail and
//! reads again) from "malformed" (the peer sent something no valid stream contains).

use crate::command::{Command, Status};
use thiserror::Error;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 5;

/// The largest body the 16-bit length field can describe.
pub const MAX_WIRE_BODY_LEN: usize = u16::MAX as usize;

/// A decoded frame, borrowing its body from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub command: Command,
    pub msg_id: u16,
    pub payload: Payload<'a>,
}

/// What follows the header: a status for RESPONSE frames, a body for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    Status(Status),
    Body(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The body, or an empty slice for a RESPONSE.
    pub fn body(&self) -> &'a [u8] {
        match self.payload {
            Payload::Body(body) => body,
            Payload::Status(_) => &[],
        }
    }

    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body().len()
    }
}

/// Result of looking at the front of a byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// One complete frame; `consumed` bytes of input belong to it.
    Frame { frame: Frame<'a>, consumed: usize },
    /// The buffer holds a valid prefix; at least `needed` bytes in total are required.
    NeedMore { needed: usize },
}

/// Why a byte stream cannot be a valid frame sequence. Always the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes (command {command})")]
    BodyTooLarge { command: u8, len: usize, max: usize },
}

/// Decodes the frame at the front of `buf`, rejecting bodies longer than `max_body`.
///
/// The length check happens on the header alone, before any body byte is awaited, so an oversize
/// frame is refused without buffering it.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Decoded<'_>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::NeedMore { needed: HEADER_LEN });
    };
    let command = Command::from_code(header[0]);
    let msg_id = u16::from_be_bytes([header[1], header[2]]);
    let third = u16::from_be_bytes([header[3], header[4]]);
    if command == Command::Response {
        let frame = Frame {
            command,
            msg_id,
            payload: Payload::Status(Status::from_code(third)),
        };
        return Ok(Decoded::Frame {
            frame,
            consumed: HEADER_LEN,
        });
    }
    let len = usize::from(third);
    if len > max_body {
        return Err(FrameError::BodyTooLarge {
            command: header[0],
            len,
            max: max_body,
        });
    }
    let total = HEADER_LEN + len;
    match buf.get(HEADER_LEN..total) {
        Some(body) => {
            let frame = Frame {
                command,
                msg_id,
                payload: Payload::Body(body),
            };
            Ok(Decoded::Frame {
                frame,
                consumed: total,
            })
        }
        None => Ok(Decoded::NeedMore { needed: total }),
    }
}

/// Why a frame could not be encoded. Always our own (internal) fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("body of {len} bytes does not fit the 16-bit length field")]
    BodyTooLarge { len: usize },
    #[error("RESPONSE frames carry a status, not a body")]
    ResponseWithBody,
}

/// Appends a 5-byte RESPONSE frame.
pub fn encode_response(out: &mut Vec<u8>, msg_id: u16, status: Status) {
    out.push(Command::Response.code());
    out.extend_from_slice(&msg_id.to_be_bytes());
    out.extend_from_slice(&status.code().to_be_bytes());
}

/// Appends a frame whose body is `body`.
pub fn encode(
    out: &mut Vec<u8>,
    command: Command,
    msg_id: u16,
    body: &[u8],
) -> Result<(), EncodeError> {
    if command == Command::Response {
        return Err(EncodeError::ResponseWithBody);
    }
    let len =
        u16::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge { len: body.len() })?;
    out.reserve(HEADER_LEN + body.len());
    out.push(command.code());
    out.extend_from_slice(&msg_id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a frame whose body is `args` joined with NUL (no trailing NUL, as the libraries send it).
pub fn encode_args(
    out: &mut Vec<u8>,
    command: Command,
    msg_id: u16,
    args: &[&[u8]],
) -> Result<(), EncodeError> {
    let len = args.iter().map(|a| a.len()).sum::<usize>() + args.len().saturating_sub(1);
    let len16 = u16::try_from(len).map_err(|_| EncodeError::BodyTooLarge { len })?;
    if command == Command::Response {
        return Err(EncodeError::ResponseWithBody);
    }
    out.reserve(HEADER_LEN + len);
    out.push(command.code());
    out.extend_from_slice(&msg_id.to_be_bytes());
    out.extend_from_slice(&len16.to_be_bytes());
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(arg);
    }
    Ok(())
}

/// Encodes a whole frame into a fresh buffer (tests and tools; the gateway encodes in place).
pub fn to_vec(frame: &Frame<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(frame.wire_len());
    match frame.payload {
        Payload::Status(status) => encode_response(&mut out, frame.msg_id, status),
        Payload::Body(body) => encode(&mut out, frame.command, frame.msg_id, body)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_reference_examples() {
        // Blynk.virtualWrite(5, 42) from docs/reference/blynk-protocol.md §1.4.
        let bytes = [
            0x14, 0x00, 0x03, 0x00, 0x07, b'v', b'w', 0, b'5', 0, b'4', b'2',
        ];
        let Ok(Decoded::Frame { frame, consumed }) = decode(&bytes, 1024) else {
            panic!("no frame")
        };
        assert_eq!(consumed, bytes.len());
        assert_eq!(frame.command, Command::Hardware);
        assert_eq!(frame.msg_id, 3);
        assert_eq!(frame.body(), b"vw\x005\x0042");
        // Login success reply.
        let ok = [0x00, 0x00, 0x01, 0x00, 0xC8];
        let Ok(Decoded::Frame { frame, .. }) = decode(&ok, 0) else {
            panic!("no frame")
        };
        assert_eq!(frame.payload, Payload::Status(Status::Ok));
    }

    #[test]
    fn need_more_versus_malformed() {
        assert_eq!(decode(&[], 10), Ok(Decoded::NeedMore { needed: 5 }));
        assert_eq!(
            decode(&[20, 0, 1, 0, 4, b'v'], 10),
            Ok(Decoded::NeedMore { needed: 9 })
        );
        assert_eq!(
            decode(&[20, 0, 1, 0x04, 0x01], 1024),
            Err(FrameError::BodyTooLarge {
                command: 20,
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn encoding_refuses_what_the_wire_cannot_hold() {
        let mut out = Vec::new();
        let big = vec![0u8; MAX_WIRE_BODY_LEN + 1];
        assert_eq!(
            encode(&mut out, Command::Hardware, 1, &big),
            Err(EncodeError::BodyTooLarge { len: big.len() })
        );
        assert_eq!(
            encode(&mut out, Command::Response, 1, b"x"),
            Err(EncodeError::ResponseWithBody)
        );
        encode_args(&mut out, Command::Hardware, 7, &[b"vw", b"1", b"hello"]).expect("fits");
        assert_eq!(out, b"\x14\x00\x07\x00\x0avw\x001\x00hello");
    }

    fn arb_frame() -> impl Strategy<Value = (u8, u16, u16, Vec<u8>)> {
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
    }

    fn encode_owned((cmd, id, status, body): &(u8, u16, u16, Vec<u8>)) -> Vec<u8> {
        let command = Command::from_code(*cmd);
        let frame = Frame {
            command,
            msg_id: *id,
            payload: if command == Command::Response {
                Payload::Status(Status::from_code(*status))
            } else {
                Payload::Body(body)
            },
        };
        to_vec(&frame).expect("bodies under 300 bytes always fit")
    }

    /// Decodes a whole stream, feeding it in pieces cut at `cuts`, as a connection would see it.
    fn decode_stream(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut pending = Vec::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let cut = cut.clamp(fed, bytes.len());
            pending.extend_from_slice(&bytes[fed..cut]);
            fed = cut;
            loop {
                match decode(&pending, 1024).expect("valid stream") {
                    Decoded::Frame { frame, consumed } => {
                        frames.push(to_vec(&frame).expect("re-encodes"));
                        pending.drain(..consumed);
                    }
                    Decoded::NeedMore { needed } => {
                        assert!(needed > pending.len());
                        break;
                    }
                }
            }
        }
        assert!(pending.is_empty(), "stream ended mid-frame");
        frames
    }

    proptest! {
        #[test]
        fn round_trip(f in arb_frame()) {
            let bytes = encode_owned(&f);
            let Decoded::Frame { frame, consumed } = decode(&bytes, 1024).expect("valid") else {
                panic!("complete frame reported incomplete");
            };
            prop_assert_eq!(consumed, bytes.len());
            prop_assert_eq!(frame.command.code(), f.0);
            prop_assert_eq!(frame.msg_id, f.1);
            prop_assert_eq!(to_vec(&frame).expect("re-encodes"), bytes);
        }

        #[test]
        fn every_split_point_of_a_stream(frames in proptest::collection::vec(arb_frame(), 1..6)) {
            let encoded: Vec<Vec<u8>> = frames.iter().map(encode_owned).collect();
            let stream: Vec<u8> = encoded.concat();
            for cut in 0..=stream.len() {
                prop_assert_eq!(&decode_stream(&stream, &[cut]), &encoded);
            }
        }

        #[test]
        fn one_byte_at_a_time_and_random_cuts(
            frames in proptest::collection::vec(arb_frame(), 1..6),
            mut cuts in proptest::collection::vec(0usize..2000, 0..20),
        ) {
            let encoded: Vec<Vec<u8>> = frames.iter().map(encode_owned).collect();
            let stream: Vec<u8> = encoded.concat();
            let every_byte: Vec<usize> = (0..stream.len()).collect();
            prop_assert_eq!(&decode_stream(&stream, &every_byte), &encoded);
            cuts.sort_unstable();
            prop_assert_eq!(&decode_stream(&stream, &cuts), &encoded);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match decode(&bytes, 16) {
                Ok(Decoded::Frame { consumed, .. }) => prop_assert!(consumed <= bytes.len()),
                Ok(Decoded::NeedMore { needed }) => prop_assert!(needed > bytes.len()),
                Err(FrameError::BodyTooLarge { len, max, .. }) => prop_assert!(len > max),
            }
        }
    }
}
