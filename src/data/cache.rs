//! The binary dataset cache: a directory of little-endian arrays plus `meta.json`, written once by
//! `prepare` and memory-mapped by `Dataset::open` (zero-copy; the OS pages data in on demand).
//! Layout in `docs/data.md`.
use crate::atomic::PendingDir;
use crate::data::fingerprint::Fingerprint;
use crate::data::split::{Split, SplitCounts, SplitRule};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever the layout of the cache changes incompatibly.
pub const CACHE_FORMAT_VERSION: u32 = 1;

/// The file that describes a cache (and marks a directory as one).
pub const META_FILE: &str = "meta.json";
const FREQ_FILE: &str = "freq.u32";
const DENSE_FILE: &str = "dense.f32";
const CAT_FILE: &str = "cat.u32";
const LABEL_FILE: &str = "label.f32";
/// Everything a cache directory may hold (beside the split directories), and a split directory.
const CACHE_FILES: &[&str] = &[META_FILE, FREQ_FILE, crate::data::vocab_file::VOCAB_FILE];
const SPLIT_FILES: &[&str] = &[DENSE_FILE, CAT_FILE, LABEL_FILE];

/// Contents of `meta.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub format_version: u32,
    /// The raw file, as given to `prepare`.
    pub source: String,
    pub source_bytes: u64,
    /// "criteo", "avazu" or "csv".
    pub format: String,
    pub rows: SplitCounts,
    pub num_dense: usize,
    pub dense_names: Vec<String>,
    pub field_names: Vec<String>,
    /// Per field, vocabulary size + 1 (index 0 = out of vocabulary).
    pub cardinalities: Vec<usize>,
    pub min_count: u32,
    pub split: SplitRule,
    /// Seed of a random split (recorded, unused by the day split).
    pub split_seed: u64,
    /// Malformed lines skipped (only non-zero with skip_bad_lines).
    pub skipped_lines: u64,
    /// e.g. "mlet 0.1.0".
    pub created_by: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// What the cache was made from and how; absent in caches of older versions (which a run
    /// therefore never reuses silently: see `docs/data.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

impl CacheMeta {
    pub fn num_fields(&self) -> usize {
        self.field_names.len()
    }

    pub fn total_categories(&self) -> usize {
        self.cardinalities.iter().sum()
    }

    /// Reads and checks `DIR/meta.json` alone (no arrays opened).
    pub fn read(dir: &Path) -> Result<CacheMeta> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "cannot read {} (is {} a dataset cache made by `mlet data prepare`?)",
                meta_path.display(),
                dir.display()
            )
        })?;
        let meta: CacheMeta = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid cache metadata", meta_path.display()))?;
        meta.check(dir)?;
        Ok(meta)
    }

    fn check(&self, dir: &Path) -> Result<()> {
        let m = dir.join(META_FILE);
        if self.format_version != CACHE_FORMAT_VERSION {
            bail!(
                "{}: cache format version {} but this mlet reads version {}; re-run `mlet data \
                 prepare`",
                m.display(),
                self.format_version,
                CACHE_FORMAT_VERSION
            );
        }
        if self.dense_names.len() != self.num_dense || self.cardinalities.len() != self.num_fields()
        {
            bail!(
                "{}: inconsistent: num_dense {} with {} dense names, {} field names with {} \
                 cardinalities",
                m.display(),
                self.num_dense,
                self.dense_names.len(),
                self.num_fields(),
                self.cardinalities.len()
            );
        }
        if let Some(i) = self.cardinalities.iter().position(|&c| c == 0) {
            bail!(
                "{}: field {} has cardinality 0; expected at least 1 (the OOV row)",
                m.display(),
                i
            );
        }
        Ok(())
    }
}

/// A mapped file, or nothing for an empty one.
enum Region {
    Empty,
    Map(Mmap),
}

