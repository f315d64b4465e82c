//! Pacing of the shutdown drain: after the listeners close, a shard disconnects its connections
//! evenly over the drain period instead of all at once, so the fleet's reconnects to the next
//! instance arrive spread out. Sans-IO: it only says how many connections are due by now.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DrainPlan {
    started: Instant,
    period: Duration,
    /// Connections open when the drain started.
    total: usize,
    closed: usize,
}

impl DrainPlan {
    pub fn new(started: Instant, period: Duration, total: usize) -> Self {
        Self {
            started,
            period,
            total,
            closed: 0,
        }
    }

    /// How many more connections to close now so that, at `now`, the closed share matches the
    /// elapsed share of the period (all of them once it has passed).
    pub fn due(&mut self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.started);
        let target = if elapsed >= self.period || self.period.is_zero() {
            self.total
        } else {
            // Round up so the first turn already closes something and the last one finishes.
            let share = elapsed.as_secs_f64() / self.period.as_secs_f64();
            ((self.total as f64 * share).ceil() as usize).min(self.total)
        };
        let due = target.saturating_sub(self.closed);
        self.closed += due;
        due
    }

    /// The time by which every connection has been closed.
    pub fn deadline(&self) -> Instant {
        self.started + self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_evenly_and_everything_by_the_deadline() {
        let start = Instant::now();
        let mut plan = DrainPlan::new(start, Duration::from_secs(10), 100);
        assert_eq!(plan.due(start), 0);
        assert_eq!(plan.due(start + Duration::from_millis(1)), 1);
        assert_eq!(plan.due(start + Duration::from_secs(5)), 49);
        assert_eq!(plan.due(start + Duration::from_secs(5)), 0, "nothing twice");
        assert_eq!(plan.due(start + Duration::from_secs(11)), 50);
        assert_eq!(plan.due(start + Duration::from_secs(12)), 0);
    }

    #[test]
    fn a_zero_period_closes_everything_at_once() {
        let start = Instant::now();
        let mut plan = DrainPlan::new(start, Duration::ZERO, 7);
        assert_eq!(plan.due(start), 7);
    }
}
