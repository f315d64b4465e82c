//! What an online device does, sans-IO: hold idle with the Blynk heartbeat (a PING every
//! `h-beat` seconds), write telemetry on a fixed-rate schedule, or keep one PING in flight. Each
//! activity takes the time and a reply, appends frames to send, records into the shard's tally,
//! and says when it next wants to be woken.
//!
//! Telemetry latency is corrected for coordinated omission: a write's latency runs from the time
//! the schedule says it should have been sent, not from when it actually was, so a stalled gateway
//! (or a stalled load generator) shows up as latency instead of silently lowering the rate. The
//! gateway does not acknowledge writes, so every `sample_every`-th write is followed by a PING;
//! its reply proves the gateway has handled that write and everything before it on the
//! connection.
//!
//! The `fanout` scenario uses the same schedule; only the value written differs. Telemetry
//! writes the write's sequence number (the store read-back sums them); fanout writes the write's
//! scheduled time as Unix microseconds (`sendtime.rs`), so the app receiving the pin event
//! measures device → app latency from the schedule too.

use crate::device::{MsgIds, encode};
use crate::sendtime::WallClock;
use crate::tally::{Count, Latency, Tally};
use portcullis_protocol::{Command, Status};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Writes one device sends in one go at most when it has fallen behind its schedule, so a
/// stalled loop does not turn into one enormous burst.
pub const MAX_CATCH_UP_WRITES: u64 = 64;

/// Everything an activity may touch during one step.
pub struct Ctx<'a> {
    pub now: Instant,
    pub ids: &'a mut MsgIds,
    pub out: &'a mut Vec<u8>,
    pub tally: &'a mut Tally,
}

/// What a telemetry write carries as its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteValue {
    /// The write's number, 1, 2, 3...
    Sequence,
    /// The write's scheduled time, Unix microseconds on this clock.
    ScheduledTime(WallClock),
}

#[derive(Debug)]
pub struct Telemetry {
    /// Time of write 1; write `n` is due at `first_due + (n - 1) × interval`.
    first_due: Instant,
    interval: Duration,
    pin: u8,
    sample_every: u64,
    value: WriteValue,
    /// Last write sent (writes are numbered from 1; the value written is the number).
    pub sent: u64,
    /// Every write up to this one is known to have been handled by the gateway.
    pub acked: u64,
    /// PINGs in flight, each with the write it follows.
    samples: VecDeque<(u16, u64)>,
}

#[derive(Debug)]
pub enum Activity {
    /// Idle: a PING every heartbeat interval.
    Heartbeat {
        every: Duration,
    },
    Telemetry(Telemetry),
    /// One PING in flight at a time; `outstanding` holds its id and send time.
    Ping {
        outstanding: Option<(u16, Instant)>,
    },
}

/// What a reply meant to the activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerdict {
    Handled,
    /// Not a reply to anything this activity sent.
    NotOurs,
}

impl Activity {
    pub fn heartbeat(heartbeat_secs: u16) -> Activity {
        Activity::Heartbeat {
            every: Duration::from_secs(u64::from(heartbeat_secs.max(1))),
        }
    }

    /// Telemetry starting at `start`; `offset` spreads the devices over one interval.
    pub fn telemetry(
        start: Instant,
        rate: f64,
        offset_fraction: f64,
        pin: u8,
        sample_every: u64,
        value: WriteValue,
    ) -> Activity {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        Activity::Telemetry(Telemetry {
            first_due: start + interval.mul_f64(offset_fraction.clamp(0.0, 1.0)),
            interval,
            pin,
            sample_every: sample_every.max(1),
            value,
            sent: 0,
            acked: 0,
            samples: VecDeque::new(),
        })
    }

