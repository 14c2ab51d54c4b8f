//! A hand-written SVG chart of the fan-out results.
//!
//! Two panels, one line per server setup: flat-out deliveries per second
//! against subscribers, and p99 publish-to-delivery latency at a fixed rate
//! against subscribers (log scale). Plain SVG keeps the bench free of a
//! plotting dependency and the output diffable.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    report::Report,
    summary::{is_redis_label, label_of, label_rank, median},
};

const W: f64 = 960.0;
const H: f64 = 420.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 280.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#17becf", "#7f7f7f", "#ff7f0e", "#2ca02c",
];

type Series = BTreeMap<(u8, String), Vec<(f64, f64)>>;

/// Medians per label and subscriber count of `get` over matching reports.
fn series(
    reports: &[Report],
    keep: impl Fn(&Report) -> bool,
    get: fn(&Report) -> Option<f64>,
) -> Series {
    let mut raw: BTreeMap<(u8, String), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| keep(r) && crate::summary::comparable(r))
    {
        if let Some(v) = get(r) {
            raw.entry(label_rank(&label_of(r)))
                .or_default()
                .entry(r.subs)
                .or_default()
                .push(v);
        }
    }
    raw.into_iter()
        .map(|(label, by_subs)| {
            let points = by_subs
                .into_iter()
                .filter_map(|(subs, mut vs)| median(&mut vs).map(|m| (subs as f64, m)))
                .collect();
            (label, points)
        })
        .collect()
}

/// The most frequent fixed rate among fan-out runs (the latency panel's).
fn latency_rate(reports: &[Report]) -> Option<f64> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.scenario == "fanout") {
        if let Some(rate) = r.rate {
            *counts.entry((rate * 1000.0) as u64).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(milli, _)| milli as f64 / 1000.0)
}

/// Renders the chart.
pub fn render(reports: &[Report]) -> String {
    let memory = |r: &Report| !is_redis_label(&label_of(r));
    let flat = series(
        reports,
        |r| r.scenario == "fanout" && r.rate.is_none() && r.backlog.unwrap_or(32) > 1 && memory(r),
        |r| Some(r.deliveries_per_s),
    );
    let rate = latency_rate(reports);
    let latency = series(
        reports,
        |r| r.scenario == "fanout" && r.rate.is_some() && r.rate == rate && memory(r),
        |r| (r.latency_us.count > 0).then(|| r.latency_us.p99 as f64 / 1000.0),
    );
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    // One color per label across both panels and the legend.
    let mut seen: Vec<&(u8, String)> = flat.keys().chain(latency.keys()).collect();
    seen.sort();
    seen.dedup();
    panel(
        &mut svg,
        70.0,
        50.0,
        "Fan-out flat out (window 32): deliveries/s (higher is better)",
        &flat,
        false,
        &seen,
    );
    let title = match rate {
        Some(r) => format!("Fan-out at {r} msg/s: p99 latency, ms (lower is better)"),
        None => "Fan-out at a fixed rate: p99 latency, ms".to_owned(),
    };
    panel(&mut svg, 530.0, 50.0, &title, &latency, true, &seen);
    for (i, key) in seen.iter().enumerate() {
        let x = 70.0 + i as f64 * 140.0;
        let color = color_for(key, &seen);
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="395" x2="{}" y2="395" stroke="{color}" stroke-width="3"/><text x="{}" y="399">{}</text>"#,
            x + 24.0,
            x + 30.0,
            escape(&key.1)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn color_for(key: &(u8, String), all: &[&(u8, String)]) -> &'static str {
    let i = all.iter().position(|k| *k == key).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

fn panel(
    svg: &mut String,
    x0: f64,
    y0: f64,
    title: &str,
    data: &Series,
    log_y: bool,
    all: &[&(u8, String)],
) {
    let _ = writeln!(
        svg,
        r#"<text x="{x0}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        y0 - 15.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    let points: Vec<(f64, f64)> = data.values().flatten().copied().collect();
    if points.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">no data</text>"#,
            x0 + 160.0,
            y0 + 140.0
        );
        return;
    }
    let (xmin, xmax) = bounds(points.iter().map(|p| p.0.max(1.0).log10()));
    let (xmin, xmax) = (xmin.floor(), xmax.ceil().max(xmin.floor() + 1.0));
    let ty = |v: f64| if log_y { v.max(1e-3).log10() } else { v };
    let (ymin, ymax) = bounds(points.iter().map(|p| ty(p.1)));
    let (ymin, ymax) = if log_y {
        (ymin.floor(), ymax.ceil().max(ymin.floor() + 1.0))
    } else {
        (0.0, nice_ceiling(ymax))
    };
    let sx = |v: f64| x0 + (v.max(1.0).log10() - xmin) / (xmax - xmin) * PANEL_W;
    let sy = |v: f64| y0 + PANEL_H - (ty(v) - ymin) / (ymax - ymin).max(1e-9) * PANEL_H;
    // X ticks at powers of ten and their halves.
    let mut e = xmin;
    while e <= xmax {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(e);
            if v.log10() > xmax + 1e-9 {
                break;
            }
            let x = sx(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + PANEL_H,
                y0 + PANEL_H + 15.0,
                short(v)
            );
        }
        e += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">subscribers</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 32.0
    );
    // Y ticks.
    let ticks: Vec<f64> = if log_y {
        let mut t = Vec::new();
        let mut e = ymin;
        while e <= ymax {
            t.push(10f64.powf(e));
            e += 1.0;
        }
        t
    } else {
        (0..=5).map(|i| ymax * i as f64 / 5.0).collect()
    };
    for v in ticks {
        let y = sy(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 5.0,
            y + 4.0,
            short(v)
        );
    }
    for (key, pts) in data {
        let color = color_for(key, all);
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            path.join(" ")
        );
        for &(x, y) in pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {} subs, {}</title></circle>"#,
                sx(x),
                sy(y),
                escape(&key.1),
                x,
                short(y)
            );
        }
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(73_000.0), 100_000.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(short(150_000.0), "150k");
        assert_eq!(short(0.5), "0.5");
    }

    #[test]
    fn empty_input_still_renders() {
        let svg = render(&[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("no data"));
    }
}
