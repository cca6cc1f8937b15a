//! The training of one run: setting it up (run directory, model, resuming from a checkpoint),
//! the loop over epochs and batches, and publishing the run with its metrics.
use anyhow::Result;
use rand::{seq::SliceRandom, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint::{self, torch_rng_lock, CheckpointState, LoopCounters};
use super::early_stop::{EarlyStopper, StopOutcome};
use super::evaluation::{evaluate_trained, Evaluation};
use super::memory::{probe, rss_bytes, MemoryBudget, PhasePeaks};
use super::progress::Progress;
use super::runtime::{Runtime, StepTimes};
use super::{
    describe_device, parse_device, train_step, Divergence, EmbeddingParams, Optimizer, RunDir,
    RunLock, RunMetrics, TrainSummary, OPTIMIZER_STATE, WEIGHTS,
};
use crate::atomic::write_atomic;
use crate::config::RunSpec;
use crate::data::{Batch, Dataset, Split};
use crate::embedding::hash;
use crate::models::{CtrModel, InputShape};
use crate::tensor_file::save_var_store;
use anyhow::{bail, Context};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// No progress output at all.
    pub quiet: bool,
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

/// A run being trained: where it writes, its model and optimizer.
struct Session<'a> {
    spec: &'a RunSpec,
    dataset: &'a Dataset,
    run_dir: RunDir,
    config_text: String,
    device: tch::Device,
    model: CtrModel,
    optimizer: Optimizer,
    /// The checkpoint resumed from, and its state.
    resumed: Option<(PathBuf, CheckpointState)>,
}

/// What the loop leaves behind.
struct LoopOutcome {
    counters: LoopCounters,
    seconds: f64,
    diverged: Option<Divergence>,
    step_times: StepTimes,
    /// With early stopping: how it ended (the best weights are back in the model).
    early: Option<StopOutcome>,
}

fn train(
    spec: &RunSpec,
    dataset: &Dataset,
    opts: &RunOptions,
    stop_after: Option<usize>,
) -> Result<Option<(PathBuf, RunMetrics)>> {
    // peaks per phase; where the system refuses their resets, each is the process's so far
    let start_rss_bytes = rss_bytes();
    probe("start of the run");
    let mut phases = PhasePeaks::default();
    phases.start("setup");
    // held until the run is published (or this process dies)
    let cfg = &spec.config;
    let lock = RunLock::acquire(&RunDir::path_for(&cfg.output, &cfg.name, &spec.run))?;
    if let (Some(pid), false) = (lock.stale_pid, opts.quiet) {
        eprintln!(
            "{}/{}: took over the lock left by process {pid}, which is gone",
            cfg.name, spec.run
        );
    }
    let mut session = Session::open(spec, dataset, opts)?;
    phases.start("training");
    let Some(outcome) = session.run_loop(opts, stop_after)? else {
        return Ok(None); // a simulated kill
    };
    phases.close();
    let peak_rss_training_bytes = phases.max();
    let eval_started = Instant::now();
    let evaluation = match outcome.diverged {
        // a σ sweep records a diverged run as a point, not a crash: no evaluation, no weights
        Some(_) => None,
        None => {
            let evaluation = evaluate_trained(
                &mut session.model,
                dataset,
                &spec.config.eval,
                session.device,
                &mut phases,
            )?;
            phases.start("saving");
            session.save_weights()?;
            Some(evaluation)
        }
    };
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    phases.close();
    let peak_rss_bytes = phases.max();
    let memory_budget = MemoryBudget::of_run(
        &session.model,
        &session.optimizer,
        dataset,
        cfg.training.batch_size,
        start_rss_bytes,
        peak_rss_bytes,
    );
    let runtime = Runtime {
        step_ms_median: outcome.step_times.quantile(0.5),
        step_ms_p90: outcome.step_times.quantile(0.9),
        steps_timed: outcome.step_times.count(),
        peak_rss_training_bytes,
        peak_rss_bytes,
        peak_rss_by_phase: phases.done,
        memory_budget: Some(memory_budget),
    };
    let metrics = session.metrics(outcome, evaluation, eval_seconds, runtime);
    if metrics.diverged.is_none() {
        // inside the partial directory, so that a finished run always has its figure
        let title = format!(
            "{}/{}: training loss ({} samples)",
            cfg.name, spec.run, metrics.train.samples
        );
        let dir = session.run_dir.dir();
        crate::plots::plot_training_curve(
            &[(dir.join("train_log.csv"), spec.run.clone())],
            &dir.join("train_curve"),
            &title,
        )?;
    }
    // Written last: its presence marks a finished run.
    session.run_dir.write_json(super::METRICS, &metrics)?;
    let published = session.run_dir.finish()?;
    drop(lock);
    Ok(Some((published, metrics)))
}

