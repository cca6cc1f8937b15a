//! Multi-embedding (paper 004) step time: DCNv2 and DNN at d = 10 with M = 1, 2, 4, 10
//! embedding sets, single-layer and MLET (k = 64) tables, on 26 Criteo-shaped fields of which one
//! is small (10^4 rows) or large; and single embedding at the same total size (d = 10·M, one
//! set), paper 004's SE-vs-ME comparison.
//!
//! The M sets are M·F tables of one fused table, so a step touches M times the rows and runs M
//! interactions (each set has its own cross network or first hidden layer); the table's size
//! should not matter. Prints a table and writes it as CSV (`--csv PATH`, default
//! `target/bench/multi_embedding.csv`).
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

use mlet::config::{
    Dcnv2Config, DnnConfig, EmbeddingConfig, EmbeddingKind, LossReduction, MlpSettings,
    ModelConfig, OptimizerConfig, OptimizerKind, TableInit,
};
use mlet::models::{CtrModel, InputShape};
use mlet::training::{train_step, Optimizer};

use crate::synthetic_batch;

/// Base embedding size (paper 004's d = 10 for DCNv2 and DNN on Criteo).
const DIM: usize = 10;
const SETS: [usize; 4] = [1, 2, 4, 10];
const SMALL_ROWS: usize = 10_000;
/// The large field's rows for single-layer tables.
const LARGE_ROWS_SINGLE: usize = 10_000_000;
/// The large field's rows for MLET tables: at 10^7 rows, M = 10 sets of k = 64 would be a
/// 25.6 GB table (and Adam's two moments as much again each), beyond the 24 GB machine.
const LARGE_ROWS_MLET: usize = 1_000_000;
const MLET_K: usize = 64;

/// What the bench measures.
pub struct Settings {
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    /// libtorch's intra-op threads for this part.
    pub threads: usize,
    pub csv: PathBuf,
}

/// Medians over the timed steps: wall-clock and the process's CPU time (all threads), in ms.
/// On a shared machine the CPU time is the steadier measure: time spent waiting for a core
/// does not count.
#[derive(Clone, Copy)]
struct Step {
    wall: f64,
    cpu: f64,
}

pub fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 * 1e-6
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Clone, Copy, PartialEq)]
enum Net {
    Dcnv2,
    Dnn,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Dcnv2 => "dcnv2",
            Net::Dnn => "dnn",
        }
    }

    /// Paper 004's settings: MLP 400-400, dropout 0.2, batch norm; DCNv2 with 4 cross layers.
    fn config(self) -> ModelConfig {
        let mlp = MlpSettings {
            hidden_units: vec![400, 400],
            dropout: 0.2,
            batch_norm: true,
        };
        match self {
            Net::Dcnv2 => ModelConfig::Dcnv2(Dcnv2Config {
                cross_layers: 4,
                mlp,
            }),
            Net::Dnn => ModelConfig::Dnn(DnnConfig { mlp }),
        }
    }
}

fn kind_name(kind: EmbeddingKind) -> &'static str {
    match kind {
        EmbeddingKind::Single => "single",
        EmbeddingKind::Mlet => "mlet-k64",
    }
}

fn large_rows(kind: EmbeddingKind) -> usize {
    match kind {
        EmbeddingKind::Single => LARGE_ROWS_SINGLE,
        EmbeddingKind::Mlet => LARGE_ROWS_MLET,
    }
}

/// One measurement: `sets` sets of dimension `dim`, one field of `big_rows` rows.
struct Case {
    net: Net,
    kind: EmbeddingKind,
    sets: usize,
    dim: usize,
    big_rows: usize,
}

