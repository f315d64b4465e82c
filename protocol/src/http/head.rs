//! The request head: request line and header fields, parsed by httparse and checked against RFC
//! 9112 — the request target's form, `Host`, how the body is framed (`Content-Length` or chunked,
//! with the smuggling cases refused) and whether the connection persists afterwards. Owns the
//! owned [`Headers`] table a complete request carries.
//!
//! [`read_head`] looks only at complete lines (up to the last line feed received), so its answer
//! is a function of the bytes alone, never of how they were cut, and the reader need not re-parse
//! until a new line arrives.

use super::error::{RequestError, excerpt};
use super::{Limits, MAX_HEADERS_CEILING, Method, Version};

/// Empty lines tolerated before a request line (RFC 9112 §2.2 asks for at least one, e.g. the
/// CRLF some clients send after a body); more are refused, so they cannot make each new line
/// re-scan a long run of them.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// One header field as received: the name keeps its case, the value its bytes (they may be
/// obs-text, not UTF-8). Leading and trailing whitespace of the value is already trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// The header fields of a request, in the order received, at most [`Limits::max_headers`] of
/// them. Names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// The value of the first field called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of the fields called `name`, in order.
    pub fn get_all<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether the comma-separated list in the fields called `name` holds `token` (compared
    /// case-insensitively, parameters after `;` ignored): `Connection: keep-alive, Upgrade` holds
    /// `upgrade`.
    pub fn contains_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(list_elements)
            .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The elements of a comma-separated field value, whitespace trimmed, parameters cut, empty
/// elements skipped (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|element| {
            let token = element.split(|&b| b == b';').next().unwrap_or(element);
            token.trim_ascii()
        })
        .filter(|element| !element.is_empty())
}

/// How the body after the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: no body (RFC 9112 §6.3, rule 7).
    Empty,
    Length(usize),
    Chunked,
}

/// A complete, checked head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParsedHead {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    pub headers: Headers,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expects_continue: bool,
    /// Bytes of input the head occupies, blank line included.
    pub len: usize,
}

pub(super) enum HeadProgress {
    Partial,
    Complete(ParsedHead),
}

/// Reads the head at the front of `buf` (the bytes since the request's first byte).
pub(super) fn read_head(buf: &[u8], limits: &Limits) -> Result<HeadProgress, RequestError> {
    let max = limits.max_head_bytes;
    let full = buf.len() >= max;
    let window = &buf[..buf.len().min(max)];
    let examined = if full {
        window
    } else {
        match window.iter().rposition(|&b| b == b'\n') {
            Some(last) => &window[..=last],
            None => return Ok(HeadProgress::Partial),
        }
    };
    let start = skip_empty_lines(examined)?;
    let mut table = [httparse::EMPTY_HEADER; MAX_HEADERS_CEILING];
    let max_headers = limits.max_headers.min(MAX_HEADERS_CEILING);
    let mut request = httparse::Request::new(&mut table[..max_headers]);
    let after_start = &examined[start..];
    match request.parse(after_start) {
        Ok(httparse::Status::Complete(len)) => {
            checked_head(&request, start + len, limits).map(HeadProgress::Complete)
        }
        Ok(httparse::Status::Partial) if full => {
            if after_start.contains(&b'\n') {
                Err(RequestError::HeadTooLarge { max })
            } else {
                Err(RequestError::RequestLineTooLong { max })
            }
        }
        Ok(httparse::Status::Partial) => Ok(HeadProgress::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            Err(RequestError::TooManyHeaders { max: max_headers })
        }
        Err(httparse::Error::Version) => Err(version_error(after_start)),
        Err(e) => Err(RequestError::Malformed(describe(e))),
    }
}

