//! `mlet grid`: every run of an experiment file, resumable, in parallel processes or spread over
//! machines by shards, then a results table, summaries and figures derived from the finished run
//! directories (so an interrupted grid loses at most the runs in flight).
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;

use super::children::{self, Forwarding};
use super::runs::{open_data, read_metrics, train_one, Overrides};
use crate::config::{EmbeddingKind, RunSpec};
use crate::metrics::FrequencyGroup;
use crate::plots;
use crate::results::{self, ResultRow};
use crate::training::{RunDir, RunLock, RunMetrics, RunOptions};

/// `i/n`: this process runs the grid points whose index is `i` modulo `n` (0-based, as
/// `SLURM_ARRAY_TASK_ID` counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = || -> Option<Shard> {
            let (i, n) = s.split_once('/')?;
            Some(Shard {
                index: i.trim().parse().ok()?,
                count: n.trim().parse().ok()?,
            })
        };
        match parse() {
            Some(sh) if sh.count > 0 && sh.index < sh.count => Ok(sh),
            _ => Err(format!("`{s}`: expected i/n with 0 <= i < n, e.g. 0/4")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GridOptions {
    pub jobs: usize,
    pub shard: Option<Shard>,
    pub dry_run: bool,
    pub force: bool,
    pub quiet: bool,
    /// Only rebuild the results table and figures from finished runs.
    pub report_only: bool,
    pub overrides: Overrides,
}

#[derive(Debug, Default)]
pub struct GridReport {
    pub total: usize,
    pub selected: usize,
    pub already_finished: usize,
    pub trained: usize,
    pub failed: Vec<(String, String)>,
    /// Runs stopped by a non-finite loss: finished, recorded without metrics.
    pub diverged: Vec<String>,
    /// Runs left alone because another process holds their lock (run name, its PID).
    pub locked: Vec<(String, Option<u32>)>,
    pub results_csv: Option<PathBuf>,
    pub written: Vec<PathBuf>,
    /// Headline findings for people: Table 3's maximum memory reduction, the best σ.
    pub findings: Vec<String>,
}

pub fn run_grid(file: &Path, opts: &GridOptions) -> Result<GridReport> {
    let experiment = super::load_experiment(file)?;
    let mut specs = experiment.runs;
    for spec in &mut specs {
        opts.overrides.apply(spec);
    }
    let mut report = GridReport {
        total: specs.len(),
        ..Default::default()
    };
    let selected: Vec<&RunSpec> = specs
        .iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|s| i % s.count == s.index))
        .map(|(_, s)| s)
        .collect();
    report.selected = selected.len();
    let finished = |s: &RunSpec| RunDir::is_finished(&run_dir(s));
    if opts.dry_run {
        for s in &selected {
            let state = if finished(s) { "finished" } else { "pending" };
            println!("{:<9} {}", state, run_dir(s).display());
        }
        return Ok(report);
    }
    let unfinished: Vec<&RunSpec> = selected
        .iter()
        .copied()
        .filter(|s| opts.force || !finished(s))
        .collect();
    report.already_finished = selected.len() - unfinished.len();
    let mut pending = Vec::new();
    for s in unfinished {
        match RunLock::holder(&run_dir(s))? {
            Some(pid) if !opts.report_only => {
                if !opts.quiet {
                    let by = pid.map_or("another process".into(), |p| format!("process {p}"));
                    eprintln!("skipping {}: being trained by {by}", s.run);
                }
                report.locked.push((s.run.clone(), pid));
            }
            _ => pending.push(s),
        }
    }
    if !opts.report_only && !pending.is_empty() {
        // Prepare each data set once, before any job needs it.
        let mut seen = Vec::new();
        for s in &pending {
            if !seen.contains(&&s.config.data) {
                seen.push(&s.config.data);
                open_data(&s.config.data, opts.quiet)?;
            }
        }
        let outcomes = if opts.jobs <= 1 {
            run_in_process(&pending, opts)
        } else {
            run_in_children(file, &pending, opts)?
        };
        // children finish in any order: match outcomes to runs by name
        for (name, outcome) in outcomes {
            let spec = pending
                .iter()
                .find(|s| s.run == name)
                .expect("outcome of a pending run");
            let dir = run_dir(spec);
            let diverged =
                RunDir::is_finished(&dir) && read_metrics(&dir).is_ok_and(|m| m.diverged.is_some());
            match outcome {
                _ if diverged => report.diverged.push(name),
                Ok(()) => report.trained += 1,
                Err(e) => report.failed.push((name, e)),
            }
        }
    }
    if !opts.report_only {
        remove_logs_of_finished(&selected);
    }
    let rows = collect_results(&specs)?;
    if let Some(first) = specs.first() {
        let out_dir = first.config.output.join(&first.config.name);
        if !rows.is_empty() {
            report.written = write_reports(&rows, &out_dir)?;
            report.findings = findings(&rows);
            report.results_csv = Some(out_dir.join("results.csv"));
            if experiment.report.figures {
                let prefix = experiment
                    .report
                    .prefix
                    .clone()
                    .unwrap_or_else(|| first.config.name.clone());
                report.written.extend(plots::render_all(
                    &rows,
                    &experiment.report.plots_dir,
                    &prefix,
                )?);
            }
        }
    }
    Ok(report)
}

