//! Figures render to PNG files of the documented pixel size and to non-empty SVG, with the
//! embedded font (no system fonts needed).
use mlet::plots::{
    plan_figures, plot_auc_vs_init_std, plot_metric_vs_d, plot_training_curve, render_all,
    FigureKind, Metric, FIGURE_SIZE,
};
use mlet::results::ResultRow;
use std::path::{Path, PathBuf};

fn row(d: usize, k: Option<usize>, init_std: f64, seed: u64, auc: f64) -> ResultRow {
    ResultRow {
        experiment: "fig5".into(),
        run: format!("r{d}_{k:?}_{init_std}_{seed}"),
        dataset: "synthetic-300000".into(),
        model: "dlrm".into(),
        d,
        k,
        sets: 1,
        init_std,
        seed,
        lr: 0.2,
        optimizer: "sgd".into(),
        test_auc: auc,
        test_logloss: 0.6 - auc / 2.0,
        test_pr_auc: auc - 0.2,
        valid_auc: auc,
        valid_logloss: 0.6 - auc / 2.0,
        train_seconds: 10.0,
        samples_per_s: 1e5,
        training_embedding_params: 1,
        inference_embedding_params: 1,
        test_pr_auc_a: auc / 2.0,
        test_pr_auc_b: auc / 3.0,
        test_pr_auc_deciles: (0..10).map(|i| auc / (3.0 - 0.1 * i as f64)).collect(),
        step_ms_median: f64::NAN,
        step_ms_p90: f64::NAN,
        peak_rss_mb: f64::NAN,
        run_dir: "runs/x".into(),
    }
}

/// A small Fig. 5 + Fig. 4 table: d ∈ {4, 8, 16, 32}, baseline and k ∈ {16, 64}, 3 seeds, and
/// a σ sweep at (d = 16, k = 32).
fn table() -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for seed in 1..=3u64 {
        let noise = (seed as f64 - 2.0) * 0.0007;
        for (i, d) in [4usize, 8, 16, 32].into_iter().enumerate() {
            let base = 0.78 + 0.005 * i as f64;
            rows.push(row(d, None, 0.25, seed, base + noise));
            rows.push(row(d, Some(16), 0.25, seed, base + 0.002 + noise));
            rows.push(row(d, Some(64), 0.25, seed, base + 0.004 + noise));
        }
        for (s, gain) in [(0.01, -0.01), (0.05, -0.003), (0.25, 0.003), (1.0, 0.001)] {
            rows.push(row(16, Some(32), s, seed, 0.79 + gain + noise));
        }
    }
    rows
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is nearly empty", path.display());
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// The trimmed content of every `<text>` element of an SVG.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            body.trim().to_string()
        })
        .collect()
}

/// How many filled `<tag>` elements of colour `fill` an SVG has.
fn markers(svg: &str, tag: &str, fill: &str) -> usize {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .filter(|e| e[..e.find('>').unwrap()].contains(&format!("fill=\"{fill}\"")))
        .count()
}

fn check_pair(paths: &[PathBuf], stem: &Path) {
    assert_eq!(paths.len(), 2, "{paths:?}");
    let png = PathBuf::from(format!("{}.png", stem.display()));
    let svg = PathBuf::from(format!("{}.svg", stem.display()));
    assert_eq!(paths, &[png.clone(), svg.clone()]);
    assert_eq!(png_size(&png), FIGURE_SIZE);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.len() > 1000,
        "{}",
        svg.display()
    );
    assert!(text.contains("<text"), "the SVG should hold text");
}

