//! Export of a trained run for serving: every embedding collapsed to plain `n x d` tables, the
//! model traced into TorchScript (`(dense f32 [B, m], cat i64 [B, F]) -> click probability [B]`),
//! a schema file beside it, and optionally the tables alone (safetensors or npz).
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

use crate::analysis::quantize::QuantizedTables;
use crate::atomic::{write_atomic, PendingFile};
use crate::config::RunConfig;
use crate::data::{CacheMeta, VocabFile};
use crate::models::{CtrModel, Features, InputShape};
use crate::torch_error::brief;
use crate::training::WEIGHTS;

/// A trained model rebuilt from its run directory.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub shape: InputShape,
    pub model: CtrModel,
}

/// Rebuilds the model of a finished run (`config.yaml`, `run.json`, `weights.safetensors`).
pub fn load_run(dir: &Path, device: Device) -> Result<LoadedRun> {
    if !dir.is_dir() {
        bail!("{}: no such run directory", dir.display());
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (is this a finished run directory?)",
                path.display()
            )
        })
    };
    let config: RunConfig = serde_yaml::from_str(&read("config.yaml")?).with_context(|| {
        format!(
            "{}: not a run configuration",
            dir.join("config.yaml").display()
        )
    })?;
    let run: serde_json::Value = serde_json::from_str(&read("run.json")?)
        .with_context(|| format!("{}: not JSON", dir.join("run.json").display()))?;
    let data = &run["data"];
    let shape = InputShape {
        num_dense: data["num_dense"]
            .as_u64()
            .with_context(|| format!("{}: no data.num_dense", dir.join("run.json").display()))?
            as usize,
        cardinalities: data["cardinalities"]
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_u64().map(|n| n as usize)).collect())
            .with_context(|| {
                format!("{}: no data.cardinalities", dir.join("run.json").display())
            })?,
        // absent in runs without hashing and in runs older than the option
        hashed: match data.get("hash") {
            None => Vec::new(),
            Some(h) => serde_json::from_value(h.clone()).with_context(|| {
                format!(
                    "{}: data.hash is not a list of hashed fields",
                    dir.join("run.json").display()
                )
            })?,
        },
    };
    let weights = dir.join(WEIGHTS);
    if !weights.is_file() {
        bail!(
            "{}: missing; the run did not finish or diverged",
            weights.display()
        );
    }
    let model = CtrModel::new(&config.model, &config.embedding, &shape, device)?;
    crate::tensor_file::load_var_store(&model.vs, &weights)
        .with_context(|| format!("{}: does not match the run's model", weights.display()))?;
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        config,
        shape,
        model,
    })
}

/// What `export_run` wrote.
#[derive(Debug)]
pub struct ExportReport {
    pub module: PathBuf,
    pub schema: PathBuf,
    /// `<stem>.vocab.json`: how raw rows become the module's inputs.
    pub vocab: PathBuf,
    pub tables: Option<PathBuf>,
    /// Bytes of the collapsed `n x d` embedding tables: Σn·d·4 for f32, Σn·d + 4·F for int8
    /// (codes plus one f32 scale per field). The linear part's one weight per category, which
    /// stays f32, is not counted.
    pub embedding_bytes: i64,
}

/// How the exported embedding tables are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// int8 codes plus one f32 scale per field, dequantised on lookup inside the module; the
    /// scales are those of `crate::analysis::quantize` (L2-optimal grid search), so the module
    /// predicts what `mlet analyze quantize` evaluates.
    Int8,
}

/// Collapses, traces and saves the run at `run_dir` to `out` (plus `<out stem>.schema.json`),
/// and the collapsed tables to `tables` when given (`.safetensors` or `.npz`).
pub fn export_run(
    run_dir: &Path,
    out: &Path,
    tables: Option<&Path>,
    device: Device,
) -> Result<ExportReport> {
    export_run_as(run_dir, out, tables, device, Precision::F32)
}

