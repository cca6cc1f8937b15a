//! Export as a user meets it: train, `mlet export`, load the TorchScript file with libtorch
//! (tch's CModule) and with Python's torch.jit.load, and predict what the trained model did.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{CModule, Device, Kind, Tensor};

use mlet::analysis::quantize::QuantizedTables;
use mlet::analysis::AnalysisRun;
use mlet::data::{Dataset, Split};
use mlet::export::{export_run, export_run_as, load_run, schema_path, Precision};
use mlet::training::predict;

fn train(dir: &Path) -> Vec<PathBuf> {
    let text = format!(
        "
name: ex
data:
  synthetic: {{rows: 12000, seed: 4}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [32], top_mlp: [32]}}
embedding: {{dim: 8}}
training: {{batch_size: 128, seed: 2}}
output: {out}
runs:
  - name: single
  - name: mlet
    embedding: {{kind: mlet, k: 32}}
  - name: deepfm-mlet
    model: {{kind: deepfm, dnn_hidden_units: [32]}}
    embedding: {{kind: mlet, k: 32, init_std: 0.1}}
    optimizer: {{kind: adagrad, lr: 0.02}}
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    );
    common::train_experiment(&text)
}

/// `--quantize int8`: the module predicts what the in-process model with the quantised tables
/// of `mlet analyze quantize` predicts, its tables are int8 with the schema's scales, and the
/// file is about 4x smaller than the f32 export. Returns the file-size ratio.
fn check_int8_export(dir: &Path, run: &Path, name: &str, fp32_module: &Path, n: usize) -> f64 {
    let out = dir.join(format!("{name}-int8.pt"));
    let tables = dir.join(format!("{name}-int8.safetensors"));
    let report = export_run_as(run, &out, Some(&tables), Device::Cpu, Precision::Int8).unwrap();

    let mut analysis = AnalysisRun::open(run, Device::Cpu).unwrap();
    let emb = &analysis.run.model.embeddings;
    let q = QuantizedTables::of(emb).unwrap();
    let dequantized = q.dequantized(emb);
    let (rows, fields, dim) = (
        emb.cardinalities().iter().sum::<i64>(),
        emb.num_fields() as i64,
        emb.dim(),
    );
    let n1 = emb.cardinalities()[0];
    assert_eq!(report.embedding_bytes, rows * dim + 4 * fields);
    let probs = |a: &AnalysisRun| -> Vec<f32> {
        let split = a.dataset.as_ref().unwrap().split(Split::Test);
        predict(&a.run.model, &split, 4096, Some(n), Device::Cpu)
            .unwrap()
            .iter()
            .map(|z| 1.0 / (1.0 + (-z).exp()))
            .collect()
    };
    let expected = analysis.with_table(dequantized, |a| probs(a));
    // the quantised model is not the f32 one (else this checks nothing)
    assert!(common::max_abs_diff(&probs(&analysis), &expected) > 0.0);

    let module = CModule::load(&out).unwrap();
    let (dense, cat) = common::test_rows(analysis.dataset.as_ref().unwrap().dir(), n);
    for size in [n as i64, 7] {
        let p = module
            .forward_ts(&[dense.narrow(0, 0, size), cat.narrow(0, 0, size)])
            .unwrap();
        let p = Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap();
        let diff = common::max_abs_diff(&p, &expected[..size as usize]);
        eprintln!("{name} int8: CModule batch {size}: max |Δp| = {diff:e}");
        assert!(
            diff <= 1e-5,
            "{name} int8: CModule at batch {size} differs by {diff}"
        );
    }
    let p = common::python_predict(dir, &format!("{name}-int8"), &out, &dense, &cat);
    let diff = common::max_abs_diff(&p, &expected);
    eprintln!("{name} int8: torch.jit.load: max |Δp| = {diff:e}");
    assert!(diff <= 1e-5, "{name} int8: Python differs by {diff}");

    // int8 tables with the schema's scales
    let read = Tensor::read_safetensors(&tables).unwrap();
    let c1 = &read.iter().find(|(n, _)| n == "C1").expect("table C1").1;
    assert_eq!(c1.kind(), Kind::Int8);
    assert!(c1.equal(&q.codes.narrow(0, 0, n1)));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path(&out)).unwrap()).unwrap();
    let quant = &schema["embedding"]["quantized"];
    assert_eq!(quant["dtype"], "int8");
    assert_eq!(
        quant["scales"]["C1"].as_f64().unwrap() as f32,
        q.choices[0].scale
    );
    assert_eq!(schema["embedding"]["bytes"], report.embedding_bytes);

    // the file shrinks by the 3 bytes per table entry that int8 saves, nothing else changes
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let saved = size(fp32_module) - size(&out);
    let expected = (3 * rows * dim - 4 * fields) as f64;
    assert!(
        (saved - expected).abs() < 0.02 * expected,
        "{name}: the int8 file is {saved} bytes smaller, expected about {expected}"
    );
    let ratio = size(fp32_module) / size(&out);
    eprintln!(
        "{name}: file {} bytes f32, {} bytes int8: {ratio:.2}x",
        size(fp32_module),
        size(&out)
    );
    ratio
}

