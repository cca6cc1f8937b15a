//! Multi-embedding (paper 004, `embedding.sets`): M independent tables per field in one fused
//! table, each set through its own interaction and non-linear projection, averaged; with single
//! and MLET tables; the IPNN against DeepCTR-Torch's PNN; collapse and export for M > 1.
mod common;

use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{
    Dcnv2Config, DlrmConfig, DnnConfig, EmbeddingConfig, EmbeddingKind, FinalMlpConfig, IpnnConfig,
    L2Config, LossReduction, MlpSettings, ModelConfig, NfwfmConfig, OptimizerConfig, OptimizerKind,
    XdeepfmConfig,
};
use mlet::embedding::Embeddings;
use mlet::models::CtrModel;
use mlet::training::{batch_tensors, train_step, Optimizer};

use common::{rng_lock, shape, CARDS, DIM, NUM_DENSE};

fn embedding(kind: EmbeddingKind, sets: usize) -> EmbeddingConfig {
    EmbeddingConfig {
        sets,
        ..common::embedding(kind)
    }
}

fn mlp(hidden: Vec<usize>, batch_norm: bool) -> MlpSettings {
    MlpSettings {
        hidden_units: hidden,
        dropout: 0.0,
        batch_norm,
    }
}

/// Every model kind that takes several sets, small.
fn me_models() -> Vec<ModelConfig> {
    vec![
        ModelConfig::Dnn(DnnConfig {
            mlp: mlp(vec![16, 8], true),
        }),
        ModelConfig::Ipnn(IpnnConfig {
            mlp: mlp(vec![16, 8], true),
        }),
        ModelConfig::Nfwfm(NfwfmConfig {
            mlp: mlp(vec![16, 8], true),
            pooling_dropout: 0.0,
        }),
        ModelConfig::Dcnv2(Dcnv2Config {
            cross_layers: 2,
            mlp: mlp(vec![16], true),
        }),
        ModelConfig::Finalmlp(FinalMlpConfig {
            stream1_hidden_units: vec![16, 8],
            stream2_hidden_units: vec![8],
            dropout: 0.0,
            batch_norm: true,
            feature_selection: true,
            fs_hidden_units: vec![8],
            fusion_heads: 2,
        }),
        ModelConfig::Xdeepfm(XdeepfmConfig {
            dnn_hidden_units: vec![16, 8],
            cin_layer_size: vec![6, 4],
            cin_split_half: true,
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }),
    ]
}

/// Set m of field f is table m·F + f: its own rows, its own projection, looked up with the
/// example's id; the export path (tensor ids) gives the same; collapse keeps the values.
#[test]
fn sets_are_independent_tables_of_one_fused_table() {
    let _rng = rng_lock();
    for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = embedding(kind, 3);
        let emb = Embeddings::new(&vs.root(), &CARDS, &cfg).unwrap();
        let (fields, total) = (CARDS.len(), CARDS.iter().sum::<usize>() as i64);
        assert_eq!(
            (emb.num_fields(), emb.num_sets(), emb.num_tables()),
            (5, 3, 15)
        );
        assert_eq!(emb.table.size()[0], 3 * total);
        if let Some(p) = &emb.projection {
            assert_eq!(p.size(), [15, cfg.width() as i64, DIM as i64]);
        }
        let names: Vec<String> = (1..=fields).map(|i| format!("C{i}")).collect();
        assert_eq!(emb.table_names(&names)[7], "set1.C3");

        let batch = common::batch(40, 0, &CARDS, 5);
        let index = emb.index(&batch.cat, Device::Cpu).unwrap();
        let out = emb.lookup(&index).output;
        assert_eq!(out.size(), [40, 15, DIM as i64]);
        let collapsed = emb.collapse();
        for b in [0usize, 17, 39] {
            for m in 0..3 {
                for f in 0..fields {
                    let t = m * fields + f;
                    let id = batch.cat[b * fields + f];
                    let row = collapsed.table.get(emb.offsets()[t] + id);
                    let got = out.get(b as i64).get(t as i64);
                    let diff = (&got - &row).abs().max().double_value(&[]);
                    assert!(
                        diff < 1e-5,
                        "{kind:?} example {b} set {m} field {f}: {diff}"
                    );
                }
            }
        }
        // the sets are different tables, not one table read three times
        assert!(!out
            .narrow(1, 0, 5)
            .allclose(&out.narrow(1, 5, 5), 1e-3, 1e-3, false));
        let local = Tensor::from_slice(&batch.cat).view([40, fields as i64]);
        let via_tensor = emb.forward_local(&local);
        assert!(via_tensor.allclose(&out, 1e-6, 1e-6, false));
        assert_eq!(
            emb.inference_parameters(),
            3 * total * DIM as i64,
            "the memory report counts every set"
        );
    }
}

