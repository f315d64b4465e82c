//! The one mail worker thread: takes mails off the bounded queue into its own bounded retry
//! list, delivers them in order, and waits with `recv_timeout` (never a long sleep with the
//! queue stuck) until the next attempt is due. Owns the retry policy:
//!
//! - the wait between attempts belongs to the transport, not to each mail: after `n`
//!   consecutive failures the next attempt is `base * 2^(n-1)` later, at most `cap`; while
//!   failing only the head of the list is tried (it probes the relay for the others), and a
//!   success lets every waiting mail go at once;
//! - a mail is dropped, with an error in the log naming its recipient and kind (never its
//!   body, which holds a secret link), after `max_attempts` transient failures or at once on
//!   a permanent one (a 5xx);
//! - when the relay is failing and no mail is waiting, the relay is probed on the same
//!   schedule, so the health comes back without a mail that callers are refusing anyway;
//! - at shutdown it drains what is queued until the deadline, then drops (and logs) the rest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use lettre::message::Mailbox;

use crate::health::Shared;
use crate::message::Mail;
use crate::transport::{DeliveryError, Transport};

/// How long the worker sleeps when it can neither receive nor attempt anything and has no
/// time to wake at (a state the loop should never reach; this only bounds it).
const IDLE_SLEEP: Duration = Duration::from_millis(200);

/// A submitted mail and when it was submitted (its `Date:`).
pub(crate) struct Job {
    pub(crate) mail: Mail,
    pub(crate) queued_at: SystemTime,
}

/// The worker's limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
}

impl Limits {
    /// The wait after `failures` consecutive failures (`failures >= 1`).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff_base
            .checked_mul(1u32 << doublings)
            .map_or(self.backoff_cap, |d| d.min(self.backoff_cap))
    }
}

struct Pending {
    job: Job,
    attempts: u32,
}

pub(crate) struct Worker {
    rx: Receiver<Job>,
    transport: Transport,
    from: Mailbox,
    limits: Limits,
    shared: Arc<Shared>,
    pending: VecDeque<Pending>,
    /// Consecutive failed attempts and probes; 0 when the last one succeeded.
    failures: u32,
    /// When failing: the earliest moment of the next attempt or probe.
    next_try: Option<Instant>,
    /// Every sender is gone: the mailer is shutting down (or was dropped).
    disconnected: bool,
}

impl Worker {
    pub(crate) fn new(
        rx: Receiver<Job>,
        transport: Transport,
        from: Mailbox,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Self {
        Worker {
            rx,
            transport,
            from,
            limits,
            shared,
            pending: VecDeque::new(),
            failures: 0,
            next_try: None,
            disconnected: false,
        }
    }

    /// Runs until the queue is closed and drained, or the shutdown deadline passes; answers
    /// how many mails were dropped undelivered at the deadline.
    pub(crate) fn run(mut self) -> usize {
        loop {
            if self.shared.deadline().is_some_and(|d| Instant::now() >= d) {
                return self.drop_everything();
            }
            self.take_queued();
            let due = self.next_try.is_none_or(|at| at <= Instant::now());
            if due && !self.pending.is_empty() {
                self.attempt_head();
                continue;
            }
            if due && self.failures > 0 && !self.disconnected {
                self.probe();
                continue;
            }
            if self.disconnected && self.pending.is_empty() {
                return 0;
            }
            self.wait();
        }
    }

    /// Moves what is queued into the retry list, as far as the list has room.
    fn take_queued(&mut self) {
        while !self.disconnected && self.pending.len() < self.limits.capacity {
            match self.rx.try_recv() {
                Ok(job) => self.pending.push_back(Pending { job, attempts: 0 }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.disconnected = true,
            }
        }
    }

    /// Waits for a new mail, the next attempt or the deadline, whichever comes first.
    fn wait(&mut self) {
        let wake = match (self.next_try, self.shared.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = Instant::now();
        if self.disconnected || self.pending.len() >= self.limits.capacity {
            let until = wake.unwrap_or(now + IDLE_SLEEP);
            std::thread::sleep(until.saturating_duration_since(now));
            return;
        }
        let received = match wake {
            Some(at) => self.rx.recv_timeout(at.saturating_duration_since(now)),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(job) => self.pending.push_back(Pending { job, attempts: 0 }),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.disconnected = true,
        }
    }

    fn attempt_head(&mut self) {
        let Some(mut head) = self.pending.pop_front() else {
            return;
        };
        head.attempts += 1;
        let mail = &head.job.mail;
        match self.transport.deliver(&head.job, &self.from) {
            Ok(place) => {
                tracing::info!(
                    to = %mail.to(),
                    kind = mail.kind(),
                    attempts = head.attempts,
                    "mail {place}"
                );
                self.succeeded();
            }
            Err(e) if e.is_retryable() => {
                let wait = self.failed(&e);
                if head.attempts >= self.limits.max_attempts {
                    tracing::error!(
                        to = %mail.to(),
                        kind = mail.kind(),
                        attempts = head.attempts,
                        error = %e,
                        "mail dropped: delivery failed {} times; the recipient gets nothing \
                         and must ask for it again",
                        head.attempts
                    );
                } else {
                    tracing::warn!(
                        to = %mail.to(),
                        kind = mail.kind(),
                        attempt = head.attempts,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e,
                        "mail delivery failed; it will be tried again"
                    );
                    self.pending.push_front(head);
                }
            }
            Err(e) => {
                tracing::error!(
                    to = %mail.to(),
                    kind = mail.kind(),
                    attempts = head.attempts,
                    error = %e,
                    "mail dropped: it was refused for good and is not tried again"
                );
                if e.is_transport_wide() {
                    self.failed(&e);
                } else if !matches!(e, DeliveryError::Internal(_)) {
                    // The relay answered the whole conversation: it is up.
                    self.succeeded();
                }
            }
        }
    }

    fn probe(&mut self) {
        match self.transport.probe() {
            Ok(()) => self.succeeded(),
            Err(e) => {
                let wait = self.failed(&e);
                tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, "mail relay probe failed");
            }
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.next_try = None;
        if self.shared.record_success() {
            tracing::info!("mail goes out again: the last delivery attempt succeeded");
        }
    }

    /// Records a failure and schedules the next attempt; answers the wait until then.
    fn failed(&mut self, e: &DeliveryError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = self.limits.backoff(self.failures);
        self.next_try = Some(Instant::now() + wait);
        if self.shared.record_failure(e.to_string()) {
            tracing::warn!(
                error = %e,
                "mail cannot go out; flows that send mail are refused until a delivery succeeds"
            );
        }
        wait
    }

    fn drop_everything(&mut self) -> usize {
        let mut dropped = 0;
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok());
        let waiting: Vec<Job> = self
            .pending
            .drain(..)
            .map(|p| p.job)
            .chain(queued)
            .collect();
        for job in waiting {
            tracing::error!(
                to = %job.mail.to(),
                kind = job.mail.kind(),
                "mail dropped: the mailer's shutdown deadline passed before it was delivered"
            );
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let limits = Limits {
            capacity: 1,
            max_attempts: 6,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
        };
        let waits: Vec<u64> = (1..=10).map(|n| limits.backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(limits.backoff(u32::MAX), Duration::from_secs(300));
    }
}
