//! 8-bit uniform symmetric quantisation of the collapsed embedding tables, one scale per field
//! (paper 001, Fig. 8): `q = clamp(round(x / s), -127, 127)`, `x̂ = s·q`, with `s` chosen by a
//! grid search minimising `‖x − x̂‖²`. The same functions serve the analysis
//! (`mlet analyze quantize`) and the int8 TorchScript export, so both see identical `x̂`.
//!
//! Only the `[Σn, d]` embedding tables are quantised; the linear part's one weight per category
//! (DeepCTR-family models) stays f32.
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::PathBuf;
use tch::{Kind, Tensor};

use super::AnalysisRun;
use crate::embedding::Embeddings;
use crate::metrics::Metrics;
use crate::results::csv::write_table;

/// Largest code: the range is symmetric, so -128 is never used.
pub const QMAX: f64 = 127.0;
/// Candidates `s = α·max|x|/127` of the first pass: `α = j / COARSE` for `j = 1..=COARSE`.
const COARSE: usize = 100;
/// Candidates of the second pass, spread over `±1/COARSE` around the best `α` of the first.
const FINE: usize = 50;
/// Elements per chunk times candidates per pass stays near this (8 Mi f32, 32 MiB).
const CHUNK_WORK: i64 = 1 << 23;

/// The scale chosen for one tensor and what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScaleChoice {
    /// `s`, as the f32 that quantisation uses.
    pub scale: f32,
    /// `s / (max|x| / 127)`: 1 means no clipping.
    pub alpha: f64,
    /// `‖x − x̂‖²` at `s`.
    pub sq_error: f64,
    /// `‖x‖²`.
    pub sq_norm: f64,
}

impl ScaleChoice {
    /// `‖x − x̂‖ / ‖x‖` (0 for a zero tensor).
    pub fn rel_error(&self) -> f64 {
        if self.sq_norm > 0.0 {
            (self.sq_error / self.sq_norm).sqrt()
        } else {
            0.0
        }
    }
}

/// `clamp(round(x / s), -127, 127)` as int8 (`round` is half-to-even, symmetric in sign).
pub fn quantize(x: &Tensor, scale: f32) -> Tensor {
    let s = scale_tensor(scale, x);
    codes(&x.to_kind(Kind::Float), &s).to_kind(Kind::Int8)
}

/// `s·q` in f32: exactly the operation the int8 TorchScript module performs on lookup.
pub fn dequantize(q: &Tensor, scale: f32) -> Tensor {
    q.to_kind(Kind::Float) * scale_tensor(scale, q)
}

fn scale_tensor(scale: f32, like: &Tensor) -> Tensor {
    Tensor::from_slice(&[scale]).to_device(like.device())
}

/// Codes as floats; `s` broadcasts against `x`.
fn codes(x: &Tensor, s: &Tensor) -> Tensor {
    (x / s).round().clamp(-QMAX, QMAX)
}

/// The scale minimising `‖x − x̂‖²` over `s = α·max|x|/127`: first `α ∈ {1/100, …, 1}`, then 50
/// steps over `±1/100` around the best (resolution 4·10⁻⁴). Streams `x` in chunks, all
/// candidates of a pass at once, so memory is bounded whatever the table's size. A zero tensor
/// gets `s = 1` (every code 0, no error).
pub fn choose_scale(x: &Tensor) -> ScaleChoice {
    tch::no_grad(|| {
        let flat = x.reshape([-1]).to_kind(Kind::Float);
        let sq_norm = flat.square().sum(Kind::Double).double_value(&[]);
        let max_abs = if flat.numel() == 0 {
            0.0
        } else {
            flat.abs().max().double_value(&[])
        };
        if max_abs == 0.0 {
            return ScaleChoice {
                scale: 1.0,
                alpha: 1.0,
                sq_error: 0.0,
                sq_norm,
            };
        }
        let step = max_abs / QMAX;
        let coarse: Vec<f64> = (1..=COARSE).map(|j| j as f64 / COARSE as f64).collect();
        let best = best_of(&flat, step, &coarse);
        let width = 1.0 / COARSE as f64;
        let fine: Vec<f64> = (0..=FINE)
            .map(|j| best.1 - width + 2.0 * width * j as f64 / FINE as f64)
            .filter(|&a| a > 0.0 && a <= 1.0)
            .chain(std::iter::once(best.1))
            .collect();
        let (scale, alpha, sq_error) = best_of(&flat, step, &fine);
        ScaleChoice {
            scale,
            alpha,
            sq_error,
            sq_norm,
        }
    })
}

