//! Shared by the model-parity tests: runs DeepCTR-Torch 0.3.0 (in the project's Python venv) on
//! the weights of a Rust model and compares click probabilities.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Device, Kind, Tensor};

use mlet::data::{Batch, Dataset, Split};
use mlet::models::CtrModel;
use mlet::training::batch_tensors;

/// The venv's Python: `MLET_PYTHON` (set by `make test`), else `.venv/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("MLET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// A deterministic batch with `num_dense` dense features and indices within `cards`.
pub fn batch(size: usize, num_dense: usize, cards: &[usize], seed: u64) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = Batch {
        size,
        ..Default::default()
    };
    for _ in 0..size {
        b.dense
            .extend((0..num_dense).map(|_| rng.gen_range(0.0f32..3.0)));
        b.cat
            .extend(cards.iter().map(|&n| rng.gen_range(0..n as i64)));
        b.label.push(rng.gen_bool(0.25) as u8 as f32);
    }
    b
}

/// Our click probabilities for `batch` (eval mode).
pub fn ours(model: &CtrModel, batch: &Batch) -> Vec<f32> {
    tch::no_grad(|| {
        let (dense, _, index) = batch_tensors(batch, model, Device::Cpu).unwrap();
        let p = model.forward(&dense, &index, false).logits.sigmoid();
        Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap()
    })
}

/// DeepCTR-Torch's click probabilities for `batch` with `model`'s weights loaded into
/// `deepctr_torch.models.<class>(columns, columns, **kwargs)`.
pub fn deepctr(
    class: &str,
    kwargs: serde_json::Value,
    model: &CtrModel,
    cards: &[usize],
    dim: usize,
    num_dense: usize,
    batch: &Batch,
) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.npz");
    let inputs = dir.path().join("x.npz");
    let output = dir.path().join("y.npy");
    let state = model.deepctr_state_dict();
    let named: Vec<(&str, Tensor)> = state
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_kind(Kind::Float)))
        .collect();
    Tensor::write_npz(&named, &weights).unwrap();
    let b = batch.size as i64;
    let cat = Tensor::from_slice(&batch.cat).view([b, -1]);
    let dense = Tensor::from_slice(&batch.dense).view([b, num_dense as i64]);
    Tensor::write_npz(&[("cat", cat), ("dense", dense)], &inputs).unwrap();
    let spec = serde_json::json!({
        "model": class,
        "kwargs": kwargs,
        "cardinalities": cards,
        "dim": dim,
        "num_dense": num_dense,
        "weights": weights,
        "inputs": inputs,
        "output": output,
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity/deepctr_parity.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&spec_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run `make test`, which installs it)",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "deepctr_parity.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = Tensor::read_npy(&output).unwrap();
    Vec::<f32>::try_from(&y).unwrap()
}

/// Largest absolute difference of two probability vectors of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The small input shape every parity test uses.
pub const CARDS: [usize; 5] = [7, 30, 4, 100, 12];
pub const NUM_DENSE: usize = 3;
pub const DIM: usize = 4;

/// libtorch's generator is global and tests run in parallel threads: hold this while seeding
/// and drawing.
///
/// Not the library's `torch_rng_lock`: tests hold this one around whole training runs, which take
/// the library's lock themselves (the same non-reentrant mutex would deadlock).
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static TESTS_TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TESTS_TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Trains every run of the experiment YAML `text` (holding `rng_lock`); returns the run
/// directories, trained or already there.
pub fn train_experiment(text: &str) -> Vec<PathBuf> {
    use mlet::experiments::{run_all, Outcome};
    let specs = mlet::config::parse_runs(text).unwrap();
    let _rng = rng_lock();
    run_all(&specs, false, &mlet::training::RunOptions { quiet: true })
        .unwrap()
        .into_iter()
        .map(|o| match o {
            Outcome::Trained(d, _) | Outcome::Skipped(d, _) => d,
        })
        .collect()
}

