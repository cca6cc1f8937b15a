//! `prepare`: raw file → dataset cache, in one pass over the text. Worker threads parse blocks of
//! lines (`blocks`); in file order, each row gets its split, each categorical value a first-seen
//! id (counting training occurrences, keeping the value's bytes), and the row is appended to its
//! split's arrays. The vocabularies follow from the counts, and the ids in `cat.u32` are then
//! rewritten in place to vocabulary indices. The day split needs the number of data lines first,
//! so it adds a byte-only line count before the pass.
use crate::data::blocks::{parse_blocks, BlockPlan};
use crate::data::cache::{CacheMeta, CacheWriter, CACHE_FORMAT_VERSION};
use crate::data::error::{describe, FieldError, InputError};
use crate::data::fingerprint::{canonical, Fingerprint};
use crate::data::lines::{count_lines, LineReader};
use crate::data::parse::{LineParser, ParsedLines, Splitter};
use crate::data::schema::{CsvSchema, FormatPlan, InputFormat, Layout};
use crate::data::split::{Assigner, Split, SplitCounts, SplitRule};
use crate::data::synth::SynthConfig;
use crate::data::vocab::{BuiltVocab, ValueIds};
use crate::data::vocab_file::{VocabFile, VOCAB_FILE};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq)]
pub struct PrepareOptions {
    pub input: PathBuf,
    pub format: InputFormat,
    /// The cache directory to create (or replace, if it holds an older cache).
    pub out: PathBuf,
    /// Training occurrences a value needs to get its own index; rarer values map to 0 (OOV).
    pub min_count: u32,
    pub split: SplitRule,
    /// Seed of a random split.
    pub seed: u64,
    /// Skip malformed lines (counting them) instead of failing on the first.
    pub skip_bad_lines: bool,
    /// Draw a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// The input was written by the synthetic generator with these settings: the fingerprint
    /// records them instead of the (temporary) file.
    pub generated_from: Option<SynthConfig>,
}

impl PrepareOptions {
    /// Defaults: min_count 1, the format's usual split (days for Criteo, random 90/5/5
    /// otherwise), seed 0, fail on bad lines, no progress bar.
    pub fn new(input: impl Into<PathBuf>, format: InputFormat, out: impl Into<PathBuf>) -> Self {
        let split = match format {
            InputFormat::Criteo => SplitRule::Days,
            _ => SplitRule::random_default(),
        };
        PrepareOptions {
            input: input.into(),
            format,
            out: out.into(),
            min_count: 1,
            split,
            seed: 0,
            skip_bad_lines: false,
            progress: false,
            generated_from: None,
        }
    }

    /// A predefined split: every row of `train` trains, of `valid` validates and of `test` tests,
    /// each file in order; the vocabulary (and `min_count`) counts `train` alone.
    pub fn files(
        train: impl Into<PathBuf>,
        valid: impl Into<PathBuf>,
        test: impl Into<PathBuf>,
        format: InputFormat,
        out: impl Into<PathBuf>,
    ) -> Self {
        let mut opts = PrepareOptions::new(train, format, out);
        opts.split = SplitRule::Files {
            valid: valid.into(),
            test: test.into(),
        };
        opts
    }