#[test]
fn metric_vs_d_renders() {
    let dir = tempfile::tempdir().unwrap();
    let rows = table();
    let stem = dir.path().join("fig5_auc");
    let paths = plot_metric_vs_d(&rows, Metric::Auc, &stem, "DLRM on synthetic-300000").unwrap();
    check_pair(&paths, &stem);
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    let texts = svg_texts(&svg);
    let has = |t: &str| texts.iter().any(|x| x == t);
    assert!(has("DLRM on synthetic-300000"), "{texts:?}");
    assert!(has("embedding dimension d (log₂ scale)"), "{texts:?}");
    assert!(has("test AUC (mean ± std, 3 seeds)"), "{texts:?}");
    // one x tick per d run
    let ticks: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| ["2", "4", "8", "16", "32", "64"].contains(t))
        .collect();
    assert_eq!(ticks, ["4", "8", "16", "32"], "{texts:?}");
    // the legend: the baseline, then k ascending
    let legend: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| *t == "baseline" || t.starts_with("k="))
        .collect();
    assert_eq!(legend, ["baseline", "k=16", "k=32", "k=64"], "{texts:?}");
    // a marker per point plus one in the legend: baseline squares and k = 16 circles at the
    // four d, k = 32 (the σ sweep, d = 16 only) triangles at one
    assert_eq!(markers(&svg, "rect", "#000000"), 4 + 1);
    assert_eq!(markers(&svg, "circle", "#1F77B4"), 4 + 1);
    assert_eq!(markers(&svg, "polygon", "#FF7F0E"), 1 + 1);
    let stem = dir.path().join("fig5.logloss");
    let paths = plot_metric_vs_d(&rows, Metric::LogLoss, &stem, "LogLoss").unwrap();
    check_pair(&paths, &stem);
}

#[test]
fn auc_vs_sigma_renders() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("fig4");
    let paths = plot_auc_vs_init_std(&table(), &stem, "DLRM: AUC vs init σ").unwrap();
    check_pair(&paths, &stem);
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(
        svg.contains("baseline d=16"),
        "the baseline line is in the legend"
    );
    assert!(svg.contains("d=16, k=32"));
    // Points with a single σ (the k = 16/64 grid) are left out of the σ figure.
    assert!(!svg.contains("d=4, k=16"));
}

#[test]
fn single_points_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // One d, one seed: still a valid (if dull) figure.
    let one = vec![row(8, None, 0.25, 1, 0.8), row(8, Some(32), 0.25, 1, 0.81)];
    let stem = dir.path().join("one");
    check_pair(
        &plot_metric_vs_d(&one, Metric::Auc, &stem, "one point").unwrap(),
        &stem,
    );
    // Empty input and mixed (model, dataset) are errors, not panics.
    assert!(plot_metric_vs_d(&[], Metric::Auc, &stem, "x").is_err());
    let mut other = row(8, None, 0.25, 1, 0.8);
    other.model = "wdl".into();
    let e = plot_metric_vs_d(&[one[0].clone(), other], Metric::Auc, &stem, "x").unwrap_err();
    assert!(format!("{e:#}").contains("dlrm/synthetic-300000"), "{e:#}");
    // No MLET row with a positive σ.
    assert!(plot_auc_vs_init_std(&one[..1], &stem, "x").is_err());
    // Non-finite metrics are skipped; all non-finite is an error.
    let nan = vec![row(8, None, 0.25, 1, f64::NAN)];
    assert!(plot_metric_vs_d(&nan, Metric::Auc, &stem, "x").is_err());
}

#[test]
fn render_all_plans_per_model_and_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = table();
    // A second data set with a single d: no vs-d figures, no σ figure, and no baseline to
    // measure a gain by decile against.
    let mut avazu = row(16, Some(64), 0.5, 1, 0.77);
    avazu.dataset = "avazu".into();
    rows.push(avazu);
    let plan = plan_figures(&rows, dir.path(), "grid", &FigureKind::ALL);
    assert_eq!(plan.figures.len(), 4);
    // avazu: the four above; both data sets: no multi-embedding run for auc_vs_scale
    assert_eq!(plan.skipped.len(), 6, "{:?}", plan.skipped);
    let written = render_all(&rows, dir.path(), "grid").unwrap();
    assert_eq!(written.len(), 8);
    for kind in [
        "auc_vs_d",
        "logloss_vs_d",
        "auc_vs_sigma",
        "pr_auc_gain_by_decile",
    ] {
        let png = dir
            .path()
            .join(format!("grid_dlrm_synthetic-300000_{kind}.png"));
        assert!(written.contains(&png), "{written:?}");
        assert_eq!(png_size(&png), FIGURE_SIZE);
    }
}

