//! `benchmarks.png`: B1's latency distributions (one curve per event rate) beside B4's
//! peak memory per worker count. `benchmarks-keda.png` (when K1 ran): XADD -> pod
//! created p50 and p99 by rate for ottoscaler and KEDA, beside their distributions.
//!
//! plotters is built with `ab_glyph`, so nothing links fontconfig or freetype; the
//! font is DejaVu Sans, read at run time (Debian's `fonts-dejavu-core`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use super::{PeerLatency, Report};
use crate::stats::{percentile, summarize};

/// Where Debian and Ubuntu (fonts-dejavu-core) and Fedora keep DejaVu Sans.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];
/// Enough for ottoscaler and the bare kube-rs client at four B1 rates.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(174, 199, 232),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(148, 103, 189),
    RGBColor(197, 176, 213),
];
const FONT: &str = "sans-serif";

pub fn render(report: &Report, path: &Path) -> Result<()> {
    register_font()?;
    let latencies: Vec<&(String, Vec<f64>)> =
        report.sections.iter().flat_map(|s| &s.latencies).collect();
    let memory: Vec<(u32, f64)> = report
        .sections
        .iter()
        .flat_map(|s| s.memory.iter().copied())
        .collect();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    latency_panel(
        &left,
        "B1: XADD (bare kube-rs client: create sent) -> ADDED on a watch",
        &latencies,
    )?;
    memory_panel(&right, &memory)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// `benchmarks-keda.png`: K1's percentiles by rate and distributions, both systems.
/// One hue per system (the dark shade of a pair of [`COLORS`]); in the distributions,
/// the second rate of a system gets the light shade.
pub fn render_keda(report: &Report, path: &Path) -> Result<()> {
    register_font()?;
    let peers: Vec<&PeerLatency> = report.sections.iter().flat_map(|s| &s.peers).collect();
    let mut systems: Vec<&str> = Vec::new();
    for p in &peers {
        if !systems.contains(&p.system.as_str()) {
            systems.push(&p.system);
        }
    }
    // (system, its samples by rate ascending), at most one hue pair each.
    let by_system: Vec<(&str, Vec<&PeerLatency>)> = systems
        .iter()
        .take(COLORS.len() / 2)
        .map(|system| {
            let mut mine: Vec<&PeerLatency> = peers
                .iter()
                .copied()
                .filter(|p| p.system == *system)
                .collect();
            mine.sort_by_key(|p| p.rate);
            (*system, mine)
        })
        .collect();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    percentile_panel(&left, &by_system)?;
    // Each system's first two rates, in the slots of its hue pair.
    let mut series: Vec<(String, Vec<f64>)> = vec![(String::new(), Vec::new()); COLORS.len()];
    for (i, (system, mine)) in by_system.iter().enumerate() {
        for (k, p) in mine.iter().take(2).enumerate() {
            series[2 * i + k] = (format!("{system}, {}/s", p.rate), p.samples.clone());
        }
    }
    let refs: Vec<&(String, Vec<f64>)> = series.iter().collect();
    latency_panel(&right, "K1: XADD -> pod ADDED on a watch", &refs)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// p50 (circles) and p99 (triangles) of each system against the event rate, log y.
fn percentile_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    by_system: &[(&str, Vec<&PeerLatency>)],
) -> Result<()> {
    // (system, [(rate, p50, p99)]) with the rates ascending.
    type Points = Vec<(f64, f64, f64)>;
    let lines: Vec<(&str, Points)> = by_system
        .iter()
        .map(|(system, mine)| {
            let points = mine
                .iter()
                .filter_map(|p| {
                    let s = summarize(&p.samples)?;
                    Some((f64::from(p.rate), s.p50.max(0.1), s.p99.max(0.1)))
                })
                .collect();
            (*system, points)
        })
        .collect();
    let all = || lines.iter().flat_map(|(_, points)| points.iter());
    // Room on the right for the legend.
    let x_max = all().map(|p| p.0).fold(1.0, f64::max) * 1.9;
    let y_min = all().map(|p| p.1).fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let y_max = all().map(|p| p.2).fold(10.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption("K1: XADD -> pod created, p50 (●) and p99 (▲)", (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("entries per second")
        .y_desc("ms (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_err)?;
    for (i, (system, points)) in lines.iter().enumerate() {
        // The dark shade of each pair in COLORS: one colour per system.
        let color = COLORS[(2 * i) % COLORS.len()];
        for p99 in [false, true] {
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.0, if p99 { p.2 } else { p.1 }))
                .collect();
            let drawn = chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(plot_err)?;
            if !p99 {
                drawn.label(*system).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            if p99 {
                chart
                    .draw_series(
                        line.iter()
                            .map(|p| TriangleMarker::new(*p, 6, color.filled())),
                    )
                    .map_err(plot_err)?;
            } else {
                chart
                    .draw_series(line.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(plot_err)?;
            }
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// Cumulative distribution of the latency samples: x = ms, y = % of events. The n-th
/// series gets the n-th of [`COLORS`]; an empty one is skipped and keeps its colour
/// unused.
fn latency_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    series: &[&(String, Vec<f64>)],
) -> Result<()> {
    let sorted: Vec<(RGBColor, String, Vec<f64>)> = series
        .iter()
        .zip(COLORS)
        .map(|((label, samples), color)| {
            let mut s = samples.clone();
            s.sort_by(f64::total_cmp);
            (color, label.clone(), s)
        })
        .filter(|(_, _, s)| !s.is_empty())
        .collect();
    // Up to the largest p99.9, so one outlier does not squash the curves.
    let x_max = sorted
        .iter()
        .map(|(_, _, s)| percentile(s, 99.9))
        .fold(10.0_f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..100.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("% of events at or below")
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_err)?;
    for (color, label, s) in &sorted {
        let color = *color;
        let n = s.len() as f64;
        let points = s
            .iter()
            .enumerate()
            .map(|(k, v)| (v.clamp(1.0, x_max), (k + 1) as f64 / n * 100.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

/// Peak RSS (MiB) against the number of live workers, with the 100 MiB target.
fn memory_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    points: &[(u32, f64)],
) -> Result<()> {
    let x_max = points
        .iter()
        .map(|(w, _)| f64::from(*w))
        .fold(1.0, f64::max)
        * 1.1;
    let y_max = points.iter().map(|(_, m)| *m).fold(110.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("B4: ottoscaler peak RSS (VmHWM)", (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("workers active at once")
        .y_desc("MiB")
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_err)?;
    let color = COLORS[0];
    let line: Vec<(f64, f64)> = points.iter().map(|(w, m)| (f64::from(*w), *m)).collect();
    chart
        .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
        .map_err(plot_err)?
        .label("peak RSS")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(line.iter().map(|p| Circle::new(*p, 4, color.filled())))
        .map_err(plot_err)?;
    let red = COLORS[2];
    chart
        .draw_series(LineSeries::new(
            [(0.0, 100.0), (x_max, 100.0)],
            red.stroke_width(1),
        ))
        .map_err(plot_err)?
        .label("target: 100 MiB at 10,000")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// The series' legend in a white box at `position`.
fn legend<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// Registers DejaVu Sans as plotters' `sans-serif` (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, bytes) = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok().map(|b| (*p, b)))
                .ok_or_else(|| {
                    format!("no DejaVu Sans font (install fonts-dejavu-core); looked in {FONTS:?}")
                })?;
            // plotters keeps a &'static reference; the font lives as long as the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
        .context("loading the plot's font")
}

fn plot_err<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing the plot: {err:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Section;

    #[test]
    fn the_keda_plot_is_drawn_when_a_font_is_there() {
        if register_font().is_err() {
            eprintln!("no DejaVu Sans: plot not drawn");
            return;
        }
        let peer = |system: &str, rate: u32, ms: f64| PeerLatency {
            system: system.into(),
            rate,
            samples: (1..=50).map(|i| ms * f64::from(i) / 25.0).collect(),
        };
        let report = Report {
            command: "bench --only K1".into(),
            date: "2026-12-02T00:00:00Z".into(),
            quick: true,
            duration: std::time::Duration::from_secs(1),
            machine: serde_json::json!({}),
            sections: vec![Section {
                peers: vec![
                    peer("ottoscaler", 10, 9.0),
                    peer("KEDA, pollingInterval 1 s", 10, 2400.0),
                    peer("ottoscaler", 25, 12.0),
                    peer("KEDA, pollingInterval 1 s", 25, 2900.0),
                    peer("KEDA, pollingInterval 30 s", 10, 15000.0),
                ],
                ..Section::default()
            }],
        };
        let path = std::env::temp_dir().join(format!("k1-plot-{}.png", std::process::id()));
        render_keda(&report, &path).expect("drawn");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&path);
        assert!(size > 1000, "{size} bytes");
    }
}
