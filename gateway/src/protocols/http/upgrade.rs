//! The HTTP request that opens a WebSocket: the only HTTP this gateway serves so far is the
//! upgrade to the app API at [`APP_WS_PATH`]. Sans-IO: takes the bytes received so far and says
//! whether the head is complete, and if so either the `101 Switching Protocols` answer or the
//! error answer to send before closing. Parsing is httparse's; the accept key is tungstenite's.

use portcullis_protocol::app::APP_WS_PATH;
use tungstenite::handshake::derive_accept_key;

/// Request headers read at most; a request with more is refused.
pub const MAX_HEADERS: usize = 32;

/// What the received bytes amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpHead {
    /// The head is not complete yet.
    NeedMore,
    /// A valid upgrade to the app WebSocket: send `response`, then speak WebSocket from byte
    /// `consumed` on.
    Upgrade { response: Vec<u8>, consumed: usize },
    /// Anything else: send `response` and close. `why` is for the log.
    Refuse {
        response: Vec<u8>,
        status: u16,
        why: String,
    },
}

/// Reads an HTTP request head and decides.
pub fn read_head(bytes: &[u8]) -> HttpHead {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(bytes) {
        Ok(httparse::Status::Partial) => return HttpHead::NeedMore,
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return refuse(400, "Bad Request", format!("unreadable HTTP request: {e}")),
    };
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path != APP_WS_PATH {
        return refuse(
            404,
            "Not Found",
            format!("HTTP path {path:?} is not served (only the app WebSocket at {APP_WS_PATH})"),
        );
    }
    if request.method != Some("GET") {
        return refuse(405, "Method Not Allowed", "app WebSocket needs GET".into());
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return refuse(
            426,
            "Upgrade Required",
            "plain HTTP request to the app WebSocket path".into(),
        );
    }
    if header("sec-websocket-version") != Some(b"13") {
        return refuse(
            426,
            "Upgrade Required",
            "WebSocket version other than 13".into(),
        );
    }
    let Some(key) = header("sec-websocket-key").filter(|k| !k.is_empty()) else {
        return refuse(400, "Bad Request", "WebSocket upgrade without a key".into());
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key)
    );
    HttpHead::Upgrade {
        response: response.into_bytes(),
        consumed,
    }
}

fn refuse(status: u16, text: &str, why: String) -> HttpHead {
    let body = format!("{why}\n");
    let response = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    HttpHead::Refuse {
        response: response.into_bytes(),
        status,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn status_of(head: &HttpHead) -> &str {
        let bytes = match head {
            HttpHead::Upgrade { response, .. } | HttpHead::Refuse { response, .. } => response,
            HttpHead::NeedMore => return "need more",
        };
        std::str::from_utf8(&bytes[9..12]).expect("test fixture")
    }

    #[test]
    fn a_valid_upgrade_gets_the_rfc_6455_accept_key() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x81\x85");
        match read_head(&bytes) {
            HttpHead::Upgrade { response, consumed } => {
                assert_eq!(consumed, UPGRADE.len());
                let text = String::from_utf8(response).expect("test fixture");
                assert!(text.starts_with("HTTP/1.1 101 "));
                // The example of RFC 6455 §1.3.
                assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_incomplete_head_waits() {
        assert_eq!(read_head(&UPGRADE.as_bytes()[..40]), HttpHead::NeedMore);
    }

    #[test]
    fn other_requests_are_refused_with_a_status_that_says_why() {
        let other_path = UPGRADE.replace("/api/ws", "/admin");
        assert_eq!(status_of(&read_head(other_path.as_bytes())), "404");
        let post = UPGRADE.replace("GET", "POST");
        assert_eq!(status_of(&read_head(post.as_bytes())), "405");
        let plain = "GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status_of(&read_head(plain.as_bytes())), "426");
        let old = UPGRADE.replace("Version: 13", "Version: 8");
        assert_eq!(status_of(&read_head(old.as_bytes())), "426");
        let keyless = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(status_of(&read_head(keyless.as_bytes())), "400");
        assert_eq!(status_of(&read_head(b"GET \x01 HTTP/1.1\r\n\r\n")), "400");
    }
}
