//! The engine conformance suite: one generic function per behaviour the schema relies on, run
//! against every engine by the `conformance!` macro at the bottom. A behaviour the in-memory
//! engine gets right and RocksDB does not (or the reverse) fails here, not in a schema test.

use super::memory::MemoryEngine;
use super::rocks::RocksEngine;
use super::{Cf, Durability, Engine, WriteBatch};

fn put(e: &impl Engine, cf: Cf, key: &[u8], value: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(cf, key, value);
    e.write(b, Durability::Buffered).expect("write");
}

fn keys(kvs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Vec<u8>> {
    kvs.into_iter().map(|(k, _)| k).collect()
}

fn get_of_missing_key_is_none(e: &impl Engine) {
    assert_eq!(e.get(Cf::Devices, b"nothing").expect("get"), None);
}

fn put_get_overwrite_delete(e: &impl Engine) {
    put(e, Cf::Devices, b"k", b"v1");
    assert_eq!(e.get(Cf::Devices, b"k").expect("get"), Some(b"v1".to_vec()));
    put(e, Cf::Devices, b"k", b"v2");
    assert_eq!(e.get(Cf::Devices, b"k").expect("get"), Some(b"v2".to_vec()));
    let mut b = WriteBatch::new();
    b.delete(Cf::Devices, b"k");
    b.delete(Cf::Devices, b"never-there");
    e.write(b, Durability::Sync).expect("delete");
    assert_eq!(e.get(Cf::Devices, b"k").expect("get"), None);
}

fn empty_values_are_stored(e: &impl Engine) {
    put(e, Cf::Meta, b"empty", b"");
    assert_eq!(e.get(Cf::Meta, b"empty").expect("get"), Some(Vec::new()));
}

fn batch_ops_apply_in_order(e: &impl Engine) {
    let mut b = WriteBatch::new();
    b.put(Cf::Pins, b"a", b"1");
    b.delete(Cf::Pins, b"a");
    b.delete(Cf::Pins, b"b");
    b.put(Cf::Pins, b"b", b"2");
    b.put(Cf::Pins, b"c", b"3");
    b.put(Cf::Pins, b"c", b"4");
    e.write(b, Durability::Sync).expect("write");
    assert_eq!(e.get(Cf::Pins, b"a").expect("get"), None);
    assert_eq!(e.get(Cf::Pins, b"b").expect("get"), Some(b"2".to_vec()));
    assert_eq!(e.get(Cf::Pins, b"c").expect("get"), Some(b"4".to_vec()));
}

fn batch_spans_column_families(e: &impl Engine) {
    let mut b = WriteBatch::new();
    for cf in Cf::ALL {
        b.put(cf, b"same-key", cf.name());
    }
    e.write(b, Durability::Sync).expect("write");
    for cf in Cf::ALL {
        assert_eq!(
            e.get(cf, b"same-key").expect("get"),
            Some(cf.name().as_bytes().to_vec())
        );
    }
    let mut b = WriteBatch::new();
    b.delete(Cf::Pins, b"same-key");
    e.write(b, Durability::Buffered).expect("write");
    assert_eq!(e.get(Cf::Pins, b"same-key").expect("get"), None);
    assert!(
        e.get(Cf::Properties, b"same-key").expect("get").is_some(),
        "families are independent"
    );
}

fn delete_range_removes_only_its_range(e: &impl Engine) {
    for k in [&b"a"[..], b"b", b"b\x00", b"b\xff", b"c", b"d"] {
        put(e, Cf::History, k, b"v");
    }
    put(e, Cf::Pins, b"b", b"other family");
    let mut b = WriteBatch::new();
    b.put(Cf::History, b"bz", b"written before the range delete");
    b.delete_range(Cf::History, b"b", b"c");
    b.put(Cf::History, b"b\x01", b"written after it");
    e.write(b, Durability::Sync).expect("write");
    assert_eq!(
        keys(e.scan_prefix(Cf::History, b"").expect("scan")),
        vec![
            b"a".to_vec(),
            b"b\x01".to_vec(),
            b"c".to_vec(),
            b"d".to_vec()
        ]
    );
    assert!(e.get(Cf::Pins, b"b").expect("get").is_some());
}

fn empty_batch_is_a_no_op(e: &impl Engine) {
    e.write(WriteBatch::new(), Durability::Sync)
        .expect("empty sync batch");
    e.write(WriteBatch::new(), Durability::Buffered)
        .expect("empty buffered batch");
    assert!(e.scan_prefix(Cf::Meta, b"").expect("scan").is_empty());
}

fn keys_order_bytewise(e: &impl Engine) {
    let order: [&[u8]; 6] = [b"", &[0x00], &[0x00, 0x00], &[0x01], &[0x7f, 0xff], &[0xff]];
    for k in order.iter().rev() {
        put(e, Cf::TokenIndex, k, b"v");
    }
    let got = keys(
        e.scan_range(Cf::TokenIndex, b"", None, usize::MAX)
            .expect("scan"),
    );
    assert_eq!(got, order.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
}

fn scan_range_bounds_and_limit(e: &impl Engine) {
    for i in 0u8..10 {
        put(e, Cf::Devices, &[i], &[i]);
    }
    put(e, Cf::Pins, &[4], b"other family");
    let scan = |start: &[u8], end: Option<&[u8]>, limit| {
        keys(e.scan_range(Cf::Devices, start, end, limit).expect("scan"))
    };
    assert_eq!(
        scan(&[3], Some(&[6]), 100),
        vec![vec![3], vec![4], vec![5]],
        "start inclusive, end exclusive"
    );
    assert_eq!(scan(&[3], None, 2), vec![vec![3], vec![4]], "limit");
    assert_eq!(scan(&[3, 0], None, 1), vec![vec![4]], "start between keys");
    assert_eq!(scan(&[8], None, 100), vec![vec![8], vec![9]], "open end");
    assert!(scan(&[6], Some(&[6]), 100).is_empty(), "empty range");
    assert!(scan(&[7], Some(&[2]), 100).is_empty(), "inverted range");
    assert!(scan(&[0], None, 0).is_empty(), "zero limit");
    assert!(scan(&[10], None, 100).is_empty(), "past the end");
    let kvs = e
        .scan_range(Cf::Devices, &[2], Some(&[3]), 10)
        .expect("scan");
    assert_eq!(kvs, vec![(vec![2], vec![2])], "values come with their keys");
}

fn paging_visits_every_key_once(e: &impl Engine) {
    let all: Vec<Vec<u8>> = (0u32..257)
        .map(|i| (i * 7).to_be_bytes().to_vec())
        .collect();
    for k in &all {
        put(e, Cf::Devices, k, b"");
    }
    let mut seen = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = keys(e.scan_range(Cf::Devices, &start, None, 10).expect("scan"));
        let Some(last) = page.last() else { break };
        start = last.clone();
        start.push(0);
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

fn scan_prefix_matches_exactly(e: &impl Engine) {
    for k in [
        &b"dev1/a"[..],
        b"dev1/b",
        b"dev1",
        b"dev10/a",
        b"dev2/a",
        b"dev0",
    ] {
        put(e, Cf::Pins, k, k);
    }
    let got = keys(e.scan_prefix(Cf::Pins, b"dev1/").expect("scan"));
    assert_eq!(got, vec![b"dev1/a".to_vec(), b"dev1/b".to_vec()]);
    assert_eq!(e.scan_prefix(Cf::Pins, b"dev1").expect("scan").len(), 4);
    assert_eq!(
        e.scan_prefix(Cf::Pins, b"").expect("scan").len(),
        6,
        "empty prefix is everything"
    );
    assert!(e.scan_prefix(Cf::Pins, b"zzz").expect("scan").is_empty());
}

fn scan_prefix_with_ff_bytes(e: &impl Engine) {
    for k in [
        &[0xfe, 0xff][..],
        &[0xff],
        &[0xff, 0x00],
        &[0xff, 0xff],
        &[0xff, 0xff, 0x01],
    ] {
        put(e, Cf::Properties, k, b"");
    }
    let got = keys(e.scan_prefix(Cf::Properties, &[0xff, 0xff]).expect("scan"));
    assert_eq!(got, vec![vec![0xff, 0xff], vec![0xff, 0xff, 0x01]]);
    let got = keys(e.scan_prefix(Cf::Properties, &[0xfe]).expect("scan"));
    assert_eq!(got, vec![vec![0xfe, 0xff]]);
}

fn sync_wal_keeps_data_readable(e: &impl Engine) {
    put(e, Cf::Pins, b"p", b"1");
    e.sync_wal().expect("sync");
    e.sync_wal().expect("sync twice");
    assert_eq!(e.get(Cf::Pins, b"p").expect("get"), Some(b"1".to_vec()));
}

fn concurrent_writers_all_land(e: &impl Engine) {
    std::thread::scope(|s| {
        for t in 0u8..4 {
            s.spawn(move || {
                for i in 0u8..50 {
                    let mut b = WriteBatch::new();
                    b.put(Cf::Pins, [t, i], [i]);
                    let durability = if i % 10 == 0 {
                        Durability::Sync
                    } else {
                        Durability::Buffered
                    };
                    e.write(b, durability).expect("write");
                }
            });
        }
    });
    assert_eq!(e.scan_prefix(Cf::Pins, b"").expect("scan").len(), 200);
    for t in 0u8..4 {
        assert_eq!(e.scan_prefix(Cf::Pins, &[t]).expect("scan").len(), 50);
    }
}

fn compaction_drops_only_expired_entries(e: &impl Engine) {
    let now = super::unix_ms();
    let value_expiring_at = |at: u64| {
        let mut v = at.to_be_bytes().to_vec();
        v.extend_from_slice(b"payload");
        v
    };
    put(e, Cf::History, b"old", &value_expiring_at(now - 1));
    put(
        e,
        Cf::History,
        b"young",
        &value_expiring_at(now + 3_600_000),
    );
    put(e, Cf::History, b"short", b"xy");
    // Not an expiring family: the same bytes are kept whatever they say.
    put(e, Cf::Pins, b"old", &value_expiring_at(now - 1));
    e.compact(Cf::History).expect("compact");
    e.compact(Cf::Pins).expect("compact");
    assert_eq!(
        keys(e.scan_prefix(Cf::History, b"").expect("scan")),
        vec![b"short".to_vec(), b"young".to_vec()]
    );
    assert!(e.get(Cf::Pins, b"old").expect("get").is_some());
}

macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod memory_engine {
            $(
                #[test]
                fn $behaviour() {
                    super::$behaviour(&super::MemoryEngine::new());
                }
            )*
        }
        mod rocks_engine {
            $(
                #[test]
                fn $behaviour() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let engine = super::RocksEngine::open(dir.path()).expect("open rocksdb");
                    super::$behaviour(&engine);
                }
            )*
        }
    };
}

