//! Low-rank SVD truncation of the collapsed tables (paper 001, Table 5): every field's `n x d`
//! table replaced by its rank-r truncated SVD and the model evaluated on the test split without
//! retraining; and Table 5 itself over a grid's single-layer and MLET runs.
//!
//! Memory: one copy of the embedding table per rank at a time (truncated in place, field by
//! field, through `linalg::truncate_in_place`, whose own working memory is a row chunk and
//! `d x d` matrices), so a 10⁷ x 64 f32 table needs 2.6 GB more, never more.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tch::Device;

use super::{linalg, read_grid_results, AnalysisRun, ANALYSIS_DIR};
use crate::metrics::Metrics;
use crate::plots::chart::{render, ChartSpec, Marker, Series, Shape, XAxis, MARKERS, PALETTE};
use crate::results::csv::write_table;
use crate::results::summary::mean_std;
use crate::results::{summarize, ResultRow};

/// `--ranks 4,8,16,32` → sorted distinct ranks, each at least 1.
pub fn parse_ranks(text: &str) -> Result<Vec<usize>> {
    let expected = "expected comma-separated ranks of at least 1, such as 4,8,16,32";
    let mut ranks = BTreeSet::new();
    for part in text.split(',') {
        let part = part.trim();
        let r: usize = part
            .parse()
            .map_err(|_| anyhow::anyhow!("--ranks: {expected}; `{part}` is not a rank"))?;
        if r == 0 {
            bail!("--ranks: {expected}; rank 0 would remove every table");
        }
        ranks.insert(r);
    }
    Ok(ranks.into_iter().collect())
}

/// One evaluation: the untruncated model (`rank: None`) or every table truncated to `rank`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SvdRow {
    pub rank: Option<usize>,
    pub test: Metrics,
    /// `‖A − A_r‖_F / ‖A‖_F` per field, and its mean and maximum over fields.
    pub field_rel_errors: Vec<f64>,
    pub mean_rel_error: f64,
    pub max_rel_error: f64,
    /// Parameters when truncated tables are stored factored: `n·r + r·d` for each truncated
    /// table, `n·d` for the tables left as they are (at most r rows or columns).
    pub params: i64,
    /// `Σ n·d`.
    pub full_params: i64,
}

/// What `svd.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SvdReport {
    pub run: PathBuf,
    pub dim: i64,
    pub fields: Vec<String>,
    pub rows: Vec<SvdRow>,
}

impl SvdReport {
    pub fn row(&self, rank: usize) -> Option<&SvdRow> {
        self.rows.iter().find(|r| r.rank == Some(rank))
    }
}

/// Evaluates the run untruncated and at every rank of `ranks`.
pub fn svd_analysis(run: &mut AnalysisRun, ranks: &[usize]) -> Result<SvdReport> {
    if let Some(r) = ranks.iter().find(|&&r| r == 0) {
        bail!("rank {r}: a rank must be at least 1");
    }
    let emb = &run.run.model.embeddings;
    let (dim, offsets, cards) = (
        emb.dim(),
        emb.offsets().to_vec(),
        emb.cardinalities().to_vec(),
    );
    let full_params: i64 = cards.iter().map(|n| n * dim).sum();
    let fields = cards.len();
    let mut rows = vec![SvdRow {
        rank: None,
        test: run.evaluate_test()?,
        field_rel_errors: vec![0.0; fields],
        mean_rel_error: 0.0,
        max_rel_error: 0.0,
        params: full_params,
        full_params,
    }];
    for &rank in ranks {
        let table = tch::no_grad(|| run.run.model.embeddings.table.copy());
        let errors: Vec<f64> = offsets
            .iter()
            .zip(&cards)
            .map(|(&off, &n)| linalg::truncate_in_place(&table.narrow(0, off, n), rank))
            .collect();
        let r = rank as i64;
        let params = cards
            .iter()
            .map(|&n| {
                if r < n.min(dim) {
                    n * r + r * dim
                } else {
                    n * dim
                }
            })
            .sum();
        let test = run.with_table(table, |a| a.evaluate_test())?;
        rows.push(SvdRow {
            rank: Some(rank),
            test,
            mean_rel_error: errors.iter().sum::<f64>() / fields as f64,
            max_rel_error: errors.iter().cloned().fold(0.0, f64::max),
            field_rel_errors: errors,
            params,
            full_params,
        });
    }
    Ok(SvdReport {
        run: run.run.dir.clone(),
        dim,
        // one per table: `set{m}.{field}` under multi-embedding
        fields: run.run.model.embeddings.table_names(run.field_names()),
        rows,
    })
}

