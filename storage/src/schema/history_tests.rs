//! Pin history through the store: every pin write lands in the series, ranges and paging,
//! downsampling, retention per template, and expiry without a scan (compaction drops it).

use super::history::Retention;
use super::tests::{AsOperator, ensure_template, tmpl};
use super::*;
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    DeviceId, History, HistoryBucket, HistoryCursor, HistoryPoint, PinWrite,
};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: u64 = 86_400_000;

fn store_with(retention: Retention) -> (Store<Arc<MemoryEngine>>, Arc<MemoryEngine>) {
    let engine = Arc::new(MemoryEngine::new());
    let s = Store::open_with(Arc::clone(&engine), StoreOptions { retention }).expect("open");
    (s, engine)
}

fn create(s: &Store<impl Engine>, template: &str, token: u8) -> DeviceId {
    let template = format!("TMPL{template}");
    ensure_template(s, OrgId::ROOT, &template);
    match s.op(Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl(&template),
        owner: None,
        name: "d".into(),
        token_hash: [token; 32],
    }) {
        Ok(Response::Device(d)) => d.id,
        other => panic!("{other:?}"),
    }
}

fn v(pin: u8) -> PinAddr {
    PinAddr::new(PinKind::Virtual, pin)
}

fn write(s: &Store<impl Engine>, device: DeviceId, pin: PinAddr, at_ms: u64, value: &str) {
    let req = Request::WritePins {
        writes: vec![PinWrite {
            device,
            pin,
            value: value.as_bytes().to_vec(),
            at_ms,
        }],
    };
    assert_eq!(s.op(req), Ok(Response::Done));
}

fn history(
    s: &Store<impl Engine>,
    device: DeviceId,
    from_ms: u64,
    to_ms: u64,
    step_ms: Option<u64>,
    limit: u32,
) -> Result<History, StoreError> {
    history_after(s, device, from_ms, to_ms, step_ms, limit, None)
}

fn history_after(
    s: &Store<impl Engine>,
    device: DeviceId,
    from_ms: u64,
    to_ms: u64,
    step_ms: Option<u64>,
    limit: u32,
    after: Option<HistoryCursor>,
) -> Result<History, StoreError> {
    s.op(Request::ReadHistory {
        device,
        pin: v(1),
        from_ms,
        to_ms,
        step_ms,
        limit,
        after,
    })
    .map(|r| match r {
        Response::History(h) => h,
        other => panic!("{other:?}"),
    })
}

fn points(h: History) -> (Vec<(u64, String)>, bool) {
    let (points, next) = page(h);
    (points, next.is_some())
}

fn page(h: History) -> (Vec<(u64, String)>, Option<HistoryCursor>) {
    match h {
        History::Points { points, next } => (
            points
                .into_iter()
                .map(|HistoryPoint { at_ms, value }| {
                    (at_ms, String::from_utf8(value).expect("utf8"))
                })
                .collect(),
            next,
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_write_is_kept_in_time_order_and_ranges_page() {
    let (s, _) = store_with(Retention::default());
    let now = unix_ms();
    let d = create(&s, "T", 1);
    let other = create(&s, "T", 2);
    for i in 0..10u64 {
        write(&s, d, v(1), now + i * 10, &i.to_string());
    }
    // Same millisecond twice: both kept.
    write(&s, d, v(1), now + 90, "again");
    write(&s, d, v(2), now + 5, "other pin");
    write(&s, other, v(1), now + 5, "other device");

    let (all, more) = points(history(&s, d, now, now + 1000, None, 100).expect("read"));
    assert!(!more);
    assert_eq!(all.len(), 11);
    assert_eq!(all[0], (now, "0".into()));
    assert_eq!(all[9], (now + 90, "9".into()));
    assert_eq!(all[10], (now + 90, "again".into()));

    let (range, _) = points(history(&s, d, now + 20, now + 50, None, 100).expect("read"));
    assert_eq!(
        range.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        ["2", "3", "4"],
        "from inclusive, to exclusive"
    );
    let (page, more) = points(history(&s, d, now, now + 1000, None, 4).expect("read"));
    assert_eq!((page.len(), more), (4, true));
    let (rest, more) = points(history(&s, d, now + 31, now + 1000, None, 100).expect("read"));
    assert_eq!((rest.len(), more), (7, false));
    // The latest value is still the plain pin value.
    assert!(matches!(
        s.op(Request::ReadPins { device: d, pins: Some(vec![v(1)]) }),
        Ok(Response::Pins(p)) if p[0].value == b"again"
    ));
}

/// Pages that end inside a millisecond continue inside it: with three points per millisecond and
/// pages of two, every point comes back exactly once, in order. (Paging by time, from the last
/// point's millisecond + 1, lost the rest of each split millisecond.)
#[test]
fn paging_never_skips_points_that_share_a_millisecond() {
    let (s, _) = store_with(Retention::default());
    let now = unix_ms();
    let d = create(&s, "T", 1);
    let mut written = Vec::new();
    for ms in 0..4u64 {
        for n in 0..3 {
            let value = format!("{ms}.{n}");
            write(&s, d, v(1), now + ms, &value);
            written.push((now + ms, value));
        }
    }
    let mut got = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (points, next) =
            page(history_after(&s, d, now, now + 10, None, 2, after).expect("read"));
        assert!(points.len() <= 2);
        got.extend(points);
        pages += 1;
        assert!(pages <= written.len(), "paging does not end");
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(got, written);
    assert_eq!(pages, 6);

    // A cursor outside the range, or on a downsampled read, is refused.
    let outside = Some(HistoryCursor {
        at_ms: now + 10,
        seq: 0,
    });
    let err = history_after(&s, d, now, now + 10, None, 2, outside);
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("outside")));
    let inside = Some(HistoryCursor { at_ms: now, seq: 0 });
    let err = history_after(&s, d, now, now + 10, Some(5), 2, inside);
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("cursor")));
}

