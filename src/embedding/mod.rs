//! Embedding tables behind one interface: `[B, F]` field-local indices in, `[B, F, d]` out.
//!
//! All fields live in one table with per-field row offsets (TorchRec style), so a batch is
//! looked up in one `index_select`. Two kinds, chosen by configuration:
//! - `single`: the table is `[Σn, d]`;
//! - `mlet`: the table is `[Σn, k]` and each field has a projection `P_f` (`[k, d]`); a lookup
//!   of value `i` of field `f` is `T[i] · P_f`. `collapse()` multiplies them out into a plain
//!   `[Σn, d]` table of the same size as a single-layer one.
//!
//! The big table is not an autograd leaf: each step gathers the rows the batch touches into a
//! small leaf tensor, and the optimizer writes their update back (on the CPU in one fused pass,
//! `training::row_update`; elsewhere with `index_add_`). A step thus
//! costs in proportion to the rows it touches, never to the table size. The projections are
//! ordinary dense parameters.
//!
//! With the hashing trick (`embedding.hash`, see `hash`), a hashed field's table has fewer rows
//! than its vocabulary and its ids are reduced modulo the table size before the lookup.
//!
//! Multi-embedding (paper 004, `embedding.sets: M`) gives every field M independent tables.
//! They are more tables of the same fused table, set-major: table `m·F + f` is set m's table of
//! field f. A lookup repeats the batch's ids once per set and returns `[B, M·F, d]`, which a
//! model splits into M `[B, F, d]` blocks (`Features::sets`). Collapse, the optimizer and the
//! memory check see M·F tables and need nothing else.
pub mod hash;
mod index;
mod init;
mod projection;

pub use hash::HashedField;
pub use index::LookupIndex;

use anyhow::{bail, Result};
use std::cell::OnceCell;
use tch::{nn, Kind, Tensor};

use crate::config::{EmbeddingConfig, EmbeddingKind};
use crate::huge_pages;

/// Rows of a table collapsed per matrix product (16 MiB of k = 64 rows in f32).
const COLLAPSE_BLOCK_ROWS: i64 = 1 << 16;

/// VarStore names, also used by the optimizer to find the sparse table.
pub const TABLE: &str = "table";
pub const PROJECTION: &str = "projection";

pub struct Embeddings {
    dim: i64,
    /// Independent embedding sets (1 unless multi-embedding).
    sets: usize,
    /// Rows of each table (M·F of them, set-major): the field's vocabulary size, or the buckets
    /// of a hashed field.
    cardinalities: Vec<i64>,
    offsets: Vec<i64>,
    /// `offsets` as a `[1, F]` tensor on the table's device, built once: a tensor made from a
    /// slice inside a trace would be recorded as zeros, a captured one becomes a constant.
    offset_row: Tensor,
    /// Set when some field is hashed.
    hashing: Option<Hashing>,
    /// Each table's vocabulary size as a `[1, M·F]` tensor (built once, like `offset_row`): the
    /// export path maps ids outside it to the field's OOV row.
    vocabulary_row: Tensor,
    /// `[Σn, width]`; width is d for single-layer tables and k for MLET.
    pub table: Tensor,
    /// MLET's `[M·F, k, d]` projections, one per table.
    pub projection: Option<Tensor>,
}

/// The modulo hashing trick on some fields' ids.
struct Hashing {
    /// Per field, the size of the vocabulary its ids come from (at least its table's rows).
    vocabulary: Vec<i64>,
    /// The table sizes as a `[1, F]` tensor, the moduli of the export path; built once for the
    /// same reason as `offset_row`.
    modulus_row: Tensor,
}

impl Hashing {
    fn shallow_clone(&self) -> Hashing {
        Hashing {
            vocabulary: self.vocabulary.clone(),
            modulus_row: self.modulus_row.shallow_clone(),
        }
    }
}

