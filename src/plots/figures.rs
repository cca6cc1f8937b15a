//! The paper's figures as recipes over a results table: metric vs d (Fig. 5/6), AUC vs init σ
//! (Fig. 4), and training loss curves.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chart::{
    render, render_panels, ChartSpec, Marker, Series, Shape, XAxis, MARKERS, PALETTE,
};
use super::train_log::{read_epochs, read_train_log};
use crate::results::summary::{select_by, OrdF64};
use crate::results::{
    format_k, frequency_gains, select_points, summarize, FrequencyGain, ResultRow, SummaryRow,
};
use plotters::style::{RGBColor, BLACK};

/// The test metric a figure shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Auc,
    LogLoss,
    PrAuc,
}

impl Metric {
    /// Mean and std of this metric in a summary row.
    fn of(self, s: &SummaryRow) -> (f64, f64) {
        match self {
            Metric::Auc => (s.auc_mean, s.auc_std),
            Metric::LogLoss => (s.logloss_mean, s.logloss_std),
            Metric::PrAuc => (s.pr_auc_mean, s.pr_auc_std),
        }
    }

    /// The name used in axis labels and titles.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Auc => "AUC",
            Metric::LogLoss => "LogLoss",
            Metric::PrAuc => "PR-AUC",
        }
    }
}

/// Fails unless every row has the same (model, dataset); returns it.
fn single_group(rows: &[ResultRow]) -> Result<(String, String)> {
    let Some(first) = rows.first() else {
        bail!("nothing to plot: the results table has no rows");
    };
    let pairs = crate::results::model_dataset_pairs(rows);
    if pairs.len() > 1 {
        bail!(
            "the rows mix several (model, dataset) pairs ({}); plot one pair at a time \
             (render_all splits them)",
            pairs
                .iter()
                .map(|(m, d)| format!("{m}/{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((first.model.clone(), first.dataset.clone()))
}

/// "3 seeds" or "2–3 seeds" over the points drawn.
fn seeds_text(points: &[&SummaryRow]) -> String {
    let lo = points.iter().map(|p| p.count).min().unwrap_or(0);
    let hi = points.iter().map(|p| p.count).max().unwrap_or(0);
    let n = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    };
    format!("{n} seed{}", if hi == 1 { "" } else { "s" })
}

fn k_label(k: Option<usize>) -> String {
    match k {
        None => "baseline".into(),
        Some(k) => format!("k={k}"),
    }
}

/// Fig. 5/6: mean test `metric` against the embedding dimension d (log2 axis, ticks at the d
/// values run), one line with markers per k plus the single-layer baseline, error bars ± the
/// std over seeds. All rows must share one (model, dataset). Where several configurations
/// (init σ, lr, optimizer) were run at a (d, k), the one with the best mean validation AUC is
/// drawn (see [`select_points`]). Writes `<out_stem>.png` and `<out_stem>.svg`; returns both.
pub fn plot_metric_vs_d(
    rows: &[ResultRow],
    metric: Metric,
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    single_group(rows)?;
    let points = select_points(&summarize(rows));
    let mut by_k: BTreeMap<Option<usize>, Vec<&SummaryRow>> = BTreeMap::new();
    for p in &points {
        by_k.entry(p.k).or_default().push(p);
    }
    let mut series = Vec::new();
    let mut mlet_i = 0;
    for (k, ps) in &by_k {
        let line: Vec<(f64, f64, f64)> = ps
            .iter()
            .map(|p| {
                let (m, s) = metric.of(p);
                (p.d as f64, m, s)
            })
            .collect();
        let (color, marker) = match k {
            None => (BLACK, Marker::Square),
            Some(_) => {
                mlet_i += 1;
                (
                    PALETTE[(mlet_i - 1) % PALETTE.len()],
                    MARKERS[(mlet_i - 1) % MARKERS.len()],
                )
            }
        };
        series.push(Series {
            label: k_label(*k),
            color,
            dashed: k.is_none(),
            marker,
            shape: Shape::Line(line),
        });
    }
    let all: Vec<&SummaryRow> = points.iter().collect();
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "embedding dimension d (log₂ scale)".into(),
        y_label: format!("test {} (mean ± std, {})", metric.name(), seeds_text(&all)),
        x_axis: XAxis::Log2,
        series,
    };
    render(&spec, out_stem).with_context(|| format!("{} vs d", metric.name()))
}

/// Table 4 per decile: the relative test PR-AUC gain of MLET over the baseline (same d and
/// seed, mean over seeds) in each frequency decile, least frequent first; one line per d, at the
/// largest k run and the σ [`select_points`] picks for it, and a dashed zero line. All rows must
/// share one (model, dataset). Writes `<out_stem>.png` and `<out_stem>.svg`; returns both.
pub fn plot_gain_by_decile(
    rows: &[ResultRow],
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    single_group(rows)?;
    let gains = frequency_gains(rows);
    let points = select_points(&summarize(rows));
    let mut largest_k: BTreeMap<usize, &SummaryRow> = BTreeMap::new();
    for p in points.iter().filter(|p| p.k.is_some()) {
        let e = largest_k.entry(p.d).or_insert(p);
        if p.k > e.k {
            *e = p;
        }
    }
    let mut series = Vec::new();
    for (i, p) in largest_k.values().enumerate() {
        let Some(g) = gains
            .iter()
            .find(|g| g.d == p.d && Some(g.k) == p.k && g.init_std == p.init_std)
        else {
            continue;
        };
        let line: Vec<(f64, f64, f64)> = g
            .decile_gain_mean
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(j, &v)| ((j + 1) as f64, v, 0.0))
            .collect();
        if line.is_empty() {
            continue;
        }
        series.push(Series {
            label: format!("d={} k={}", g.d, g.k),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            marker: MARKERS[i % MARKERS.len()],
            shape: Shape::Line(line),
        });
    }
    if series.is_empty() {
        bail!("no MLET run has a baseline with per-decile PR-AUC at the same d and seed");
    }
    series.push(Series {
        label: "no gain".into(),
        color: BLACK,
        dashed: true,
        marker: Marker::None,
        shape: Shape::HLine(0.0),
    });
    let seeds = gains
        .iter()
        .map(|g: &FrequencyGain| g.seeds)
        .max()
        .unwrap_or(0);
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "test frequency decile (1 = rarest 10%, 10 = most frequent)".into(),
        y_label: format!("PR-AUC gain of MLET over baseline, % (mean of ≤{seeds} seeds)"),
        x_axis: XAxis::Linear,
        series,
    };
    render(&spec, out_stem).context("PR-AUC gain by decile")
}

