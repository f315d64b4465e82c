//! The WebSocket upgrade (RFC 6455 §4.2): whether a complete GET request asks for a WebSocket the
//! right way, and the `101 Switching Protocols` answer with its accept key (tungstenite's), or the
//! refusal that says what was wrong. Sans-IO; the HTTP session (`http/mod.rs`) routes requests
//! here and hands the connection over on success.

use portcullis_protocol::http::{Method, Request, Response};
use tungstenite::handshake::derive_accept_key;

/// Why an upgrade request is refused: the status to answer with and the reason, for the answer's
/// body and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub why: String,
}

/// The `101` answer to a valid upgrade request, or why it is refused.
pub fn accept(request: &Request) -> Result<Response, Refused> {
    let refuse = |status, why: &str| {
        Err(Refused {
            status,
            why: why.to_owned(),
        })
    };
    if request.method != Method::Get {
        return refuse(405, "app WebSocket needs GET");
    }
    if !request.headers.contains_token("upgrade", "websocket")
        || !request.headers.contains_token("connection", "upgrade")
    {
        return refuse(426, "plain HTTP request to the app WebSocket path");
    }
    if request.header("sec-websocket-version") != Some(b"13") {
        return refuse(426, "WebSocket version other than 13");
    }
    let Some(key) = request
        .header("sec-websocket-key")
        .filter(|key| !key.is_empty())
    else {
        return refuse(400, "WebSocket upgrade without a key");
    };
    Ok(Response::new(101)
        .with_header("Upgrade", "websocket")
        .with_header("Connection", "Upgrade")
        .with_header("Sec-WebSocket-Accept", derive_accept_key(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::http::{Limits, Parsed, RequestReader, WriteMode};

    const UPGRADE: &str = "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn request(text: &str) -> Request {
        match RequestReader::new(Limits::default()).read(text.as_bytes()) {
            Ok(Parsed::Complete { request, .. }) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_upgrade_gets_the_rfc_6455_accept_key() {
        let response = accept(&request(UPGRADE)).expect("a valid upgrade");
        let text = String::from_utf8(response.to_bytes(WriteMode::KEEP_ALIVE)).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        // The example of RFC 6455 §1.3.
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!text.contains("Content-Length"), "a 101 has no body");
    }

    #[test]
    fn bad_upgrades_are_refused_with_a_status_that_says_why() {
        let status = |text: &str| accept(&request(text)).map(|r| r.status());
        let post = UPGRADE.replace("GET", "POST");
        assert_eq!(status(&post).map_err(|r| r.status), Err(405));
        let plain = "GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(plain).map_err(|r| r.status), Err(426));
        let old = UPGRADE.replace("Version: 13", "Version: 8");
        assert_eq!(status(&old).map_err(|r| r.status), Err(426));
        let keyless = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(status(&keyless).map_err(|r| r.status), Err(400));
    }
}
