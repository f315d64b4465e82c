//! HTTP/1.1 for every port that speaks it, sans-IO: the request reader ([`RequestReader`]), the
//! response writer ([`Response`]) and the router ([`Router`]). The public ports (the WebSocket
//! upgrade, later the REST and device APIs) and the metrics port all read and answer through this
//! module, so framing rules, limits and error answers are the same everywhere.
//!
//! Nothing here touches a socket or a clock. The caller owns the bytes and the deadlines: it feeds
//! the reader what arrived so far, arms a header or body deadline from the [`Phase`] the reader
//! reports, and writes out the bytes the writer produced.
//!
//! The rules are RFC 9112 (message syntax, framing, persistence) and RFC 9110 (methods, status
//! codes). Where the RFCs let a server choose, this module picks the strict answer: duplicate
//! `Content-Length`, `Content-Length` next to `Transfer-Encoding`, obsolete line folding and a
//! missing `Host` are refused, not guessed at.

mod chunked;
mod error;
mod head;
mod reader;
mod response;
mod router;
#[cfg(test)]
mod tests;

pub use error::RequestError;
pub use head::{Header, Headers};
pub use reader::{Parsed, Phase, Request, RequestReader};
pub use response::{Response, TEXT_PLAIN, WriteMode, reason_phrase};
pub use router::{Match, Miss, RouteError, Router};

/// Default for [`Limits::max_head_bytes`]: request line plus header fields plus the blank line.
/// Scrapers and WebSocket clients send a few hundred bytes.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 * 1024;
/// Default for [`Limits::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 32;
/// Hard ceiling on [`Limits::max_headers`]: the parser's header table lives on the stack.
pub const MAX_HEADERS_CEILING: usize = 128;
/// Default for [`Limits::max_body_bytes`].
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest chunk-size line of a chunked body (size, extensions, CRLF).
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Most bytes of trailer fields after the last chunk (read, bounded, ignored).
pub const MAX_TRAILER_BYTES: usize = 4 * 1024;
/// Chunked framing (size lines, extensions, CRLFs) may cost at most the body limit plus this, so
/// a body of tiny chunks cannot make the caller buffer many times the body limit (413 beyond).
pub const CHUNKED_OVERHEAD_ALLOWANCE: usize = 4 * 1024;

/// What one request may cost the reader's caller. Every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of request head; beyond it the answer is 414 (request line not finished) or
    /// 431. Default [`DEFAULT_MAX_HEAD_BYTES`].
    pub max_head_bytes: usize,
    /// Most header fields; one more is 431. Default [`DEFAULT_MAX_HEADERS`], at most
    /// [`MAX_HEADERS_CEILING`] (larger values are clamped).
    pub max_headers: usize,
    /// Most bytes of decoded body; a longer one is 413, refused from its `Content-Length` before
    /// any body byte is awaited. Default [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// Whether a chunked body is accepted; if not, it is refused with 411 (send a length).
    /// Default true.
    pub accept_chunked: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            accept_chunked: true,
        }
    }
}

/// The request methods this module knows (RFC 9110 §9, plus PATCH). `CONNECT` and any other
/// token are refused by the reader with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Trace,
}

impl Method {
    /// Every method, in the order an `Allow` header lists them.
    pub const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Trace,
    ];

    /// The method's token. Methods are case-sensitive: `get` is not `GET`.
    pub fn from_token(token: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == token)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol version of a request. Anything else is refused with 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}
