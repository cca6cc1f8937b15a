//! The embedding layer against its definitions: collapse equivalence and the paper's update rule.
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{
    DlrmConfig, EmbeddingConfig, EmbeddingKind, LossReduction, ModelConfig, OptimizerConfig,
    TableInit,
};
use mlet::data::Batch;
use mlet::embedding::{Embeddings, LookupIndex};
use mlet::models::{CtrModel, InputShape};
use mlet::training::{batch_tensors, train_step, Optimizer, SparseGrad};

/// libtorch's generator is global and tests run in parallel threads: each test holds this lock
/// so that its seeded draws are its own.
use mlet::training::torch_rng_lock as rng_lock;

fn mlet_config(dim: usize, k: usize, init_std: f64) -> EmbeddingConfig {
    EmbeddingConfig {
        dim,
        kind: EmbeddingKind::Mlet,
        k: Some(k),
        init_std,
        table_init: TableInit::Xavier,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    }
}

fn random_batch(size: usize, num_dense: usize, cards: &[usize], seed: u64) -> Batch {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut b = Batch {
        size,
        ..Default::default()
    };
    for _ in 0..size {
        for _ in 0..num_dense {
            b.dense.push(rng.gen_range(0.0..3.0));
        }
        for &n in cards {
            // skewed so that some rows repeat within the batch
            let u: f64 = rng.gen();
            b.cat.push(((u * u * u) * n as f64) as i64);
        }
        b.label.push(rng.gen_bool(0.3) as u8 as f32);
    }
    b
}

#[test]
fn collapsed_model_predicts_what_the_trained_mlet_model_predicts() {
    let _rng = rng_lock();
    tch::manual_seed(11);
    let cards = vec![50, 7, 300, 3];
    let shape = InputShape {
        num_dense: 4,
        cardinalities: cards.clone(),
        hashed: Vec::new(),
    };
    let model_cfg = ModelConfig::Dlrm(DlrmConfig {
        bottom_mlp: vec![16],
        top_mlp: vec![32, 16],
    });
    let mut model =
        CtrModel::new(&model_cfg, &mlet_config(8, 32, 0.25), &shape, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            lr: 0.1,
            ..mlet::config::Family::Dlrm.optimizer()
        },
        &model.vs,
    );
    for step in 0..30 {
        let batch = random_batch(64, 4, &cards, step);
        train_step(
            &model,
            &mut opt,
            &batch,
            Device::Cpu,
            LossReduction::Mean,
            &model_cfg.l2(),
        )
        .unwrap();
    }
    let batch = random_batch(500, 4, &cards, 999);
    let predict = |m: &CtrModel| {
        tch::no_grad(|| {
            let (dense, _, index) = batch_tensors(&batch, m, Device::Cpu).unwrap();
            m.forward(&dense, &index, false).logits
        })
    };
    let trained = predict(&model);
    let inference_size = model.embeddings.inference_parameters();
    model.collapse();
    let collapsed = predict(&model);
    assert!(model.embeddings.projection.is_none());
    assert_eq!(model.embeddings.table.size(), vec![360, 8]);
    assert_eq!(model.embeddings.table.numel() as i64, inference_size);
    let diff = (&trained - &collapsed).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "max |logit difference| {diff}");
    // the tensor path used by export agrees with the host-side lookup path
    let local = Tensor::from_slice(&batch.cat).view([500, 4]);
    let via_tensor = model.embeddings.forward_local(&local);
    let (_, _, index) = batch_tensors(&batch, &model, Device::Cpu).unwrap();
    let via_index = model.embeddings.lookup(&index.embedding).output;
    assert!(via_tensor.allclose(&via_index, 0.0, 0.0, false));
}

