//! Adagrad and Adam against torch.optim, run in Python on the same parameters and gradients:
//! dense parameters against `torch.optim.Adagrad` / `torch.optim.Adam` (two parameter groups:
//! `lr` and `embedding_lr`), table rows against `torch.optim.Adagrad` on the sparse gradient of
//! an `nn.Embedding(sparse=True)` and against `torch.optim.SparseAdam`; then the sparse path
//! through a whole model, and saving and restoring the state.
mod common;

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{
    DlrmConfig, EmbeddingConfig, EmbeddingKind, L2Config, LossReduction, ModelConfig,
    OptimizerConfig, OptimizerKind, WdlConfig,
};
use mlet::embedding::{Lookup, LookupIndex};
use mlet::models::{CtrModel, InputShape};
use mlet::training::{Optimizer, SparseGrad};

const STEPS: usize = 6;
const LR: f64 = 0.05;
const EMBEDDING_LR: f64 = 0.02;

/// Deterministic N(0, 1)-ish values (a seeded Rust RNG, so that no test touches libtorch's
/// global generator).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..4).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>() * 0.9)
        .collect()
}

fn tensor(shape: &[i64], seed: u64, kind: Kind) -> Tensor {
    let n = shape.iter().product::<i64>() as usize;
    Tensor::from_slice(&values(n, seed))
        .view(shape)
        .to_kind(kind)
}

fn python(script: &str) {
    let out = Command::new(common::python())
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", common::python().display()));
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn npy(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap()
}

/// `max |a - b| / max |b|` and `max |a - b|`.
fn diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    assert_eq!(a.size(), b.size());
    let abs = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-30);
    (abs / scale, abs)
}

fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-6,
        _ => 1e-12,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        _ => "float64",
    }
}

fn config(kind: OptimizerKind, weight_decay: f64) -> OptimizerConfig {
    OptimizerConfig {
        kind,
        lr: LR,
        embedding_lr: Some(EMBEDDING_LR),
        weight_decay,
        initial_accumulator_value: 0.1,
        ..mlet::config::Family::Dlrm.optimizer()
    }
}

/// The torch optimizer over two parameter groups (`lr` for `w`, `b`; `embedding_lr` for the
/// projection) and the names of its state slots.
fn torch_dense(kind: OptimizerKind, weight_decay: f64) -> (String, &'static [&'static str]) {
    let groups = format!("[{{'params': [w, b]}}, {{'params': [proj], 'lr': {EMBEDDING_LR}}}]");
    match kind {
        OptimizerKind::Adagrad => (
            format!(
                "torch.optim.Adagrad({groups}, lr={LR}, weight_decay={weight_decay}, \
                 initial_accumulator_value=0.1)"
            ),
            &["sum"],
        ),
        OptimizerKind::Adam => (
            format!("torch.optim.Adam({groups}, lr={LR}, weight_decay={weight_decay})"),
            &["exp_avg", "exp_avg_sq"],
        ),
        OptimizerKind::Sgd => unreachable!(),
    }
}