/// Offset of the request line after at most [`MAX_LEADING_EMPTY_LINES`] empty lines.
fn skip_empty_lines(bytes: &[u8]) -> Result<usize, RequestError> {
    let mut at = 0;
    for _ in 0..=MAX_LEADING_EMPTY_LINES {
        match &bytes[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => return Ok(at),
        }
    }
    Err(RequestError::Malformed(
        "too many empty lines before the request line",
    ))
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// 505 for a well-formed version this parser does not speak (`HTTP/2.0`, `HTTP/1.2`), 400 for
/// anything else in its place.
fn version_error(request: &[u8]) -> RequestError {
    let line = request.split(|&b| b == b'\n').next().unwrap_or(request);
    let version = line.split(|&b| b == b' ').nth(2).unwrap_or_default();
    let version = version.strip_suffix(b"\r").unwrap_or(version);
    match version.strip_prefix(b"HTTP/") {
        Some([digit, ..]) if digit.is_ascii_digit() => {
            RequestError::VersionNotSupported(excerpt(version))
        }
        _ => RequestError::Malformed(describe(httparse::Error::Version)),
    }
}

fn checked_head(
    request: &httparse::Request<'_, '_>,
    len: usize,
    limits: &Limits,
) -> Result<ParsedHead, RequestError> {
    let token = request.method.unwrap_or_default();
    let method = Method::from_token(token)
        .ok_or_else(|| RequestError::MethodNotImplemented(excerpt(token.as_bytes())))?;
    let version = match request.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    let (path, query) = split_target(method, request.path.unwrap_or_default())?;
    let headers = Headers(
        request
            .headers
            .iter()
            .map(|h| Header {
                name: h.name.to_owned(),
                value: h.value.to_vec(),
            })
            .collect(),
    );
    match headers.get_all("host").count() {
        0 if version == Version::Http11 => return Err(RequestError::MissingHost),
        0 | 1 => {}
        _ => return Err(RequestError::DuplicateHost),
    }
    let framing = body_framing(&headers, version, limits)?;
    let closes = headers.contains_token("connection", "close");
    let keep_alive = match version {
        Version::Http11 => !closes,
        Version::Http10 => !closes && headers.contains_token("connection", "keep-alive"),
    };
    // RFC 9110 §10.1.1: a server ignores 100-continue in an HTTP/1.0 request.
    let expects_continue = version == Version::Http11
        && framing != BodyFraming::Empty
        && headers.contains_token("expect", "100-continue");
    Ok(ParsedHead {
        method,
        path,
        query,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
        len,
    })
}

/// The path and query of a request target in origin form (`/a?b`), absolute form
/// (`http://host/a?b`, RFC 9112 §3.2.2) or asterisk form (`*`, OPTIONS only). The path stays
/// percent-encoded.
fn split_target(method: Method, target: &str) -> Result<(String, Option<String>), RequestError> {
    let bad = || RequestError::BadTarget(excerpt(target.as_bytes()));
    if !target.is_ascii() || target.contains('#') {
        return Err(bad());
    }
    if target == "*" {
        return match method {
            Method::Options => Ok(("*".to_owned(), None)),
            _ => Err(bad()),
        };
    }
    let origin_form = if target.starts_with('/') {
        target
    } else {
        let scheme_end = target.find("://").ok_or_else(bad)?;
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad());
        }
        let rest = &target[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if authority_end == 0 {
            return Err(bad());
        }
        &rest[authority_end..]
    };
    let (path, query) = match origin_form.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (origin_form, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_owned(), query))
}

