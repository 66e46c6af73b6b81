//! Plots of a run, each as SVG and PNG: validation and training loss against steps and against virtual
//! time (with the loss floor when it is known), and the bytes sent. PNG text is drawn with the DejaVu Sans
//! font bundled in `assets/fonts` (its licence beside it), so no system font is needed.

use std::path::Path;

use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use transport::fsutil::replace_with;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Registers the bundled font as "sans-serif" once per process.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/fonts/DejaVuSans.ttf"),
        )
        .is_ok()
    });
    if ok { Ok(()) } else { Err(anyhow!("the bundled plot font could not be loaded")) }
}

use crate::report::ArmResult;

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a plot.
struct Line<'a> {
    label: &'a str,
    points: Vec<(f64, f64)>,
}

fn plot(path: &Path, title: &str, x_label: &str, lines: &[Line<'_>], floor: Option<f64>) -> Result<()> {
    plot_with(path, title, x_label, "loss (nats/token)", lines, floor)
}

fn plot_with(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    floor: Option<f64>,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    font()?;
    // Each file is drawn beside its place and renamed into it: never a half-written plot.
    let svg = path.with_extension("svg");
    replace_with(&svg, |tmp| {
        draw(SVGBackend::new(tmp, (900, 560)).into_drawing_area(), title, x_label, y_label, lines, floor)
            .map_err(|e| err(&e))
    })
    .with_context(|| format!("cannot write {}", svg.display()))?;
    let png = path.with_extension("png");
    replace_with(&png, |tmp| {
        draw(BitMapBackend::new(tmp, (900, 560)).into_drawing_area(), title, x_label, y_label, lines, floor)
            .map_err(|e| err(&e))
    })
    .with_context(|| format!("cannot write {}", png.display()))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    floor: Option<f64>,
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (mut x_max, mut y_min, mut y_max) = (0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in lines.iter().flat_map(|l| l.points.iter()) {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        return Ok(());
    }
    if let Some(h) = floor {
        y_min = y_min.min(h);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max.max(1e-9), (y_min - pad)..(y_max + pad))
        .map_err(|x| e(&x))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|x| e(&x))?;
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(h) = floor {
        chart
            .draw_series(LineSeries::new([(0.0, h), (x_max, h)], BLACK.stroke_width(1)))
            .map_err(|x| e(&x))?
            .label(format!("entropy floor {h:.3}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Writes `val_loss_by_step`, `val_loss_by_time`, `train_loss_by_step` and `bytes_sent`, and when the
/// run measured it `weight_variance`, each as `.svg` and `.png`, into `out`. (Studies draw their own.)
pub(crate) fn write_plots(out: &Path, results: &[ArmResult], floor: Option<f64>) -> Result<()> {
    let by_step = |pick: fn(&ArmResult) -> &Vec<(u64, f64)>| -> Vec<Line<'_>> {
        results
            .iter()
            .map(|r| Line { label: &r.label, points: pick(r).iter().map(|&(s, v)| (s as f64, v)).collect() })
            .collect()
    };
    plot(&out.join("val_loss_by_step.svg"), "Validation loss by step", "step", &by_step(|r| &r.val), floor)?;
    plot(&out.join("train_loss_by_step.svg"), "Training loss by step", "step", &by_step(|r| &r.train), floor)?;
    let by_time: Vec<Line<'_>> = results.iter().map(|r| Line { label: &r.label, points: r.val_time.clone() }).collect();
    plot(&out.join("val_loss_by_time.svg"), "Validation loss by virtual time", "virtual time (s)", &by_time, floor)?;
    let bytes: Vec<Line<'_>> = results
        .iter()
        .map(|r| Line {
            label: &r.label,
            points: r.bytes.iter().map(|&(s, b)| (s as f64, b / (1u64 << 20) as f64)).collect(),
        })
        .collect();
    plot_with(&out.join("bytes_sent.svg"), "Bytes sent by all workers", "step", "MiB sent (cumulative)", &bytes, None)?;
    if results.iter().any(|r| !r.weight_variance.is_empty()) {
        let lines: Vec<Line<'_>> =
            by_step(|r| &r.weight_variance).into_iter().filter(|l| !l.points.is_empty()).collect();
        plot_with(
            &out.join("weight_variance.svg"),
            "Weight variance across replicas",
            "step",
            "variance per weight",
            &lines,
            None,
        )?;
    }
    Ok(())
}

/// A plot of loss series (with the loss floor, if known) against `x_label`, as `.svg` and `.png` at
/// `path` (its extension replaced).
pub(crate) fn loss_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    floor: Option<f64>,
) -> Result<()> {
    let lines: Vec<Line<'_>> = series.iter().map(|(label, points)| Line { label, points: points.clone() }).collect();
    plot(path, title, x_label, &lines, floor)
}

/// `(label, point)` pairs gathered into one series per label, in the order labels first appear, each
/// series' points sorted by x.
pub(crate) fn grouped(points: impl IntoIterator<Item = (String, (f64, f64))>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (label, point) in points {
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push(point),
            None => series.push((label, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// A plot of named series against `x_label`, as `.svg` and `.png` at `path` (its extension replaced).
pub(crate) fn series_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let lines: Vec<Line<'_>> = series.iter().map(|(label, points)| Line { label, points: points.clone() }).collect();
    plot_with(path, title, x_label, y_label, &lines, None)
}
