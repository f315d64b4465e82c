//! One load-generator shard: a thread with its own mio `Poll` and a slab-like vector of simulated
//! devices, driven by a hand-written loop. It dials devices at its share of the login rate (at
//! most `max_connecting` connects in flight), moves bytes with edge-triggered reads and writes
//! until `WouldBlock`, feeds replies to the device state machine and the scenario's activity,
//! and keeps a heap of timers (login deadlines, heartbeats, telemetry schedules, storm redials).
//! It follows the phase the controller sets and publishes live counters for the progress line;
//! its tally is returned when the thread ends.

use crate::activity::{Activity, Ctx, ReplyVerdict, WriteValue};
use crate::device::{DeviceState, Event, Identity, MsgIds, Outcome};
use crate::plan::{Phase, PhaseCell, Plan, Scenario, StormTrigger};
use crate::sendtime::WallClock;
use crate::tally::{Count, Latency, Tally};
use crate::transport::{ConnectState, Link, LinkError, READ_CHUNK, ReadState};
use mio::{Events, Interest, Poll, Token, Waker};
use portcullis_protocol::frame::{self, Decoded, Payload};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The waker's token; device `k` uses token `k + 1`.
const WAKER: Token = Token(0);

/// Longest the loop sleeps, so a phase change is seen even if a wake-up is lost.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Events taken from the poll per turn.
const EVENTS_CAPACITY: usize = 4096;

/// Largest frame body accepted from the gateway.
const MAX_INBOUND_BODY: usize = 65_535;

/// Longest wait between storm reconnect attempts of one device.
const MAX_REDIAL_BACKOFF: Duration = Duration::from_secs(1);

/// Counters a shard publishes while running; the controller sums them for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub online: AtomicI64,
    /// Devices that failed and will not be retried (they count as settled for the ramp).
    pub failed: AtomicU64,
    pub logins: AtomicU64,
    pub writes_sent: AtomicU64,
    pub writes_acked: AtomicU64,
    pub pings: AtomicU64,
    pub failures: AtomicU64,
    pub disconnects: AtomicU64,
    /// Worst lateness of a timer in the current second, microseconds (a saturation signal).
    pub max_lag_us: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The device must be online by now.
    Deadline,
    /// The activity's next step.
    Activity,
    /// Storm: try to connect again.
    Redial,
}

type TimerEntry = Reverse<(Instant, usize, u32, TimerKind)>;

struct Sim {
    spec: usize,
    tls: bool,
    state: DeviceState,
    link: Option<Link>,
    ids: MsgIds,
    /// Bumped whenever the connection changes; timers of an older epoch are ignored.
    epoch: u32,
    activity: Activity,
    /// Set when an online device lost its connection (storm), cleared when it is back.
    offline_since: Option<Instant>,
    redials: u32,
    /// A connect is in flight (counts against `max_connecting`).
    dialing: bool,
    /// When bytes last went out: the gateway's silence timer runs from the last frame it got.
    last_sent: Instant,
}

/// How far one device got with its telemetry.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct TelemetryProgress {
    /// Position in the token file.
    pub device: usize,
    pub sent: u64,
    pub acked: u64,
}

/// What a shard hands back when it ends.
pub struct ShardResult {
    pub tally: Tally,
    pub telemetry: Vec<TelemetryProgress>,
}

pub struct Shard {
    plan: Arc<Plan>,
    phase: Arc<PhaseCell>,
    live: Arc<Live>,
    poll: Poll,
    sims: Vec<Sim>,
    timers: BinaryHeap<TimerEntry>,
    /// Devices waiting to be dialed, in order.
    dial_queue: VecDeque<usize>,
    next_dial_at: Instant,
    dial_interval: Duration,
    connecting: usize,
    tally: Tally,
    scratch: Vec<u8>,
    out: Vec<u8>,
    seen_phase: Phase,
}