/// The body's framing per RFC 9112 §6.3, refusing every ambiguous case instead of picking one.
fn body_framing(
    headers: &Headers,
    version: Version,
    limits: &Limits,
) -> Result<BodyFraming, RequestError> {
    let lengths: Vec<&[u8]> = headers.get_all("content-length").collect();
    let codings: Vec<&[u8]> = headers
        .get_all("transfer-encoding")
        .flat_map(list_elements)
        .collect();
    let has_transfer_encoding = headers.get("transfer-encoding").is_some();
    if has_transfer_encoding {
        if !lengths.is_empty() {
            return Err(RequestError::LengthWithTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(RequestError::TransferEncodingInHttp10);
        }
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let all = || {
            let joined: Vec<u8> = codings.join(&b',');
            RequestError::ChunkedNotFinal(excerpt(&joined))
        };
        let chunked_count = codings.iter().filter(|c| chunked(c)).count();
        if !codings.last().is_some_and(|c| chunked(c)) || chunked_count > 1 {
            return Err(all());
        }
        if let Some(other) = codings.iter().find(|c| !chunked(c)) {
            return Err(RequestError::UnsupportedTransferCoding(excerpt(other)));
        }
        if !limits.accept_chunked {
            return Err(RequestError::LengthRequired);
        }
        return Ok(BodyFraming::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(BodyFraming::Empty),
        [value] => {
            let len = parse_length(value)?;
            if len > limits.max_body_bytes {
                return Err(RequestError::BodyTooLarge {
                    max: limits.max_body_bytes,
                });
            }
            Ok(match len {
                0 => BodyFraming::Empty,
                len => BodyFraming::Length(len),
            })
        }
        _ => Err(RequestError::DuplicateContentLength),
    }
}

/// `1*DIGIT` and nothing else: no sign, no list (`5, 5` is a duplicate in disguise), no overflow.
fn parse_length(value: &[u8]) -> Result<usize, RequestError> {
    let bad = || RequestError::BadContentLength(excerpt(value));
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    value.iter().try_fold(0usize, |len, &digit| {
        len.checked_mul(10)
            .and_then(|len| len.checked_add(usize::from(digit - b'0')))
            .ok_or_else(bad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<ParsedHead, RequestError> {
        match read_head(text.as_bytes(), &Limits::default())? {
            HeadProgress::Complete(head) => Ok(head),
            HeadProgress::Partial => panic!("partial: {text:?}"),
        }
    }

    #[test]
    fn request_targets_in_every_form() {
        let h = head("GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\n\r\n").expect("origin form");
        assert_eq!(
            (h.path.as_str(), h.query.as_deref()),
            ("/a/b", Some("x=1&y"))
        );
        let h = head("GET http://h:80/a?q HTTP/1.1\r\nHost: h\r\n\r\n").expect("absolute form");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/a", Some("q")));
        let h = head("GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n").expect("no path");
        assert_eq!(h.path, "/");
        let h = head("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").expect("asterisk form");
        assert_eq!(h.path, "*");
        for bad in ["*", "a/b", "ftp://h/", "http:///x", "/a#frag", "/caf\u{e9}"] {
            let text = format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert!(
                matches!(head(&text), Err(RequestError::BadTarget(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_in_lists_are_found_case_insensitively() {
        let h = head("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive , Upgrade\r\nConnection: ,TE\r\n\r\n")
            .expect("head");
        assert!(h.headers.contains_token("CONNECTION", "upgrade"));
        assert!(h.headers.contains_token("connection", "te"));
        assert!(!h.headers.contains_token("connection", "close"));
        assert_eq!(h.headers.get_str("host"), Some("h"));
        assert_eq!(h.headers.len(), 3);
    }

    #[test]
    fn lengths_must_be_plain_digits_that_fit() {
        assert_eq!(parse_length(b"0"), Ok(0));
        assert_eq!(parse_length(b"0012"), Ok(12));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"5, 5",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert!(parse_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expect_continue_only_for_a_body_over_http_11() {
        let with_body =
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(head(with_body).expect("head").expects_continue);
        let without = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
        assert!(!head(without).expect("head").expects_continue);
        let old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(!head(old).expect("head").expects_continue);
    }

    #[test]
    fn a_few_empty_lines_before_the_request_are_ignored_many_are_refused() {
        let h = head("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").expect("head");
        assert_eq!(h.len, 3 + "GET / HTTP/1.1\r\nHost: h\r\n\r\n".len());
        let many = format!("{}GET / HTTP/1.1\r\nHost: h\r\n\r\n", "\r\n".repeat(9));
        assert!(matches!(head(&many), Err(RequestError::Malformed(_))));
    }
}
