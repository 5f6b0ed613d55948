//! `loadgen plot A.json B.json … -o FILE.svg`: the corrected percentile
//! spectra of several runs on one hand-written SVG chart.
//!
//! The x axis is the percentile on the usual log scale of `1/(1-p)`, so
//! 0%, 90%, 99%, 99.9%, 99.99% are evenly spaced; the y axis is latency in
//! µs (linear, or log with `--log-y`). Each run is one polyline, named by
//! its `label`, else its `target` (with the file name when two runs share a
//! target).

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// One run's spectrum: `(percentile in %, latency µs)`, percentile rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Largest decade of 1/(1-p) on the x axis (99.9999%).
const MAX_DECADE: f64 = 6.0;

/// What `plot` needs from one results JSON.
struct RunFile {
    label: Option<String>,
    target: String,
    points: Vec<(f64, f64)>,
}

/// Reads the spectrum of one results JSON.
fn read_run(path: &Path) -> Result<RunFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let spectrum = doc["spectrum"]
        .as_array()
        .ok_or_else(|| format!("{}: no \"spectrum\" array", path.display()))?;
    let mut points = Vec::with_capacity(spectrum.len());
    for p in spectrum {
        match (p[0].as_f64(), p[1].as_f64()) {
            (Some(q), Some(v)) if (0.0..=100.0).contains(&q) && v >= 0.0 => points.push((q, v)),
            _ => return Err(format!("{}: bad spectrum point {p}", path.display())),
        }
    }
    let label = doc["label"].as_str().map(str::to_string);
    let target = doc["target"].as_str().unwrap_or("").to_string();
    Ok(RunFile {
        label,
        target,
        points,
    })
}

/// Loads every file and names each series.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<Series>, String> {
    let runs = paths
        .iter()
        .map(|p| read_run(p.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs
        .iter()
        .zip(paths)
        .map(|(run, path)| {
            let stem = path
                .as_ref()
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let target = &run.target;
            let shared = runs.iter().filter(|r| &r.target == target).count() > 1;
            let name = match &run.label {
                Some(l) => l.clone(),
                None if target.is_empty() => stem,
                None if shared => format!("{stem} ({target})"),
                None => target.clone(),
            };
            Series {
                name,
                points: run.points.clone(),
            }
        })
        .collect())
}

/// x coordinate (in decades of 1/(1-p)) of percentile `p` %, capped.
fn decade(p: f64, cap: f64) -> f64 {
    if p >= 100.0 {
        cap
    } else {
        (1.0 / (1.0 - p / 100.0)).log10().min(cap)
    }
}

/// `0%`, `90%`, `99%`, `99.9%`, … for decade `k`.
fn decade_label(k: u32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        _ => format!(
            "99{}{}%",
            if k > 2 { "." } else { "" },
            "9".repeat(k as usize - 2)
        ),
    }
}

/// A round step near `span / 5` (1, 2 or 5 × 10^n).
fn nice_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart.
pub fn render_svg(series: &[Series], log_y: bool) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // x range: at least to 99.99%, further if a run has the points for it.
    let finite_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0 < 100.0)
        .map(|p| decade(p.0, MAX_DECADE))
        .fold(0.0, f64::max);
    let x_max = finite_max.ceil().clamp(4.0, MAX_DECADE);
    let v_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let v_min = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p.1.max(1.0))
        .fold(v_max, f64::min);
    let (y_lo, y_hi, y_ticks): (f64, f64, Vec<f64>) = if log_y {
        let lo = v_min.log10().floor();
        let hi = v_max.log10().ceil().max(lo + 1.0);
        let ticks = (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect();
        (lo, hi, ticks)
    } else {
        let step = nice_step(v_max);
        let hi = (v_max / step).ceil() * step;
        let n = (hi / step).round() as usize;
        (0.0, hi, (0..=n).map(|i| i as f64 * step).collect())
    };
    let px = |d: f64| LEFT + d / x_max * plot_w;
    let py = |v: f64| {
        let t = if log_y { v.max(1.0).log10() } else { v };
        TOP + plot_h - (t - y_lo) / (y_hi - y_lo) * plot_h
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">Latency by percentile (coordinated-omission corrected)</text>"#,
        WIDTH / 2.0
    );
    // Grid and axis labels.
    for k in 0..=x_max as u32 {
        let x = px(k as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            decade_label(k)
        );
    }
    for &v in &y_ticks {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (µs)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One polyline per run, then the legend.
    for (i, run) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        for &(p, v) in &run.points {
            let _ = write!(pts, "{:.1},{:.1} ", px(decade(p, x_max)), py(v));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.trim_end()
        );
    }
    for (i, run) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = TOP + 18.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            y + 4.0,
            escape(&run.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(decade(0.0, 6.0), 0.0);
        assert!((decade(90.0, 6.0) - 1.0).abs() < 1e-9);
        assert!((decade(99.9, 6.0) - 3.0).abs() < 1e-9);
        assert_eq!(decade(100.0, 5.0), 5.0);
        let labels: Vec<String> = (0..5).map(decade_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(nice_step(1234.0), 500.0);
        assert_eq!(nice_step(100.0), 20.0);
    }

    #[test]
    fn one_polyline_per_run_and_a_legend() {
        let runs = [
            Series {
                name: "a <fast>".into(),
                points: vec![(0.0, 10.0), (90.0, 20.0), (99.0, 40.0), (100.0, 90.0)],
            },
            Series {
                name: "b".into(),
                points: vec![(0.0, 100.0), (99.99, 300.0), (100.0, 900.0)],
            },
        ];
        for log_y in [false, true] {
            let svg = render_svg(&runs, log_y);
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(svg.contains("a &lt;fast&gt;"));
            assert!(svg.contains(">99.99%<"));
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }
}