impl<'a> Session<'a> {
    /// Opens (or resumes) the partial run directory, records the run's settings and builds the
    /// seeded model, restoring the checkpoint's weights and optimizer state when resuming.
    fn open(spec: &'a RunSpec, dataset: &'a Dataset, opts: &RunOptions) -> Result<Self> {
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
        let (run_dir, checkpoint_dir) = RunDir::open(&final_dir, &config_text)?;
        let resumed = match checkpoint_dir {
            None => None,
            Some(dir) => {
                let state = CheckpointState::read(&dir, dataset)?;
                Some((dir, state))
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
        if let Some((_, state)) = &resumed {
            let c = state.counters();
            run_info["resumed_from_step"] = c.step.into();
            if !opts.quiet {
                eprintln!(
                    "{}/{}: resuming from the checkpoint at step {} (epoch {})",
                    cfg.name,
                    spec.run,
                    c.step,
                    c.epoch + 1
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
            let _guard = torch_rng_lock();
            tch::manual_seed(t.seed as i64);
            CtrModel::new(&cfg.model, &cfg.embedding, &shape, device)?
        };
        let mut optimizer = Optimizer::new(&cfg.optimizer, &model.vs);
        if let Some((dir, state)) = &resumed {
            checkpoint::restore(dir, state, &mut model, &mut optimizer)?;
        }
        Ok(Session {
            spec,
            dataset,
            run_dir,
            config_text,
            device,
            model,
            optimizer,
            resumed,
        })
    }

    /// Trains until the configured steps or epochs are done, the loss stops being finite, or
    /// (`stop_after`, a simulated kill) that step is reached, which returns `None`.
    fn run_loop(
        &mut self,
        opts: &RunOptions,
        stop_after: Option<usize>,
    ) -> Result<Option<LoopOutcome>> {
        let cfg = &self.spec.config;
        let t = &cfg.training;
        let l2 = cfg.model.l2();
        let train = self.dataset.split(Split::Train);
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
            &format!("{}/{}", cfg.name, self.spec.run),
        );
        let log_path = self.run_dir.dir().join("train_log.csv");
        let mut log = open_train_log(&log_path, self.resumed.as_ref().map(|(d, _)| d.as_path()))?;

        let mut c = match &self.resumed {
            Some((_, state)) => state.counters(),
            None => LoopCounters {
                last_loss: f64::NAN,
                ..LoopCounters::default()
            },
        };
        progress.resume(c.step);
        // where the loop starts: (epoch, batches of it already done)
        let start = (c.epoch, c.batches_in_epoch);
        let mut rng = rand::rngs::StdRng::seed_from_u64(t.seed);
        let mut order: Vec<usize> = (0..train.len).collect();
        let mut batch = Batch::default();
        let mut diverged: Option<Divergence> = None;
        let mut step_times = StepTimes::default();
        let started = Instant::now();
        let elapsed_before = c.elapsed_before;
        let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
        let mut interval_start = (Instant::now(), c.samples);
        let mut early = match &t.early_stopping {
            None => None,
            Some(es) => {
                let from = match &self.resumed {
                    Some((dir, state)) => Some((
                        dir.as_path(),
                        state.early_stopping.clone().with_context(|| {
                            format!(
                                "the checkpoint in {} has no early-stopping state",
                                dir.display()
                            )
                        })?,
                    )),
                    None => None,
                };
                Some(EarlyStopper::open(es, self.run_dir.dir(), from)?)
            }
        };
        // training seconds: wall time less the validation evaluations of early stopping
        let eval_seconds =
            |early: &Option<EarlyStopper>| early.as_ref().map_or(0.0, |e| e.state.eval_seconds);
        if let Some(es) = &mut early {
            if !es.done(0) {
                // the initial weights are a candidate too, as in the authors' code of paper 004
                let (m, _) = es.end_epoch(
                    0,
                    &self.model,
                    self.dataset,
                    &cfg.eval,
                    self.device,
                    &c,
                    0.0,
                )?;
                progress.note(&format!(
                    "epoch 0 (before training): valid AUC {:.5}, LogLoss {:.5}",
                    m.auc, m.logloss
                ));
            }
        }
        'epochs: for epoch in 0..t.epochs {
            if t.shuffle {
                order.shuffle(&mut rng);
            }
            if epoch < start.0 {
                continue; // done before the checkpoint: only its shuffle is replayed
            }
            let skip = if epoch == start.0 { start.1 } else { 0 };
            if skip == 0 {
                c.epoch_loss = 0.0;
                c.epoch_steps = 0;
            }
            if c.step >= total_steps && early.as_ref().is_none_or(|e| e.done(epoch + 1)) {
                break;
            }
            for (batch_index, chunk) in order.chunks(t.batch_size).enumerate().skip(skip) {
                if c.step >= total_steps {
                    // the end: with early stopping, this partial epoch is still evaluated
                    break;
                }
                let step_started = Instant::now();
                train.gather(chunk, &mut batch);
                let (loss_value, _) = train_step(
                    &self.model,
                    &mut self.optimizer,
                    &batch,
                    self.device,
                    t.loss_reduction,
                    &l2,
                )?;
                step_times.push(step_started.elapsed().as_secs_f64());
                if !loss_value.is_finite() {
                    diverged = Some(Divergence {
                        step: c.step + 1,
                        epoch: epoch + 1,
                        samples: c.samples,
                        loss: loss_value.to_string(),
                    });
                    break 'epochs;
                }
                c.step += 1;
                c.epoch = epoch;
                c.batches_in_epoch = batch_index + 1;
                c.samples += batch.size;
                c.interval_loss += loss_value;
                c.interval_steps += 1;
                c.epoch_loss += loss_value;
                c.epoch_steps += 1;
                if c.step % t.log_every == 0 || c.step == total_steps {
                    c.last_loss = c.interval_loss / c.interval_steps as f64;
                    let dt = interval_start.0.elapsed().as_secs_f64().max(1e-9);
                    let rate = (c.samples - interval_start.1) as f64 / dt;
                    log.write_record([
                        c.step.to_string(),
                        (epoch + 1).to_string(),
                        c.samples.to_string(),
                        format!("{:.6}", c.last_loss),
                        format!("{rate:.1}"),
                        format!("{:.3}", elapsed()),
                    ])?;
                    log.flush()?;
                    progress.report(c.step, c.samples, c.last_loss, rate);
                    c.interval_loss = 0.0;
                    c.interval_steps = 0;
                    interval_start = (Instant::now(), c.samples);
                }
                if let Some(every) = t.checkpoint_every {
                    if c.step % every == 0 || c.step == total_steps {
                        let mut state =
                            CheckpointState::new(&c, elapsed(), t.seed, t.shuffle, self.dataset);
                        state.early_stopping = early.as_ref().map(|e| e.state.clone());
                        checkpoint::write(
                            &self.run_dir,
                            &self.model,
                            &self.optimizer,
                            &self.config_text,
                            &log_path,
                            &state,
                            early.as_ref(),
                        )
                        .with_context(|| format!("checkpoint at step {}", c.step))?;
                        checkpoint::reseed_torch(t.seed, c.step);
                    }
                }
                if stop_after == Some(c.step) {
                    progress.finish();
                    return Ok(None); // a simulated kill: nothing more is written
                }
            }
            if let Some(es) = &mut early {
                if c.epoch_steps == 0 || es.done(epoch + 1) {
                    break; // no step of this epoch (max_steps ran out before it)
                }
                let train_seconds = elapsed() - es.state.eval_seconds;
                let (m, stop) = es.end_epoch(
                    epoch + 1,
                    &self.model,
                    self.dataset,
                    &cfg.eval,
                    self.device,
                    &c,
                    train_seconds,
                )?;
                let best = es.state.best_epoch.unwrap_or(0);
                progress.note(&format!(
                    "epoch {}: valid AUC {:.5}, LogLoss {:.5} (best: epoch {best})",
                    epoch + 1,
                    m.auc,
                    m.logloss
                ));
                if stop {
                    if epoch + 1 < t.epochs && c.step < total_steps {
                        es.stopped = true;
                        progress.note(&format!(
                            "early stopping: {} epochs without a better valid {}",
                            epoch + 1 - best,
                            t.early_stopping.as_ref().map_or("", |e| e.metric.name())
                        ));
                    }
                    break 'epochs;
                }
            }
        }
        let seconds = elapsed() - eval_seconds(&early);
        progress.finish();
        let early = match early {
            Some(es) if diverged.is_none() => {
                es.restore_best(&self.model)?;
                Some(es.outcome())
            }
            _ => None,
        };
        Ok(Some(LoopOutcome {
            counters: c,
            seconds,
            diverged,
            step_times,
            early,
        }))
    }

    fn save_weights(&self) -> Result<()> {
        save_var_store(&self.model.vs, &self.run_dir.dir().join(WEIGHTS))
            .context("cannot save the weights")?;
        self.optimizer
            .save(&self.run_dir.dir().join(OPTIMIZER_STATE))
    }

    /// `metrics.json` of the run, diverged (no evaluation) or not.
    fn metrics(
        &self,
        outcome: LoopOutcome,
        evaluation: Option<Evaluation>,
        eval_seconds: f64,
        runtime: Runtime,
    ) -> RunMetrics {
        let c = &outcome.counters;
        let emb = &self.model.embeddings;
        let final_loss = match outcome.diverged {
            Some(_) => f64::NAN,
            None => c.last_loss,
        };
        let (valid, test, test_by_frequency, collapse_max_abs_diff) = match evaluation {
            Some(e) => (
                e.valid,
                e.test,
                e.test_by_frequency,
                e.collapse_max_abs_diff,
            ),
            None => (None, None, None, f64::NAN),
        };
        RunMetrics {
            experiment: self.spec.config.name.clone(),
            run: self.spec.run.clone(),
            valid,
            test,
            train: TrainSummary {
                steps: c.step,
                samples: c.samples,
                final_loss,
                seconds: outcome.seconds,
                samples_per_s: c.samples as f64 / outcome.seconds.max(1e-9),
            },
            embedding_params: EmbeddingParams {
                training: emb.training_parameters(),
                inference: emb.inference_parameters(),
            },
            collapse_max_abs_diff,
            eval_seconds,
            diverged: outcome.diverged,
            test_by_frequency,
            runtime: Some(runtime),
            best_epoch: outcome.early.and_then(|e| e.best_epoch),
            epochs_run: outcome.early.map(|e| e.epochs_run),
            stopped_early: outcome.early.map(|e| e.stopped_early),
        }
    }
}

/// The columns of `train_log.csv` (read back by `plots::read_train_log`).
const TRAIN_LOG_HEADER: [&str; 6] = [
    "step",
    "epoch",
    "samples",
    "loss",
    "samples_per_s",
    "elapsed_s",
];

/// The training log: fresh with its header, or as it was at the checkpoint resumed from
/// (without lines written after it).
fn open_train_log(path: &Path, checkpoint: Option<&Path>) -> Result<::csv::Writer<std::fs::File>> {
    Ok(match checkpoint {
        Some(dir) => {
            std::fs::copy(dir.join("train_log.csv"), path)
                .context("cannot restore the training log")?;
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .context("cannot open the training log")?;
            crate::results::csv::writer(file)
        }
        None => {
            let file = std::fs::File::create(path).context("cannot create the training log")?;
            let mut log = crate::results::csv::writer(file);
            log.write_record(TRAIN_LOG_HEADER)?;
            log
        }
    })
}
