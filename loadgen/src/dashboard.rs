//! The self-contained HTML dashboard of a report (and the index page of a suite of reports):
//! inline SVG charts of throughput over time, connections over time, the latency percentile
//! distribution and failures by reason, plus the headline tables (and, for `fanout`, the app
//! side: events over time and the fan-out table). No scripts, fonts or styles
//! are fetched; the file opens offline in any browser.

use crate::report::{Fanout, Report, TimelinePoint, figures};
use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_BOTTOM: f64 = 32.0;
const MARGIN_TOP: f64 = 28.0;
const MARGIN_RIGHT: f64 = 16.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Escapes text for HTML and SVG.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart; `x_ticks` overrides the x-axis labels with (x, label) pairs.
fn line_chart(
    title: &str,
    y_unit: &str,
    series: &[Series],
    x_ticks: Option<&[(f64, &str)]>,
) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{t}</title><text x="{MARGIN_LEFT}" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    if x_min > x_max {
        svg.push_str(r#"<text x="80" y="120" font-size="13">no data</text></svg>"#);
        return svg;
    }
    if (x_max - x_min).abs() < f64::EPSILON {
        x_max = x_min + 1.0;
    }
    let y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.1 };
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let sx = |x: f64| MARGIN_LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| MARGIN_TOP + plot_h - y / y_max * plot_h;
    let _ = write!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{y0:.1}" y2="{y0:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{} {}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 4.0,
            sy(y) + 4.0,
            human(y),
            esc(y_unit),
            y0 = sy(y)
        );
    }
    let ticks: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.iter().map(|(x, l)| (*x, (*l).to_string())).collect(),
        None => (0..=5)
            .map(|i| {
                let x = x_min + (x_max - x_min) * f64::from(i) / 5.0;
                (x, format!("{x:.0}s"))
            })
            .collect(),
    };
    for (x, label) in ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            sx(x),
            HEIGHT - 12.0,
            esc(&label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/><text x="{:.1}" y="{}" font-size="11" fill="{color}">{}</text>"#,
            path.join(" "),
            MARGIN_LEFT + 8.0 + 150.0 * i as f64,
            MARGIN_TOP + 14.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn timeline_series(
    timeline: &[TimelinePoint],
    name: &str,
    f: impl Fn(&TimelinePoint) -> Option<f64>,
) -> Series {
    Series {
        name: name.into(),
        points: timeline
            .iter()
            .filter_map(|p| Some((p.t_s, f(p)?)))
            .collect(),
    }
}

/// Percentile → "nines" (50 → 0.3, 90 → 1, 99 → 2 ...), the usual HdrHistogram x axis.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-5);
    -rest.log10()
}

fn latency_chart(report: &Report) -> String {
    let series: Vec<Series> = report
        .latency_ms
        .iter()
        .map(|(name, p)| Series {
            name: format!("{name} (n={})", p.count),
            points: p
                .distribution
                .iter()
                .map(|&(pct, ms)| (nines(pct), ms))
                .collect(),
        })
        .collect();
    let ticks = [
        (nines(0.0), "0%"),
        (nines(50.0), "50%"),
        (nines(90.0), "90%"),
        (nines(99.0), "99%"),
        (nines(99.9), "99.9%"),
        (nines(99.99), "99.99%"),
        (nines(100.0), "max"),
    ];
    line_chart("Latency by percentile", "ms", &series, Some(&ticks))
}