/// Dense parameters: STEPS updates with fixed gradients, ours against torch's optimizer.
fn dense_against_torch(kind: OptimizerKind, dtype: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (VarStore name, torch name, shape)
    let params: [(&str, &str, Vec<i64>); 3] = [
        ("net.w", "w", vec![5, 3]),
        ("net.b", "b", vec![4]),
        ("emb.projection", "proj", vec![2, 3, 2]),
    ];
    let mut npz: Vec<(String, Tensor)> = Vec::new();
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(dtype);
    let mut vars = Vec::new();
    for (i, (path, short, shape)) in params.iter().enumerate() {
        let p0 = tensor(shape, 10 + i as u64, dtype);
        let mut gshape = vec![STEPS as i64];
        gshape.extend(shape);
        // gradients of varied scale, so that the accumulators matter
        let g = tensor(&gshape, 20 + i as u64, dtype) * (1.0 + i as f64);
        npz.push((format!("{short}0"), p0.copy()));
        npz.push((format!("{short}_g"), g.copy()));
        let (prefix, name) = path.split_once('.').unwrap();
        let p = (vs.root() / prefix).var_copy(name, &p0);
        assert_eq!(p.kind(), dtype);
        vars.push((p, g, *short));
    }
    Tensor::write_npz(&npz, d.join("in.npz")).unwrap();
    let weight_decay = 0.01;
    let (torch_opt, slots) = torch_dense(kind, weight_decay);
    python(&format!(
        r#"
import numpy as np, torch
x = np.load("{d}/in.npz")
w, b, proj = [torch.nn.Parameter(torch.from_numpy(x[n + "0"])) for n in ("w", "b", "proj")]
opt = {torch_opt}
out = {{}}
for s in range({STEPS}):
    opt.zero_grad()
    for n, p in (("w", w), ("b", b), ("proj", proj)):
        p.grad = torch.from_numpy(x[n + "_g"][s]).clone()
    opt.step()
    for n, p in (("w", w), ("b", b), ("proj", proj)):
        out.setdefault(n, []).append(p.detach().clone())
for n, p in (("w", w), ("b", b), ("proj", proj)):
    np.save(f"{d}/{{n}}.npy", torch.stack(out[n]).numpy())
    for slot in {slots:?}:
        np.save(f"{d}/{{n}}_{{slot}}.npy", opt.state[p][slot].numpy())
"#,
        d = d.display()
    ));

    let mut opt = Optimizer::new(&config(kind, weight_decay), &vs);
    let mut worst = (0.0f64, 0.0f64);
    for s in 0..STEPS {
        opt.zero_grad();
        let loss = vars
            .iter()
            .map(|(p, g, _)| (p * g.get(s as i64)).sum(dtype))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        opt.step(&[]);
        for (p, _, short) in &vars {
            let theirs = npy(d, short).get(s as i64);
            let (rel, abs) = diff(p, &theirs);
            assert!(
                rel <= tolerance(dtype),
                "{kind:?} {}: {short} after step {}: max |diff| {abs:e}, relative {rel:e}",
                kind_name(dtype),
                s + 1
            );
            worst = (worst.0.max(rel), worst.1.max(abs));
        }
    }
    // and the optimizer's state itself
    let state = opt.state_tensors();
    for ((path, short, _), slot) in params
        .iter()
        .flat_map(|p| slots.iter().map(move |s| (p, s)))
    {
        let ours = &state
            .iter()
            .find(|(n, _)| n == &format!("state.{path}.{slot}"))
            .unwrap_or_else(|| panic!("no state {path}.{slot}"))
            .1;
        let (rel, abs) = diff(ours, &npy(d, &format!("{short}_{slot}")));
        assert!(rel <= tolerance(dtype), "{path}.{slot}: {abs:e}");
        worst = (worst.0.max(rel), worst.1.max(abs));
    }
    println!(
        "dense {kind:?} {}: {STEPS} steps, max |ours - torch| {:e} (relative {:e})",
        kind_name(dtype),
        worst.1,
        worst.0
    );
}

#[test]
fn dense_adagrad_matches_torch_optim_adagrad() {
    dense_against_torch(OptimizerKind::Adagrad, Kind::Float);
    dense_against_torch(OptimizerKind::Adagrad, Kind::Double);
}

#[test]
fn dense_adam_matches_torch_optim_adam() {
    dense_against_torch(OptimizerKind::Adam, Kind::Float);
    dense_against_torch(OptimizerKind::Adam, Kind::Double);
}

const ROWS: i64 = 12;
const WIDTH: i64 = 3;
/// Rows looked up at each step, with repeats (their gradients add up); rows 5, 8 and 11 are
/// never looked up.
const LOOKUPS: [&[i64]; STEPS] = [
    &[1, 4, 7, 4],
    &[0, 4],
    &[2, 7, 9, 9, 9],
    &[4],
    &[10, 1, 3, 6],
    &[7, 0, 0],
];