    /// The raw files prepare reads, in order, each with the split all its rows go to (`None`:
    /// the split rule divides it).
    pub fn inputs(&self) -> Vec<(&Path, Option<Split>)> {
        match &self.split {
            SplitRule::Files { valid, test } => vec![
                (self.input.as_path(), Some(Split::Train)),
                (valid.as_path(), Some(Split::Valid)),
                (test.as_path(), Some(Split::Test)),
            ],
            _ => vec![(self.input.as_path(), None)],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrepareReport {
    /// The input file (the training file of a predefined split).
    pub input: PathBuf,
    pub out: PathBuf,
    pub split: SplitRule,
    pub rows: SplitCounts,
    pub skipped_lines: u64,
    pub num_dense: usize,
    pub field_names: Vec<String>,
    pub cardinalities: Vec<usize>,
    pub seconds: f64,
}

impl fmt::Display for PrepareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.split {
            SplitRule::Files { valid, test } => write!(
                f,
                "prepared {} (train), {} (valid), {} (test)",
                self.input.display(),
                valid.display(),
                test.display()
            )?,
            _ => write!(f, "prepared {}", self.input.display())?,
        }
        write!(
            f,
            " -> {}: {} train / {} valid / {} test rows, {} dense, {} fields, {} \
             categories, {} bad lines skipped, {:.1}s",
            self.out.display(),
            self.rows.train,
            self.rows.valid,
            self.rows.test,
            self.num_dense,
            self.cardinalities.len(),
            self.cardinalities.iter().sum::<usize>(),
            self.skipped_lines,
            self.seconds
        )
    }
}

pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    prepare_with(opts, BlockPlan::default())
}