#[test]
fn buckets_hold_min_max_avg_of_numeric_values() {
    let (s, _) = store_with(Retention::default());
    let t0 = unix_ms() / 1000 * 1000;
    let d = create(&s, "T", 1);
    for (offset, value) in [
        (0, "1"),
        (100, "3"),
        (999, "5"),
        (1000, "off"),
        (2500, "-2\u{0}7"),
    ] {
        write(&s, d, v(1), t0 + offset, value);
    }
    let Ok(History::Buckets(buckets)) = history(&s, d, t0, t0 + 3000, Some(1000), 0) else {
        panic!("buckets expected");
    };
    assert_eq!(
        buckets,
        vec![
            HistoryBucket {
                start_ms: t0,
                count: 3,
                min: 1.0,
                max: 5.0,
                avg: 3.0
            },
            HistoryBucket {
                start_ms: t0 + 2000,
                count: 1,
                min: -2.0,
                max: -2.0,
                avg: -2.0
            },
        ],
        "the non-numeric bucket is left out; a multi-value write counts its first value"
    );
    let err = history(&s, d, t0, t0 + 3000, Some(0), 0);
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("step")));
    let err = history(&s, d, t0, t0 + 1_000_000, Some(1), 0);
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("buckets")));
    let err = history(&s, d, t0, t0, None, 10);
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("empty")));
    assert!(matches!(
        history(&s, 77, t0, t0 + 1, None, 1),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn retention_applies_per_template_and_compaction_drops_expired_points() {
    let retention = Retention {
        default: Duration::from_secs(3 * 86_400),
        by_template: [
            ("TMPLSHORT".to_owned(), Duration::from_secs(86_400)),
            ("TMPLNONE".to_owned(), Duration::ZERO),
        ]
        .into(),
    };
    let (s, engine) = store_with(retention);
    let now = unix_ms();
    let long = create(&s, "LONG", 1);
    let short = create(&s, "SHORT", 2);
    let none = create(&s, "NONE", 3);
    for d in [long, short, none] {
        write(&s, d, v(1), now - 2 * DAY_MS, "two days ago");
        write(&s, d, v(1), now - 1000, "just now");
    }
    let count = |d| {
        points(history(&s, d, 0, now + 1, None, 100).expect("read"))
            .0
            .len()
    };
    assert_eq!(count(long), 2, "3-day default keeps both");
    assert_eq!(
        count(short),
        1,
        "1-day template hides the old point at once"
    );
    assert_eq!(count(none), 0, "zero retention keeps no history");
    assert_eq!(
        engine.scan_prefix(Cf::History, b"").expect("scan").len(),
        4,
        "expired, not yet gone"
    );
    engine.compact(Cf::History).expect("compact");
    assert_eq!(
        engine.scan_prefix(Cf::History, b"").expect("scan").len(),
        3,
        "compaction dropped the expired point without the store scanning for it"
    );
    assert_eq!(count(short), 1);
}

#[test]
fn a_reopened_store_keeps_points_of_a_millisecond_written_before_the_restart() {
    let engine = Arc::new(MemoryEngine::new());
    let open = || {
        Store::open_with(
            Arc::clone(&engine),
            StoreOptions {
                retention: Retention::default(),
            },
        )
        .expect("open")
    };
    let at = unix_ms();
    let d = {
        let s = open();
        let d = create(&s, "T", 1);
        write(&s, d, v(1), at, "before the restart");
        d
    };
    for round in 0..3 {
        let s = open();
        write(&s, d, v(1), at, &format!("after restart {round}"));
    }
    let s = open();
    let (all, _) = points(history(&s, d, at, at + 1, None, 100).expect("read"));
    assert_eq!(all.len(), 4, "no point replaced another: {all:?}");
    assert!(all.contains(&(at, "before the restart".into())), "{all:?}");
}