pub fn shape() -> mlet::models::InputShape {
    mlet::models::InputShape {
        num_dense: NUM_DENSE,
        cardinalities: CARDS.to_vec(),
        hashed: Vec::new(),
    }
}

pub fn embedding(kind: mlet::config::EmbeddingKind) -> mlet::config::EmbeddingConfig {
    mlet::config::EmbeddingConfig {
        dim: DIM,
        kind,
        k: Some(8),
        init_std: 0.3,
        table_init: mlet::config::TableInit::Xavier,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    }
}

/// A model with every variable randomised to N(0, 0.3²): DeepCTR's 1e-4 init would make any
/// comparison pass.
pub fn randomised(
    cfg: &mlet::config::ModelConfig,
    kind: mlet::config::EmbeddingKind,
    seed: i64,
) -> CtrModel {
    let _rng = rng_lock();
    tch::manual_seed(seed);
    let model = CtrModel::new(cfg, &embedding(kind), &shape(), Device::Cpu).unwrap();
    // in name order: the VarStore's map iterates in a different order in every process, which
    // would draw different weights for the same seed
    let mut variables: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut v) in variables {
            let noise = Tensor::randn_like(&v) * 0.3;
            v.copy_(&noise);
        }
    });
    model
}

/// Click probabilities of ours and of DeepCTR-Torch's `class(**kwargs)` on the same weights
/// (strictly loaded by state_dict name), with single-layer and MLET embeddings: equal within
/// 1e-5, and not trivially (the predictions spread).
pub fn check_parity(
    cfg: &mlet::config::ModelConfig,
    class: &str,
    kwargs: serde_json::Value,
    model_seed: i64,
    batch_seed: u64,
) {
    use mlet::config::EmbeddingKind;
    for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
        let model = randomised(cfg, kind, model_seed);
        let batch = batch(64, NUM_DENSE, &CARDS, batch_seed);
        let ours = ours(&model, &batch);
        let theirs = deepctr(
            class,
            kwargs.clone(),
            &model,
            &CARDS,
            DIM,
            NUM_DENSE,
            &batch,
        );
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!("{class} {kwargs} {kind:?}: max |Δp| = {diff:e}");
        assert!(diff <= 1e-5, "{class} {kwargs} {kind:?}: max |Δp| = {diff}");
        let spread = ours.iter().cloned().fold(f32::MIN, f32::max)
            - ours.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.05, "{class}: predictions barely vary ({spread})");
    }
}

/// Click probabilities of `module` in Python's `torch.jit.load` on `(dense, cat)`.
pub fn python_predict(
    dir: &Path,
    name: &str,
    module: &Path,
    dense: &Tensor,
    cat: &Tensor,
) -> Vec<f32> {
    let inputs = dir.join(format!("{name}-x.npz"));
    Tensor::write_npz(&[("dense", dense), ("cat", cat)], &inputs).unwrap();
    let y = dir.join(format!("{name}-y.npy"));
    let script = format!(
        "import numpy as np, torch\nx = np.load('{}')\nm = torch.jit.load('{}')\n\
         np.save('{}', m(torch.from_numpy(x['dense']), torch.from_numpy(x['cat'])).detach().numpy())",
        inputs.display(),
        module.display(),
        y.display()
    );
    let py = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    Vec::<f32>::try_from(&Tensor::read_npy(&y).unwrap()).unwrap()
}

/// Test rows of the cache, as the module's inputs.
pub fn test_rows(cache: &Path, n: usize) -> (Tensor, Tensor) {
    let data = Dataset::open(cache).unwrap();
    let split = data.split(Split::Test);
    let mut batch = Batch::default();
    split.gather(&(0..n.min(split.len)).collect::<Vec<_>>(), &mut batch);
    let b = batch.size as i64;
    (
        Tensor::from_slice(&batch.dense).view([b, -1]),
        Tensor::from_slice(&batch.cat).view([b, -1]),
    )
}

/// Runs `tests/parity/<script> <arg>` in the venv's Python; panics with its stderr on failure.
pub fn run_parity_script(script: &str, arg: &Path) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run `make test`, which installs the references)",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
