//! Paper 004's models whole, forward in eval mode, on the same weights:
//!
//! 1. DCNv2 (stacked, with and without batch norm) and FinalMLP (feature selection on with 1 and
//!    2 fusion heads, and off) with one embedding set against FuxiCTR 2.3.10's `DCNv2` and
//!    `FinalMLP` models, built by their own constructors (tests/parity/fuxictr_model_parity.py);
//!    no dense features there, since FuxiCTR embeds numbers (Linear(1, d)) where we concatenate
//!    them raw. FuxiCTR 2.3.10's (LongCTR) `FinalMLP.forward` never calls its `fs_module`
//!    (`feat1, feat2 = flat_emb, flat_emb` whatever `use_fs` says); with feature selection on,
//!    the reference applies the model's own `fs_module` as FuxiCTR's other FinalMLP versions do.
//! 2. DNN and NFwFM, which no installable library has in this form (FuxiCTR's FwFM is the linear
//!    model), against their definitions by explicit f64 loops, with one set and with 2 and 3.
//! 3. Every multi-embedding kind with M = 3 against its definition: each set's branch computed by
//!    the layer structs on the model's weights, averaged where paper 004 averages, then the
//!    shared rest; averaging anywhere else gives another answer.
//!
//! Probabilities must agree within 1e-5 and spread (so that constant outputs cannot pass).
mod common;

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};

use mlet::config::{
    Dcnv2Config, DnnConfig, EmbeddingConfig, EmbeddingKind, FinalMlpConfig, IpnnConfig, L2Config,
    MlpSettings, ModelConfig, NfwfmConfig, XdeepfmConfig,
};
use mlet::data::Batch;
use mlet::layers::{
    batch_norm1d, AggregationInit, Cin, CrossNetV2, Dnn, FeatureSelection, FieldWeightedPooling,
    InnerProduct, InteractionAggregation, MlpBlock, MlpBlockConfig,
};
use mlet::models::{CtrModel, InputShape};

use common::{max_abs_diff, rng_lock, CARDS, DIM};

fn mlp(hidden: Vec<usize>, dropout: f64, batch_norm: bool) -> MlpSettings {
    MlpSettings {
        hidden_units: hidden,
        dropout,
        batch_norm,
    }
}

fn shape(cards: &[usize], num_dense: usize) -> InputShape {
    InputShape {
        num_dense,
        cardinalities: cards.to_vec(),
        hashed: Vec::new(),
    }
}

fn embedding(kind: EmbeddingKind, dim: usize, sets: usize) -> EmbeddingConfig {
    EmbeddingConfig {
        dim,
        sets,
        ..common::embedding(kind)
    }
}

/// A model whose every variable is redrawn N(0, scale²), batch norm's scales N(1, scale²) and
/// running variances |N(0, scale²)| + 0.5 (positive), in a fixed order; seeded under the tests'
/// RNG lock.
fn randomised(
    cfg: &ModelConfig,
    emb: &EmbeddingConfig,
    shape: &InputShape,
    scale: f64,
    seed: i64,
) -> CtrModel {
    let _rng = rng_lock();
    tch::manual_seed(seed);
    let model = CtrModel::new(cfg, emb, shape, Device::Cpu).unwrap();
    tch::no_grad(|| {
        let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut v) in vars {
            let mut noise = Tensor::randn_like(&v) * scale;
            if name.ends_with("running_var") {
                noise = noise.abs() + 0.5;
            } else if name.ends_with(".weight") && v.dim() == 1 {
                // batch norm's scale around 1, so that the signal survives the normalisation
                noise += 1.0;
            }
            v.copy_(&noise);
        }
    });
    model
}

/// `[B, m]` dense features of a batch (also for m = 0).
fn dense(batch: &Batch, num_dense: usize, kind: Kind) -> Tensor {
    Tensor::from_slice(&batch.dense)
        .view([batch.size as i64, num_dense as i64])
        .to_kind(kind)
}

