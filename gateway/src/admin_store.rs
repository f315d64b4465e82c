//! The admin commands that read pin history and back the store up: `portcullis admin device
//! history ID PIN --from --to [--step]` (raw points, paged until the range is exhausted, or
//! min/max/avg buckets) and `portcullis admin backup DIR` (a consistent RocksDB checkpoint written
//! by the running store). Times are RFC 3339 or Unix milliseconds; steps are durations such as
//! `30s`, `5m`, `1h`, `1d` or plain milliseconds.

use anyhow::{Context, bail};
use portcullis_protocol::body::{PinAddr, SEPARATOR};
use portcullis_protocol::store::{
    DeviceId, History, HistoryBucket, HistoryPoint, MAX_HISTORY_POINTS, Request, Response,
};
use portcullis_store_client::StoreClient;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Most raw points `device history` prints; a longer range must be narrowed or downsampled.
pub const MAX_PRINTED_POINTS: usize = 1_000_000;
/// The default history range when `--from` is not given: the last day before `--to`.
pub const DEFAULT_HISTORY_SPAN_MS: u64 = 24 * 60 * 60 * 1000;

/// Parses a time given as RFC 3339 (`2026-11-28T22:00:00Z`) or Unix milliseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is neither Unix milliseconds nor RFC 3339 ({e})"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Parses a duration: plain milliseconds, or a number with `ms`, `s`, `m`, `h` or `d`.
pub fn parse_step(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s, 5m, 1h or 1d"))?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m, h or d"
            ));
        }
    };
    match n.checked_mul(unit_ms) {
        Some(0) => Err("the step must be above zero".into()),
        Some(ms) => Ok(ms),
        None => Err(format!("{text:?} is too long")),
    }
}

#[derive(Serialize)]
struct PointView {
    at_ms: u64,
    value: String,
    values: Vec<String>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum HistoryView<'a> {
    Points {
        device: DeviceId,
        pin: String,
        from_ms: u64,
        to_ms: u64,
        points: Vec<PointView>,
    },
    Buckets {
        device: DeviceId,
        pin: String,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
        buckets: &'a [HistoryBucket],
    },
}

/// What `device history` asks for.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub device: DeviceId,
    pub pin: PinAddr,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: Option<u64>,
}

/// Asks the store for the whole range: every raw page in turn, following the store's cursor (a
/// page may end inside a millisecond, and the cursor continues inside it), or the buckets.
fn fetch_history(
    call: &mut dyn FnMut(Request) -> anyhow::Result<Response>,
    query: HistoryQuery,
) -> anyhow::Result<(Vec<HistoryPoint>, Vec<HistoryBucket>)> {
    let HistoryQuery {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms,
    } = query;
    let mut points = Vec::new();
    let mut after = None;
    loop {
        let request = Request::ReadHistory {
            device,
            pin,
            from_ms,
            to_ms,
            step_ms,
            limit: MAX_HISTORY_POINTS,
            after,
        };
        match call(request)? {
            Response::History(History::Buckets(buckets)) => return Ok((points, buckets)),
            Response::History(History::Points { points: page, next }) => {
                points.extend(page);
                if points.len() > MAX_PRINTED_POINTS {
                    bail!(
                        "over {MAX_PRINTED_POINTS} points in this range; narrow it or pass --step to downsample"
                    );
                }
                match next {
                    Some(cursor) if after != Some(cursor) => after = Some(cursor),
                    Some(_) => bail!("the store repeated a history cursor; stopping"),
                    None => return Ok((points, Vec::new())),
                }
            }
            other => bail!("the store answered ReadHistory with an unexpected {other:?}"),
        }
    }
}

