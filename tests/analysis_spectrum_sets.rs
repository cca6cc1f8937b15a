//! Spectra under multi-embedding (paper 004 §5): each field's whole embedding (its sets side by
//! side, `n x M·d`) and each set's table, checked against torch's SVD of the explicitly
//! concatenated matrices, on known spectra, on a multi-set `Embeddings` and end to end on tiny
//! trained single- and multi-embedding runs.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{nn, Device, Kind, Tensor};

use mlet::analysis::spectrum::{
    effective_rank, information_abundance, multi_set_spectrum, table_spectrum, RunSpectrum,
};
use mlet::config::{EmbeddingConfig, EmbeddingKind, TableInit};
use mlet::embedding::Embeddings;
use mlet::export::load_run;

/// `U diag(s) Vᵀ` with random orthonormal `U` (`[n, w]`) and `V` (`[w, w]`), `w = s.len()`.
fn with_singular_values(n: i64, s: &[f64], seed: i64) -> Tensor {
    let _rng = common::rng_lock();
    tch::manual_seed(seed);
    let w = s.len() as i64;
    let opts = (Kind::Double, Device::Cpu);
    let (u, _) = Tensor::linalg_qr(&Tensor::randn([n, w], opts), "reduced");
    let (v, _) = Tensor::linalg_qr(&Tensor::randn([w, w], opts), "reduced");
    u.matmul(&Tensor::from_slice(s).diag(0)).matmul(&v.tr())
}

/// torch's singular values of `a` (descending), in f64 (with the reduced U: without it, torch
/// fills an `n x n` one with zeros).
fn torch_sv(a: &Tensor) -> Vec<f64> {
    let (_, sv, _) = a.to_kind(Kind::Double).svd(true, true);
    Vec::try_from(&sv).unwrap()
}

fn assert_close(got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() <= tol, "{got:?} vs {expected:?}");
    }
}

/// The spectra of `sets` through `multi_set_spectrum` against torch's SVD of the explicit
/// concatenation and of each set.
fn check_against_torch(field: &str, sets: &[Tensor]) {
    let (whole, per_set) = multi_set_spectrum(field, 2, sets).unwrap();
    let cat = Tensor::cat(sets, 1);
    let sv = torch_sv(&cat);
    let (n, w) = cat.size2().unwrap();
    assert_eq!(
        (whole.field.as_str(), whole.index, whole.set),
        (field, 2, None)
    );
    assert_eq!((whole.cardinality, whole.dim), (n as usize, w as usize));
    let tol = 1e-6 * sv[0];
    assert_close(&whole.singular_values, &sv, tol);
    assert_eq!(whole.effective_rank, effective_rank(&sv));
    assert!((whole.information_abundance - information_abundance(&sv)).abs() < 1e-6);
    assert_eq!(per_set.len(), sets.len());
    for (m, (s, t)) in per_set.iter().zip(sets).enumerate() {
        let sv = torch_sv(t);
        assert_eq!(s.field, format!("set{m}.{field}"));
        assert_eq!((s.index, s.set), (2, Some(m)));
        assert_eq!(s.dim, t.size()[1] as usize);
        assert_close(&s.singular_values, &sv, 1e-6 * sv[0]);
        assert!((s.information_abundance - information_abundance(&sv)).abs() < 1e-6);
        // a set's table is just a table: the same as its spectrum on its own
        let alone = table_spectrum(&s.field, 2, t).unwrap();
        assert_close(&s.singular_values, &alone.singular_values, 1e-9 * sv[0]);
    }
}

