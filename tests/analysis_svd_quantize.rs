//! Low-rank SVD truncation, 8-bit quantisation and Table 5 on tiny trained runs, checked against
//! their definitions: rank ≥ d changes nothing, truncated tables have the rank asked for, the
//! quantiser's scale, grid and range on hand-made vectors; the CLI's outputs and its errors.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

use mlet::analysis::linalg::{singular_values, truncate_in_place};
use mlet::analysis::quantize::{
    choose_scale, dequantize, quantize, quantize_analysis, QuantizedTables,
};
use mlet::analysis::svd::{parse_ranks, svd_analysis};
use mlet::analysis::AnalysisRun;
use mlet::config::parse_runs;
use mlet::experiments::{read_metrics, run_all, Outcome};
use mlet::results::read_results_csv;
use mlet::training::RunOptions;

/// One single-layer DLRM at d = 8 on 4000 synthetic rows.
fn train(dir: &Path) -> PathBuf {
    let text = format!(
        "
name: sq
data:
  synthetic: {{rows: 4000, seed: 5}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 8}}
training: {{batch_size: 64, seed: 3}}
output: {out}
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    );
    let specs = parse_runs(&text).unwrap();
    match run_all(&specs, false, &RunOptions { quiet: true })
        .unwrap()
        .remove(0)
    {
        Outcome::Trained(d, _) | Outcome::Skipped(d, _) => d,
    }
}

fn mlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(args)
        .output()
        .unwrap()
}

