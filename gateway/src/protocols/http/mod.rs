//! HTTP/1.1 on the public ports: requests read with `portcullis_protocol::http` (keep-alive,
//! bodies under a size limit, pipelining), routed through one table (`routes.rs`), answered with
//! the one response writer the metrics port uses too. A route either answers (and the connection
//! stays open when the request allows it) or hands the connection to another protocol: today the
//! upgrade to the app WebSocket (`upgrade.rs`). A request no route serves is answered 404 or 405
//! and the connection stays open, up to [`MAX_MISSES_PER_CONNECTION`] such answers (a scanner
//! walking paths gets closed, a client with one wrong URL does not lose its connection). A
//! request the reader or its route refuses (malformed, too large, a bad upgrade) is answered
//! with a status that says why, and the connection closes: its framing cannot be trusted.
//!
//! Deadlines: the first request of a connection must arrive within the connection's login
//! deadline, like anything before a login; on a kept-alive connection, each later request has
//! [`HEAD_DEADLINE`] for its head from its first byte and [`BODY_DEADLINE`] for its body, and a
//! connection idle between requests for [`KEEP_ALIVE_IDLE`] is closed. A deadline moves only
//! when the phase changes, so a client trickling bytes cannot keep extending it.

pub mod rest;
pub mod routes;
pub mod upgrade;

use super::{InputLimit, Progress, ProtocolLimits, Session, Step};
use crate::conn::CloseReason;
use crate::conn::Transport;
use portcullis_protocol::http::{
    CHUNKED_OVERHEAD_ALLOWANCE, Limits, Parsed, Phase, Request, RequestReader, Response, WriteMode,
};
use rest::RestCall;
use routes::Route;
use std::collections::VecDeque;
use std::time::Duration;

/// A later request's head must be complete this long after its first byte.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// A request's body must be complete this long after its head.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// A kept-alive connection with no request for this long is closed.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(60);
/// Largest request body the public ports accept (no route takes one yet).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Requests for paths (or methods) not served that one connection gets answered; the last of
/// them closes it.
pub const MAX_MISSES_PER_CONNECTION: u32 = 8;
/// Requests a client may pipeline behind one that is being worked on (a REST call on a
/// worker); beyond them the connection's input waits unread.
pub const MAX_QUEUED_REQUESTS: usize = 16;

/// What a route makes of one complete request.
#[derive(Debug)]
pub enum Answer {
    /// Answered; the connection stays open when the request allows it.
    Served(Response),
    /// No route serves it (404, 405): answered, and counted against
    /// [`MAX_MISSES_PER_CONNECTION`].
    Miss { response: Response, why: String },
    /// Answered (`101 Switching Protocols`), then the connection speaks another protocol.
    Upgrade(Response, Route),
    /// Refused by its route: answered, then closed.
    Refused { response: Response, why: String },
    /// Answered by a worker (a REST call): the connection waits for it, and requests pipelined
    /// behind it wait their turn.
    Work(Box<RestCall>),
}

/// Where the connection stands between two reads, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Between requests: nothing of the next one has arrived.
    Idle,
    /// Part of a request has arrived.
    Request(Phase),
}

/// What one pass over the received bytes came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every complete request is answered; the connection waits.
    Waiting(Waiting),
    /// The connection now speaks another protocol, from byte `used` on.
    Upgrade(Route),
    /// The last answer closes the connection, for this reason.
    Close(CloseReason),
    /// This call goes to a worker; its answer comes back through [`HttpSession::on_work_done`].
    Working(Box<RestCall>),
}

/// The answers of one pass and how far it got.
#[derive(Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Bytes of complete requests; the rest is kept for the next pass.
    pub used: usize,
    /// Each answer's bytes, in order.
    pub answers: Vec<Vec<u8>>,
    pub outcome: Outcome,
}

/// An HTTP connection.
#[derive(Debug)]
pub struct HttpSession {
    reader: RequestReader,
    /// Requests answered so far on this connection.
    answered: u32,
    /// Of those, requests no route served.
    misses: u32,
    /// The phase whose deadline was set last (a deadline moves only when this changes).
    armed: Option<Waiting>,
    /// `100 Continue` was sent for the current request.
    continued: bool,
    /// How the answer of the request on a worker is framed, while one is.
    working: Option<WriteMode>,
    /// Requests that arrived while one was on a worker, in order.
    queued: VecDeque<Request>,
    /// A request the reader refused while one was on a worker: answered, and the connection
    /// closed, only after the answers of everything before it (HTTP answers go in order).
    refused_behind: Option<(Vec<u8>, CloseReason)>,
}

impl HttpSession {
    /// A session whose request heads may be `max_head_bytes` long.
    pub fn new(max_head_bytes: usize) -> Self {
        Self {
            reader: RequestReader::new(Limits {
                max_head_bytes,
                max_body_bytes: MAX_BODY_BYTES,
                ..Limits::default()
            }),
            answered: 0,
            misses: 0,
            armed: None,
            continued: false,
            working: None,
            queued: VecDeque::new(),
            refused_behind: None,
        }
    }