/// `device history`: prints the points (or buckets) of one pin in `[from_ms, to_ms)`.
pub fn device_history(
    client: &mut StoreClient,
    query: HistoryQuery,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let HistoryQuery {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms,
    } = query;
    if to_ms <= from_ms {
        bail!("--from ({from_ms}) must be before --to ({to_ms})");
    }
    let mut call = |request| {
        client
            .call(request)
            .map_err(|e| crate::admin::device_error(device, e))
    };
    let (points, buckets) = fetch_history(&mut call, query)?;
    let pin_name = pin.to_string();
    let view = match step_ms {
        Some(step_ms) => HistoryView::Buckets {
            device,
            pin: pin_name,
            from_ms,
            to_ms,
            step_ms,
            buckets: &buckets,
        },
        None => HistoryView::Points {
            device,
            pin: pin_name,
            from_ms,
            to_ms,
            points: points
                .iter()
                .map(|p| {
                    let values: Vec<String> = p
                        .value
                        .split(|&b| b == SEPARATOR)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    PointView {
                        at_ms: p.at_ms,
                        value: values.join(" "),
                        values,
                    }
                })
                .collect(),
        },
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&view)?)?;
        return Ok(());
    }
    match view {
        HistoryView::Points { points, .. } if points.is_empty() => {
            writeln!(out, "No values of {pin} of device {device} in that range.")?;
        }
        HistoryView::Points { points, .. } => {
            let rows: Vec<[String; 2]> = points
                .iter()
                .map(|p| {
                    [
                        crate::admin::format_ms(p.at_ms),
                        crate::admin::printable(&p.value),
                    ]
                })
                .collect();
            crate::admin::write_table(out, ["TIME", "VALUE"], &rows)?;
        }
        HistoryView::Buckets { buckets, .. } => {
            let rows: Vec<[String; 5]> = buckets
                .iter()
                .map(|b| {
                    [
                        crate::admin::format_ms(b.start_ms),
                        b.count.to_string(),
                        b.min.to_string(),
                        b.max.to_string(),
                        format!("{:.3}", b.avg),
                    ]
                })
                .collect();
            crate::admin::write_table(out, ["BUCKET", "COUNT", "MIN", "MAX", "AVG"], &rows)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct BackupView<'a> {
    dir: &'a str,
    bytes: u64,
}

/// `backup DIR`: asks the running store for a checkpoint in DIR (made absolute here, since the
/// store's working directory is not ours).
pub fn backup(
    client: &mut StoreClient,
    dir: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    let Some(dir) = dir.to_str() else {
        bail!("the backup directory {} is not valid UTF-8", dir.display());
    };
    let (dir, bytes) = match client.call(Request::Backup {
        dir: dir.to_owned(),
    })? {
        Response::BackedUp { dir, bytes } => (dir, bytes),
        other => bail!("the store answered Backup with an unexpected {other:?}"),
    };
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&BackupView { dir: &dir, bytes })?
        )?;
    } else {
        writeln!(out, "Backup written to {dir} ({bytes} bytes).")?;
        writeln!(
            out,
            "Restore it with: portcullis-store --data-dir DIR --restore {dir} (with the store stopped)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps_parse_or_say_why_not() {
        assert_eq!(parse_time("1500"), Ok(1500));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_step("250"), Ok(250));
        assert_eq!(parse_step("30s"), Ok(30_000));
        assert_eq!(parse_step("5m"), Ok(300_000));
        assert_eq!(parse_step("2h"), Ok(7_200_000));
        assert_eq!(parse_step("1d"), Ok(86_400_000));
        assert!(parse_step("0s").is_err());
        assert!(
            parse_step("5w")
                .expect_err("no such unit")
                .contains("unknown unit")
        );
        assert!(parse_step("m").is_err());
    }

    /// A store that pages two points at a time, whatever the limit, over points that share
    /// milliseconds: the command must follow the cursor and get every point once.
    #[test]
    fn history_follows_the_cursor_through_a_split_millisecond() {
        use portcullis_protocol::body::PinKind;
        use portcullis_protocol::store::HistoryCursor;
        let stored: Vec<(HistoryCursor, &str)> =
            [(5, 0, "a"), (5, 1, "b"), (5, 2, "c"), (6, 3, "d")]
                .into_iter()
                .map(|(at_ms, seq, v)| (HistoryCursor { at_ms, seq }, v))
                .collect();
        let mut calls = 0;
        let mut store = |request: Request| -> anyhow::Result<Response> {
            calls += 1;
            let Request::ReadHistory { after, .. } = request else {
                bail!("unexpected {request:?}");
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
        };
        let query = HistoryQuery {
            device: 1,
            pin: PinAddr::new(PinKind::Virtual, 1),
            from_ms: 0,
            to_ms: 10,
            step_ms: None,
        };
        let (points, _) = fetch_history(&mut store, query).expect("history");
        let values: Vec<_> = points.iter().map(|p| p.value.as_slice()).collect();
        assert_eq!(values, [b"a", b"b", b"c", b"d"]);
        assert_eq!(calls, 2);
    }
}
