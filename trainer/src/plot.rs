//! `trainer plot`: training curves from a run's `metrics.jsonl`, drawn to an SVG with plotters.
//!
//! Every record of `metrics.jsonl` is one JSON object with a `step`; training records and
//! validation records carry different keys, so each panel plots the records that have its keys.

use std::path::Path;

use plotters::prelude::*;

use crate::cli::PlotArgs;
use crate::error::{Result, TrainerError};

/// Panels drawn when `--panel` is not given; a panel whose keys never occur is skipped.
pub const DEFAULT_PANELS: [&str; 6] = [
    "loss,valid_loss",
    "valid_hr10,valid_ndcg10",
    "reward,hit_rate",
    "kl",
    "tokens_per_s",
    "lr",
];

/// Redraw a training run's `curves.svg` (default panels) beside its `metrics.jsonl`: what SFT and
/// GRPO do at every validation, so the picture is current while a run goes on.
pub fn redraw_run(metrics: &Path, out_dir: &Path) -> Result<usize> {
    let panels: Vec<String> = DEFAULT_PANELS.iter().map(|p| p.to_string()).collect();
    plot(metrics, &out_dir.join("curves.svg"), &panels)
}

/// One curve: `(step, value)` points of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metrics key.
    pub key: String,
    /// Points in file order.
    pub points: Vec<(f64, f64)>,
}

/// Read the `(step, value)` series of `keys` from a metrics.jsonl file.
pub fn read_series(path: &Path, keys: &[&str]) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io(path, e))?;
    let mut out: Vec<Series> = keys
        .iter()
        .map(|k| Series {
            key: k.to_string(),
            points: Vec::new(),
        })
        .collect();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainerError::parse(path, i as u64 + 1, e.to_string()))?;
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
            return Err(TrainerError::parse(
                path,
                i as u64 + 1,
                "record has no numeric `step`".to_string(),
            ));
        };
        for s in &mut out {
            if let Some(y) = v.get(&s.key).and_then(|y| y.as_f64()) {
                if y.is_finite() {
                    s.points.push((step, y));
                }
            }
        }
    }
    Ok(out)
}

/// Draw `panels` (each a comma list of keys) of `metrics` into an SVG at `out`; returns the
/// number of panels drawn.
pub fn plot(metrics: &Path, out: &Path, panels: &[String]) -> Result<usize> {
    let mut groups = Vec::new();
    for p in panels {
        let keys: Vec<&str> = p
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        let series: Vec<Series> = read_series(metrics, &keys)?
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        if !series.is_empty() {
            groups.push(series);
        }
    }
    if groups.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: none of the keys {panels:?} has a value",
            metrics.display()
        )));
    }
    let mut svg = String::new();
    {
        let height = 320 * groups.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let areas = root.split_evenly((groups.len(), 1));
        for (area, series) in areas.iter().zip(&groups) {
            draw_panel(area, series)?;
        }
        root.present().map_err(draw_err)?;
    }
    sidrec::io::write_bytes_atomic(out, svg.as_bytes())?;
    Ok(groups.len())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    // A flat or single-point series still needs a non-empty range.
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-3).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let caption = series
        .iter()
        .map(|s| s.key.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .draw()
        .map_err(draw_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(s.key.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        if s.points.len() < 40 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> TrainerError {
    TrainerError::Invalid(format!("plot: {e}"))
}

/// `sidrec-trainer plot`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let metrics = if args.run.is_dir() {
        args.run.join("metrics.jsonl")
    } else {
        args.run.clone()
    };
    let out = match &args.out {
        Some(o) => o.clone(),
        None => metrics.with_file_name("curves.svg"),
    };
    let panels: Vec<String> = if args.panel.is_empty() {
        DEFAULT_PANELS.iter().map(|s| s.to_string()).collect()
    } else {
        args.panel.clone()
    };
    let n = plot(&metrics, &out, &panels)?;
    println!("wrote {} ({n} panels)", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_follow_their_keys_and_the_svg_has_every_panel() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let mut text = String::new();
        for step in 1..=30 {
            text += &format!("{{\"step\": {step}, \"loss\": {}}}\n", 5.0 / step as f64);
            if step % 10 == 0 {
                text += &format!(
                    "{{\"step\": {step}, \"valid_hr10\": {}, \"valid_ndcg10\": 0.01}}\n",
                    step as f64 / 100.0
                );
            }
        }
        std::fs::write(&m, text).unwrap();
        let s = read_series(&m, &["loss", "valid_hr10"]).unwrap();
        assert_eq!(s[0].points.len(), 30);
        assert_eq!(s[1].points, vec![(10.0, 0.1), (20.0, 0.2), (30.0, 0.3)]);

        let out = dir.path().join("curves.svg");
        let panels: Vec<String> = DEFAULT_PANELS.iter().map(|s| s.to_string()).collect();
        assert_eq!(plot(&m, &out, &panels).unwrap(), 2);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("valid_hr10"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));

        std::fs::write(&m, "{\"loss\": 1}\n").unwrap();
        let e = read_series(&m, &["loss"]).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl:1:") && e.contains("step"), "{e}");
        assert!(plot(&m, &out, &["nothing".into()]).is_err());
    }
}
