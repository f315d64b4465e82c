//! Protocol sniffing on the first bytes of a connection (reference §2.2): a TLS handshake record, an
//! HTTP verb, or a Blynk device frame (a command code below 100; the login stage then insists on
//! command 29 or 2, any id and length). HTTP and WebSocket stages are not served yet; the sniffer
//! still names them so the close reason is precise.

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    NeedMore,
    Tls,
    /// A Blynk frame header (the device stage decides whether it is a login).
    Device,
    Http,
    Unknown,
}

/// Blynk command codes are below 100 (the reference server rejects anything higher).
const MAX_BLYNK_COMMAND: u8 = 100;

const HTTP_VERBS: &[&[u8; 4]] = &[
    b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"PATC", b"DELE", b"TRAC", b"CONN",
];

/// Classifies a connection from the bytes received so far.
pub fn sniff(bytes: &[u8]) -> Sniffed {
    match bytes.first() {
        None => Sniffed::NeedMore,
        // A TLS record: content type 22 (handshake), then major version 3.
        Some(0x16) => match bytes.get(1) {
            None => Sniffed::NeedMore,
            Some(3) => Sniffed::Tls,
            Some(_) => Sniffed::Unknown,
        },
        Some(2 | 29) => Sniffed::Device,
        Some(&first) => match bytes.first_chunk::<4>() {
            None if HTTP_VERBS.iter().any(|verb| verb.starts_with(bytes)) => Sniffed::NeedMore,
            Some(head) if HTTP_VERBS.contains(&head) => Sniffed::Http,
            _ if first < MAX_BLYNK_COMMAND => Sniffed::Device,
            _ => Sniffed::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(&[0x16]), Sniffed::NeedMore);
        assert_eq!(sniff(&[0x16, 3, 1]), Sniffed::Tls);
        assert_eq!(sniff(&[0x1D, 0, 1, 0, 32]), Sniffed::Device);
        assert_eq!(sniff(&[2]), Sniffed::Device);
        assert_eq!(sniff(&[20, 0, 1, 0, 4]), Sniffed::Device);
        assert_eq!(sniff(&[0xff, 0xfe]), Sniffed::Unknown);
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        assert_eq!(sniff(b"GET /"), Sniffed::Http);
        assert_eq!(sniff(b"\xf0YZW"), Sniffed::Unknown);
        assert_eq!(sniff(b"\xf0"), Sniffed::Unknown);
    }
}
