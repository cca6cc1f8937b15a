//! Adagrad and Adam against torch.optim run in Python on the same parameters and gradients:
//! dense parameters against `Adagrad`/`Adam`, table rows against `Adagrad` on a sparse
//! gradient and `SparseAdam`.
mod common;

use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{OptimizerConfig, OptimizerKind};
use mlet::embedding::{Lookup, LookupIndex};
use mlet::training::{Optimizer, SparseGrad};

const STEPS: i64 = 4;
const ROWS: i64 = 10;
/// Rows touched at each step (each step touches a different set).
const TOUCHED: [&[i64]; 4] = [&[1, 4, 7], &[0, 4], &[2, 7, 9], &[4]];

fn config(kind: OptimizerKind, weight_decay: f64) -> OptimizerConfig {
    OptimizerConfig {
        kind,
        lr: 0.05,
        weight_decay,
        initial_accumulator_value: 0.1,
        ..Default::default()
    }
}

/// Runs `optimizers` in torch on the .npz inputs and returns the parameters after each step.
fn torch_reference(dir: &std::path::Path, dense_opt: &str, sparse_opt: &str) -> (Tensor, Tensor) {
    let script = format!(
        r#"
import numpy as np, torch
x = np.load("{dir}/in.npz")
p = torch.nn.Parameter(torch.from_numpy(x["p0"]).double())
opt = torch.optim.{dense_opt}
emb = torch.nn.Embedding({ROWS}, 3, sparse=True).double()
emb.weight.data.copy_(torch.from_numpy(x["t0"]))
sopt = torch.optim.{sparse_opt}
ps, ts = [], []
for s in range({STEPS}):
    opt.zero_grad(); p.grad = torch.from_numpy(x["g"][s]).double(); opt.step(); ps.append(p.detach().clone())
    rows = torch.from_numpy(x["rows%d" % s])
    sopt.zero_grad()
    emb.weight.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), torch.from_numpy(x["tg%d" % s]), (10, 3))
    sopt.step(); ts.append(emb.weight.detach().clone())
np.save("{dir}/p.npy", torch.stack(ps).numpy()); np.save("{dir}/t.npy", torch.stack(ts).numpy())
"#,
        dir = dir.display()
    );
    let out = Command::new(common::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        Tensor::read_npy(dir.join("p.npy")).unwrap(),
        Tensor::read_npy(dir.join("t.npy")).unwrap(),
    )
}

/// torch's sparse Adagrad and SparseAdam have no weight decay: with `weight_decay > 0` only the
/// dense parameters are compared.
fn compare(kind: OptimizerKind, weight_decay: f64, dense_opt: &str, sparse_opt: &str) {
    let dir = tempfile::tempdir().unwrap();
    let opts = (Kind::Double, Device::Cpu);
    let p0 = Tensor::randn([5, 3], opts);
    let grads = Tensor::randn([STEPS, 5, 3], opts);
    let t0 = Tensor::randn([ROWS, 3], opts);
    let table_grads: Vec<Tensor> = TOUCHED
        .iter()
        .map(|r| Tensor::randn([r.len() as i64, 3], opts))
        .collect();
    let mut named: Vec<(String, Tensor)> = vec![
        ("p0".into(), p0.copy()),
        ("g".into(), grads.copy()),
        ("t0".into(), t0.copy()),
    ];
    for (s, (rows, g)) in TOUCHED.iter().zip(&table_grads).enumerate() {
        named.push((format!("rows{s}"), Tensor::from_slice(rows)));
        named.push((format!("tg{s}"), g.copy()));
    }
    Tensor::write_npz(&named, dir.path().join("in.npz")).unwrap();
    let (torch_p, torch_t) = torch_reference(dir.path(), dense_opt, sparse_opt);

    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let p = vs.root().var_copy("p", &p0);
    let table = t0.copy();
    let mut opt = Optimizer::new(&config(kind, weight_decay), &vs);
    for s in 0..STEPS as usize {
        opt.zero_grad();
        (&p * grads.get(s as i64)).sum(Kind::Double).backward();
        let index = LookupIndex::new(TOUCHED[s], &[0], &[ROWS], Device::Cpu).unwrap();
        let rows = table.index_select(0, &index.unique).set_requires_grad(true);
        (&rows * &table_grads[s]).sum(Kind::Double).backward();
        let lookup = Lookup {
            output: rows.shallow_clone(),
            rows,
        };
        let before = table.copy();
        opt.step(
            &[SparseGrad {
                name: "emb",
                table: &table,
                lookup: &lookup,
            }],
            &index,
        );
        let dp = (&p - torch_p.get(s as i64)).abs().max().double_value(&[]);
        let dt = (&table - torch_t.get(s as i64))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            dp < 1e-10,
            "{dense_opt} step {s}: dense parameters differ by {dp}"
        );
        if weight_decay == 0.0 {
            assert!(dt < 1e-10, "{sparse_opt} step {s}: table differs by {dt}");
        }
        // untouched rows do not move
        let moved = (&table - &before)
            .abs()
            .sum_dim_intlist(1, false, Kind::Double)
            .gt(0.0);
        let moved: Vec<bool> = Vec::<bool>::try_from(&moved).unwrap();
        for (r, &m) in moved.iter().enumerate() {
            assert_eq!(m, TOUCHED[s].contains(&(r as i64)), "row {r} at step {s}");
        }
    }
    // the state can be saved and restored
    let saved = opt.state_tensors();
    assert!(!saved.is_empty());
    let mut restored = Optimizer::new(&config(kind, weight_decay), &vs);
    restored.load_state(saved.iter().map(|(n, t)| (n.clone(), t.copy())).collect());
    assert_eq!(restored.state_tensors().len(), saved.len());
}

#[test]
fn adagrad_matches_torch() {
    let sparse = "Adagrad(emb.parameters(), lr=0.05, initial_accumulator_value=0.1)";
    compare(
        OptimizerKind::Adagrad,
        0.0,
        "Adagrad([p], lr=0.05, initial_accumulator_value=0.1)",
        sparse,
    );
    compare(
        OptimizerKind::Adagrad,
        0.01,
        "Adagrad([p], lr=0.05, weight_decay=0.01, initial_accumulator_value=0.1)",
        sparse,
    );
}

#[test]
fn adam_matches_torch() {
    let sparse = "SparseAdam(emb.parameters(), lr=0.05)";
    compare(OptimizerKind::Adam, 0.0, "Adam([p], lr=0.05)", sparse);
    compare(
        OptimizerKind::Adam,
        0.01,
        "Adam([p], lr=0.05, weight_decay=0.01)",
        sparse,
    );
}