    /// A timer fired (or the activity just began): do what is due; returns the next wake-up.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        match self {
            Activity::Heartbeat { every } => {
                let id = ctx.ids.next();
                encode(ctx.out, Command::Ping, id, &[]);
                Some(ctx.now + *every)
            }
            Activity::Telemetry(t) => t.send_due(ctx),
            Activity::Ping { outstanding } => {
                if outstanding.is_none() {
                    let id = ctx.ids.next();
                    encode(ctx.out, Command::Ping, id, &[]);
                    *outstanding = Some((id, ctx.now));
                }
                None
            }
        }
    }

    /// A RESPONSE arrived. `keep_going` is false once the measured phase is over: replies still
    /// count, but nothing new is sent.
    pub fn on_reply(
        &mut self,
        msg_id: u16,
        status: Status,
        keep_going: bool,
        ctx: &mut Ctx<'_>,
    ) -> ReplyVerdict {
        match self {
            // Heartbeat replies need no bookkeeping: a missing one shows up as a disconnect.
            Activity::Heartbeat { .. } => {
                if status == Status::Ok {
                    ReplyVerdict::Handled
                } else {
                    ReplyVerdict::NotOurs
                }
            }
            Activity::Telemetry(t) => t.on_reply(msg_id, status, ctx),
            Activity::Ping { outstanding } => match *outstanding {
                Some((id, sent)) if id == msg_id && status == Status::Ok => {
                    ctx.tally
                        .record(Latency::Ping, ctx.now.saturating_duration_since(sent));
                    ctx.tally.add(Count::PingsOk, 1);
                    *outstanding = None;
                    if keep_going {
                        let id = ctx.ids.next();
                        encode(ctx.out, Command::Ping, id, &[]);
                        *outstanding = Some((id, ctx.now));
                    }
                    ReplyVerdict::Handled
                }
                _ => ReplyVerdict::NotOurs,
            },
        }
    }

    /// Telemetry progress (writes sent, writes acknowledged), if this is telemetry.
    pub fn telemetry_progress(&self) -> Option<(u64, u64)> {
        match self {
            Activity::Telemetry(t) => Some((t.sent, t.acked)),
            _ => None,
        }
    }
}

impl Telemetry {
    fn due_at(&self, write: u64) -> Instant {
        self.first_due + self.interval.mul_f64(write.saturating_sub(1) as f64)
    }

    fn send_due(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let mut burst = 0;
        while self.due_at(self.sent + 1) <= ctx.now && burst < MAX_CATCH_UP_WRITES {
            self.sent += 1;
            burst += 1;
            let value = match self.value {
                WriteValue::Sequence => self.sent.to_string(),
                WriteValue::ScheduledTime(clock) => clock.encode(self.due_at(self.sent)),
            };
            let pin = self.pin.to_string();
            encode(
                ctx.out,
                Command::Hardware,
                ctx.ids.next(),
                &[b"vw", pin.as_bytes(), value.as_bytes()],
            );
            if self.sent.is_multiple_of(self.sample_every) {
                let id = ctx.ids.next();
                encode(ctx.out, Command::Ping, id, &[]);
                self.samples.push_back((id, self.sent));
            }
        }
        ctx.tally.add(Count::WritesSent, burst);
        // Behind schedule: come back at once for the rest; otherwise at the next due time.
        Some(self.due_at(self.sent + 1).max(ctx.now))
    }

