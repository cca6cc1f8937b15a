//! The compute-bound models against the machine: libtorch's fp32 matmul rate (a large square
//! GEMM and the shapes the CIN and AutoInt run), the forward + backward rate of xDeepFM's CIN
//! and AutoInt's attention layers at their default configurations in GFLOP/s of useful work,
//! their ratio to the square GEMM's rate, and whole-model training samples/s.
//!
//! Useful work counts the FLOPs of the mathematical operation, forward and backward (each
//! product's two gradient products cost twice its forward), at 2 FLOPs per multiply-add:
//! - CIN, layer k (`H_0 = F`, `H_{k+1}` feature maps): `3 · 2·B·d·H_{k+1}·H_k·F` (the
//!   outer product's `B·d·H_k·F` multiplications and the sum pooling are not counted). The
//!   CIN runs its first layer on the symmetric field pairs (`src/layers/cin.rs`), so it
//!   executes fewer: `F(F+1)/2` instead of `F²` columns there; both rates are printed;
//! - AutoInt, per interacting layer: `3 · B·(2·F·d²·(3 + res) + 4·F²·d)` (Q, K, V and the
//!   residual projection; the scores and their weighted sum over all heads; softmax not
//!   counted). `InteractingLayer::forward` computes a reassociated form that executes
//!   `3 · B·(2·F·d²·(2·heads + res) + 4·heads·F²·d)` (1.59x at the defaults); the rate of
//!   DeepCTR-Torch's `Q, K, V` formulation is printed beside it.
//!
//! The CIN's rate is printed as training runs it (`Cin::forward_recomputing` and its own
//! backward pass, which recomputes the outer products instead of keeping them), through autograd
//! (`Cin::forward`, the evaluation and export path, differentiated by libtorch) and in
//! DeepCTR-Torch's formulation. AutoInt's likewise: as training runs it (`AttentionTape`: one
//! projection GEMM per layer and the attention in loops, with their own backward pass; it
//! executes the useful FLOPs), through autograd (`InteractingLayer::forward`, reassociated) and
//! in DeepCTR-Torch's formulation.
//!
//! Each batch size ends with issue 10's targets (at least 0.7 of the square GEMM's rate) met or
//! missed, and AutoInt's ceiling from its measured parts: the projections at the rate of their
//! GEMM (`[B·F, d] × [d, (3 + res)·d]`, timed here), the score and weighting products at the
//! square GEMM's rate, and the softmax at libtorch's speed (forward and backward over
//! `[B, heads, F, F]`, timed here; the target does not count its work but it takes time),
//! with nothing else costing time: the rate no implementation whose parts run no faster than
//! these can exceed.
//!
//! Rates are measured in alternating rounds (square GEMM, the layer as implemented, the layer
//! in DeepCTR-Torch's formulation), medians over the rounds, so that a shared machine's load
//! shifts all of them alike.
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{
    AutointConfig, EmbeddingConfig, EmbeddingKind, Family, LossReduction, ModelConfig, TableInit,
    XdeepfmConfig,
};
use mlet::layers::{AttentionTape, Cin, InteractingLayer};
use mlet::models::{CtrModel, InputShape};
use mlet::training::{train_step, Optimizer};

use crate::multi_embedding::{cpu_ms, median};
use crate::synthetic_batch;

/// Criteo's categorical fields and DeepCTR-Torch's embedding size.
const FIELDS: i64 = 26;
const DIM: i64 = 16;

/// What the bench measures.
pub struct Settings {
    pub batches: Vec<usize>,
    /// Alternating measurement rounds of the rates.
    pub rounds: usize,
    /// Timed whole-model training steps (after one warm-up step).
    pub steps: usize,
    /// libtorch's intra-op threads (default: the machine's cores).
    pub threads: usize,
}

/// Wall-clock and process CPU seconds per call of `f`.
#[derive(Clone, Copy)]
struct Seconds {
    wall: f64,
    cpu: f64,
}