impl Shard {
    /// A shard for the devices `specs` (indexes into `plan.devices`) dialing at `rate` per second.
    pub fn new(
        plan: Arc<Plan>,
        specs: Vec<usize>,
        rate: f64,
        phase: Arc<PhaseCell>,
        live: Arc<Live>,
    ) -> std::io::Result<(Shard, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let heartbeat = plan.heartbeat_secs;
        let sims: Vec<Sim> = specs
            .into_iter()
            .map(|spec| Sim {
                spec,
                tls: plan.uses_tls(plan.devices[spec].index),
                state: DeviceState::Offline,
                link: None,
                ids: MsgIds::default(),
                epoch: 0,
                activity: Activity::heartbeat(heartbeat),
                offline_since: None,
                redials: 0,
                dialing: false,
                last_sent: Instant::now(),
            })
            .collect();
        let dial_queue = (0..sims.len()).collect();
        Ok((
            Shard {
                plan,
                phase,
                live,
                poll,
                sims,
                timers: BinaryHeap::new(),
                dial_queue,
                next_dial_at: Instant::now(),
                dial_interval: Duration::from_secs_f64(1.0 / rate.max(1e-3)),
                connecting: 0,
                tally: Tally::new(),
                scratch: vec![0; READ_CHUNK],
                out: Vec::new(),
                seen_phase: Phase::Ramp,
            },
            waker,
        ))
    }

