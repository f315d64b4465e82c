//! The one place that decides which protocol a connection speaks. The listener has already said
//! TLS or plain (`Transport`) and, on the TLS port, the handshake may have agreed an application
//! protocol by ALPN; what is left is the first bytes of plaintext:
//!
//! - a Blynk device login (command 29, or 2 from older libraries): the Blynk device protocol;
//! - an HTTP request line (a method and a space): HTTP, which may upgrade to a WebSocket;
//! - an MQTT CONNECT (packet type 1, then the protocol name `MQTT` or `MQIsdp`): recognised and
//!   closed with a clear reason until MQTT is served;
//! - a TLS handshake on the plain port, another Blynk command before a login, or anything else:
//!   refused, each with the reason that says which.
//!
//! An ALPN answer decides at once ("http/1.1" is HTTP, "mqtt" MQTT). Sans-IO: the decision is a
//! pure function of what has arrived so far, and a definite answer never changes when more bytes
//! arrive (the fuzz target `sniffer` checks that). Adding a protocol means one arm here and one
//! variant in `crate::protocols::Session`.

use super::Transport;
use super::close::CloseReason;
use portcullis_protocol::Command;

/// The protocols a connection may be handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The Blynk device protocol (binary frames, a login first).
    Blynk,
    /// HTTP/1.1 (and the upgrades it routes to).
    Http,
    /// MQTT 3.1, 3.1.1 or 5; recognised, not served yet.
    Mqtt,
}

/// What the selector says about a connection so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Not enough bytes to tell.
    NeedMore,
    Speak(Protocol),
    Refuse(CloseReason),
}

/// The ALPN identifier of HTTP/1.1 (RFC 7301).
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The ALPN identifier MQTT brokers use (OASIS MQTT 5 §4.8 names none; "mqtt" is the IANA entry).
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// The application protocols the TLS port offers, in order of preference. MQTT joins once it is
/// served: offering it now would only trade a TLS alert for a close.
pub const OFFERED_ALPN: &[&[u8]] = &[ALPN_HTTP_1_1];

/// HTTP methods a request line may start with, as the first four bytes.
const HTTP_METHODS: &[&[u8; 4]] = &[
    b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"PATC", b"DELE", b"TRAC", b"CONN",
];

/// MQTT CONNECT: control packet type 1 with no flags.
const MQTT_CONNECT: u8 = 0x10;

/// Protocol names an MQTT CONNECT carries after its fixed header: `MQTT` (3.1.1 and 5) and
/// `MQIsdp` (3.1), each with its 2-byte length prefix.
const MQTT_PROTOCOL_NAMES: &[&[u8]] = &[b"\x00\x04MQTT", b"\x00\x06MQIsdp"];

/// Longest MQTT "remaining length" varint (MQTT 5 §1.5.5).
const MQTT_MAX_LENGTH_BYTES: usize = 4;

/// Decides from the ALPN answer (if the TLS handshake agreed one) and the first bytes.
pub fn select(transport: Transport, alpn: Option<&[u8]>, bytes: &[u8]) -> Selection {
    match alpn {
        Some(ALPN_HTTP_1_1) => return Selection::Speak(Protocol::Http),
        Some(ALPN_MQTT) => return Selection::Speak(Protocol::Mqtt),
        _ => {}
    }
    let Some(&first) = bytes.first() else {
        return Selection::NeedMore;
    };
    match first {
        // A TLS record: content type 22 (handshake), then major version 3.
        0x16 if transport == Transport::Plain => match bytes.get(1) {
            None => Selection::NeedMore,
            Some(3) => Selection::Refuse(CloseReason::TlsOnPlainPort),
            Some(_) => Selection::Refuse(CloseReason::UnknownProtocol),
        },
        code if Command::from_code(code).is_login() => Selection::Speak(Protocol::Blynk),
        MQTT_CONNECT => match mqtt_connect(bytes) {
            Some(true) => Selection::Speak(Protocol::Mqtt),
            Some(false) => not_a_login(first),
            None => Selection::NeedMore,
        },
        _ => match bytes.first_chunk::<4>() {
            Some(head) if HTTP_METHODS.contains(&head) => Selection::Speak(Protocol::Http),
            None if HTTP_METHODS.iter().any(|m| m.starts_with(bytes)) => Selection::NeedMore,
            _ => not_a_login(first),
        },
    }
}

/// Another Blynk command where a login must come first, or no protocol at all.
fn not_a_login(first: u8) -> Selection {
    match Command::from_code(first) {
        Command::Unknown(_) => Selection::Refuse(CloseReason::UnknownProtocol),
        _ => Selection::Refuse(CloseReason::NotALogin(format!(
            "command {first} before login"
        ))),
    }
}

