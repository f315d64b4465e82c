//! Pin history: every stored pin write is also appended to the `pin_history` family under
//! (device, pin, time, sequence), so one pin's points are one contiguous, time-ordered key range.
//!
//! Retention costs no scan: each value starts with its expiry time (write time + the retention of
//! the device's template, or the global default), the family is an expiring one
//! ([`Cf::expires`]), and the engine drops expired entries while compacting (RocksDB: a
//! compaction filter plus a periodic compaction). Queries skip entries that have expired but are
//! not yet compacted away, so a reader never sees data past its retention.
//!
//! Value layout: expiry ms (u64 BE) · the raw pin value.
//!
//! Raw reads page with a cursor naming the last point's time *and* sequence: several points of
//! one pin can share a millisecond, so a page that ends inside one must continue inside it, not
//! at the next millisecond (which would skip the rest of that one).

use super::{Result, SchemaError, keys};
use crate::engine::{Cf, EXPIRY_LEN, Engine, expired};
use portcullis_protocol::body::{PinAddr, SEPARATOR};
use portcullis_protocol::store::{
    DeviceId, History, HistoryBucket, HistoryCursor, HistoryPoint, MAX_HISTORY_BUCKETS,
    MAX_HISTORY_POINTS,
};
use std::collections::HashMap;
use std::time::Duration;

/// Default retention of pin history: 30 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Keys read per engine call while aggregating buckets.
const SCAN_CHUNK: usize = 4096;

/// How long history is kept: a default, and overrides per template id. A zero retention turns
/// history off for the devices it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub default: Duration,
    pub by_template: HashMap<String, Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default: DEFAULT_HISTORY_RETENTION,
            by_template: HashMap::new(),
        }
    }
}

impl Retention {
    /// How long a point written for a device of `template` is kept.
    pub fn of(&self, template: &str) -> Duration {
        self.by_template
            .get(template)
            .copied()
            .unwrap_or(self.default)
    }
}

/// The stored value of one history point, or `None` when retention is zero.
pub(super) fn value(at_ms: u64, retention: Duration, raw: &[u8]) -> Option<Vec<u8>> {
    if retention.is_zero() {
        return None;
    }
    let keep_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    let expiry = at_ms.saturating_add(keep_ms);
    let mut v = Vec::with_capacity(EXPIRY_LEN + raw.len());
    v.extend_from_slice(&expiry.to_be_bytes());
    v.extend_from_slice(raw);
    Some(v)
}

fn corrupt(key: &[u8], reason: &str) -> SchemaError {
    SchemaError::Corrupt {
        what: "pin history",
        key: keys::hex(key),
        reason: reason.into(),
    }
}

/// The live points of one pin in `[from_ms, to_ms)`, in time order, decoded.
struct Points<'a, E> {
    engine: &'a E,
    next: Vec<u8>,
    end: Vec<u8>,
    now_ms: u64,
    done: bool,
}

impl<E: Engine> Points<'_, E> {
    /// Up to `limit` points from where the previous call stopped (fewer means the range is done),
    /// each with its cursor.
    fn take(&mut self, limit: usize) -> Result<Vec<(HistoryCursor, HistoryPoint)>> {
        let mut out = Vec::new();
        while !self.done && out.len() < limit {
            let chunk = self.engine.scan_range(
                Cf::History,
                &self.next,
                Some(self.end.as_slice()),
                limit - out.len(),
            )?;
            if chunk.len() < limit - out.len() {
                self.done = true;
            }
            let Some((last, _)) = chunk.last() else { break };
            self.next = last.clone();
            self.next.push(0);
            for (key, value) in chunk {
                if expired(&value, self.now_ms) {
                    continue;
                }
                let (at_ms, seq) = keys::parse_history_position(&key)
                    .ok_or_else(|| corrupt(&key, "not a history key"))?;
                let raw = value
                    .get(EXPIRY_LEN..)
                    .ok_or_else(|| corrupt(&key, "value shorter than its expiry"))?;
                out.push((
                    HistoryCursor { at_ms, seq },
                    HistoryPoint {
                        at_ms,
                        value: raw.to_vec(),
                    },
                ));
            }
        }
        Ok(out)
    }
}

/// The fields of a `ReadHistory` request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Query {
    pub device: DeviceId,
    pub pin: PinAddr,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: Option<u64>,
    pub limit: u32,
    pub after: Option<HistoryCursor>,
}