/// One table updated through the sparse path against torch on an `nn.Embedding(sparse=True)`:
/// `Adagrad` (its sparse branch) or `SparseAdam`. Weight decay, which torch refuses with
/// sparse gradients, is checked against its definition: torch is handed the sparse gradient
/// plus `weight_decay · weight[rows]` of the touched rows.
fn table_against_torch(kind: OptimizerKind, dtype: Kind, weight_decay: f64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = tensor(&[ROWS, WIDTH], 1, dtype);
    let mut npz = vec![("t0".to_string(), t0.copy())];
    let upstream: Vec<Tensor> = LOOKUPS
        .iter()
        .enumerate()
        .map(|(s, l)| tensor(&[l.len() as i64, WIDTH], 100 + s as u64, dtype))
        .collect();
    for (s, (l, u)) in LOOKUPS.iter().zip(&upstream).enumerate() {
        npz.push((format!("idx{s}"), Tensor::from_slice(l)));
        npz.push((format!("up{s}"), u.copy()));
    }
    Tensor::write_npz(&npz, d.join("in.npz")).unwrap();
    let (torch_opt, slots): (String, &[&str]) = match kind {
        OptimizerKind::Adagrad => (
            format!("torch.optim.Adagrad(emb.parameters(), lr={EMBEDDING_LR}, initial_accumulator_value=0.1)"),
            &["sum"],
        ),
        OptimizerKind::Adam => (
            format!("torch.optim.SparseAdam(emb.parameters(), lr={EMBEDDING_LR})"),
            &["exp_avg", "exp_avg_sq"],
        ),
        OptimizerKind::Sgd => unreachable!(),
    };
    python(&format!(
        r#"
import numpy as np, torch
x = np.load("{d}/in.npz")
t0 = torch.from_numpy(x["t0"])
emb = torch.nn.Embedding({ROWS}, {WIDTH}, sparse=True).to(t0.dtype)
emb.weight.data.copy_(t0)
opt = {torch_opt}
tables = []
for s in range({STEPS}):
    opt.zero_grad()
    idx = torch.from_numpy(x["idx%d" % s])
    (emb(idx) * torch.from_numpy(x["up%d" % s])).sum().backward()
    g = emb.weight.grad.coalesce()
    if {weight_decay} != 0:
        rows = g._indices()[0]
        values = g._values() + {weight_decay} * emb.weight.detach()[rows]
        emb.weight.grad = torch.sparse_coo_tensor(g._indices(), values, g.shape)
    opt.step()
    tables.append(emb.weight.detach().clone())
np.save("{d}/t.npy", torch.stack(tables).numpy())
for slot in {slots:?}:
    np.save(f"{d}/{{slot}}.npy", opt.state[emb.weight][slot].numpy())
"#,
        d = d.display()
    ));
    let torch_tables = npy(d, "t");

    // dense parameters only to give the optimizer a VarStore; the table is not one of them
    let vs = nn::VarStore::new(Device::Cpu);
    let table = t0.copy();
    let mut opt = Optimizer::new(&config(kind, weight_decay), &vs);
    let mut worst = (0.0f64, 0.0f64);
    let mut state_before: Vec<(String, Tensor)> = Vec::new();
    for (s, lookup) in LOOKUPS.iter().enumerate() {
        opt.zero_grad();
        // the model's path: distinct rows as a leaf, gathered per occurrence
        let index = LookupIndex::new(lookup, &[0], &[ROWS], Device::Cpu).unwrap();
        let rows = table
            .index_select(0, &index.unique)
            .detach()
            .set_requires_grad(true);
        let gathered = rows.index_select(0, &index.inverse);
        (gathered * &upstream[s]).sum(dtype).backward();
        let lookup_rows = Lookup::new(rows.shallow_clone(), rows, index.unique.shallow_clone());
        let before = table.copy();
        opt.step(&[SparseGrad {
            name: "emb",
            table: &table,
            lookup: &lookup_rows,
            l2: 0.0,
        }]);
        let (rel, abs) = diff(&table, &torch_tables.get(s as i64));
        assert!(
            rel <= tolerance(dtype),
            "{kind:?} {} decay {weight_decay}: table after step {}: max |diff| {abs:e}",
            kind_name(dtype),
            s + 1
        );
        worst = (worst.0.max(rel), worst.1.max(abs));
        // exactly the looked-up rows move; the others and their state stay bit for bit
        let state_now: Vec<(String, Tensor)> = opt
            .state_tensors()
            .into_iter()
            .filter(|(n, _)| n.starts_with("state."))
            .map(|(n, t)| (n, t.copy()))
            .collect();
        for r in 0..ROWS {
            let touched = lookup.contains(&r);
            let moved = !table.get(r).equal(&before.get(r));
            assert_eq!(moved, touched, "row {r} at step {}", s + 1);
            if !touched {
                for (name, now) in &state_now {
                    let old = state_before
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t.get(r));
                    // a state created this step starts at its initial value
                    let initial = match old {
                        Some(t) => t,
                        None => now.get(r).zeros_like().fill_(if name.ends_with(".sum") {
                            0.1
                        } else {
                            0.0
                        }),
                    };
                    assert!(now.get(r).equal(&initial), "{name} row {r} changed");
                }
            }
        }
        state_before = state_now;
    }
    for slot in slots {
        let ours = &state_before
            .iter()
            .find(|(n, _)| n == &format!("state.emb.table.{slot}"))
            .unwrap()
            .1;
        let (rel, abs) = diff(ours, &npy(d, slot));
        assert!(rel <= tolerance(dtype), "state {slot}: {abs:e}");
        worst = (worst.0.max(rel), worst.1.max(abs));
    }
    println!(
        "table {kind:?} {} decay {weight_decay}: {STEPS} steps, max |ours - torch| {:e} \
         (relative {:e})",
        kind_name(dtype),
        worst.1,
        worst.0
    );
}

