//! The request reader: fed the bytes of a connection received so far, it answers "need more"
//! (in the head or in the body, so the caller can arm the matching deadline), a complete
//! [`Request`] with the number of bytes it used (the next pipelined request starts right after),
//! or a [`RequestError`] to answer and close on.
//!
//! The reader is a small state machine and keeps no bytes of its own; the caller's buffer does.
//! Its answer depends only on the bytes, never on how they were cut into reads.

use super::chunked::ChunkedDecoder;
use super::error::RequestError;
use super::head::{self, BodyFraming, HeadProgress, Headers, ParsedHead};
use super::{Limits, Method, Version};

/// Where a request that is not complete yet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Request line and header fields: the header deadline applies.
    Head,
    /// The head is complete and checked; the body is arriving: the body deadline applies.
    Body,
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a complete request yet; read more and call again with the grown buffer.
    NeedMore(Phase),
    /// A complete request that occupied the first `used` bytes of the buffer. Drop them; what
    /// follows is the next request (pipelining), to be read with the same reader.
    Complete { request: Request, used: usize },
}

/// A complete request, owned, every part bounded by the reader's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path of the request target, still percent-encoded; `*` for `OPTIONS *`. Always
    /// starts with `/` otherwise (an absolute-form target is reduced to its path).
    pub path: String,
    /// What followed the first `?` of the target, still percent-encoded.
    pub query: Option<String>,
    pub version: Version,
    pub headers: Headers,
    /// The decoded body (chunked framing removed; trailer fields ignored).
    pub body: Vec<u8>,
    /// Whether the connection persists after the answer (RFC 9112 §9.3): HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`. The server may still
    /// close; the writer says so in the answer.
    pub keep_alive: bool,
}

impl Request {
    /// The value of the first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}

#[derive(Debug, Clone)]
enum Body {
    Length(usize),
    Chunked(ChunkedDecoder),
}

#[derive(Debug, Clone)]
enum State {
    /// Reading the head; the first `examined` bytes held no complete head.
    Head { examined: usize },
    Body {
        head: Box<ParsedHead>,
        body: Body,
        started: bool,
    },
    /// A refusal was returned; the connection must close, so every later call repeats it.
    Failed(RequestError),
}

enum HeadStep {
    Waiting { examined: usize },
    Complete(ParsedHead),
}

/// Reads the requests of one connection, one after another.
///
/// Contract: the buffer passed to [`read`](Self::read) starts at the first byte of the current
/// request and only grows between calls, until the reader answers `Complete { used, .. }`; then
/// the caller drops `used` bytes from the front and goes on with the rest.
#[derive(Debug, Clone)]
pub struct RequestReader {
    limits: Limits,
    state: State,
}

impl RequestReader {
    pub fn new(limits: Limits) -> RequestReader {
        RequestReader {
            limits,
            state: State::Head { examined: 0 },
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the current request stands (before any byte of it: [`Phase::Head`]).
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Body { .. } => Phase::Body,
            State::Head { .. } | State::Failed(_) => Phase::Head,
        }
    }

    /// True while the current request's head asked for `Expect: 100-continue` and no byte of its
    /// body has arrived: the caller may send `100 Continue` (once) so the client sends the body.
    pub fn awaits_continue(&self) -> bool {
        matches!(&self.state, State::Body { head, started: false, .. } if head.expects_continue)
    }

    /// Reads what `buf` holds of the current request.
    pub fn read(&mut self, buf: &[u8]) -> Result<Parsed, RequestError> {
        match self.advance(buf) {
            Ok(parsed) => Ok(parsed),
            Err(error) => {
                self.state = State::Failed(error.clone());
                Err(error)
            }
        }
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Parsed, RequestError> {
        let state = std::mem::replace(&mut self.state, State::Head { examined: 0 });
        let (head, mut body, started) = match state {
            State::Failed(error) => return Err(error),
            State::Body {
                head,
                body,
                started,
            } => (head, body, started),
            State::Head { examined } => match self.read_head(examined, buf)? {
                HeadStep::Complete(head) => {
                    let body = self.body_of(&head);
                    (Box::new(head), body, false)
                }
                HeadStep::Waiting { examined } => {
                    self.state = State::Head { examined };
                    return Ok(Parsed::NeedMore(Phase::Head));
                }
            },
        };
        let started = started || buf.len() > head.len;
        let end = match &mut body {
            Body::Length(len) => {
                let end = head.len + *len;
                (buf.len() >= end).then_some(end)
            }
            Body::Chunked(decoder) => decoder.feed(buf)?,
        };
        let Some(used) = end else {
            self.state = State::Body {
                head,
                body,
                started,
            };
            return Ok(Parsed::NeedMore(Phase::Body));
        };
        let body = match body {
            Body::Length(_) => buf[head.len..used].to_vec(),
            Body::Chunked(decoder) => decoder.into_body(),
        };
        let head = *head;
        let request = Request {
            method: head.method,
            path: head.path,
            query: head.query,
            version: head.version,
            headers: head.headers,
            body,
            keep_alive: head.keep_alive,
        };
        Ok(Parsed::Complete { request, used })
    }

    /// The complete head, or how many bytes have been examined without finding one. The head's
    /// answer only changes when a line ends or the size limit is reached, so httparse runs only
    /// then: a head trickling in byte by byte is parsed once per line, not once per byte.
    fn read_head(&self, examined: usize, buf: &[u8]) -> Result<HeadStep, RequestError> {
        let max = self.limits.max_head_bytes;
        let window = buf.len().min(max);
        let new = buf.get(examined..window).unwrap_or_default();
        let full = buf.len() >= max;
        if !full && !new.contains(&b'\n') {
            return Ok(HeadStep::Waiting { examined: window });
        }
        Ok(match head::read_head(buf, &self.limits)? {
            HeadProgress::Partial => HeadStep::Waiting { examined: window },
            HeadProgress::Complete(head) => HeadStep::Complete(head),
        })
    }

    fn body_of(&self, head: &ParsedHead) -> Body {
        match head.framing {
            BodyFraming::Empty => Body::Length(0),
            BodyFraming::Length(len) => Body::Length(len),
            BodyFraming::Chunked => {
                Body::Chunked(ChunkedDecoder::new(head.len, self.limits.max_body_bytes))
            }
        }
    }
}
