//! Question: what does the per-shard timer wheel cost per connection — to schedule a deadline, and
//! to expire a tick's worth of deadlines — when a shard holds 100,000 idle connections? An idle
//! device costs one `schedule` per heartbeat period and one visit when its entry fires, so these
//! two numbers bound the timer work of an idle shard (e.g. 100k devices with a 23 s timeout:
//! ~4,350 schedules and expiries per second).
//! Run: `cargo bench -p portcullis-bench --bench timer_wheel`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portcullis_gateway::conn::ConnId;
use portcullis_gateway::reactor::timer::{TICK, TimerWheel};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Connections per shard in the scenario.
const CONNECTIONS: u32 = 100_000;

/// The heartbeat timeout of a device with the default 10 s heartbeat (ceil(2.3 × 10)).
const TIMEOUT: Duration = Duration::from_secs(23);

fn id(n: u32) -> ConnId {
    ConnId {
        slot: n,
        generation: 1,
    }
}

/// A wheel holding `CONNECTIONS` deadlines spread evenly over one timeout period.
fn full_wheel(t0: Instant) -> TimerWheel {
    let mut wheel = TimerWheel::new(t0);
    for n in 0..CONNECTIONS {
        let offset = TIMEOUT.mul_f64(f64::from(n) / f64::from(CONNECTIONS));
        let at = wheel.deadline_after(t0 + offset, TIMEOUT);
        wheel.schedule(id(n), at);
    }
    wheel
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel");
    let t0 = Instant::now();

    group.throughput(Throughput::Elements(u64::from(CONNECTIONS)));
    group.bench_function("schedule 100k deadlines", |b| {
        b.iter_batched(
            || TimerWheel::new(t0),
            |mut wheel| {
                for n in 0..CONNECTIONS {
                    let at =
                        wheel.deadline_after(t0, TIMEOUT + Duration::from_micros(u64::from(n)));
                    wheel.schedule(id(n), at);
                }
                black_box(wheel.len())
            },
            BatchSize::LargeInput,
        )
    });

    // One tick of a full wheel: the entries due in that tick are expired, the rest stay.
    let per_tick =
        (f64::from(CONNECTIONS) * TICK.as_secs_f64() / TIMEOUT.as_secs_f64()).ceil() as u64;
    group.throughput(Throughput::Elements(per_tick));
    group.bench_function("advance one tick of a 100k wheel", |b| {
        b.iter_batched(
            || (full_wheel(t0), Vec::with_capacity(per_tick as usize * 2)),
            |(mut wheel, mut expired)| {
                wheel.advance(t0 + TIMEOUT + TICK, &mut expired);
                black_box(expired.len())
            },
            BatchSize::LargeInput,
        )
    });

    // Expire everything: the cost of a whole timeout period's worth of expiries.
    group.throughput(Throughput::Elements(u64::from(CONNECTIONS)));
    group.bench_function("expire all 100k after a full period", |b| {
        b.iter_batched(
            || (full_wheel(t0), Vec::with_capacity(CONNECTIONS as usize)),
            |(mut wheel, mut expired)| {
                wheel.advance(t0 + TIMEOUT * 3, &mut expired);
                black_box(expired.len())
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