conformance!(
    get_of_missing_key_is_none,
    compaction_drops_only_expired_entries,
    put_get_overwrite_delete,
    empty_values_are_stored,
    batch_ops_apply_in_order,
    batch_spans_column_families,
    delete_range_removes_only_its_range,
    empty_batch_is_a_no_op,
    keys_order_bytewise,
    scan_range_bounds_and_limit,
    paging_visits_every_key_once,
    scan_prefix_matches_exactly,
    scan_prefix_with_ff_bytes,
    sync_wal_keeps_data_readable,
    concurrent_writers_all_land,
);

/// Model check: random batches over a small key space, applied to both engines, must leave them
/// answering every point read, range scan and prefix scan identically.
mod engines_agree {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum RandomOp {
        Put(usize, Vec<u8>, Vec<u8>),
        Delete(usize, Vec<u8>),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes so keys collide, share prefixes and hit 0x00/0xff edges.
        prop::collection::vec(
            prop::sample::select(vec![0x00u8, 0x01, 0x7f, 0xfe, 0xff]),
            0..4,
        )
    }

    fn op() -> impl Strategy<Value = RandomOp> {
        prop_oneof![
            3 => (0..Cf::ALL.len(), key(), prop::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(cf, k, v)| RandomOp::Put(cf, k, v)),
            1 => (0..Cf::ALL.len(), key()).prop_map(|(cf, k)| RandomOp::Delete(cf, k)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn after_random_batches(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..6), 1..12),
            probes in prop::collection::vec((key(), prop::option::of(key()), 0usize..5), 1..8),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let rocks = RocksEngine::open(dir.path()).expect("open rocksdb");
            let memory = MemoryEngine::new();
            for (i, ops) in batches.iter().enumerate() {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op {
                        RandomOp::Put(cf, k, v) => batch.put(Cf::ALL[*cf], k.clone(), v.clone()),
                        RandomOp::Delete(cf, k) => batch.delete(Cf::ALL[*cf], k.clone()),
                    }
                }
                let durability = if i % 2 == 0 { Durability::Sync } else { Durability::Buffered };
                rocks.write(batch.clone(), durability).expect("rocks write");
                memory.write(batch, durability).expect("memory write");
            }
            for cf in Cf::ALL {
                prop_assert_eq!(
                    rocks.scan_prefix(cf, b"").expect("scan"),
                    memory.scan_prefix(cf, b"").expect("scan")
                );
                for (start, end, limit) in &probes {
                    prop_assert_eq!(rocks.get(cf, start).expect("get"), memory.get(cf, start).expect("get"));
                    prop_assert_eq!(
                        rocks.scan_range(cf, start, end.as_deref(), *limit).expect("scan"),
                        memory.scan_range(cf, start, end.as_deref(), *limit).expect("scan")
                    );
                    prop_assert_eq!(
                        rocks.scan_prefix(cf, start).expect("scan"),
                        memory.scan_prefix(cf, start).expect("scan")
                    );
                }
            }
        }
    }
}
