//! Whether mail is going out: [`Health`] as callers read it, and the state the worker and the
//! mailer share (the health and the shutdown deadline). Owns the rule for `since`: the moment
//! of the first failure of the current run of failures, kept until a delivery (or a probe of
//! the relay) succeeds again.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

/// What the last delivery attempt (or probe of the relay) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last attempt succeeded, or none has failed yet.
    Healthy,
    /// The last attempt failed and none has succeeded since `since`. A flow that must mail
    /// (sign-up, invitation, password reset) should be refused before it writes anything.
    Failing {
        /// When the first failure of this run happened.
        since: SystemTime,
        /// What the last failure was (never a mail's body).
        last_error: String,
    },
}

/// What the mailer's handle and its worker share.
#[derive(Debug)]
pub(crate) struct Shared {
    health: Mutex<Health>,
    deadline: Mutex<Option<Instant>>,
}

/// A poisoned lock only means another thread panicked while holding it; the values inside
/// are always whole (each is replaced in one assignment), so they are still good to read.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            health: Mutex::new(Health::Healthy),
            deadline: Mutex::new(None),
        }
    }

    pub(crate) fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Records a success; answers whether the health was failing until now.
    pub(crate) fn record_success(&self) -> bool {
        let mut health = lock(&self.health);
        let was_failing = matches!(*health, Health::Failing { .. });
        *health = Health::Healthy;
        was_failing
    }

    /// Records a failure; answers whether the health was healthy until now.
    pub(crate) fn record_failure(&self, error: String) -> bool {
        let mut health = lock(&self.health);
        let (since, was_healthy) = match &*health {
            Health::Failing { since, .. } => (*since, false),
            Health::Healthy => (SystemTime::now(), true),
        };
        *health = Health::Failing {
            since,
            last_error: error,
        };
        was_healthy
    }

    pub(crate) fn set_deadline(&self, at: Instant) {
        *lock(&self.deadline) = Some(at);
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }
}
