//! Figures of table spectra (`mlet analyze spectrum`): information abundance per field (paper 004
//! Fig. 2; with single- and multi-embedding runs, paper 004 §5(a)), information abundance of each
//! embedding set of a multi-embedding run (paper 004 §5(b)) and normalised singular value curves.
use anyhow::{bail, Context, Result};
use plotters::style::BLACK;
use std::path::{Path, PathBuf};

use super::chart::{render, ChartSpec, Marker, Series, Shape, XAxis, MARKERS, PALETTE};
use crate::analysis::spectrum::{FieldSpectrum, RunSpectrum};

/// The first plain run (single-layer, one embedding set) is drawn as the other figures draw the
/// baseline (black, squares); every other run takes the palette in order; plain runs are dashed.
fn styles(runs: &[RunSpectrum]) -> Vec<(plotters::style::RGBColor, bool, Marker)> {
    let mut i = 0;
    let mut black_taken = false;
    runs.iter()
        .map(|r| {
            let single = r.is_baseline();
            if single && !black_taken {
                black_taken = true;
                (BLACK, true, Marker::Square)
            } else {
                i += 1;
                (
                    PALETTE[(i - 1) % PALETTE.len()],
                    single,
                    MARKERS[(i - 1) % MARKERS.len()],
                )
            }
        })
        .collect()
}

/// `(position, information abundance)` of `fields` (one table per field), the position being the
/// field's place when they are sorted by cardinality (1 = fewest rows; ties by field order).
fn by_cardinality(fields: &[&FieldSpectrum]) -> Vec<(f64, f64, f64)> {
    let mut fields = fields.to_vec();
    fields.sort_by(|a, b| {
        a.cardinality
            .cmp(&b.cardinality)
            .then(a.index.cmp(&b.index))
    });
    fields
        .iter()
        .enumerate()
        .map(|(pos, f)| ((pos + 1) as f64, f.information_abundance, 0.0))
        .collect()
}

/// Information abundance of every field against the field's position when the run's fields are
/// sorted by cardinality (1 = fewest rows; ties by table order), one line per run. A
/// multi-embedding run's line is its fields' whole embeddings (the M sets side by side, `n x M·d`),
/// so single-embedding runs of width M·d and multi-embedding runs of M sets of d draw paper 004
/// §5(a). Writes `<out_stem>.png` and `.svg`; returns both.
pub fn plot_information_abundance(
    runs: &[RunSpectrum],
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    if runs.is_empty() {
        bail!("nothing to plot: no run given");
    }
    let series = runs
        .iter()
        .zip(styles(runs))
        .map(|(r, (color, dashed, marker))| Series {
            label: r.label(),
            color,
            dashed,
            marker,
            shape: Shape::Line(by_cardinality(&r.fields.iter().collect::<Vec<_>>())),
        })
        .collect();
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "field, sorted by cardinality (1 = fewest rows)".into(),
        y_label: "information abundance  Σσᵢ / σ₁".into(),
        x_axis: XAxis::Linear,
        series,
    };
    render(&spec, out_stem).context("information abundance per field")
}

/// Information abundance of each embedding set's table of every field of the multi-embedding run
/// `run`, against the field's position when sorted by cardinality, one line per set (paper 004
/// §5(b)). Writes `<out_stem>.png` and `.svg`; returns both. An error for a run of one set.
pub fn plot_set_information_abundance(
    run: &RunSpectrum,
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    if run.sets < 2 {
        bail!(
            "{}: information abundance per embedding set needs a multi-embedding run (embedding.sets \
             >= 2), this one has {} set",
            run.dir.display(),
            run.sets
        );
    }
    let series = (0..run.sets)
        .map(|m| Series {
            label: format!("set {m}"),
            color: PALETTE[m % PALETTE.len()],
            dashed: false,
            marker: MARKERS[m % MARKERS.len()],
            shape: Shape::Line(by_cardinality(&run.set_fields(m))),
        })
        .collect();
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "field, sorted by cardinality (1 = fewest rows)".into(),
        y_label: format!("information abundance of the set's n x {} table", run.dim),
        x_axis: XAxis::Linear,
        series,
    };
    render(&spec, out_stem).context("information abundance per embedding set")
}

/// σ_i / σ_1 against i for the table named `field` (a field's whole embedding, or `set{m}.{field}`
/// for one set's table), one line per run that has it (a zero table,
/// which has no σ_1 to divide by, is left out). Writes `<out_stem>.png` and `.svg`.
pub fn plot_singular_values(
    runs: &[RunSpectrum],
    field: &str,
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    let mut series = Vec::new();
    for (r, (color, dashed, marker)) in runs.iter().zip(styles(runs)) {
        let Some(f) = r.fields.iter().chain(&r.per_set).find(|f| f.field == field) else {
            continue;
        };
        let curve = f.normalised();
        if curve.is_empty() {
            continue;
        }
        series.push(Series {
            label: r.label(),
            color,
            dashed,
            marker: if curve.len() <= 32 {
                marker
            } else {
                Marker::None
            },
            shape: Shape::Line(
                curve
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| ((i + 1) as f64, s, 0.0))
                    .collect(),
            ),
        });
    }
    if series.is_empty() {
        bail!("nothing to plot for field {field}: no run has a non-zero table for it");
    }
    let spec = ChartSpec {
        title: title.to_string(),
        x_label: "index i of the singular value".into(),
        y_label: "σᵢ / σ₁".into(),
        x_axis: XAxis::Linear,
        series,
    };
    render(&spec, out_stem).with_context(|| format!("singular values of field {field}"))
}
