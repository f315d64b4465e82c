//! `portcullis admin device history ID PIN --from --to [--step]`: the stored values of one pin
//! over a time range, raw points or min/max/avg buckets, read with
//! `portcullis_operations::history` as the operator. Times are RFC 3339 or Unix milliseconds;
//! steps are durations such as `30s`, `5m`, `1h`, `1d` or plain milliseconds.

use super::args::now_ms;
use super::render::{self, failure, format_ms, pin_values, printable, write_table};
use anyhow::anyhow;
use portcullis_operations::error::InvalidInput;
use portcullis_operations::history::{self, HistoryData, HistoryQuery};
use portcullis_operations::{OperationError, Principal, StoreAccess};
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::{DeviceId, HistoryBucket};
use serde::Serialize;
use std::io::Write;

/// The default history range when `--from` is not given: the last day before `--to`.
pub const DEFAULT_HISTORY_SPAN_MS: u64 = 24 * 60 * 60 * 1000;

// The arguments of `device history` (its help text is the doc comment of
// `DeviceCommand::History`).
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Device id (see `device list`).
    id: DeviceId,
    /// Pin name such as V5, D13 or A0.
    #[arg(value_parser = parse_pin)]
    pin: PinAddr,
    /// Start of the range (inclusive): RFC 3339 or Unix ms [default: one day before --to].
    #[arg(long, value_parser = parse_time)]
    from: Option<u64>,
    /// End of the range (exclusive): RFC 3339 or Unix ms [default: now].
    #[arg(long, value_parser = parse_time)]
    to: Option<u64>,
    /// Downsample into buckets of this length (min/max/avg each): 500ms, 30s, 5m, 1h, 1d.
    #[arg(long, value_parser = parse_step)]
    step: Option<u64>,
}

/// Parses a pin name such as `V5`, `D13` or `A0`.
pub fn parse_pin(name: &str) -> Result<PinAddr, String> {
    PinAddr::parse_name(name).map_err(|e| e.to_string())
}

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

/// `device history`: prints the points (or buckets) of one pin in `[from, to)`.
pub fn execute(
    store: &mut impl StoreAccess,
    args: HistoryArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let HistoryArgs {
        id: device,
        pin,
        from,
        to,
        step,
    } = args;
    let to_ms = to.unwrap_or_else(now_ms);
    let from_ms = from.unwrap_or_else(|| to_ms.saturating_sub(DEFAULT_HISTORY_SPAN_MS));
    let query = HistoryQuery {
        device,
        pin,
        from_ms,
        to_ms,
        step_ms: step,
    };
    let data = history::read(store, &Principal::Operator, query).map_err(|error| match error {
        OperationError::Invalid(InvalidInput::EmptyRange { from_ms, to_ms }) => {
            anyhow!("--from ({from_ms}) must be before --to ({to_ms})")
        }
        OperationError::Invalid(InvalidInput::TooManyPoints { max }) => {
            anyhow!("over {max} points in this range; narrow it or pass --step to downsample")
        }
        other => failure(other),
    })?;
    let pin_name = pin.to_string();
    let view = match &data {
        HistoryData::Buckets(buckets) => HistoryView::Buckets {
            device,
            pin: pin_name,
            from_ms,
            to_ms,
            step_ms: step.unwrap_or_default(),
            buckets,
        },
        HistoryData::Points(points) => HistoryView::Points {
            device,
            pin: pin_name,
            from_ms,
            to_ms,
            points: points
                .iter()
                .map(|p| {
                    let values = pin_values(&p.value);
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
        return render::json(out, &view);
    }
    match view {
        HistoryView::Points { points, .. } if points.is_empty() => {
            writeln!(out, "No values of {pin} of device {device} in that range.")?;
        }
        HistoryView::Points { points, .. } => {
            let rows: Vec<[String; 2]> = points
                .iter()
                .map(|p| [format_ms(p.at_ms), printable(&p.value)])
                .collect();
            write_table(out, ["TIME", "VALUE"], &rows)?;
        }
        HistoryView::Buckets { buckets, .. } => {
            let rows: Vec<[String; 5]> = buckets
                .iter()
                .map(|b| {
                    [
                        format_ms(b.start_ms),
                        b.count.to_string(),
                        b.min.to_string(),
                        b.max.to_string(),
                        format!("{:.3}", b.avg),
                    ]
                })
                .collect();
            write_table(out, ["BUCKET", "COUNT", "MIN", "MAX", "AVG"], &rows)?;
        }
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
}
