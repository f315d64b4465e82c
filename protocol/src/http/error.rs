//! Why a request cannot be served, and the HTTP status that says so. Every variant is the peer's
//! fault: the reader refuses what RFC 9112 forbids or what exceeds a limit the caller set. After
//! any of them the connection closes, since the framing of what follows cannot be trusted.

use super::response::Response;
use thiserror::Error;

/// Longest excerpt of peer input quoted in an error (and so in a log line and an answer body).
const MAX_EXCERPT: usize = 32;

/// A request the reader refuses. [`RequestError::status`] is the status to answer with;
/// [`RequestError::response`] the whole answer (plain text saying why). The peer's fault, always.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The head is not HTTP/1.x syntax (bad token, bad line ending, obsolete line folding, ...).
    #[error("unreadable HTTP request: {0}")]
    Malformed(&'static str),
    #[error("request line longer than {max} bytes")]
    RequestLineTooLong { max: usize },
    #[error("request head longer than {max} bytes")]
    HeadTooLarge { max: usize },
    #[error("more than {max} header fields")]
    TooManyHeaders { max: usize },
    #[error("HTTP version {0:?} is not supported")]
    VersionNotSupported(String),
    #[error("method {0:?} is not implemented")]
    MethodNotImplemented(String),
    #[error("request target {0:?} is not a path")]
    BadTarget(String),
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("Content-Length {0:?} is not a length")]
    BadContentLength(String),
    #[error("more than one Content-Length header")]
    DuplicateContentLength,
    #[error("Transfer-Encoding together with Content-Length")]
    LengthWithTransferEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("Transfer-Encoding {0:?} does not end in a single chunked")]
    ChunkedNotFinal(String),
    #[error("transfer coding {0:?} is not implemented")]
    UnsupportedTransferCoding(String),
    #[error("chunked bodies are not accepted here; send a Content-Length")]
    LengthRequired,
    #[error("request body over the limit of {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("chunked framing of the body costs more than {max} bytes")]
    ChunkedFramingTooLarge { max: usize },
    #[error("bad chunked body: {0}")]
    BadChunk(&'static str),
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    #[error("trailer fields longer than {max} bytes")]
    TrailersTooLarge { max: usize },
}

impl RequestError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::RequestLineTooLong { .. } => 414,
            RequestError::HeadTooLarge { .. }
            | RequestError::TooManyHeaders { .. }
            | RequestError::TrailersTooLarge { .. } => 431,
            RequestError::VersionNotSupported(_) => 505,
            RequestError::MethodNotImplemented(_) | RequestError::UnsupportedTransferCoding(_) => {
                501
            }
            RequestError::LengthRequired => 411,
            RequestError::BodyTooLarge { .. } | RequestError::ChunkedFramingTooLarge { .. } => 413,
            RequestError::Malformed(_)
            | RequestError::BadTarget(_)
            | RequestError::MissingHost
            | RequestError::DuplicateHost
            | RequestError::BadContentLength(_)
            | RequestError::DuplicateContentLength
            | RequestError::LengthWithTransferEncoding
            | RequestError::TransferEncodingInHttp10
            | RequestError::ChunkedNotFinal(_)
            | RequestError::BadChunk(_)
            | RequestError::ChunkSizeOverflow => 400,
        }
    }

    /// The answer to send before closing: the status and a plain-text line saying why.
    pub fn response(&self) -> Response {
        Response::text(self.status(), format!("{self}\n"))
    }
}

/// A bounded, lossy copy of peer bytes for an error message.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_EXCERPT)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(&[b'a'; 100]).len(), MAX_EXCERPT);
        assert_eq!(excerpt(b"gzip"), "gzip");
    }

    #[test]
    fn every_refusal_answers_with_its_status_and_reason() {
        let error = RequestError::BodyTooLarge { max: 10 };
        let response = error.response();
        assert_eq!(response.status(), 413);
        assert_eq!(
            response.body(),
            b"request body over the limit of 10 bytes\n"
        );
    }
}
