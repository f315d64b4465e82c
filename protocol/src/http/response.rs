//! The one response writer: status line, the caller's header fields, `Content-Length`,
//! `Connection: close` when the connection will close, then the body. Every answer of every HTTP
//! port goes through it, error answers included, so framing is always right: the writer, not the
//! caller, decides `Content-Length`, leaves the body out of a HEAD answer and of the statuses
//! that have none (1xx, 204, 304), and keeps CR and LF out of header fields.

use super::reader::Request;
use super::{Method, Version};

/// Content type of the plain-text answers ([`Response::text`]).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// How an answer is framed on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteMode {
    /// The connection closes after this answer: the writer adds `Connection: close`.
    pub close: bool,
    /// The answer to a HEAD request: `Content-Length` of the body, but no body bytes.
    pub omit_body: bool,
}

impl WriteMode {
    /// An answer after which the connection stays open.
    pub const KEEP_ALIVE: WriteMode = WriteMode {
        close: false,
        omit_body: false,
    };
    /// An answer after which the connection closes (every refusal of the reader).
    pub const CLOSE: WriteMode = WriteMode {
        close: true,
        omit_body: false,
    };

    /// The framing of the answer to `request`: it closes if the request did not ask to keep the
    /// connection or the server closes anyway (`server_closes`: draining, request quota used).
    pub fn answering(request: &Request, server_closes: bool) -> WriteMode {
        WriteMode {
            close: server_closes || !request.keep_alive,
            omit_body: request.method == Method::Head,
        }
    }
}

/// An answer, built by the caller and written by [`Response::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An answer with `status` (100..=599; anything else becomes 500), no header and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status: if (100..=599).contains(&status) {
                status
            } else {
                500
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text answer (UTF-8): what every error answer looks like.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status).with_body(TEXT_PLAIN, body.into())
    }

    /// Sets the body and its `Content-Type`.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self = self.with_header("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// Adds a header field. `Content-Length` and `Transfer-Encoding` are the writer's and are
    /// ignored here; so is a name that is not a token. CR, LF and NUL in the value become spaces,
    /// so no value can split the answer.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        let framing = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if framing || name.is_empty() || !name.bytes().all(is_token_byte) {
            return self;
        }
        let value: String = value
            .into()
            .chars()
            .map(|c| {
                if matches!(c, '\r' | '\n' | '\0') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        self.headers.push((name.to_owned(), value));
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The value of the first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this status carries no body and no `Content-Length` (RFC 9110 §15: 1xx, 204;
    /// 304 is left without one too).
    fn is_bodiless(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }

    /// Appends the answer's bytes to `out`.
    pub fn write(&self, mode: WriteMode, out: &mut Vec<u8>) {
        let bodiless = self.is_bodiless();
        out.reserve(128 + self.body.len());
        push_all(
            out,
            &[
                Version::Http11.as_str(),
                " ",
                &self.status.to_string(),
                " ",
                reason_phrase(self.status),
                "\r\n",
            ],
        );
        for (name, value) in &self.headers {
            if mode.close && name.eq_ignore_ascii_case("connection") {
                continue;
            }
            push_all(out, &[name, ": ", value, "\r\n"]);
        }
        if !bodiless {
            push_all(
                out,
                &["Content-Length: ", &self.body.len().to_string(), "\r\n"],
            );
        }
        if mode.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless && !mode.omit_body {
            out.extend_from_slice(&self.body);
        }
    }

    /// The answer's bytes.
    pub fn to_bytes(&self, mode: WriteMode) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(mode, &mut out);
        out
    }
}

fn push_all(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reason phrase of a status (RFC 9110 §15); for a code it does not list, the name of the
/// status's class.
pub fn reason_phrase(status: u16) -> &'static str {
    known_reason(status).unwrap_or(match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        _ => "Server Error",
    })
}

fn known_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &Response, mode: WriteMode) -> String {
        String::from_utf8(response.to_bytes(mode)).expect("ASCII answer")
    }

    #[test]
    fn a_plain_text_answer_that_keeps_the_connection() {
        let response = Response::text(200, "ok\n");
        assert_eq!(
            text(&response, WriteMode::KEEP_ALIVE),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\n\r\nok\n"
        );
    }

    #[test]
    fn closing_answers_say_so_once() {
        let response = Response::text(404, "no\n").with_header("Connection", "keep-alive");
        let written = text(&response, WriteMode::CLOSE);
        assert!(written.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\nno\n"));
        assert_eq!(written.matches("Connection").count(), 1, "{written}");
    }

    #[test]
    fn head_answers_keep_the_length_but_not_the_body() {
        let mode = WriteMode {
            close: false,
            omit_body: true,
        };
        let written = text(&Response::text(200, "hello"), mode);
        assert!(written.ends_with("Content-Length: 5\r\n\r\n"), "{written}");
    }

    #[test]
    fn informational_and_no_content_answers_have_no_length() {
        let upgrade = Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade");
        assert_eq!(
            text(&upgrade, WriteMode::KEEP_ALIVE),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        assert_eq!(
            text(&Response::new(100), WriteMode::KEEP_ALIVE),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
        let no_content = Response::new(204).with_body("text/plain", "ignored");
        assert!(!text(&no_content, WriteMode::KEEP_ALIVE).contains("Content-Length"));
    }

    #[test]
    fn header_fields_cannot_split_the_answer_or_override_its_framing() {
        let response = Response::text(200, "x")
            .with_header("X-Evil", "a\r\nSet-Cookie: b")
            .with_header("Content-Length", "99")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("Bad Name", "v")
            .with_header("", "v");
        let written = text(&response, WriteMode::KEEP_ALIVE);
        assert!(
            written.contains("X-Evil: a  Set-Cookie: b\r\n"),
            "{written}"
        );
        assert_eq!(written.matches("\r\n").count(), 5, "{written}");
        assert!(written.contains("Content-Length: 1\r\n"));
        assert!(!written.contains("chunked") && !written.contains("Bad Name"));
    }

    #[test]
    fn statuses_outside_the_range_become_500_and_unknown_ones_get_their_class() {
        assert_eq!(Response::new(42).status(), 500);
        assert_eq!(Response::new(1000).status(), 500);
        assert_eq!(reason_phrase(299), "Success");
        assert_eq!(reason_phrase(418), "Client Error");
        assert_eq!(reason_phrase(599), "Server Error");
    }

    #[test]
    fn a_new_content_type_replaces_the_old() {
        let response = Response::text(200, "a").with_body("application/json", "{}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body(), b"{}");
    }
}