/// Answers a `ReadHistory` request (the device's existence is checked by the caller).
pub(super) fn read<E: Engine>(engine: &E, query: Query, now_ms: u64) -> Result<History> {
    let Query {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms,
        limit,
        after,
    } = query;
    if to_ms <= from_ms {
        return Err(SchemaError::Invalid(format!(
            "the history range is empty: from {from_ms} is not before to {to_ms}"
        )));
    }
    let start = match after {
        None => keys::history_from(device, pin, from_ms),
        Some(_) if step_ms.is_some() => {
            return Err(SchemaError::Invalid(
                "a history cursor pages raw points; downsampled reads are never paged".into(),
            ));
        }
        Some(HistoryCursor { at_ms, .. }) if at_ms < from_ms || at_ms >= to_ms => {
            return Err(SchemaError::Invalid(format!(
                "the history cursor at {at_ms} lies outside the range [{from_ms}, {to_ms})"
            )));
        }
        Some(HistoryCursor { at_ms, seq }) => {
            // Just past the cursor's own key: the next sequence of that millisecond, or later.
            let mut key = keys::history(device, pin, at_ms, seq);
            key.push(0);
            key
        }
    };
    let mut points = Points {
        engine,
        next: start,
        end: keys::history_from(device, pin, to_ms),
        now_ms,
        done: false,
    };
    let Some(step) = step_ms else {
        let limit = limit.clamp(1, MAX_HISTORY_POINTS) as usize;
        // One extra point tells whether the range holds more than this page.
        let mut page = points.take(limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more
            .then(|| page.last().map(|(cursor, _)| *cursor))
            .flatten();
        return Ok(History::Points {
            points: page.into_iter().map(|(_, p)| p).collect(),
            next,
        });
    };
    if step == 0 {
        return Err(SchemaError::Invalid("the step must be above 0 ms".into()));
    }
    let buckets = (to_ms - from_ms).div_ceil(step);
    if buckets > MAX_HISTORY_BUCKETS {
        return Err(SchemaError::Invalid(format!(
            "{buckets} buckets asked for; the limit is {MAX_HISTORY_BUCKETS}: use a larger step or a shorter range"
        )));
    }
    let mut out: Vec<HistoryBucket> = Vec::new();
    let mut sum = 0.0;
    loop {
        let chunk = points.take(SCAN_CHUNK)?;
        let last_chunk = chunk.len() < SCAN_CHUNK;
        for (_, p) in chunk {
            let Some(x) = numeric(&p.value) else { continue };
            let start_ms = from_ms + (p.at_ms - from_ms) / step * step;
            match out.last_mut() {
                Some(b) if b.start_ms == start_ms => {
                    b.count += 1;
                    b.min = b.min.min(x);
                    b.max = b.max.max(x);
                    sum += x;
                }
                _ => {
                    if let Some(b) = out.last_mut() {
                        b.avg = sum / b.count as f64;
                    }
                    sum = x;
                    out.push(HistoryBucket {
                        start_ms,
                        count: 1,
                        min: x,
                        max: x,
                        avg: x,
                    });
                }
            }
        }
        if last_chunk {
            break;
        }
    }
    if let Some(b) = out.last_mut() {
        b.avg = sum / b.count as f64;
    }
    Ok(History::Buckets(out))
}

/// The number in a pin value (its first value, for a multi-value write), if it is one.
fn numeric(value: &[u8]) -> Option<f64> {
    let first = value.split(|&b| b == SEPARATOR).next()?;
    let x: f64 = std::str::from_utf8(first).ok()?.trim().parse().ok()?;
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_the_first_value_only() {
        assert_eq!(numeric(b"21.5"), Some(21.5));
        assert_eq!(numeric(b" -3 "), Some(-3.0));
        assert_eq!(numeric(b"1\x002\x003"), Some(1.0));
        assert_eq!(numeric(b"on"), None);
        assert_eq!(numeric(b"NaN"), None);
        assert_eq!(numeric(b"inf"), None);
        assert_eq!(numeric(b""), None);
    }

    #[test]
    fn values_carry_their_expiry_and_zero_retention_keeps_nothing() {
        let v = value(1_000, Duration::from_secs(2), b"x").expect("kept");
        assert_eq!(&v[..EXPIRY_LEN], &3_000u64.to_be_bytes());
        assert_eq!(&v[EXPIRY_LEN..], b"x");
        assert!(!expired(&v, 2_999) && expired(&v, 3_000));
        assert_eq!(value(1_000, Duration::ZERO, b"x"), None);
        let r = Retention {
            default: Duration::from_secs(5),
            by_template: [("T".to_owned(), Duration::from_secs(1))].into(),
        };
        assert_eq!(r.of("T"), Duration::from_secs(1));
        assert_eq!(r.of("U"), Duration::from_secs(5));
    }
}
