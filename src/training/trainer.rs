//! The training loop of one run and the evaluation after it.
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Reduction, Tensor};

use super::optimizer::SparseGrad;
use super::run_dir::CHECKPOINT_STATE;
use super::{describe_device, parse_device, Optimizer, RunDir};
use crate::atomic::write_atomic;
use crate::config::{L2Config, LossReduction, RunSpec};
use crate::data::{Batch, Dataset, Split, SplitData};
use crate::embedding::{hash, Embeddings, Lookup, LookupIndex};
use crate::metrics::{self, Metrics};
use crate::models::{CtrModel, InputShape};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// No progress output at all.
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub samples: usize,
    /// Mean loss over the last logging interval (NaN, written null, when training diverged).
    #[serde(deserialize_with = "null_as_nan")]
    pub final_loss: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingParams {
    /// Parameters trained (MLET: Σn·k + F·k·d).
    pub training: i64,
    /// Parameters kept for inference after collapsing (Σn·d).
    pub inference: i64,
}

/// Everything `metrics.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMetrics {
    pub experiment: String,
    pub run: String,
    pub valid: Option<Metrics>,
    pub test: Option<Metrics>,
    pub train: TrainSummary,
    pub embedding_params: EmbeddingParams,
    /// Largest |logit difference| between the trained and the collapsed model on test rows.
    #[serde(deserialize_with = "null_as_nan")]
    pub collapse_max_abs_diff: f64,
    pub eval_seconds: f64,
    /// Set when a non-finite loss stopped training; no evaluation then.
    #[serde(default)]
    pub diverged: Option<Divergence>,
}

/// JSON has no NaN: serde_json writes it as null, and this reads null back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Where training stopped on a non-finite loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Divergence {
    pub step: usize,
    pub epoch: usize,
    pub samples: usize,
    pub loss: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training diverged: the loss is {} at step {} (epoch {}, {} samples seen); try a \
             smaller learning rate or embedding.init_std",
            self.loss, self.step, self.epoch, self.samples
        )
    }
}

/// Dense features, labels and the lookup index of a batch, on `device`.
pub fn batch_tensors(
    batch: &Batch,
    embeddings: &Embeddings,
    device: Device,
) -> Result<(Tensor, Tensor, LookupIndex)> {
    let b = batch.size as i64;
    let dense = Tensor::from_slice(&batch.dense)
        .view([b, -1])
        .to_device(device);
    let labels = Tensor::from_slice(&batch.label).to_device(device);
    let index = embeddings.index(&batch.cat, device)?;
    Ok((dense, labels, index))
}