/// Writes `svd.json` and `svd.csv` under `<run>/analysis/`; returns both paths.
pub fn write_svd_report(run: &AnalysisRun, report: &SvdReport) -> Result<Vec<PathBuf>> {
    let json = run.write_json("svd.json", report)?;
    let csv = json.with_file_name("svd.csv");
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.rank.map_or("full".to_string(), |r| r.to_string()),
                r.test.auc.to_string(),
                r.test.logloss.to_string(),
                r.test.pr_auc.to_string(),
                r.mean_rel_error.to_string(),
                r.max_rel_error.to_string(),
                r.params.to_string(),
                r.full_params.to_string(),
            ]
        })
        .collect();
    write_table(
        &csv,
        &[
            "rank",
            "test_auc",
            "test_logloss",
            "test_pr_auc",
            "mean_rel_frobenius_error",
            "max_rel_frobenius_error",
            "params_factored",
            "params_full",
        ],
        &rows,
    )?;
    Ok(vec![json, csv])
}

/// Reads `<run>/analysis/svd.json` when it is there.
pub fn read_svd_report(run_dir: &Path) -> Result<Option<SvdReport>> {
    let path = run_dir.join(ANALYSIS_DIR).join("svd.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an svd.json written by mlet", path.display()))?;
    Ok(Some(report))
}

/// One line of Table 5: a single-layer model of dimension `single_d` truncated to `rank`,
/// against MLET trained at `d = rank`.
#[derive(Clone, Debug, Serialize)]
pub struct Table5Row {
    pub single_d: usize,
    pub rank: usize,
    /// Test AUC of the truncated single-layer model: mean and sample std over seeds.
    pub svd_auc_mean: f64,
    pub svd_auc_std: f64,
    pub svd_runs: usize,
    /// MLET at `d = rank` (the k and σ with the best mean validation AUC), when the grid has it.
    pub mlet_k: Option<usize>,
    pub mlet_auc_mean: f64,
    pub mlet_auc_std: f64,
    pub mlet_runs: usize,
}

/// What [`table5`] did and wrote.
pub struct Table5Report {
    pub rows: Vec<Table5Row>,
    /// Runs whose SVD analysis was (re)computed now; the others had it already.
    pub analysed: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
}

/// Table 5 over a grid's output directory (`<output>/<name>`, with `results.csv`): for each
/// single-layer run and each rank r ≤ its d, the truncated model's test AUC (computing the SVD
/// analyses that are missing), averaged over seeds, against MLET trained at d = r. Writes
/// `table5_svd.csv` in the grid directory and the figure `table5_svd.png|svg` in `plots_dir`.
pub fn table5(
    grid_dir: &Path,
    ranks: &[usize],
    plots_dir: &Path,
    device: Device,
) -> Result<Table5Report> {
    let (results, model, dataset) = read_grid_results(grid_dir, "Table 5")?;
    let results_path = grid_dir.join("results.csv");
    let baselines: Vec<&ResultRow> = results
        .iter()
        .filter(|r| r.is_baseline() && r.test_auc.is_finite())
        .collect();
    if baselines.is_empty() {
        bail!(
            "{}: no finished single-layer (k = baseline) run to truncate",
            results_path.display()
        );
    }

    // per baseline run: its SVD report, computed where missing ranks
    let mut analysed = Vec::new();
    let mut reports: Vec<(&ResultRow, SvdReport)> = Vec::new();
    for r in &baselines {
        let dir = grid_dir.join(&r.run);
        let wanted: Vec<usize> = ranks.iter().copied().filter(|&k| k <= r.d).collect();
        let existing = read_svd_report(&dir)?;
        let have = |rep: &SvdReport| wanted.iter().all(|&k| rep.row(k).is_some());
        let report = match existing {
            Some(rep) if have(&rep) => rep,
            existing => {
                // keep the ranks an earlier analysis had
                let mut all: BTreeSet<usize> = wanted.iter().copied().collect();
                if let Some(rep) = &existing {
                    all.extend(rep.rows.iter().filter_map(|row| row.rank));
                }
                let mut run = AnalysisRun::open(&dir, device)?;
                let all: Vec<usize> = all.into_iter().collect();
                let rep = svd_analysis(&mut run, &all)?;
                write_svd_report(&run, &rep)?;
                analysed.push(dir.clone());
                rep
            }
        };
        reports.push((r, report));
    }

    let summary = summarize(&results);
    let single_ds: BTreeSet<usize> = baselines.iter().map(|r| r.d).collect();
    let mut rows = Vec::new();
    for &d in &single_ds {
        for &rank in ranks.iter().filter(|&&k| k <= d) {
            let aucs: Vec<f64> = reports
                .iter()
                .filter(|(r, _)| r.d == d)
                .filter_map(|(_, rep)| rep.row(rank).map(|row| row.test.auc))
                .collect();
            let (svd_auc_mean, svd_auc_std) = mean_std(&aucs);
            let mlet = summary
                .iter()
                .filter(|s| s.k.is_some() && s.d == rank)
                .max_by(|a, b| a.valid_auc_mean.total_cmp(&b.valid_auc_mean));
            rows.push(Table5Row {
                single_d: d,
                rank,
                svd_auc_mean,
                svd_auc_std,
                svd_runs: aucs.len(),
                mlet_k: mlet.and_then(|s| s.k),
                mlet_auc_mean: mlet.map_or(f64::NAN, |s| s.auc_mean),
                mlet_auc_std: mlet.map_or(f64::NAN, |s| s.auc_std),
                mlet_runs: mlet.map_or(0, |s| s.count),
            });
        }
    }
    if rows.is_empty() {
        bail!(
            "no rank of {ranks:?} is at most a single-layer d of {:?}",
            single_ds
        );
    }

    let csv = grid_dir.join("table5_svd.csv");
    write_table5_csv(&csv, &rows)?;
    std::fs::create_dir_all(plots_dir)
        .with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let mut outputs = vec![csv];
    outputs.extend(plot_table5(
        &rows,
        &plots_dir.join("table5_svd"),
        &format!("Low-rank SVD vs MLET ({model}, {dataset})"),
    )?);
    Ok(Table5Report {
        rows,
        analysed,
        outputs,
    })
}