/// Hashing composes with sets: a hashed field's M tables all have the bucket count, and the
/// export path (ids reduced in tensor ops, out-of-vocabulary ids to row 0) reads what the
/// training path reads.
#[test]
fn hashed_fields_have_buckets_in_every_set() {
    let _rng = rng_lock();
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let hashed = [mlet::embedding::HashedField {
        index: 3,
        name: "C4".into(),
        buckets: 9,
    }];
    let emb = Embeddings::hashed(
        &vs.root(),
        &CARDS,
        &hashed,
        &embedding(EmbeddingKind::Mlet, 2),
    )
    .unwrap();
    let f = CARDS.len();
    assert_eq!(emb.cardinalities()[3], 9);
    assert_eq!(emb.cardinalities()[f + 3], 9);
    assert_eq!(emb.cardinalities()[f + 1], CARDS[1] as i64);
    let batch = common::batch(30, 0, &CARDS, 2);
    let via_index = emb
        .lookup(&emb.index(&batch.cat, Device::Cpu).unwrap())
        .output;
    let local = Tensor::from_slice(&batch.cat).view([30, f as i64]);
    assert!(emb
        .forward_local(&local)
        .allclose(&via_index, 1e-6, 1e-6, false));
}

/// One Adam step on an ME model changes, in every set's tables, exactly the rows the batch
/// looked up (rows outside the batch keep their values); the linear part of xDeepFM, which has
/// one set, is indexed by its own lookup and updated too.
#[test]
fn a_step_touches_the_batch_rows_of_every_set_and_nothing_else() {
    for (model_cfg, kind) in [
        (me_models()[0].clone(), EmbeddingKind::Mlet),
        (me_models()[5].clone(), EmbeddingKind::Single),
    ] {
        let _rng = rng_lock();
        tch::manual_seed(11);
        let model = CtrModel::new(&model_cfg, &embedding(kind, 2), &shape(), Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&OptimizerConfig::new(OptimizerKind::Adam, 0.01), &model.vs);
        let batch = common::batch(6, NUM_DENSE, &CARDS, 9);
        let before: Vec<Tensor> = model
            .sparse_tables()
            .iter()
            .map(|(_, e)| e.table.copy())
            .collect();
        let no_l2 = L2Config {
            embedding: 0.0,
            linear: 0.0,
            dnn: 0.0,
            interaction: None,
        };
        let (_, index) = train_step(
            &model,
            &mut opt,
            &batch,
            Device::Cpu,
            LossReduction::Mean,
            &no_l2,
        )
        .unwrap();
        let tables = model.sparse_tables();
        let indices = [Some(&index.embedding), index.linear.as_ref()];
        for (((name, emb), before), index) in tables.iter().zip(&before).zip(indices) {
            let index = index.expect("an index per sparse table");
            let touched = Vec::<i64>::try_from(&index.unique).unwrap();
            let changed: Vec<i64> = Vec::<bool>::try_from(
                &(&emb.table - before)
                    .abs()
                    .sum_dim_intlist(1, false, Kind::Float)
                    .gt(0.0),
            )
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, &c)| c)
            .map(|(r, _)| r as i64)
            .collect();
            assert_eq!(changed, touched, "{} {name}", model_cfg.name());
            let sets = emb.num_sets() as i64;
            let per_set = CARDS.iter().sum::<usize>() as i64;
            for m in 0..sets {
                assert!(
                    touched.iter().any(|&r| r / per_set == m),
                    "{} {name}: set {m} got no update",
                    model_cfg.name()
                );
            }
        }
    }
}