#[test]
fn table_adagrad_matches_torch_sparse_adagrad() {
    for dtype in [Kind::Float, Kind::Double] {
        table_against_torch(OptimizerKind::Adagrad, dtype, 0.0);
        table_against_torch(OptimizerKind::Adagrad, dtype, 0.03);
    }
}

#[test]
fn table_adam_matches_torch_sparse_adam() {
    for dtype in [Kind::Float, Kind::Double] {
        table_against_torch(OptimizerKind::Adam, dtype, 0.0);
        table_against_torch(OptimizerKind::Adam, dtype, 0.03);
    }
}

fn wdl() -> ModelConfig {
    ModelConfig::Wdl(WdlConfig {
        dnn_hidden_units: vec![16, 8],
        dnn_dropout: 0.0,
        l2: Default::default(),
    })
}

fn mlet_embedding() -> EmbeddingConfig {
    EmbeddingConfig {
        dim: 4,
        kind: EmbeddingKind::Mlet,
        k: Some(6),
        init_std: 0.25,
        table_init: Default::default(),
        table_std: 1e-4,
        sets: 1,
        hash: None,
    }
}

const CARDS: [usize; 3] = [30, 7, 50];

/// One training step of a model through `Optimizer::step` with the model's `SparseGrad`s.
fn step_once(model: &CtrModel, opt: &mut Optimizer, seed: u64) -> mlet::models::BatchIndex {
    let batch = common::batch(16, 2, &CARDS, seed);
    let no_l2 = L2Config {
        embedding: 0.0,
        linear: 0.0,
        dnn: 0.0,
        interaction: None,
    };
    mlet::training::train_step(model, opt, &batch, Device::Cpu, LossReduction::Mean, &no_l2)
        .unwrap()
        .1
}

fn shape() -> InputShape {
    InputShape {
        num_dense: 2,
        cardinalities: CARDS.to_vec(),
        hashed: Vec::new(),
    }
}