/// Paper 004's Table 1 figure: single embedding at d = 4, 8, 16 (1x, 2x, 4x) against 2 and 4
/// sets of d = 4, 2 seeds. The figure has one line per kind, the multi-embedding line starting at
/// the shared 1x point; the AUC-vs-d figures of the same table draw the one-set runs only.
#[test]
fn auc_vs_scale_renders_single_vs_multi_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for seed in 1..=2u64 {
        for (d, sets, auc) in [
            (4, 1, 0.70),
            (8, 1, 0.71),
            (16, 1, 0.705),
            (4, 2, 0.72),
            (4, 4, 0.73),
        ] {
            let mut r = row(d, None, 0.25, seed, auc + seed as f64 * 0.001);
            r.sets = sets;
            rows.push(r);
        }
    }
    let plan = plan_figures(&rows, dir.path(), "t1", &FigureKind::ALL);
    let kinds: Vec<FigureKind> = plan.figures.iter().map(|f| f.kind).collect();
    assert!(
        kinds.contains(&FigureKind::AucVsScale),
        "{:?}",
        plan.skipped
    );
    let written = render_all(&rows, dir.path(), "t1").unwrap();
    let svg_path = dir.path().join("t1_dlrm_synthetic-300000_auc_vs_scale.svg");
    assert!(written.contains(&svg_path), "{written:?}");
    let png = svg_path.with_extension("png");
    assert_eq!(png_size(&png), FIGURE_SIZE);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let texts = svg_texts(&svg);
    for label in ["single embedding", "multi-embedding"] {
        assert!(texts.iter().any(|t| t == label), "{label}: {texts:?}");
    }
    assert!(
        texts.iter().any(|t| t.starts_with("scale factor")),
        "{texts:?}"
    );
    // SE: 3 points + legend; ME: 1x shared + 2x + 4x + legend
    assert_eq!(markers(&svg, "rect", "#000000"), 3 + 1);
    assert_eq!(markers(&svg, "circle", "#D62728"), 3 + 1);
    // the vs-d figure of the same rows has the three one-set points only
    let vs_d =
        std::fs::read_to_string(dir.path().join("t1_dlrm_synthetic-300000_auc_vs_d.svg")).unwrap();
    assert_eq!(markers(&vs_d, "rect", "#000000"), 3 + 1);
}

#[test]
fn training_curves_render() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Vec::new();
    for (i, name) in ["baseline_d16", "mlet_d16_k64"].iter().enumerate() {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        let mut text = String::from("step,epoch,samples,loss,samples_per_s,elapsed_s\n");
        for step in 1..=50 {
            let loss = 0.7 / (1.0 + step as f64 * 0.05) + 0.01 * i as f64;
            text.push_str(&format!("{step},0,{},{loss},1000,{}\n", step * 4096, step));
        }
        let log = run.join("train_log.csv");
        std::fs::write(&log, text).unwrap();
        logs.push((log, name.to_string()));
    }
    let stem = dir.path().join("curves");
    let paths = plot_training_curve(&logs, &stem, "DLRM on synthetic-300000").unwrap();
    check_pair(&paths, &stem);

    // A malformed log names the file, line and column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "step,samples,loss\n1,100,0.5\n2,two hundred,0.4\n").unwrap();
    let e = plot_training_curve(&[(bad, "bad".into())], &stem, "x").unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("bad.csv:3:3") && msg.contains("column `samples`"),
        "{msg}"
    );
}

#[test]
fn cli_plot_writes_figures_and_curves() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: mlet::cli::plot::PlotArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("fig5.csv");
    mlet::results::write_results_csv(&results, &table()).unwrap();
    let run = dir.path().join("run1");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("train_log.csv"),
        "step,epoch,samples,loss,samples_per_s,elapsed_s\n1,0,100,0.7,10,1\n2,0,200,0.6,10,2\n",
    )
    .unwrap();
    let out = dir.path().join("plots");
    let cli = Cli::try_parse_from([
        "plot",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--kind",
        "auc-vs-d",
        "--curves",
        run.to_str().unwrap(),
    ])
    .unwrap();
    mlet::cli::plot::run(cli.args, true).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fig5_dlrm_synthetic-300000_auc_vs_d.png",
            "fig5_dlrm_synthetic-300000_auc_vs_d.svg",
            "fig5_training_loss.png",
            "fig5_training_loss.svg",
        ]
    );
    // Neither a table nor curves: a usage error from clap.
    assert!(Cli::try_parse_from(["plot"]).is_err());
}