/// Each ME model trains a few steps with single and MLET tables of 3 sets, gives finite
/// logits that depend on every set, and its collapsed form predicts what it predicts.
#[test]
fn every_me_model_trains_collapses_and_reads_every_set() {
    for model_cfg in me_models() {
        for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
            let _rng = rng_lock();
            tch::manual_seed(21);
            let mut model =
                CtrModel::new(&model_cfg, &embedding(kind, 3), &shape(), Device::Cpu).unwrap();
            let mut opt =
                Optimizer::new(&OptimizerConfig::new(OptimizerKind::Adam, 0.01), &model.vs);
            for s in 0..5 {
                let batch = common::batch(32, NUM_DENSE, &CARDS, 100 + s);
                let l2 = model_cfg.l2();
                let (loss, _) = train_step(
                    &model,
                    &mut opt,
                    &batch,
                    Device::Cpu,
                    LossReduction::Mean,
                    &l2,
                )
                .unwrap();
                assert!(loss.is_finite(), "{} {kind:?}", model_cfg.name());
            }
            let batch = common::batch(50, NUM_DENSE, &CARDS, 7);
            let logits = |m: &CtrModel| {
                tch::no_grad(|| {
                    let (dense, _, index) = batch_tensors(&batch, m, Device::Cpu).unwrap();
                    m.forward(&dense, &index, false).logits
                })
            };
            let trained = logits(&model);
            // zeroing the last set's rows changes the prediction: every set is read
            let last = model.embeddings.num_tables() / 3 * 2;
            let off = model.embeddings.offsets()[last];
            let saved = model.embeddings.table.copy();
            tch::no_grad(|| {
                let _ = model
                    .embeddings
                    .table
                    .narrow(0, off, saved.size()[0] - off)
                    .zero_();
            });
            let without_last = logits(&model);
            tch::no_grad(|| model.embeddings.table.copy_(&saved));
            let moved = (&trained - &without_last).abs().max().double_value(&[]);
            assert!(
                moved > 1e-4,
                "{} {kind:?}: set 2 unused ({moved})",
                model_cfg.name()
            );

            model.collapse();
            let diff = (&trained - logits(&model)).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "{} {kind:?}: collapse moved logits by {diff}",
                model_cfg.name()
            );
        }
    }
}