/// WDL has two sparse tables (MLET embeddings and the linear part's weights): a step changes
/// exactly the rows the batch looked up, in both, and in their optimizer state.
#[test]
fn a_model_step_updates_exactly_the_touched_rows() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adagrad,
        OptimizerKind::Adam,
    ] {
        let model = CtrModel::new(&wdl(), &mlet_embedding(), &shape(), Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&config(kind, 0.01), &model.vs);
        for step in 0..3u64 {
            let tables: Vec<(String, Tensor)> = model
                .sparse_tables()
                .into_iter()
                .map(|(n, e)| (format!("{n}.table"), e.table.copy()))
                .collect();
            let state: Vec<(String, Tensor)> = opt
                .state_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.copy()))
                .collect();
            let projection = model.embeddings.projection.as_ref().unwrap().copy();
            let index = step_once(&model, &mut opt, step);
            let unique = Vec::<i64>::try_from(&index.embedding.unique).unwrap();
            let total: i64 = CARDS.iter().sum::<usize>() as i64;
            assert!(
                (unique.len() as i64) < total,
                "the batch must leave rows out"
            );
            let state_after = opt.state_tensors();
            for ((name, before), (_, emb)) in tables.iter().zip(model.sparse_tables()) {
                for r in 0..total {
                    let moved = !emb.table.get(r).equal(&before.get(r));
                    assert_eq!(
                        moved,
                        unique.contains(&r),
                        "{kind:?}: {name} row {r} at step {step}"
                    );
                    if unique.contains(&r) {
                        continue;
                    }
                    // state that existed before the step keeps its untouched rows
                    for (sname, s) in &state {
                        if sname.starts_with(&format!("state.{name}.")) {
                            let now = &state_after.iter().find(|(n, _)| n == sname).unwrap().1;
                            assert!(now.get(r).equal(&s.get(r)), "{sname} row {r} changed");
                        }
                    }
                }
            }
            // dense parameters (here MLET's projection) move every step
            assert!(!projection.equal(model.embeddings.projection.as_ref().unwrap()));
        }
        let steps = opt.state_tensors();
        let step = steps.iter().find(|(n, _)| n == "step").unwrap();
        assert_eq!(step.1.int64_value(&[0]), 3);
        if kind == OptimizerKind::Adam {
            for table in ["emb.table", "linear.table"] {
                let t = steps
                    .iter()
                    .find(|(n, _)| n == &format!("steps.{table}"))
                    .unwrap();
                assert_eq!(t.1.int64_value(&[0]), 3, "{table}");
            }
        }
    }
}

/// Saving the state after 3 steps and continuing in a fresh optimizer (and a model loaded from
/// the saved weights) gives bit for bit what continuing without the round trip gives.
#[test]
fn saved_state_continues_bit_for_bit() {
    for kind in [OptimizerKind::Adagrad, OptimizerKind::Adam] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(kind, 0.01);
        let a = CtrModel::new(&wdl(), &mlet_embedding(), &shape(), Device::Cpu).unwrap();
        let mut opt_a = Optimizer::new(&cfg, &a.vs);
        for step in 0..3 {
            step_once(&a, &mut opt_a, step);
        }
        a.vs.save(dir.path().join("w.safetensors")).unwrap();
        opt_a.save(&dir.path().join("o.safetensors")).unwrap();

        let mut b = CtrModel::new(&wdl(), &mlet_embedding(), &shape(), Device::Cpu).unwrap();
        b.vs.load(dir.path().join("w.safetensors")).unwrap();
        let mut opt_b = Optimizer::new(&cfg, &b.vs);
        opt_b.load(&dir.path().join("o.safetensors")).unwrap();
        assert_eq!(opt_b.steps_taken(), 3);
        for step in 3..6 {
            step_once(&a, &mut opt_a, step);
            step_once(&b, &mut opt_b, step);
        }
        let mut va = a.vs.variables().into_iter().collect::<Vec<_>>();
        let mut vb = b.vs.variables().into_iter().collect::<Vec<_>>();
        va.sort_by(|x, y| x.0.cmp(&y.0));
        vb.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(va.len(), vb.len());
        for ((na, ta), (nb, tb)) in va.iter().zip(&vb) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{kind:?}: {na} differs after the round trip");
        }
        let (sa, sb) = (opt_a.state_tensors(), opt_b.state_tensors());
        assert_eq!(sa.len(), sb.len());
        for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{kind:?}: state {na} differs");
        }
    }
}

