//! The revocation feed: one thread (`revocations`) polls the store's `Request::Revocations`
//! every [`REVOCATION_POLL_INTERVAL`] over its own blocking control link and hands each page to
//! every shard (`reactor/commands.rs`), which closes the live connections of the devices, users
//! and sessions it names. Re-provisioning a device makes its old token fail at the store at once;
//! this is what ends the session the old token already holds, on every shard of every gateway
//! sharing the store, within a poll interval plus a loop turn.
//!
//! **Where the feed starts.** The store's sequence has no "newest" to ask for, so the first poll
//! asks `after: 0` and takes the answer's `next` as the starting point, ignoring the entries of
//! that answer (and of the pages after it while they come back full, [`MAX_REVOCATIONS_PAGE`]):
//! they were revoked before this gateway held any session. `serve` takes that baseline on the
//! start-up control link before the shards accept anything ([`baseline`]), so no revocation
//! between the baseline and the first session is missed. When the store cannot give it then, the
//! poller takes it on its first successful poll; a revocation in between ends nothing on this
//! gateway (the store still refuses the old credential at its next login), and the start-up
//! log says so.
//!
//! **When the store is away** the poller retries with back-off ([`RETRY_INITIAL`] doubling up to
//! [`RETRY_MAX`]), logs the outage once when it starts and once when it ends, and keeps its
//! cursor: the pages it missed come when the store is back. An answer with `gap` means entries
//! were dropped before they were read (this gateway was cut off longer than
//! `REVOCATION_RETENTION_MS`): it is logged as a warning with what to do, and counted.

use crate::metrics::{GlobalMetrics, RevokedKind};
use crate::reactor::commands::{ShardCommand, ShardCommands};
use portcullis_protocol::store::{
    ClientHello, ClientRole, MAX_REVOCATIONS_PAGE, NodeName, REVOCATION_RETENTION_MS, Request,
    Response, RevocationPage, Revoked, TrafficLink,
};
use portcullis_store_client::{StoreClient, StoreClientError, StoreEndpoint};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the store's revocation feed is polled. A revoked session ends within this plus one
/// shard loop turn (the issue asks for one second); each poll is one small request on one link,
/// whatever the number of shards.
pub const REVOCATION_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Bound on connecting to the store and on one poll's answer.
pub const REVOCATION_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// First pause after a failed poll; doubled after each further failure up to [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(250);

/// Longest pause between polls while the store is away.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where the poller is in the store's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// No starting point yet: the next answer gives one, and its entries are not forwarded.
    Unknown,
    /// Taking the starting point, through pages that came back full: entries not forwarded.
    CatchingUp(u64),
    /// Forwarding every entry after this sequence.
    At(u64),
}

/// What one answer of the feed means for the poller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Entries to hand to the shards (none while the starting point is being taken).
    pub forward: Vec<Revoked>,
    /// The page was full: ask again at once.
    pub more: bool,
    /// The store had dropped entries after the cursor before they were read.
    pub gap: bool,
}

/// The feed's cursor and the rule of what to forward, without any IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedState {
    cursor: Cursor,
}