/// `f` repeated until at least `min_s` of wall-clock time have passed.
fn seconds_per_call(min_s: f64, mut f: impl FnMut()) -> Seconds {
    let (start, cpu_start) = (Instant::now(), cpu_ms());
    let mut calls = 0;
    loop {
        f();
        calls += 1;
        let wall = start.elapsed().as_secs_f64();
        if wall >= min_s {
            return Seconds {
                wall: wall / calls as f64,
                cpu: (cpu_ms() - cpu_start) / 1e3 / calls as f64,
            };
        }
    }
}

/// GFLOP/s of wall-clock and of process CPU time (all threads), for `flops` per call.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

impl Rate {
    fn of(flops: f64, s: Seconds) -> Rate {
        Rate {
            wall: flops / s.wall / 1e9,
            cpu: flops / s.cpu / 1e9,
        }
    }
}

/// A GEMM `[m, k] × [k, n]` (the right factor transposed in memory where `bt`, as a weight
/// `[n, k]` is used); GFLOP/s.
struct Gemm {
    name: &'static str,
    a: Tensor,
    b: Tensor,
}

impl Gemm {
    fn new(name: &'static str, m: i64, k: i64, n: i64, bt: bool) -> Gemm {
        let opts = (Kind::Float, Device::Cpu);
        let b = if bt {
            Tensor::randn([n, k], opts).tr()
        } else {
            Tensor::randn([k, n], opts)
        };
        Gemm {
            name,
            a: Tensor::randn([m, k], opts),
            b,
        }
    }

    fn flops(&self) -> f64 {
        let (a, b) = (self.a.size(), self.b.size());
        2.0 * (a[0] * a[1] * b[1]) as f64
    }

    fn rate(&self) -> Rate {
        Rate::of(
            self.flops(),
            seconds_per_call(0.3, || drop(self.a.mm(&self.b))),
        )
    }
}

/// AutoInt's per-(sample, head) products at heads = 2: `[F, d/2] × [d/2, F]`, batched.
fn attention_bmm_rate(batch: i64) -> Rate {
    let opts = (Kind::Float, Device::Cpu);
    let q = Tensor::randn([batch * 2, FIELDS, DIM / 2], opts);
    let k = Tensor::randn([batch * 2, FIELDS, DIM / 2], opts);
    let kt = k.transpose(1, 2);
    let flops = 2.0 * (batch * 2 * FIELDS * FIELDS * DIM / 2) as f64;
    Rate::of(flops, seconds_per_call(0.3, || drop(q.bmm(&kt))))
}

/// Seconds of one interacting layer's softmax over the scores `[B, heads, F, F]`, forward and
/// backward, in libtorch (vectorised, SLEEF's `exp`): work the target does not count.
/// `scores` and the softmax's output gradient `grad` are `[B, heads, F, F]`.
fn softmax_seconds(scores: &Tensor, grad: &Tensor) -> Seconds {
    seconds_per_call(0.3, || {
        let a = scores.internal_softmax(-1, false);
        drop(Tensor::internal_softmax_backward_data(
            grad,
            &a,
            -1,
            Kind::Float,
        ));
    })
}

/// The highest rate, as a fraction of the square GEMM's, that AutoInt's layers could reach on
/// this machine if built from the parts measured beside them: the projections at their GEMM's
/// rate, the score and weighting products (forward and backward) at the square GEMM's rate,
/// the softmax at libtorch's speed (`softmax`: seconds a layer), nothing else costing time.
fn attention_ceiling(
    batch: i64,
    layers: usize,
    residual: bool,
    projection: Rate,
    square: Rate,
    softmax: f64,
) -> f64 {
    let (projections, products) = attention_layer_flops(batch, residual);
    let per_layer =
        projections / (projection.wall * 1e9) + products / (square.wall * 1e9) + softmax;
    attention_flops(batch, layers, residual) / (per_layer * layers as f64) / 1e9 / square.wall
}

/// Issue 10's target for the compute-bound layers: this fraction of the square GEMM's rate.
const TARGET: f64 = 0.7;

/// A layer under test: forward + backward of `x [B, F, d]` (requiring a gradient, as the
/// embeddings do) with a fixed output gradient.
struct LayerRun {
    x: Tensor,
    grad: Tensor,
    flops: f64,
}