fn run_dir(spec: &RunSpec) -> PathBuf {
    RunDir::path_for(&spec.config.output, &spec.config.name, &spec.run)
}

/// `<run>.stderr.log` beside the run directory: a child's stderr until it succeeds.
fn stderr_log(spec: &RunSpec) -> PathBuf {
    run_dir(spec).with_file_name(format!("{}.stderr.log", spec.run))
}

/// A run that finished (and did not diverge) needs no error log, not even one left by an
/// earlier failed attempt or by a child that finished after its grid was killed.
fn remove_logs_of_finished(specs: &[&RunSpec]) {
    for spec in specs {
        let dir = run_dir(spec);
        if RunDir::is_finished(&dir) && read_metrics(&dir).is_ok_and(|m| m.diverged.is_none()) {
            let _ = std::fs::remove_file(stderr_log(spec));
        }
    }
}

fn run_in_process(pending: &[&RunSpec], opts: &GridOptions) -> Vec<(String, Result<(), String>)> {
    let bar = runs_bar(pending.len(), opts.quiet);
    let mut out = Vec::new();
    for spec in pending {
        let quiet = opts.quiet || bar.is_some();
        let result = train_one(spec, &RunOptions { quiet })
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        note_done(&bar, &spec.run, &result, opts.quiet);
        out.push((spec.run.clone(), result));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

/// Runs each pending run as `mlet train FILE --run NAME` in up to `jobs` child processes, with
/// the machine's cores split between them.
fn run_in_children(
    file: &Path,
    pending: &[&RunSpec],
    opts: &GridOptions,
) -> Result<Vec<(String, Result<(), String>)>> {
    let exe = std::env::current_exe().context("cannot locate the mlet executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = opts
        .overrides
        .threads
        .unwrap_or_else(|| (cores / opts.jobs).max(1));
    let bar = runs_bar(pending.len(), opts.quiet);
    let mut queue = pending.iter();
    let mut running: Vec<(String, PathBuf, Child)> = Vec::new();
    let mut out = Vec::new();
    let forwarding = Forwarding::install();
    loop {
        if let Some(sig) = forwarding.received() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let names: Vec<&str> = running.iter().map(|(n, _, _)| n.as_str()).collect();
            if !opts.quiet {
                eprintln!(
                    "{}: stopping {} training process(es) ({}); run the grid again to finish",
                    children::signal_name(sig),
                    running.len(),
                    names.join(", ")
                );
            }
            let mut kids: Vec<&mut Child> = running.iter_mut().map(|(_, _, c)| c).collect();
            children::stop_all(&mut kids, sig, std::time::Duration::from_secs(10));
            forwarding.die_by(sig);
        }
        while running.len() < opts.jobs {
            let Some(spec) = queue.next() else { break };
            let log = stderr_log(spec);
            if let Some(parent) = log.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut cmd = Command::new(&exe);
            cmd.arg("--quiet")
                .arg("train")
                .arg(file)
                .args(["--run", &spec.run, "--threads", &threads.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            if opts.force {
                cmd.arg("--force");
            }
            let o = &opts.overrides;
            if let Some(r) = &o.raw {
                cmd.arg("--raw").arg(r);
            }
            if let Some(d) = &o.device {
                cmd.args(["--device", d]);
            }
            if let Some(p) = &o.output {
                cmd.arg("--output").arg(p);
            }
            if let Some(m) = o.max_steps {
                cmd.args(["--max-steps", &m.to_string()]);
            }
            children::die_with_parent(&mut cmd);
            let child = cmd.spawn().context("cannot start a training process")?;
            running.push((spec.run.clone(), log, child));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].2.try_wait()? {
                let (name, log, _) = running.swap_remove(i);
                let result = if status.success() {
                    let _ = std::fs::remove_file(&log);
                    Ok(())
                } else {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Err(text.trim().lines().last().unwrap_or("failed").to_string())
                };
                note_done(&bar, &name, &result, opts.quiet);
                out.push((name, result));
            } else {
                i += 1;
            }
        }
    }
    if let Some(sig) = forwarding.received() {
        forwarding.die_by(sig);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

fn runs_bar(len: usize, quiet: bool) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "grid [{bar:30}] {pos}/{len} runs {elapsed_precise} ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    })
}

fn note_done(bar: &Option<ProgressBar>, name: &str, result: &Result<(), String>, quiet: bool) {
    let line = match result {
        Ok(()) => format!("finished {name}"),
        Err(e) => format!("FAILED {name}: {e}"),
    };
    match bar {
        Some(b) => {
            b.inc(1);
            b.println(line);
        }
        None if !quiet => eprintln!("{line}"),
        None => {}
    }
}

/// One results row per finished run of `specs`, read back from the run directories.
pub fn collect_results(specs: &[RunSpec]) -> Result<Vec<ResultRow>> {
    let mut rows = Vec::new();
    for spec in specs {
        let dir = run_dir(spec);
        if RunDir::is_finished(&dir) {
            let metrics = read_metrics(&dir)?;
            rows.push(result_row(spec, &metrics, &dir));
        }
    }
    Ok(rows)
}

fn result_row(spec: &RunSpec, m: &RunMetrics, dir: &Path) -> ResultRow {
    let c = &spec.config;
    let (optimizer, lr) = (c.optimizer.kind.name(), c.optimizer.lr);
    let nan = f64::NAN;
    ResultRow {
        experiment: c.name.clone(),
        run: spec.run.clone(),
        dataset: dataset_label(spec),
        model: c.model.name().to_string(),
        d: c.embedding.dim,
        k: (c.embedding.kind == EmbeddingKind::Mlet).then(|| c.embedding.width()),
        sets: c.embedding.sets,
        init_std: c.embedding.init_std,
        seed: c.training.seed,
        lr,
        optimizer: optimizer.to_string(),
        test_auc: m.test.map_or(nan, |t| t.auc),
        test_logloss: m.test.map_or(nan, |t| t.logloss),
        test_pr_auc: m.test.map_or(nan, |t| t.pr_auc),
        valid_auc: m.valid.map_or(nan, |t| t.auc),
        valid_logloss: m.valid.map_or(nan, |t| t.logloss),
        train_seconds: m.train.seconds,
        samples_per_s: m.train.samples_per_s,
        training_embedding_params: m.embedding_params.training,
        inference_embedding_params: m.embedding_params.inference,
        test_pr_auc_a: pr_auc_of(m.test_by_frequency.as_ref().map(|f| &f.set_a)),
        test_pr_auc_b: pr_auc_of(m.test_by_frequency.as_ref().map(|f| &f.set_b)),
        test_pr_auc_deciles: m.test_by_frequency.as_ref().map_or_else(Vec::new, |f| {
            f.deciles.iter().map(|g| pr_auc_of(Some(g))).collect()
        }),
        step_ms_median: m.runtime.as_ref().map_or(nan, |r| r.step_ms_median),
        step_ms_p90: m.runtime.as_ref().map_or(nan, |r| r.step_ms_p90),
        peak_rss_mb: m
            .runtime
            .as_ref()
            .and_then(|r| r.peak_rss_bytes)
            .map_or(nan, |b| b as f64 / (1u64 << 20) as f64),
        run_dir: dir.display().to_string(),
    }
}

/// PR-AUC of a frequency group; NaN when absent or undefined (one class only).
fn pr_auc_of(group: Option<&FrequencyGroup>) -> f64 {
    group.and_then(|g| g.metrics).map_or(f64::NAN, |m| m.pr_auc)
}

fn dataset_label(spec: &RunSpec) -> String {
    let d = &spec.config.data;
    if let Some(s) = &d.synthetic {
        return format!("synthetic-{}", s.rows);
    }
    let path = d.raw.as_ref().or(d.train.as_ref()).or(d.cache.as_ref());
    path.and_then(|p| p.file_stem())
        .map_or("data".into(), |s| s.to_string_lossy().into_owned())
}

/// One line per (model, dataset) for Table 3's maximum memory reduction, and per MLET point
/// with several σ for the best σ.
fn findings(rows: &[ResultRow]) -> Vec<String> {
    let mut lines = Vec::new();
    for m in results::max_memory_reduction(&results::memory_reduction(rows)) {
        let how: Vec<String> = m
            .achieved_by
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "d {} -> {} (k >= {})",
                    r.baseline_d, r.mlet_d?, r.mlet_k?
                ))
            })
            .collect();
        lines.push(match m.ratio {
            Some(ratio) => format!(
                "{} on {}: maximum memory reduction {ratio}x ({})",
                m.model,
                m.dataset,
                how.join(", ")
            ),
            None => format!(
                "{} on {}: MLET never reached the baseline's AUC at a smaller or equal d",
                m.model, m.dataset
            ),
        });
    }
    let pairs = results::model_dataset_pairs(rows);
    let gains = results::frequency_gains(rows);
    let runtime = results::runtime_table(rows);
    for (model, dataset) in &pairs {
        let mine = |g: &&results::FrequencyGain| &g.model == model && &g.dataset == dataset;
        let (a, b): (Vec<f64>, Vec<f64>) = gains
            .iter()
            .filter(mine)
            .map(|g| (g.gain_a_mean, g.gain_b_mean))
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .unzip();
        if !a.is_empty() {
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            lines.push(format!(
                "{model} on {dataset}: MLET's PR-AUC gain over the baseline, mean of {} \
                 configurations: {:+.2}% on the 10% most frequent test samples (A), {:+.2}% on \
                 the 10% least frequent (B) (table4_frequency.csv)",
                a.len(),
                mean(&a),
                mean(&b)
            ));
        }
        let ratios: Vec<f64> = runtime
            .iter()
            .filter(|r| &r.model == model && &r.dataset == dataset && r.k.is_some())
            .map(|r| r.step_ratio_to_baseline)
            .filter(|r| r.is_finite())
            .collect();
        if let (Some(lo), Some(hi)) = (
            ratios.iter().copied().reduce(f64::min),
            ratios.iter().copied().reduce(f64::max),
        ) {
            lines.push(format!(
                "{model} on {dataset}: an MLET step costs {lo:.2}x to {hi:.2}x the baseline's at \
                 the same d (median step times, runtime.csv)"
            ));
        }
    }
    for b in results::best_init_std(rows)
        .iter()
        .filter(|b| b.sigmas_tried > 1)
    {
        lines.push(format!(
            "{} on {} d={} k={}: best init_std {} (test AUC {:.4} ± {:.4} over {} seeds, {} values tried)",
            b.model, b.dataset, b.d, b.k, b.init_std, b.auc_mean, b.auc_std, b.count, b.sigmas_tried
        ));
    }
    lines
}

