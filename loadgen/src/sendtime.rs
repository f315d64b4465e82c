//! The send time a `fanout` device writes as its pin value, so the app that receives the pin
//! event can compute the end-to-end latency without any channel back to the device. The value is
//! the write's Unix time in microseconds, in decimal: wall-clock time, not `Instant`, because the
//! devices may run in worker processes while the apps run in the main process, and only the
//! system clock is shared between processes. Both ends are on one machine, so it is one clock.
//!
//! A shard works in `Instant`s (its schedule, its timers); [`WallClock`] converts them to Unix
//! time from one anchor taken when the measured part starts, so every value of a run is on one
//! monotonic scale even if the system clock is stepped meanwhile.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Values below this many Unix microseconds (2020-01-01) are not send times: a device of an
/// older load generator, or another writer, wrote them. Rejecting them keeps a stray value from
/// showing up as a 50-year latency.
pub const EARLIEST_PLAUSIBLE_MICROS: u64 = 1_577_836_800_000_000;

/// Longest a decimal send time can be (u64::MAX has 20 digits); anything longer is not one.
const MAX_DIGITS: usize = 20;

/// Maps a process's `Instant`s to Unix microseconds from one anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    anchor: Instant,
    anchor_unix_micros: u64,
}

impl WallClock {
    /// Anchors `now` to the system clock's reading now.
    pub fn anchored_at(now: Instant) -> WallClock {
        WallClock {
            anchor: now,
            anchor_unix_micros: unix_micros(SystemTime::now()),
        }
    }

    /// The Unix time (µs) of `at`; instants before the anchor are counted back from it.
    pub fn unix_micros(&self, at: Instant) -> u64 {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match at.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_unix_micros.saturating_add(micros(after)),
            None => self
                .anchor_unix_micros
                .saturating_sub(micros(self.anchor.saturating_duration_since(at))),
        }
    }

    /// The pin value for a write scheduled at `at`.
    pub fn encode(&self, at: Instant) -> String {
        self.unix_micros(at).to_string()
    }
}

/// Unix microseconds of a system time (0 before 1970, which no clock here reads).
pub fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The send time in a pin value, if it is one.
pub fn decode(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > MAX_DIGITS || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|&micros| micros >= EARLIEST_PLAUSIBLE_MICROS)
}

/// From a send time to `received` (Unix µs); zero if the clock says the event came first.
pub fn latency(sent_micros: u64, received_micros: u64) -> Duration {
    Duration::from_micros(received_micros.saturating_sub(sent_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_instant_round_trips_through_the_pin_value() {
        let t0 = Instant::now();
        let clock = WallClock::anchored_at(t0);
        let now = unix_micros(SystemTime::now());
        let value = clock.encode(t0 + Duration::from_millis(250));
        let sent = decode(&value).expect("a send time");
        // The anchor was read just before `now`: the value is 250 ms after it, give or take the
        // microseconds between the two readings.
        assert!(
            sent.abs_diff(now + 250_000) < 50_000,
            "sent {sent}, now {now}"
        );
        assert_eq!(
            clock.unix_micros(t0 + Duration::from_micros(1_500)) - clock.unix_micros(t0),
            1_500
        );
        if let Some(earlier) = t0.checked_sub(Duration::from_millis(3)) {
            assert_eq!(
                clock.unix_micros(t0) - clock.unix_micros(earlier),
                3_000,
                "a catch-up write scheduled before the anchor counts back from it"
            );
        }
        assert_eq!(
            latency(sent, sent + 1_234),
            Duration::from_micros(1_234),
            "receive − send"
        );
        assert_eq!(latency(sent, sent - 5), Duration::ZERO);
    }

    #[test]
    fn values_that_are_not_send_times_are_refused() {
        assert_eq!(decode("1700000000000000"), Some(1_700_000_000_000_000));
        for bad in [
            "",
            "42",
            "-1700000000000000",
            "1700000000000000.5",
            " 1700000000000000",
            "99999999999999999999999",
            "0x1700000000000000",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