/// Our logits `[B]` in eval mode.
fn logits(model: &CtrModel, batch: &Batch, num_dense: usize, kind: Kind) -> Tensor {
    tch::no_grad(|| {
        let index = model.index(&batch.cat, Device::Cpu).unwrap();
        model
            .forward(&dense(batch, num_dense, kind), &index, false)
            .logits
    })
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// max |Δp| ≤ 1e-5 and the probabilities spread over more than `min_spread`.
fn check_probs(what: &str, ours: &[f64], theirs: &[f64], min_spread: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let diff = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let spread = ours.iter().cloned().fold(f64::MIN, f64::max)
        - ours.iter().cloned().fold(f64::MAX, f64::min);
    eprintln!("{what}: max |Δp| = {diff:e} (spread {spread:.3})");
    assert!(diff <= 1e-5, "{what}: max |Δp| = {diff}");
    assert!(
        spread > min_spread,
        "{what}: predictions barely vary ({spread})"
    );
    diff
}

// ---------------------------------------------------------------------------------------------
// 1. DCNv2 and FinalMLP against FuxiCTR 2.3.10's models
// ---------------------------------------------------------------------------------------------

/// One FuxiCTR model run: its class, constructor arguments, and our model and batch.
struct FuxiCase {
    what: String,
    model: &'static str,
    kwargs: Value,
    feature_selection: bool,
    ours: CtrModel,
    batch: Batch,
}

/// Runs all cases in one Python process; returns FuxiCTR's probabilities per case.
fn fuxictr(cases: &[FuxiCase]) -> Vec<Vec<f32>> {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    let mut outputs = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        // the network's variables under our names, the collapsed tables as DeepCTR names them
        let mut named: Vec<(String, Tensor)> = c
            .ours
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.starts_with("net."))
            .collect();
        named.extend(
            c.ours
                .deepctr_state_dict()
                .into_iter()
                .filter(|(n, _)| n.starts_with("embedding_dict.")),
        );
        let named: Vec<(&str, Tensor)> = named
            .iter()
            .map(|(n, t)| (n.as_str(), t.to_kind(Kind::Float)))
            .collect();
        let weights = dir.path().join(format!("w{i}.npz"));
        Tensor::write_npz(&named, &weights).unwrap();
        let inputs = dir.path().join(format!("x{i}.npz"));
        let cat = Tensor::from_slice(&c.batch.cat).view([c.batch.size as i64, -1]);
        Tensor::write_npz(&[("cat", cat)], &inputs).unwrap();
        let output = dir.path().join(format!("y{i}.npy"));
        specs.push(json!({
            "model": c.model,
            "kwargs": c.kwargs,
            "cardinalities": CARDS,
            "dim": DIM,
            "weights": weights,
            "inputs": inputs,
            "feature_selection": c.feature_selection,
            "output": output,
        }));
        outputs.push(output);
    }
    let specs_path = dir.path().join("specs.json");
    std::fs::write(&specs_path, Value::Array(specs).to_string()).unwrap();
    common::run_parity_script("fuxictr_model_parity.py", &specs_path);
    outputs
        .iter()
        .map(|o| Vec::<f32>::try_from(&Tensor::read_npy(o).unwrap()).unwrap())
        .collect()
}