/// The output of a lookup plus the gathered rows, whose gradient is the table's sparse gradient.
pub struct Lookup {
    /// `[B, M·F, d]`.
    pub output: Tensor,
    /// `[U, width]` leaf holding the distinct rows of the batch.
    pub rows: Tensor,
    /// `[U]` the table rows `rows` were gathered from (the index's `unique`): where the
    /// optimizer writes their update, whatever table this lookup read.
    pub unique: Tensor,
    /// `[B·M·F]`: the distinct row each entry of `output` was gathered from; `None` where
    /// `output` is the distinct rows themselves.
    inverse: Option<Tensor>,
    /// MLET: the distinct rows projected (`[U, d]`), the leaf `output` is gathered from; its
    /// gradient reaches `rows` and the projections through `Embeddings::backward`.
    projected: Option<Projected>,
}

struct Projected {
    rows: Tensor,
    per_table: Vec<i64>,
    /// The wide rows' gradient, made by `Embeddings::backward`: written straight into a tensor
    /// of its own rather than through autograd (the leaf `rows` is fresh every step, so it would
    /// have no gradient to accumulate into).
    rows_grad: OnceCell<Tensor>,
}

impl Lookup {
    /// A lookup without a projection: `output` gathered from the leaf `rows`, which are the
    /// rows `unique` of their table.
    pub fn new(output: Tensor, rows: Tensor, unique: Tensor) -> Lookup {
        Lookup {
            output,
            rows,
            unique,
            inverse: None,
            projected: None,
        }
    }

    /// Adds `g` (shaped as `output`) to the gradient of the distinct rows `output` was gathered
    /// from, as autograd would through the gather: for a part of the network that computes its
    /// gradient itself (the CIN's recomputing backward). Call it after the loss's backward pass
    /// and before `Embeddings::backward`.
    pub fn add_output_grad(&self, g: &Tensor) {
        let distinct = match &self.projected {
            Some(p) => &p.rows,
            None => &self.rows,
        };
        let flat = g.reshape([-1, distinct.size()[1]]);
        let summed = match &self.inverse {
            Some(inverse) => tch::no_grad(|| {
                let mut summed = distinct.zeros_like();
                let _ = summed.index_add_(0, inverse, &flat);
                summed
            }),
            None => flat,
        };
        crate::grad::add_to_grad(distinct, &summed);
    }

    /// The summed gradient of `rows` (the table's sparse gradient) after the loss's backward
    /// pass and `Embeddings::backward`; undefined when nothing reached them.
    pub fn rows_grad(&self) -> Tensor {
        match self.projected.as_ref().and_then(|p| p.rows_grad.get()) {
            Some(g) => g.shallow_clone(),
            None => self.rows.grad(),
        }
    }
}

impl Embeddings {
    /// Creates and initialises the tables under `path` (call `tch::manual_seed` first for
    /// reproducible initialisation).
    pub fn new(path: &nn::Path, cardinalities: &[usize], cfg: &EmbeddingConfig) -> Result<Self> {
        Self::hashed(path, cardinalities, &[], cfg)
    }