/// `(s, α, ‖x − x̂‖²)` of the best candidate `α` (the first one on ties).
fn best_of(flat: &Tensor, step: f64, alphas: &[f64]) -> (f32, f64, f64) {
    let scales: Vec<f32> = alphas.iter().map(|a| (a * step) as f32).collect();
    let s = Tensor::from_slice(&scales)
        .to_device(flat.device())
        .unsqueeze(0);
    let n = flat.numel() as i64;
    let chunk = (CHUNK_WORK / alphas.len() as i64).max(1);
    let mut errors = Tensor::zeros([alphas.len() as i64], (Kind::Double, flat.device()));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = flat.narrow(0, start, len).unsqueeze(1);
        let err = (&x - codes(&x, &s) * &s)
            .square()
            .sum_dim_intlist(0, false, Kind::Double);
        errors += err;
        start += len;
    }
    let errors = Vec::<f64>::try_from(&errors.to_device(tch::Device::Cpu)).expect("f64 errors");
    let (i, e) =
        errors.iter().enumerate().fold(
            (0, f64::INFINITY),
            |(bi, be), (i, &e)| {
                if e < be {
                    (i, e)
                } else {
                    (bi, be)
                }
            },
        );
    (scales[i], alphas[i], e)
}

/// The embedding tables as int8 codes with one scale per field.
pub struct QuantizedTables {
    /// `[Σn, d]` int8, the fields' rows at the embedding's offsets.
    pub codes: Tensor,
    /// Per field, in table order.
    pub choices: Vec<ScaleChoice>,
}

impl QuantizedTables {
    /// Quantises every field of a collapsed (`n x d`) embedding.
    pub fn of(emb: &Embeddings) -> Result<QuantizedTables> {
        if emb.projection.is_some() {
            bail!(
                "quantisation needs the collapsed n x d tables (collapse the MLET factors first)"
            );
        }
        let codes = Tensor::zeros(emb.table.size(), (Kind::Int8, emb.table.device()));
        let mut choices = Vec::new();
        tch::no_grad(|| {
            for (&off, &n) in emb.offsets().iter().zip(emb.cardinalities()) {
                let table = emb.table.narrow(0, off, n);
                let choice = choose_scale(&table);
                codes
                    .narrow(0, off, n)
                    .copy_(&quantize(&table, choice.scale));
                choices.push(choice);
            }
        });
        Ok(QuantizedTables { codes, choices })
    }

    /// The f32 table the int8 model computes with (`s_f · q` per field).
    pub fn dequantized(&self, emb: &Embeddings) -> Tensor {
        let out = Tensor::zeros(self.codes.size(), (Kind::Float, self.codes.device()));
        tch::no_grad(|| {
            for ((&off, &n), c) in emb
                .offsets()
                .iter()
                .zip(emb.cardinalities())
                .zip(&self.choices)
            {
                out.narrow(0, off, n)
                    .copy_(&dequantize(&self.codes.narrow(0, off, n), c.scale));
            }
        });
        out
    }

    pub fn scales(&self) -> Vec<f32> {
        self.choices.iter().map(|c| c.scale).collect()
    }

    /// Bytes of the int8 tables plus one f32 scale per field.
    pub fn bytes(&self) -> i64 {
        self.codes.numel() as i64 + 4 * self.choices.len() as i64
    }
}

/// One field's quantisation.
#[derive(Clone, Debug, Serialize)]
pub struct FieldQuantization {
    pub field: String,
    pub rows: i64,
    pub scale: f32,
    pub alpha: f64,
    pub rel_l2_error: f64,
}

