//! A self-contained HTML page: tables and inline SVG line charts, no scripts, no external
//! files, so it opens anywhere and can be archived with the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (targets, references).
    pub dashed: bool,
}

impl Series {
    fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
        }
    }
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick positions covering `lo..=hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 50 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An SVG line chart. `markers` are vertical lines at x with a label (swaps, commands);
/// `log_y` plots y on a log10 scale (latencies span orders of magnitude).
pub fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    markers: &[(f64, String)],
    log_y: bool,
) -> String {
    let (w, h) = (760.0, 300.0);
    let (ml, mr, mt, mb) = (64.0, 180.0, 28.0, 42.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<(f64, f64)> = pts
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><text x="{ml}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    if finite.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#,
            ml + pw / 2.0 - 30.0,
            mt + ph / 2.0
        );
        return svg;
    }
    let xs = finite
        .iter()
        .map(|p| p.0)
        .chain(markers.iter().map(|m| m.0));
    let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x1 - x0 < 1e-9 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let ty = |v: f64| if log_y { v.log10() } else { v };
    let (mut y0, mut y1) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(ty(p.1)), b.max(ty(p.1)))
    });
    if log_y {
        y0 = y0.floor();
        y1 = y1.ceil().max(y0 + 1.0);
    } else {
        y0 = y0.min(0.0);
        if y1 - y0 < 1e-9 {
            y1 = y0 + 1.0;
        }
        y1 *= 1.05;
    }
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + ph - (ty(y) - y0) / (y1 - y0) * ph;
    // Axes and grid.
    let _ = write!(
        svg,
        r#"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="plot"/>"#
    );
    let yt: Vec<f64> = if log_y {
        (y0 as i32..=y1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(y0, y1, 5)
    };
    for v in yt {
        let y = sy(v);
        let _ = write!(
            svg,
            r#"<line x1="{ml}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    for v in ticks(x0, x1, 8) {
        let x = sx(v);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{mt}" y2="{}" class="grid"/><text x="{x:.1}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
            mt + ph,
            mt + ph + 16.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" class="label" text-anchor="middle">{}</text><text x="14" y="{}" class="label" text-anchor="middle" transform="rotate(-90 14 {})">{}{}</text>"#,
        ml + pw / 2.0,
        h - 6.0,
        esc(x_label),
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(y_label),
        if log_y { " (log)" } else { "" }
    );
    for (x, label) in markers {
        let px = sx(*x);
        let _ = write!(
            svg,
            r#"<line x1="{px:.1}" x2="{px:.1}" y1="{mt}" y2="{}" class="marker"><title>{}</title></line>"#,
            mt + ph,
            esc(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        let mut pen_up = true;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) || (log_y && y <= 0.0) {
                pen_up = true;
                continue;
            }
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if pen_up { "M" } else { "L" },
                sx(x),
                sy(y)
            );
            pen_up = false;
        }
        if !d.is_empty() {
            let _ = write!(
                svg,
                r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.8"{}><title>{}</title></path>"#,
                d.trim_end(),
                if s.dashed {
                    r#" stroke-dasharray="5,4""#
                } else {
                    ""
                },
                esc(&s.name)
            );
        }
        if s.points.len() <= 30 {
            for &(x, y) in &s.points {
                if x.is_finite() && y.is_finite() && (!log_y || y > 0.0) {
                    let _ = write!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                        sx(x),
                        sy(y)
                    );
                }
            }
        }
        let ly = mt + 12.0 + i as f64 * 16.0;
        let _ = write!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"{}/><text x="{}" y="{}" class="legend">{}</text>"#,
            w - mr + 12.0,
            w - mr + 32.0,
            if s.dashed {
                r#" stroke-dasharray="5,4""#
            } else {
                ""
            },
            w - mr + 38.0,
            ly + 4.0,
            esc(&truncate(&s.name, 24))
        );
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// The charts of a report, in page order.
pub fn charts(r: &Report) -> Vec<String> {
    let markers: Vec<(f64, String)> = r
        .actions
        .iter()
        .map(|a| (a.t_s, format!("{} at {:.1} s: {}", a.kind, a.t_s, a.what)))
        .collect();
    let bins: Vec<&crate::record::Bin> = r.phases.iter().flat_map(|p| &p.timeline).collect();
    let mid = |b: &crate::record::Bin| b.t_s + 0.5;
    let lat = |f: fn(&crate::record::Latency) -> f64| -> Vec<(f64, f64)> {
        bins.iter()
            .filter(|b| b.latency.count > 0)
            .map(|b| (mid(b), f(&b.latency)))
            .collect()
    };
    let mut out = Vec::new();
    out.push(chart(
        "Latency over time (from the intended send time)",
        "time since start (s)",
        "latency (ms)",
        &[
            Series::new("p50", lat(|l| l.p50_ms)),
            Series::new("p90", lat(|l| l.p90_ms)),
            Series::new("p99", lat(|l| l.p99_ms)),
            Series::new("max", lat(|l| l.max_ms)),
        ],
        &markers,
        true,
    ));
    let open: Vec<&crate::record::PhaseReport> = r
        .phases
        .iter()
        .filter(|p| p.offered_rate.is_some())
        .collect();
    if !open.is_empty() {
        let by_rate = |f: &dyn Fn(&crate::record::PhaseReport) -> f64| -> Vec<(f64, f64)> {
            open.iter()
                .map(|p| (p.offered_rate.unwrap_or(0.0), f(p)))
                .collect()
        };
        let mut s = vec![
            Series::new("p50 (intended)", by_rate(&|p| p.latency_intended.p50_ms)),
            Series::new("p99 (intended)", by_rate(&|p| p.latency_intended.p99_ms)),
            Series::new("p99.9 (intended)", by_rate(&|p| p.latency_intended.p999_ms)),
            Series::new("p99 (actual send)", by_rate(&|p| p.latency_actual.p99_ms)),
        ];
        if let Some(sw) = &r.sweep {
            let (lo, hi) = open.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
                let x = p.offered_rate.unwrap_or(0.0);
                (a.min(x), b.max(x))
            });
            for t in &sw.sustainable {
                s.push(Series {
                    name: format!("target {} ms", t.p99_ms),
                    points: vec![(lo, t.p99_ms), (hi, t.p99_ms)],
                    dashed: true,
                });
            }
        }
        out.push(chart(
            "Latency vs offered rate",
            "offered rate (operations/s)",
            "latency (ms)",
            &s,
            &[],
            true,
        ));
        out.push(chart(
            "Throughput vs offered rate",
            "offered rate (operations/s)",
            "operations/s",
            &[
                Series::new("offered", by_rate(&|p| p.offered_rate.unwrap_or(0.0))),
                Series::new("succeeded", by_rate(&|p| p.ok_rate)),
            ],
            &[],
            false,
        ));
    }
    let per_s = |f: fn(&crate::record::Bin) -> u64| -> Vec<(f64, f64)> {
        bins.iter().map(|b| (mid(b), f(b) as f64)).collect()
    };
    out.push(chart(
        "Throughput over time",
        "time since start (s)",
        "operations/s",
        &[
            Series::new("offered", per_s(|b| b.offered)),
            Series::new("completed", per_s(|b| b.completed)),
            Series::new("succeeded", per_s(|b| b.ok)),
            Series::new("429", per_s(|b| b.rejected)),
            Series::new("failed/invalid", per_s(|b| b.errors)),
        ],
        &markers,
        false,
    ));
    let srv = |f: fn(&crate::scrape::ServerSample) -> Option<f64>| -> Vec<(f64, f64)> {
        r.server
            .iter()
            .map(|s| (s.t_s, f(s).unwrap_or(f64::NAN)))
            .collect()
    };
    out.push(chart(
        "Server queue depth and requests in flight (/metrics)",
        "time since start (s)",
        "requests",
        &[
            Series::new("queue depth", srv(|s| s.queue_depth)),
            Series::new("in flight", srv(|s| s.in_flight)),
        ],
        &markers,
        false,
    ));
    out.push(chart(
        "Batch size over time (/metrics, mean per second)",
        "time since start (s)",
        "prompts per beam search",
        &[Series::new("batch size", srv(|s| s.batch_size))],
        &markers,
        false,
    ));
    out.push(chart(
        "Beams decoded per second (/metrics)",
        "time since start (s)",
        "beams/s",
        &[Series::new("beams/s", srv(|s| s.beams_per_s))],
        &markers,
        false,
    ));
    let mut versions: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for b in &bins {
        for v in b.versions.keys() {
            versions.entry(v.as_str()).or_default();
        }
    }
    for b in &bins {
        for (v, pts) in versions.iter_mut() {
            pts.push((mid(b), b.versions.get(*v).copied().unwrap_or(0) as f64));
        }
    }
    let vs: Vec<Series> = versions
        .into_iter()
        .map(|(v, p)| Series::new(v, p))
        .collect();
    out.push(chart(
        "Answers per model version over time",
        "time since start (s)",
        "answers/s",
        &vs,
        &markers,
        false,
    ));
    out
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s += "</tr></thead><tbody>";
    for r in rows {
        s += "<tr>";
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s += "</tr>";
    }
    s + "</tbody></table>"
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>sidrec load test: {}</h1><p>{}</p><p class=\"meta\">{} against {} · started {} (Unix) · {}{}</p>",
        esc(&r.scenario.name),
        esc(&r.scenario.description),
        esc(&r.tool),
        esc(&r.url),
        r.started_unix,
        esc(&r.histories),
        r.knee_input
            .map(|k| format!(" · knee given: {k:.1} ops/s"))
            .unwrap_or_default()
    );
    if !r.checks.is_empty() {
        body += "<h2>Expectations</h2>";
        let rows: Vec<Vec<String>> = r
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    if c.ok { "held" } else { "FAILED" }.into(),
                    c.detail.clone(),
                ]
            })
            .collect();
        body += &table(&["expectation", "result", "measured"], &rows);
    }
    body += "<h2>Phases</h2>";
    let rows: Vec<Vec<String>> = r
        .phases
        .iter()
        .map(|p| {
            let c = &p.counts;
            let l = &p.latency_intended;
            vec![
                p.label.clone(),
                p.offered_rate
                    .map_or(format!("closed ×{}", p.concurrency), |x| format!("{x:.1}")),
                format!("{:.1}", p.sent_rate),
                format!("{:.1}", p.ok_rate),
                c.ok.to_string(),
                c.rejected_429.to_string(),
                c.deadline_504.to_string(),
                (c.failed() - c.rejected_429 - c.deadline_504).to_string(),
                c.invalid.to_string(),
                format!("{:.1}", l.p50_ms),
                format!("{:.1}", l.p90_ms),
                format!("{:.1}", l.p99_ms),
                format!("{:.1}", l.p999_ms),
                format!("{:.1}", l.max_ms),
                format!("{:.1}", p.latency_actual.p99_ms),
                format!("{:.1}", p.latency_ok.p99_ms),
            ]
        })
        .collect();
    body += &table(
        &[
            "phase",
            "offered/s",
            "sent/s",
            "ok/s",
            "ok",
            "429",
            "504",
            "other failed",
            "invalid",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "p99 actual",
            "p99 2xx",
        ],
        &rows,
    );
    body += "<p class=\"meta\">Latencies in ms from the intended send time (coordinated omission corrected) unless marked “actual” (from the actual send); “2xx”: successful operations only.</p>";
    if let Some(sw) = &r.sweep {
        body += "<h2>Sweep</h2>";
        let rows: Vec<Vec<String>> = sw
            .sustainable
            .iter()
            .map(|t| {
                vec![
                    format!("p99 < {} ms", t.p99_ms),
                    super::rate_text(t.max_rate, sw),
                ]
            })
            .chain(std::iter::once(vec![
                format!("knee (p99 < {} ms)", sw.knee_p99_ms),
                super::rate_text(sw.knee_rate, sw),
            ]))
            .collect();
        body += &table(&["target", "max sustainable rate"], &rows);
    }
    let mut versions = r.versions().into_iter().collect::<Vec<_>>();
    versions.sort();
    if !versions.is_empty() {
        body += "<h2>Versions</h2>";
        let rows: Vec<Vec<String>> = versions
            .into_iter()
            .map(|(v, n)| vec![v, n.to_string()])
            .collect();
        body += &table(&["model_version", "answers"], &rows);
    }
    if !r.actions.is_empty() {
        body += "<h2>Actions</h2>";
        let rows: Vec<Vec<String>> = r
            .actions
            .iter()
            .map(|a| {
                vec![
                    format!("{:.1}", a.t_s),
                    a.kind.clone(),
                    a.what.clone(),
                    if a.ok { "ok" } else { "FAILED" }.into(),
                    a.detail.clone(),
                ]
            })
            .collect();
        body += &table(&["t (s)", "kind", "what", "result", "detail"], &rows);
    }
    body += "<h2>Charts</h2>";
    for c in charts(r) {
        body += "<figure>";
        body += &c;
        body += "</figure>";
    }
    let examples: Vec<&String> = r
        .phases
        .iter()
        .flat_map(|p| p.invalid_examples.iter().chain(&p.failure_examples))
        .collect();
    if !examples.is_empty() {
        body += "<h2>Examples of failures</h2><ul>";
        for e in examples {
            let _ = write!(body, "<li>{}</li>", esc(e));
        }
        body += "</ul>";
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sidrec load test: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f2f2f2; }} td:first-child, th:first-child {{ text-align: left; }}
.meta {{ color: #666; font-size: 13px; }}
figure {{ margin: 12px 0; }}
svg.chart {{ background: #fff; border: 1px solid #ddd; }}
svg .title {{ font-size: 14px; font-weight: 600; }} svg .tick, svg .legend {{ font-size: 11px; fill: #333; }}
svg .label {{ font-size: 12px; fill: #333; }} svg .plot {{ fill: none; stroke: #999; }}
svg .grid {{ stroke: #eee; }} svg .marker {{ stroke: #888; stroke-dasharray: 2,3; }}
svg .empty {{ fill: #999; font-size: 13px; }}
</style></head><body>
{body}
</body></html>
"#,
        name = esc(&r.scenario.name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_draw_paths_and_survive_odd_data() {
        let s = chart(
            "t",
            "x",
            "y",
            &[Series::new(
                "a<b",
                vec![(0.0, 1.0), (1.0, 10.0), (2.0, f64::NAN), (3.0, 100.0)],
            )],
            &[(1.5, "swap".into())],
            true,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(s.matches("<path").count(), 1);
        assert!(s.contains("a&lt;b") && s.contains("M") && s.contains("class=\"marker\""));
        let empty = chart("t", "x", "y", &[Series::new("a", vec![])], &[], false);
        assert!(empty.contains("no data") && !empty.contains("<path"));
        let flat = chart(
            "t",
            "x",
            "y",
            &[Series::new("a", vec![(1.0, 0.0)])],
            &[],
            false,
        );
        assert!(flat.contains("<circle") && !flat.contains("NaN"));
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }
}
