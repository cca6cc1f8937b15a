//! The results table: CSV round trip, error messages, and the summaries (mean ± std over seeds,
//! best init σ, Table 3's memory reduction) on hand-made tables.
use mlet::results::{
    best_init_std, max_memory_reduction, memory_reduction, parse_results_csv, read_results_csv,
    summarize, write_memory_reduction_csv, write_results_csv, write_summary_csv, ResultRow,
};
use std::path::Path;

fn row(model: &str, d: usize, k: Option<usize>, init_std: f64, seed: u64, auc: f64) -> ResultRow {
    ResultRow {
        experiment: "fig5".into(),
        run: format!(
            "d{d}_k{}_s{seed}",
            k.map_or("base".into(), |k| k.to_string())
        ),
        dataset: "synthetic-300000".into(),
        model: model.into(),
        d,
        k,
        sets: 1,
        init_std,
        seed,
        lr: 0.2,
        optimizer: "sgd".into(),
        test_auc: auc,
        test_logloss: 1.0 - auc,
        test_pr_auc: auc / 2.0,
        valid_auc: auc,
        valid_logloss: 1.0 - auc,
        train_seconds: 12.5,
        samples_per_s: 1.0e5,
        training_embedding_params: 1000 * k.unwrap_or(d) as i64,
        inference_embedding_params: 1000 * d as i64,
        test_pr_auc_a: auc / 2.0 - 0.01,
        test_pr_auc_b: auc / 2.0 - 0.02,
        test_pr_auc_deciles: (0..10).map(|i| auc / 2.0 - 0.002 * i as f64).collect(),
        step_ms_median: 3.0 + k.unwrap_or(0) as f64 / 100.0,
        step_ms_p90: 4.0 + k.unwrap_or(0) as f64 / 100.0,
        peak_rss_mb: 100.0 + d as f64,
        run_dir: format!("runs/fig5/d{d}"),
    }
}

#[test]
fn csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/results.csv");
    let mut odd = row("dlrm", 16, Some(64), 0.25, 3, 0.8012345678901234);
    odd.run = "name, with \"quotes\"\nand a line break".into();
    odd.valid_auc = f64::NAN;
    odd.samples_per_s = f64::INFINITY;
    odd.lr = 1e-7;
    let rows = vec![row("dlrm", 4, None, 0.25, 1, 0.79), odd];
    write_results_csv(&path, &rows).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("experiment,run,dataset,model,d,k,init_std,seed,"));
    assert!(text.contains(",baseline,"), "{text}");
    let back = read_results_csv(&path).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0], rows[0]);
    // NaN != NaN, so compare the odd row field by field around it.
    assert!(back[1].valid_auc.is_nan());
    let mut b1 = back[1].clone();
    b1.valid_auc = 0.0;
    let mut r1 = rows[1].clone();
    r1.valid_auc = 0.0;
    assert_eq!(b1, r1);
    // No temporary sibling is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["results.csv".to_string()]);
}

#[test]
fn columns_in_any_order_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    write_results_csv(&path, &[row("dlrm", 8, Some(16), 0.5, 2, 0.8)]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // Swap the first two columns and use CRLF line ends.
    let swapped: String = text
        .lines()
        .map(|l| {
            let (a, rest) = l.split_once(',').unwrap();
            let (b, rest) = rest.split_once(',').unwrap();
            format!("{b},{a},{rest}\r\n")
        })
        .collect();
    let back = parse_results_csv(&swapped, Path::new("r.csv")).unwrap();
    assert_eq!(back, vec![row("dlrm", 8, Some(16), 0.5, 2, 0.8)]);
}

/// The header of a table written before the frequency and runtime columns existed: it must
/// still read (those columns come back as NaN).
fn header() -> String {
    mlet::results::RESULT_COLUMNS.join(",") + ",run_dir"
}

fn good_line() -> String {
    "fig5,r1,criteo,dlrm,8,32,0.25,1,0.2,sgd,0.8,0.45,0.6,0.8,0.45,10,1000,100,50,runs/r1".into()
}

fn parse_err(text: &str) -> String {
    format!(
        "{:#}",
        parse_results_csv(text, Path::new("bad.csv")).unwrap_err()
    )
}