/// Test metrics and embedding bytes of one precision.
#[derive(Clone, Debug, Serialize)]
pub struct PrecisionResult {
    pub precision: &'static str,
    pub test: Metrics,
    pub embedding_bytes: i64,
}

/// What `mlet analyze quantize` writes to `quantize.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeReport {
    pub run: PathBuf,
    pub dim: i64,
    pub method: &'static str,
    pub fields: Vec<FieldQuantization>,
    /// `‖X − X̂‖ / ‖X‖` over all tables together.
    pub overall_rel_l2_error: f64,
    pub fp32: PrecisionResult,
    pub int8: PrecisionResult,
}

/// Quantises the run's tables, evaluates the int8 model on the test split next to the f32 one.
pub fn quantize_analysis(run: &mut AnalysisRun) -> Result<QuantizeReport> {
    let fp32 = run.evaluate_test()?;
    let emb = &run.run.model.embeddings;
    let quantized = QuantizedTables::of(emb)?;
    let dequantized = quantized.dequantized(emb);
    let fields: Vec<FieldQuantization> = emb
        .table_names(run.field_names())
        .iter()
        .zip(emb.cardinalities())
        .zip(&quantized.choices)
        .map(|((name, &n), c)| FieldQuantization {
            field: name.clone(),
            rows: n,
            scale: c.scale,
            alpha: c.alpha,
            rel_l2_error: c.rel_error(),
        })
        .collect();
    let (err, norm) = quantized
        .choices
        .iter()
        .fold((0.0, 0.0), |(e, n), c| (e + c.sq_error, n + c.sq_norm));
    let fp32_bytes = emb.table.numel() as i64 * emb.table.kind().elt_size_in_bytes() as i64;
    let dim = emb.dim();
    let int8 = run.with_table(dequantized, |r| r.evaluate_test())?;
    Ok(QuantizeReport {
        run: run.run.dir.clone(),
        dim,
        method: "8-bit uniform symmetric per field: q = clamp(round(x/s), -127, 127), x̂ = s·q; \
                 s = α·max|x|/127 with α by grid search minimising ‖x − x̂‖²",
        fields,
        overall_rel_l2_error: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        fp32: PrecisionResult {
            precision: "fp32",
            test: fp32,
            embedding_bytes: fp32_bytes,
        },
        int8: PrecisionResult {
            precision: "int8",
            test: int8,
            embedding_bytes: quantized.bytes(),
        },
    })
}

/// Writes `quantize.json`, `quantize.csv` (per field) and `quantize_metrics.csv` (fp32 and int8
/// rows) under `<run>/analysis/`; returns the paths.
pub fn write_quantize_report(run: &AnalysisRun, report: &QuantizeReport) -> Result<Vec<PathBuf>> {
    let json = run.write_json("quantize.json", report)?;
    let dir = json.parent().expect("analysis dir").to_path_buf();
    let fields = dir.join("quantize.csv");
    let rows: Vec<Vec<String>> = report
        .fields
        .iter()
        .map(|f| {
            vec![
                f.field.clone(),
                f.rows.to_string(),
                f.scale.to_string(),
                f.alpha.to_string(),
                f.rel_l2_error.to_string(),
            ]
        })
        .collect();
    write_table(
        &fields,
        &["field", "rows", "scale", "alpha", "rel_l2_error"],
        &rows,
    )?;
    let metrics = dir.join("quantize_metrics.csv");
    let rows: Vec<Vec<String>> = [&report.fp32, &report.int8]
        .iter()
        .map(|p| {
            vec![
                p.precision.to_string(),
                p.test.auc.to_string(),
                p.test.logloss.to_string(),
                p.test.pr_auc.to_string(),
                p.embedding_bytes.to_string(),
            ]
        })
        .collect();
    write_table(
        &metrics,
        &[
            "precision",
            "test_auc",
            "test_logloss",
            "test_pr_auc",
            "embedding_bytes",
        ],
        &rows,
    )?;
    Ok(vec![json, fields, metrics])
}