/// A run's spectrum with made-up information abundances: `sets` sets of d = 4, fields C1..C5 of
/// cardinalities 50, 10, 400, 10, 7 (so sorted by cardinality: C5, C2, C4, C1, C3).
fn spectrum(run: &str, sets: usize, dim: usize) -> mlet::analysis::spectrum::RunSpectrum {
    use mlet::analysis::spectrum::{FieldSpectrum, RunSpectrum};
    let cards = [50usize, 10, 400, 10, 7];
    let table = |name: String, f: usize, set: Option<usize>, width: usize, ia: f64| {
        // singular values summing to ia (σ₁ = 1)
        let mut sv = vec![1.0];
        let rest = (ia - 1.0) / (width - 1) as f64;
        sv.extend(std::iter::repeat_n(rest, width - 1));
        FieldSpectrum::from_values(&name, f, set, (cards[f], width), sv)
    };
    let fields = (0..cards.len())
        .map(|f| table(format!("C{}", f + 1), f, None, sets * dim, 1.5 + f as f64))
        .collect();
    let per_set = if sets > 1 {
        (0..sets)
            .flat_map(|m| {
                (0..cards.len()).map(move |f| {
                    table(
                        format!("set{m}.C{}", f + 1),
                        f,
                        Some(m),
                        dim,
                        1.2 + 0.3 * m as f64 + 0.1 * f as f64,
                    )
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    RunSpectrum {
        run: run.into(),
        dir: PathBuf::from(format!("runs/x/{run}")),
        model: "dcnv2".into(),
        embedding: "single".into(),
        k: None,
        dim,
        sets,
        rank_threshold: 0.01,
        fields,
        per_set,
    }
}

#[test]
fn spectrum_single_vs_multi_embedding_renders() {
    use mlet::plots::spectrum::{plot_information_abundance, plot_set_information_abundance};
    let dir = tempfile::tempdir().unwrap();
    let se = spectrum("se-d12", 1, 12);
    let me = spectrum("me-3x4", 3, 4);

    // paper 004 §5(a): one line per run, the ME run's whole-field abundance
    let stem = dir.path().join("ia");
    let paths = plot_information_abundance(&[se.clone(), me.clone()], &stem, "SE vs ME").unwrap();
    check_pair(&paths, &stem);
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    let texts = svg_texts(&svg);
    let has = |t: &str| texts.iter().any(|x| x == t);
    assert!(has("SE vs ME"), "{texts:?}");
    assert!(has("se-d12 (single, d=12)"), "{texts:?}");
    assert!(has("me-3x4 (ME 3x4)"), "{texts:?}");
    assert!(
        has("field, sorted by cardinality (1 = fewest rows)"),
        "{texts:?}"
    );
    // the plain run is the black-square baseline (5 fields + legend), the ME run blue circles
    assert_eq!(markers(&svg, "rect", "#000000"), 5 + 1);
    assert_eq!(markers(&svg, "circle", "#1F77B4"), 5 + 1);

    // paper 004 §5(b): one line per set, in set order
    let stem = dir.path().join("ia_sets");
    let paths = plot_set_information_abundance(&me, &stem, "sets of me-3x4").unwrap();
    check_pair(&paths, &stem);
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    let texts = svg_texts(&svg);
    let legend: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("set "))
        .collect();
    assert_eq!(legend, ["set 0", "set 1", "set 2"], "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("n x 4 table")), "{texts:?}");
    assert_eq!(markers(&svg, "circle", "#1F77B4"), 5 + 1);
    assert_eq!(markers(&svg, "polygon", "#FF7F0E"), 5 + 1);
    // a single-embedding run has no sets to draw
    let err = plot_set_information_abundance(&se, &stem, "x").unwrap_err();
    assert!(format!("{err:#}").contains("multi-embedding"), "{err:#}");
    // the ME run alone also draws the per-field figure
    check_pair(
        &plot_information_abundance(&[me], &dir.path().join("ia_me"), "ME").unwrap(),
        &dir.path().join("ia_me"),
    );
}

#[test]
fn set_fields_sorted_by_cardinality() {
    let me = spectrum("me", 2, 4);
    let set1 = me.set_fields(1);
    assert_eq!(set1.len(), 5);
    assert!(set1.iter().all(|f| f.set == Some(1) && f.dim == 4));
    assert!(me.set_fields(2).is_empty());
    // one set: set 0 is the whole fields
    let se = spectrum("se", 1, 8);
    assert_eq!(se.set_fields(0).len(), 5);
    assert!(se.set_fields(1).is_empty());
    let ia = me.find_field("set1.C3").unwrap().information_abundance;
    assert!((ia - 1.7).abs() < 1e-12, "{ia}");
    assert_eq!(me.find_field("C3").unwrap().dim, 8);
    let err = se.find_field("set1.C3").unwrap_err().to_string();
    assert!(err.contains("set1.C3"), "{err}");
}