    /// Reads every complete request in `input` and answers each with `answer` (sans-IO; the
    /// public ports pass [`answer`], tests their own).
    pub fn exchange(&mut self, input: &[u8], answer: impl Fn(&Request) -> Answer) -> Exchange {
        let mut used = 0;
        let mut answers = Vec::new();
        let outcome = loop {
            if self.working.is_some()
                && (self.queued.len() >= MAX_QUEUED_REQUESTS || self.refused_behind.is_some())
            {
                break Outcome::Waiting(Waiting::Request(Phase::Head));
            }
            match self.reader.read(&input[used..]) {
                Ok(Parsed::NeedMore(phase)) => {
                    // While an answer is on a worker, `100 Continue` waits: it would go out
                    // before that answer.
                    if self.reader.awaits_continue() && !self.continued && self.working.is_none() {
                        self.continued = true;
                        answers.push(Response::new(100).to_bytes(WriteMode::KEEP_ALIVE));
                    }
                    let waiting = if phase == Phase::Head && used == input.len() {
                        Waiting::Idle
                    } else {
                        Waiting::Request(phase)
                    };
                    break Outcome::Waiting(waiting);
                }
                Ok(Parsed::Complete { request, used: n }) => {
                    used += n;
                    self.continued = false;
                    if self.working.is_some() {
                        self.queued.push_back(request);
                        continue;
                    }
                    if let Some(outcome) = self.take(&request, &answer, &mut answers) {
                        break outcome;
                    }
                }
                Err(refused) => {
                    let answer = refused.response().to_bytes(WriteMode::CLOSE);
                    let reason = CloseReason::HttpRefused {
                        status: refused.status(),
                        why: refused.to_string(),
                    };
                    used = input.len();
                    if self.working.is_some() {
                        self.refused_behind = Some((answer, reason));
                        break Outcome::Waiting(Waiting::Request(Phase::Head));
                    }
                    answers.push(answer);
                    break Outcome::Close(reason);
                }
            }
        };
        Exchange {
            used,
            answers,
            outcome,
        }
    }

    /// Answers one request into `answers`; what it does to the connection (`None`: it goes on).
    fn take(
        &mut self,
        request: &Request,
        answer: &impl Fn(&Request) -> Answer,
        answers: &mut Vec<Vec<u8>>,
    ) -> Option<Outcome> {
        self.answered += 1;
        let decided = match answer(request) {
            Answer::Work(call) => {
                self.working = Some(WriteMode::answering(request, false));
                return Some(Outcome::Working(call));
            }
            other => other,
        };
        let (response, mode, outcome) = self.decide(request, decided);
        answers.push(response.to_bytes(mode));
        if outcome.is_some() {
            return outcome;
        }
        mode.close.then_some(Outcome::Close(CloseReason::Finished(
            "the HTTP client asked to close",
        )))
    }

    /// A worker's answer to the call the connection waits for: sent, then the requests that
    /// queued up behind it are answered in order (until one goes to a worker in turn).
    pub fn on_work_done(&mut self, done: rest::Done, step: &mut Step<'_>) {
        let Some(mode) = self.working.take() else {
            tracing::debug!("an HTTP answer nobody waits for");
            return;
        };
        let mut answers = vec![done.response.to_bytes(mode)];
        let mut outcome = mode.close.then_some(Outcome::Close(CloseReason::Finished(
            "the HTTP client asked to close",
        )));
        while outcome.is_none() {
            let Some(request) = self.queued.pop_front() else {
                break;
            };
            outcome = self.take(&request, &answer, &mut answers);
        }
        if outcome.is_none()
            && let Some((refusal, reason)) = self.refused_behind.take()
        {
            answers.push(refusal);
            outcome = Some(Outcome::Close(reason));
        }
        self.settle(
            answers,
            outcome.unwrap_or(Outcome::Waiting(Waiting::Idle)),
            step,
        );
    }

    /// How an answer is framed and what it does to the connection (`None`: it goes on).
    fn decide(
        &mut self,
        request: &Request,
        answer: Answer,
    ) -> (Response, WriteMode, Option<Outcome>) {
        match answer {
            Answer::Served(response) => (response, WriteMode::answering(request, false), None),
            Answer::Miss { response, why } => {
                self.misses += 1;
                if self.misses < MAX_MISSES_PER_CONNECTION {
                    tracing::debug!(path = %request.path, status = response.status(), "HTTP path not served");
                    return (response, WriteMode::answering(request, false), None);
                }
                let why = format!(
                    "{why} (request {MAX_MISSES_PER_CONNECTION} for paths not served on this connection)"
                );
                refusal(request, response, why)
            }
            Answer::Upgrade(response, route) => (
                response,
                WriteMode::KEEP_ALIVE,
                Some(Outcome::Upgrade(route)),
            ),
            Answer::Refused { response, why } => refusal(request, response, why),
            // `take` hands work out before deciding; a second look finds none.
            Answer::Work(_) => {
                let response = rest::internal_error("a call was decided twice");
                refusal(request, response, "an internal error".into())
            }
        }
    }

