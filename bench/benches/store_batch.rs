//! Question: how long does a shard spend encoding one telemetry batch for the store (a
//! `WritePins` request of up to 4,096 pin writes, postcard inside a length-prefixed frame), and
//! how long does the store take to decode it — i.e. how many pin writes per second the wire
//! format alone allows per core, before RocksDB? The 150,000 writes/s ingest goal needs this far
//! above 150k/s.
//! Run: `cargo bench -p portcullis-bench --bench store_batch`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{PinWrite, Request, RequestEnvelope, decode_frame, encode_frame};
use std::hint::black_box;

/// Batch sizes: a quiet loop turn, a busy one, and the shard's cap (`MAX_WRITE_BATCH`).
const BATCHES: [usize; 3] = [64, 1024, 4096];

fn batch(writes: usize) -> RequestEnvelope {
    RequestEnvelope {
        id: 7,
        acting: None,
        request: Request::WritePins {
            writes: (0..writes)
                .map(|i| PinWrite {
                    device: 1 + i as u64 * 7,
                    pin: PinAddr::new(PinKind::Virtual, (i % 32) as u8),
                    value: format!("{}.{}", 20 + i % 10, i % 100).into_bytes(),
                    at_ms: 1_764_000_000_000 + i as u64,
                })
                .collect(),
        },
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_batch");
    for writes in BATCHES {
        let envelope = batch(writes);
        group.throughput(Throughput::Elements(writes as u64));
        let mut out = Vec::with_capacity(writes * 32);
        group.bench_function(format!("encode WritePins x{writes}"), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(black_box(&envelope), &mut out).expect("fits in a frame");
                black_box(out.len())
            })
        });
        let mut wire = Vec::new();
        encode_frame(&envelope, &mut wire).expect("fits in a frame");
        group.bench_function(format!("decode WritePins x{writes}"), |b| {
            b.iter(|| {
                let decoded = decode_frame::<RequestEnvelope>(black_box(&wire))
                    .expect("valid")
                    .expect("complete");
                black_box(decoded.1)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
