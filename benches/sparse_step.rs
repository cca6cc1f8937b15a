//! `make bench`: the benchmark parts, each in its own module.
//! - `overhead` (`overhead/mod.rs`): MLET's step time against a single-layer table's, DLRM and
//!   DeepFM, on 1 thread and on `--threads` (default 2; only those when `--threads` is given);
//! - `dlrm` (here): DLRM's step time with one field of 10^4 vs 10^7 rows, single-layer and MLET
//!   (with sparse updates it must not grow with the table);
//! - `multi` (`multi_embedding/mod.rs`): DCNv2 and DNN with M = 1, 2, 4, 10 embedding sets
//!   against single embedding of the same total size;
//! - `memory` (`memory/mod.rs`): peak resident memory of three whole runs against their budget;
//! - `compute` (`compute/mod.rs`): the machine's matmul rate, xDeepFM's CIN and AutoInt's
//!   attention against it, and their whole-model samples/s;
//! - `prepare` (`prepare/mod.rs`): `mlet data prepare`'s rows/s on a synthetic file.
//!
//! Arguments after `--`: part names (only those parts; all by default), `--threads N` (of the
//! overhead, multi-embedding and compute parts), `--rounds N` (overhead and compute rounds),
//! `--batch N`, `--warmup N`,
//! `--steps N`, `--csv PATH` (multi-embedding), `--rows N[,N...]`, `--max-steps N` (memory),
//! `--prepare-rows N`, `--prepare-runs N` (prepare).
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

use mlet::config::{
    DlrmConfig, EmbeddingConfig, EmbeddingKind, LossReduction, ModelConfig, OptimizerConfig,
    TableInit,
};
use mlet::data::Batch;
use mlet::models::{CtrModel, InputShape};
use mlet::training::{train_step, Optimizer};

mod compute;
mod memory;
mod multi_embedding;
mod overhead;
mod prepare;

const BATCH: usize = 128;
const STEPS: usize = 60;
const WARMUP: usize = 10;

