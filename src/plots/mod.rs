//! Figures from a results table, drawn with plotters to PNG and SVG: test AUC / LogLoss vs d
//! (paper 001 Fig. 5/6), AUC vs init σ (Fig. 4), and training loss curves.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (`assets/fonts/`, Bitstream Vera
//! licence), so no system font is needed. Nothing here touches tensors.
mod bench_compare;
pub(crate) mod chart;
mod figures;
mod scaling;
pub mod spectrum;
mod train_log;

use anyhow::{anyhow, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use bench_compare::{plot_bench_compare, read_bench_csv, Bar};
pub use figures::{
    plot_auc_vs_init_std, plot_gain_by_decile, plot_metric_vs_d, plot_training_curve, Metric,
};
pub use train_log::{read_epochs, read_train_log, EpochPoint, TrainLogPoint};

use crate::results::summary::OrdF64;
use crate::results::ResultRow;

/// Width and height in pixels of every PNG (and of the SVG canvas).
pub const FIGURE_SIZE: (u32, u32) = (1100, 720);

/// The training-curve figure with a second panel (validation AUC per epoch).
pub const TWO_PANEL_SIZE: (u32, u32) = (1100, 1100);

/// The font family every text element uses; registered from the embedded font.
pub(crate) const FONT: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters (once per process).
pub(crate) fn ensure_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, plotters::style::FontStyle::Normal, DEJAVU_SANS)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the embedded font DejaVuSans.ttf could not be loaded"
        ))
    }
}

/// A figure [`render_figures`] can draw for one (model, dataset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FigureKind {
    /// Test AUC vs d, one line per k plus the baseline (Fig. 5/6).
    AucVsD,
    /// Test LogLoss vs d (Fig. 5/6, lower panels).
    LogLossVsD,
    /// Test AUC vs init σ, one line per (d, k) (Fig. 4).
    AucVsSigma,
    /// Relative PR-AUC gain of MLET over the baseline per test frequency decile (Table 4).
    GainByDecile,
    /// Test AUC vs embedding size (scale factor), single vs multi-embedding (paper 004 Table 1).
    AucVsScale,
}

impl FigureKind {
    pub const ALL: [FigureKind; 5] = [
        FigureKind::AucVsD,
        FigureKind::LogLossVsD,
        FigureKind::AucVsSigma,
        FigureKind::GainByDecile,
        FigureKind::AucVsScale,
    ];

    /// Whether the figure is about multi-embedding runs; the others draw one-set runs only.
    fn is_multi_embedding(self) -> bool {
        self == FigureKind::AucVsScale
    }

    /// The file-name suffix: `auc_vs_d`, `logloss_vs_d`, `auc_vs_sigma`.
    pub fn slug(self) -> &'static str {
        match self {
            FigureKind::AucVsD => "auc_vs_d",
            FigureKind::LogLossVsD => "logloss_vs_d",
            FigureKind::AucVsSigma => "auc_vs_sigma",
            FigureKind::GainByDecile => "pr_auc_gain_by_decile",
            FigureKind::AucVsScale => "auc_vs_scale",
        }
    }
}

/// One figure to draw: which rows, what kind, where.
#[derive(Clone, Debug, PartialEq)]
pub struct FigurePlan {
    pub model: String,
    pub dataset: String,
    pub kind: FigureKind,
    /// Output path without extension (`.png` and `.svg` are added).
    pub stem: PathBuf,
    pub title: String,
}

/// The figures that apply to a results table, and why the others were left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub figures: Vec<FigurePlan>,
    /// One line per (model, dataset, kind) left out, saying why.
    pub skipped: Vec<String>,
}