fn write_table5_csv(path: &Path, rows: &[Table5Row]) -> Result<()> {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.single_d.to_string(),
                r.rank.to_string(),
                r.svd_auc_mean.to_string(),
                r.svd_auc_std.to_string(),
                r.svd_runs.to_string(),
                r.mlet_k.map_or(String::new(), |k| k.to_string()),
                r.mlet_auc_mean.to_string(),
                r.mlet_auc_std.to_string(),
                r.mlet_runs.to_string(),
            ]
        })
        .collect();
    write_table(
        path,
        &[
            "single_d",
            "rank",
            "svd_auc_mean",
            "svd_auc_std",
            "svd_runs",
            "mlet_k",
            "mlet_auc_mean",
            "mlet_auc_std",
            "mlet_runs",
        ],
        &body,
    )
}

/// AUC against r (log₂ axis): one line per truncated single-layer d, and MLET trained at d = r.
fn plot_table5(rows: &[Table5Row], stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    let ds: BTreeSet<usize> = rows.iter().map(|r| r.single_d).collect();
    let mut series: Vec<Series> = ds
        .iter()
        .enumerate()
        .map(|(i, &d)| Series {
            label: format!("SVD of single-layer d={d}"),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            marker: MARKERS[i % MARKERS.len()],
            shape: Shape::Line(
                rows.iter()
                    .filter(|r| r.single_d == d)
                    .map(|r| (r.rank as f64, r.svd_auc_mean, r.svd_auc_std))
                    .collect(),
            ),
        })
        .collect();
    let mut mlet: Vec<(f64, f64, f64)> = Vec::new();
    let mut ks = BTreeSet::new();
    for r in rows.iter().filter(|r| r.mlet_runs > 0) {
        if !mlet.iter().any(|p| p.0 == r.rank as f64) {
            mlet.push((r.rank as f64, r.mlet_auc_mean, r.mlet_auc_std));
            ks.extend(r.mlet_k);
        }
    }
    mlet.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !mlet.is_empty() {
        let ks: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
        series.push(Series {
            label: format!("MLET at d=r (k={})", ks.join("/")),
            color: plotters::style::BLACK,
            dashed: true,
            marker: Marker::Square,
            shape: Shape::Line(mlet),
        });
    }
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "rank r = MLET's d (log₂ scale)".into(),
        y_label: "test AUC (mean ± std over seeds)".into(),
        x_axis: XAxis::Log2,
        series,
    };
    render(&spec, stem).context("Table 5 figure")
}