    /// As `new`, with the `hashed` fields' tables of `buckets` rows (their ids are reduced
    /// modulo `buckets`); `cardinalities` are the vocabulary sizes.
    pub fn hashed(
        path: &nn::Path,
        cardinalities: &[usize],
        hashed: &[HashedField],
        cfg: &EmbeddingConfig,
    ) -> Result<Self> {
        if cardinalities.is_empty() {
            bail!("the data set has no categorical fields");
        }
        if let Some(f) = cardinalities.iter().position(|&n| n == 0) {
            bail!("categorical field {f} has cardinality 0");
        }
        let width = cfg.width() as i64;
        if width == 0 || cfg.dim == 0 {
            bail!("embedding dim and k must be at least 1");
        }
        if cfg.sets == 0 {
            bail!("embedding.sets must be at least 1");
        }
        // per table, set-major: every set repeats the fields
        let per_set = |v: Vec<i64>| -> Vec<i64> { v.repeat(cfg.sets) };
        let vocabulary = per_set(cardinalities.iter().map(|&n| n as i64).collect());
        let cardinalities = per_set(
            hash::table_rows(cardinalities, hashed)?
                .into_iter()
                .map(|n| n as i64)
                .collect(),
        );
        let offsets = offsets_of(&cardinalities);
        let rows: i64 = cardinalities.iter().sum();
        check_memory(rows, cardinalities.len(), cfg, path.kind(), path.device())?;
        let table = path.add(
            TABLE,
            huge_pages::filled(&[rows, width], 0.0, (path.kind(), path.device())),
            false,
        );
        tch::no_grad(|| {
            for (&n, &off) in cardinalities.iter().zip(&offsets) {
                init::fill_table(&table.narrow(0, off, n), cfg);
            }
        });
        let projection = match cfg.kind {
            EmbeddingKind::Single => None,
            EmbeddingKind::Mlet => {
                let shape = [cardinalities.len() as i64, width, cfg.dim as i64];
                let init = Tensor::randn(shape, (table.kind(), table.device())) * cfg.init_std;
                Some(path.var_copy(PROJECTION, &init))
            }
        };
        let vocabulary_row = as_row(&vocabulary, &table);
        let hashing = (!hashed.is_empty()).then(|| Hashing {
            vocabulary,
            modulus_row: as_row(&cardinalities, &table),
        });
        Ok(Embeddings {
            dim: cfg.dim as i64,
            sets: cfg.sets,
            offset_row: as_row(&offsets, &table),
            hashing,
            vocabulary_row,
            cardinalities,
            offsets,
            table,
            projection,
        })
    }

    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// Categorical fields F (each has one table per set).
    pub fn num_fields(&self) -> usize {
        self.cardinalities.len() / self.sets
    }

    /// Embedding sets M (1 unless multi-embedding).
    pub fn num_sets(&self) -> usize {
        self.sets
    }

    /// Tables M·F, set-major.
    pub fn num_tables(&self) -> usize {
        self.cardinalities.len()
    }

    /// Each table's first row in the fused table.
    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// Rows of each table (for a hashed field, its buckets).
    pub fn cardinalities(&self) -> &[i64] {
        &self.cardinalities
    }

    /// A name per table from the fields' names: the field's own with one set, `set{m}.{field}`
    /// with several (for exported tables and analyses).
    pub fn table_names(&self, field_names: &[String]) -> Vec<String> {
        if self.sets == 1 {
            return field_names.to_vec();
        }
        (0..self.sets)
            .flat_map(|m| field_names.iter().map(move |f| format!("set{m}.{f}")))
            .collect()
    }

    /// The lookup index of `[B, F]` field-local ids (row-major), hashed ids reduced to their
    /// rows; with several sets every example's ids are looked up once per set.
    pub fn index(&self, local: &[i64], device: tch::Device) -> Result<LookupIndex> {
        let repeated;
        let local = if self.sets == 1 {
            local
        } else {
            let f = self.num_fields();
            repeated = local
                .chunks(f)
                .flat_map(|row| row.repeat(self.sets))
                .collect::<Vec<i64>>();
            &repeated[..]
        };
        match &self.hashing {
            None => LookupIndex::new(local, &self.offsets, &self.cardinalities, device),
            Some(h) => LookupIndex::hashed(
                local,
                &self.offsets,
                &h.vocabulary,
                &self.cardinalities,
                device,
            ),
        }
    }