/// ME is not one wide embedding. The DNN with M = 2 sets of width d averages the sets after
/// each one's non-linear first layer. A single-embedding DNN of width 2d whose table is the two
/// sets side by side and whose first layer is the mean of the two sets' first layers computes
/// the mean of their pre-activations: equal to ME's up to the ReLU, different after it. Were
/// the sets averaged before the non-linearity, the two models would agree exactly.
#[test]
fn two_sets_are_not_one_table_twice_as_wide() {
    let _rng = rng_lock();
    tch::manual_seed(8);
    let dnn = ModelConfig::Dnn(DnnConfig {
        mlp: mlp(vec![12, 6], false),
    });
    let me = CtrModel::new(
        &dnn,
        &embedding(EmbeddingKind::Single, 2),
        &shape(),
        Device::Cpu,
    )
    .unwrap();
    let wide_cfg = EmbeddingConfig {
        dim: 2 * DIM,
        ..embedding(EmbeddingKind::Single, 1)
    };
    let se = CtrModel::new(&dnn, &wide_cfg, &shape(), Device::Cpu).unwrap();
    let vars = |m: &CtrModel| m.vs.variables();
    let (mv, sv) = (vars(&me), vars(&se));
    let f = CARDS.len() as i64;
    let d = DIM as i64;
    let rows = CARDS.iter().sum::<usize>() as i64;
    tch::no_grad(|| {
        // table: [set 0 | set 1] side by side
        let t = &me.embeddings.table;
        let wide = Tensor::cat(&[t.narrow(0, 0, rows), t.narrow(0, rows, rows)], 1);
        se.embeddings.table.shallow_clone().copy_(&wide);
        // first layer: W_se = ½ [W0 per field, interleaved with W1 per field | W0_dense + W1_dense]
        let first = |m: usize, p: &str| mv[&format!("net.set{m}.first.mlp.0.{p}")].shallow_clone();
        let (w0, w1) = (first(0, "weight"), first(1, "weight"));
        let h = w0.size()[0];
        let emb_part = |w: &Tensor| w.narrow(1, 0, f * d).view([h, f, d]);
        let fields = Tensor::cat(&[emb_part(&w0), emb_part(&w1)], 2).view([h, 2 * f * d]);
        let dense = w0.narrow(1, f * d, NUM_DENSE as i64) + w1.narrow(1, f * d, NUM_DENSE as i64);
        let w = Tensor::cat(&[fields, dense], 1) * 0.5;
        sv["net.set0.first.mlp.0.weight"].shallow_clone().copy_(&w);
        let b = (first(0, "bias") + first(1, "bias")) * 0.5;
        sv["net.set0.first.mlp.0.bias"].shallow_clone().copy_(&b);
        for (name, v) in &mv {
            if name.starts_with("net.rest") {
                sv[name].shallow_clone().copy_(v);
            }
        }
    });
    let batch = common::batch(200, NUM_DENSE, &CARDS, 4);
    let (dense, _, me_index) = batch_tensors(&batch, &me, Device::Cpu).unwrap();
    let (_, _, se_index) = batch_tensors(&batch, &se, Device::Cpu).unwrap();
    let me_emb = tch::no_grad(|| me.embeddings.lookup(&me_index.embedding).output);
    let se_emb = tch::no_grad(|| se.embeddings.lookup(&se_index.embedding).output);
    // pre-activations of the first layer agree: the construction is the linear equivalent
    let pre = |w: &Tensor, b: &Tensor, e: &Tensor| {
        Tensor::cat(&[e.flatten(1, -1), dense.shallow_clone()], 1).matmul(&w.tr()) + b
    };
    let me_pre = tch::no_grad(|| {
        let sets = me_emb.chunk(2, 1);
        let p = |m: usize| {
            let w = &mv[&format!("net.set{m}.first.mlp.0.weight")];
            let b = &mv[&format!("net.set{m}.first.mlp.0.bias")];
            pre(w, b, &sets[m])
        };
        (p(0) + p(1)) * 0.5
    });
    let se_pre = tch::no_grad(|| {
        pre(
            &sv["net.set0.first.mlp.0.weight"],
            &sv["net.set0.first.mlp.0.bias"],
            &se_emb,
        )
    });
    let linear_gap = (&me_pre - &se_pre).abs().max().double_value(&[]);
    assert!(linear_gap < 1e-5, "the linear parts differ by {linear_gap}");
    // … the models do not
    let p = |m: &CtrModel, i| tch::no_grad(|| m.forward(&dense, i, false).logits);
    let gap = (p(&me, &me_index) - p(&se, &se_index))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        gap > 1e-3,
        "ME with 2 sets equals one table of width 2d (gap {gap})"
    );
}

/// IPNN with one set and no batch norm is DeepCTR-Torch 0.3.0's PNN (inner products, no outer).
#[test]
fn ipnn_matches_deepctr_torch_pnn() {
    let cfg = ModelConfig::Ipnn(IpnnConfig {
        mlp: mlp(vec![16, 8], false),
    });
    common::check_parity(
        &cfg,
        "PNN",
        json!({"dnn_hidden_units": [16, 8], "use_inner": true, "use_outter": false}),
        13,
        17,
    );
}

/// `embedding.sets` is checked: 0 and models without multi-embedding are errors naming the key.
#[test]
fn bad_sets_are_errors_naming_the_key() {
    let dlrm = ModelConfig::Dlrm(DlrmConfig {
        bottom_mlp: vec![8],
        top_mlp: vec![8],
    });
    let err = CtrModel::new(
        &dlrm,
        &embedding(EmbeddingKind::Single, 2),
        &shape(),
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("embedding.sets"), "{err}");
    let text = "name: x\ndata: {synthetic: {rows: 100, seed: 1}}\nmodel: {kind: dnn}\n\
                embedding: {dim: 4, sets: 0}\nruns:\n  - name: a\n";
    for (text, want) in [
        (text.to_string(), "at least 1"),
        (
            text.replace("kind: dnn", "kind: wdl")
                .replace("sets: 0", "sets: 2"),
            "wdl",
        ),
    ] {
        let err = mlet::config::parse_runs(&text).err().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("embedding.sets") && msg.contains(want),
            "{msg}"
        );
    }
}