#[test]
fn whole_field_of_known_spectrum_split_into_sets() {
    // a [n, 3·2] matrix of known singular values cut into 3 sets of 2 columns: the whole field's
    // spectrum is the matrix's, whatever the sets' own; more rows than one Gram chunk (2^16)
    let s = [6.0, 3.0, 2.0, 1.0, 0.5, 0.07];
    let a = with_singular_values(70_000, &s, 11);
    let sets: Vec<Tensor> = (0..3).map(|m| a.narrow(1, 2 * m, 2)).collect();
    let (whole, per_set) = multi_set_spectrum("C5", 4, &sets).unwrap();
    assert_close(&whole.singular_values, &s, 1e-9);
    assert_eq!(whole.effective_rank, 6);
    assert!((whole.information_abundance - 12.57 / 6.0).abs() < 1e-9);
    assert_eq!(per_set.len(), 3);
    check_against_torch("C5", &sets);
    // single precision, as trained tables are stored, and views into one table (not contiguous)
    let f32_sets: Vec<Tensor> = sets.iter().map(|t| t.to_kind(Kind::Float)).collect();
    let (whole, _) = multi_set_spectrum("C5", 4, &f32_sets).unwrap();
    assert_close(&whole.singular_values, &s, 1e-5);

    // sets spanning the same directions: the whole field is no richer than one set
    let one = with_singular_values(500, &[2.0, 1.0], 12);
    let (whole, per_set) =
        multi_set_spectrum("x", 0, &[one.shallow_clone(), one.shallow_clone()]).unwrap();
    // [E | E] = E [I | I]: singular values √2 · σ(E), then zeros
    let r2 = 2f64.sqrt();
    assert_close(&whole.singular_values, &[2.0 * r2, r2, 0.0, 0.0], 1e-6);
    assert_eq!(whole.effective_rank, 2);
    assert!((whole.information_abundance - 1.5).abs() < 1e-6);
    for p in &per_set {
        assert_close(&p.singular_values, &[2.0, 1.0], 1e-9);
    }

    // one set: the whole field is the table itself, and no per-set entries
    let (whole, per_set) = multi_set_spectrum("C1", 0, &[one.shallow_clone()]).unwrap();
    assert!(per_set.is_empty());
    assert_eq!(whole, table_spectrum("C1", 0, &one).unwrap());
}

#[test]
fn wide_and_zero_and_bad_sets() {
    // fewer rows than the sets' total width: min(n, M·d) values
    let sets: Vec<Tensor> = (0..3)
        .map(|m| with_singular_values(4, &[1.0 + m as f64, 0.5], 20 + m))
        .collect();
    let (whole, per_set) = multi_set_spectrum("w", 0, &sets).unwrap();
    assert_eq!((whole.cardinality, whole.dim), (4, 6));
    assert_eq!(whole.singular_values.len(), 4);
    assert_eq!(per_set[2].singular_values.len(), 2);
    check_against_torch("w", &sets);

    // a zero set beside a non-zero one: the set has IA 0, the field does not
    let z = Tensor::zeros([30, 3], (Kind::Float, Device::Cpu));
    let e = with_singular_values(30, &[1.0, 1.0, 1.0], 21).to_kind(Kind::Float);
    let (whole, per_set) = multi_set_spectrum("z", 0, &[z.shallow_clone(), e]).unwrap();
    assert_eq!(per_set[0].information_abundance, 0.0);
    assert_eq!(per_set[0].effective_rank, 0);
    assert!((per_set[1].information_abundance - 3.0).abs() < 1e-5);
    assert!((whole.information_abundance - 3.0).abs() < 1e-5);
    assert_eq!(whole.effective_rank, 3);
    let (whole, _) = multi_set_spectrum("z", 0, &[z.shallow_clone(), z.shallow_clone()]).unwrap();
    assert_eq!(whole.information_abundance, 0.0);

    // NaN in one set: an error naming that set's table
    let bad = Tensor::ones([30, 3], (Kind::Float, Device::Cpu));
    let _ = bad.get(4).get(1).fill_(f64::NAN);
    let err = multi_set_spectrum("C9", 8, &[z.shallow_clone(), bad])
        .unwrap_err()
        .to_string();
    assert!(err.contains("set1.C9") && err.contains("NaN"), "{err}");
    // sets of different rows cannot stand side by side
    let short = Tensor::ones([29, 3], (Kind::Float, Device::Cpu));
    let err = format!(
        "{:#}",
        multi_set_spectrum("C9", 8, &[z, short]).unwrap_err()
    );
    assert!(err.contains("C9") && err.contains("rows"), "{err}");
    assert!(multi_set_spectrum("C9", 8, &[]).is_err());
}