fn failures_chart(report: &Report) -> String {
    let rows: Vec<(&String, u64, &str)> = report
        .result
        .failures
        .iter()
        .map(|(r, n)| (r, *n, "failed"))
        .chain(
            report
                .result
                .retried
                .iter()
                .map(|(r, n)| (r, *n, "retried")),
        )
        .collect();
    if rows.is_empty() {
        return "<p>No failures.</p>".into();
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let height = 24.0 * rows.len() as f64 + 8.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img"><title>Failures by reason</title>"#
    );
    for (i, (reason, n, kind)) in rows.iter().enumerate() {
        let y = 4.0 + 24.0 * i as f64;
        let w = (*n as f64 / max) * 260.0;
        let color = if *kind == "failed" {
            "#d62728"
        } else {
            "#ff7f0e"
        };
        let _ = write!(
            svg,
            r#"<rect x="0" y="{y}" width="{w:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12">{n} {kind}: {}</text>"#,
            w + 6.0,
            y + 13.0,
            esc(reason)
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.warn{color:#b00;font-weight:bold}.grid{display:flex;flex-wrap:wrap;gap:16px}code{background:#f4f4f4;padding:2px 4px}";

/// The dashboard of one report.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>portcullis-loadgen: {s}</title><style>{STYLE}</style></head><body><h1>{s}</h1><p><code>{cmd}</code></p>",
        s = esc(&report.scenario),
        cmd = esc(&report.command.join(" "))
    );
    if report.saturated {
        h.push_str("<p class=\"warn\">The load generator saturated during this run: the figures show its limit as much as the gateway's.</p>");
    }
    for w in &report.warnings {
        let _ = write!(h, "<p class=\"warn\">{}</p>", esc(w));
    }
    for n in &report.notes {
        let _ = write!(h, "<p>{}</p>", esc(n));
    }
    h.push_str("<h2>Figures</h2><table><tr><th>figure</th><th>value</th></tr>");
    for (name, value) in figures(report) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&name),
            human_exact(value)
        );
    }
    h.push_str("</table><h2>Latency</h2><table><tr><th>kind</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max (ms)</th></tr>");
    for (name, p) in &report.latency_ms {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(name),
            p.count,
            p.mean_ms,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms
        );
    }
    h.push_str("</table>");
    if let Some(f) = &report.fanout {
        h.push_str(&fanout_table(f));
    }
    h.push_str("<div class=\"grid\">");
    let t = &report.timeline;
    let mut throughput = vec![
        timeline_series(t, "logins", |p| Some(p.logins_per_s)),
        timeline_series(t, "writes sent", |p| Some(p.writes_per_s)),
        timeline_series(t, "writes acked", |p| Some(p.acked_per_s)),
        timeline_series(t, "pings", |p| Some(p.pings_per_s)),
    ];
    if report.fanout.is_some() {
        throughput.push(timeline_series(t, "app events", |p| Some(p.events_per_s)));
    }
    h.push_str(&line_chart("Throughput over time", "/s", &throughput, None));
    h.push_str(&line_chart(
        "Connections over time",
        "",
        &[
            timeline_series(t, "online", |p| Some(p.online as f64)),
            timeline_series(t, "failures", |p| Some(p.failures as f64)),
            timeline_series(t, "disconnects", |p| Some(p.disconnects as f64)),
        ],
        None,
    ));
    h.push_str(&latency_chart(report));
    h.push_str(&line_chart(
        "CPU over time",
        "%",
        &[
            timeline_series(t, "loadgen", |p| Some(p.loadgen_cpu_pct)),
            timeline_series(t, "gateway", |p| p.gateway_cpu_pct),
        ],
        None,
    ));
    h.push_str(&line_chart(
        "Memory over time",
        "MB",
        &[
            timeline_series(t, "gateway RSS", |p| p.gateway_rss_mb),
            timeline_series(t, "loadgen RSS", |p| Some(p.loadgen_rss_mb)),
        ],
        None,
    ));
    h.push_str("</div><h2>Failures</h2>");
    h.push_str(&failures_chart(report));
    let json = serde_json::to_string_pretty(&(
        &report.setup,
        &report.host,
        &report.memory,
        &report.cpu,
        &report.stored,
    ))
    .unwrap_or_default();
    let _ = write!(
        h,
        "<h2>Setup, memory, CPU, stored</h2><pre>{}</pre></body></html>",
        esc(&json)
    );
    h
}