/// Whether `bytes` (starting with 0x10) open an MQTT CONNECT: `None` while too few bytes arrived.
fn mqtt_connect(bytes: &[u8]) -> Option<bool> {
    // The remaining length: 1 to 4 bytes, each with a continuation bit.
    let mut at = 1;
    loop {
        let &byte = bytes.get(at)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > MQTT_MAX_LENGTH_BYTES {
            return Some(false);
        }
    }
    let rest = &bytes[at..];
    let mut undecided = false;
    for name in MQTT_PROTOCOL_NAMES {
        if rest.starts_with(name) {
            return Some(true);
        }
        undecided |= name.starts_with(rest);
    }
    if undecided { None } else { Some(false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> Selection {
        select(Transport::Plain, None, bytes)
    }

    #[test]
    fn blynk_logins_http_and_mqtt_are_told_apart() {
        assert_eq!(plain(b""), Selection::NeedMore);
        assert_eq!(
            plain(&[0x1D, 0, 1, 0, 32]),
            Selection::Speak(Protocol::Blynk)
        );
        assert_eq!(plain(&[2]), Selection::Speak(Protocol::Blynk));
        assert_eq!(plain(b"GE"), Selection::NeedMore);
        assert_eq!(plain(b"GET /"), Selection::Speak(Protocol::Http));
        assert_eq!(plain(b"POST /x"), Selection::Speak(Protocol::Http));
        // MQTT 3.1.1 CONNECT: fixed header 0x10, remaining length 12, then "\0\x04MQTT".
        let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c";
        assert_eq!(plain(connect), Selection::Speak(Protocol::Mqtt));
        assert_eq!(plain(&connect[..4]), Selection::NeedMore);
        // MQTT 3.1, and a two-byte remaining length.
        assert_eq!(
            plain(b"\x10\x80\x01\x00\x06MQIsdp"),
            Selection::Speak(Protocol::Mqtt)
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason_that_says_which() {
        // Another Blynk command before login (the old "below 100 means device" fallback is gone).
        assert!(matches!(
            plain(&[20, 0, 1, 0, 4]),
            Selection::Refuse(CloseReason::NotALogin(_))
        ));
        // 16 is HARDWARE_SYNC as well as an MQTT CONNECT's first byte: the bytes after decide.
        assert!(matches!(
            plain(&[16, 0, 1, 0, 4]),
            Selection::Refuse(CloseReason::NotALogin(_))
        ));
        assert_eq!(
            plain(&[0xff, 0xfe]),
            Selection::Refuse(CloseReason::UnknownProtocol)
        );
        assert_eq!(
            plain(b"\xf0YZW"),
            Selection::Refuse(CloseReason::UnknownProtocol)
        );
        // A TLS handshake on the plain port says so.
        assert_eq!(plain(&[0x16]), Selection::NeedMore);
        assert_eq!(
            plain(&[0x16, 3, 1]),
            Selection::Refuse(CloseReason::TlsOnPlainPort)
        );
        // Behind TLS, 0x16 is just a byte: no protocol.
        assert_eq!(
            select(Transport::Tls, None, &[0x16, 3, 1]),
            Selection::Refuse(CloseReason::UnknownProtocol)
        );
    }

    #[test]
    fn an_alpn_answer_decides_without_bytes() {
        assert_eq!(
            select(Transport::Tls, Some(ALPN_HTTP_1_1), b""),
            Selection::Speak(Protocol::Http)
        );
        assert_eq!(
            select(Transport::Tls, Some(ALPN_MQTT), b""),
            Selection::Speak(Protocol::Mqtt)
        );
        assert_eq!(
            select(Transport::Tls, Some(b"h2"), &[29]),
            Selection::Speak(Protocol::Blynk)
        );
    }

    #[test]
    fn a_definite_answer_never_changes_with_more_bytes() {
        let inputs: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\n",
            b"\x10\x0c\x00\x04MQTT\x04",
            &[29, 0, 1, 0, 32, 1, 2],
            &[0x16, 3, 1, 0, 5],
            &[16, 0, 1, 0, 4],
            b"\x10\xff\xff\xff\xff\x01",
        ];
        for input in inputs {
            let full = plain(input);
            for cut in 0..=input.len() {
                let partial = plain(&input[..cut]);
                assert!(
                    partial == Selection::NeedMore || partial == full,
                    "{input:?} cut at {cut}: {partial:?} then {full:?}"
                );
            }
        }
    }
}
