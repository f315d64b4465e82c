//! Protocol sniffing on the first bytes of a connection (reference §2.2): a TLS handshake record, a
//! Blynk device login (command 29 or 2, any id and length), or an HTTP verb. HTTP and WebSocket
//! stages are not served yet; the sniffer still names them so the close reason is precise.

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    NeedMore,
    Tls,
    DeviceLogin,
    Http,
    Unknown,
}

const HTTP_VERBS: &[&[u8; 4]] = &[b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"PATC", b"DELE", b"TRAC", b"CONN"];

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
        Some(2 | 29) => Sniffed::DeviceLogin,
        Some(_) => match bytes.first_chunk::<4>() {
            None if HTTP_VERBS.iter().any(|verb| verb.starts_with(bytes)) => Sniffed::NeedMore,
            None => Sniffed::Unknown,
            Some(head) if HTTP_VERBS.contains(&head) => Sniffed::Http,
            Some(_) => Sniffed::Unknown,
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
        assert_eq!(sniff(&[0x1D, 0, 1, 0, 32]), Sniffed::DeviceLogin);
        assert_eq!(sniff(&[2]), Sniffed::DeviceLogin);
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        assert_eq!(sniff(b"GET /"), Sniffed::Http);
        assert_eq!(sniff(b"XYZW"), Sniffed::Unknown);
        assert_eq!(sniff(b"X"), Sniffed::Unknown);
    }
}
