//! The synthetic Criteo-shaped generator: determinism, format, profile and label signal.
use mlet::data::{
    prepare, synthetic_cardinalities, write_synthetic, Dataset, InputFormat, PrepareOptions, Split,
    SynthConfig, SynthRow, Synthesizer, CRITEO_CARDINALITIES, PILOT_ROWS, POSITIVE_RATE,
};
use std::collections::HashMap;
use std::fs;

fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    for (r, &i) in idx.iter().enumerate() {
        if labels[i] == 1 {
            rank_sum += (r + 1) as f64;
            pos += 1.0;
        }
    }
    let neg = scores.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: usize, seed: u64| {
        let p = dir.path().join(name);
        write_synthetic(&p, &SynthConfig { rows, seed }).unwrap();
        fs::read(p).unwrap()
    };
    let a = write("a.txt", 40_000, 7);
    let b = write("sub/b.txt", 40_000, 7);
    let c = write("c.txt", 40_000, 8);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Chunked generation: a prefix of rows does not depend on the total only through the
    // cardinalities, so compare two configs with the same cardinality profile.
    assert_eq!(
        synthetic_cardinalities(40_000),
        synthetic_cardinalities(30_000)
    );
    let d = write("d.txt", 30_000, 7);
    assert!(a.starts_with(&d));
    // No temporary files left beside the outputs.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

/// Where the positive rate of `rows` generated rows must lie: labels are i.i.d. Bernoulli(r)
/// with r = POSITIVE_RATE up to the intercept's calibration error on its pilot sample, so the
/// rate's standard deviation is at most sqrt(r(1 - r)(1/rows + 1/PILOT_ROWS)); 5 of them
/// (a false alarm about once in 3.5 million).
fn rate_band(rows: usize) -> std::ops::RangeInclusive<f64> {
    let r = POSITIVE_RATE;
    let sd = (r * (1.0 - r) * (1.0 / rows as f64 + 1.0 / PILOT_ROWS as f64)).sqrt();
    (r - 5.0 * sd)..=(r + 5.0 * sd)
}

#[test]
fn raw_format_positive_rate_and_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.txt");
    let rows = 20_000;
    write_synthetic(&path, &SynthConfig { rows, seed: 3 }).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let mut positives = 0;
    let mut missing = [0usize; 26];
    let mut distinct: Vec<HashMap<&str, usize>> = vec![HashMap::new(); 26];
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 40);
        assert!(cols[0] == "0" || cols[0] == "1");
        positives += usize::from(cols[0] == "1");
        for c in &cols[1..14] {
            assert!(c.is_empty() || c.parse::<i64>().is_ok(), "{c}");
        }
        for (f, c) in cols[14..].iter().enumerate() {
            if c.is_empty() {
                missing[f] += 1;
            } else {
                assert!(
                    c.len() == 8 && c.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{c}"
                );
                *distinct[f].entry(c).or_default() += 1;
            }
        }
    }
    assert_eq!(lines, rows);
    let rate = positives as f64 / rows as f64;
    assert!(rate_band(rows).contains(&rate), "positive rate {rate}");
    // Profile: small fields keep their real size and are (nearly) fully observed; big fields are
    // scaled down to the floor, heavy-tailed (many singletons) and never exceed their support.
    let support = synthetic_cardinalities(rows);
    for f in 0..26 {
        let real = CRITEO_CARDINALITIES[f];
        assert_eq!(support[f], real.min(10_000), "field C{}", f + 1);
        let seen = distinct[f].len() as u64;
        assert!(seen <= support[f]);
        if real <= 30 {
            assert_eq!(seen, real, "C{} should show all its values", f + 1);
        }
        if real > 1_000_000 {
            let singletons = distinct[f].values().filter(|&&c| c == 1).count() as u64;
            assert!(
                seen > 1_500 && singletons > seen / 3,
                "C{}: {seen} {singletons}",
                f + 1
            );
        }
    }
    // Missing values: C22 mostly missing (like the real data), C1 never.
    assert_eq!(missing[0], 0);
    assert!(missing[21] as f64 / rows as f64 > 0.6);
    // At 1M rows the big fields scale proportionally: C3 ~ 10.1M / 45.8 = 221k.
    let big = synthetic_cardinalities(1_000_000);
    assert!((200_000..240_000).contains(&big[2]), "{}", big[2]);
    assert_eq!(synthetic_cardinalities(100_000_000), CRITEO_CARDINALITIES);
}

#[test]
fn labels_carry_signal_from_categories_and_interactions() {
    let synth = Synthesizer::new(&SynthConfig {
        rows: 100_000,
        seed: 11,
    })
    .unwrap();
    let rows: Vec<SynthRow> = (0..4).flat_map(|c| synth.chunk(c)).collect();
    let labels: Vec<u8> = rows.iter().map(|r| r.label).collect();
    let part = |f: fn(&SynthRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let bayes = auc(&part(|r| r.logit.total()), &labels);
    let interaction = auc(&part(|r| r.logit.interaction), &labels);
    let bias = auc(&part(|r| r.logit.bias), &labels);
    assert!((0.74..0.84).contains(&bayes), "Bayes AUC {bayes}");
    assert!(interaction > 0.65, "interaction-only AUC {interaction}");
    assert!(bias > 0.6, "bias-only AUC {bias}");
    // The empirical CTR of frequent categories varies strongly within a field.
    let mut by_value: HashMap<(usize, u32), (f64, f64)> = HashMap::new();
    for r in &rows {
        for f in 0..26 {
            if let Some(v) = r.value[f] {
                let e = by_value.entry((f, v)).or_default();
                e.0 += f64::from(r.label);
                e.1 += 1.0;
            }
        }
    }
    // Without signal, (ctr - p)^2 / (p (1 - p) / n) averages 1 over categories (binomial noise).
    let p = labels.iter().map(|&l| f64::from(l)).sum::<f64>() / labels.len() as f64;
    let frequent: Vec<(f64, f64)> = by_value
        .values()
        .filter(|(_, n)| *n >= 200.0)
        .map(|&(pos, n)| (pos / n, n))
        .collect();
    let excess = frequent
        .iter()
        .map(|&(ctr, n)| (ctr - p).powi(2) / (p * (1.0 - p) / n))
        .sum::<f64>()
        / frequent.len() as f64;
    let (lo, hi) = frequent
        .iter()
        .fold((1.0f64, 0.0f64), |(lo, hi), &(c, _)| (lo.min(c), hi.max(c)));
    println!(
        "{} frequent categories, CTR {lo:.3}..{hi:.3}, excess variance {excess:.1}",
        frequent.len()
    );
    assert!(frequent.len() > 100 && excess > 3.0 && hi - lo > 0.15);
}

#[test]
fn synthetic_file_prepares_with_day_split() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("s.txt");
    write_synthetic(
        &raw,
        &SynthConfig {
            rows: 7_000,
            seed: 1,
        },
    )
    .unwrap();
    let out = dir.path().join("cache");
    let report = prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &out)).unwrap();
    assert_eq!(
        (report.rows.train, report.rows.valid, report.rows.test),
        (6_000, 500, 500)
    );
    let ds = Dataset::open(&out).unwrap();
    ds.verify().unwrap();
    let rate = ds.split(Split::Train).label.iter().sum::<f32>() / 6_000.0;
    let rate = f64::from(rate);
    assert!(rate_band(6_000).contains(&rate), "positive rate {rate}");
}