#[test]
fn malformed_tables_name_line_and_column() {
    // A good table parses.
    let ok = format!("{}\n{}\n", header(), good_line());
    let rows = parse_results_csv(&ok, Path::new("ok.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].test_pr_auc_a.is_nan() && rows[0].step_ms_median.is_nan());
    assert!(rows[0].test_pr_auc_deciles.iter().all(|v| v.is_nan()));

    // A non-numeric d on line 3: the error names the file, line 3, the character column where
    // the field starts, and the column name.
    let bad_d = good_line().replace(",dlrm,8,", ",dlrm,eight,");
    let e = parse_err(&format!("{}\n{}\n{}\n", header(), good_line(), bad_d));
    let col = bad_d.find("eight").unwrap() + 1;
    assert!(e.contains(&format!("bad.csv:3:{col}")), "{e}");
    assert!(e.contains("column `d`") && e.contains("eight"), "{e}");

    // k must be `baseline` or a positive integer.
    let e = parse_err(&format!(
        "{}\n{}\n",
        header(),
        good_line().replace(",8,32,", ",8,base,")
    ));
    assert!(e.contains("bad.csv:2:") && e.contains("column `k`"), "{e}");
    assert!(e.contains("`baseline` or a positive integer"), "{e}");

    // A bad float.
    let e = parse_err(&format!(
        "{}\n{}\n",
        header(),
        good_line().replace(",0.8,0.45,0.6,", ",0.8x,0.45,0.6,")
    ));
    assert!(e.contains("column `test_auc`") && e.contains("0.8x"), "{e}");

    // Too few fields.
    let e = parse_err(&format!("{}\n{}\n", header(), "fig5,r1,criteo"));
    assert!(
        e.contains("bad.csv:2:") && e.contains("expected 20 fields"),
        "{e}"
    );

    // Unknown and missing columns are named.
    let e = parse_err(&format!("{},extra\n", header()));
    assert!(
        e.contains("unknown column `extra`") && e.contains("bad.csv:1:"),
        "{e}"
    );
    let e = parse_err(&format!("{}\n", header().replace(",valid_auc", "")));
    assert!(e.contains("`valid_auc`") && e.contains("lacks"), "{e}");

    // An empty file has no header.
    let e = parse_err("");
    assert!(e.contains("bad.csv:1:1") && e.contains("header"), "{e}");

    // An unterminated quote names where it opened.
    let e = parse_err(&format!("{}\nfig5,\"r1,criteo\n", header()));
    assert!(
        e.contains("bad.csv:2:6") && e.contains("unterminated"),
        "{e}"
    );

    // A missing file is an error, not a panic.
    assert!(read_results_csv(Path::new("/nonexistent/results.csv")).is_err());
}

#[test]
fn summarize_mean_and_sample_std() {
    let rows = vec![
        row("dlrm", 8, Some(32), 0.25, 1, 0.78),
        row("dlrm", 8, Some(32), 0.25, 2, 0.80),
        row("dlrm", 8, Some(32), 0.25, 3, 0.82),
        row("dlrm", 8, None, 0.25, 1, 0.75),
        row("dlrm", 4, None, 0.25, 1, 0.70),
    ];
    let s = summarize(&rows);
    assert_eq!(s.len(), 3);
    // Sorted by d, then k with the baseline first.
    assert_eq!((s[0].d, s[0].k), (4, None));
    assert_eq!((s[1].d, s[1].k), (8, None));
    assert_eq!((s[2].d, s[2].k), (8, Some(32)));
    assert_eq!(s[0].count, 1);
    assert_eq!(s[0].auc_std, 0.0);
    let m = &s[2];
    assert_eq!(m.count, 3);
    assert!((m.auc_mean - 0.80).abs() < 1e-12);
    assert!((m.auc_std - 0.02).abs() < 1e-12, "{}", m.auc_std);
    assert!((m.logloss_mean - 0.20).abs() < 1e-12);
    assert!((m.logloss_std - 0.02).abs() < 1e-12);
    assert!((m.pr_auc_mean - 0.40).abs() < 1e-12);
    assert!((m.pr_auc_std - 0.01).abs() < 1e-12);

    // Different σ, lr or optimizer are different groups.
    let mut other = row("dlrm", 8, Some(32), 0.5, 1, 0.81);
    other.lr = 0.1;
    let s = summarize(&[rows.clone(), vec![other.clone()]].concat());
    assert_eq!(s.len(), 4);
    // … and so are different numbers of embedding sets (multi-embedding)
    let mut sets = rows[0].clone();
    sets.sets = 4;
    let with_sets = summarize(&[rows.clone(), vec![sets]].concat());
    assert_eq!(with_sets.len(), 4);
    assert!(with_sets.iter().any(|r| r.sets == 4 && r.count == 1));

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("summary.csv");
    write_summary_csv(&p, &s).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("model,dataset,d,k,sets,init_std,lr,optimizer,count,auc_mean,auc_std"));
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn memory_reduction_table3() {
    let mut rows = Vec::new();
    for seed in 1..=2 {
        // Baseline: d = 8, 16, 32.
        rows.push(row("dlrm", 8, None, 0.25, seed, 0.790));
        rows.push(row("dlrm", 16, None, 0.25, seed, 0.795));
        rows.push(row("dlrm", 32, None, 0.25, seed, 0.800));
        // MLET k = 64 reaches 0.801 at d = 8; k = 128 at d = 4 only 0.7995.
        rows.push(row("dlrm", 4, Some(128), 0.25, seed, 0.7995));
        rows.push(row("dlrm", 8, Some(64), 0.25, seed, 0.801));
        rows.push(row("dlrm", 8, Some(128), 0.25, seed, 0.802));
        rows.push(row("dlrm", 16, Some(64), 0.25, seed, 0.803));
        // A second model where MLET never reaches the baseline.
        rows.push(row("wdl", 16, None, 0.5, seed, 0.80));
        rows.push(row("wdl", 16, Some(64), 0.5, seed, 0.79));
        rows.push(row("wdl", 32, Some(64), 0.5, seed, 0.799));
    }
    let m = memory_reduction(&rows);
    assert_eq!(m.len(), 4);
    let at = |model: &str, d: usize| {
        m.iter()
            .find(|r| r.model == model && r.baseline_d == d)
            .unwrap()
            .clone()
    };
    // Baseline d = 32 (0.800) is matched by MLET d = 8 (k = 64, 0.801): 4x.
    let r = at("dlrm", 32);
    assert!((r.baseline_auc - 0.8).abs() < 1e-12);
    assert_eq!((r.mlet_d, r.mlet_k), (Some(8), Some(64)));
    assert_eq!(r.ratio, Some(4.0));
    assert!((r.mlet_auc.unwrap() - 0.801).abs() < 1e-12);
    // Baseline d = 16 (0.795): MLET d = 4 (0.7995) suffices: 4x.
    assert_eq!(at("dlrm", 16).mlet_d, Some(4));
    assert_eq!(at("dlrm", 16).ratio, Some(4.0));
    // Baseline d = 8 (0.790): d = 4 again: 2x.
    assert_eq!(at("dlrm", 8).ratio, Some(2.0));
    // WDL: nothing reaches 0.80.
    let w = at("wdl", 16);
    assert_eq!(
        (w.mlet_d, w.mlet_k, w.mlet_auc, w.ratio),
        (None, None, None, None)
    );

    let max = max_memory_reduction(&m);
    assert_eq!(max.len(), 2);
    let dlrm = max.iter().find(|x| x.model == "dlrm").unwrap();
    assert_eq!(dlrm.ratio, Some(4.0));
    let at_max: Vec<usize> = dlrm.achieved_by.iter().map(|r| r.baseline_d).collect();
    assert_eq!(at_max, vec![16, 32]);
    let wdl = max.iter().find(|x| x.model == "wdl").unwrap();
    assert_eq!(wdl.ratio, None);
    assert!(wdl.achieved_by.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("table3.csv");
    write_memory_reduction_csv(&p, &m).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(
        text.contains("dlrm,synthetic-300000,32,0.8,8,64,0.801,4\n"),
        "{text}"
    );
    assert!(text.contains("wdl,synthetic-300000,16,0.8,,,,\n"), "{text}");
}

#[test]
fn memory_reduction_uses_means_over_seeds() {
    // One seed of MLET d = 8 beats the baseline, but the mean does not.
    let rows = vec![
        row("dlrm", 32, None, 0.25, 1, 0.800),
        row("dlrm", 32, None, 0.25, 2, 0.800),
        row("dlrm", 8, Some(64), 0.25, 1, 0.803),
        row("dlrm", 8, Some(64), 0.25, 2, 0.795),
        row("dlrm", 16, Some(64), 0.25, 1, 0.800),
        row("dlrm", 16, Some(64), 0.25, 2, 0.801),
    ];
    let m = memory_reduction(&rows);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].mlet_d, Some(16));
    assert_eq!(m[0].ratio, Some(2.0));
}

#[test]
fn best_init_std_per_point() {
    let mut rows = Vec::new();
    for (sigma, aucs) in [
        (0.01, [0.70, 0.71]),
        (0.1, [0.78, 0.80]),
        (0.25, [0.80, 0.81]),
        (1.0, [0.79, 0.79]),
    ] {
        for (i, auc) in aucs.iter().enumerate() {
            rows.push(row("dlrm", 16, Some(32), sigma, i as u64 + 1, *auc));
        }
    }
    rows.push(row("dlrm", 8, Some(32), 0.5, 1, 0.77));
    rows.push(row("dlrm", 16, None, 0.25, 1, 0.79)); // baselines are ignored
    let best = best_init_std(&rows);
    assert_eq!(best.len(), 2);
    assert_eq!((best[0].d, best[0].k), (8, 32));
    assert_eq!(best[0].init_std, 0.5);
    assert_eq!(best[0].sigmas_tried, 1);
    let b = &best[1];
    assert_eq!((b.d, b.k), (16, 32));
    assert_eq!(b.init_std, 0.25);
    assert!((b.auc_mean - 0.805).abs() < 1e-12);
    assert_eq!(b.count, 2);
    assert_eq!(b.sigmas_tried, 4);
}

/// Table 4: MLET's relative PR-AUC gain over the baseline at the same d and seed, on sets A and
/// B and per decile, mean ± sample std over seeds, computed by hand.
#[test]
fn frequency_gains_pair_runs_by_d_and_seed() {
    let mut rows = Vec::new();
    for seed in [1, 2] {
        let mut b = row("dlrm", 8, None, 0.25, seed, 0.78);
        b.test_pr_auc_a = 0.50;
        b.test_pr_auc_b = 0.20;
        b.test_pr_auc_deciles = vec![0.20; 10];
        let mut m = row("dlrm", 8, Some(64), 0.25, seed, 0.79);
        m.test_pr_auc_a = if seed == 1 { 0.505 } else { 0.51 };
        m.test_pr_auc_b = if seed == 1 { 0.21 } else { 0.22 };
        m.test_pr_auc_deciles = (0..10).map(|i| 0.20 + 0.002 * i as f64).collect();
        rows.extend([b, m]);
    }
    // an MLET run without a baseline at its d is not paired
    rows.push(row("dlrm", 16, Some(64), 0.25, 1, 0.8));
    let gains = mlet::results::frequency_gains(&rows);
    assert_eq!(gains.len(), 1);
    let g = &gains[0];
    assert_eq!((g.d, g.k, g.seeds), (8, 64, 2));
    // A: +1% and +2%; B: +5% and +10%
    assert!((g.gain_a_mean - 1.5).abs() < 1e-9, "{}", g.gain_a_mean);
    assert!(
        (g.gain_a_std - (0.5f64).sqrt()).abs() < 1e-9,
        "{}",
        g.gain_a_std
    );
    assert!((g.gain_b_mean - 7.5).abs() < 1e-9, "{}", g.gain_b_mean);
    assert!((g.decile_gain_mean[0]).abs() < 1e-9);
    assert!((g.decile_gain_mean[9] - 9.0).abs() < 1e-9);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t4.csv");
    mlet::results::write_frequency_gains_csv(&path, &gains).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("model,dataset,d,k,init_std,seeds,pr_auc_gain_a_pct_mean"));
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("dlrm,synthetic-300000,8,64,0.25,2,1.5"));
}

/// The runtime table: median over seeds, ratio to the baseline at the same d.
#[test]
fn runtime_table_ratios() {
    let mut rows = Vec::new();
    for (seed, ms) in [(1, 4.0), (2, 6.0), (3, 5.0)] {
        let mut b = row("dlrm", 16, None, 0.25, seed, 0.78);
        b.step_ms_median = ms;
        let mut m = row("dlrm", 16, Some(64), 0.25, seed, 0.79);
        m.step_ms_median = ms * 1.25;
        rows.extend([b, m]);
    }
    let t = mlet::results::runtime_table(&rows);
    assert_eq!(t.len(), 2);
    let (b, m) = (&t[0], &t[1]);
    assert_eq!((b.k, b.runs, b.step_ms_median), (None, 3, 5.0));
    assert_eq!(m.k, Some(64));
    assert!((m.step_ratio_to_baseline - 1.25).abs() < 1e-12);
    assert_eq!(b.step_ratio_to_baseline, 1.0);
}
