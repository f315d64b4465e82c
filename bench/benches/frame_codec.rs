//! Question: how many Blynk frames per second can one core decode and encode, and how much does
//! a device session step (decode + dispatch into the outbox) cost on top of the bare codec?
//! Run: `cargo bench -p portcullis-bench --bench frame_codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_gateway::protocols::Outbox;
use portcullis_gateway::protocols::blynk::device::DeviceSession;
use portcullis_protocol::Command;
use portcullis_protocol::frame::{self, Decoded};
use std::hint::black_box;

/// A stream of typical device traffic: virtual writes, a ping, an info message.
fn stream(frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..frames {
        let id = (i % 65535 + 1) as u16;
        match i % 10 {
            0 => frame::encode(&mut out, Command::Ping, id, b"").expect("fits"),
            1 => frame::encode_args(
                &mut out,
                Command::Internal,
                id,
                &[b"ver", b"1.0.0", b"h-beat", b"45", b"buff-in", b"256"],
            )
            .expect("fits"),
            _ => frame::encode_args(&mut out, Command::Hardware, id, &[b"vw", b"5", b"23.75"])
                .expect("fits"),
        }
    }
    out
}

fn decode_all(bytes: &[u8]) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while let Ok(Decoded::Frame { frame, consumed }) = frame::decode(&bytes[pos..], 4096) {
        black_box(frame);
        pos += consumed;
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let bytes = stream(1000);
    let mut group = c.benchmark_group("frame_codec");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("decode_1000_frames", |b| {
        b.iter(|| decode_all(black_box(&bytes)))
    });
    group.bench_function("encode_1000_hardware_writes", |b| {
        let mut out = Vec::with_capacity(16 * 1024);
        b.iter(|| {
            out.clear();
            for i in 0..1000u16 {
                frame::encode_args(&mut out, Command::Hardware, i + 1, &[b"vw", b"5", b"23.75"])
                    .expect("fits");
            }
            black_box(out.len())
        })
    });
    group.bench_function("session_step_1000_frames", |b| {
        let mut session = DeviceSession::new(1, std::sync::Arc::from("TMPL1"));
        let mut outbox = Outbox::default();
        b.iter(|| {
            let mut pos = 0;
            while let Ok(Decoded::Frame { frame, consumed }) = frame::decode(&bytes[pos..], 4096) {
                black_box(session.on_frame(&frame, &mut outbox));
                pos += consumed;
            }
            let frames = outbox.frames().count();
            outbox.clear();
            black_box(frames)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