/// `prepare` with the text cut and parsed as `plan` says (tests vary it: the cache must not
/// depend on it).
pub(crate) fn prepare_with(opts: &PrepareOptions, plan_blocks: BlockPlan) -> Result<PrepareReport> {
    let started = Instant::now();
    opts.split.validate()?;
    let input = opts.input.as_path();
    let plan = FormatPlan::load(&opts.format)?;
    let inputs = opts.inputs();
    let sizes = inputs
        .iter()
        .map(|&(path, _)| regular_file_size(path))
        .collect::<Result<Vec<u64>>>()?;
    check_distinct(&inputs)?;
    check_inputs_outside(opts)?;
    // Taken before reading: a file changed during or after preparing no longer matches.
    let fingerprint = Fingerprint::of(opts)?;
    for (&(path, _), &size) in inputs.iter().zip(&sizes) {
        if size == 0 {
            return Err(InputError {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                column_name: None,
                expected: "at least one data line".into(),
                found: "an empty file".into(),
            }
            .into());
        }
    }
    let total_size: u64 = sizes.iter().sum();
    let days = opts.split == SplitRule::Days;
    let bar = progress_bar(
        opts.progress,
        total_size + if days { total_size } else { 0 },
    );

    let data_lines = if days {
        bar.set_message("counting lines");
        let lines =
            count_lines(input).with_context(|| format!("cannot read {}", input.display()))?;
        bar.inc(total_size);
        lines.saturating_sub(u64::from(plan.header))
    } else {
        0
    };
    let assigners: Vec<Assigner> = inputs
        .iter()
        .map(|&(_, fixed)| match fixed {
            Some(split) => Assigner::Fixed(split),
            None => Assigner::new(&opts.split, opts.seed, data_lines),
        })
        .collect();

    // One pass over the text. The first file fixes the layout (a predefined split's later files
    // must agree with it); only training rows are counted, so the vocabulary is the training
    // file's. The cache receives first-seen ids, mapped to the final indices at the end.
    bar.set_message("reading");
    let mut layout: Option<Layout> = None;
    let mut ids: Option<ValueIds> = None;
    let mut writer: Option<CacheWriter> = None;
    let mut rows = SplitCounts::default();
    let mut skipped = 0;
    for (&(path, _), assigner) in inputs.iter().zip(&assigners) {
        let opened = OpenedInput::open(path, &plan, layout.as_ref())?;
        let layout = layout.get_or_insert_with(|| opened.layout.clone());
        let writer = match &mut writer {
            Some(w) => w,
            None => writer.insert(CacheWriter::create(&opts.out)?),
        };
        let ids = ids.get_or_insert_with(|| ValueIds::new(layout.field_names.len()));
        let mut sink = RowSink {
            file: path,
            out: &opts.out,
            assigner,
            skip: opts.skip_bad_lines,
            parser: LineParser::new(layout.clone()),
            ids,
            writer,
            rows: SplitCounts::default(),
            next_pos: 0,
            next_line: opened.first_line_number,
            skipped: 0,
            idx_width: layout.field_names.len(),
            splits: Vec::new(),
            idx: Vec::new(),
            fresh: Vec::new(),
        };
        sink.read(opened, &bar, plan_blocks)?;
        let file_rows = sink.rows.total();
        rows.train += sink.rows.train;
        rows.valid += sink.rows.valid;
        rows.test += sink.rows.test;
        skipped += sink.skipped;
        if file_rows == 0 {
            bail!(
                "{}: no data rows{}; expected at least one",
                path.display(),
                if sink.skipped > 0 {
                    format!(" (all {} lines were malformed and skipped)", sink.skipped)
                } else {
                    " after the header".to_string()
                }
            );
        }
    }
    let (Some(layout), Some(ids), Some(mut writer)) = (layout, ids, writer) else {
        bail!("prepare: no input file");
    };
    let field_names = layout.field_names.clone();
    let dense_names = layout.dense_names.clone();
    bar.set_message("indexing");
    let BuiltVocab {
        remap,
        freq: field_freq,
        values,
    } = ids.into_vocab(opts.min_count);
    writer
        .remap_cats(&remap)
        .with_context(|| format!("cannot write the cache for {}", opts.out.display()))?;
    drop(remap);
    let cardinalities: Vec<usize> = field_freq.iter().map(Vec::len).collect();
    let vocab_file = VocabFile::new(
        opts.format.name(),
        match &opts.format {
            InputFormat::Csv { schema } => Some(CsvSchema::from_yaml_file(schema)?),
            _ => None,
        },
        plan.header,
        &layout,
        values,
        opts.min_count.max(1),
    );
    writer
        .write_file(
            VOCAB_FILE,
            (serde_json::to_string(&vocab_file)? + "\n").as_bytes(),
        )
        .with_context(|| format!("cannot write the cache {}", opts.out.display()))?;
    let freq: Vec<u32> = field_freq.concat();
    let meta = CacheMeta {
        format_version: CACHE_FORMAT_VERSION,
        source: input.display().to_string(),
        source_bytes: sizes[0],
        format: opts.format.name().to_string(),
        rows,
        num_dense: dense_names.len(),
        dense_names,
        field_names: field_names.clone(),
        cardinalities: cardinalities.clone(),
        min_count: opts.min_count.max(1),
        split: opts.split.clone(),
        split_seed: opts.seed,
        skipped_lines: skipped,
        created_by: format!("mlet {}", env!("CARGO_PKG_VERSION")),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        fingerprint: Some(fingerprint),
    };
    writer
        .finish(&meta, &freq)
        .with_context(|| format!("cannot write the cache {}", opts.out.display()))?;
    bar.finish_and_clear();
    Ok(PrepareReport {
        input: input.to_path_buf(),
        out: opts.out.clone(),
        split: opts.split.clone(),
        rows,
        skipped_lines: skipped,
        num_dense: meta.num_dense,
        field_names,
        cardinalities,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The size of `path`, which must be a regular file: prepare opens it again after its first
/// line (and reads it twice for the day split).
fn regular_file_size(path: &Path) -> Result<u64> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{}: not a regular file (a pipe, a terminal or a device?); prepare opens its input \
             again after the first line (and reads it twice for the day split), so it needs a \
             regular, seekable file: save the data to a file first",
            path.display()
        );
    }
    Ok(meta.len())
}

/// A predefined split's files must be three different files: the same file as train and test
/// would report training rows as test results.
fn check_distinct(inputs: &[(&Path, Option<Split>)]) -> Result<()> {
    for (i, &(a, sa)) in inputs.iter().enumerate() {
        for &(b, sb) in &inputs[i + 1..] {
            if canonical(a) == canonical(b) {
                bail!(
                    "{}: given as both the {} and the {} file; a predefined split needs three \
                     different files",
                    b.display(),
                    sa.map_or("input", Split::name),
                    sb.map_or("input", Split::name)
                );
            }
        }
    }
    Ok(())
}