impl Region {
    fn open(path: &Path, expected_bytes: usize, what: &str) -> Result<Region> {
        let file = File::open(path)
            .with_context(|| format!("cannot open {} (the cache is incomplete)", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if len != expected_bytes as u64 {
            bail!(
                "{}: has {len} bytes, expected {expected_bytes} ({what}): the cache is truncated \
                 or does not match its meta.json; re-run `mlet data prepare`",
                path.display()
            );
        }
        if len == 0 {
            return Ok(Region::Empty);
        }
        // SAFETY: the cache is written once and never modified in place (prepare replaces the
        // whole directory by rename); truncating it under a running reader is not supported.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map {}", path.display()))?;
        if !(map.as_ptr() as usize).is_multiple_of(4) {
            bail!("{}: mapping is not 4-byte aligned", path.display());
        }
        Ok(Region::Map(map))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Region::Empty => &[],
            Region::Map(m) => m,
        }
    }

    fn as_u32(&self) -> &[u32] {
        let b = self.bytes();
        // SAFETY: aligned (checked in open), length a multiple of 4 (size checked against meta),
        // every bit pattern is a valid u32, and the cache is little-endian like the host.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u32>(), b.len() / 4) }
    }

    fn as_f32(&self) -> &[f32] {
        let b = self.bytes();
        // SAFETY: as in as_u32; every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len() / 4) }
    }
}

struct SplitMaps {
    dense: Region,
    cat: Region,
    label: Region,
}

/// An opened cache: `meta` plus memory-mapped arrays.
pub struct Dataset {
    pub meta: CacheMeta,
    dir: PathBuf,
    splits: [SplitMaps; 3],
    freq: Region,
    field_offsets: Vec<usize>,
}

/// Zero-copy view of one split. Row-major: `dense[r * num_dense + j]`, `cat[r * num_fields + f]`.
#[derive(Clone, Copy)]
pub struct SplitData<'a> {
    pub len: usize,
    pub dense: &'a [f32],
    pub cat: &'a [u32],
    pub label: &'a [f32],
    pub num_dense: usize,
    pub num_fields: usize,
}

