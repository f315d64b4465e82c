//! Taking new connections off a shard's listeners: accepting within a per-wake budget, asking
//! admission control (per-source caps, accept-rate buckets, the pre-login cap) and the shard's
//! output budget, and pausing on descriptor exhaustion instead of spinning. The admitted sockets
//! go back to the shard, which opens them (`shard.rs`); the refused ones are closed here, counted,
//! and logged at powers of two so a flood cannot flood the log too.

use crate::conn::Transport;
use crate::guard::admission::{Admit, Guards, Refusal};
use crate::guard::security_events::ConnectionEvent;
use crate::guard::security_log as security;
use crate::metrics::shard::{Rejection, ShardMetrics};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Accepts per listener per wake-up.
pub const ACCEPT_BUDGET: usize = 256;

/// How long accepting pauses after the process ran out of file descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A connection admission let in.
#[derive(Debug)]
pub struct Accepted {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub transport: Transport,
}

/// The state of one accept pass, from the shard.
#[derive(Debug, Clone, Copy)]
pub struct AcceptContext {
    pub now: Instant,
    /// The shard's outbound queues hold more than its output budget: refuse new connections.
    pub output_full: bool,
    /// Connections open on the shard (for the log).
    pub open: usize,
}

/// A shard's listeners and whether accepting is paused.
pub struct Acceptor {
    shard: u16,
    listeners: Vec<(Token, TcpListener, Transport)>,
    /// Accepting resumes at this time (at once after a spent budget: the listener's edge will not
    /// fire again for connections already waiting in its backlog).
    paused_until: Option<Instant>,
    /// Accepting stopped because descriptors (or kernel memory) ran out; a close resumes it.
    starved: bool,
}

impl Acceptor {
    /// Registers the listeners, each under its token.
    pub fn new(
        shard: u16,
        registry: &Registry,
        listeners: Vec<(Token, std::net::TcpListener, Transport)>,
    ) -> io::Result<Self> {
        let mut registered = Vec::new();
        for (token, listener, transport) in listeners {
            let mut listener = TcpListener::from_std(listener);
            registry.register(&mut listener, token, Interest::READABLE)?;
            registered.push((token, listener, transport));
        }
        Ok(Self {
            shard,
            listeners: registered,
            paused_until: None,
            starved: false,
        })
    }

    pub fn tokens(&self) -> Vec<Token> {
        self.listeners.iter().map(|(token, _, _)| *token).collect()
    }

    /// When accepting resumes, if it is paused.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Whether the pause is over (then it is lifted).
    pub fn resume_due(&mut self, now: Instant) -> bool {
        let due = self.paused_until.is_some_and(|until| now >= until);
        if due {
            self.paused_until = None;
        }
        due
    }

    /// A connection closed: if accepting starved for descriptors, try again on this loop turn.
    pub fn descriptor_freed(&mut self, now: Instant) {
        if self.starved {
            self.paused_until = Some(now);
        }
    }

    /// Closes the listeners (the shutdown drain): no new connection is accepted.
    pub fn close(&mut self, registry: &Registry) {
        for (_, listener, _) in &mut self.listeners {
            let _ = registry.deregister(listener);
        }
        self.listeners.clear();
    }

    /// Accepts from the listener of `token`, within the budget, into `admitted`.
    pub fn accept(
        &mut self,
        token: Token,
        context: AcceptContext,
        guards: &Guards,
        metrics: &ShardMetrics,
        admitted: &mut Vec<Accepted>,
    ) {
        if self.paused_until.is_some() {
            return;
        }
        let Some(index) = self.listeners.iter().position(|(t, _, _)| *t == token) else {
            return;
        };
        let transport = self.listeners[index].2;
        for _ in 0..ACCEPT_BUDGET {
            let (socket, peer) = match self.listeners[index].1.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: the pending connection stays in the kernel
                    // backlog. Pause instead of spinning on it; the next close (or the pause
                    // timer, for descriptors freed elsewhere in the process) resumes accepting.
                    if !self.starved {
                        tracing::warn!(target: "security", shard = self.shard, error = %e, open = context.open, "accept failed; pausing accepts until a connection closes");
                        metrics.reject(Rejection::AcceptFailed);
                    }
                    self.starved = true;
                    self.paused_until = Some(context.now + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.starved {
                self.starved = false;
                tracing::info!(shard = self.shard, open = context.open, "accepting again");
            }
            if context.output_full {
                // Memory for answers is spent on the connections we have: serve them first.
                self.refuse(peer, Refusal::OutputBudget, metrics);
                continue;
            }
            if let Admit::Refused(refusal) = guards.admission().admit(peer.ip(), context.now) {
                self.refuse(peer, refusal, metrics);
                continue;
            }
            admitted.push(Accepted {
                socket,
                peer,
                transport,
            });
        }
        // Budget used up: more may be waiting, and edge-triggered readiness will not say so again.
        self.paused_until = Some(context.now);
    }

    /// A connection refused at accept: its socket is dropped (closed) by the caller. Logged on the
    /// security target at powers of two per shard.
    fn refuse(&self, peer: SocketAddr, refusal: Refusal, metrics: &ShardMetrics) {
        metrics.reject(Rejection::AdmissionLimit);
        let refused = metrics.rejected(Rejection::AdmissionLimit);
        if refused.is_power_of_two() {
            security::record(
                "reactor",
                &ConnectionEvent::RefusedAtAccept {
                    peer,
                    reason: format!(
                        "{} ({refusal:?}); {refused} refused by shard {} so far (logged at powers of two)",
                        refusal.name(),
                        self.shard
                    ),
                },
            );
        } else {
            tracing::debug!(%peer, reason = refusal.name(), "connection refused at accept");
        }
    }
}