impl LayerRun {
    /// The CIN as training runs it: its own backward pass, recomputing the outer products.
    fn cin_training_rate(&self, cin: &Cin) -> Rate {
        let s = seconds_per_call(0.5, || {
            let tape = cin.forward_recomputing(&self.x);
            (&tape.output * &self.grad).sum(Kind::Float).backward();
            drop(cin.backward_recomputing(&tape));
        });
        Rate::of(self.flops, s)
    }

    /// AutoInt's layers as training runs them: loops outside autograd, their own backward pass.
    fn attention_training_rate(&self, layers: &[InteractingLayer]) -> Rate {
        let s = seconds_per_call(0.5, || {
            let tape = AttentionTape::record(layers, &self.x).expect("f32 on the CPU");
            (&tape.output * &self.grad).sum(Kind::Float).backward();
            drop(tape.backward(layers));
        });
        Rate::of(self.flops, s)
    }

    fn rate(&self, forward: &dyn Fn(&Tensor) -> Tensor) -> Rate {
        let s = seconds_per_call(0.5, || {
            let y = forward(&self.x);
            // gradients accumulate into x and the weights, as in training
            (y * &self.grad).sum(Kind::Float).backward();
        });
        Rate::of(self.flops, s)
    }
}

/// Useful FLOPs of a CIN's forward + backward (module docs); with `symmetric_first`, the
/// GEMM FLOPs `Cin::forward` executes, whose first layer runs on the `F(F+1)/2` field pairs
/// `h ≤ m` of the symmetric `x^0 ⊗ x^0`.
fn cin_flops(
    batch: i64,
    fields: i64,
    dim: i64,
    sizes: &[usize],
    split_half: bool,
    symmetric_first: bool,
) -> f64 {
    let mut hidden = fields;
    let mut total = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let columns = if i == 0 && symmetric_first {
            fields * (fields + 1) / 2
        } else {
            hidden * fields
        };
        total += 2 * batch * dim * size as i64 * columns;
        hidden = if split_half && i + 1 < sizes.len() {
            size as i64 / 2
        } else {
            size as i64
        };
    }
    3.0 * total as f64
}

/// Useful FLOPs of `layers` interacting layers' forward + backward (module docs).
fn attention_flops(batch: i64, layers: usize, residual: bool) -> f64 {
    let (projections, products) = attention_layer_flops(batch, residual);
    (projections + products) * layers as f64
}

/// One interacting layer's useful FLOPs, forward + backward: its projections' and its score
/// and weighting products'.
fn attention_layer_flops(batch: i64, residual: bool) -> (f64, f64) {
    let (f, d) = (FIELDS, DIM);
    (
        3.0 * (batch * 2 * f * d * d * (3 + residual as i64)) as f64,
        3.0 * (batch * 4 * f * f * d) as f64,
    )
}

/// Median of each column of `rounds` rows.
fn column_medians(rounds: &[Vec<Rate>]) -> Vec<Rate> {
    (0..rounds[0].len())
        .map(|c| Rate {
            wall: median(rounds.iter().map(|r| r[c].wall).collect()),
            cpu: median(rounds.iter().map(|r| r[c].cpu).collect()),
        })
        .collect()
}

