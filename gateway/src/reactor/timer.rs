//! The per-shard timer wheel: login deadlines and heartbeat timeouts for every connection.
//!
//! A hashed wheel of fixed-width ticks. Each connection keeps its own deadline and has at most one
//! live wheel entry; activity only moves the deadline stored in the connection, never the entry.
//! When an entry fires, the shard compares it with the connection's current deadline and re-arms if
//! the deadline moved later. That keeps the per-message path free of timer work, and an idle
//! connection costs one 16-byte entry.

use crate::conn::ConnId;
use std::time::{Duration, Instant};

/// Width of one tick; deadlines are rounded up to it.
pub const TICK: Duration = Duration::from_millis(100);

/// Number of slots; one revolution covers `SLOTS × TICK` (102.4 s). Later deadlines wait for
/// further revolutions in their slot.
const SLOTS: usize = 1024;

/// A point in time counted in ticks since the wheel was created.
pub type Tick = u64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    conn: ConnId,
    at: Tick,
}

pub struct TimerWheel {
    start: Instant,
    /// The next tick to expire; every tick before it has been processed.
    cursor: Tick,
    slots: Vec<Vec<Entry>>,
    len: usize,
}

impl TimerWheel {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    /// The tick containing `now`.
    pub fn tick_of(&self, now: Instant) -> Tick {
        (now.saturating_duration_since(self.start).as_millis() / TICK.as_millis()) as Tick
    }

    /// The first tick at or after `now + delay`.
    pub fn deadline_after(&self, now: Instant, delay: Duration) -> Tick {
        let at = now.saturating_duration_since(self.start) + delay;
        at.as_millis().div_ceil(TICK.as_millis()) as Tick
    }

    /// Schedules `conn` to be looked at when tick `at` has passed.
    pub fn schedule(&mut self, conn: ConnId, at: Tick) {
        let at = at.max(self.cursor);
        self.slots[(at % SLOTS as u64) as usize].push(Entry { conn, at });
        self.len += 1;
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How long the event loop may sleep before the next tick needs processing.
    pub fn next_wakeup(&self, now: Instant) -> Duration {
        if self.len == 0 {
            return Duration::from_secs(1);
        }
        let next = self.start + TICK * (self.cursor as u32 + 1);
        next.saturating_duration_since(now)
    }

    /// Moves the wheel up to `now`, appending every entry whose tick has passed to `expired`.
    pub fn advance(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        let target = self.tick_of(now);
        // Skipping whole revolutions is safe: each slot is visited at least once per call.
        let first = self.cursor.max(target.saturating_sub(SLOTS as u64 - 1));
        for tick in first..=target {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].at <= target {
                    expired.push(slot.swap_remove(i).conn);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.cursor = self.cursor.max(target + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ConnId {
        ConnId {
            slot: n,
            generation: 1,
        }
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let at = wheel.deadline_after(t0, Duration::from_secs(23));
        wheel.schedule(id(1), at);
        let mut out = Vec::new();
        wheel.advance(t0 + Duration::from_millis(22_900), &mut out);
        assert!(out.is_empty());
        wheel.advance(t0 + Duration::from_secs(23), &mut out);
        assert_eq!(out, vec![id(1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn long_deadlines_survive_revolutions() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let at = wheel.deadline_after(t0, Duration::from_secs(250));
        wheel.schedule(id(7), at);
        let mut out = Vec::new();
        for s in 1..250 {
            wheel.advance(t0 + Duration::from_secs(s), &mut out);
            assert!(out.is_empty(), "fired early at {s}s");
        }
        wheel.advance(t0 + Duration::from_secs(250), &mut out);
        assert_eq!(out, vec![id(7)]);
    }

    #[test]
    fn a_late_advance_catches_up_on_everything() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        for n in 0..100 {
            let at = wheel.deadline_after(t0, Duration::from_millis(n * 37));
            wheel.schedule(id(n as u32), at);
        }
        let mut out = Vec::new();
        wheel.advance(t0 + Duration::from_secs(600), &mut out);
        assert_eq!(out.len(), 100);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut out = Vec::new();
        wheel.advance(t0 + Duration::from_secs(5), &mut out);
        wheel.schedule(id(3), 0);
        wheel.advance(t0 + Duration::from_millis(5_100), &mut out);
        assert_eq!(out, vec![id(3)]);
    }
}