/// Keeps letters, digits, `.`, `-` and `_`; everything else becomes `_`.
pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Plans the figures of `kinds` for each (model, dataset) of `rows`: metric vs d when at least two
/// distinct d values were run, AUC vs σ when MLET rows have at least two distinct init σ. Files
/// are `<out_dir>/<prefix>_<model>_<dataset>_<kind>`; titles name the model and the data set (the
/// data set name carries its scale, e.g. `synthetic-300000`).
pub fn plan_figures(
    rows: &[ResultRow],
    out_dir: &Path,
    prefix: &str,
    kinds: &[FigureKind],
) -> Plan {
    let pairs = crate::results::model_dataset_pairs(rows);
    let kinds: BTreeSet<FigureKind> = kinds.iter().copied().collect();
    let mut plan = Plan::default();
    for (model, dataset) in pairs {
        let all: Vec<&ResultRow> = rows
            .iter()
            .filter(|r| r.model == model && r.dataset == dataset)
            .collect();
        let multi_embedding = all.iter().any(|r| r.sets > 1);
        let group: Vec<&ResultRow> = all.iter().copied().filter(|r| r.sets == 1).collect();
        let ds: BTreeSet<usize> = group.iter().map(|r| r.d).collect();
        let sigmas: BTreeSet<OrdF64> = group
            .iter()
            .filter(|r| !r.is_baseline() && r.init_std.is_finite() && r.init_std > 0.0)
            .map(|r| OrdF64(r.init_std))
            .collect();
        let owned: Vec<ResultRow> = group.iter().map(|r| (*r).clone()).collect();
        let has_decile_gains = crate::results::frequency_gains(&owned)
            .iter()
            .any(|g| g.decile_gain_mean.iter().any(|v| v.is_finite()));
        let name = model.to_uppercase();
        for &kind in &kinds {
            let (ok, why, what) = match kind {
                FigureKind::AucVsD => (ds.len() >= 2, "only one d value", "test AUC vs d"),
                FigureKind::LogLossVsD => (ds.len() >= 2, "only one d value", "test LogLoss vs d"),
                FigureKind::AucVsSigma => (
                    sigmas.len() >= 2,
                    "fewer than two init σ values among the MLET runs",
                    "test AUC vs init σ",
                ),
                FigureKind::GainByDecile => (
                    has_decile_gains,
                    "no MLET run with per-decile metrics has a baseline at its d and seed",
                    "PR-AUC gain of MLET by frequency decile",
                ),
                FigureKind::AucVsScale => (
                    multi_embedding,
                    "no multi-embedding run (embedding.sets > 1)",
                    "test AUC vs embedding size, single vs multi-embedding",
                ),
            };
            if !ok {
                plan.skipped.push(format!(
                    "{model}/{dataset}: no {} figure ({why})",
                    kind.slug()
                ));
                continue;
            }
            let mut stem = String::new();
            if !prefix.is_empty() {
                stem.push_str(&file_safe(prefix));
                stem.push('_');
            }
            stem.push_str(&file_safe(&format!("{model}_{dataset}_{}", kind.slug())));
            plan.figures.push(FigurePlan {
                model: model.clone(),
                dataset: dataset.clone(),
                kind,
                stem: out_dir.join(stem),
                title: format!("{name} on {dataset}: {what}"),
            });
        }
    }
    plan
}

/// Draws the planned figures (PNG and SVG each) and returns the written paths.
pub fn render_plan(rows: &[ResultRow], plan: &Plan) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in &plan.figures {
        let group: Vec<ResultRow> = rows
            .iter()
            .filter(|r| r.model == f.model && r.dataset == f.dataset)
            .filter(|r| f.kind.is_multi_embedding() || r.sets == 1)
            .cloned()
            .collect();
        let paths = match f.kind {
            FigureKind::AucVsD => plot_metric_vs_d(&group, Metric::Auc, &f.stem, &f.title),
            FigureKind::LogLossVsD => plot_metric_vs_d(&group, Metric::LogLoss, &f.stem, &f.title),
            FigureKind::AucVsSigma => plot_auc_vs_init_std(&group, &f.stem, &f.title),
            FigureKind::GainByDecile => plot_gain_by_decile(&group, &f.stem, &f.title),
            FigureKind::AucVsScale => scaling::plot_auc_vs_scale(&group, &f.stem, &f.title),
        }
        .map_err(|e| e.context(format!("{}/{}", f.model, f.dataset)))?;
        written.extend(paths);
    }
    Ok(written)
}

/// Plans ([`plan_figures`]) and draws the figures of `kinds`; returns the written paths.
pub fn render_figures(
    rows: &[ResultRow],
    out_dir: &Path,
    prefix: &str,
    kinds: &[FigureKind],
) -> Result<Vec<PathBuf>> {
    render_plan(rows, &plan_figures(rows, out_dir, prefix, kinds))
}

/// Every applicable figure for a results table, one set per (model, dataset): AUC and LogLoss vs
/// d when at least two d values were run, AUC vs σ when at least two init σ were run with MLET.
pub fn render_all(rows: &[ResultRow], out_dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    render_figures(rows, out_dir, prefix, &FigureKind::ALL)
}
