//! One line chart drawn with plotters onto any backend: lines with markers and ± error bars,
//! dashed horizontal reference lines, ticks at chosen values, and a legend beside the plot.
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

use super::{ensure_font, FIGURE_SIZE, FONT};
use crate::atomic::{write_atomic, PendingFile};

/// A linear f64 axis whose ticks are exactly the given values (plotters' `WithKeyPoints` over
/// `RangedCoordf64` cannot take a label formatter).
struct TickAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickAxis {
    fn new(range: (f64, f64), ticks: &[f64]) -> TickAxis {
        TickAxis {
            inner: RangedCoordf64::from(range.0..range.1),
            ticks: ticks.to_vec(),
        }
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Distinct colours (matplotlib's tab10) for the series; the baseline is drawn in black.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// How x values are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// log2 spacing, ticks at the data's x values, labelled as integers (embedding dimensions).
    Log2,
    /// log10 spacing, ticks at the data's x values (init σ).
    Log10,
    /// Linear spacing with automatic ticks, labelled compactly (1.5M, 200k).
    Linear,
}

impl XAxis {
    fn forward(self, x: f64) -> f64 {
        match self {
            XAxis::Log2 => x.log2(),
            XAxis::Log10 => x.log10(),
            XAxis::Linear => x,
        }
    }
    fn inverse(self, v: f64) -> f64 {
        match self {
            XAxis::Log2 => v.exp2(),
            XAxis::Log10 => 10f64.powf(v),
            XAxis::Linear => v,
        }
    }
    /// Whether `x` can be placed on this axis.
    pub fn accepts(self, x: f64) -> bool {
        match self {
            XAxis::Linear => x.is_finite(),
            _ => x.is_finite() && x > 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    None,
    Circle,
    Square,
    Triangle,
    Cross,
}

/// Markers cycled over the series after the baseline.
pub(crate) const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Cross,
    Marker::Square,
];

/// What a series draws.
#[derive(Clone, Debug)]
pub(crate) enum Shape {
    /// A polyline through `(x, y, ± err)` points.
    Line(Vec<(f64, f64, f64)>),
    /// A dashed horizontal line across the whole plot at this y.
    HLine(f64),
}

#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub marker: Marker,
    pub shape: Shape,
}

#[derive(Clone, Debug)]
pub(crate) struct ChartSpec {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
}

const TITLE_PX: u32 = 24;
const LABEL_PX: u32 = 16;
const DESC_PX: u32 = 18;
const LEGEND_PX: u32 = 16;

/// `<stem>.<ext>` without touching dots already in the stem.
pub(crate) fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Draws `spec` to `<stem>.png` and `<stem>.svg` (each written atomically) and returns the paths.
pub(crate) fn render(spec: &ChartSpec, stem: &Path) -> Result<Vec<PathBuf>> {
    render_panels(std::slice::from_ref(spec), FIGURE_SIZE, stem)
}

/// Draws `specs` as panels stacked top to bottom (equal heights) on a `size` canvas, to
/// `<stem>.png` and `<stem>.svg`.
pub(crate) fn render_panels(
    specs: &[ChartSpec],
    size: (u32, u32),
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let geometries = specs.iter().map(Geometry::of).collect::<Result<Vec<_>>>()?;
    let png = with_ext(stem, "png");
    let svg = with_ext(stem, "svg");
    let pending = PendingFile::new(&png)?;
    (|| -> Result<()> {
        let root = BitMapBackend::new(&pending.tmp, size).into_drawing_area();
        let panels = root.split_evenly((specs.len(), 1));
        let mut legend_w = 0;
        for spec in specs {
            legend_w = legend_w.max(legend_width(&root, spec)?);
        }
        for ((panel, spec), g) in panels.iter().zip(specs).zip(&geometries) {
            draw(panel, spec, g, Some(legend_w))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))
    })()
    .with_context(|| format!("cannot draw {}", png.display()))?;
    pending.commit()?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let panels = root.split_evenly((specs.len(), 1));
        let mut legend_w = 0;
        for spec in specs {
            legend_w = legend_w.max(legend_width(&root, spec)?);
        }
        for ((panel, spec), g) in panels.iter().zip(specs).zip(&geometries) {
            draw(panel, spec, g, Some(legend_w))
                .with_context(|| format!("cannot draw {}", svg.display()))?;
        }
        root.present()
            .map_err(|e| anyhow!("cannot draw {}: {e}", svg.display()))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// Axis ranges and ticks, in axis units (log2/log10 of x for the log axes).
struct Geometry {
    x: (f64, f64),
    y: (f64, f64),
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
    y_decimals: usize,
}

impl Geometry {
    fn of(spec: &ChartSpec) -> Result<Geometry> {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for s in &spec.series {
            match &s.shape {
                Shape::Line(points) => {
                    for &(x, y, e) in points {
                        if !spec.x_axis.accepts(x) || !y.is_finite() {
                            continue;
                        }
                        xs.push(spec.x_axis.forward(x));
                        let e = if e.is_finite() { e.abs() } else { 0.0 };
                        ys.push(y - e);
                        ys.push(y + e);
                    }
                }
                Shape::HLine(y) if y.is_finite() => ys.push(*y),
                Shape::HLine(_) => {}
            }
        }
        if xs.is_empty() {
            bail!("nothing to plot: no point with a finite value");
        }
        let (x0, x1) = min_max(&xs);
        let (y0, y1) = min_max(&ys);
        let x_pad = match spec.x_axis {
            XAxis::Linear if x1 > x0 => (x1 - x0) * 0.03,
            XAxis::Linear => x0.abs().max(1.0) * 0.05,
            _ if x1 > x0 => ((x1 - x0) * 0.06).max(0.15),
            _ => 0.5,
        };
        let y_pad = if y1 > y0 {
            (y1 - y0) * 0.08
        } else {
            y0.abs().max(1e-3) * 0.01
        };
        let x = (x0 - x_pad, x1 + x_pad);
        let y = (y0 - y_pad, y1 + y_pad);
        let x_ticks = match spec.x_axis {
            XAxis::Linear => RangedCoordf64::from(x.0..x.1).key_points(8usize),
            _ => {
                let mut t = xs.clone();
                t.sort_by(f64::total_cmp);
                t.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
                t
            }
        };
        let y_ticks = RangedCoordf64::from(y.0..y.1).key_points(8usize);
        let y_decimals = decimals_for(&y_ticks);
        Ok(Geometry {
            x,
            y,
            x_ticks,
            y_ticks,
            y_decimals,
        })
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

/// The fewest decimals (up to 8) that write every tick exactly enough to tell them apart.
fn decimals_for(ticks: &[f64]) -> usize {
    let span = ticks
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    if !span.is_finite() || span == 0.0 {
        return 3;
    }
    (0..=8)
        .find(|&d| {
            let scale = 10f64.powi(d as i32);
            ticks
                .iter()
                .all(|t| ((t * scale).round() / scale - t).abs() < span * 1e-3)
        })
        .unwrap_or(8)
}

/// A number in at most 4 significant digits without trailing zeros (0.25, 0.001, 1e-5).
pub(crate) fn compact(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-4..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{e}");
    }
    let digits = (4 - 1 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Counts with k/M/G suffixes (250k, 1.5M).
pub(crate) fn si(v: f64) -> String {
    let a = v.abs();
    let (div, suf) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{}{suf}", compact(v / div))
}

fn x_label_text(axis: XAxis, v: f64) -> String {
    let x = axis.inverse(v);
    match axis {
        XAxis::Log2 => format!("{}", x.round()),
        XAxis::Log10 => compact(x),
        XAxis::Linear => si(x),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// The width of `spec`'s legend in pixels: its longest label and the line sample.
fn legend_width<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
) -> Result<u32> {
    let legend_font = (FONT, LEGEND_PX).into_font();
    let mut widest = 0u32;
    for s in &spec.series {
        let (w, _) = root
            .estimate_text_size(&s.label, &TextStyle::from(legend_font.clone()))
            .map_err(err)?;
        widest = widest.max(w);
    }
    Ok((widest + 70).min(FIGURE_SIZE.0 / 3))
}

/// Draws `spec` into `root`; `legend_w`: the legend's width when set by the caller.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
    g: &Geometry,
    legend_w: Option<u32>,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let area = root
        .margin(10, 0, 0, 0)
        .titled(&spec.title, (FONT, TITLE_PX).into_font())
        .map_err(err)?;

    // The legend sits to the right of the plot, as wide as its longest label (or the widest
    // panel's, so that stacked panels share their x positions).
    let legend_font = (FONT, LEGEND_PX).into_font();
    let legend_w = match legend_w {
        Some(w) => w,
        None => legend_width(root, spec)?,
    };
    let (w, _) = area.dim_in_pixel();
    let (plot_area, legend_area) = area.split_horizontally(w.saturating_sub(legend_w));

    let axis = spec.x_axis;
    let mut chart = ChartBuilder::on(&plot_area)
        .margin_left(12)
        .margin_right(12)
        .margin_top(8)
        .margin_bottom(8)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(
            TickAxis::new(g.x, &g.x_ticks),
            TickAxis::new(g.y, &g.y_ticks),
        )
        .map_err(err)?;
    let y_dec = g.y_decimals;
    let x_fmt = |v: &f64| x_label_text(axis, *v);
    let y_fmt = |v: &f64| format!("{v:.y_dec$}");
    chart
        .configure_mesh()
        .x_desc(spec.x_label.as_str())
        .y_desc(spec.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, LABEL_PX))
        .axis_desc_style((FONT, DESC_PX))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;

    for s in &spec.series {
        let line = ShapeStyle::from(&s.color).stroke_width(2);
        match &s.shape {
            Shape::HLine(y) => {
                if !y.is_finite() {
                    continue;
                }
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(g.x.0, *y), (g.x.1, *y)],
                        10,
                        6,
                        line,
                    ))
                    .map_err(err)?;
            }
            Shape::Line(points) => {
                let pts: Vec<(f64, f64, f64)> = points
                    .iter()
                    .filter(|(x, y, _)| axis.accepts(*x) && y.is_finite())
                    .map(|&(x, y, e)| (axis.forward(x), y, e))
                    .collect();
                let xy: Vec<(f64, f64)> = pts.iter().map(|&(x, y, _)| (x, y)).collect();
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(xy.clone(), 10, 6, line))
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(LineSeries::new(xy.clone(), line))
                        .map_err(err)?;
                }
                // Error bars: a vertical segment over y ± e with 10-pixel caps.
                let bar = s.color.stroke_width(2);
                for &(x, y, e) in pts.iter().filter(|(_, _, e)| e.is_finite() && *e > 0.0) {
                    let area = chart.plotting_area();
                    area.draw(&PathElement::new(vec![(x, y - e), (x, y + e)], bar))
                        .map_err(err)?;
                    for end in [y - e, y + e] {
                        area.draw(
                            &(EmptyElement::at((x, end))
                                + PathElement::new(vec![(-5, 0), (5, 0)], bar)),
                        )
                        .map_err(err)?;
                    }
                }
                draw_markers(chart.plotting_area(), s.marker, &xy, s.color)?;
            }
        }
    }

    // Legend: a sample of each line (with its marker) and its label, top to bottom.
    let (lx, ly) = (8i32, 16i32);
    let row_h = (LEGEND_PX as i32) + 12;
    let n = spec.series.len() as i32;
    legend_area
        .draw(&Rectangle::new(
            [
                (lx - 6, ly - row_h / 2 - 4),
                (legend_w as i32 - 8, ly + n * row_h - row_h / 2),
            ],
            ShapeStyle::from(&RGBColor(0xaa, 0xaa, 0xaa)).stroke_width(1),
        ))
        .map_err(err)?;
    for (i, s) in spec.series.iter().enumerate() {
        let y = ly + i as i32 * row_h + 4;
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        if s.dashed || matches!(s.shape, Shape::HLine(_)) {
            for (a, b) in [(0, 10), (16, 26), (32, 40)] {
                legend_area
                    .draw(&PathElement::new(vec![(lx + a, y), (lx + b, y)], style))
                    .map_err(err)?;
            }
        } else {
            legend_area
                .draw(&PathElement::new(vec![(lx, y), (lx + 40, y)], style))
                .map_err(err)?;
        }
        draw_markers(&legend_area, s.marker, &[(lx + 20, y)], s.color)?;
        legend_area
            .draw(&Text::new(
                s.label.clone(),
                (lx + 50, y),
                legend_font
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// Draws `marker` at each of `points` (in `area`'s coordinates) in `color`.
fn draw_markers<DB, CT>(
    area: &DrawingArea<DB, CT>,
    marker: Marker,
    points: &[CT::From],
    color: RGBColor,
) -> Result<()>
where
    DB: DrawingBackend,
    CT: CoordTranslate,
    CT::From: Clone,
{
    let filled = color.filled();
    let r = 5i32;
    for p in points {
        let at = EmptyElement::at(p.clone());
        match marker {
            Marker::None => Ok(()),
            Marker::Circle => area.draw(&(at + Circle::new((0, 0), r, filled))),
            Marker::Square => area.draw(&(at + Rectangle::new([(-r, -r), (r, r)], filled))),
            Marker::Triangle => {
                area.draw(&(at + Polygon::new(vec![(0, -r - 1), (-r - 1, r), (r + 1, r)], filled)))
            }
            Marker::Cross => {
                let st = color.stroke_width(3);
                area.draw(
                    &(at + PathElement::new(vec![(-r, -r), (r, r)], st)
                        + PathElement::new(vec![(-r, r), (r, -r)], st)),
                )
            }
        }
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_numbers() {
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(0.001), "0.001");
        assert_eq!(compact(1.0), "1");
        assert_eq!(compact(1e-5), "1e-5");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(250_000.0), "250k");
    }

    #[test]
    fn tick_decimals() {
        assert_eq!(decimals_for(&[0.79, 0.795, 0.8]), 3);
        assert_eq!(decimals_for(&[1.0, 2.0, 3.0]), 0);
    }
}