#[test]
fn state_of_another_optimizer_or_shape_is_refused() {
    let model = CtrModel::new(&wdl(), &mlet_embedding(), &shape(), Device::Cpu).unwrap();
    let mut adam = Optimizer::new(&config(OptimizerKind::Adam, 0.0), &model.vs);
    step_once(&model, &mut adam, 0);
    let saved = adam.state_tensors();
    let mut adagrad = Optimizer::new(&config(OptimizerKind::Adagrad, 0.0), &model.vs);
    let err = adagrad.load_state(saved).unwrap_err().to_string();
    assert!(err.contains("another optimizer"), "{err}");
    let bad = vec![
        ("step".to_string(), Tensor::from_slice(&[1i64])),
        (
            "state.emb.projection.exp_avg".to_string(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ),
    ];
    let err = adam.load_state(bad).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
}

/// Weight decay with sparse tables, on a whole (tiny) model, against the formulas themselves
/// (paper 004 trains with Adam and `weight_decay`; its authors' `torch.optim.Adam` decays every
/// row of every table each step, through dense gradients). Ours, deliberately: dense parameters
/// get `torch.optim.Adam` with coupled decay; a table's rows the batch looked up get SparseAdam
/// with the decay added to their gradient (`g + wd·T[rows]`); the other rows do not move at all.
/// Step 1 is checked against the closed form of a first Adam step; step 2 that a row touched in
/// step 1 but not in step 2 stays bit for bit, where dense Adam with decay would move it.
#[test]
fn adam_weight_decay_on_a_model_decays_touched_rows_only() {
    // eps as large as the gradients, so that a step's size depends on the gradient's size (at
    // eps = 1e-8 Adam's first step is lr·sign(g), nearly blind to the decay term)
    let (lr, embedding_lr, wd, eps) = (1e-3, 0.02, 0.5, 1e-2);
    let (b1, b2) = (0.9f64, 0.999f64);
    let dlrm = ModelConfig::Dlrm(DlrmConfig {
        bottom_mlp: vec![4],
        top_mlp: vec![6],
    });
    let emb = EmbeddingConfig {
        kind: EmbeddingKind::Single,
        k: None,
        ..mlet_embedding()
    };
    let model = {
        let _rng = common::rng_lock();
        tch::manual_seed(11);
        CtrModel::new(&dlrm, &emb, &shape(), Device::Cpu).unwrap()
    };
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Adam,
        lr,
        embedding_lr: Some(embedding_lr),
        weight_decay: wd,
        eps: Some(eps),
        betas: [b1, b2],
        initial_accumulator_value: 0.0,
    };
    let mut opt = Optimizer::new(&cfg, &model.vs);
    let to_f64 = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    let total: i64 = CARDS.iter().sum::<usize>() as i64;

    // step 1, as train_step does it, keeping the gradients before the update
    let batch = common::batch(6, 2, &CARDS, 21);
    let (dense_x, labels, index) =
        mlet::training::batch_tensors(&batch, &model, Device::Cpu).unwrap();
    let forward = model.forward(&dense_x, &index, true);
    let loss = forward.logits.binary_cross_entropy_with_logits::<Tensor>(
        &labels,
        None,
        None,
        tch::Reduction::Mean,
    );
    opt.zero_grad();
    model.backward(&loss, &forward.lookups);
    let table = &model.embeddings.table;
    let table0 = table.copy();
    let rows = Vec::<i64>::try_from(&index.embedding.unique).unwrap();
    assert!((rows.len() as i64) < total, "the batch must leave rows out");
    let row_grad = to_f64(&forward.lookups[0].rows_grad());
    let dense: Vec<(String, Tensor, Vec<f64>, Vec<f64>)> = {
        let mut v: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter()
            .map(|(n, p)| {
                let (p0, g) = (to_f64(&p), to_f64(&p.grad()));
                (n, p, p0, g)
            })
            .collect()
    };
    assert!(!dense.is_empty());
    opt.step(&SparseGrad::of_model(
        &model,
        &forward.lookups,
        &mlet::config::L2Config::NONE,
    ));

    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "{what}: {got} against the formula's {want}"
        );
    };
    // how many coordinates the same formula without the decay would get wrong: the check
    // must see the decay
    let mut decay_seen = [0usize; 2];
    let first_step = |x: f64, g: f64, lr: f64, dense: bool| {
        let (m, v) = ((1.0 - b1) * g, (1.0 - b2) * g * g);
        if dense {
            x - lr / (1.0 - b1) * m / (v.sqrt() / (1.0 - b2).sqrt() + eps)
        } else {
            x - lr * (1.0 - b2).sqrt() / (1.0 - b1) * m / (v.sqrt() + eps)
        }
    };
    // dense parameters: torch.optim.Adam's first step with coupled decay
    for (name, p, p0, g) in &dense {
        let lr = if name.starts_with("emb.") {
            embedding_lr
        } else {
            lr
        };
        for ((&got, &x), &g) in to_f64(p).iter().zip(p0).zip(g) {
            close(got, first_step(x, g + wd * x, lr, true), name);
            let plain = first_step(x, g, lr, true);
            decay_seen[0] += usize::from((got - plain).abs() > 1e-4 * plain.abs().max(1e-3));
        }
    }
    // table rows: SparseAdam's first step on g + wd·T[rows]; the others unchanged
    let width = table.size()[1] as usize;
    let (t0, t1) = (to_f64(&table0), to_f64(table));
    for r in 0..total as usize {
        let span = r * width..(r + 1) * width;
        match rows.iter().position(|&u| u as usize == r) {
            None => assert!(
                table.get(r as i64).equal(&table0.get(r as i64)),
                "untouched row {r} moved"
            ),
            Some(u) => {
                for (j, (&got, &x)) in t1[span.clone()].iter().zip(&t0[span]).enumerate() {
                    let g = row_grad[u * width + j];
                    let want = first_step(x, g + wd * x, embedding_lr, false);
                    close(got, want, &format!("table row {r}"));
                    let plain = first_step(x, g, embedding_lr, false);
                    decay_seen[1] +=
                        usize::from((got - plain).abs() > 1e-4 * plain.abs().max(1e-3));
                }
            }
        }
    }

    assert!(
        decay_seen[0] > 0 && decay_seen[1] > 0,
        "the decay changed no checked coordinate: {decay_seen:?}"
    );
    println!("coordinates the decay moved beyond 1e-4 (dense, table rows): {decay_seen:?}");

    // step 2: rows touched before but not now keep their values and moments bit for bit
    let before = table.copy();
    let state_before: Vec<(String, Tensor)> = opt
        .state_tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("state.emb.table"))
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let index2 = step_once(&model, &mut opt, 22);
    let rows2 = Vec::<i64>::try_from(&index2.embedding.unique).unwrap();
    let stale: Vec<i64> = rows
        .iter()
        .copied()
        .filter(|r| !rows2.contains(r))
        .collect();
    assert!(
        !stale.is_empty(),
        "step 2 must leave some of step 1's rows out"
    );
    let state_after = opt.state_tensors();
    for &r in &stale {
        assert!(table.get(r).equal(&before.get(r)), "row {r} decayed");
        for (name, s) in &state_before {
            let now = &state_after.iter().find(|(n, _)| n == name).unwrap().1;
            assert!(now.get(r).equal(&s.get(r)), "{name} row {r} changed");
        }
    }
}