/// One SGD step on (T, P) per field, seen on the effective table E = T·P.
fn effective_step(lr: f64) -> (Tensor, Tensor) {
    tch::manual_seed(5);
    let cards = [40usize, 25];
    // double precision, so that rounding does not hide the O(lr²) remainder
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let emb = Embeddings::new(&(vs.root() / "emb"), &cards, &mlet_config(4, 6, 0.5)).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            lr,
            ..mlet::config::Family::Dlrm.optimizer()
        },
        &vs,
    );
    let batch = random_batch(16, 0, &cards, 7);
    let target = Tensor::randn([16, 2, 4], (Kind::Double, Device::Cpu));
    // a non-linear loss of the looked-up vectors
    let loss_of = |out: &Tensor| (out.tanh() - &target).square().sum(Kind::Double);

    let before = emb.collapse().table;
    // G = dL/dE, from the collapsed table made a leaf
    let e = before.detach().set_requires_grad(true);
    let index =
        LookupIndex::new(&batch.cat, emb.offsets(), emb.cardinalities(), Device::Cpu).unwrap();
    let out = e
        .index_select(0, &index.unique)
        .index_select(0, &index.inverse)
        .view([16, 2, 4]);
    loss_of(&out).backward();
    let g = e.grad();

    // predicted change: -lr (T Tᵀ G + G Pᵀ P) per field (Eq. 2 of paper 001, transposed)
    let p = emb.projection.as_ref().unwrap().detach();
    let mut predicted = Vec::new();
    for (f, (&off, &n)) in emb.offsets().iter().zip(emb.cardinalities()).enumerate() {
        let t = emb.table.narrow(0, off, n);
        let gf = g.narrow(0, off, n);
        let pf = p.get(f as i64);
        predicted.push((t.matmul(&t.tr()).matmul(&gf) + gf.matmul(&pf.tr()).matmul(&pf)) * -lr);
    }
    let predicted = Tensor::cat(&predicted, 0);

    let lookup = emb.lookup(&index);
    opt.zero_grad();
    loss_of(&lookup.output).backward();
    emb.backward(&lookup);
    opt.step(&[SparseGrad {
        name: "emb",
        table: &emb.table,
        lookup: &lookup,
        l2: 0.0,
    }]);
    let actual = emb.collapse().table - before;
    (actual, predicted)
}

#[test]
fn mlet_sgd_step_matches_equation_2_up_to_second_order() {
    let _rng = rng_lock();
    let err = |lr: f64| {
        let (actual, predicted) = effective_step(lr);
        let e = (&actual - &predicted).norm().double_value(&[]);
        (e, predicted.norm().double_value(&[]), actual)
    };
    let (e1, size1, actual) = err(1e-2);
    let (e2, _, _) = err(5e-3);
    let (e3, _, _) = err(2.5e-3);
    eprintln!("errors {e1} {e2} {e3}, update size {size1}");
    // the first-order term dominates and the remainder shrinks like lr²
    assert!(e1 < 0.05 * size1, "error {e1} vs update size {size1}");
    for (big, small) in [(e1, e2), (e2, e3)] {
        let ratio = big / small;
        assert!(
            (3.0..5.0).contains(&ratio),
            "halving lr divided the error by {ratio}, not ~4"
        );
    }
    // cross-category learning: rows no example touched moved too
    let moved_rows = actual
        .abs()
        .sum_dim_intlist(1, false, Kind::Float)
        .gt(0.0)
        .sum(Kind::Int64);
    assert_eq!(moved_rows.int64_value(&[]), 65);
}