impl<'a> SplitData<'a> {
    pub fn row_dense(&self, row: usize) -> &'a [f32] {
        &self.dense[row * self.num_dense..(row + 1) * self.num_dense]
    }

    pub fn row_cat(&self, row: usize) -> &'a [u32] {
        &self.cat[row * self.num_fields..(row + 1) * self.num_fields]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Opens a cache directory, checking every file's size against `meta.json` and every value
    /// (`verify`): a corrupt cache fails here, before any training.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let ds = Dataset::open_unverified(dir)?;
        ds.verify()?;
        Ok(ds)
    }

    /// `open` without the scan of the values: sizes only.
    pub fn open_unverified(dir: &Path) -> Result<Dataset> {
        if cfg!(target_endian = "big") {
            bail!("the dataset cache is little-endian and this host is big-endian");
        }
        let meta_path = dir.join(META_FILE);
        let meta = CacheMeta::read(dir)?;
        let (nd, nf) = (meta.num_dense, meta.num_fields());
        // Checked: a corrupted meta.json must give an error, not a wrapped size.
        let bytes = |rows: usize, width: usize| -> Result<usize> {
            rows.checked_mul(width)
                .and_then(|n| n.checked_mul(4))
                .with_context(|| format!("{}: sizes overflow", meta_path.display()))
        };
        let open_split = |split: Split| -> Result<SplitMaps> {
            let rows = meta.rows.get(split);
            let sub = dir.join(split.name());
            Ok(SplitMaps {
                dense: Region::open(
                    &sub.join(DENSE_FILE),
                    bytes(rows, nd)?,
                    &format!("{rows} rows x {nd} dense x 4 bytes"),
                )?,
                cat: Region::open(
                    &sub.join(CAT_FILE),
                    bytes(rows, nf)?,
                    &format!("{rows} rows x {nf} fields x 4 bytes"),
                )?,
                label: Region::open(
                    &sub.join(LABEL_FILE),
                    bytes(rows, 1)?,
                    &format!("{rows} rows x 4 bytes"),
                )?,
            })
        };
        let splits = [
            open_split(Split::Train)?,
            open_split(Split::Valid)?,
            open_split(Split::Test)?,
        ];
        let total = meta
            .cardinalities
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .with_context(|| format!("{}: cardinalities overflow", meta_path.display()))?;
        let freq = Region::open(
            &dir.join(FREQ_FILE),
            bytes(total, 1)?,
            &format!("sum of cardinalities {total} x 4 bytes"),
        )?;
        let mut field_offsets = vec![0];
        for &c in &meta.cardinalities {
            field_offsets.push(field_offsets.last().copied().unwrap_or(0) + c);
        }
        Ok(Dataset {
            meta,
            dir: dir.to_path_buf(),
            splits,
            freq,
            field_offsets,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn split(&self, split: Split) -> SplitData<'_> {
        let maps = &self.splits[split.index()];
        SplitData {
            len: self.meta.rows.get(split),
            dense: maps.dense.as_f32(),
            cat: maps.cat.as_u32(),
            label: maps.label.as_f32(),
            num_dense: self.meta.num_dense,
            num_fields: self.meta.num_fields(),
        }
    }

    pub fn cardinalities(&self) -> &[usize] {
        &self.meta.cardinalities
    }

    pub fn num_dense(&self) -> usize {
        self.meta.num_dense
    }

    pub fn num_fields(&self) -> usize {
        self.meta.num_fields()
    }

    /// Bytes of every mapped file (the splits' arrays and the frequency counts): what the cache
    /// adds to a process's resident memory once all of it has been read.
    pub fn mapped_bytes(&self) -> u64 {
        let splits = self
            .splits
            .iter()
            .flat_map(|m| [&m.dense, &m.cat, &m.label]);
        splits
            .chain([&self.freq])
            .map(|r| r.bytes().len() as u64)
            .sum()
    }

    /// Training counts of every category, fields concatenated in order (see `freq.u32`).
    pub fn train_frequencies(&self) -> &[u32] {
        self.freq.as_u32()
    }

    /// Training counts of one field's categories; index 0 counts rows mapped to OOV.
    pub fn field_frequencies(&self, field: usize) -> &[u32] {
        &self.freq.as_u32()[self.field_offsets[field]..self.field_offsets[field + 1]]
    }

    /// Full scan: every index below its field's cardinality, every label 0 or 1, every dense
    /// value finite. One pass over the mapped arrays, in row order.
    pub fn verify(&self) -> Result<()> {
        // u64: a cardinality may exceed u32::MAX (then every u32 index is in range).
        let cards: Vec<u64> = self.cardinalities().iter().map(|&c| c as u64).collect();
        for split in Split::ALL {
            let d = self.split(split);
            let file = |name: &str| self.dir.join(split.name()).join(name).display().to_string();
            let corrupt = "the cache is corrupt; prepare it again with `mlet data prepare`";
            if d.num_fields > 0 {
                for (r, row) in d.cat.chunks_exact(d.num_fields).enumerate() {
                    // Branch-free test first (vectorises); locate the field only on failure.
                    if row.iter().zip(&cards).any(|(&v, &c)| u64::from(v) >= c) {
                        let f = (0..row.len())
                            .find(|&f| u64::from(row[f]) >= cards[f])
                            .unwrap_or(0);
                        bail!(
                            "{} ({} split): row {r}, field {f} ({}): index {} is not below the \
                             field's cardinality {}; {corrupt}",
                            file(CAT_FILE),
                            split.name(),
                            self.meta.field_names[f],
                            row[f],
                            cards[f]
                        );
                    }
                }
            }
            if let Some(r) = d.label.iter().position(|&l| l != 0.0 && l != 1.0) {
                bail!(
                    "{} ({} split): row {r}: label {} is not 0 or 1; {corrupt}",
                    file(LABEL_FILE),
                    split.name(),
                    d.label[r]
                );
            }
            if let Some(i) = d.dense.iter().position(|x| !x.is_finite()) {
                let j = i % d.num_dense.max(1);
                bail!(
                    "{} ({} split): row {}, dense feature {j} ({}): value {} is not finite; \
                     {corrupt}",
                    file(DENSE_FILE),
                    split.name(),
                    i / d.num_dense.max(1),
                    self.meta.dense_names[j],
                    d.dense[i]
                );
            }
        }
        Ok(())
    }
}

/// Whether `prepare` may replace `dir`: only when it is absent, empty, or provably a cache (its
/// meta.json parses as a cache's and it holds nothing but cache files), so that no user data is
/// ever deleted.
pub(crate) fn check_replaceable(dir: &Path) -> Result<()> {
    let refuse = |why: String| -> Result<()> {
        bail!(
            "{}: {why}; refusing to replace it (choose another --out, or remove it yourself)",
            dir.display()
        )
    };
    let Ok(st) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if st.file_type().is_symlink() {
        return refuse("is a symbolic link, not a dataset cache".into());
    }
    if !st.is_dir() {
        return refuse("exists and is not a directory".into());
    }
    let entries = |d: &Path| -> Result<Vec<(String, std::fs::FileType)>> {
        std::fs::read_dir(d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .map(|e| {
                let e = e.with_context(|| format!("cannot read {}", d.display()))?;
                let t = e
                    .file_type()
                    .with_context(|| format!("cannot stat {}", e.path().display()))?;
                Ok((e.file_name().to_string_lossy().into_owned(), t))
            })
            .collect()
    };
    let top = entries(dir)?;
    if top.is_empty() {
        return Ok(());
    }
    let meta = dir.join(META_FILE);
    let parsed = std::fs::read_to_string(&meta)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<CacheMeta>(&t).map_err(|e| e.to_string()));
    if let Err(e) = parsed {
        return refuse(format!(
            "exists and is not a dataset cache ({META_FILE}: {e})"
        ));
    }
    for (name, t) in top {
        let ok = if Split::ALL.iter().any(|s| s.name() == name) {
            t.is_dir()
                && entries(&dir.join(&name))?
                    .iter()
                    .all(|(n, t)| t.is_file() && SPLIT_FILES.contains(&n.as_str()))
        } else {
            t.is_file() && CACHE_FILES.contains(&name.as_str())
        };
        if !ok {
            return refuse(format!(
                "holds {name}, which is not part of a dataset cache"
            ));
        }
    }
    Ok(())
}

struct SplitWriter {
    dense: BufWriter<File>,
    cat: BufWriter<File>,
    label: BufWriter<File>,
}

/// Streams rows into a temporary sibling of the output directory; `finish` renames it into place.
pub(crate) struct CacheWriter {
    out: PathBuf,
    dir: PendingDir,
    splits: Vec<SplitWriter>,
    buf: Vec<u8>,
}

const WRITE_BUF: usize = 1 << 20;

impl CacheWriter {
    pub(crate) fn create(out: &Path) -> Result<CacheWriter> {
        check_replaceable(out)?;
        let dir = PendingDir::new(out, META_FILE)?;
        let mut splits = Vec::new();
        for split in Split::ALL {
            let sub = dir.tmp.join(split.name());
            std::fs::create_dir(&sub)
                .with_context(|| format!("cannot create {}", sub.display()))?;
            let create = |name: &str| -> Result<BufWriter<File>> {
                let p = sub.join(name);
                // readable too: `remap_cats` rewrites the categorical ids in place
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                Ok(BufWriter::with_capacity(WRITE_BUF, f))
            };
            splits.push(SplitWriter {
                dense: create(DENSE_FILE)?,
                cat: create(CAT_FILE)?,
                label: create(LABEL_FILE)?,
            });
        }
        Ok(CacheWriter {
            out: out.to_path_buf(),
            dir,
            splits,
            buf: Vec::new(),
        })
    }

    pub(crate) fn push(
        &mut self,
        split: Split,
        dense: &[f32],
        cat: &[u32],
        label: f32,
    ) -> Result<()> {
        let w = &mut self.splits[split.index()];
        let buf = &mut self.buf;
        buf.clear();
        buf.extend(dense.iter().flat_map(|x| x.to_le_bytes()));
        w.dense.write_all(buf)?;
        buf.clear();
        buf.extend(cat.iter().flat_map(|x| x.to_le_bytes()));
        w.cat.write_all(buf)?;
        w.label.write_all(&label.to_le_bytes())?;
        Ok(())
    }

    /// Replaces every categorical id written so far, `id` of field `f`, by `remap[f][id]`, in
    /// place and a chunk of rows at a time (`prepare` writes first-seen ids while it reads, and
    /// knows the final indices only at the end).
    pub(crate) fn remap_cats(&mut self, remap: &[Vec<u32>]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let row_bytes = 4 * remap.len();
        if row_bytes == 0 {
            return Ok(());
        }
        let mut buf = vec![0u8; (WRITE_BUF / row_bytes).max(1) * row_bytes];
        for w in &mut self.splits {
            w.cat.flush()?;
            let file = w.cat.get_ref();
            let len = file.metadata()?.len();
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                file.read_exact_at(chunk, at)?;
                for row in chunk.chunks_exact_mut(row_bytes) {
                    for (v, map) in row.chunks_exact_mut(4).zip(remap) {
                        let id = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                        v.copy_from_slice(&map[id as usize].to_le_bytes());
                    }
                }
                file.write_all_at(chunk, at)?;
                at += chunk.len() as u64;
            }
        }
        Ok(())
    }

    /// Writes a further file into the cache (it appears with the cache, on `finish`).
    pub(crate) fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.tmp.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    pub(crate) fn finish(self, meta: &CacheMeta, freq: &[u32]) -> Result<()> {
        let tmp = self.dir.tmp.clone();
        for w in self.splits {
            for mut f in [w.dense, w.cat, w.label] {
                f.flush()?;
                f.get_ref().sync_all()?;
            }
        }
        let mut f = BufWriter::new(File::create(tmp.join(FREQ_FILE))?);
        for &c in freq {
            f.write_all(&c.to_le_bytes())?;
        }
        f.flush()?;
        f.get_ref().sync_all()?;
        let json = serde_json::to_string_pretty(meta)?;
        std::fs::write(tmp.join(META_FILE), json + "\n")?;
        // Again: the directory may have been filled while we prepared.
        check_replaceable(&self.out)?;
        self.dir.commit(META_FILE)
    }
}