/// Fig. 4: mean test AUC against the init σ of the MLET factor layer (log10 axis, ticks at the σ
/// values run), one line per (d, k) with error bars ± std over seeds, and a dashed horizontal
/// line at the baseline's mean AUC for each d drawn where the baseline was run. All rows must
/// share one (model, dataset). When some (d, k) has several σ values, the (d, k) with a single σ
/// are left out. Where several (lr, optimizer) were run at one σ, the best by mean validation AUC
/// is drawn. Writes `<out_stem>.png` and `<out_stem>.svg`; returns both.
pub fn plot_auc_vs_init_std(
    rows: &[ResultRow],
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    single_group(rows)?;
    let summary = summarize(rows);
    let mlet: Vec<SummaryRow> = summary
        .iter()
        .filter(|s| s.k.is_some() && s.init_std.is_finite() && s.init_std > 0.0)
        .cloned()
        .collect();
    if mlet.is_empty() {
        bail!("nothing to plot: no MLET row with a positive init_std");
    }
    let points = select_by(&mlet, |s| (s.d, s.k, OrdF64(s.init_std)));
    let mut by_dk: BTreeMap<(usize, Option<usize>), Vec<&SummaryRow>> = BTreeMap::new();
    for p in &points {
        by_dk.entry((p.d, p.k)).or_default().push(p);
    }
    if by_dk.values().any(|v| v.len() > 1) {
        by_dk.retain(|_, v| v.len() > 1);
    }
    let baselines: Vec<SummaryRow> = summary.iter().filter(|s| s.k.is_none()).cloned().collect();
    let baselines = select_by(&baselines, |s| s.d);

    let mut series = Vec::new();
    let mut d_color: BTreeMap<usize, RGBColor> = BTreeMap::new();
    for (i, ((d, k), ps)) in by_dk.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        d_color.entry(*d).or_insert(color);
        series.push(Series {
            label: format!("d={d}, k={}", format_k(*k)),
            color,
            dashed: false,
            marker: MARKERS[i % MARKERS.len()],
            shape: Shape::Line(
                ps.iter()
                    .map(|p| (p.init_std, p.auc_mean, p.auc_std))
                    .collect(),
            ),
        });
    }
    for b in &baselines {
        if let Some(color) = d_color.get(&b.d) {
            series.push(Series {
                label: format!("baseline d={}", b.d),
                color: *color,
                dashed: true,
                marker: Marker::None,
                shape: Shape::HLine(b.auc_mean),
            });
        }
    }
    let all: Vec<&SummaryRow> = by_dk.values().flatten().copied().collect();
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "init σ of the MLET factor layer (log₁₀ scale)".into(),
        y_label: format!("test AUC (mean ± std, {})", seeds_text(&all)),
        x_axis: XAxis::Log10,
        series,
    };
    render(&spec, out_stem).context("AUC vs init σ")
}