    /// Looks up a batch through a fresh leaf of its distinct rows (the training path; under
    /// `no_grad` it is also the evaluation path).
    ///
    /// MLET projects each distinct row once, before the batch's rows are gathered (the gather
    /// then moves d floats per lookup rather than k, and the projection costs U·k·d rather than
    /// B·F·k·d), with one matrix product per table written in place. That product is outside
    /// autograd: per-table nodes would cost more than the arithmetic, so `backward` carries its
    /// gradient after `backward()` of the loss.
    pub fn lookup(&self, index: &LookupIndex) -> Lookup {
        let rows = self
            .table
            .index_select(0, &index.unique)
            .detach()
            .set_requires_grad(true);
        let (distinct, projected) = match &self.projection {
            None => (rows.shallow_clone(), None),
            Some(p) => {
                let leaf = tch::no_grad(|| projection::forward(&rows, &index.per_table, p))
                    .set_requires_grad(true);
                let projected = Projected {
                    rows: leaf.shallow_clone(),
                    per_table: index.per_table.clone(),
                    rows_grad: OnceCell::new(),
                };
                (leaf, Some(projected))
            }
        };
        let output = distinct.index_select(0, &index.inverse).view([
            index.batch,
            self.num_tables() as i64,
            -1,
        ]);
        Lookup {
            output,
            rows,
            unique: index.unique.shallow_clone(),
            inverse: Some(index.inverse.shallow_clone()),
            projected,
        }
    }

    /// After `backward()` of a loss over `lookup.output`: carries the projected rows' gradient
    /// through MLET's projections, as autograd would: `G_t · P_tᵀ` is the gradient of the wide
    /// rows of table t (read by `Lookup::rows_grad`, plus whatever autograd gave `lookup.rows`
    /// directly), and `R_tᵀ · G_t` is added to the gradient of its projection `P_t` (R_t and G_t:
    /// the table's distinct rows and their projected gradient). Nothing for single-layer tables.
    pub fn backward(&self, lookup: &Lookup) {
        let (Some(p), Some(projected)) = (&self.projection, &lookup.projected) else {
            return;
        };
        let g = projected.rows.grad();
        if !g.defined() {
            return;
        }
        // the projection is a parameter: from its second step on it has a (zeroed) gradient to
        // accumulate into; on the first, autograd makes one from a surrogate Σ P·C whose
        // gradient is exactly C
        let existing = p.grad();
        let first = !existing.defined();
        let projection_grad = if first { p.zeros_like() } else { existing };
        let rows_grad = tch::no_grad(|| {
            let rows_grad = projection::backward(
                &lookup.rows.detach(),
                &g,
                &projected.per_table,
                p,
                &projection_grad,
            );
            let direct = lookup.rows.grad();
            if direct.defined() {
                rows_grad + direct
            } else {
                rows_grad
            }
        });
        assert!(
            projected.rows_grad.set(rows_grad).is_ok(),
            "Embeddings::backward called twice for one lookup"
        );
        if first {
            crate::grad::add_to_grad(p, &projection_grad);
        }
    }

    /// Looks up `[B, F]` field-local indices held in a tensor (the export path: no host-side
    /// deduplication, so it traces into TorchScript); `[B, M·F, d]`.
    pub fn forward_local(&self, local: &Tensor) -> Tensor {
        let global = self.rows_of_local(local);
        // -1 for the batch: a traced module must not freeze the batch size
        let (f, width) = (global.size()[1], self.table.size()[1]);
        let gathered = self
            .table
            .index_select(0, &global.view([-1]))
            .view([-1, f, width]);
        self.project(gathered)
    }

    /// `forward_local` over a table of int8 codes (collapsed, `[Σn, d]`), dequantised on lookup:
    /// `scales` is `[1, F, 1]` f32, one per field, made before tracing so it becomes a constant.
    pub fn forward_local_int8(&self, local: &Tensor, scales: &Tensor) -> Tensor {
        let global = self.rows_of_local(local);
        let f = global.size()[1];
        self.table
            .index_select(0, &global.view([-1]))
            .view([-1, f, self.dim])
            .to_kind(Kind::Float)
            * scales
    }