/// DCNv2 (stacked) and FinalMLP with one set equal FuxiCTR 2.3.10's models on the same weights,
/// with single-layer and MLET tables (collapsed for FuxiCTR), no dense features. Dropout is
/// configured (and off in eval mode on both sides).
#[test]
fn dcnv2_and_finalmlp_match_fuxictr_models() {
    let mut cases = Vec::new();
    let no_dense = shape(&CARDS, 0);
    for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
        for (i, batch_norm) in [true, false].into_iter().enumerate() {
            let cfg = ModelConfig::Dcnv2(Dcnv2Config {
                cross_layers: 3,
                mlp: mlp(vec![16, 8], 0.2, batch_norm),
            });
            let ours = randomised(
                &cfg,
                &embedding(kind, DIM, 1),
                &no_dense,
                0.4,
                40 + i as i64,
            );
            cases.push(FuxiCase {
                what: format!("DCNv2 stacked batch_norm={batch_norm} {kind:?}"),
                model: "DCNv2",
                kwargs: json!({
                    "model_structure": "stacked",
                    "num_cross_layers": 3,
                    "stacked_dnn_hidden_units": [16, 8],
                    "net_dropout": 0.2,
                    "batch_norm": batch_norm,
                }),
                feature_selection: false,
                ours,
                batch: common::batch(64, 0, &CARDS, 41),
            });
        }
        // (feature selection, fusion heads)
        for (i, (fs, heads)) in [(true, 1), (true, 2), (false, 2)].into_iter().enumerate() {
            let cfg = ModelConfig::Finalmlp(FinalMlpConfig {
                stream1_hidden_units: vec![16, 8],
                stream2_hidden_units: vec![12],
                dropout: 0.2,
                batch_norm: true,
                feature_selection: fs,
                fs_hidden_units: vec![10],
                fusion_heads: heads,
            });
            let ours = randomised(
                &cfg,
                &embedding(kind, DIM, 1),
                &no_dense,
                0.3,
                50 + i as i64,
            );
            cases.push(FuxiCase {
                what: format!("FinalMLP feature_selection={fs} heads={heads} {kind:?}"),
                model: "FinalMLP",
                kwargs: json!({
                    "mlp1_hidden_units": [16, 8],
                    "mlp1_dropout": 0.2,
                    "mlp1_batch_norm": true,
                    "mlp2_hidden_units": [12],
                    "mlp2_dropout": 0.2,
                    "mlp2_batch_norm": true,
                    "use_fs": fs,
                    "fs_hidden_units": [10],
                    "num_heads": heads,
                }),
                feature_selection: fs,
                ours,
                batch: common::batch(64, 0, &CARDS, 51),
            });
        }
    }
    let theirs = fuxictr(&cases);
    let mut worst = 0.0f64;
    for (c, theirs) in cases.iter().zip(&theirs) {
        let ours = to_vec(&logits(&c.ours, &c.batch, 0, Kind::Float).sigmoid());
        let theirs: Vec<f64> = theirs.iter().map(|&p| p as f64).collect();
        worst = worst.max(check_probs(&c.what, &ours, &theirs, 0.05));
    }
    eprintln!("FuxiCTR models: worst max |Δp| = {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// 2. DNN and NFwFM against their definitions, by explicit f64 loops
// ---------------------------------------------------------------------------------------------

const SMALL_CARDS: [usize; 3] = [3, 5, 2];
const SMALL_DIM: usize = 3;
const SMALL_DENSE: usize = 2;

fn affine(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
    let cols = x.len();
    assert_eq!(w.len(), b.len() * cols, "weight shape");
    b.iter()
        .enumerate()
        .map(|(o, bias)| bias + (0..cols).map(|i| w[o * cols + i] * x[i]).sum::<f64>())
        .collect()
}

/// pytorch-fm's MLP in eval mode by the formula: per hidden layer Linear, batch norm with the
/// running statistics ((h − μ) / √(σ² + 1e-5) · γ + β), ReLU; then the output Linear if any.
fn mlp_by_hand(
    v: &HashMap<String, Tensor>,
    prefix: &str,
    hidden: usize,
    batch_norm: bool,
    output: bool,
    x: &[f64],
) -> Vec<f64> {
    let stride = if batch_norm { 4 } else { 3 };
    let get = |k: usize, p: &str| to_vec(&v[&format!("{prefix}mlp.{k}.{p}")]);
    let mut h = x.to_vec();
    for i in 0..hidden {
        let k = stride * i;
        h = affine(&get(k, "weight"), &get(k, "bias"), &h);
        if batch_norm {
            let (g, b) = (get(k + 1, "weight"), get(k + 1, "bias"));
            let (mu, var) = (get(k + 1, "running_mean"), get(k + 1, "running_var"));
            for j in 0..h.len() {
                h[j] = (h[j] - mu[j]) / (var[j] + 1e-5).sqrt() * g[j] + b[j];
            }
        }
        h = h.iter().map(|a| a.max(0.0)).collect();
    }
    if output {
        let k = stride * hidden;
        h = affine(&get(k, "weight"), &get(k, "bias"), &h);
    }
    h
}

/// Example b's embedding of field f in set m, read from the (single-layer) table by the offset of
/// table m·F + f.
fn row(model: &CtrModel, table: &[f64], batch: &Batch, b: usize, m: usize, f: usize) -> Vec<f64> {
    let fields = model.embeddings.num_fields();
    let d = model.embeddings.dim() as usize;
    let id = batch.cat[b * fields + f];
    let r = (model.embeddings.offsets()[m * fields + f] + id) as usize;
    table[r * d..(r + 1) * d].to_vec()
}

/// The logits of DNN (`nfwfm = false`) or NFwFM by the definition, per example: set m's input
/// x_m = [e_m1, …, e_mF, dense] (DNN) or [BN(Σ_i Σ_j w^m_ij e_mi ⊙ e_mj), dense] (NFwFM, all
/// ordered pairs, the diagonal too), its first layer h_m = ReLU(BN(W_m x_m + b_m)), then the
/// rest of the MLP on (1/M) Σ_m h_m.
fn setwise_by_hand(
    model: &CtrModel,
    batch: &Batch,
    hidden: &[usize],
    batch_norm: bool,
    nfwfm: bool,
) -> Vec<f64> {
    assert!(
        model.embeddings.projection.is_none(),
        "a single-layer table"
    );
    let v = model.vs.variables();
    let table = to_vec(&model.embeddings.table);
    let (fields, sets) = (model.embeddings.num_fields(), model.embeddings.num_sets());
    let d = model.embeddings.dim() as usize;
    let num_dense = batch.dense.len() / batch.size;
    (0..batch.size)
        .map(|b| {
            let dense = &batch.dense[b * num_dense..(b + 1) * num_dense];
            let mut mean = vec![0.0; hidden[0]];
            for m in 0..sets {
                let e: Vec<Vec<f64>> = (0..fields)
                    .map(|f| row(model, &table, batch, b, m, f))
                    .collect();
                let mut x: Vec<f64> = if nfwfm {
                    let w = to_vec(&v[&format!("net.set{m}.fwfm.weight")]);
                    let mut pooled = vec![0.0; d];
                    for i in 0..fields {
                        for j in 0..fields {
                            for k in 0..d {
                                pooled[k] += w[i * fields + j] * e[i][k] * e[j][k];
                            }
                        }
                    }
                    if batch_norm {
                        let get = |p: &str| to_vec(&v[&format!("net.set{m}.pooling_norm.{p}")]);
                        let (g, bias) = (get("weight"), get("bias"));
                        let (mu, var) = (get("running_mean"), get("running_var"));
                        for k in 0..d {
                            pooled[k] =
                                (pooled[k] - mu[k]) / (var[k] + 1e-5).sqrt() * g[k] + bias[k];
                        }
                    }
                    pooled
                } else {
                    e.concat()
                };
                x.extend(dense.iter().map(|&a| a as f64));
                let h = mlp_by_hand(&v, &format!("net.set{m}.first."), 1, batch_norm, false, &x);
                for (acc, h) in mean.iter_mut().zip(h) {
                    *acc += h / sets as f64;
                }
            }
            let out = mlp_by_hand(&v, "net.rest.", hidden.len() - 1, batch_norm, true, &mean);
            assert_eq!(out.len(), 1);
            out[0]
        })
        .collect()
}

/// Rescales the output layer (`net.rest.mlp.{k}`, after `rest_hidden` hidden layers) so that the
/// logits on `batch` have mean 0 and standard deviation 1: random weights in such narrow layers
/// easily give near-constant or saturated probabilities, against which any comparison passes.
/// Panics if the logits are constant to start with (a dead network).
fn standardise_logits(model: &CtrModel, batch: &Batch, rest_hidden: usize, batch_norm: bool) {
    let num_dense = batch.dense.len() / batch.size;
    let l = logits(model, batch, num_dense, Kind::Double);
    let (mu, sd) = (l.mean(Kind::Double), l.std(true));
    assert!(
        sd.double_value(&[]) > 1e-6,
        "constant logits: the network is dead"
    );
    let k = rest_hidden * if batch_norm { 4 } else { 3 };
    let v = model.vs.variables();
    tch::no_grad(|| {
        let mut w = v[&format!("net.rest.mlp.{k}.weight")].shallow_clone();
        let mut b = v[&format!("net.rest.mlp.{k}.bias")].shallow_clone();
        w /= &sd;
        b -= &mu;
        b /= &sd;
    });
}

/// DNN and NFwFM in double precision equal their definitions computed by loops, with one set
/// and with 2 and 3 sets, with and without batch norm (eval mode: running statistics, which are
/// random here, and no dropout although it is configured).
#[test]
fn dnn_and_nfwfm_match_their_definitions() {
    let hidden = vec![8, 6];
    let shape = shape(&SMALL_CARDS, SMALL_DENSE);
    let mut worst = 0.0f64;
    for nfwfm in [false, true] {
        for batch_norm in [true, false] {
            for sets in [1, 2, 3] {
                let cfg = if nfwfm {
                    ModelConfig::Nfwfm(NfwfmConfig {
                        mlp: mlp(hidden.clone(), 0.3, batch_norm),
                        pooling_dropout: 0.3,
                    })
                } else {
                    ModelConfig::Dnn(DnnConfig {
                        mlp: mlp(hidden.clone(), 0.3, batch_norm),
                    })
                };
                let emb = embedding(EmbeddingKind::Single, SMALL_DIM, sets);
                let seed = 60 + 10 * nfwfm as i64 + 4 * batch_norm as i64 + sets as i64;
                let mut model = randomised(&cfg, &emb, &shape, 0.5, seed);
                model.vs.double();
                let batch = common::batch(32, SMALL_DENSE, &SMALL_CARDS, 61);
                standardise_logits(&model, &batch, hidden.len() - 1, batch_norm);
                let ours = to_vec(&logits(&model, &batch, SMALL_DENSE, Kind::Double));
                let want = setwise_by_hand(&model, &batch, &hidden, batch_norm, nfwfm);
                let what = format!(
                    "{} batch_norm={batch_norm} sets={sets}",
                    if nfwfm { "NFwFM" } else { "DNN" }
                );
                let logit_diff = ours
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                    .fold(0.0, f64::max);
                assert!(logit_diff < 1e-10, "{what}: logits differ by {logit_diff}");
                let p = |l: &[f64]| l.iter().map(|&x| sigmoid(x)).collect::<Vec<_>>();
                worst = worst.max(check_probs(&what, &p(&ours), &p(&want), 0.05));
            }
        }
    }
    eprintln!("DNN/NFwFM definitions: worst max |Δp| = {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// 3. Multi-embedding against its definition, every kind, M = 3
// ---------------------------------------------------------------------------------------------

/// The model's variables, and which of them a reference has read.
struct Weights {
    vars: HashMap<String, Tensor>,
    used: HashSet<String>,
}

impl Weights {
    fn new(model: &CtrModel) -> Weights {
        Weights {
            vars: model.vs.variables(),
            used: HashSet::new(),
        }
    }

    fn get(&mut self, name: &str) -> Tensor {
        self.used.insert(name.to_string());
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("the model has no variable {name}"))
            .shallow_clone()
    }

    /// Copies the model's `{prefix}{name}` into each variable `name` of `vs` (a layer built
    /// on its own VarStore's root).
    fn load(&mut self, vs: &nn::VarStore, prefix: &str) {
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                v.copy_(&self.get(&format!("{prefix}{name}")));
            }
        });
    }

    /// Every variable of the network (`net.*`) was read.
    fn assert_all_used(&self, what: &str) {
        let mut unused: Vec<&String> = self
            .vars
            .keys()
            .filter(|n| n.starts_with("net.") && !self.used.contains(*n))
            .collect();
        unused.sort();
        assert!(unused.is_empty(), "{what}: reference left out {unused:?}");
    }
}