/// The end-to-end check: a DCNv2 with 4 MLET embedding sets trains (Adam, two epochs with
/// early stopping), collapses (in the run: `collapse_max_abs_diff`), exports to TorchScript with
/// 4 collapsed tables per field, and reloads in libtorch and in Python's `torch.jit.load`
/// predicting what the trained model predicts on held-out rows.
#[test]
fn four_mlet_sets_train_collapse_export_and_reload_in_python() {
    use mlet::export::{export_run, load_run, schema_path};
    use mlet::training::predict;
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "
name: me
data:
  synthetic: {{rows: 6000, seed: 4}}
  split: {{valid: 0.1, test: 0.1, seed: 0}}
  cache: {cache}
model: {{kind: dcnv2, cross_layers: 2, mlp: {{hidden_units: [32, 16]}}}}
embedding: {{dim: 4, sets: 4, kind: mlet, k: 16}}
training: {{epochs: 2, batch_size: 256, seed: 3}}
output: {out}
runs:
  - name: me4-mlet
",
        cache = tmp.path().join("cache").display(),
        out = tmp.path().join("runs").display()
    );
    let runs = common::train_experiment(&text);
    let run = &runs[0];
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let collapse = metrics["collapse_max_abs_diff"].as_f64().unwrap();
    assert!(collapse < 1e-4, "collapsed vs trained logits: {collapse}");
    assert!(
        metrics["best_epoch"].as_u64().is_some(),
        "paper 004's family early-stops"
    );

    let out = tmp.path().join("me.pt");
    let tables = tmp.path().join("me.safetensors");
    export_run(run, &out, Some(&tables), Device::Cpu).unwrap();
    let loaded = load_run(run, Device::Cpu).unwrap();
    assert_eq!(loaded.model.embeddings.num_sets(), 4);
    let cache = tmp.path().join("cache");
    let data = mlet::data::Dataset::open(&cache).unwrap();
    let split = data.split(mlet::data::Split::Test);
    let n = 200.min(split.len);
    let trained: Vec<f32> = predict(&loaded.model, &split, 4096, Some(n), Device::Cpu)
        .unwrap()
        .iter()
        .map(|z| 1.0 / (1.0 + (-z).exp()))
        .collect();
    let spread = trained.iter().cloned().fold(f32::MIN, f32::max)
        - trained.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.01, "predictions barely vary ({spread})");
    let (dense, cat) = common::test_rows(&cache, n);
    let module = tch::CModule::load(&out).unwrap();
    for size in [n as i64, 7] {
        let p = module
            .forward_ts(&[dense.narrow(0, 0, size), cat.narrow(0, 0, size)])
            .unwrap();
        let p = Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap();
        let diff = common::max_abs_diff(&p, &trained[..size as usize]);
        eprintln!("CModule batch {size}: max |Δp| = {diff:e}");
        assert!(diff <= 1e-5, "CModule at batch {size} differs by {diff}");
    }
    let p = common::python_predict(tmp.path(), "me", &out, &dense, &cat);
    let diff = common::max_abs_diff(&p, &trained);
    eprintln!("torch.jit.load: max |Δp| = {diff:e}");
    assert!(diff <= 1e-5, "Python differs by {diff}");

    // 4 collapsed n x d tables per field, named by set, equal to the collapsed model's
    let read = Tensor::read_safetensors(&tables).unwrap();
    let collapsed = loaded.model.embeddings.collapse();
    let f = collapsed.num_fields();
    assert_eq!(
        read.iter().filter(|(n, _)| n.starts_with("set")).count(),
        4 * f
    );
    let t = 3 * f + 2; // set 3 of the third field
    let (_, table) = read
        .iter()
        .find(|(n, _)| n == "set3.C3")
        .expect("table set3.C3");
    let want = collapsed
        .table
        .narrow(0, collapsed.offsets()[t], collapsed.cardinalities()[t]);
    assert_eq!(table.size(), [collapsed.cardinalities()[t], 4]);
    assert!(table.allclose(&want, 0.0, 0.0, false));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path(&out)).unwrap()).unwrap();
    assert_eq!(schema["embedding"]["sets"], 4);
    // the memory report counts every set: Σn · d · 4 sets, in bytes
    let rows: i64 = loaded.shape.cardinalities.iter().map(|&c| c as i64).sum();
    assert_eq!(
        metrics["embedding_params"]["inference"].as_i64().unwrap(),
        4 * rows * 4
    );
}