/// results.csv, summary.csv, memory_reduction.csv, table4_frequency.csv (when MLET and baseline
/// runs pair up), runtime.csv and best_init_std.json under `out_dir`.
fn write_reports(rows: &[ResultRow], out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut written = Vec::new();
    let path = out_dir.join("results.csv");
    results::write_results_csv(&path, rows)?;
    written.push(path);
    let path = out_dir.join("summary.csv");
    results::write_summary_csv(&path, &results::summarize(rows))?;
    written.push(path);
    let path = out_dir.join("memory_reduction.csv");
    results::write_memory_reduction_csv(&path, &results::memory_reduction(rows))?;
    written.push(path);
    let gains = results::frequency_gains(rows);
    if !gains.is_empty() {
        let path = out_dir.join("table4_frequency.csv");
        results::write_frequency_gains_csv(&path, &gains)?;
        written.push(path);
    }
    let path = out_dir.join("runtime.csv");
    results::write_runtime_csv(&path, &results::runtime_table(rows))?;
    written.push(path);
    if rows.iter().any(|r| r.k.is_some()) {
        let best = results::best_init_std(rows);
        if !best.is_empty() {
            let path = out_dir.join("best_init_std.json");
            crate::atomic::write_atomic(&path, serde_json::to_string_pretty(&best)?.as_bytes())?;
            written.push(path);
        }
    }
    if written.is_empty() {
        bail!("nothing to report");
    }
    Ok(written)
}