#[test]
fn multi_set_embeddings_against_explicit_concatenation() {
    // the fused table of a 3-set embedding: set m's table of field f is table m·F + f
    let cards = [50usize, 7, 300];
    let cfg = EmbeddingConfig {
        dim: 4,
        kind: EmbeddingKind::Single,
        k: None,
        init_std: 0.3,
        table_init: TableInit::Xavier,
        table_std: 1e-4,
        sets: 3,
        hash: None,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let emb = {
        let _rng = common::rng_lock();
        tch::manual_seed(5);
        Embeddings::new(&vs.root(), &cards, &cfg).unwrap()
    };
    assert_eq!((emb.num_sets(), emb.num_fields()), (3, 3));
    // give the sets of a field different spectra (Xavier tables are close to flat)
    tch::no_grad(|| {
        let _ = emb
            .table
            .shallow_clone()
            .g_mul_(&Tensor::rand_like(&emb.table));
    });
    let f_count = emb.num_fields();
    for (f, &n) in cards.iter().enumerate() {
        let sets: Vec<Tensor> = (0..emb.num_sets())
            .map(|m| {
                let t = m * f_count + f;
                emb.table
                    .narrow(0, emb.offsets()[t], emb.cardinalities()[t])
            })
            .collect();
        assert!(sets.iter().all(|t| t.size()[0] == n as i64));
        check_against_torch(&format!("C{}", f + 1), &sets);
    }
}

fn mlet_cli(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
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

fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn read_spectrum(run: &Path) -> RunSpectrum {
    let path = run.join("analysis").join("spectrum.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

/// A single-embedding DNN of d = 12 and a multi-embedding one of 3 sets of d = 4 (the same total
/// size), on 3000 synthetic rows.
fn train(dir: &Path) -> (PathBuf, PathBuf) {
    let text = format!(
        "
name: me
data:
  synthetic: {{rows: 3000, seed: 5}}
  cache: {cache}
model: {{kind: dnn, mlp: {{hidden_units: [16]}}}}
embedding: {{dim: 4}}
optimizer: {{kind: adam, lr: 0.001}}
training: {{batch_size: 64, seed: 3, threads: 1}}
output: {out}
runs:
  - name: se-d12
    embedding: {{dim: 12}}
  - name: me-3x4
    embedding: {{sets: 3}}
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    );
    let runs = common::train_experiment(&text);
    assert_eq!(runs.len(), 2, "{runs:?}");
    (runs[0].clone(), runs[1].clone())
}

#[test]
fn cli_per_set_and_whole_field_on_trained_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (se, me) = train(tmp.path());
    let plots = tmp.path().join("figs");
    let stdout = ok(&mlet_cli(&[
        &"analyze",
        &"spectrum",
        &se,
        &me,
        &"--plots",
        &plots,
        &"--fields",
        &"C1,set2.C3",
    ]));
    assert!(stdout.contains("3 sets of d = 4"), "{stdout}");
    assert!(stdout.contains("set2.C3"), "{stdout}");

    // the single-embedding run: whole fields only
    let s = read_spectrum(&se);
    assert_eq!((s.sets, s.dim), (1, 12));
    assert!(s.per_set.is_empty());
    assert!(s.fields.iter().all(|f| f.dim == 12 && f.set.is_none()));
    assert!(s.label().contains("(single, d=12)"), "{}", s.label());

    // the multi-embedding run, against torch's SVD of the collapsed tables, concatenated here
    let s = read_spectrum(&me);
    assert_eq!((s.sets, s.dim, s.model.as_str()), (3, 4, "dnn"));
    assert!(s.label().contains("(ME 3x4)"), "{}", s.label());
    let loaded = load_run(&me, Device::Cpu).unwrap();
    let emb = &loaded.model.embeddings;
    let collapsed = emb.collapse().table;
    let f_count = emb.num_fields();
    assert_eq!(emb.num_sets(), 3);
    assert_eq!(s.fields.len(), f_count);
    assert_eq!(s.per_set.len(), 3 * f_count);
    let table = |t: usize| collapsed.narrow(0, emb.offsets()[t], emb.cardinalities()[t]);
    for (f, whole) in s.fields.iter().enumerate() {
        assert_eq!((whole.index, whole.set, whole.dim), (f, None, 12));
        assert_eq!(whole.field, format!("C{}", f + 1));
        let sets: Vec<Tensor> = (0..3).map(|m| table(m * f_count + f)).collect();
        let sv = torch_sv(&Tensor::cat(&sets, 1));
        assert_eq!(whole.cardinality, emb.cardinalities()[f] as usize);
        assert_close(&whole.singular_values, &sv, 1e-6 * sv[0]);
        assert_eq!(whole.effective_rank, effective_rank(&sv), "{}", whole.field);
        assert!(
            (whole.information_abundance - information_abundance(&sv)).abs() < 1e-5,
            "{}",
            whole.field
        );
    }
    // set-major, as the fused table
    for (t, p) in s.per_set.iter().enumerate() {
        let (m, f) = (t / f_count, t % f_count);
        assert_eq!(p.field, format!("set{m}.C{}", f + 1));
        assert_eq!((p.index, p.set, p.dim), (f, Some(m), 4));
        let sv = torch_sv(&table(t));
        assert_close(&p.singular_values, &sv, 1e-6 * sv[0]);
        assert!(
            (p.information_abundance - information_abundance(&sv)).abs() < 1e-5,
            "{}",
            p.field
        );
        assert_eq!(s.set_fields(m)[f], p);
    }
    // the sets learn different tables
    assert_ne!(
        s.per_set[0].singular_values,
        s.per_set[f_count].singular_values
    );

    // the CSV: whole fields (set `all`), then every set's tables
    let text = std::fs::read_to_string(me.join("analysis/spectrum.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("field,cardinality,dim,effective_rank,information_abundance,set")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4 * f_count);
    for (row, f) in rows.iter().zip(s.fields.iter().chain(&s.per_set)) {
        assert_eq!(row[0], f.field);
        assert_eq!(row[2].parse::<usize>().unwrap(), f.dim);
        assert_eq!(row[5], f.set.map_or("all".to_string(), |m| m.to_string()));
        let ia: f64 = row[4].parse().unwrap();
        assert!(
            (ia - f.information_abundance).abs() <= 1e-12 * ia,
            "{row:?}"
        );
    }

    // §5(a) over both runs, §5(b) for the ME run, and the σ curves asked for: C1's whole
    // embedding in both runs, set 2's table of C3 (only the ME run has it)
    for stem in [
        "spectrum_information_abundance",
        "spectrum_information_abundance_sets_me-3x4",
        "spectrum_singular_values_C1",
        "spectrum_singular_values_set2.C3",
    ] {
        let png = plots.join(format!("{stem}.png"));
        assert!(is_png(&png), "{}", png.display());
        assert!(plots.join(format!("{stem}.svg")).is_file());
        assert!(stdout.contains(&*png.to_string_lossy()), "{stdout}");
    }
    let svg = std::fs::read_to_string(plots.join("spectrum_information_abundance.svg")).unwrap();
    assert!(svg.contains("se-d12 (single, d=12)") && svg.contains("me-3x4 (ME 3x4)"));
    let svg = std::fs::read_to_string(plots.join("spectrum_information_abundance_sets_me-3x4.svg"))
        .unwrap();
    for m in 0..3 {
        assert!(svg.contains(&format!("set {m}")), "set {m}");
    }
    // no per-set figure for a single-embedding run
    assert!(!plots
        .join("spectrum_information_abundance_sets_se-d12.png")
        .exists());

    // a set that no run has; a set's table with single-embedding runs only
    let err = fails(&mlet_cli(&[
        &"analyze",
        &"spectrum",
        &se,
        &me,
        &"--plots",
        &plots,
        &"--fields",
        &"set3.C1",
    ]));
    assert!(err.contains("--fields") && err.contains("set3.C1"), "{err}");
    let err = fails(&mlet_cli(&[
        &"analyze",
        &"spectrum",
        &se,
        &"--plots",
        &plots,
        &"--fields",
        &"set1.C1",
    ]));
    assert!(
        err.contains("set1.C1") && err.contains("several sets"),
        "{err}"
    );
}
