//! Fig. 8 of paper 001: MLET composed with post-training compression. Over a grid's runs of one
//! model (single-layer and MLET, some trained with the modulo hashing trick,
//! `embedding.hash`), the test AUC at full precision and with every table quantised to 8 bits
//! (`super::quantize`, computing the quantisation analyses that are missing), against d: the
//! four variants fp32, int8, hashing (fp32) and int8 + hashing, for the baseline and for MLET.
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Device;

use super::quantize::{quantize_analysis, write_quantize_report};
use super::{read_grid_results, AnalysisRun, ANALYSIS_DIR};
use crate::plots::chart::{render, ChartSpec, Marker, Series, Shape, XAxis, PALETTE};
use crate::results::csv::write_table;
use crate::results::summary::mean_std;
use crate::results::{format_k, ResultRow};

/// One point of Fig. 8: a (baseline or MLET k, d, variant) over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct CompressionPoint {
    pub k: Option<usize>,
    pub d: usize,
    /// `fp32`, `int8`, `hash` or `hash+int8`.
    pub variant: &'static str,
    pub auc_mean: f64,
    pub auc_std: f64,
    pub runs: usize,
    /// Bytes of the inference-time embedding tables (f32 or int8 plus one scale per field).
    pub embedding_bytes: i64,
}

/// A point's key: (baseline or MLET k, d, variant).
type PointKey = (Option<usize>, usize, &'static str);
/// A line of points `(x, y, ± err)`.
type Line = Vec<(f64, f64, f64)>;

/// What [`fig8`] did and wrote.
pub struct Fig8Report {
    pub points: Vec<CompressionPoint>,
    /// Runs whose quantisation analysis was computed now; the others had it already.
    pub analysed: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
}

/// The int8 test AUC and bytes of a run, from its quantisation analysis (computed when missing).
fn int8_result(dir: &Path, device: Device, analysed: &mut Vec<PathBuf>) -> Result<(f64, i64)> {
    let path = dir.join(ANALYSIS_DIR).join("quantize.json");
    if !path.is_file() {
        let mut run = AnalysisRun::open(dir, device)?;
        let report = quantize_analysis(&mut run)?;
        write_quantize_report(&run, &report)?;
        analysed.push(dir.to_path_buf());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let int8 = &json["int8"];
    match (
        int8["test"]["auc"].as_f64(),
        int8["embedding_bytes"].as_i64(),
    ) {
        (Some(auc), Some(bytes)) => Ok((auc, bytes)),
        _ => anyhow::bail!(
            "{}: no int8.test.auc / int8.embedding_bytes",
            path.display()
        ),
    }
}

/// Whether a run was trained with the hashing trick (its `run.json` records the hashed fields).
fn is_hashed(dir: &Path) -> Result<bool> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    Ok(json["data"]
        .get("hash")
        .is_some_and(|h| !h.is_null() && h.as_array().is_none_or(|a| !a.is_empty())))
}

/// Fig. 8 over a grid's output directory: writes `fig8_compression.csv` there and the figure
/// `fig8_compression.png|svg` into `plots_dir`.
pub fn fig8(grid_dir: &Path, plots_dir: &Path, device: Device) -> Result<Fig8Report> {
    let (results, model, dataset) = read_grid_results(grid_dir, "Fig. 8")?;
    let mut analysed = Vec::new();
    // per point: the runs' AUCs and embedding bytes
    let mut groups: BTreeMap<PointKey, (Vec<f64>, Vec<i64>)> = BTreeMap::new();
    let finished: Vec<&ResultRow> = results.iter().filter(|r| r.test_auc.is_finite()).collect();
    if finished.is_empty() {
        anyhow::bail!("{}: no finished run to compress", grid_dir.display());
    }
    for r in finished {
        let dir = grid_dir.join(&r.run);
        let hashed = is_hashed(&dir)?;
        let (int8_auc, int8_bytes) = int8_result(&dir, device, &mut analysed)?;
        let fp32_bytes = r.inference_embedding_params * 4;
        let (full, quantised) = if hashed {
            ("hash", "hash+int8")
        } else {
            ("fp32", "int8")
        };
        for (variant, auc, bytes) in [
            (full, r.test_auc, fp32_bytes),
            (quantised, int8_auc, int8_bytes),
        ] {
            let g = groups.entry((r.k, r.d, variant)).or_default();
            g.0.push(auc);
            g.1.push(bytes);
        }
    }
    let points: Vec<CompressionPoint> = groups
        .into_iter()
        .map(|((k, d, variant), (aucs, bytes))| {
            let (auc_mean, auc_std) = mean_std(&aucs);
            CompressionPoint {
                k,
                d,
                variant,
                auc_mean,
                auc_std,
                runs: aucs.len(),
                embedding_bytes: bytes.iter().sum::<i64>() / bytes.len() as i64,
            }
        })
        .collect();

    let csv = grid_dir.join("fig8_compression.csv");
    let body: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                format_k(p.k),
                p.d.to_string(),
                p.variant.to_string(),
                p.auc_mean.to_string(),
                p.auc_std.to_string(),
                p.runs.to_string(),
                p.embedding_bytes.to_string(),
            ]
        })
        .collect();
    write_table(
        &csv,
        &[
            "k",
            "d",
            "variant",
            "auc_mean",
            "auc_std",
            "runs",
            "embedding_bytes",
        ],
        &body,
    )?;
    std::fs::create_dir_all(plots_dir)
        .with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let mut outputs = vec![csv];
    outputs.extend(plot_fig8(
        &points,
        &plots_dir.join("fig8_compression"),
        &format!("{} on {dataset}: compression", model.to_uppercase()),
    )?);
    Ok(Fig8Report {
        points,
        analysed,
        outputs,
    })
}

/// AUC against d (log₂ axis): one line per (baseline or MLET k, variant); the baseline dashed,
/// each variant its marker.
fn plot_fig8(points: &[CompressionPoint], stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    let mut lines: BTreeMap<(Option<usize>, &str), Line> = BTreeMap::new();
    for p in points {
        lines
            .entry((p.k, p.variant))
            .or_default()
            .push((p.d as f64, p.auc_mean, p.auc_std));
    }
    let variants = ["fp32", "int8", "hash", "hash+int8"];
    let markers = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Cross,
    ];
    let series = lines
        .into_iter()
        .map(|((k, variant), line)| {
            let v = variants.iter().position(|x| *x == variant).unwrap_or(0);
            Series {
                label: format!(
                    "{} {variant}",
                    k.map_or("baseline".to_string(), |k| format!("MLET k={k}"))
                ),
                color: PALETTE[v % PALETTE.len()],
                dashed: k.is_none(),
                marker: markers[v],
                shape: Shape::Line(line),
            }
        })
        .collect();
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "embedding dimension d (log₂ scale)".into(),
        y_label: "test AUC (mean ± std over seeds)".into(),
        x_axis: XAxis::Log2,
        series,
    };
    render(&spec, stem).context("Fig. 8 figure")
}