    /// Runs until the controller says `Done`, then closes every connection.
    pub fn run(mut self) -> std::io::Result<ShardResult> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        self.next_dial_at = Instant::now();
        loop {
            let phase = self.phase.get();
            if phase != self.seen_phase {
                self.enter(phase);
                self.seen_phase = phase;
            }
            if phase == Phase::Done {
                break;
            }
            self.dial_due(Instant::now());
            let timeout = self.sleep_budget(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let key = event.token().0 - 1;
                if key < self.sims.len() {
                    self.pump(key, Instant::now());
                }
            }
            self.fire_timers(Instant::now());
            self.publish();
        }
        let telemetry = self
            .sims
            .iter()
            .filter_map(|sim| {
                let (sent, acked) = sim.activity.telemetry_progress()?;
                Some(TelemetryProgress {
                    device: self.plan.devices[sim.spec].index,
                    sent,
                    acked,
                })
            })
            .collect();
        for key in 0..self.sims.len() {
            self.close(key);
        }
        Ok(ShardResult {
            tally: self.tally,
            telemetry,
        })
    }

    /// Copies the tally's counters to the live counters the controller reads.
    fn publish(&self) {
        let live = &self.live;
        let t = &self.tally;
        live.logins
            .store(t.count(Count::LoginsOk), Ordering::Relaxed);
        live.writes_sent
            .store(t.count(Count::WritesSent), Ordering::Relaxed);
        live.writes_acked
            .store(t.count(Count::WritesAcked), Ordering::Relaxed);
        live.pings.store(t.count(Count::PingsOk), Ordering::Relaxed);
        live.failures.store(t.failure_total(), Ordering::Relaxed);
        live.disconnects
            .store(t.count(Count::Disconnects), Ordering::Relaxed);
    }

    fn sleep_budget(&self, now: Instant) -> Duration {
        let mut until = now + MAX_SLEEP;
        if let Some(Reverse((at, ..))) = self.timers.peek() {
            until = until.min(*at);
        }
        if !self.dial_queue.is_empty() && self.connecting < self.plan.max_connecting {
            until = until.min(self.next_dial_at);
        }
        until.saturating_duration_since(now)
    }

    /// Reacts to a phase change.
    fn enter(&mut self, phase: Phase) {
        let now = Instant::now();
        match phase {
            Phase::Measure => self.begin_measure(now),
            // Activity timers stop firing in Drain (see fire_timers); replies in flight still count.
            Phase::Drain => self.dial_queue.clear(),
            Phase::Ramp | Phase::Ready | Phase::Done => {}
        }
    }

    fn begin_measure(&mut self, now: Instant) {
        match self.plan.scenario.clone() {
            Scenario::Connect { .. } => {}
            Scenario::Telemetry {
                rate,
                pin,
                sample_every,
                ..
            } => self.begin_writes(now, rate, pin, sample_every, WriteValue::Sequence),
            Scenario::Fanout {
                rate,
                pin,
                sample_every,
                ..
            } => {
                // One anchor per shard, taken at the start: every stamp of this shard is on one
                // monotonic scale (see sendtime.rs).
                let clock = WallClock::anchored_at(now);
                let value = WriteValue::ScheduledTime(clock);
                self.begin_writes(now, rate, pin, sample_every, value);
            }
            Scenario::Ping { .. } => {
                for key in 0..self.sims.len() {
                    if !self.sims[key].state.is_online() {
                        continue;
                    }
                    self.sims[key].activity = Activity::Ping { outstanding: None };
                    self.activity_step(key, now);
                }
            }
            Scenario::Storm {
                trigger: StormTrigger::Client,
                ..
            } => {
                for key in 0..self.sims.len() {
                    if self.sims[key].state.is_online() {
                        self.close(key);
                        self.sims[key].offline_since = Some(now);
                        self.tally.add(Count::Disconnects, 1);
                        self.dial_queue.push_back(key);
                    }
                }
                // All at once: the login rate does not apply to a storm.
                self.dial_interval = Duration::ZERO;
                self.next_dial_at = now;
            }
            Scenario::Storm {
                trigger: StormTrigger::Server,
                ..
            } => {
                // Devices the gateway drops come back on their own backoff, not at the ramp's
                // login rate: a fleet does not queue politely after an outage.
                self.dial_interval = Duration::ZERO;
                self.next_dial_at = now;
            }
        }
    }

    /// Starts the telemetry schedule on every online device, spread over one interval by index.
    fn begin_writes(&mut self, now: Instant, rate: f64, pin: u8, every: u64, value: WriteValue) {
        let total = self.plan.devices.len().max(1) as f64;
        for key in 0..self.sims.len() {
            if !self.sims[key].state.is_online() {
                continue;
            }
            let offset = self.plan.devices[self.sims[key].spec].index as f64 / total;
            self.sims[key].activity = Activity::telemetry(now, rate, offset, pin, every, value);
            self.activity_step(key, now);
        }
    }

    fn dial_due(&mut self, now: Instant) {
        if self.seen_phase >= Phase::Drain {
            return;
        }
        while self.connecting < self.plan.max_connecting && self.next_dial_at <= now {
            let Some(key) = self.dial_queue.pop_front() else {
                break;
            };
            self.dial(key, now);
            self.next_dial_at += self.dial_interval;
        }
        if self.dial_queue.is_empty() && self.next_dial_at < now {
            self.next_dial_at = now;
        }
    }

    fn dial(&mut self, key: usize, now: Instant) {
        let plan = Arc::clone(&self.plan);
        let sim = &mut self.sims[key];
        let index = plan.devices[sim.spec].index;
        let target = if sim.tls {
            plan.tls_target
        } else {
            plan.plain_target
        };
        let tls = if sim.tls { plan.tls.as_ref() } else { None };
        sim.epoch = sim.epoch.wrapping_add(1);
        sim.ids = MsgIds::default();
        self.tally.add(Count::ConnectAttempts, 1);
        let mut link = match Link::open(target, plan.source_for(index), tls) {
            Ok(link) => link,
            Err(e) => return self.fail(key, e.reason()),
        };
        if let Err(e) = self.poll.registry().register(
            link.socket(),
            Token(key + 1),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(key, format!("register: {}", e.kind()));
        }
        let sim = &mut self.sims[key];
        sim.link = Some(link);
        let who = identity(&plan, sim.spec);
        let (state, _) =
            sim.state
                .upgrade(Event::Dialed { now }, &who, &mut sim.ids, &mut self.out);
        sim.state = state;
        sim.dialing = true;
        self.connecting += 1;
        self.timers.push(Reverse((
            now + plan.login_timeout,
            key,
            sim.epoch,
            TimerKind::Deadline,
        )));
    }

    /// Moves bytes for one device after a readiness event.
    fn pump(&mut self, key: usize, now: Instant) {
        let connecting = matches!(self.sims[key].state, DeviceState::Connecting { .. });
        let Some(link) = self.sims[key].link.as_mut() else {
            return;
        };
        if connecting {
            match link.connect_state() {
                Ok(ConnectState::InProgress) => return,
                Ok(ConnectState::Connected) => {
                    let tls = link.is_tls();
                    self.step(key, Event::TcpConnected { now, tls });
                }
                Err(e) => return self.fail(key, e.reason()),
            }
        }
        if let Err(e) = self.move_bytes(key, now) {
            self.lost(key, e, now);
        }
    }

    fn move_bytes(&mut self, key: usize, now: Instant) -> Result<(), LinkError> {
        let Some(link) = self.sims[key].link.as_mut() else {
            return Ok(());
        };
        link.flush()?;
        let state = link.read(&mut self.scratch)?;
        if matches!(self.sims[key].state, DeviceState::Handshaking { .. })
            && self.sims[key]
                .link
                .as_ref()
                .is_some_and(|l| !l.is_handshaking())
        {
            self.step(key, Event::HandshakeDone { now });
        }
        self.handle_inbound(key, now)?;
        self.send_out(key)?;
        match state {
            ReadState::Open => Ok(()),
            ReadState::Eof => Err(LinkError::ClosedByPeer),
        }
    }

    fn handle_inbound(&mut self, key: usize, now: Instant) -> Result<(), LinkError> {
        loop {
            let Some(link) = self.sims[key].link.as_mut() else {
                return Ok(());
            };
            let inbound = link.inbound();
            let (event, consumed) = match frame::decode(inbound, MAX_INBOUND_BODY) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    let event = match frame.payload {
                        Payload::Status(status) => Event::Response {
                            now,
                            msg_id: frame.msg_id,
                            status,
                        },
                        Payload::Body(_) => Event::Frame {
                            command: frame.command,
                        },
                    };
                    (event, consumed)
                }
                Ok(Decoded::NeedMore { .. }) => return Ok(()),
                Err(e) => {
                    return Err(LinkError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    )));
                }
            };
            inbound.drain(..consumed);
            if inbound.is_empty() && inbound.capacity() > READ_CHUNK {
                *inbound = Vec::new();
            }
            self.step(key, event);
            if self.sims[key].link.is_none() {
                return Ok(());
            }
        }
    }

    /// Feeds one event to the device state machine and acts on the outcome.
    fn step(&mut self, key: usize, event: Event) {
        let now = match event {
            Event::Dialed { now }
            | Event::TcpConnected { now, .. }
            | Event::HandshakeDone { now }
            | Event::Response { now, .. } => now,
            Event::Frame { .. } => Instant::now(),
        };
        let plan = Arc::clone(&self.plan);
        let sim = &mut self.sims[key];
        let who = identity(&plan, sim.spec);
        let (state, outcome) = sim.state.upgrade(event, &who, &mut sim.ids, &mut self.out);
        sim.state = state;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Connected { took } => self.tally.record(Latency::Connect, took),
            Outcome::LoggedIn { took } => {
                self.tally.record(Latency::Login, took);
                self.tally.add(Count::LoginsOk, 1);
            }
            Outcome::Online => self.online(key, now),
            Outcome::Refused { reason } => self.fail(key, reason),
            Outcome::Reply { msg_id, status } => {
                let keep_going = self.seen_phase == Phase::Measure;
                let sim = &mut self.sims[key];
                let mut ctx = Ctx {
                    now,
                    ids: &mut sim.ids,
                    out: &mut self.out,
                    tally: &mut self.tally,
                };
                if sim.activity.on_reply(msg_id, status, keep_going, &mut ctx)
                    == ReplyVerdict::NotOurs
                {
                    self.tally.add(Count::UnexpectedFrames, 1);
                }
            }
            Outcome::Unexpected { .. } => self.tally.add(Count::UnexpectedFrames, 1),
        }
    }

    fn online(&mut self, key: usize, now: Instant) {
        self.live.online.fetch_add(1, Ordering::Relaxed);
        let sim = &mut self.sims[key];
        if sim.dialing {
            sim.dialing = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        if let Some(since) = sim.offline_since.take() {
            self.tally
                .record(Latency::Reconnect, now.saturating_duration_since(since));
        }
        sim.redials = 0;
        sim.activity = Activity::heartbeat(self.plan.heartbeat_secs);
        // Like the Blynk libraries: the next PING is due a heartbeat after the last frame sent
        // (the info message), not after its reply, which a busy store may delay for seconds.
        let beat = Duration::from_secs(u64::from(self.plan.heartbeat_secs.max(1)));
        let first = (sim.last_sent + beat).max(now);
        self.timers
            .push(Reverse((first, key, sim.epoch, TimerKind::Activity)));
    }

    /// Runs the activity's timer step now and schedules the next one.
    fn activity_step(&mut self, key: usize, now: Instant) {
        let sim = &mut self.sims[key];
        let mut ctx = Ctx {
            now,
            ids: &mut sim.ids,
            out: &mut self.out,
            tally: &mut self.tally,
        };
        let next = sim.activity.on_timer(&mut ctx);
        let epoch = sim.epoch;
        if let Some(at) = next {
            self.timers
                .push(Reverse((at, key, epoch, TimerKind::Activity)));
        }
        if let Err(e) = self.send_out(key) {
            self.lost(key, e, now);
        }
    }

    fn send_out(&mut self, key: usize) -> Result<(), LinkError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sim = &mut self.sims[key];
        let result = match sim.link.as_mut() {
            Some(link) => {
                sim.last_sent = Instant::now();
                link.send(&self.out)
            }
            None => Ok(()),
        };
        self.out.clear();
        result
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut worst_lag = Duration::ZERO;
        while let Some(Reverse((at, key, epoch, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.sims[key].epoch != epoch {
                continue;
            }
            worst_lag = worst_lag.max(now.saturating_duration_since(at));
            match kind {
                TimerKind::Deadline => {
                    let sim = &self.sims[key];
                    if !sim.state.is_online() && sim.link.is_some() {
                        let reason = format!("timeout while {}", sim.state.stage());
                        self.fail(key, reason);
                    }
                }
                TimerKind::Activity => {
                    if self.sims[key].state.is_online()
                        && self.seen_phase != Phase::Drain
                        && self.seen_phase != Phase::Done
                    {
                        self.activity_step(key, now);
                    }
                }
                TimerKind::Redial => {
                    if self.sims[key].link.is_none() && self.seen_phase == Phase::Measure {
                        self.dial_queue.push_back(key);
                    }
                }
            }
        }
        let lag = u64::try_from(worst_lag.as_micros()).unwrap_or(u64::MAX);
        self.live.max_lag_us.fetch_max(lag, Ordering::Relaxed);
    }

    /// Closes a device's socket without judging why.
    fn close(&mut self, key: usize) {
        let sim = &mut self.sims[key];
        if let Some(mut link) = sim.link.take() {
            let _ = self.poll.registry().deregister(link.socket());
        }
        if sim.state.is_online() {
            self.live.online.fetch_sub(1, Ordering::Relaxed);
        }
        if sim.dialing {
            sim.dialing = false;
            self.connecting = self.connecting.saturating_sub(1);
        }
        sim.state = DeviceState::Offline;
        sim.epoch = sim.epoch.wrapping_add(1);
    }

    /// The connection broke; in a storm the device comes back, otherwise it is a failure.
    fn lost(&mut self, key: usize, error: LinkError, now: Instant) {
        let was_online = self.sims[key].state.is_online();
        if was_online {
            self.tally.add(Count::Disconnects, 1);
        }
        let storm_server = matches!(
            self.plan.scenario,
            Scenario::Storm {
                trigger: StormTrigger::Server,
                ..
            }
        ) && self.seen_phase == Phase::Measure;
        if was_online && storm_server {
            self.close(key);
            self.sims[key].offline_since = Some(now);
            self.schedule_redial(key, now);
            return;
        }
        let reason = if was_online {
            format!("{} after login", error.reason())
        } else {
            error.reason()
        };
        self.fail(key, reason);
    }

    /// A device failed: closed, counted by reason, and (only during a storm) tried again.
    fn fail(&mut self, key: usize, reason: String) {
        let now = Instant::now();
        self.close(key);
        let in_storm = matches!(self.plan.scenario, Scenario::Storm { .. })
            && self.seen_phase == Phase::Measure
            && self.sims[key].offline_since.is_some();
        if in_storm {
            self.tally.retry(reason);
            self.schedule_redial(key, now);
            return;
        }
        self.tally.fail(reason);
        self.live.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn schedule_redial(&mut self, key: usize, now: Instant) {
        let Scenario::Storm {
            reconnect_delay, ..
        } = self.plan.scenario
        else {
            return;
        };
        let sim = &mut self.sims[key];
        let backoff = reconnect_delay
            .saturating_mul(1 << sim.redials.min(6))
            .min(MAX_REDIAL_BACKOFF.max(reconnect_delay));
        // Spread devices over the backoff window so they do not return in lockstep.
        let spread = backoff.mul_f64((self.plan.devices[sim.spec].index % 97) as f64 / 97.0);
        sim.redials += 1;
        self.timers.push(Reverse((
            now + backoff / 2 + spread / 2,
            key,
            sim.epoch,
            TimerKind::Redial,
        )));
    }
}

fn identity(plan: &Plan, spec: usize) -> Identity<'_> {
    Identity {
        token: &plan.devices[spec].token,
        heartbeat_secs: plan.heartbeat_secs,
    }
}