/// Batch `step` of a fixed synthetic stream: 13 dense features, one id per field of
/// cardinalities `cards`, about a quarter positive labels.
fn synthetic_batch(step: usize, size: usize, cards: &[usize]) -> Batch {
    // a cheap deterministic pseudo-random stream (no timing noise from an RNG crate)
    let mut x = (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut b = Batch {
        size,
        ..Default::default()
    };
    for _ in 0..size {
        b.dense
            .extend((0..13).map(|_| (next() % 100) as f32 / 50.0));
        b.cat
            .extend(cards.iter().map(|&n| (next() % n as u64) as i64));
        b.label.push((next() % 4 == 0) as u8 as f32);
    }
    b
}

fn median_step_ms(big_rows: usize, kind: EmbeddingKind) -> f64 {
    tch::manual_seed(1);
    // one field of `big_rows` plus 25 small ones, as Criteo has a few huge fields
    let mut cards = vec![big_rows];
    cards.extend(std::iter::repeat_n(100, 25));
    let shape = InputShape {
        num_dense: 13,
        cardinalities: cards.clone(),
        hashed: Vec::new(),
    };
    let emb = EmbeddingConfig {
        dim: 16,
        kind,
        k: Some(64),
        init_std: 0.25,
        table_init: TableInit::UniformSqrtN,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    };
    let model_cfg = ModelConfig::Dlrm(DlrmConfig {
        bottom_mlp: vec![512, 256, 128],
        top_mlp: vec![512, 256],
    });
    let model = CtrModel::new(&model_cfg, &emb, &shape, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            lr: 0.2,
            ..mlet::config::Family::Dlrm.optimizer()
        },
        &model.vs,
    );
    let mut times = Vec::new();
    for step in 0..WARMUP + STEPS {
        let b = synthetic_batch(step, BATCH, &cards);
        let start = Instant::now();
        train_step(
            &model,
            &mut opt,
            &b,
            Device::Cpu,
            LossReduction::Mean,
            &model_cfg.l2(),
        )
        .unwrap();
        if step >= WARMUP {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn dlrm() {
    println!("DLRM step, batch {BATCH}, d = 16, 26 fields, median of {STEPS} steps");
    println!(
        "{:<8} {:>12} {:>12} {:>8}",
        "kind", "10^4 rows", "10^7 rows", "ratio"
    );
    for (name, kind) in [
        ("single", EmbeddingKind::Single),
        ("mlet-k64", EmbeddingKind::Mlet),
    ] {
        let small = median_step_ms(10_000, kind);
        let big = median_step_ms(10_000_000, kind);
        println!(
            "{name:<8} {small:>10.2}ms {big:>10.2}ms {:>8.2}",
            big / small
        );
    }
}

fn main() {
    // multi-embedding defaults: paper 004 trains with batch 2048; 512 keeps `make bench` near 10
    // minutes on 2 cores (DCNv2 with one d = 100 embedding takes ~2 s of CPU per 512 examples)
    let mut me = multi_embedding::Settings {
        batch: 512,
        warmup: 3,
        steps: 10,
        threads: 1,
        csv: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/multi_embedding.csv"),
    };
    let mut mlet_overhead = overhead::Settings {
        rounds: 15,
        warmup: 5,
        steps: 30,
        threads: 2,
    };
    let mut compute_settings = compute::Settings {
        batches: vec![256, 2048],
        rounds: 5,
        steps: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut parts: Vec<String> = Vec::new();
    let mut mem = memory::Settings {
        rows: vec![1_000_000, 4_000_000],
        max_steps: 300,
        threads: 1,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/memory"),
    };
    let mut pp = prepare::Settings {
        rows: 1_000_000,
        runs: 5,
    };
    let mut threads_given = false;
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} takes a positive number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            // cargo bench passes --bench to harness-less benches
            "--bench" => {}
            "dlrm" | "multi" | "overhead" | "compute" | "memory" | "prepare" => parts.push(a),
            "--rounds" => {
                mlet_overhead.rounds = number(args.next(), "--rounds").max(1);
                compute_settings.rounds = mlet_overhead.rounds;
            }
            "--rows" => {
                let list = args.next().unwrap_or_default();
                mem.rows = list
                    .split(',')
                    .map(|n| number(Some(n.to_string()), "--rows").max(1000))
                    .collect();
            }
            "--max-steps" => mem.max_steps = number(args.next(), "--max-steps").max(1),
            "--prepare-rows" => pp.rows = number(args.next(), "--prepare-rows").max(1),
            "--prepare-runs" => pp.runs = number(args.next(), "--prepare-runs").max(1),
            "--batch" => me.batch = number(args.next(), "--batch"),
            "--warmup" => me.warmup = number(args.next(), "--warmup"),
            "--steps" => me.steps = number(args.next(), "--steps").max(1),
            "--threads" => {
                threads_given = true;
                me.threads = number(args.next(), "--threads").max(1);
                mlet_overhead.threads = me.threads;
                compute_settings.threads = me.threads;
            }
            "--csv" => me.csv = args.next().expect("--csv takes a path").into(),
            other => panic!(
                "unknown argument {other:?} (overhead, dlrm, multi, compute, memory, prepare, \
                 --threads N, \
                 --rounds N, --batch N, --warmup N, --steps N, --csv PATH, --rows N[,N...], \
                 --max-steps N, --prepare-rows N, --prepare-runs N)"
            ),
        }
    }
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("overhead") {
        // without --threads: on one thread too, the step's work without libtorch's threading
        // (MLET's hand-written loops run on one thread, libtorch's operations on both)
        if !threads_given && mlet_overhead.threads > 1 {
            overhead::run(&overhead::Settings {
                threads: 1,
                ..mlet_overhead
            });
        }
        overhead::run(&mlet_overhead);
    }
    if wanted("dlrm") {
        dlrm();
    }
    if wanted("multi") {
        multi_embedding::run(&me);
    }
    if wanted("compute") {
        compute::run(&compute_settings);
    }
    if wanted("memory") {
        memory::run(&mem);
    }
    if wanted("prepare") {
        prepare::run(&pp);
    }
}