    /// Bytes from the peer: answered through the outbox, the connection moved on accordingly.
    pub fn receive(&mut self, input: &[u8], step: &mut Step<'_>) -> Progress {
        self.receive_with(input, step, answer)
    }

    /// [`Self::receive`] with the answers of `answer`.
    pub fn receive_with(
        &mut self,
        input: &[u8],
        step: &mut Step<'_>,
        answer: impl Fn(&Request) -> Answer,
    ) -> Progress {
        let exchange = self.exchange(input, answer);
        self.settle(exchange.answers, exchange.outcome, step);
        Progress {
            used: exchange.used,
            paused: false,
        }
    }

    /// Sends `answers` and carries `outcome` out.
    fn settle(&mut self, answers: Vec<Vec<u8>>, outcome: Outcome, step: &mut Step<'_>) {
        for answer in &answers {
            step.out.raw(answer);
        }
        match outcome {
            Outcome::Waiting(waiting) => {
                // The first request is under the connection's login deadline.
                if self.answered > 0 && self.armed != Some(waiting) {
                    self.armed = Some(waiting);
                    step.out.deadline = Some(match waiting {
                        Waiting::Idle => KEEP_ALIVE_IDLE,
                        Waiting::Request(Phase::Head) => HEAD_DEADLINE,
                        Waiting::Request(Phase::Body) => BODY_DEADLINE,
                    });
                }
            }
            Outcome::Upgrade(Route::Rest(_)) => step
                .out
                .close(CloseReason::Finished("a REST route cannot upgrade")),
            Outcome::Upgrade(Route::AppWebSocket) => {
                step.out.upgrade = Some(Session::AppWs(Box::default()));
                // An app receives streams of events: a larger send buffer than a device's.
                step.out.send_buffer = Some(step.services.limits.app_socket_send_buffer_bytes);
            }
            Outcome::Close(reason) => step.out.close(reason),
            Outcome::Working(_)
                if step.conn.transport == Transport::Plain && !step.services.rest.on_plain_port =>
            {
                let why = "the REST API is served on the TLS port only (accounts.rest_on_plain_port = false)";
                let response = rest::refusal(404, why);
                self.on_work_done(rest::Done { response }, step);
            }
            Outcome::Working(mut call) => {
                call.peer = Some(step.conn.peer);
                step.out.jobs.push(rest::job(*call, &step.services.rest));
                // A call on a worker is bounded by the worker's store timeout, not the client.
                self.armed = None;
                step.out.deadline = Some(rest::CALL_DEADLINE);
            }
        }
    }

    pub fn on_deadline(&self) -> CloseReason {
        match self.armed {
            _ if self.answered == 0 => CloseReason::LoginTimeout,
            Some(Waiting::Request(Phase::Body)) => CloseReason::HttpTimeout {
                what: "request body",
                secs: BODY_DEADLINE.as_secs(),
            },
            Some(Waiting::Request(Phase::Head)) => CloseReason::HttpTimeout {
                what: "request head",
                secs: HEAD_DEADLINE.as_secs(),
            },
            Some(Waiting::Idle) | None => CloseReason::HttpTimeout {
                what: "next request",
                secs: KEEP_ALIVE_IDLE.as_secs(),
            },
        }
    }

    /// What the reader may hold: a whole head and body with its chunked framing. The reader
    /// refuses more with a status; this is the backstop behind it.
    pub fn input_limit(&self, _limits: &ProtocolLimits) -> InputLimit {
        let limits = self.reader.limits();
        InputLimit::PreAuth(
            limits.max_head_bytes + limits.max_body_bytes + CHUNKED_OVERHEAD_ALLOWANCE,
        )
    }
}

/// A refusal: answered with `Connection: close`, then the connection closes saying why.
fn refusal(
    request: &Request,
    response: Response,
    why: String,
) -> (Response, WriteMode, Option<Outcome>) {
    let status = response.status();
    let close = Outcome::Close(CloseReason::HttpRefused { status, why });
    (response, WriteMode::answering(request, true), Some(close))
}

/// The answer of the public ports to one complete request.
pub fn answer(request: &Request) -> Answer {
    match routes::router().route(request.method, &request.path) {
        Ok(found) => match found.value {
            Route::AppWebSocket => match upgrade::accept(request) {
                Ok(switching) => Answer::Upgrade(switching, Route::AppWebSocket),
                Err(refused) => Answer::Refused {
                    response: Response::text(refused.status, format!("{}\n", refused.why)),
                    why: refused.why,
                },
            },
            Route::Rest(endpoint) => rest::call(*endpoint, &found.params, request),
        },
        Err(miss) => {
            let why = match miss.allow() {
                None => routes::not_served(&request.path),
                Some(allow) => format!(
                    "{} is not allowed on {:?}; use {allow}",
                    request.method.as_str(),
                    request.path
                ),
            };
            Answer::Miss {
                response: miss.response(format!("{why}\n")),
                why,
            }
        }
    }
}

#[cfg(test)]
mod tests;