impl Default for FeedState {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedState {
    /// A poller that has not taken its starting point.
    pub fn new() -> Self {
        Self {
            cursor: Cursor::Unknown,
        }
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Whether the starting point is taken.
    pub fn has_baseline(&self) -> bool {
        matches!(self.cursor, Cursor::At(_))
    }

    /// The next poll.
    pub fn request(&self) -> Request {
        let after = match self.cursor {
            Cursor::Unknown => 0,
            Cursor::CatchingUp(after) | Cursor::At(after) => after,
        };
        Request::Revocations { after }
    }

    /// Takes in the answer to [`FeedState::request`].
    pub fn on_page(&mut self, page: RevocationPage) -> PageOutcome {
        let more = page.revoked.len() >= MAX_REVOCATIONS_PAGE as usize;
        match self.cursor {
            Cursor::Unknown | Cursor::CatchingUp(_) => {
                self.cursor = if more {
                    Cursor::CatchingUp(page.next)
                } else {
                    Cursor::At(page.next)
                };
                // What the baseline's answers name was revoked before any session of ours.
                PageOutcome {
                    forward: Vec::new(),
                    more,
                    gap: false,
                }
            }
            Cursor::At(after) => {
                if page.next < after {
                    tracing::warn!(
                        after,
                        next = page.next,
                        "the store's revocation sequence went back (a store restored from a \
                         backup?); following it from its new position"
                    );
                }
                self.cursor = Cursor::At(page.next);
                PageOutcome {
                    forward: page.revoked,
                    more,
                    gap: page.gap,
                }
            }
        }
    }
}

/// Takes the feed's starting point on `client` (the start-up control link), before any session
/// exists.
pub fn baseline(client: &mut StoreClient) -> Result<FeedState, StoreClientError> {
    let mut state = FeedState::new();
    while !state.has_baseline() {
        match client.call(state.request())? {
            Response::Revocations(page) => {
                state.on_page(page);
            }
            other => {
                return Err(StoreClientError::Protocol {
                    at: client.store_address().to_owned(),
                    detail: format!("Revocations answered with {}", response_kind(&other)),
                });
            }
        }
    }
    Ok(state)
}

/// An answer's kind, for messages (never its contents).
fn response_kind(response: &Response) -> String {
    let debug = format!("{response:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A stretch of failed polls.
#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u64,
    backoff: Duration,
}

/// The poll loop, generic over how it reaches the store and where the pages go, so tests run
/// it against the fake store and a channel.
pub struct RevocationPoller<C, S> {
    connect: C,
    sink: S,
    state: FeedState,
    client: Option<StoreClient>,
    metrics: Arc<GlobalMetrics>,
    outage: Option<Outage>,
    /// Whether the starting point was taken late (after start-up), said once when it is.
    late_baseline: bool,
}

impl<C, S> RevocationPoller<C, S>
where
    C: FnMut() -> Result<StoreClient, StoreClientError>,
    S: FnMut(Arc<[Revoked]>),
{
    pub fn new(connect: C, sink: S, state: FeedState, metrics: Arc<GlobalMetrics>) -> Self {
        Self {
            connect,
            sink,
            late_baseline: !state.has_baseline(),
            state,
            client: None,
            metrics,
            outage: None,
        }
    }

    /// Polls until `stop` is signalled (a message, or its sender dropped).
    pub fn run(mut self, stop: &Receiver<()>) {
        loop {
            let wait = self.poll_once();
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// One poll; returns how long to wait before the next.
    pub fn poll_once(&mut self) -> Duration {
        let client = match self.client.as_mut() {
            Some(client) => client,
            None => match (self.connect)() {
                Ok(client) => self.client.insert(client),
                Err(e) => return self.failed(&e),
            },
        };
        match client.call(self.state.request()) {
            Ok(Response::Revocations(page)) => {
                self.recovered();
                self.take(page)
            }
            Ok(other) => {
                let e = StoreClientError::Protocol {
                    at: client.store_address().to_owned(),
                    detail: format!("Revocations answered with {}", response_kind(&other)),
                };
                self.client = None;
                self.failed(&e)
            }
            // The store refused the request (a store without the feed): the link is fine.
            Err(e @ StoreClientError::Store(_)) => self.failed(&e),
            Err(e) => {
                self.client = None;
                self.failed(&e)
            }
        }
    }

    fn take(&mut self, page: RevocationPage) -> Duration {
        let outcome = self.state.on_page(page);
        if self.late_baseline && self.state.has_baseline() {
            self.late_baseline = false;
            tracing::warn!(
                "revocation feed started late (the store did not answer it at start-up): \
                 sessions revoked before now stay connected until they end (their credentials \
                 already fail at the store)"
            );
        }
        if outcome.gap {
            self.metrics.revocation_gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                retention_ms = REVOCATION_RETENTION_MS,
                "revocation feed gap: the store dropped revocations this gateway had not read \
                 (it was cut off from the store for longer than the retention). Devices \
                 re-provisioned and users suspended meanwhile may still be connected here; \
                 restart this gateway to end every session it holds, or check the audit log \
                 for what was revoked"
            );
        }
        if !outcome.forward.is_empty() {
            for entry in &outcome.forward {
                self.metrics.revocations_received[RevokedKind::of(entry) as usize]
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(
                revocations = outcome.forward.len(),
                "revocations for every shard"
            );
            (self.sink)(Arc::from(outcome.forward));
        }
        if outcome.more {
            Duration::ZERO
        } else {
            REVOCATION_POLL_INTERVAL
        }
    }

    fn failed(&mut self, error: &StoreClientError) -> Duration {
        self.metrics
            .revocation_feed_up
            .store(false, Ordering::Relaxed);
        match &mut self.outage {
            None => {
                tracing::warn!(
                    error = %error,
                    "revocation feed unavailable; retrying with back-off. Until it is back, \
                     sessions revoked at the store stay connected here (their credentials \
                     already fail at the store)"
                );
                self.outage = Some(Outage {
                    since: Instant::now(),
                    failures: 1,
                    backoff: RETRY_INITIAL,
                });
                RETRY_INITIAL
            }
            Some(outage) => {
                tracing::debug!(error = %error, failures = outage.failures, "revocation poll failed");
                outage.failures += 1;
                outage.backoff = (outage.backoff * 2).min(RETRY_MAX);
                outage.backoff
            }
        }
    }

    fn recovered(&mut self) {
        self.metrics
            .revocation_feed_up
            .store(true, Ordering::Relaxed);
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                failed_polls = outage.failures,
                after_ms = outage.since.elapsed().as_millis() as u64,
                "revocation feed back"
            );
        }
    }
}

/// The running poller thread.
pub struct PollerHandle {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl PollerHandle {
    /// Asks the poller to stop (it finishes the poll in progress, at most
    /// [`REVOCATION_CALL_TIMEOUT`]) and waits for it.
    pub fn stop(self) {
        // The poller may have gone already; dropping the sender stops it either way.
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the revocation poller panicked");
        }
    }
}

/// Starts the `revocations` thread: polls over its own control link and broadcasts each page to
/// the shards.
pub fn spawn(
    store: StoreEndpoint,
    node: NodeName,
    state: FeedState,
    commands: ShardCommands,
    metrics: Arc<GlobalMetrics>,
) -> io::Result<PollerHandle> {
    let (stop, stopped) = mpsc::channel();
    let connect = move || {
        StoreClient::connect_to(
            &store,
            ClientHello::new(
                node.clone(),
                ClientRole::DeviceTraffic(TrafficLink::Control),
            ),
            REVOCATION_CALL_TIMEOUT,
        )
    };
    let sink = move |page: Arc<[Revoked]>| {
        commands.broadcast(&ShardCommand::EndSessions(page));
    };
    let thread = std::thread::Builder::new()
        .name("revocations".into())
        .spawn(move || RevocationPoller::new(connect, sink, state, metrics).run(&stopped))?;
    Ok(PollerHandle { stop, thread })
}

#[cfg(test)]
#[path = "revocation_poller_tests.rs"]
mod tests;