/// [`export_run`] with the embedding tables stored at `precision`. For int8 the tables file
/// holds the int8 codes per field and `scales` (`[F]` f32).
pub fn export_run_as(
    run_dir: &Path,
    out: &Path,
    tables: Option<&Path>,
    device: Device,
    precision: Precision,
) -> Result<ExportReport> {
    refuse_inside(run_dir, out)?;
    if let Some(t) = tables {
        refuse_inside(run_dir, t)?;
    }
    let mut run = load_run(run_dir, device)?;
    // before anything is written: a model that cannot be fed raw rows is not worth exporting
    let vocab = export_vocab(&run)?;
    // tracing turns the weights into constants, which must not require gradients
    run.model.vs.freeze();
    run.model.collapse();
    let names = field_names(&run);
    let quantized = match precision {
        Precision::F32 => None,
        Precision::Int8 => {
            let q = QuantizedTables::of(&run.model.embeddings)?;
            let fields = q.choices.len() as i64;
            // built outside the trace, so that it is recorded as a constant
            let scale_row = Tensor::from_slice(&q.scales())
                .to_device(device)
                .view([1, fields, 1]);
            run.model.embeddings.table = q.codes.shallow_clone();
            Some((q, scale_row))
        }
    };
    let model = &run.model;
    let fields = run.shape.cardinalities.len() as i64;
    let example = (
        Tensor::zeros([2, run.shape.num_dense as i64], (Kind::Float, device)),
        Tensor::zeros([2, fields], (Kind::Int64, device)),
    );
    let module = tch::no_grad(|| {
        CModule::create_by_tracing("MletModel", "forward", &[example.0, example.1], &mut |x| {
            let logits = match &quantized {
                None => model.forward_local(&x[0], &x[1]),
                Some((_, scale_row)) => {
                    let emb = model.embeddings.forward_local_int8(&x[1], scale_row);
                    let linear = model.linear.as_ref().map(|l| l.forward_local(&x[1]));
                    model.network.forward(
                        &Features {
                            dense: &x[0],
                            emb: &emb,
                            sets: model.embeddings.num_sets(),
                            linear: linear.as_ref(),
                        },
                        false,
                    )
                }
            };
            vec![logits.sigmoid()]
        })
    })
    .context("cannot trace the model")?;
    save_module(&module, out)?;

    let mut tables_by_field = collapsed_tables(model, &names);
    let embedding_bytes: i64 = tables_by_field
        .iter()
        .filter(|(name, _)| !name.starts_with("linear."))
        .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
        .sum::<i64>()
        + quantized
            .as_ref()
            .map_or(0, |(q, _)| 4 * q.choices.len() as i64);
    if let Some((q, _)) = &quantized {
        tables_by_field.push(("scales".into(), Tensor::from_slice(&q.scales())));
    }
    let schema_path = schema_path(out);
    let scales = quantized.as_ref().map(|(q, _)| q.scales());
    write_atomic(
        &schema_path,
        serde_json::to_string_pretty(&schema(&run, &names, embedding_bytes, scales.as_deref()))?
            .as_bytes(),
    )?;
    let vocab_out = vocab_path(out);
    vocab.write(&vocab_out)?;
    let tables = match tables {
        None => None,
        Some(path) => {
            write_tables(path, &tables_by_field)?;
            Some(path.to_path_buf())
        }
    };
    Ok(ExportReport {
        module: out.to_path_buf(),
        schema: schema_path,
        vocab: vocab_out,
        tables,
        embedding_bytes,
    })
}

/// Refuses an output path inside the run directory: it could overwrite the trained run (its
/// weights, its configuration) and would mix exports into what the grid reads back.
fn refuse_inside(run_dir: &Path, out: &Path) -> Result<()> {
    let Ok(run) = run_dir.canonicalize() else {
        return Ok(()); // no such run: loading it says so
    };
    let absolute = std::path::absolute(out)
        .with_context(|| format!("{}: not a usable path", out.display()))?;
    // the nearest existing ancestor, resolved (the output and its folders may not exist yet)
    let mut existing = absolute.as_path();
    let resolved = loop {
        if let Ok(p) = existing.canonicalize() {
            break p;
        }
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(()),
        }
    };
    if resolved.starts_with(&run) {
        bail!(
            "{}: inside the run directory {}; export elsewhere (it could overwrite the trained run)",
            out.display(),
            run_dir.display()
        );
    }
    Ok(())
}

/// `model.pt` → `model.schema.json`.
pub fn schema_path(out: &Path) -> PathBuf {
    out.with_extension("schema.json")
}

/// `model.pt` → `model.vocab.json`.
pub fn vocab_path(out: &Path) -> PathBuf {
    out.with_extension("vocab.json")
}

/// The run's data-cache vocabulary, checked against the model, with the hashed fields' buckets.
fn export_vocab(run: &LoadedRun) -> Result<VocabFile> {
    let cache = run.config.data.cache_dir();
    let mut vocab = VocabFile::of_cache(&cache)
        .with_context(|| format!("the vocabulary of run {}", run.dir.display()))?;
    if vocab.cardinalities() != run.shape.cardinalities || vocab.dense.len() != run.shape.num_dense
    {
        bail!(
            "{}: its vocabulary ({} dense, cardinalities {:?}) is not the one run {} was trained \
             on ({} dense, {:?}); was the cache re-prepared from other data?",
            cache.display(),
            vocab.dense.len(),
            vocab.cardinalities(),
            run.dir.display(),
            run.shape.num_dense,
            run.shape.cardinalities
        );
    }
    for h in &run.shape.hashed {
        vocab.fields[h.index].hash_buckets = Some(h.buckets);
    }
    Ok(vocab)
}

/// Field and dense-feature names from the run's data cache when it is still there, else
/// `C1..CF` and `I1..Im`.
fn field_names(run: &LoadedRun) -> (Vec<String>, Vec<String>) {
    let fallback = || {
        (
            (1..=run.shape.cardinalities.len())
                .map(|i| format!("C{i}"))
                .collect(),
            (1..=run.shape.num_dense).map(|i| format!("I{i}")).collect(),
        )
    };
    // The names only: no need to scan the arrays.
    match CacheMeta::read(&run.config.data.cache_dir()) {
        Ok(m) if m.cardinalities == run.shape.cardinalities => (m.field_names, m.dense_names),
        _ => fallback(),
    }
}