/// Median milliseconds of `steps` timed training steps after `warmup` (the same batches for
/// every case), with paper 004's optimizer: Adam, lr 1e-3, weight decay 1e-6, mean loss.
fn median_step_ms(case: &Case, s: &Settings) -> Step {
    tch::manual_seed(1);
    let mut cards = vec![case.big_rows];
    cards.extend(std::iter::repeat_n(100, 25));
    let shape = InputShape {
        num_dense: 13,
        cardinalities: cards.clone(),
        hashed: Vec::new(),
    };
    let emb = EmbeddingConfig {
        dim: case.dim,
        kind: case.kind,
        k: Some(MLET_K),
        init_std: 0.25,
        table_init: TableInit::UniformSqrtN,
        table_std: 1e-4,
        sets: case.sets,
        hash: None,
    };
    let model_cfg = case.net.config();
    let model = CtrModel::new(&model_cfg, &emb, &shape, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            weight_decay: 1e-6,
            ..OptimizerConfig::new(OptimizerKind::Adam, 1e-3)
        },
        &model.vs,
    );
    let l2 = model_cfg.l2();
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for step in 0..s.warmup + s.steps {
        let b = synthetic_batch(step, s.batch, &cards);
        let (start, cpu_start) = (Instant::now(), cpu_ms());
        train_step(&model, &mut opt, &b, Device::Cpu, LossReduction::Mean, &l2).unwrap();
        if step >= s.warmup {
            cpu.push(cpu_ms() - cpu_start);
            wall.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Step {
        wall: median(wall),
        cpu: median(cpu),
    }
}

/// One line of the result: multi-embedding at (M, d = 10) on the small and large field, and
/// single embedding at d = 10·M on the small field.
struct Row {
    net: Net,
    kind: EmbeddingKind,
    sets: usize,
    me_small: Step,
    me_large: Step,
    se_small: Step,
}

fn fmt_rows(n: usize) -> String {
    let e = (n as f64).log10().round() as i32;
    if 10usize.pow(e as u32) == n {
        format!("10^{e}")
    } else {
        n.to_string()
    }
}

pub fn run(s: &Settings) {
    tch::set_num_threads(s.threads as i32);
    println!();
    println!(
        "Multi-embedding step (paper 004's DCNv2 and DNN, Adam lr 1e-3 wd 1e-6), batch {}, \
         d = {DIM} per set, 26 fields (one of 10^4 or more rows), {} libtorch thread(s), median \
         of {} steps after {} warm-up; ms of process CPU time per step (wall-clock in the last \
         column and the CSV)",
        s.batch, s.threads, s.steps, s.warmup
    );
    let mut rows = Vec::new();
    for net in [Net::Dcnv2, Net::Dnn] {
        for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
            for &sets in &SETS {
                let me = |big_rows| Case {
                    net,
                    kind,
                    sets,
                    dim: DIM,
                    big_rows,
                };
                let me_small = median_step_ms(&me(SMALL_ROWS), s);
                let me_large = median_step_ms(&me(large_rows(kind)), s);
                // M = 1 is itself the single embedding of total size d = 10
                let se_small = if sets == 1 {
                    me_small
                } else {
                    median_step_ms(
                        &Case {
                            net,
                            kind,
                            sets: 1,
                            dim: DIM * sets,
                            big_rows: SMALL_ROWS,
                        },
                        s,
                    )
                };
                eprintln!(
                    "  {} {} M = {sets}: ME {:.1} / {:.1} ms, SE d = {} {:.1} ms (CPU; wall \
                     {:.1} / {:.1} / {:.1} ms)",
                    net.name(),
                    kind_name(kind),
                    me_small.cpu,
                    me_large.cpu,
                    DIM * sets,
                    se_small.cpu,
                    me_small.wall,
                    me_large.wall,
                    se_small.wall,
                );
                rows.push(Row {
                    net,
                    kind,
                    sets,
                    me_small,
                    me_large,
                    se_small,
                });
            }
        }
    }
    print!("{}", table(&rows));
    let csv = csv(&rows, s);
    if let Some(dir) = s.csv.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&s.csv, csv).unwrap();
    println!("CSV: {}", s.csv.display());
}

/// The ME step at M = 1 of the same model and table kind.
fn base<'a>(rows: &'a [Row], r: &Row) -> &'a Row {
    rows.iter()
        .find(|b| b.net == r.net && b.kind == r.kind && b.sets == 1)
        .unwrap()
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "{:<6} {:<8} {:>3} | {:>9} {:>5} | {:>5} {:>9} {:>5} | {:>7} | {:>9} {:>5} | {:>9}",
        "model",
        "table",
        "M",
        "ME 10^4",
        "/M=1",
        "rows",
        "ME large",
        "/M=1",
        "lg/10^4",
        "SE d=10M",
        "ME/SE",
        "wall 10^4"
    )
    .unwrap();
    for r in rows {
        let b = base(rows, r);
        writeln!(
            out,
            "{:<6} {:<8} {:>3} | {:>7.1}ms {:>5.2} | {:>5} {:>7.1}ms {:>5.2} | {:>7.2} | {:>7.1}ms \
             {:>5.2} | {:>7.1}ms",
            r.net.name(),
            kind_name(r.kind),
            r.sets,
            r.me_small.cpu,
            r.me_small.cpu / b.me_small.cpu,
            fmt_rows(large_rows(r.kind)),
            r.me_large.cpu,
            r.me_large.cpu / b.me_large.cpu,
            r.me_large.cpu / r.me_small.cpu,
            r.se_small.cpu,
            r.me_small.cpu / r.se_small.cpu,
            r.me_small.wall,
        )
        .unwrap();
    }
    out
}

fn csv(rows: &[Row], s: &Settings) -> String {
    let mut out = String::from(
        "model,table,sets,dim,batch,threads,steps,small_rows,large_rows,\
         me_small_cpu_ms,me_large_cpu_ms,se_dim,se_small_cpu_ms,\
         me_small_wall_ms,me_large_wall_ms,se_small_wall_ms,\
         me_small_ratio_to_m1,me_large_ratio_to_m1,me_large_over_small,me_over_se\n",
    );
    for r in rows {
        let b = base(rows, r);
        writeln!(
            out,
            "{},{},{},{DIM},{},{},{},{SMALL_ROWS},{},{:.3},{:.3},{},{:.3},{:.3},{:.3},{:.3},\
             {:.4},{:.4},{:.4},{:.4}",
            r.net.name(),
            kind_name(r.kind),
            r.sets,
            s.batch,
            s.threads,
            s.steps,
            large_rows(r.kind),
            r.me_small.cpu,
            r.me_large.cpu,
            DIM * r.sets,
            r.se_small.cpu,
            r.me_small.wall,
            r.me_large.wall,
            r.se_small.wall,
            r.me_small.cpu / b.me_small.cpu,
            r.me_large.cpu / b.me_large.cpu,
            r.me_large.cpu / r.me_small.cpu,
            r.me_small.cpu / r.se_small.cpu,
        )
        .unwrap();
    }
    out
}