fn assert_fails(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(stderr.contains(mentions), "`{mentions}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn sq_norm(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double)
        .square()
        .sum(Kind::Double)
        .double_value(&[])
}

#[test]
fn svd_and_quantisation_of_a_trained_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train(tmp.path());
    let mut run = AnalysisRun::open(&run_dir, Device::Cpu).unwrap();
    let cards: Vec<i64> = run.run.model.embeddings.cardinalities().to_vec();
    let d = 8i64;
    let full_params: i64 = cards.iter().map(|n| n * d).sum();

    let report = svd_analysis(&mut run, &[1, 2, 8, 16]).unwrap();
    let full = &report.rows[0];
    assert_eq!(full.rank, None);
    // the untruncated row is the run's own test evaluation
    let trained = read_metrics(&run_dir).unwrap().test.unwrap();
    assert!((full.test.auc - trained.auc).abs() < 1e-9);
    assert!((full.test.logloss - trained.logloss).abs() < 1e-6);
    // rank ≥ d: exactly the untruncated metrics, no error, no saving
    for r in [8, 16] {
        let row = report.row(r).unwrap();
        assert_eq!(row.test, full.test, "rank {r}");
        assert_eq!(row.max_rel_error, 0.0);
        assert_eq!(row.params, full_params);
        assert_eq!(row.full_params, full_params);
    }
    // rank 2: the factored count, and errors that are the tables' own ‖A − A_r‖ / ‖A‖
    let two = report.row(2).unwrap();
    let expected: i64 = cards
        .iter()
        .map(|&n| if 2 < n.min(d) { n * 2 + 2 * d } else { n * d })
        .sum();
    assert_eq!(two.params, expected);
    assert!(two.params < full_params);
    for (f, (_, table)) in run.field_tables().iter().enumerate() {
        let low = table.copy();
        let err = truncate_in_place(&low, 2);
        assert!((err - two.field_rel_errors[f]).abs() < 1e-12);
        let measured = (sq_norm(&(table - &low)) / sq_norm(table)).sqrt();
        assert!(
            (measured - err).abs() < 1e-4,
            "field {f}: {measured} vs {err}"
        );
        // the truncated table has rank 2: singular values beyond the second vanish
        let s = singular_values(&low);
        if cards[f] > 2 {
            assert!(s[2] <= 1e-4 * s[0], "field {f}: {s:?}");
            assert!(err > 0.0);
        } else {
            assert_eq!(err, 0.0);
        }
    }
    let mean = two.field_rel_errors.iter().sum::<f64>() / cards.len() as f64;
    assert!((two.mean_rel_error - mean).abs() < 1e-12);
    assert!(report.row(1).unwrap().max_rel_error >= two.max_rel_error);
    assert_ne!(report.row(1).unwrap().test, full.test);
    // the analysis worked on copies: the run's tables are untouched
    assert_eq!(run.evaluate_test().unwrap(), full.test);

    // quantisation: the int8 model is the model with s·q tables, 4x fewer bytes
    let q = quantize_analysis(&mut run).unwrap();
    assert_eq!(q.fp32.test, full.test);
    assert_eq!(q.fp32.embedding_bytes, full_params * 4);
    assert_eq!(q.int8.embedding_bytes, full_params + 4 * cards.len() as i64);
    let emb = &run.run.model.embeddings;
    let tables = QuantizedTables::of(emb).unwrap();
    let deq = tables.dequantized(emb);
    let by_hand = run.with_table(deq, |r| r.evaluate_test()).unwrap();
    assert_eq!(by_hand, q.int8.test);
    for (f, field) in q.fields.iter().enumerate() {
        assert!(field.rel_l2_error < 0.02, "{field:?}");
        assert_eq!(field.scale, tables.choices[f].scale);
    }
    assert!((q.int8.test.auc - q.fp32.test.auc).abs() < 0.01);

    // the CLI writes the same analyses and prints where
    let dir = run_dir.to_str().unwrap();
    let out = mlet(&["analyze", "svd", dir, "--ranks", "8,2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let csv = run_dir.join("analysis/svd.csv");
    assert!(stdout.contains(&*csv.to_string_lossy()), "{stdout}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("rank,test_auc,test_logloss,test_pr_auc,"));
    assert!(lines[1].starts_with("full,") && lines[2].starts_with("2,"));
    assert!(lines[2].ends_with(&format!(",{expected},{full_params}")));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("analysis/svd.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"][2]["rank"], 8);
    assert_eq!(json["rows"][2]["test"]["auc"], full.test.auc);

    let out = mlet(&["-q", "analyze", "quantize", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("LogLoss"), "-q prints no table: {stdout}");
    assert!(stdout.contains("quantize.json"), "{stdout}");
    let per_field = std::fs::read_to_string(run_dir.join("analysis/quantize.csv")).unwrap();
    assert_eq!(per_field.lines().count(), 1 + cards.len());
    let metrics = std::fs::read_to_string(run_dir.join("analysis/quantize_metrics.csv")).unwrap();
    assert!(
        metrics.contains(&format!("int8,{},", q.int8.test.auc)),
        "{metrics}"
    );

    // errors: bad ranks, missing or unfinished run directories
    for bad in ["0", "", "4,x", "4,,8", "-2"] {
        let flag = format!("--ranks={bad}");
        assert_fails(&mlet(&["analyze", "svd", dir, &flag]), "--ranks");
    }
    let missing = tmp.path().join("no-such-run");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for bad in [&missing, &empty] {
        let b = bad.to_str().unwrap();
        assert_fails(&mlet(&["analyze", "svd", b]), b);
        assert_fails(&mlet(&["analyze", "quantize", b]), b);
    }
}

#[test]
fn rank_lists() {
    assert_eq!(parse_ranks("16, 4,8,4").unwrap(), vec![4, 8, 16]);
    for bad in ["0", "", "a", "4,", "1.5"] {
        let e = format!("{:#}", parse_ranks(bad).unwrap_err());
        assert!(e.contains("--ranks"), "{e}");
    }
}

fn l2(x: &Tensor, scale: f32) -> f64 {
    sq_norm(&(x - dequantize(&quantize(x, scale), scale)))
}

#[test]
fn quantiser_on_hand_made_vectors() {
    // values already on the grid of s = 1/16 (powers of two: every step exact), ±127 included
    let codes: Vec<f32> = (-127..=127).map(|q| q as f32).collect();
    let x = Tensor::from_slice(&codes) * 0.0625;
    let c = choose_scale(&x);
    assert_eq!(c.scale, 0.0625);
    assert_eq!(c.alpha, 1.0);
    assert_eq!(c.sq_error, 0.0);
    assert!(dequantize(&quantize(&x, c.scale), c.scale).equal(&x));
    assert_eq!(
        Vec::<i8>::try_from(&quantize(&x, c.scale)).unwrap(),
        (-127..=127).map(|q| q as i8).collect::<Vec<_>>()
    );

    // an outlier at 4 over 50000 values in [-1, 1]: max|x|/127 wastes 3/4 of the grid on it;
    // clipping it costs less than the bulk gains (numpy's brute force over 1000 α: 0.73x, α 0.81)
    let mut v: Vec<f32> = (0..50000).map(|i| ((i as f32) * 0.7123).sin()).collect();
    v.push(4.0);
    let x = Tensor::from_slice(&v);
    let c = choose_scale(&x);
    let naive = l2(&x, 4.0 / 127.0);
    assert!(c.alpha < 0.9, "{c:?}");
    assert!(c.sq_error < 0.8 * naive, "{} vs {naive}", c.sq_error);
    // the reported error is the error of quantising with the reported scale
    let actual = l2(&x, c.scale);
    assert!(
        (c.sq_error - actual).abs() <= 1e-6 * actual.max(1.0),
        "{c:?} vs {actual}"
    );
    // and no candidate of a finer, independent grid is much better
    let best_fine = (1..=500)
        .map(|j| l2(&x, (j as f64 / 500.0 * 4.0 / 127.0) as f32))
        .fold(f64::INFINITY, f64::min);
    assert!(
        c.sq_error <= best_fine * 1.01,
        "{} vs {best_fine}",
        c.sq_error
    );

    // symmetric range: -128 is never used, negation commutes, halves round the same both ways
    let x = Tensor::from_slice(&[-1000.0f32, -128.4, -2.5, -0.5, 0.0, 0.5, 2.5, 128.4, 1000.0]);
    let q = Vec::<i8>::try_from(&quantize(&x, 1.0)).unwrap();
    assert_eq!(q, vec![-127, -127, -2, 0, 0, 0, 2, 127, 127]);
    assert!(quantize(&(-&x), 1.0).equal(&(-quantize(&x, 1.0))));
    let c = choose_scale(&x);
    let q = quantize(&x, c.scale);
    assert!(q.min().int64_value(&[]) >= -127 && q.max().int64_value(&[]) <= 127);

    // a zero table has nothing to quantise
    let c = choose_scale(&Tensor::zeros([5, 3], (Kind::Float, Device::Cpu)));
    assert_eq!((c.sq_error, c.rel_error()), (0.0, 0.0));
    assert!(c.scale > 0.0);
}

#[test]
fn table5_over_a_reduced_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("t5.yaml");
    std::fs::write(
        &exp,
        format!(
            "
name: t5
data:
  synthetic: {{rows: 3000, seed: 9}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 8, init_std: 0.25}}
training: {{batch_size: 64}}
output: {out}
report: {{figures: false}}
grid:
  d: [4, 8]
  k: [baseline, 16]
  seed: [1, 2]
",
            cache = tmp.path().join("cache").display(),
            out = tmp.path().join("runs").display()
        ),
    )
    .unwrap();
    let out = mlet(&["-q", "grid", exp.to_str().unwrap(), "--max-steps", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grid = tmp.path().join("runs/t5");
    let g = grid.to_str().unwrap();
    let out = mlet(&["analyze", "table5", g, "--ranks", "2,4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("table5_svd.csv") && stdout.contains("table5_svd.png"));
    assert!(grid.join("table5_svd.png").is_file());
    assert_eq!(stdout.matches("analysed ").count(), 4, "{stdout}");

    let results = read_results_csv(&grid.join("results.csv")).unwrap();
    let text = std::fs::read_to_string(grid.join("table5_svd.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // single d 4: ranks 2 and 4; single d 8: ranks 2 and 4
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(keys, vec![("4", "2"), ("4", "4"), ("8", "2"), ("8", "4")]);
    let mean_of = |f: &dyn Fn(&&mlet::results::ResultRow) -> bool| {
        let v: Vec<f64> = results.iter().filter(f).map(|r| r.test_auc).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    // rank = d is the untruncated baseline: its mean is the grid's
    let base4 = mean_of(&|r| r.k.is_none() && r.d == 4);
    assert!((rows[1][2].parse::<f64>().unwrap() - base4).abs() < 1e-9);
    // MLET at d = r = 4 from the grid; none at d = 2
    let mlet4 = mean_of(&|r| r.k == Some(16) && r.d == 4);
    assert_eq!(rows[1][5], "16");
    assert!((rows[1][6].parse::<f64>().unwrap() - mlet4).abs() < 1e-9);
    assert_eq!((rows[0][5], rows[0][8]), ("", "0"));
    // the truncated mean is the mean of the runs' own svd.json
    let svd2: Vec<f64> = results
        .iter()
        .filter(|r| r.k.is_none() && r.d == 8)
        .map(|r| {
            let j: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(grid.join(&r.run).join("analysis/svd.json")).unwrap(),
            )
            .unwrap();
            let row = j["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["rank"] == 2)
                .unwrap();
            row["test"]["auc"].as_f64().unwrap()
        })
        .collect();
    let m = svd2.iter().sum::<f64>() / svd2.len() as f64;
    assert!((rows[2][2].parse::<f64>().unwrap() - m).abs() < 1e-12);

    // a second call reuses the analyses
    let out = mlet(&["analyze", "table5", g, "--ranks", "2,4"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("analysed"));
    // errors
    assert_fails(&mlet(&["analyze", "table5", g, "--ranks", "0"]), "--ranks");
    let missing = tmp.path().join("nope");
    assert_fails(
        &mlet(&["analyze", "table5", missing.to_str().unwrap()]),
        missing.to_str().unwrap(),
    );
    assert_fails(
        &mlet(&["analyze", "table5", tmp.path().to_str().unwrap()]),
        "results.csv",
    );
}

/// Fig. 8 over a tiny grid of plain and hashed runs: every variant for the baseline and for
/// MLET, int8 AUCs equal to the runs' own quantisation analyses, hashed tables smaller, and the
/// analyses reused on a second call.
#[test]
fn fig8_over_a_reduced_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("f8.yaml");
    std::fs::write(
        &exp,
        format!(
            "
name: f8
data:
  synthetic: {{rows: 3000, seed: 9}}
  cache: {cache}
model: {{kind: dcn, dnn_hidden_units: [16]}}
embedding: {{dim: 8, init_std: 0.1}}
optimizer: {{kind: adagrad, lr: 0.02}}
training: {{batch_size: 64}}
output: {out}
report: {{figures: false}}
runs:
  - name: full
  - name: hashed
    embedding: {{hash: {{largest: 2, fraction: 0.5}}}}
grid:
  k: [baseline, 16]
",
            cache = tmp.path().join("cache").display(),
            out = tmp.path().join("runs").display()
        ),
    )
    .unwrap();
    let out = mlet(&["-q", "grid", exp.to_str().unwrap(), "--max-steps", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grid = tmp.path().join("runs/f8");
    let g = grid.to_str().unwrap();
    let out = mlet(&["analyze", "fig8", g]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("analysed ").count(), 4, "{stdout}");
    assert!(grid.join("fig8_compression.png").is_file());

    let text = std::fs::read_to_string(grid.join("fig8_compression.csv")).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let find = |k: &str, variant: &str| {
        rows.iter()
            .find(|r| r[0] == k && r[2] == variant)
            .unwrap_or_else(|| panic!("no {k} {variant} in {text}"))
    };
    for k in ["baseline", "16"] {
        let run = if k == "baseline" { "baseline" } else { "k16" };
        for (variant, dir) in [
            ("int8", format!("full-{run}")),
            ("hash+int8", format!("hashed-{run}")),
        ] {
            let q: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(grid.join(&dir).join("analysis/quantize.json")).unwrap(),
            )
            .unwrap();
            let auc: f64 = find(k, variant)[3].parse().unwrap();
            assert!((auc - q["int8"]["test"]["auc"].as_f64().unwrap()).abs() < 1e-12);
        }
        let bytes = |v: &str| find(k, v)[6].parse::<i64>().unwrap();
        // int8 is a quarter of f32 plus one f32 scale per field (26); hashing shrinks both
        assert_eq!(bytes("int8"), bytes("fp32") / 4 + 4 * 26, "{text}");
        assert!(
            bytes("hash") < bytes("fp32") && bytes("hash+int8") < bytes("int8"),
            "{text}"
        );
    }
    // a second call computes nothing again
    let out = mlet(&["analyze", "fig8", g, "-q"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("analysed ")
            .count(),
        0
    );
    // not a grid directory
    assert_fails(
        &mlet(&["analyze", "fig8", "/nonexistent/grid"]),
        "/nonexistent/grid",
    );
}

/// The scale: a 10⁷ x 64 table (2.56 GB) truncated to rank 8 through the Gram matrix,
/// with the process's peak memory growing by far less than a second table. Slow and large, so
/// not in the default run: `cargo test --release --test analysis_svd_quantize -- --ignored`.
#[test]
#[ignore]
fn svd_of_a_ten_million_row_table_in_bounded_memory() {
    let (n, d) = (10_000_000i64, 64i64);
    let table = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let table_bytes = (n * d * 4) as u64;
    let before = mlet::training::peak_rss_bytes().unwrap();
    let started = std::time::Instant::now();
    let err = truncate_in_place(&table, 8);
    let seconds = started.elapsed().as_secs_f64();
    let grown = mlet::training::peak_rss_bytes()
        .unwrap()
        .saturating_sub(before);
    eprintln!(
        "10^7 x 64 to rank 8: {seconds:.1} s, relative error {err:.4}, peak memory +{} MiB \
         (table {} MiB)",
        grown >> 20,
        table_bytes >> 20
    );
    // a Gaussian table's spectrum is flat: rank 8 of 64 keeps about 1/8 of the energy
    assert!((err - (56.0f64 / 64.0).sqrt()).abs() < 0.01, "{err}");
    assert!(grown < table_bytes / 4, "peak memory grew by {grown} bytes");
    let kept = singular_values(&table);
    assert!(kept[8] < 1e-3 * kept[0], "{:?}", &kept[..10]);
}
