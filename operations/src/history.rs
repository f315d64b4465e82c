//! Reading (and so exporting) the stored history of one pin over a time range: every raw point,
//! following the store's page cursor to the end of the range, or min/max/avg buckets of a
//! fixed step. The device lookup travels pipelined with the first page and decides whether the
//! principal sees the device before any point is returned.

use crate::devices::visible_device;
use crate::error::{InvalidInput, Missing, OperationError, StoreFailure};
use crate::principal::Principal;
use crate::store_access::{Answer, StoreAccess, act, act_pair};
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::{
    DeviceId, History, HistoryBucket, HistoryCursor, HistoryPoint, MAX_HISTORY_POINTS, Request,
    Response, StoreError,
};

/// Most raw points one read returns; a longer range must be narrowed or downsampled.
pub const MAX_POINTS: usize = 1_000_000;

/// What to read: `[from_ms, to_ms)` of one pin, raw or in buckets of `step_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub device: DeviceId,
    pub pin: PinAddr,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: Option<u64>,
}

/// The stored history of the range, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryData {
    /// Raw points (no step asked for).
    Points(Vec<HistoryPoint>),
    /// One bucket per step that holds numeric values (a step was asked for).
    Buckets(Vec<HistoryBucket>),
}

/// Reads the whole range: every raw page in turn (a page may end inside a millisecond, and the
/// store's cursor continues inside it), or the buckets.
pub fn read(
    store: &mut impl StoreAccess,
    principal: &Principal,
    query: HistoryQuery,
) -> Result<HistoryData, OperationError> {
    let HistoryQuery {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms,
    } = query;
    if to_ms <= from_ms {
        return Err(InvalidInput::EmptyRange { from_ms, to_ms }.into());
    }
    let page = |after: Option<HistoryCursor>| Request::ReadHistory {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms,
        limit: MAX_HISTORY_POINTS,
        after,
    };
    let (device_reply, mut reply) =
        act_pair(store, principal, Request::GetDevice { device }, page(None))?;
    visible_device(device, device_reply)?;
    let mut points = Vec::new();
    let mut after = None;
    loop {
        match history_of(device, reply)? {
            History::Buckets(buckets) if step_ms.is_some() => {
                return Ok(HistoryData::Buckets(buckets));
            }
            History::Points { points: got, next } if step_ms.is_none() => {
                points.extend(got);
                if points.len() > MAX_POINTS {
                    return Err(InvalidInput::TooManyPoints { max: MAX_POINTS }.into());
                }
                match next {
                    Some(cursor) if after != Some(cursor) => after = Some(cursor),
                    Some(_) => return Err(StoreFailure::RepeatedCursor.into()),
                    None => return Ok(HistoryData::Points(points)),
                }
            }
            other => {
                return Err(OperationError::unexpected(
                    "ReadHistory",
                    &Response::History(other),
                ));
            }
        }
        reply = act(store, principal, page(after))?;
    }
}

fn history_of(device: DeviceId, reply: Answer) -> Result<History, OperationError> {
    match reply {
        Ok(Response::History(history)) => Ok(history),
        Ok(other) => Err(OperationError::unexpected("ReadHistory", &other)),
        Err(StoreError::NotFound(_)) => Err(OperationError::NotFound(Missing::Device(device))),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{ScriptedStore, device, fleet, v5};

    fn query(device: DeviceId) -> HistoryQuery {
        HistoryQuery {
            device,
            pin: v5(),
            from_ms: 0,
            to_ms: 10,
            step_ms: None,
        }
    }

    /// A store that pages two points at a time, whatever the limit, over points that share
    /// milliseconds: the read must follow the cursor and get every point once.
    #[test]
    fn history_follows_the_cursor_through_a_split_millisecond() {
        let stored: Vec<(HistoryCursor, &str)> =
            [(5, 0, "a"), (5, 1, "b"), (5, 2, "c"), (6, 3, "d")]
                .into_iter()
                .map(|(at_ms, seq, v)| (HistoryCursor { at_ms, seq }, v))
                .collect();
        let mut store = ScriptedStore::new(move |request| {
            let Request::ReadHistory { after, .. } = request else {
                return Ok(Response::Device(device(1, 2)));
            };
            let rest: Vec<_> = stored
                .iter()
                .filter(|(c, _)| after.is_none_or(|a| (c.at_ms, c.seq) > (a.at_ms, a.seq)))
                .collect();
            let page: Vec<_> = rest.iter().take(2).collect();
            let next = (rest.len() > 2).then(|| page[1].0);
            Ok(Response::History(History::Points {
                points: page
                    .iter()
                    .map(|(c, v)| HistoryPoint {
                        at_ms: c.at_ms,
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                next,
            }))
        });
        let HistoryData::Points(points) =
            read(&mut store, &Principal::Operator, query(1)).expect("history")
        else {
            panic!("points expected");
        };
        let values: Vec<_> = points.iter().map(|p| p.value.as_slice()).collect();
        assert_eq!(values, [b"a", b"b", b"c", b"d"]);
        assert_eq!(
            store.batches,
            [2, 1],
            "the lookup rides with the first page"
        );
    }

    #[test]
    fn history_scope_matrix() {
        for (who, principal, sees_device_of_a) in [
            ("operator", Principal::Operator, true),
            ("member of a", crate::scripted::ann(), true),
            ("member of b", crate::scripted::bob(), false),
        ] {
            let mut store = fleet();
            match read(&mut store, &principal, query(1)) {
                Ok(HistoryData::Points(points)) if sees_device_of_a => {
                    assert_eq!(points.len(), 1, "{who}");
                }
                Err(OperationError::NotFound(Missing::Device(1))) if !sees_device_of_a => {}
                other => panic!("{who}: {other:?}"),
            }
            let missing = read(&mut store, &principal, query(99)).expect_err("missing");
            assert!(
                matches!(missing, OperationError::NotFound(Missing::Device(99))),
                "{who}: {missing:?}"
            );
        }
    }

    #[test]
    fn empty_ranges_repeated_cursors_and_mismatched_kinds_are_refused() {
        let mut store = fleet();
        let backwards = HistoryQuery {
            from_ms: 10,
            to_ms: 10,
            ..query(1)
        };
        let error = read(&mut store, &Principal::Operator, backwards).expect_err("empty");
        assert!(matches!(
            error,
            OperationError::Invalid(InvalidInput::EmptyRange {
                from_ms: 10,
                to_ms: 10
            })
        ));
        assert!(store.requests.is_empty(), "refused before asking");

        let cursor = HistoryCursor { at_ms: 1, seq: 0 };
        let mut looping = ScriptedStore::new(move |request| match request {
            Request::GetDevice { .. } => Ok(Response::Device(device(1, 2))),
            _ => Ok(Response::History(History::Points {
                points: Vec::new(),
                next: Some(cursor),
            })),
        });
        let error = read(&mut looping, &Principal::Operator, query(1)).expect_err("loops");
        assert!(matches!(
            error,
            OperationError::StoreFailure(StoreFailure::RepeatedCursor)
        ));

        let stepped = HistoryQuery {
            step_ms: Some(5),
            ..query(1)
        };
        let error = read(&mut fleet(), &Principal::Operator, stepped).expect_err("points");
        assert!(matches!(
            error,
            OperationError::StoreFailure(StoreFailure::Unexpected { .. })
        ));
    }
}