/// Replacing `--out` must never delete the input or the schema.
fn check_inputs_outside(opts: &PrepareOptions) -> Result<()> {
    let Ok(out) = std::fs::canonicalize(&opts.out) else {
        return Ok(());
    };
    let mut inputs: Vec<(String, &Path)> = opts
        .inputs()
        .into_iter()
        .map(|(path, split)| (split.map_or("input".into(), |s| format!("{s} file")), path))
        .collect();
    if let InputFormat::Csv { schema } = &opts.format {
        inputs.push(("schema".into(), schema));
    }
    for (what, path) in inputs {
        if canonical(path).starts_with(&out) {
            bail!(
                "{}: the output directory contains the {what} {}; refusing to replace it \
                 (prepare into another directory)",
                opts.out.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// An input file whose first line has been read: the header (checked against the first file's
/// layout for a predefined split's later files) or the first data line.
struct OpenedInput {
    path: PathBuf,
    layout: Layout,
    /// The first line when it is data (no header), with `\n` unless the file ends without one.
    first_data: Option<Vec<u8>>,
    /// Bytes of the first line with its line ending: where the rest of the text starts.
    rest_at: u64,
    /// 1-based number of the first data line.
    first_line_number: u64,
}

impl OpenedInput {
    /// `like`: the layout of the first file of a predefined split, which this file must share
    /// (the same header; without a header, each line is checked against its column count).
    fn open(path: &Path, plan: &FormatPlan, like: Option<&Layout>) -> Result<OpenedInput> {
        let read_err = || format!("cannot read {}", path.display());
        let mut reader = LineReader::open(path).with_context(read_err)?;
        let (first, terminated) = match reader.next_line().with_context(read_err)? {
            Some(line) => {
                let text = line.text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line.text);
                (text.to_vec(), line.terminated)
            }
            None => bail!("{}: the file is empty", path.display()),
        };
        let mut splitter = Splitter::new(plan.delimiter, plan.quotes);
        let columns = splitter
            .split(&first)
            .map_err(|e: FieldError| e.at(path, 1))?;
        let header = plan.header.then(|| splitter.columns_as_strings(&first));
        let layout = match like {
            None => plan.layout(header.clone(), columns, path)?,
            Some(like) => {
                if let Some(header) = &header {
                    check_same_header(path, header, like)?;
                }
                like.clone()
            }
        };
        let first_data = (!plan.header).then(|| {
            let mut line = first;
            if terminated {
                line.push(b'\n');
            }
            line
        });
        Ok(OpenedInput {
            path: path.to_path_buf(),
            layout,
            first_data,
            rest_at: reader.bytes_read,
            first_line_number: if plan.header { 2 } else { 1 },
        })
    }
}

/// The order-dependent half of reading one file: line numbers and positions, the split of each
/// row, first-seen ids of values, and the cache's rows.
struct RowSink<'a> {
    file: &'a Path,
    out: &'a Path,
    assigner: &'a Assigner,
    skip: bool,
    /// Reads a row's values again when it holds new ones.
    parser: LineParser,
    ids: &'a mut ValueIds,
    writer: &'a mut CacheWriter,
    rows: SplitCounts,
    /// 0-based position among data lines (bad ones included) of the next line.
    next_pos: u64,
    /// 1-based line number of the next line.
    next_line: u64,
    skipped: u64,
    /// Categorical fields per row.
    idx_width: usize,
    /// Per block: the split of each row, the first-seen ids (row-major), and the (row, field)
    /// of each value seen for the first time.
    splits: Vec<Split>,
    idx: Vec<u32>,
    fresh: Vec<(usize, usize)>,
}

/// How many values ahead of its lookup a value's slot is fetched into cache.
const PREFETCH_AHEAD: usize = 16;

/// Distinct values one field may have: ids are `u32`s, and a block adds fewer than 2^31.
const MAX_IDS: usize = 1 << 31;

impl RowSink<'_> {
    /// Reads the whole file: its first data line here, the rest parsed in parallel blocks.
    fn read(&mut self, input: OpenedInput, bar: &ProgressBar, plan: BlockPlan) -> Result<()> {
        let mut parsed = ParsedLines::default();
        if let Some(first) = &input.first_data {
            parsed.parse(&mut self.parser, first);
            self.take(first, &parsed)?;
        }
        bar.inc(input.rest_at);
        let mut file = File::open(&input.path)
            .and_then(|mut f| f.seek(SeekFrom::Start(input.rest_at)).map(|_| f))
            .with_context(|| format!("cannot read {}", input.path.display()))?;
        let layout = &input.layout;
        parse_blocks(
            &mut file,
            plan,
            || LineParser::new(layout.clone()),
            |parser, block, out: &mut ParsedLines| out.parse(parser, block),
            |block, parsed| -> Result<()> {
                self.take(block, parsed)?;
                bar.inc(block.len() as u64);
                Ok(())
            },
            |e| anyhow::Error::new(e).context(format!("cannot read {}", input.path.display())),
        )
    }

    /// The rows of one parsed block, in order.
    fn take(&mut self, block: &[u8], parsed: &ParsedLines) -> Result<()> {
        let (nd, nf) = (self.parser.layout().dense.len(), self.idx_width);
        // Which lines are rows, and their splits.
        self.splits.clear();
        let mut bad = parsed.bad.iter().peekable();
        for i in 0..parsed.lines {
            let pos = self.next_pos;
            self.next_pos += 1;
            if let Some((_, e)) = bad.next_if(|(j, _)| *j == i) {
                if self.skip {
                    self.skipped += 1;
                    continue;
                }
                return Err(e.clone().at(self.file, self.next_line + i as u64).into());
            }
            let split = self.assigner.assign(pos);
            self.rows.bump(split);
            self.splits.push(split);
        }
        // First-seen ids, a field at a time: each field's table stays in cache, and the
        // lookups of one field are independent of each other, so their memory accesses overlap.
        let rows = self.splits.len();
        self.idx.clear();
        self.idx.resize(rows * nf, 0);
        self.fresh.clear();
        for f in 0..nf {
            let hashes = &parsed.cats[f * rows..(f + 1) * rows];
            for (r, &split) in self.splits.iter().enumerate() {
                if let Some(&ahead) = hashes.get(r + PREFETCH_AHEAD) {
                    self.ids.prefetch(f, ahead);
                }
                let (id, new) = self.ids.id(f, hashes[r], split == Split::Train);
                self.idx[r * nf + f] = id;
                if new {
                    self.fresh.push((r, f));
                }
            }
        }
        // The bytes of new values, read again from their lines: by row, and so in the order
        // of their ids within each field.
        self.fresh.sort_unstable();
        let mut last_row = usize::MAX;
        for &(r, f) in &self.fresh {
            let (a, b) = parsed.spans[r];
            let line = &block[a..b];
            if r != last_row {
                // split again, so that the parser can hand out this line's values
                self.parser.count_columns(line);
                last_row = r;
            }
            self.ids
                .set_value(f, self.idx[r * nf + f], &self.parser.cat_value(line, f));
        }
        for (r, &split) in self.splits.iter().enumerate() {
            self.writer
                .push(
                    split,
                    &parsed.dense[r * nd..(r + 1) * nd],
                    &self.idx[r * nf..(r + 1) * nf],
                    parsed.labels[r],
                )
                .with_context(|| format!("cannot write the cache for {}", self.out.display()))?;
        }
        self.next_line += parsed.lines as u64;
        if self.ids.max_ids() > MAX_IDS {
            bail!(
                "{}: a categorical field has more than {MAX_IDS} distinct values; prepare \
                 supports fewer",
                self.file.display()
            );
        }
        Ok(())
    }
}

/// A later file of a predefined split must have the training file's header, column for column.
/// Not an `InputError`: `--skip-bad-lines` does not skip it.
fn check_same_header(path: &Path, header: &[String], like: &Layout) -> Result<()> {
    let want = &like.column_names;
    let mismatch = |column: usize, expected: String, found: String| {
        let e = InputError {
            file: path.to_path_buf(),
            line: 1,
            column,
            column_name: None,
            expected,
            found,
        };
        anyhow::anyhow!("{e} (the train, valid and test files must have the same columns)")
    };
    if let Some(i) = (0..header.len().min(want.len())).find(|&i| header[i] != want[i]) {
        return Err(mismatch(
            i + 1,
            format!(
                "the training file's header, whose column {} is {}",
                i + 1,
                describe(want[i].as_bytes())
            ),
            describe(header[i].as_bytes()),
        ));
    }
    if header.len() != want.len() {
        return Err(mismatch(
            header.len().min(want.len()) + 1,
            format!("the training file's header of {} columns", want.len()),
            format!("a header of {} columns", header.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::blocks::BLOCK_BYTES as BLOCK;

    fn golden(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/prepare-golden")
            .join(name)
    }

    /// A cache's files by name, with `meta.json` less its time and source path.
    type Contents = Vec<(String, Vec<u8>)>;

    fn contents(dir: &Path) -> Contents {
        let mut files = Vec::new();
        for sub in ["", "train", "valid", "test"] {
            let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            names.sort();
            for p in names {
                let mut bytes = std::fs::read(&p).unwrap();
                if p.ends_with(crate::data::META_FILE) {
                    let mut meta: CacheMeta = serde_json::from_slice(&bytes).unwrap();
                    meta.created_unix = 0;
                    meta.source = String::new();
                    bytes = serde_json::to_vec(&meta).unwrap();
                }
                files.push((p.strip_prefix(dir).unwrap().display().to_string(), bytes));
            }
        }
        files
    }

    /// Neither the block size nor the number of workers changes the cache, the skipped lines,
    /// or the line an error names.
    #[test]
    fn blocks_and_workers_do_not_change_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let plans =
            [(BLOCK, 2), (1, 1), (97, 3), (4096, 2), (BLOCK, 1)].map(|(block_bytes, workers)| {
                BlockPlan {
                    block_bytes,
                    workers,
                }
            });
        let mixed = InputFormat::Csv {
            schema: golden("mixed.yaml"),
        };
        let mut cases = vec![
            PrepareOptions::new(golden("criteo-synth-600.txt"), InputFormat::Criteo, d),
            PrepareOptions::new(golden("mixed.csv"), mixed.clone(), d),
            PrepareOptions::new(golden("criteo-edge.txt"), InputFormat::Criteo, d),
        ];
        cases[1].skip_bad_lines = true;
        cases[1].min_count = 2;
        cases[2].skip_bad_lines = true;
        cases.push(PrepareOptions::new(golden("mixed.csv"), mixed, d));
        cases.push(PrepareOptions::new(
            golden("criteo-edge.txt"),
            InputFormat::Criteo,
            d,
        ));
        for (c, case) in cases.iter_mut().enumerate() {
            let mut first: Option<Result<Contents, String>> = None;
            for (p, plan) in plans.iter().enumerate() {
                case.out = d.join(format!("case{c}-plan{p}"));
                let got = prepare_with(case, *plan)
                    .map(|_| contents(&case.out))
                    .map_err(|e| format!("{e:#}"));
                match &first {
                    None => first = Some(got),
                    Some(want) => assert!(*want == got, "case {c}: {plan:?} differs"),
                }
            }
            if c >= 3 {
                let err = first.unwrap().unwrap_err();
                assert!(err.contains("line 38") || err.contains("line 42"), "{err}");
            }
        }
    }
}