fn block(
    w: &mut Weights,
    prefix: &str,
    input: usize,
    cfg: &MlpBlockConfig,
) -> (nn::VarStore, MlpBlock) {
    let vs = nn::VarStore::new(Device::Cpu);
    let b = MlpBlock::new(&vs.root(), input, cfg);
    w.load(&vs, prefix);
    (vs, b)
}

fn mean(xs: &[Tensor]) -> Tensor {
    Tensor::stack(xs, 0).mean_dim(0, false, Kind::Float)
}

/// ME logits by the definition, and the logits averaging at a wrong place would give (the mean
/// of per-set logits, i.e. after the shared rest instead of after the first layer).
fn me_by_definition(
    cfg: &ModelConfig,
    model: &CtrModel,
    batch: &Batch,
    num_dense: usize,
) -> (Tensor, Tensor) {
    let mut w = Weights::new(model);
    let index = model.index(&batch.cat, Device::Cpu).unwrap();
    let emb = model.embeddings.lookup(&index.embedding).output.detach();
    let sets = model.embeddings.num_sets();
    let e = emb.chunk(sets as i64, 1);
    let dense = dense(batch, num_dense, Kind::Float);
    let fields = CARDS.len();
    let flat = |e: &Tensor| Tensor::cat(&[e.flatten(1, -1), dense.shallow_clone()], 1);
    let first_and_rest = |w: &mut Weights, m: &MlpSettings, width: usize, s: usize| {
        let first = MlpBlockConfig {
            hidden: m.hidden_units[..1].to_vec(),
            dropout: m.dropout,
            batch_norm: m.batch_norm,
            output: None,
            ..Default::default()
        };
        let rest = MlpBlockConfig {
            hidden: m.hidden_units[1..].to_vec(),
            output: Some(1),
            ..first.clone()
        };
        let f = block(w, &format!("net.set{s}.first."), width, &first);
        let r = if s + 1 == sets {
            Some(block(w, "net.rest.", m.hidden_units[0], &rest))
        } else {
            None
        };
        (f, r)
    };
    let out = tch::no_grad(|| match cfg {
        ModelConfig::Dnn(DnnConfig { mlp: m })
        | ModelConfig::Ipnn(IpnnConfig { mlp: m })
        | ModelConfig::Nfwfm(NfwfmConfig { mlp: m, .. })
        | ModelConfig::Dcnv2(Dcnv2Config { mlp: m, .. }) => {
            let mut hidden = Vec::new();
            let mut rest = None;
            let mut keep = Vec::new();
            for (s, e_s) in e.iter().enumerate() {
                let x = match cfg {
                    ModelConfig::Dnn(_) => flat(e_s),
                    ModelConfig::Ipnn(_) => Tensor::cat(
                        &[
                            e_s.flatten(1, -1),
                            InnerProduct::new(fields, Device::Cpu).forward(e_s),
                            dense.shallow_clone(),
                        ],
                        1,
                    ),
                    ModelConfig::Nfwfm(_) => {
                        let vs = nn::VarStore::new(Device::Cpu);
                        let pooling = FieldWeightedPooling::new(&(vs.root() / "fwfm"), fields);
                        let norm = m
                            .batch_norm
                            .then(|| batch_norm1d(vs.root() / "pooling_norm", DIM));
                        w.load(&vs, &format!("net.set{s}."));
                        let mut pooled = pooling.forward(e_s);
                        if let Some(bn) = &norm {
                            pooled = bn.forward_t(&pooled, false);
                        }
                        Tensor::cat(&[pooled, dense.shallow_clone()], 1)
                    }
                    ModelConfig::Dcnv2(c) => {
                        let vs = nn::VarStore::new(Device::Cpu);
                        let x0 = flat(e_s);
                        let cross = CrossNetV2::new(
                            &(vs.root() / "cross"),
                            x0.size()[1] as usize,
                            c.cross_layers,
                        );
                        w.load(&vs, &format!("net.set{s}."));
                        cross.forward(&x0)
                    }
                    _ => unreachable!(),
                };
                let ((vs, first), r) = first_and_rest(&mut w, m, x.size()[1] as usize, s);
                hidden.push(first.forward(&x, false));
                keep.push(vs);
                if r.is_some() {
                    rest = r;
                }
            }
            let (_vs, rest) = rest.unwrap();
            let good = rest.forward(&mean(&hidden), false).squeeze_dim(1);
            let late: Vec<Tensor> = hidden.iter().map(|h| rest.forward(h, false)).collect();
            (good, mean(&late).squeeze_dim(1))
        }
        ModelConfig::Finalmlp(c) => {
            let width = fields * DIM + num_dense;
            let stream = |h: &[usize]| MlpBlockConfig {
                hidden: h.to_vec(),
                dropout: c.dropout,
                batch_norm: c.batch_norm,
                output: None,
                ..Default::default()
            };
            let (mut s1, mut s2) = (Vec::new(), Vec::new());
            let vs = nn::VarStore::new(Device::Cpu);
            let fusion = InteractionAggregation::new(
                &vs.root(),
                *c.stream1_hidden_units.last().unwrap(),
                *c.stream2_hidden_units.last().unwrap(),
                1,
                c.fusion_heads,
                AggregationInit::FuxiCtr,
            );
            w.load(&vs, "net.fusion.");
            let mut late = Vec::new();
            for (s, e_s) in e.iter().enumerate() {
                let x = flat(e_s);
                let (a, b) = if c.feature_selection {
                    let vs = nn::VarStore::new(Device::Cpu);
                    let fs = FeatureSelection::new(&vs.root(), width, DIM, &c.fs_hidden_units);
                    w.load(&vs, &format!("net.set{s}.fs."));
                    fs.forward(&x)
                } else {
                    (x.shallow_clone(), x)
                };
                let p = format!("net.set{s}.");
                let (_v1, m1) = block(
                    &mut w,
                    &format!("{p}stream1."),
                    width,
                    &stream(&c.stream1_hidden_units),
                );
                let (_v2, m2) = block(
                    &mut w,
                    &format!("{p}stream2."),
                    width,
                    &stream(&c.stream2_hidden_units),
                );
                let (y1, y2) = (m1.forward(&a, false), m2.forward(&b, false));
                late.push(fusion.forward(&y1, &y2));
                s1.push(y1);
                s2.push(y2);
            }
            let good = fusion.forward(&mean(&s1), &mean(&s2)).squeeze_dim(1);
            (good, mean(&late).squeeze_dim(1))
        }
        ModelConfig::Xdeepfm(XdeepfmConfig {
            dnn_hidden_units: hidden,
            cin_layer_size,
            cin_split_half,
            ..
        }) => {
            // linear logit: Σ_f the field's linear weight + dense · linear_model.weight
            let lin = model.linear.as_ref().unwrap();
            let lin_index = index.linear.as_ref().unwrap();
            let sparse =
                lin.lookup(lin_index)
                    .output
                    .detach()
                    .sum_dim_intlist(1, false, Kind::Float);
            let linear = sparse + dense.matmul(&w.get("net.linear_model.weight"));
            // CIN: one per set (set 0's under `cin`), averaged before cin_linear
            let mut cins = Vec::new();
            let mut firsts = Vec::new();
            for (s, e_s) in e.iter().enumerate() {
                let vs = nn::VarStore::new(Device::Cpu);
                let cin = Cin::new(&vs.root(), fields, cin_layer_size, *cin_split_half);
                let name = if s == 0 {
                    "net.cin.".to_string()
                } else {
                    format!("net.cin_set{s}.")
                };
                w.load(&vs, &name);
                cins.push(cin.forward(e_s));
                let vs = nn::VarStore::new(Device::Cpu);
                let dnn = Dnn::new(&vs.root(), fields * DIM + num_dense, &hidden[..1], 0.0, 1.0);
                w.load(&vs, &format!("net.dnn_set{s}."));
                firsts.push(dnn.forward(&flat(e_s), false));
            }
            let cin_linear = w.get("net.cin_linear.weight");
            let vs = nn::VarStore::new(Device::Cpu);
            let rest = Dnn::new(&(vs.root() / "dnn"), hidden[0], &hidden[1..], 0.0, 1.0);
            w.load(&vs, "net.");
            let dnn_linear = w.get("net.dnn_linear.weight");
            let out_bias = w.get("net.out_bias");
            let logit = |cin: &Tensor, first: &Tensor| {
                (&linear
                    + cin.matmul(&cin_linear.tr())
                    + rest.forward(first, false).matmul(&dnn_linear.tr())
                    + &out_bias)
                    .squeeze_dim(1)
            };
            let good = logit(&mean(&cins), &mean(&firsts));
            let late: Vec<Tensor> = cins.iter().zip(&firsts).map(|(c, f)| logit(c, f)).collect();
            (good, mean(&late))
        }
        _ => panic!("{} has no multi-embedding", cfg.name()),
    });
    w.assert_all_used(cfg.name());
    out
}