    /// `[B, F]` field-local ids → `[B, M·F]` rows of the fused table, in tensor ops (the export
    /// path): an id outside its field's vocabulary (negative, or at least its size) reads the
    /// field's OOV row 0 rather than another field's rows; a hashed field's id is reduced modulo
    /// its table size.
    fn rows_of_local(&self, local: &Tensor) -> Tensor {
        let local = if self.sets == 1 {
            local.shallow_clone()
        } else {
            local.repeat([1, self.sets as i64])
        };
        let in_vocabulary = local
            .ge(0)
            .logical_and(&local.lt_tensor(&self.vocabulary_row));
        let local = local * in_vocabulary.to_kind(Kind::Int64);
        match &self.hashing {
            Some(h) => local.remainder_tensor(&h.modulus_row) + &self.offset_row,
            None => local + &self.offset_row,
        }
    }

    /// `[B, M·F, width]` → `[B, M·F, d]`: MLET's per-table projection; identity for single tables.
    fn project(&self, gathered: Tensor) -> Tensor {
        match &self.projection {
            None => gathered,
            Some(p) => Tensor::einsum("bfk,fkd->bfd", &[&gathered, p], None::<&[i64]>),
        }
    }

    /// The plain `[Σn, d]` tables this embedding computes (`T_f · P_f` for MLET), in a table of
    /// their own.
    pub fn collapse(&self) -> Embeddings {
        match &self.projection {
            None => self.with_table(tch::no_grad(|| self.table.copy())),
            Some(_) => self.collapse_shared(),
        }
    }

    /// As `collapse`, but single-layer tables, which have nothing to multiply, are shared with
    /// `self` rather than copied (for a collapsed model that replaces or sits beside this one
    /// and never writes to its table).
    pub fn collapse_shared(&self) -> Embeddings {
        let Some(p) = &self.projection else {
            return self.with_table(self.table.shallow_clone());
        };
        let (rows, kind, device) = (self.table.size()[0], self.table.kind(), self.table.device());
        let table = tch::no_grad(|| {
            // written block by block into its place: no temporary of a whole table, and no
            // second copy as concatenating per-table products made
            let out = huge_pages::empty(&[rows, self.dim], (kind, device));
            for f in 0..self.num_tables() {
                let (off, n) = (self.offsets[f], self.cardinalities[f]);
                let projection = p.get(f as i64);
                for start in (0..n).step_by(COLLAPSE_BLOCK_ROWS as usize) {
                    let len = COLLAPSE_BLOCK_ROWS.min(n - start);
                    let wide = self.table.narrow(0, off + start, len);
                    out.narrow(0, off + start, len)
                        .copy_(&wide.matmul(&projection));
                }
            }
            out
        });
        self.with_table(table)
    }

    /// The collapsed rows `rows` (sorted, distinct global row ids) only, `[U, d]` in their order,
    /// as embeddings whose lookups must be given indices into `rows` (`LookupIndex::unique`
    /// mapped to positions among them). Each row has the bits `collapse_shared`'s table holds
    /// for it: MLET rows come out of the same 65,536-row block products, one block held at a
    /// time, so that checking a few thousand rows does not hold a whole `n x d` table.
    pub fn collapse_rows(&self, rows: &[i64]) -> Result<Embeddings> {
        let total = self.table.size()[0];
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.iter().any(|&r| r < 0 || r >= total) {
            bail!("collapse_rows needs sorted distinct rows below {total}");
        }
        let device = self.table.device();
        let ids = |s: &[i64]| Tensor::from_slice(s).to_device(device);
        let Some(p) = &self.projection else {
            return Ok(self.with_table(self.table.index_select(0, &ids(rows))));
        };
        let table = tch::no_grad(|| {
            let out = Tensor::empty([rows.len() as i64, self.dim], (self.table.kind(), device));
            for f in 0..self.num_tables() {
                let (off, n) = (self.offsets[f], self.cardinalities[f]);
                let projection = p.get(f as i64);
                for start in (0..n).step_by(COLLAPSE_BLOCK_ROWS as usize) {
                    let len = COLLAPSE_BLOCK_ROWS.min(n - start);
                    let (lo, hi) = (off + start, off + start + len);
                    let (a, b) = (
                        rows.partition_point(|&r| r < lo),
                        rows.partition_point(|&r| r < hi),
                    );
                    if a == b {
                        continue;
                    }
                    let local: Vec<i64> = rows[a..b].iter().map(|r| r - lo).collect();
                    let block = self.table.narrow(0, lo, len).matmul(&projection);
                    out.narrow(0, a as i64, (b - a) as i64)
                        .copy_(&block.index_select(0, &ids(&local)));
                }
            }
            out
        });
        Ok(self.with_table(table))
    }