/// Training loss against samples seen, one line per run. `logs` pairs a `train_log.csv` path
/// with the label its line gets in the legend. Non-finite losses are skipped. When a log has an
/// `epochs.csv` beside it (runs with early stopping), a second panel below shows the validation
/// AUC of every evaluation against samples seen (epoch 0 at 0 samples), the best epoch marked.
pub fn plot_training_curve(
    logs: &[(PathBuf, String)],
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    if logs.is_empty() {
        bail!("nothing to plot: no training log given");
    }
    let mut series = Vec::new();
    let mut valid = Vec::new();
    for (i, (path, label)) in logs.iter().enumerate() {
        let log = read_train_log(path)?;
        let line: Vec<(f64, f64, f64)> = log
            .iter()
            .filter(|p| p.loss.is_finite())
            .map(|p| (p.samples as f64, p.loss, 0.0))
            .collect();
        if line.is_empty() {
            bail!("{}: no logged step with a finite loss", path.display());
        }
        let marker = if line.len() <= 30 {
            MARKERS[i % MARKERS.len()]
        } else {
            Marker::None
        };
        let color = PALETTE[i % PALETTE.len()];
        series.push(Series {
            label: label.clone(),
            color,
            dashed: false,
            marker,
            shape: Shape::Line(line),
        });
        let epochs_csv = path.with_file_name(crate::training::EPOCHS_LOG);
        if epochs_csv.is_file() {
            let epochs = read_epochs(&epochs_csv)?;
            let auc: Vec<(f64, f64, f64)> = epochs
                .iter()
                .map(|e| (e.samples as f64, e.valid_auc, 0.0))
                .collect();
            // the best epoch: the last row that was best when it was evaluated
            let best = epochs.iter().rev().find(|e| e.best);
            valid.push(Series {
                label: match best {
                    Some(b) => format!("{label} (best: epoch {})", b.epoch),
                    None => label.clone(),
                },
                color,
                dashed: false,
                marker: MARKERS[i % MARKERS.len()],
                shape: Shape::Line(auc),
            });
            if let Some(b) = best {
                valid.push(Series {
                    label: format!("{label}: best valid AUC"),
                    color,
                    dashed: true,
                    marker: Marker::None,
                    shape: Shape::HLine(b.valid_auc),
                });
            }
        }
    }
    let loss = ChartSpec {
        title: title.to_string(),
        x_label: "training samples seen".into(),
        y_label: "training loss (BCE, interval mean)".into(),
        x_axis: XAxis::Linear,
        series,
    };
    if valid.iter().all(|s| match &s.shape {
        Shape::Line(points) => points.iter().all(|p| !p.1.is_finite()),
        Shape::HLine(_) => true,
    }) {
        return render(&loss, out_stem).context("training curve");
    }
    let auc = ChartSpec {
        title: "validation AUC after each epoch (epoch 0: before training)".into(),
        x_label: "training samples seen".into(),
        y_label: "validation AUC".into(),
        x_axis: XAxis::Linear,
        series: valid,
    };
    render_panels(&[loss, auc], super::TWO_PANEL_SIZE, out_stem).context("training curve")
}