#[test]
fn exported_models_predict_what_the_trained_models_predicted() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = train(tmp.path());
    let cache = tmp.path().join("cache");
    let mut bytes = Vec::new();
    let mut ratios = Vec::new();
    for run in &runs {
        let name = run.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.pt"));
        let tables = tmp.path().join(format!("{name}.safetensors"));
        let report = export_run(run, &out, Some(&tables), Device::Cpu).unwrap();
        bytes.push(report.embedding_bytes);

        // what the trained (uncollapsed) model predicts on held-out rows
        let loaded = load_run(run, Device::Cpu).unwrap();
        let data = Dataset::open(&cache).unwrap();
        let split = data.split(Split::Test);
        let n = 300.min(split.len);
        let trained: Vec<f32> = predict(&loaded.model, &split, 4096, Some(n), Device::Cpu)
            .unwrap()
            .iter()
            .map(|z| 1.0 / (1.0 + (-z).exp()))
            .collect();

        // libtorch, at two batch sizes
        let module = CModule::load(&out).unwrap();
        let (dense, cat) = common::test_rows(&cache, n);
        for size in [n as i64, 7] {
            let p = module
                .forward_ts(&[dense.narrow(0, 0, size), cat.narrow(0, 0, size)])
                .unwrap();
            let p: Vec<f32> = Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap();
            let diff = common::max_abs_diff(&p, &trained[..size as usize]);
            eprintln!("{name}: CModule batch {size}: max |Δp| = {diff:e}");
            assert!(
                diff <= 1e-5,
                "{name}: CModule at batch {size} differs by {diff}"
            );
        }

        // ids outside a field's vocabulary (its cardinality, or -1) read the field's OOV row 0,
        // never another field's rows (issue 8, item 3)
        let (d7, c7) = (dense.narrow(0, 0, 7), cat.narrow(0, 0, 7));
        let with = |first: i64, second: i64| {
            let c = c7.copy();
            let _ = c.narrow(1, 0, 1).fill_(first);
            let _ = c.narrow(1, 1, 1).fill_(second);
            let p = module.forward_ts(&[&d7, &c]).unwrap();
            Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap()
        };
        let card0 = loaded.shape.cardinalities[0] as i64;
        assert_eq!(with(card0, -1), with(0, 0), "{name}: out-of-range ids");
        assert_ne!(
            with(1, 1),
            with(0, 0),
            "{name}: the check would not see a wrong row"
        );

        // Python's torch.jit.load
        let p = common::python_predict(tmp.path(), &name, &out, &dense, &cat);
        let diff = common::max_abs_diff(&p, &trained);
        eprintln!("{name}: torch.jit.load: max |Δp| = {diff:e}");
        assert!(diff <= 1e-5, "{name}: Python differs by {diff}");

        ratios.push(check_int8_export(tmp.path(), run, &name, &out, n));

        // the tables read back as the collapsed n x d tables
        let read = Tensor::read_safetensors(&tables).unwrap();
        let collapsed = loaded.model.embeddings.collapse().table;
        let first = read.iter().find(|(n, _)| n == "C1").expect("table C1");
        let n1 = loaded.shape.cardinalities[0] as i64;
        assert!(first.1.equal(&collapsed.narrow(0, 0, n1)));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(schema_path(&out)).unwrap()).unwrap();
        assert_eq!(schema["embedding"]["bytes"], report.embedding_bytes);
        assert_eq!(schema["inputs"]["cat"]["names"][0], "C1");
    }
    // MLET exports exactly the size of the single-layer model at the same d
    assert_eq!(bytes[0], bytes[1]);
    // at d = 8 the MLPs and DeepFM's f32 linear part (4 bytes per category, half the int8
    // table) keep the whole file from 4x
    assert!(
        ratios[0] > 3.2 && ratios[1] > 3.2 && ratios[2] > 2.6,
        "{ratios:?}"
    );
    let cards: i64 = Dataset::open(
        &mlet::config::DataConfig {
            cache: Some(cache.clone()),
            ..Default::default()
        }
        .cache_dir(),
    )
    .unwrap()
    .cardinalities()
    .iter()
    .map(|&n| n as i64)
    .sum();
    assert_eq!(bytes[0], cards * 8 * 4);

    // the command line does the same, and fails cleanly on bad input
    let out = tmp.path().join("cli.pt");
    let ok = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .arg("export")
        .arg(&runs[1])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.is_file() && schema_path(&out).is_file());
    let out8 = tmp.path().join("cli-int8.pt");
    let ok = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .arg("export")
        .arg(&runs[1])
        .arg("--out")
        .arg(&out8)
        .args(["--quantize", "int8"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path(&out8)).unwrap()).unwrap();
    assert_eq!(schema["embedding"]["quantized"]["dtype"], "int8");
    let bad = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .arg("export")
        .arg(&runs[1])
        .arg("--out")
        .arg(tmp.path().join("x.pt"))
        .args(["--quantize", "int4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("--quantize"),
        "{stderr}"
    );
    let empty = tmp.path().join("empty-run");
    std::fs::create_dir_all(&empty).unwrap();
    for bad in [tmp.path().join("missing"), empty] {
        let r = Command::new(env!("CARGO_BIN_EXE_mlet"))
            .arg("export")
            .arg(&bad)
            .arg("--out")
            .arg(tmp.path().join("x.pt"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success());
        assert!(stderr.contains(&*bad.to_string_lossy()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // an output inside the run directory could overwrite the trained run: refused, the weights
    // untouched (issue 8, item 4)
    let weights = runs[0].join("weights.safetensors");
    let before = std::fs::read(&weights).unwrap();
    for (flag, target) in [
        ("--out", runs[0].join("weights.safetensors")),
        ("--out", runs[0].join("sub/model.pt")),
        ("--tables", runs[0].join("tables.safetensors")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlet"));
        cmd.arg("export").arg(&runs[0]);
        if flag == "--tables" {
            cmd.arg("--out").arg(tmp.path().join("y.pt"));
        }
        let r = cmd.arg(flag).arg(&target).output().unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success(),
            "{flag} {} was accepted",
            target.display()
        );
        assert!(stderr.contains("inside the run directory"), "{stderr}");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert!(!runs[0].join("sub").exists());
    // a libtorch failure to write (/proc takes no files, even from root) is one clear line, not
    // libtorch's C++ stack
    let r = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .arg("export")
        .arg(&runs[0])
        .args(["--out", "/proc/mlet-model.pt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.contains("cannot write /proc/mlet-model.pt"),
        "{stderr}"
    );
    assert!(
        stderr.trim().lines().count() == 1 && !stderr.contains("frame #"),
        "{stderr}"
    );
    export_onto_a_full_disk(&runs[0], tmp.path());
}

/// A disk that fills while the model is written (a 64 KiB tmpfs, mounted in a private mount
/// namespace) gives one clear error and leaves no file; libtorch's own writer aborted the
/// process here (SIGABRT from a destructor).
fn export_onto_a_full_disk(run: &Path, tmp: &Path) {
    let full = tmp.join("full-disk");
    std::fs::create_dir_all(&full).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{full}' || exit 99; '{mlet}' export '{run}' --out \
         '{full}/model.pt'; rc=$?; ls -A '{full}' >&2; exit $rc",
        full = full.display(),
        mlet = env!("CARGO_BIN_EXE_mlet"),
        run = run.display()
    );
    // as root a mount namespace is enough; otherwise map the user to root in a user namespace
    let attempt = |args: &[&str]| {
        Command::new("unshare")
            .args(args)
            .args(["sh", "-c", &script])
            .output()
    };
    let r = match attempt(&["-m"]) {
        Ok(r) if r.status.code() != Some(99) && r.status.code().is_some() => r,
        _ => match attempt(&["-r", "-m"]) {
            Ok(r) if r.status.code() != Some(99) && r.status.code().is_some() => r,
            other => {
                eprintln!("not checked: cannot mount a small tmpfs here ({other:?})");
                return;
            }
        },
    };
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && !stderr.contains("frame #"),
        "{stderr}"
    );
    // the error line, and no leftover file listed by `ls -A`
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