    /// These embeddings' fields and sets over a plain `[Σn, d]` table.
    fn with_table(&self, table: Tensor) -> Embeddings {
        Embeddings {
            dim: self.dim,
            sets: self.sets,
            cardinalities: self.cardinalities.clone(),
            offsets: self.offsets.clone(),
            offset_row: self.offset_row.shallow_clone(),
            hashing: self.hashing.as_ref().map(Hashing::shallow_clone),
            vocabulary_row: self.vocabulary_row.shallow_clone(),
            table,
            projection: None,
        }
    }

    /// Parameters held at training time (wide tables plus projections).
    pub fn training_parameters(&self) -> i64 {
        self.table.numel() as i64 + self.projection.as_ref().map_or(0, |p| p.numel() as i64)
    }

    /// Parameters of the collapsed, inference-time tables: Σn · d (n: a hashed field's buckets).
    pub fn inference_parameters(&self) -> i64 {
        self.cardinalities.iter().sum::<i64>() * self.dim
    }

    pub fn kind(&self) -> Kind {
        self.table.kind()
    }
}

/// Refuses tables that cannot fit before libtorch is asked for them: a failed allocation of
/// that size panics inside tch, and an overcommitted one gets the process killed later.
fn check_memory(
    rows: i64,
    fields: usize,
    cfg: &EmbeddingConfig,
    kind: Kind,
    device: tch::Device,
) -> Result<()> {
    let width = cfg.width() as u128;
    let mut values = rows as u128 * width;
    if cfg.kind == EmbeddingKind::Mlet {
        values += fields as u128 * width * cfg.dim as u128;
    }
    let bytes = values.saturating_mul(kind.elt_size_in_bytes() as u128);
    let mut shape = match cfg.kind {
        EmbeddingKind::Single => format!("{rows} rows x d = {}", cfg.dim),
        EmbeddingKind::Mlet => format!(
            "{rows} rows x k = {} and {fields} projections {} x {}",
            cfg.width(),
            cfg.width(),
            cfg.dim
        ),
    };
    if cfg.sets > 1 {
        shape += &format!(", {} sets", cfg.sets);
    }
    // on a GPU libtorch's own error is clear; the element count must still fit its i64
    let limit = match device {
        tch::Device::Cpu => available_memory_bytes().map(u128::from),
        _ => None,
    };
    let too_big = match limit {
        Some(available) => bytes > available,
        None => values > i64::MAX as u128,
    };
    if too_big {
        let have = limit.map_or("what libtorch can address".into(), |a| {
            format!("the {} of memory available", human_bytes(a))
        });
        bail!(
            "embedding: the tables ({shape}) need {}, more than {have}; lower embedding.dim \
             or embedding.k, raise data.min_count, or hash the largest fields (embedding.hash)",
            human_bytes(bytes)
        );
    }
    Ok(())
}

/// Memory the kernel says can be had without swapping out (Linux `MemAvailable`) plus free
/// swap; `None` where the system does not tell.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// `3.6 TiB`, `512.0 MiB`.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `values` as a `[1, F]` tensor on the table's device.
fn as_row(values: &[i64], table: &Tensor) -> Tensor {
    Tensor::from_slice(values)
        .to_device(table.device())
        .unsqueeze(0)
}

fn offsets_of(cardinalities: &[i64]) -> Vec<i64> {
    cardinalities
        .iter()
        .scan(0i64, |acc, &n| {
            let off = *acc;
            *acc += n;
            Some(off)
        })
        .collect()
}
