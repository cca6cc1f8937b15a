//! The comparative benchmark's bar chart (`mlet plot RESULTS.csv --kind bench-compare`): every
//! tool's median training throughput on every workload, from the CSV that `make bench-compare`
//! (benches/compare/run.py) writes, on a log axis (the tools differ by up to two orders of
//! magnitude).
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

use super::chart::{with_ext, PALETTE};
use super::{ensure_font, FONT};
use crate::atomic::{write_atomic, PendingFile};

/// One bar: a tool's median samples/s on one workload with one embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// `workload embedding`, e.g. `dlrm-b128 mlet-k64`.
    pub group: String,
    pub tool: String,
    pub samples_per_s: f64,
}

/// The `median` rows of a benchmark CSV, in file order.
pub fn read_bench_csv(path: &Path) -> Result<Vec<Bar>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column `{name}` (expected the CSV of `make bench-compare`)",
                path.display()
            )
        })
    };
    let (workload, embedding, tool) = (column("workload")?, column("embedding")?, column("tool")?);
    let (repeat, speed) = (column("repeat")?, column("samples_per_s")?);
    let mut bars = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("cannot read {}", path.display()))?;
        if &record[repeat] != "median" {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        let samples_per_s: f64 = record[speed].parse().map_err(|_| {
            anyhow!(
                "{}: line {line}, column samples_per_s: expected a number, found {:?}",
                path.display(),
                &record[speed]
            )
        })?;
        if !(samples_per_s.is_finite() && samples_per_s > 0.0) {
            bail!(
                "{}: line {line}, column samples_per_s: expected a positive number, found \
                 {samples_per_s}",
                path.display()
            );
        }
        bars.push(Bar {
            group: format!("{} {}", &record[workload], &record[embedding]),
            tool: record[tool].to_string(),
            samples_per_s,
        });
    }
    Ok(bars)
}

/// The distinct values of `key` over `bars`, in order of first appearance.
fn distinct<'a>(bars: &'a [Bar], key: impl Fn(&'a Bar) -> &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for b in bars {
        if !out.contains(&key(b)) {
            out.push(key(b));
        }
    }
    out
}

const ROW_PX: u32 = 13;

/// Draws `bars` to `<stem>.png` and `<stem>.svg`: one group of bars per workload and embedding,
/// one colour per tool.
pub fn plot_bench_compare(bars: &[Bar], stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    if bars.is_empty() {
        bail!("no `median` rows to draw");
    }
    ensure_font()?;
    let rows = bars.len() as u32 + distinct(bars, |b| b.group.as_str()).len() as u32;
    let size = (1100, 140 + rows * ROW_PX);
    let png = with_ext(stem, "png");
    let pending = PendingFile::new(&png)?;
    draw(
        &BitMapBackend::new(&pending.tmp, size).into_drawing_area(),
        bars,
        title,
    )
    .with_context(|| format!("cannot draw {}", png.display()))?;
    pending.commit()?;
    let svg = with_ext(stem, "svg");
    let mut text = String::new();
    draw(
        &SVGBackend::with_string(&mut text, size).into_drawing_area(),
        bars,
        title,
    )
    .with_context(|| format!("cannot draw {}", svg.display()))?;
    write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bars: &[Bar],
    title: &str,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let groups = distinct(bars, |b| b.group.as_str());
    let tools = distinct(bars, |b| b.tool.as_str());
    let (lo, hi) = bars.iter().fold((f64::MAX, 0f64), |(lo, hi), b| {
        (lo.min(b.samples_per_s), hi.max(b.samples_per_s))
    });
    // whole decades around the data
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
    );
    // one unit per bar plus a gap after each group, from the top
    let units = (bars.len() + groups.len()) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(230)
        .build_cartesian_2d((lo..hi).log_scale(), units..0.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("training samples/s (median of the repeats; log scale)")
        .x_label_formatter(&|v| super::chart::si(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    let mut slot = Vec::with_capacity(bars.len());
    let mut y = 0.0;
    for group in &groups {
        let first = y;
        for (i, _) in bars.iter().enumerate().filter(|(_, b)| b.group == *group) {
            slot.push((i, y));
            y += 1.0;
        }
        // the group's label, right-aligned left of the axis at the middle of its bars
        let (px, py) = chart.backend_coord(&(lo, (first + y) / 2.0));
        let style =
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw_text(group, &style, (px - 8, py)).map_err(err)?;
        y += 1.0;
    }
    for (t, tool) in tools.iter().enumerate() {
        let color = PALETTE[t % PALETTE.len()];
        let rects = slot
            .iter()
            .filter(|(i, _)| bars[*i].tool == *tool)
            .map(|&(i, y)| {
                Rectangle::new(
                    [(lo, y + 0.1), (bars[i].samples_per_s, y + 0.9)],
                    color.filled(),
                )
            });
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(*tool)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xaa, 0xaa, 0xaa))
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_median_rows_and_rejects_a_bad_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let header = "workload,embedding,tool,repeat,samples_per_s,status\n";
        std::fs::write(
            &path,
            format!(
                "{header}dlrm-b128,single,mlet,1,900,ok\ndlrm-b128,single,mlet,median,1000,1 runs\n\
                 dlrm-b128,single,pytorch,median,250.5,1 runs\n"
            ),
        )
        .unwrap();
        let bars = read_bench_csv(&path).unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].group, "dlrm-b128 single");
        assert_eq!(
            (bars[1].tool.as_str(), bars[1].samples_per_s),
            ("pytorch", 250.5)
        );
        let written = plot_bench_compare(&bars, &dir.path().join("chart"), "t").unwrap();
        assert!(written
            .iter()
            .all(|p| std::fs::metadata(p).unwrap().len() > 1000));

        std::fs::write(
            &path,
            format!("{header}dlrm-b128,single,mlet,median,fast,x\n"),
        )
        .unwrap();
        let e = read_bench_csv(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column samples_per_s") && e.contains("\"fast\""),
            "{e}"
        );
        std::fs::write(&path, "workload,tool\n").unwrap();
        let e = read_bench_csv(&path).unwrap_err().to_string();
        assert!(e.contains("no column `embedding`"), "{e}");
    }
}
