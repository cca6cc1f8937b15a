//! Spectra of tables against matrices whose singular values are known, and `mlet analyze
//! spectrum` end to end on tiny trained runs, checked against torch's SVD of the collapsed tables.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

use mlet::analysis::spectrum::{
    effective_rank, information_abundance, table_spectrum, RunSpectrum, RANK_THRESHOLD,
};
use mlet::export::load_run;

/// `U diag(s) Vᵀ` with random orthonormal `U` (`[n, d]`) and `V` (`[d, d]`), `d = s.len()`.
fn with_singular_values(n: i64, s: &[f64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let d = s.len() as i64;
    let opts = (Kind::Double, Device::Cpu);
    let (u, _) = Tensor::linalg_qr(&Tensor::randn([n, d], opts), "reduced");
    let (v, _) = Tensor::linalg_qr(&Tensor::randn([d, d], opts), "reduced");
    u.matmul(&Tensor::from_slice(s).diag(0)).matmul(&v.tr())
}

fn assert_close(got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() <= tol, "{got:?} vs {expected:?}");
    }
}

#[test]
fn full_rank_table_with_known_singular_values() {
    let s = [4.0, 2.0, 1.0, 0.5, 0.03];
    let f = table_spectrum("C7", 6, &with_singular_values(200, &s, 1)).unwrap();
    assert_close(&f.singular_values, &s, 1e-9);
    assert_eq!((f.field.as_str(), f.index), ("C7", 6));
    assert_eq!((f.cardinality, f.dim), (200, 5));
    // 0.03 is below 0.01 · 4 = 0.04: four values count
    assert_eq!(f.effective_rank, 4);
    assert!((f.information_abundance - 7.53 / 4.0).abs() < 1e-9);
    // single precision, as trained tables are stored
    let f32_table = with_singular_values(200, &s, 1).to_kind(Kind::Float);
    let f = table_spectrum("C7", 6, &f32_table).unwrap();
    assert_close(&f.singular_values, &s, 1e-5);
    assert_eq!(f.effective_rank, 4);
}

#[test]
fn rank_deficient_table() {
    let s = [3.0, 1.0, 0.0, 0.0];
    let f = table_spectrum("x", 0, &with_singular_values(50, &s, 2)).unwrap();
    // the zero singular values come back through the Gram matrix as ~1e-8 · σ1 at most
    assert_close(&f.singular_values, &s, 1e-6);
    assert_eq!(f.effective_rank, 2);
    assert!((f.information_abundance - 4.0 / 3.0).abs() < 1e-6);
    // normalised curve: σ_i / σ_1
    assert_close(&f.normalised(), &[1.0, 1.0 / 3.0, 0.0, 0.0], 1e-6);
}

#[test]
fn zero_table_has_rank_and_abundance_zero_and_no_nan() {
    let f = table_spectrum("z", 0, &Tensor::zeros([40, 6], (Kind::Float, Device::Cpu))).unwrap();
    assert_eq!(f.singular_values, vec![0.0; 6]);
    assert_eq!(f.effective_rank, 0);
    assert_eq!(f.information_abundance, 0.0);
    assert!(f.normalised().is_empty());
    let json = serde_json::to_string(&f).unwrap();
    assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
}

#[test]
fn wide_table_has_min_n_d_singular_values() {
    // 3 rows, 8 columns: rank at most 3
    let a = with_singular_values(8, &[2.0, 1.0, 0.5], 3)
        .tr()
        .contiguous();
    let f = table_spectrum("w", 0, &a).unwrap();
    assert_eq!((f.cardinality, f.dim), (3, 8));
    assert_close(&f.singular_values, &[2.0, 1.0, 0.5], 1e-7);
    assert_eq!(f.effective_rank, 3);
}

#[test]
fn definitions_on_hand_computed_values() {
    assert_eq!(RANK_THRESHOLD, 0.01);
    // strictly above 0.01 of the largest; order does not matter
    assert_eq!(effective_rank(&[0.01, 1.0, 0.0100001]), 2);
    assert_eq!(effective_rank(&[]), 0);
    assert_eq!(information_abundance(&[1.0, 3.0, 2.0]), 2.0);
    assert_eq!(information_abundance(&[5.0]), 1.0);
    assert_eq!(information_abundance(&[0.0, 0.0]), 0.0);
    assert_eq!(information_abundance(&[]), 0.0);
}

#[test]
fn non_finite_table_is_an_error_naming_the_field() {
    let a = Tensor::ones([10, 4], (Kind::Float, Device::Cpu));
    let _ = a.get(3).get(2).fill_(f64::NAN);
    let err = table_spectrum("C12", 11, &a).unwrap_err().to_string();
    assert!(err.contains("C12") && err.contains("NaN"), "{err}");
}

fn mlet(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlet"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A clean failure: non-zero, no panic; returns stderr.
fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Trains a single-layer and an MLET DLRM on 3000 synthetic rows with `mlet train`.
fn train(dir: &Path) -> (PathBuf, PathBuf) {
    let exp = dir.join("exp.yaml");
    std::fs::write(
        &exp,
        format!(
            "
name: spec
data:
  synthetic: {{rows: 3000, seed: 5}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 8}}
training: {{batch_size: 64, seed: 3, threads: 1}}
output: {out}
runs:
  - name: single
  - name: mlet
    embedding: {{kind: mlet, k: 32}}
",
            cache = dir.join("cache").display(),
            out = dir.join("runs").display()
        ),
    )
    .unwrap();
    ok(&mlet(&[&"-q", &"train", &exp]));
    let runs = dir.join("runs").join("spec");
    (runs.join("single"), runs.join("mlet"))
}

