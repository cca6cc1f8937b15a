//! Paper 004's Table 1 as a figure: test AUC against the embedding size as a multiple of the
//! smallest one run (its "scale factor"), single embedding (one set of width s·d) against
//! multi-embedding (s sets of width d), each also with MLET tables where such runs exist.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chart::{render, ChartSpec, Marker, Series, Shape, XAxis};
use crate::results::{select_points, summarize, ResultRow, SummaryRow};
use plotters::style::{RGBColor, BLACK};

/// Which line a point belongs to: multi-embedding or not, and the MLET k (None: single-layer).
type LineKey = (bool, Option<usize>);

fn label((multi, k): LineKey) -> String {
    let kind = if multi {
        "multi-embedding"
    } else {
        "single embedding"
    };
    match k {
        None => kind.to_string(),
        Some(k) => format!("{kind}, MLET k={k}"),
    }
}

/// Mean test AUC (± std over seeds) against the scale factor `sets·d / base`, where `base` is the
/// smallest `sets·d` run; one line per (single or multi-embedding, MLET k). The multi-embedding
/// lines start at the single embedding's 1x point of the same k (one set is both). Where several
/// configurations were run at a point, the best by validation AUC is drawn. All rows must share
/// one (model, dataset); writes `<out_stem>.png` and `.svg`.
pub fn plot_auc_vs_scale(rows: &[ResultRow], out_stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    if rows.is_empty() {
        bail!("nothing to plot: the results table has no rows");
    }
    let points = select_points(&summarize(rows));
    let base = points
        .iter()
        .map(|p| p.sets * p.d)
        .min()
        .expect("rows give points") as f64;
    let mut lines: BTreeMap<LineKey, Vec<&SummaryRow>> = BTreeMap::new();
    for p in &points {
        lines.entry((p.sets > 1, p.k)).or_default().push(p);
    }
    // one set of the base size starts the multi-embedding line too
    let starts: Vec<(Option<usize>, &SummaryRow)> = points
        .iter()
        .filter(|p| p.sets == 1 && (p.d as f64) == base)
        .map(|p| (p.k, p))
        .collect();
    for (k, p) in starts {
        if let Some(line) = lines.get_mut(&(true, k)) {
            line.push(p);
        }
    }
    const SE: RGBColor = BLACK;
    const ME: RGBColor = RGBColor(0xd6, 0x27, 0x28);
    let series = lines
        .iter()
        .map(|(&key, ps)| {
            let mut line: Vec<(f64, f64, f64)> = ps
                .iter()
                .map(|p| ((p.sets * p.d) as f64 / base, p.auc_mean, p.auc_std))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (multi, k) = key;
            Series {
                label: label(key),
                color: if multi { ME } else { SE },
                dashed: k.is_some(),
                marker: if multi {
                    Marker::Circle
                } else {
                    Marker::Square
                },
                shape: Shape::Line(line),
            }
        })
        .collect();
    let seeds = points.iter().map(|p| p.count).max().unwrap_or(0);
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: format!(
            "scale factor: embedding size per field / {} (log₂ scale)",
            base as usize
        ),
        y_label: format!("test AUC (mean ± std, up to {seeds} seeds)"),
        x_axis: XAxis::Log2,
        series,
    };
    render(&spec, out_stem).context("AUC vs scale factor")
}
