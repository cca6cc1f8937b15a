//! Figures of table spectra (`mlet analyze spectrum`): information abundance per field (paper 004
//! Fig. 2) and normalised singular value curves, one line per run.
use anyhow::{bail, Context, Result};
use plotters::style::BLACK;
use std::path::{Path, PathBuf};

use super::chart::{render, ChartSpec, Marker, Series, Shape, XAxis, MARKERS, PALETTE};
use crate::analysis::spectrum::RunSpectrum;

/// The first single-layer run is drawn as the other figures draw the baseline (black, squares);
/// every other run takes the palette in order; single-layer runs are dashed.
fn styles(runs: &[RunSpectrum]) -> Vec<(plotters::style::RGBColor, bool, Marker)> {
    let mut i = 0;
    let mut black_taken = false;
    runs.iter()
        .map(|r| {
            let single = r.k.is_none();
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

/// Information abundance of every field against the field's position when the run's fields are
/// sorted by cardinality (1 = fewest rows; ties by table order), one line per run. Writes
/// `<out_stem>.png` and `.svg`; returns both.
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
        .map(|(r, (color, dashed, marker))| {
            let mut fields: Vec<_> = r.fields.iter().collect();
            fields.sort_by(|a, b| {
                a.cardinality
                    .cmp(&b.cardinality)
                    .then(a.index.cmp(&b.index))
            });
            Series {
                label: r.label(),
                color,
                dashed,
                marker,
                shape: Shape::Line(
                    fields
                        .iter()
                        .enumerate()
                        .map(|(pos, f)| ((pos + 1) as f64, f.information_abundance, 0.0))
                        .collect(),
                ),
            }
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

/// σ_i / σ_1 against i for the field named `field`, one line per run that has it (a zero table,
/// which has no σ_1 to divide by, is left out). Writes `<out_stem>.png` and `.svg`.
pub fn plot_singular_values(
    runs: &[RunSpectrum],
    field: &str,
    out_stem: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    let mut series = Vec::new();
    for (r, (color, dashed, marker)) in runs.iter().zip(styles(runs)) {
        let Some(f) = r.fields.iter().find(|f| f.field == field) else {
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