#[test]
fn single_layer_step_touches_only_the_batch_rows() {
    let _rng = rng_lock();
    tch::manual_seed(2);
    let cards = [1000usize];
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = EmbeddingConfig {
        kind: EmbeddingKind::Single,
        k: None,
        ..mlet_config(4, 1, 0.1)
    };
    let emb = Embeddings::new(&(vs.root() / "emb"), &cards, &cfg).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            lr: 0.5,
            ..mlet::config::Family::Dlrm.optimizer()
        },
        &vs,
    );
    let before = emb.table.copy();
    let cat = vec![3i64, 17, 3, 999];
    let index = LookupIndex::new(&cat, emb.offsets(), emb.cardinalities(), Device::Cpu).unwrap();
    let lookup = emb.lookup(&index);
    opt.zero_grad();
    lookup.output.square().sum(Kind::Float).backward();
    emb.backward(&lookup);
    opt.step(&[SparseGrad {
        name: "emb",
        table: &emb.table,
        lookup: &lookup,
        l2: 0.0,
    }]);
    let changed = (&emb.table - &before)
        .abs()
        .sum_dim_intlist(1, false, Kind::Float)
        .gt(0.0);
    let changed: Vec<bool> = Vec::<bool>::try_from(&changed).unwrap();
    let rows: Vec<usize> = changed
        .iter()
        .enumerate()
        .filter(|(_, &c)| c)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(rows, vec![3, 17, 999]);
    // row 3 appeared twice: its gradient is 2·(2·e) summed over both uses
    let expected = &before.get(3) - &before.get(3) * (0.5 * 2.0 * 2.0);
    assert!(emb.table.get(3).allclose(&expected, 1e-6, 1e-7, false));
}

#[test]
fn out_of_range_index_is_an_error_not_a_crash() {
    let _rng = rng_lock();
    let err = LookupIndex::new(&[0, 5], &[0, 3], &[3, 4], Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("field 1"), "{err}");
}

/// MLET's lookup projects outside autograd and `Embeddings::backward` carries the gradient:
/// the rows' and projections' gradients must be autograd's through the definition
/// `out[b, f] = T[i_bf] · P_f`, including gradients the loss gives them directly (an L2
/// penalty) and a field whose batch has a single distinct row.
#[test]
fn mlet_backward_is_autograds_gradient_of_the_definition() {
    let _rng = rng_lock();
    tch::manual_seed(5);
    let cards = [40usize, 6, 90];
    let vs = nn::VarStore::new(Device::Cpu);
    let emb = Embeddings::new(&(vs.root() / "emb"), &cards, &mlet_config(3, 5, 0.7)).unwrap();
    let mut batch = random_batch(12, 0, &cards, 3);
    // field 1 only ever looks up row 0: one distinct row; field 2's ids all in range
    for row in batch.cat.chunks_mut(3) {
        row[1] = 0;
    }
    let index =
        LookupIndex::new(&batch.cat, emb.offsets(), emb.cardinalities(), Device::Cpu).unwrap();
    let target = Tensor::randn([12, 3, 3], (Kind::Float, Device::Cpu));
    let loss_of = |out: &Tensor, rows: &Tensor, p: &Tensor| {
        (out.tanh() - &target).square().sum(Kind::Float)
            + rows.square().sum(Kind::Float) * 0.3
            + p.square().sum(Kind::Float) * 0.2
    };
    let p = emb.projection.as_ref().unwrap();

    // the definition, all in autograd
    let rows_ref = emb
        .table
        .index_select(0, &index.unique)
        .detach()
        .set_requires_grad(true);
    let p_ref = p.detach().copy().set_requires_grad(true);
    let gathered = rows_ref.index_select(0, &index.inverse).view([12, 3, 5]);
    let out_ref = Tensor::einsum("bfk,fkd->bfd", &[&gathered, &p_ref], None::<&[i64]>);
    loss_of(&out_ref, &rows_ref, &p_ref).backward();

    let lookup = emb.lookup(&index);
    assert!(lookup.output.allclose(&out_ref, 1e-6, 1e-6, false));
    loss_of(&lookup.output, &lookup.rows, p).backward();
    emb.backward(&lookup);
    for (name, got, want) in [
        ("rows", lookup.rows_grad(), rows_ref.grad()),
        ("projection", p.grad(), p_ref.grad()),
    ] {
        let err = (&got - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(err <= 1e-5 * scale, "{name}: max |Δ| {err} (scale {scale})");
    }
}