fn layer_rates(s: &Settings) {
    let xd = XdeepfmConfig::default();
    let ai = AutointConfig::default();
    let vs = nn::VarStore::new(Device::Cpu);
    let cin = Cin::new(
        &(vs.root() / "cin"),
        FIELDS as usize,
        &xd.cin_layer_size,
        xd.cin_split_half,
    );
    let attention: Vec<InteractingLayer> = (0..ai.att_layer_num)
        .map(|i| {
            InteractingLayer::new(
                &(vs.root() / "att" / i),
                DIM as usize,
                ai.att_head_num,
                ai.att_res,
            )
        })
        .collect();
    let attend = |x: &Tensor| {
        attention
            .iter()
            .fold(x.shallow_clone(), |h, layer| layer.forward(&h))
    };
    let attend_deepctr = |x: &Tensor| {
        attention
            .iter()
            .fold(x.shallow_clone(), |h, layer| layer.forward_deepctr_form(&h))
    };
    let width = Cin::output_width(&xd.cin_layer_size, xd.cin_split_half) as i64;
    let slice_rows = cin.rows_per_slice();
    let projected = DIM * (3 + ai.att_res as i64);
    println!(
        "GEMM rates: square 2048; CIN layer 2 ([B·d, H·F] × [H·F, H'], H = 128, F = 26, H' = \
         128) and its two gradient products on one slice of {slice_rows} rows; AutoInt's \
         projections [B·F, d] × [d, {projected}] (Q, K, V{}) and per-(sample, head) scores \
         [F, d/2] × [d/2, F], d = 16",
        if ai.att_res { ", R" } else { "" }
    );
    let hf = 128 * FIELDS;
    let gemms = [
        Gemm::new("square 2048", 2048, 2048, 2048, false),
        Gemm::new("cin z·Wᵀ", slice_rows, hf, 128, true),
        Gemm::new("cin ∂z = g·W", slice_rows, 128, hf, false),
        Gemm::new("cin ∂W = gᵀ·z", 128, slice_rows, hf, false),
    ];
    for &batch in &s.batches {
        let b = batch as i64;
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([b, FIELDS, DIM], opts).set_requires_grad(true);
        let cin_run = LayerRun {
            x: x.shallow_clone(),
            grad: Tensor::randn([b, width], opts),
            flops: cin_flops(b, FIELDS, DIM, &xd.cin_layer_size, xd.cin_split_half, false),
        };
        let att_run = LayerRun {
            x,
            grad: Tensor::randn([b, FIELDS, DIM], opts),
            flops: attention_flops(b, ai.att_layer_num, ai.att_res),
        };
        let projection = Gemm::new(
            "autoint x·[W_Q|W_K|W_V|W_R]",
            b * FIELDS,
            DIM,
            projected,
            false,
        );
        let scores_shape = [b, ai.att_head_num as i64, FIELDS, FIELDS];
        let (scores, scores_grad) = (
            Tensor::randn(scores_shape, opts),
            Tensor::randn(scores_shape, opts),
        );
        let (mut rounds, mut softmax_wall) = (Vec::new(), Vec::new());
        for _ in 0..s.rounds {
            let mut r: Vec<Rate> = gemms.iter().map(Gemm::rate).collect();
            r.push(projection.rate());
            r.push(attention_bmm_rate(b));
            r.push(cin_run.rate(&|x| cin.forward(x)));
            r.push(cin_run.rate(&|x| cin.forward_deepctr_form(x)));
            r.push(cin_run.cin_training_rate(&cin));
            r.push(att_run.rate(&attend));
            r.push(att_run.rate(&attend_deepctr));
            r.push(att_run.attention_training_rate(&attention));
            softmax_wall.push(softmax_seconds(&scores, &scores_grad).wall);
            rounds.push(r);
        }
        let m = column_medians(&rounds);
        let executed =
            cin_flops(b, FIELDS, DIM, &xd.cin_layer_size, xd.cin_split_half, true) / cin_run.flops;
        println!(
            "batch {batch}, {} thread(s), medians of {} rounds; GFLOP/s of wall-clock time and \
             of process CPU time, each also as a fraction of the square GEMM's:",
            s.threads, s.rounds
        );
        println!(
            "  {:<31} {:>8} {:>7} {:>8} {:>7}",
            "", "wall", "/sq", "CPU", "/sq"
        );
        let square = m[0];
        let line = |name: &str, r: Rate| {
            println!(
                "  {name:<31} {:>8.1} {:>7.2} {:>8.1} {:>7.2}",
                r.wall,
                r.wall / square.wall,
                r.cpu,
                r.cpu / square.cpu
            )
        };
        for (g, &rate) in gemms.iter().zip(&m) {
            line(g.name, rate);
        }
        let rows = [
            (projection.name, m[4]),
            ("autoint scores (bmm)", m[5]),
            ("CIN as trained", m[8]),
            (
                "CIN as trained, executed FLOPs",
                Rate {
                    wall: m[8].wall * executed,
                    cpu: m[8].cpu * executed,
                },
            ),
            ("CIN through autograd", m[6]),
            ("CIN, DeepCTR form", m[7]),
            ("AutoInt as trained", m[11]),
            ("AutoInt through autograd", m[9]),
            ("AutoInt, DeepCTR form", m[10]),
        ];
        for (name, rate) in rows {
            line(name, rate);
        }
        let layers = ai.att_layer_num;
        let softmax_layer = median(softmax_wall);
        let softmax = softmax_layer * layers as f64;
        let allowed = att_run.flops / (TARGET * square.wall * 1e9);
        println!(
            "  AutoInt's softmax, {layers} layers forward + backward in libtorch (not counted): \
             {:.2} ms a call, {:.2} of the time the target allows the layers ({:.2} ms)",
            softmax * 1e3,
            softmax / allowed,
            allowed * 1e3
        );
        let ceiling = attention_ceiling(b, layers, ai.att_res, m[4], square, softmax_layer);
        println!("  targets (at least {TARGET:.2} of the square GEMM's rate, wall-clock):");
        for (name, rate) in [("CIN as trained", m[8]), ("AutoInt as trained", m[11])] {
            let ratio = rate.wall / square.wall;
            let verdict = if ratio >= TARGET {
                "met".to_string()
            } else {
                format!("missed: {:.2} of the target", ratio / TARGET)
            };
            println!("    {name:<29} {ratio:>5.2}  {verdict}");
        }
        let free = attention_ceiling(b, layers, ai.att_res, m[4], square, 0.0);
        println!(
            "    AutoInt's ceiling from the parts above {ceiling:>5.2}  (the projections at their \
             GEMM's rate, the score and weighting products at the square GEMM's, the softmax at \
             libtorch's, nothing else costing time; {free:.2} with the softmax free)"
        );
    }
}