/// Logits of `model` for the first `limit` rows of a split (all when `None`).
pub fn predict(
    model: &CtrModel,
    split: &SplitData,
    batch_size: usize,
    limit: Option<usize>,
    device: Device,
) -> Result<Vec<f32>> {
    let n = limit.map_or(split.len, |l| l.min(split.len));
    let mut out = Vec::with_capacity(n);
    let mut batch = Batch::default();
    let rows: Vec<usize> = (0..n).collect();
    tch::no_grad(|| -> Result<()> {
        for chunk in rows.chunks(batch_size) {
            split.gather(chunk, &mut batch);
            let (dense, _, index) = batch_tensors(&batch, &model.embeddings, device)?;
            let logits = model.forward(&dense, &index, false).logits;
            let logits = logits.to_kind(Kind::Float).to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(&logits)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The weights and the optimizer state, in the run directory and in its checkpoint.
pub const WEIGHTS: &str = "weights.safetensors";
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";

/// libtorch's generator is process-wide: runs seed it and draw their initialisation (or reseed
/// it at a checkpoint) holding this lock, so that no other run's draws come in between.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where a checkpoint stands, with the running counters of the loop (`state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    /// Optimizer steps done.
    step: usize,
    /// The 0-based epoch of the last step done, and how many batches of it were done. The
    /// epoch's order is rebuilt by replaying the seeded shuffles (`StdRng` seeded by `seed`,
    /// one shuffle per epoch), so it is not stored.
    epoch: usize,
    batches_in_epoch: usize,
    samples: usize,
    /// The loss summed since the last training-log line, and the number of steps in it; `f64`
    /// bit patterns, so that the final loss comes out bit for bit.
    interval_loss_bits: u64,
    interval_steps: usize,
    last_loss_bits: u64,
    /// Training seconds before this checkpoint (timings are not reproduced, only carried on).
    elapsed_s: f64,
    seed: u64,
    shuffle: bool,
    train_rows: usize,
    cardinalities: Vec<usize>,
}

/// Reseeds libtorch's generator from (seed, step): done at each checkpoint, in an uninterrupted
/// run as in a resumed one, so that dropout draws after a checkpoint are the same either way.
fn reseed_torch(seed: u64, step: usize) {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let mixed = (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ step as u64;
    tch::manual_seed((mixed >> 1) as i64);
}

/// Trains one run on `dataset`, evaluates it and publishes its run directory. With
/// `training.checkpoint_every`, it writes a checkpoint into the partial run directory every so
/// many steps, and a later call with the same resolved configuration resumes from it (see
/// docs/training.md).
pub fn train_run(
    spec: &RunSpec,
    dataset: &Dataset,
    opts: &RunOptions,
) -> Result<(PathBuf, RunMetrics)> {
    train(spec, dataset, opts, None)?.context("training stopped before its end")
}

/// A testing aid that simulates a kill: trains as `train_run` does (resuming from a checkpoint
/// too) but returns right after step `stop_after`, leaving the partial run directory as a kill
/// at that point would (the checkpoint, and a training log that may run past it). Returns the
/// finished run instead if training ends first.
pub fn train_run_interrupted(
    spec: &RunSpec,
    dataset: &Dataset,
    opts: &RunOptions,
    stop_after: usize,
) -> Result<Option<(PathBuf, RunMetrics)>> {
    train(spec, dataset, opts, Some(stop_after))
}

fn train(
    spec: &RunSpec,
    dataset: &Dataset,
    opts: &RunOptions,
    stop_after: Option<usize>,
) -> Result<Option<(PathBuf, RunMetrics)>> {
    let cfg = &spec.config;
    let t = &cfg.training;
    let device = parse_device(&t.device)?;
    if let Some(n) = t.threads {
        tch::set_num_threads(n as i32);
    }
    let final_dir = RunDir::path_for(&cfg.output, &cfg.name, &spec.run);
    let config_text = serde_yaml::to_string(cfg)?;
    let hashed = match &cfg.embedding.hash {
        Some(h) => hash::resolve(h, &dataset.meta.field_names, dataset.cardinalities())?,
        None => Vec::new(),
    };
    let (run_dir, checkpoint) = RunDir::open(&final_dir, &config_text)?;
    let resume: Option<CheckpointState> = match &checkpoint {
        None => None,
        Some(dir) => {
            let path = dir.join(CHECKPOINT_STATE);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let state: CheckpointState = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checkpoint state", path.display()))?;
            if state.train_rows != dataset.split(Split::Train).len
                || state.cardinalities != dataset.cardinalities()
            {
                bail!(
                    "the checkpoint in {} was written for other data (same settings, but another \
                     prepared cache); remove it to start the run over",
                    dir.display()
                );
            }
            Some(state)
        }
    };
    write_atomic(&run_dir.dir().join("config.yaml"), config_text.as_bytes())?;
    let mut run_info = serde_json::json!({
        "experiment": cfg.name,
        "run": spec.run,
        "seed": t.seed,
        "device": describe_device(device),
        "threads": tch::get_num_threads(),
        "versions": super::versions(),
        "data": {
            "num_dense": dataset.num_dense(),
            "cardinalities": dataset.cardinalities(),
            "train_rows": dataset.split(Split::Train).len,
            "hash": hashed,
        },
    });
    if let Some(r) = &resume {
        run_info["resumed_from_step"] = r.step.into();
        if !opts.quiet {
            eprintln!(
                "{}/{}: resuming from the checkpoint at step {} (epoch {})",
                cfg.name,
                spec.run,
                r.step,
                r.epoch + 1
            );
        }
    }
    run_dir.write_json("run.json", &run_info)?;

    let shape = InputShape {
        num_dense: dataset.num_dense(),
        cardinalities: dataset.cardinalities().to_vec(),
        hashed,
    };
    let mut model = {
        let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(t.seed as i64);
        CtrModel::new(&cfg.model, &cfg.embedding, &shape, device)?
    };
    let mut optimizer = Optimizer::new(&cfg.optimizer, &model.vs);
    if let (Some(dir), Some(r)) = (&checkpoint, &resume) {
        model
            .vs
            .load(dir.join(WEIGHTS))
            .with_context(|| format!("cannot load the weights of {}", dir.display()))?;
        optimizer.load(&dir.join(OPTIMIZER_STATE))?;
        if optimizer.steps_taken() != r.step as i64 {
            bail!(
                "{}: the optimizer state is at step {}, the checkpoint at step {}",
                dir.display(),
                optimizer.steps_taken(),
                r.step
            );
        }
        reseed_torch(t.seed, r.step);
    }
    let l2 = cfg.model.l2();

    let train = dataset.split(Split::Train);
    if train.len == 0 {
        bail!("the training split is empty");
    }
    let steps_per_epoch = train.len.div_ceil(t.batch_size);
    let total_steps = t.max_steps.map_or(steps_per_epoch * t.epochs, |m| {
        m.min(steps_per_epoch * t.epochs)
    });
    let progress = Progress::new(
        opts.quiet,
        total_steps,
        &format!("{}/{}", cfg.name, spec.run),
    );
    let log_path = run_dir.dir().join("train_log.csv");
    let mut log = match &checkpoint {
        // the log as it was at the checkpoint, without lines written after it
        Some(dir) => {
            std::fs::copy(dir.join("train_log.csv"), &log_path)
                .context("cannot restore the training log")?;
            std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log_path)
                    .context("cannot open the training log")?,
            )
        }
        None => {
            let mut log = std::io::BufWriter::new(
                std::fs::File::create(&log_path).context("cannot create the training log")?,
            );
            writeln!(log, "step,epoch,samples,loss,samples_per_s,elapsed_s")?;
            log.flush()?;
            log
        }
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(t.seed);
    let mut order: Vec<usize> = (0..train.len).collect();
    let mut batch = Batch::default();
    let (mut step, mut samples) = (0usize, 0usize);
    let (mut interval_loss, mut interval_steps, mut last_loss) = (0.0f64, 0usize, f64::NAN);
    // where the loop starts: (epoch, batches of it already done)
    let mut start = (0usize, 0usize);
    let mut elapsed_before = 0.0f64;
    if let Some(r) = &resume {
        step = r.step;
        samples = r.samples;
        interval_loss = f64::from_bits(r.interval_loss_bits);
        interval_steps = r.interval_steps;
        last_loss = f64::from_bits(r.last_loss_bits);
        start = (r.epoch, r.batches_in_epoch);
        elapsed_before = r.elapsed_s;
        progress.resume(step);
    }
    let mut diverged: Option<Divergence> = None;
    let started = Instant::now();
    let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
    let mut interval_start = (Instant::now(), samples);
    'epochs: for epoch in 0..t.epochs {
        if t.shuffle {
            order.shuffle(&mut rng);
        }
        if epoch < start.0 {
            continue; // done before the checkpoint: only its shuffle is replayed
        }
        let skip = if epoch == start.0 { start.1 } else { 0 };
        for (batch_index, chunk) in order.chunks(t.batch_size).enumerate().skip(skip) {
            if step >= total_steps {
                break 'epochs;
            }
            train.gather(chunk, &mut batch);
            let (loss_value, _) = train_step(
                &model,
                &mut optimizer,
                &batch,
                device,
                t.loss_reduction,
                &l2,
            )?;
            if !loss_value.is_finite() {
                diverged = Some(Divergence {
                    step: step + 1,
                    epoch: epoch + 1,
                    samples,
                    loss: loss_value.to_string(),
                });
                break 'epochs;
            }
            step += 1;
            samples += batch.size;
            interval_loss += loss_value;
            interval_steps += 1;
            if step % t.log_every == 0 || step == total_steps {
                last_loss = interval_loss / interval_steps as f64;
                let dt = interval_start.0.elapsed().as_secs_f64().max(1e-9);
                let rate = (samples - interval_start.1) as f64 / dt;
                writeln!(
                    log,
                    "{step},{},{samples},{last_loss:.6},{rate:.1},{:.3}",
                    epoch + 1,
                    elapsed()
                )?;
                log.flush()?;
                progress.report(step, samples, last_loss, rate);
                interval_loss = 0.0;
                interval_steps = 0;
                interval_start = (Instant::now(), samples);
            }
            if let Some(every) = t.checkpoint_every {
                if step % every == 0 || step == total_steps {
                    let state = CheckpointState {
                        step,
                        epoch,
                        batches_in_epoch: batch_index + 1,
                        samples,
                        interval_loss_bits: interval_loss.to_bits(),
                        interval_steps,
                        last_loss_bits: last_loss.to_bits(),
                        elapsed_s: elapsed(),
                        seed: t.seed,
                        shuffle: t.shuffle,
                        train_rows: train.len,
                        cardinalities: dataset.cardinalities().to_vec(),
                    };
                    write_checkpoint(
                        &run_dir,
                        &model,
                        &optimizer,
                        &config_text,
                        &log_path,
                        &state,
                    )
                    .with_context(|| format!("checkpoint at step {step}"))?;
                    reseed_torch(t.seed, step);
                }
            }
            if stop_after == Some(step) {
                progress.finish();
                return Ok(None); // a simulated kill: nothing more is written
            }
        }
    }
    let seconds = elapsed();
    progress.finish();
    drop(log);

    if diverged.is_some() {
        // A finished run that tells what happened: a σ sweep records it as a point, not a crash.
        let metrics = RunMetrics {
            experiment: cfg.name.clone(),
            run: spec.run.clone(),
            valid: None,
            test: None,
            train: TrainSummary {
                steps: step,
                samples,
                final_loss: f64::NAN,
                seconds,
                samples_per_s: samples as f64 / seconds.max(1e-9),
            },
            embedding_params: EmbeddingParams {
                training: model.embeddings.training_parameters(),
                inference: model.embeddings.inference_parameters(),
            },
            collapse_max_abs_diff: f64::NAN,
            eval_seconds: 0.0,
            diverged,
        };
        run_dir.write_json(super::METRICS, &metrics)?;
        let published = run_dir.finish()?;
        return Ok(Some((published, metrics)));
    }
    let eval_started = Instant::now();
    let eval_split = |split: Split| -> Result<Option<Metrics>> {
        let data = dataset.split(split);
        if data.len == 0 {
            return Ok(None);
        }
        let logits = predict(&model, &data, cfg.eval.batch_size, None, device)?;
        metrics::evaluate(&logits, data.label)
            .map(Some)
            .with_context(|| format!("evaluating the {split} split"))
    };
    let valid = eval_split(Split::Valid)?;
    let test = eval_split(Split::Test)?;
    let collapse_max_abs_diff = collapse_check(&mut model, dataset, cfg.eval.batch_size, device)?;
    let eval_seconds = eval_started.elapsed().as_secs_f64();

    model
        .vs
        .save(run_dir.dir().join(WEIGHTS))
        .context("cannot save the weights")?;
    optimizer.save(&run_dir.dir().join(OPTIMIZER_STATE))?;
    // what a continued run needs besides the weights
    let state = optimizer.state_tensors();
    if !state.is_empty() {
        Tensor::write_safetensors(&state, run_dir.dir().join("optimizer.safetensors"))
            .context("cannot save the optimizer state")?;
    }
    let metrics = RunMetrics {
        experiment: cfg.name.clone(),
        run: spec.run.clone(),
        valid,
        test,
        train: TrainSummary {
            steps: step,
            samples,
            final_loss: last_loss,
            seconds,
            samples_per_s: samples as f64 / seconds.max(1e-9),
        },
        embedding_params: EmbeddingParams {
            training: model.embeddings.training_parameters(),
            inference: model.embeddings.inference_parameters(),
        },
        collapse_max_abs_diff,
        eval_seconds,
        diverged: None,
    };
    // Written last: its presence marks a finished run.
    run_dir.write_json(super::METRICS, &metrics)?;
    let published = run_dir.finish()?;
    Ok(Some((published, metrics)))
}

/// Writes a checkpoint (weights, optimizer state, the training log so far, the loop's state and
/// the configuration it belongs to) atomically into the partial run directory.
fn write_checkpoint(
    run_dir: &RunDir,
    model: &CtrModel,
    optimizer: &Optimizer,
    config_text: &str,
    log_path: &Path,
    state: &CheckpointState,
) -> Result<()> {
    run_dir.write_checkpoint(|dir| {
        std::fs::write(dir.join(super::run_dir::CHECKPOINT_CONFIG), config_text)?;
        model
            .vs
            .save(dir.join(WEIGHTS))
            .context("cannot save the weights")?;
        optimizer.save(&dir.join(OPTIMIZER_STATE))?;
        std::fs::copy(log_path, dir.join("train_log.csv"))?;
        // last: its presence marks a complete checkpoint
        std::fs::write(
            dir.join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(state)?,
        )?;
        Ok(())
    })
}

/// One optimisation step on `batch`: forward, loss plus L2 penalty, backward, and the update —
/// skipped when the loss is not finite, so that a diverging run stops with the weights of its
/// last good step. Returns the data loss per example and the batch's lookup index.
pub fn train_step(
    model: &CtrModel,
    optimizer: &mut Optimizer,
    batch: &Batch,
    device: Device,
    reduction: LossReduction,
    l2: &L2Config,
) -> Result<(f64, LookupIndex)> {
    let reduction = match reduction {
        LossReduction::Mean => Reduction::Mean,
        LossReduction::Sum => Reduction::Sum,
    };
    let (dense, labels, index) = batch_tensors(batch, &model.embeddings, device)?;
    let forward = model.forward(&dense, &index, true);
    let data_loss = forward
        .logits
        .binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, reduction);
    let loss = match penalty(model, &forward.lookups, l2) {
        Some(p) => &data_loss + p,
        None => data_loss.shallow_clone(),
    };
    optimizer.zero_grad();
    loss.backward();
    // per example, whatever the reduction
    let loss_value = data_loss.double_value(&[]) / reduction_scale(reduction, batch.size);
    if loss_value.is_finite() {
        optimizer.step(&SparseGrad::of_model(model, &forward.lookups), &index);
    }
    Ok((loss_value, index))
}

fn reduction_scale(reduction: Reduction, batch: usize) -> f64 {
    match reduction {
        Reduction::Sum => batch as f64,
        _ => 1.0,
    }
}

/// The L2 terms of the loss: `l2.embedding · Σ w²` over the embedding rows the batch looked up
/// (and MLET's projections), `l2.linear` likewise over the linear part's rows, plus the
/// network's own penalty.
fn penalty(model: &CtrModel, lookups: &[Lookup], l2: &L2Config) -> Option<Tensor> {
    let mut terms: Vec<Tensor> = Vec::new();
    let square_sum = |t: &Tensor| t.square().sum(Kind::Float);
    if l2.embedding > 0.0 {
        terms.push(square_sum(&lookups[0].rows) * l2.embedding);
        if let Some(p) = &model.embeddings.projection {
            terms.push(square_sum(p) * l2.embedding);
        }
    }
    if l2.linear > 0.0 {
        if let Some(rows) = lookups.get(1).map(|l| &l.rows) {
            terms.push(square_sum(rows) * l2.linear);
        }
    }
    terms.extend(model.network.l2_penalty());
    terms.into_iter().reduce(|a, b| a + b)
}

/// Predicts some test rows with the trained and with the collapsed embeddings.
fn collapse_check(
    model: &mut CtrModel,
    dataset: &Dataset,
    batch: usize,
    device: Device,
) -> Result<f64> {
    let split = [Split::Test, Split::Valid, Split::Train]
        .into_iter()
        .map(|s| dataset.split(s))
        .find(|s| s.len > 0)
        .context("no rows to check the collapsed model on")?;
    let trained = predict(model, &split, batch, Some(4096), device)?;
    let collapsed = model.embeddings.collapse();
    let trained_embeddings = std::mem::replace(&mut model.embeddings, collapsed);
    let folded = predict(model, &split, batch, Some(4096), device);
    model.embeddings = trained_embeddings;
    let folded = folded?;
    Ok(trained
        .iter()
        .zip(&folded)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max))
}

/// A progress bar on a terminal, plain log lines on stderr otherwise, nothing when quiet.
struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
}

impl Progress {
    fn new(quiet: bool, total_steps: usize, label: &str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_steps as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} steps {elapsed_precise} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            label: label.to_string(),
        }
    }

    fn report(&self, step: usize, samples: usize, loss: f64, rate: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4} | {rate:.0} samples/s"));
        } else if self.plain {
            eprintln!(
                "{}: step {step} samples {samples} loss {loss:.4} {rate:.0} samples/s",
                self.label
            );
        }
    }

    fn resume(&self, step: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