/// Every multi-embedding kind, M = 3, with dense features, single-layer and MLET tables: the
/// model's logits are the definition's (each set's interaction and first layer or streams, the
/// mean over sets, the shared rest), and not what averaging after the rest would give.
#[test]
fn every_me_kind_averages_where_paper_004_does() {
    let bn = |h: Vec<usize>| mlp(h, 0.2, true);
    let models = [
        ModelConfig::Dnn(DnnConfig {
            mlp: bn(vec![16, 8]),
        }),
        ModelConfig::Ipnn(IpnnConfig {
            mlp: bn(vec![16, 8]),
        }),
        ModelConfig::Nfwfm(NfwfmConfig {
            mlp: bn(vec![16, 8]),
            pooling_dropout: 0.2,
        }),
        ModelConfig::Dcnv2(Dcnv2Config {
            cross_layers: 2,
            mlp: bn(vec![16, 8]),
        }),
        ModelConfig::Finalmlp(FinalMlpConfig {
            stream1_hidden_units: vec![16, 8],
            stream2_hidden_units: vec![8],
            dropout: 0.2,
            batch_norm: true,
            feature_selection: true,
            fs_hidden_units: vec![8],
            fusion_heads: 2,
        }),
        ModelConfig::Finalmlp(FinalMlpConfig {
            stream1_hidden_units: vec![12],
            stream2_hidden_units: vec![16, 6],
            dropout: 0.0,
            batch_norm: false,
            feature_selection: false,
            fs_hidden_units: vec![8],
            fusion_heads: 1,
        }),
        ModelConfig::Xdeepfm(XdeepfmConfig {
            dnn_hidden_units: vec![16, 8],
            cin_layer_size: vec![6, 4],
            cin_split_half: true,
            dnn_dropout: 0.2,
            l2: L2Config::default(),
        }),
    ];
    let shape = shape(&CARDS, common::NUM_DENSE);
    let batch = common::batch(64, common::NUM_DENSE, &CARDS, 71);
    let mut worst = 0.0f32;
    for (i, cfg) in models.iter().enumerate() {
        for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
            let model = randomised(cfg, &embedding(kind, DIM, 3), &shape, 0.3, 70 + i as i64);
            let ours = logits(&model, &batch, common::NUM_DENSE, Kind::Float);
            let (want, late) = me_by_definition(cfg, &model, &batch, common::NUM_DENSE);
            let what = format!("{} {kind:?} M=3", cfg.name());
            let p = |t: &Tensor| Vec::<f32>::try_from(&t.sigmoid()).unwrap();
            let (po, pw) = (p(&ours), p(&want));
            let diff = max_abs_diff(&po, &pw);
            worst = worst.max(diff);
            check_probs(
                &what,
                &po.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                &pw.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                0.05,
            );
            let wrong = max_abs_diff(&po, &p(&late));
            assert!(
                wrong > 1e-3,
                "{what}: averaging after the rest gives the same ({wrong}): the test cannot tell"
            );
        }
    }
    eprintln!("ME definitions: worst max |Δp| = {worst:e}");
}
