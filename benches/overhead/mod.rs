//! MLET's overhead: the training-step time of an MLET table (k = 64) against a single-layer table
//! (d = 16) in the same model, for DLRM (paper config, batch 128, SGD 0.2) and DeepFM (batch 256,
//! Adagrad 0.02, DeepCTR's defaults). The target is ≤ 1.15×.
//!
//! Batches come from `mlet data synth`'s generator (Criteo's 26 fields at the sizes of a 1M-row
//! synthetic set, Zipf-distributed values), so a batch touches as many distinct rows as real
//! training does. Both models are built once and train on the same batches, their steps
//! interleaved (each pair in alternating order); each round gives the ratio of the two median
//! step times (wall-clock and process CPU time); the reported ratios are the medians over rounds.
use std::time::Instant;
use tch::Device;

use mlet::config::{
    DeepfmConfig, DlrmConfig, EmbeddingConfig, EmbeddingKind, Family, L2Config, ModelConfig,
    TrainingConfig,
};
use mlet::data::{synthetic_cardinalities, Batch, SynthConfig, Synthesizer};
use mlet::models::{CtrModel, InputShape};
use mlet::training::{train_step, Optimizer};

use crate::multi_embedding::{cpu_ms, median};

/// The synthetic data set whose value distributions the batches follow.
const SYNTH_ROWS: usize = 1_000_000;
const DIM: usize = 16;
const MLET_K: usize = 64;

#[derive(Clone, Copy)]
pub struct Settings {
    /// Alternating rounds; each times `steps` steps of both kinds after `warmup` untimed ones.
    pub rounds: usize,
    pub warmup: usize,
    pub steps: usize,
    pub threads: usize,
}

struct Workload {
    name: &'static str,
    model: ModelConfig,
    family: Family,
}

fn workloads() -> [Workload; 2] {
    [
        Workload {
            name: "dlrm b128 sgd",
            model: ModelConfig::Dlrm(DlrmConfig::default()),
            family: Family::Dlrm,
        },
        Workload {
            name: "deepfm b256 adagrad",
            model: ModelConfig::Deepfm(DeepfmConfig::default()),
            family: Family::DeepCtr,
        },
    ]
}

/// `count` batches of `size` synthetic rows: a field's id is its value's Zipf rank (0 when
/// missing), dense features log-scaled as `mlet data prepare` does by default.
fn batches(count: usize, size: usize) -> (Vec<Batch>, Vec<usize>) {
    let synth = Synthesizer::new(&SynthConfig {
        rows: SYNTH_ROWS,
        seed: 7,
    })
    .expect("synthetic generator");
    let cards: Vec<usize> = synthetic_cardinalities(SYNTH_ROWS)
        .iter()
        .map(|&n| n as usize + 1)
        .collect();
    let mut rows = (0..synth.num_chunks()).flat_map(|c| synth.chunk(c));
    let out = (0..count)
        .map(|_| {
            let mut b = Batch {
                size,
                ..Default::default()
            };
            for row in rows.by_ref().take(size) {
                b.dense.extend(
                    row.dense
                        .iter()
                        .map(|v| v.map_or(0.0, |x| (x.max(0) as f32 + 1.0).ln())),
                );
                b.cat
                    .extend(row.rank.iter().map(|r| r.map_or(0, |r| r as i64)));
                b.label.push(row.label as f32);
            }
            b
        })
        .collect();
    (out, cards)
}

struct Trainee {
    model: CtrModel,
    optimizer: Optimizer,
}

fn trainee(w: &Workload, kind: EmbeddingKind, cards: &[usize]) -> Trainee {
    tch::manual_seed(1);
    let shape = InputShape {
        num_dense: 13,
        cardinalities: cards.to_vec(),
        hashed: Vec::new(),
    };
    let emb = EmbeddingConfig::new(DIM, kind, Some(MLET_K));
    let model = CtrModel::new(&w.model, &emb, &shape, Device::Cpu).expect("model");
    let optimizer = Optimizer::new(&w.family.optimizer(), &model.vs);
    Trainee { model, optimizer }
}

/// One training step on `batch`: its (process CPU time, wall-clock time) in milliseconds.
fn time_step(
    t: &mut Trainee,
    batch: &Batch,
    training: &TrainingConfig,
    l2: &L2Config,
) -> (f64, f64) {
    let (start_cpu, start_wall) = (cpu_ms(), Instant::now());
    train_step(
        &t.model,
        &mut t.optimizer,
        batch,
        Device::Cpu,
        training.loss_reduction,
        l2,
    )
    .expect("step");
    (
        cpu_ms() - start_cpu,
        start_wall.elapsed().as_secs_f64() * 1e3,
    )
}

/// The median of `ratios` and their range, as printed.
fn ratio_column(ratios: &[f64]) -> String {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    format!("{:.3} ({lo:.2}-{hi:.2})", median(ratios.to_vec()))
}

pub fn run(s: &Settings) {
    tch::set_num_threads(s.threads as i32);
    println!(
        "\nMLET overhead: step time of MLET (k = {MLET_K}) / single-layer (d = {DIM}), {} \
         thread(s), {} rounds x {} steps; per round the ratio of median step times, wall-clock \
         and process CPU time (CPU time counts libtorch's threads spinning between small \
         operations; on a busy machine it is the steadier of the two); median ratio over rounds \
         with its range (target ratio <= 1.15)",
        s.threads, s.rounds, s.steps
    );
    println!(
        "{:<20} {:>9} {:>9} {:>20} {:>20}",
        "workload", "single", "mlet", "wall ratio (range)", "CPU ratio (range)"
    );
    for w in workloads() {
        let training = w.family.training();
        let per_round = s.warmup + s.steps;
        let (data, cards) = batches(s.rounds * per_round, training.batch_size);
        let mut single = trainee(&w, EmbeddingKind::Single, &cards);
        let mut mlet = trainee(&w, EmbeddingKind::Mlet, &cards);
        let wall = Instant::now();
        let (mut single_ms, mut mlet_ms) = (Vec::new(), Vec::new());
        let (mut wall_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        let l2 = w.model.l2();
        for (round, chunk) in data.chunks(per_round).enumerate() {
            // the two models' steps interleave, each pair in alternating order: this VM's speed
            // drifts within a fraction of a second, which timing one model's steps and then the
            // other's would read as a difference between them
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, batch) in chunk.iter().enumerate() {
                let step = |t: &mut Trainee| time_step(t, batch, &training, &l2);
                let (x, y) = if (i + round) % 2 == 0 {
                    let x = step(&mut single);
                    (x, step(&mut mlet))
                } else {
                    let y = step(&mut mlet);
                    (step(&mut single), y)
                };
                if i >= s.warmup {
                    a.push(x);
                    b.push(y);
                }
            }
            let medians = |v: &[(f64, f64)]| {
                (
                    median(v.iter().map(|t| t.0).collect()),
                    median(v.iter().map(|t| t.1).collect()),
                )
            };
            let (a, b) = (medians(&a), medians(&b));
            single_ms.push(a.1);
            mlet_ms.push(b.1);
            cpu_ratios.push(b.0 / a.0);
            wall_ratios.push(b.1 / a.1);
        }
        println!(
            "{:<20} {:>7.2}ms {:>7.2}ms {:>20} {:>20}   ({:.0} s)",
            w.name,
            median(single_ms),
            median(mlet_ms),
            ratio_column(&wall_ratios),
            ratio_column(&cpu_ratios),
            wall.elapsed().as_secs_f64()
        );
    }
}