fn read_spectrum(run: &Path) -> RunSpectrum {
    let path = run.join("analysis").join("spectrum.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

#[test]
fn cli_end_to_end_on_trained_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, mlet_run) = train(tmp.path());
    let plots = tmp.path().join("figs");
    let stdout = ok(&mlet(&[
        &"analyze",
        &"spectrum",
        &single,
        &mlet_run,
        &"--plots",
        &plots,
        &"--fields",
        &"C1,3",
    ]));
    assert!(stdout.contains("information abundance"), "{stdout}");

    for (run, k) in [(&single, None), (&mlet_run, Some(32))] {
        let s = read_spectrum(run);
        assert_eq!((s.k, s.dim, s.model.as_str()), (k, 8, "dlrm"));
        let json = run.join("analysis/spectrum.json");
        let csv = run.join("analysis/spectrum.csv");
        assert!(stdout.contains(&*json.to_string_lossy()), "{stdout}");
        assert!(stdout.contains(&*csv.to_string_lossy()), "{stdout}");

        // against torch's SVD of the collapsed table, computed here
        let loaded = load_run(run, Device::Cpu).unwrap();
        let collapsed = loaded.model.embeddings.collapse().table;
        let emb = &loaded.model.embeddings;
        assert_eq!(s.fields.len(), emb.cardinalities().len());
        for ((f, &off), &n) in s.fields.iter().zip(emb.offsets()).zip(emb.cardinalities()) {
            let table = collapsed.narrow(0, off, n).to_kind(Kind::Double);
            let (_, sv, _) = table.svd(true, false);
            let sv: Vec<f64> = Vec::try_from(&sv).unwrap();
            assert_eq!(f.cardinality, n as usize);
            assert_eq!(f.dim, 8);
            let tol = 1e-6 * sv[0].max(1e-12);
            assert_close(&f.singular_values, &sv, tol);
            assert_eq!(f.effective_rank, effective_rank(&sv), "{}", f.field);
            assert!(
                (f.information_abundance - information_abundance(&sv)).abs() < 1e-5,
                "{}",
                f.field
            );
        }

        // the CSV holds the same numbers
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("field,cardinality,dim,effective_rank,information_abundance,set")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), s.fields.len());
        for (row, f) in rows.iter().zip(&s.fields) {
            assert_eq!(row[0], f.field);
            // one set: every row is a field's whole (only) table
            assert_eq!(row[5], "all");
            assert_eq!(row[1].parse::<usize>().unwrap(), f.cardinality);
            assert_eq!(row[3].parse::<usize>().unwrap(), f.effective_rank);
            // serde_json's default float parsing may differ from the text in the last bit
            let ia: f64 = row[4].parse().unwrap();
            assert!(
                (ia - f.information_abundance).abs() <= 1e-12 * ia,
                "{row:?}"
            );
        }
    }

    // the figures, each as PNG and SVG; position 3 is the fourth field, C4
    for stem in [
        "spectrum_information_abundance",
        "spectrum_singular_values_C1",
        "spectrum_singular_values_C4",
    ] {
        let png = plots.join(format!("{stem}.png"));
        assert!(is_png(&png), "{}", png.display());
        assert!(plots.join(format!("{stem}.svg")).is_file());
        assert!(stdout.contains(&*png.to_string_lossy()), "{stdout}");
    }

    // default figure directory: the first run's analysis/, the 4 largest fields; -q is silent
    let out = mlet(&[&"-q", &"analyze", &"spectrum", &mlet_run]);
    assert_eq!(ok(&out), "");
    let largest = read_spectrum(&mlet_run).largest_fields(4);
    assert_eq!(largest.len(), 4);
    let analysis = mlet_run.join("analysis");
    assert!(is_png(&analysis.join("spectrum_information_abundance.png")));
    for f in &largest {
        assert!(is_png(
            &analysis.join(format!("spectrum_singular_values_{f}.png"))
        ));
    }

    // bad input: clear errors, no panic
    let missing = tmp.path().join("no-such-run");
    let err = fails(&mlet(&[&"analyze", &"spectrum", &single, &missing]));
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    let not_a_run = tmp.path().join("figs");
    let err = fails(&mlet(&[&"analyze", &"spectrum", &not_a_run]));
    assert!(err.contains(&*not_a_run.to_string_lossy()), "{err}");
    let err = fails(&mlet(&[
        &"analyze",
        &"spectrum",
        &single,
        &"--fields",
        &"C99",
    ]));
    assert!(err.contains("--fields") && err.contains("C99"), "{err}");
    let err = fails(&mlet(&[
        &"analyze",
        &"spectrum",
        &single,
        &"--fields",
        &"26",
    ]));
    assert!(err.contains("--fields") && err.contains("26"), "{err}");
    fails(&mlet(&[&"analyze", &"spectrum"]));
}
