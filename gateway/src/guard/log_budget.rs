//! A shard's budget for the security events an outsider can cause before logging in (refused TLS
//! handshakes, bad tokens, garbage, throttled logins): without one, a peer connecting and sending
//! garbage at the accept rate writes thousands of log lines a second, on the shard thread, to a
//! file shared by every shard. Within [`PRE_LOGIN_EVENTS_PER_SEC`] events per second per shard,
//! each is written; beyond it they are counted and written as one summary line when the second
//! is over. The metrics still count every rejection.
//!
//! Sans-IO: the caller passes the time (whole seconds of its monotonic clock).

/// Security events per shard and second written in full; the rest are summarised.
pub const PRE_LOGIN_EVENTS_PER_SEC: u32 = 100;

/// Whether one event may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budgeted {
    Write,
    /// Over the budget: counted for the next summary.
    Suppressed,
}

/// Events suppressed during a second that is now over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub events: u64,
}

#[derive(Debug, Clone)]
pub struct LogBudget {
    per_sec: u32,
    second: u64,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            second: 0,
            written: 0,
            suppressed: 0,
        }
    }

    /// Takes one event at `now_s`. Call [`LogBudget::summary_due`] first so a summary of the
    /// previous second is written before this event.
    pub fn admit(&mut self, now_s: u64) -> Budgeted {
        if now_s != self.second {
            self.second = now_s;
            self.written = 0;
        }
        if self.written < self.per_sec {
            self.written += 1;
            Budgeted::Write
        } else {
            self.suppressed += 1;
            Budgeted::Suppressed
        }
    }

    /// The count not yet summarised, whatever the time (at shutdown).
    pub fn take_all(&mut self) -> Option<Suppressed> {
        let events = std::mem::take(&mut self.suppressed);
        (events > 0).then_some(Suppressed { events })
    }

    /// The count to summarise once the second it was suppressed in is over (then reset).
    pub fn summary_due(&mut self, now_s: u64) -> Option<Suppressed> {
        if self.suppressed == 0 || now_s == self.second {
            return None;
        }
        let events = std::mem::take(&mut self.suppressed);
        Some(Suppressed { events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_beyond_the_budget_are_summarised_once_the_second_is_over() {
        let mut budget = LogBudget::new(3);
        let verdicts: Vec<Budgeted> = (0..5).map(|_| budget.admit(10)).collect();
        assert_eq!(
            verdicts,
            [
                Budgeted::Write,
                Budgeted::Write,
                Budgeted::Write,
                Budgeted::Suppressed,
                Budgeted::Suppressed
            ]
        );
        assert_eq!(budget.summary_due(10), None, "the second is not over yet");
        assert_eq!(budget.summary_due(11), Some(Suppressed { events: 2 }));
        assert_eq!(budget.summary_due(12), None, "reported once");
        budget.admit(12);
        assert_eq!(budget.admit(12), Budgeted::Write);
        for _ in 0..4 {
            budget.admit(12);
        }
        assert_eq!(
            budget.take_all(),
            Some(Suppressed { events: 3 }),
            "at shutdown"
        );
        assert_eq!(budget.take_all(), None);
        // A new second has a fresh budget.
        assert_eq!(budget.admit(11), Budgeted::Write);
    }

    #[test]
    fn a_quiet_shard_owes_no_summary() {
        let mut budget = LogBudget::new(3);
        assert_eq!(budget.admit(5), Budgeted::Write);
        assert_eq!(budget.summary_due(9), None);
    }
}