/// The app side of a `fanout` run.
fn fanout_table(f: &Fanout) -> String {
    let mut h =
        String::from("<h2>Fan-out to apps</h2><table><tr><th>figure</th><th>value</th></tr>");
    let rows = [
        ("apps", f.apps.to_string()),
        (
            "transport",
            if f.app_tls { "wss" } else { "ws" }.to_string(),
        ),
        ("subscriptions planned", f.subscriptions_planned.to_string()),
        (
            "subscribers per device",
            format!(
                "{}–{}",
                f.subscribers_per_device_min, f.subscribers_per_device_max
            ),
        ),
        ("events expected", f.events_expected.to_string()),
        ("events received", f.events_received.to_string()),
        ("delivered", format!("{:.2} %", f.delivered_pct)),
        (
            "busiest app thread",
            f.busiest_app_thread_pct
                .map_or("-".to_string(), |p| format!("{p:.0} % of a core")),
        ),
    ];
    for (name, value) in rows {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(name), esc(&value));
    }
    h.push_str("</table>");
    h
}

fn human_exact(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The index page of a results directory: one row per report with its headline figures.
pub fn render_index(title: &str, reports: &[(String, Report)]) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><table><tr><th>report</th><th>scenario</th><th>devices</th><th>TLS %</th><th>headline</th><th>saturated</th></tr>",
        t = esc(title)
    );
    for (file, report) in reports {
        let dashboard = file.trim_end_matches(".json").to_string() + ".html";
        let headline: Vec<String> = figures(report)
            .into_iter()
            .filter(|(n, _)| {
                n.ends_with("/s")
                    || n.contains("p99 ")
                    || n.contains("B/conn")
                    || n.starts_with("storm")
            })
            .map(|(n, v)| format!("{n}: {}", human_exact(v)))
            .collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"{d}\">{f}</a></td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td></tr>",
            esc(&report.scenario),
            report.setup.devices,
            report.setup.tls_percent,
            esc(&headline.join("; ")),
            if report.saturated { "yes" } else { "no" },
            d = esc(&dashboard),
            f = esc(file)
        );
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::{Latency, Percentiles, Tally};
    use std::time::Duration;

    #[test]
    fn dashboard_is_self_contained_and_escapes_text() {
        let mut tally = Tally::new();
        for i in 1..=100 {
            tally.record(Latency::Ping, Duration::from_micros(i * 10));
        }
        let mut report = Report {
            scenario: "ping".into(),
            command: vec!["portcullis-loadgen".into(), "<script>".into()],
            ..Report::default()
        };
        report.latency_ms.insert(
            "ping".into(),
            Percentiles::of(tally.get(Latency::Ping).expect("hist")),
        );
        report.result.failures.insert("connect: refused".into(), 3);
        report.timeline.push(TimelinePoint {
            t_s: 1.0,
            pings_per_s: 100.0,
            ..TimelinePoint::default()
        });
        let html = render(&report);
        assert!(html.contains("<svg"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(html.contains("3 failed: connect: refused"));
        assert!(!html.contains("Fan-out"), "no app section outside fanout");
        let index = render_index("suite", &[("ping.json".into(), report)]);
        assert!(index.contains("href=\"ping.html\""));
    }

    #[test]
    fn a_fanout_dashboard_shows_the_app_side() {
        let report = Report {
            scenario: "fanout".into(),
            fanout: Some(Fanout {
                apps: 10,
                events_expected: 2000,
                events_received: 1990,
                delivered_pct: 99.5,
                busiest_app_thread_pct: Some(12.0),
                ..Fanout::default()
            }),
            timeline: vec![TimelinePoint {
                t_s: 1.0,
                events_per_s: 990.0,
                ..TimelinePoint::default()
            }],
            ..Report::default()
        };
        let html = render(&report);
        assert!(html.contains("Fan-out to apps"));
        assert!(
            html.contains("<td>events received</td><td>1990</td>"),
            "{html}"
        );
        assert!(html.contains("99.50 %"));
        assert!(html.contains("app events"));
    }
}
