//! `benchmarks.png`: B1's latency distributions (one curve per event rate) beside B4's
//! peak memory per worker count.
//!
//! plotters is built with `ab_glyph`, so nothing links fontconfig or freetype; the
//! font is DejaVu Sans, read at run time (Debian's `fonts-dejavu-core`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use super::Report;
use crate::stats::percentile;

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
    latency_panel(&left, &latencies)?;
    memory_panel(&right, &memory)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Cumulative distribution of the latency samples: x = ms, y = % of events.
fn latency_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    series: &[&(String, Vec<f64>)],
) -> Result<()> {
    let mut sorted: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|(label, samples)| {
            let mut s = samples.clone();
            s.sort_by(f64::total_cmp);
            (label.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    sorted.truncate(COLORS.len());
    // Up to the largest p99.9, so one outlier does not squash the curves.
    let x_max = sorted
        .iter()
        .map(|(_, s)| percentile(s, 99.9))
        .fold(10.0_f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "B1: XADD (bare kube-rs client: create sent) -> ADDED on a watch",
            (FONT, 18),
        )
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
    for (i, (label, s)) in sorted.iter().enumerate() {
        let color = COLORS[i];
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
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