/// Median samples/s of whole-model training steps at DeepCTR-Torch's defaults (Adagrad 0.02,
/// summed loss), d = 16, 13 dense and 26 categorical fields.
fn model_samples_per_s(model_cfg: &ModelConfig, batch: usize, steps: usize) -> f64 {
    tch::manual_seed(1);
    let mut cards = vec![10_000];
    cards.extend(std::iter::repeat_n(100, FIELDS as usize - 1));
    let shape = InputShape {
        num_dense: 13,
        cardinalities: cards.clone(),
        hashed: Vec::new(),
    };
    let emb = EmbeddingConfig {
        dim: DIM as usize,
        kind: EmbeddingKind::Single,
        k: None,
        init_std: 1e-4,
        table_init: TableInit::UniformSqrtN,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    };
    let model = CtrModel::new(model_cfg, &emb, &shape, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(&Family::DeepCtr.optimizer(), &model.vs);
    let l2 = model_cfg.l2();
    let mut seconds = Vec::new();
    for step in 0..1 + steps {
        let b = synthetic_batch(step, batch, &cards);
        let start = Instant::now();
        train_step(&model, &mut opt, &b, Device::Cpu, LossReduction::Sum, &l2).unwrap();
        if step >= 1 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    batch as f64 / median(seconds)
}

fn model_rates(s: &Settings) {
    println!(
        "Whole-model training step, default configurations, d = 16, Adagrad 0.02, {} thread(s), \
         median of {} steps, samples/s:",
        s.threads, s.steps
    );
    let models = [
        ModelConfig::Xdeepfm(XdeepfmConfig::default()),
        ModelConfig::Autoint(AutointConfig::default()),
    ];
    for &batch in &s.batches {
        for cfg in &models {
            let rate = model_samples_per_s(cfg, batch, s.steps);
            println!("  {:<8} batch {batch:>5} {rate:>10.0}", cfg.name());
        }
    }
}

pub fn run(s: &Settings) {
    tch::set_num_threads(s.threads as i32);
    println!();
    layer_rates(s);
    model_rates(s);
}