    fn on_reply(&mut self, msg_id: u16, status: Status, ctx: &mut Ctx<'_>) -> ReplyVerdict {
        match self.samples.front() {
            Some(&(id, write)) if id == msg_id && status == Status::Ok => {
                self.samples.pop_front();
                let scheduled = self.due_at(write);
                ctx.tally
                    .record(Latency::Write, ctx.now.saturating_duration_since(scheduled));
                ctx.tally.add(Count::WritesAcked, write - self.acked);
                self.acked = write;
                ReplyVerdict::Handled
            }
            _ => ReplyVerdict::NotOurs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::frames as commands;

    #[test]
    fn telemetry_follows_the_schedule_and_times_from_it() {
        let t0 = Instant::now();
        let mut activity = Activity::telemetry(t0, 10.0, 0.0, 3, 2, WriteValue::Sequence);
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let mut tally = Tally::new();
        // 250 ms late: writes 1, 2 and 3 (due at 0, 100, 200 ms) go out together.
        let late = t0 + Duration::from_millis(250);
        let mut ctx = Ctx {
            now: late,
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        let next = activity.on_timer(&mut ctx).expect("next wake-up");
        assert_eq!(next, t0 + Duration::from_millis(300));
        let sent = commands(&out);
        let kinds: Vec<Command> = sent.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            vec![
                Command::Hardware,
                Command::Hardware,
                Command::Ping,
                Command::Hardware
            ]
        );
        assert_eq!(sent[3].2, b"vw\x003\x003".to_vec());
        let ping_id = sent[2].1;
        // The PING after write 2 is answered at 260 ms: write 2 was due at 100 ms.
        let mut ctx = Ctx {
            now: t0 + Duration::from_millis(260),
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        assert_eq!(
            activity.on_reply(ping_id, Status::Ok, true, &mut ctx),
            ReplyVerdict::Handled
        );
        assert_eq!(
            activity.on_reply(ping_id, Status::Ok, true, &mut ctx),
            ReplyVerdict::NotOurs
        );
        assert_eq!(activity.telemetry_progress(), Some((3, 2)));
        assert_eq!(tally.count(Count::WritesSent), 3);
        assert_eq!(tally.count(Count::WritesAcked), 2);
        let hist = tally.get(Latency::Write).expect("one sample");
        assert_eq!(hist.len(), 1);
        assert!((159_000..=161_000).contains(&hist.max()), "{}", hist.max());
    }

    #[test]
    fn a_stalled_loop_catches_up_in_bounded_bursts() {
        let t0 = Instant::now();
        let mut activity = Activity::telemetry(t0, 1000.0, 0.0, 1, 1000, WriteValue::Sequence);
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let mut tally = Tally::new();
        let now = t0 + Duration::from_secs(1);
        let mut ctx = Ctx {
            now,
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        let next = activity.on_timer(&mut ctx).expect("wake-up");
        assert_eq!(next, now, "still behind: come back at once");
        assert_eq!(tally.count(Count::WritesSent), MAX_CATCH_UP_WRITES);
    }

    #[test]
    fn fanout_writes_carry_their_scheduled_time() {
        let t0 = Instant::now();
        let clock = WallClock::anchored_at(t0);
        let mut activity =
            Activity::telemetry(t0, 10.0, 0.0, 1, 100, WriteValue::ScheduledTime(clock));
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let mut tally = Tally::new();
        // 150 ms late: write 1 (due at 0) and write 2 (due at 100 ms) go out now, each stamped
        // with its own scheduled time, not the time it really left.
        let mut ctx = Ctx {
            now: t0 + Duration::from_millis(150),
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        activity.on_timer(&mut ctx);
        let stamps: Vec<u64> = commands(&out)
            .iter()
            .map(|(command, _, body)| {
                assert_eq!(*command, Command::Hardware);
                let value = body.split(|&b| b == 0).nth(2).expect("a value");
                crate::sendtime::decode(std::str::from_utf8(value).expect("ascii"))
                    .expect("a send time")
            })
            .collect();
        assert_eq!(
            stamps,
            vec![
                clock.unix_micros(t0),
                clock.unix_micros(t0 + Duration::from_millis(100))
            ]
        );
    }

    #[test]
    fn ping_keeps_one_in_flight_until_told_to_stop() {
        let t0 = Instant::now();
        let mut activity = Activity::Ping { outstanding: None };
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let mut tally = Tally::new();
        let mut ctx = Ctx {
            now: t0,
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        activity.on_timer(&mut ctx);
        activity.on_timer(&mut ctx);
        assert_eq!(
            commands(&out).len(),
            1,
            "a second timer does not add a PING"
        );
        let mut ctx = Ctx {
            now: t0 + Duration::from_micros(300),
            ids: &mut ids,
            out: &mut out,
            tally: &mut tally,
        };
        assert_eq!(
            activity.on_reply(1, Status::Ok, true, &mut ctx),
            ReplyVerdict::Handled
        );
        assert_eq!(
            activity.on_reply(2, Status::Ok, false, &mut ctx),
            ReplyVerdict::Handled
        );
        assert_eq!(commands(&out).len(), 2, "no PING after the stop");
        assert_eq!(tally.count(Count::PingsOk), 2);
    }
}
