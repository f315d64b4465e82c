//! The shard's operational hooks, kept apart from the event loop: the shutdown drain step
//! (listeners close, connections are closed on the `DrainPlan` schedule) and the accounting of
//! connections turned away before login (rejection counters and security events).

use super::{CLOSE_LINGER, Shard};
use crate::metrics::shard::{Rejection, Transport};
use crate::reactor::conn::{Port, Stage};
use crate::reactor::drain::DrainPlan;
use crate::reactor::events::ConnectionEvent;
use crate::session::CloseReason;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Shard {
    /// One step of the shutdown drain: on the first call the listeners close and the plan is
    /// made; each call closes the connections due by now. True once none is left (or the
    /// period is over, when the rest are closed at once).
    pub(super) fn drain_step(&mut self) -> bool {
        if self.drain.is_none() {
            for (_, listener, _) in &mut self.listeners {
                let _ = self.poll.registry().deregister(listener);
            }
            self.listeners.clear();
            let period = Duration::from_millis(self.drain_ms.load(Ordering::Acquire));
            tracing::info!(
                shard = self.index,
                connections = self.conns.len(),
                ?period,
                "draining: listeners closed, disconnecting devices"
            );
            self.drain = Some(DrainPlan::new(Instant::now(), period, self.conns.len()));
        }
        let Some(plan) = self.drain.as_mut() else {
            return true;
        };
        let due = plan.due(Instant::now());
        let deadline = plan.deadline();
        let open: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.stage, Stage::Closing(_)))
            .map(|(k, _)| k)
            .take(due)
            .collect();
        for key in open {
            self.close(key, CloseReason::Shutdown);
        }
        self.conns.is_empty() || Instant::now() >= deadline + CLOSE_LINGER
    }
}

impl Shard {
    /// Counts (and, for the reasons worth an operator's eye, logs to the security log) a
    /// connection closed before it logged in.
    pub(super) fn rejected_before_login(
        &mut self,
        peer: std::net::SocketAddr,
        reason: &CloseReason,
    ) {
        let rejection = match reason {
            CloseReason::Tls(_) => Rejection::TlsHandshake,
            CloseReason::UnknownProtocol => Rejection::UnknownProtocol,
            CloseReason::NotALogin(_) => Rejection::NotALogin,
            CloseReason::Malformed(_) => Rejection::Malformed,
            CloseReason::InvalidToken => Rejection::InvalidToken,
            CloseReason::LoginTimeout => Rejection::LoginTimeout,
            CloseReason::PreAuthBufferFull { .. } => Rejection::PreAuthBufferFull,
            CloseReason::StoreUnavailable => Rejection::StoreUnavailable,
            CloseReason::LoginThrottled { .. } => Rejection::LoginThrottled,
            // Not a rejection: the peer left, the socket failed, or we are shutting down.
            CloseReason::PeerClosed
            | CloseReason::Io(_)
            | CloseReason::Shutdown
            | CloseReason::HeartbeatTimeout { .. }
            | CloseReason::SlowReader { .. } => return,
        };
        self.metrics.reject(rejection);
        // TLS refusals and token failures have their own, more specific events.
        if !matches!(
            rejection,
            Rejection::TlsHandshake
                | Rejection::InvalidToken
                | Rejection::StoreUnavailable
                | Rejection::LoginThrottled
        ) {
            self.pre_login_log.record(
                self.now,
                &ConnectionEvent::PreAuthRejected {
                    peer,
                    reason: reason.to_string(),
                },
            );
        }
    }
}

pub(super) fn transport(port: Port) -> Transport {
    match port {
        Port::Tls => Transport::Tls,
        Port::Plain => Transport::Plain,
    }
}