fn collapsed_tables(model: &CtrModel, names: &(Vec<String>, Vec<String>)) -> Vec<(String, Tensor)> {
    let emb = &model.embeddings;
    let mut out: Vec<(String, Tensor)> = emb
        .offsets()
        .iter()
        .zip(emb.cardinalities())
        .zip(&emb.table_names(&names.0))
        .map(|((&off, &n), name)| {
            (
                name.clone(),
                emb.table.narrow(0, off, n).to_device(Device::Cpu).copy(),
            )
        })
        .collect();
    if let Some(l) = &model.linear {
        for ((&off, &n), name) in l.offsets().iter().zip(l.cardinalities()).zip(&names.0) {
            out.push((
                format!("linear.{name}"),
                l.table.narrow(0, off, n).to_device(Device::Cpu).copy(),
            ));
        }
    }
    out
}

/// Writes `module` to `path` atomically. libtorch's writer throws from a destructor when the disk
/// fills, which aborts the process; so on Linux it writes into an in-memory file and Rust copies
/// that to disk, where a full disk is an ordinary error.
fn save_module(module: &CModule, path: &Path) -> Result<()> {
    let cannot =
        |e: tch::TchError| anyhow::anyhow!("cannot write {}: {}", path.display(), brief(e));
    let pending = PendingFile::new(path)?;
    match memory_file() {
        Some((mut mem, mem_path)) => {
            module.save(&mem_path).map_err(cannot)?;
            let copied = (|| -> std::io::Result<()> {
                use std::io::{Seek, Write};
                mem.seek(std::io::SeekFrom::Start(0))?;
                let mut disk = std::fs::File::create(&pending.tmp)?;
                std::io::copy(&mut mem, &mut disk)?;
                disk.flush()?;
                disk.sync_all()
            })();
            copied.with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => module.save(&pending.tmp).map_err(cannot)?,
    }
    pending.commit()
}

/// An anonymous in-memory file and a path through which libtorch can open it.
fn memory_file() -> Option<(std::fs::File, PathBuf)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: a NUL-terminated name; the descriptor is owned by the File from here on.
        let fd = unsafe { libc::memfd_create(c"mlet-export".as_ptr(), libc::MFD_CLOEXEC) };
        if fd >= 0 {
            let file = unsafe { std::fs::File::from_raw_fd(fd) };
            return Some((file, PathBuf::from(format!("/proc/self/fd/{fd}"))));
        }
    }
    None
}

fn write_tables(path: &Path, tables: &[(String, Tensor)]) -> Result<()> {
    let pending = PendingFile::new(path)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => crate::tensor_file::write_safetensors(tables, &pending.tmp)
            .with_context(|| format!("cannot write {}", path.display()))?,
        Some("npz") => Tensor::write_npz(tables, &pending.tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), brief(e)))?,
        _ => bail!(
            "{}: tables are written as .safetensors or .npz",
            path.display()
        ),
    }
    pending.commit()
}

fn schema(
    run: &LoadedRun,
    names: &(Vec<String>, Vec<String>),
    embedding_bytes: i64,
    scales: Option<&[f32]>,
) -> serde_json::Value {
    let (fields, dense) = names;
    let c = &run.config;
    let tables = run.model.embeddings.table_names(fields);
    let quantized = scales.map(|s| {
        json!({
            "dtype": "int8",
            "scheme": "uniform symmetric per field: table = scale · q, q in [-127, 127]; scale by L2-optimal grid search",
            "scales": tables.iter().zip(s).map(|(f, s)| (f.clone(), json!(s))).collect::<serde_json::Map<_, _>>(),
            "linear_part": "float32 (not quantised)",
        })
    });
    json!({
        "inputs": {
            "dense": {"dtype": "float32", "shape": ["batch", run.shape.num_dense], "names": dense,
                      "preprocessing": "per column as `dense[i].transform` in the .vocab.json file beside this model; missing = 0"},
            "cat": {"dtype": "int64", "shape": ["batch", fields.len()], "names": fields,
                    "cardinalities": run.shape.cardinalities,
                    "hashed": run.shape.hashed,
                    "preprocessing": "field-local index: position of the raw value in `fields[i].values` of the .vocab.json file beside this model; 0 = out of vocabulary or rare (below min_count)"},
        },
        "output": {"dtype": "float32", "shape": ["batch"], "meaning": "click probability"},
        "model": c.model.name(),
        "embedding": {"dim": c.embedding.dim, "trained_as": c.embedding.kind, "k": c.embedding.k,
                      "sets": c.embedding.sets, "tables": tables,
                      "collapsed": true, "bytes": embedding_bytes,
                      "quantized": quantized},
        "data_cache": c.data.cache_dir(),
        "min_count": c.data.min_count,
        "source_run": run.dir,
        "versions": crate::training::versions(),
    })
}
