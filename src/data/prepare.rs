//! `prepare`: raw file → dataset cache, in two streaming passes. Pass 1 parses every line, counts
//! rows per split and training-split value occurrences (by hash); the vocabularies follow from the
//! counts. Pass 2 parses again, maps values to indices and appends to the split arrays. The day
//! split needs the number of data lines first, so it adds a byte-only line count before pass 1.
use crate::data::cache::{CacheMeta, CacheWriter, CACHE_FORMAT_VERSION};
use crate::data::error::{describe, FieldError, InputError};
use crate::data::fingerprint::{canonical, Fingerprint};
use crate::data::lines::{count_lines, LineReader};
use crate::data::parse::{LineParser, Record, Splitter};
use crate::data::schema::{CsvSchema, FormatPlan, InputFormat, Layout};
use crate::data::split::{Assigner, Split, SplitCounts, SplitRule};
use crate::data::synth::SynthConfig;
use crate::data::vocab::{ValueCollector, ValueCounts};
use crate::data::vocab_file::{VocabFile, VOCAB_FILE};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fmt;
use std::io::IsTerminal;
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
        total_size * 2 + if days { total_size } else { 0 },
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

    // Pass 1. The first file fixes the layout (a predefined split's later files must agree
    // with it); only training rows are counted, so the vocabulary is the training file's.
    bar.set_message("pass 1: vocabulary");
    let mut layout: Option<Layout> = None;
    let mut counts: Option<ValueCounts> = None;
    let mut rows = SplitCounts::default();
    let mut skipped = 0;
    for (&(path, _), assigner) in inputs.iter().zip(&assigners) {
        let mut pass = Pass::open(path, &plan, opts.skip_bad_lines, &bar, layout.as_ref())?;
        let fields = pass.parser.layout().field_names.len();
        layout.get_or_insert_with(|| pass.parser.layout().clone());
        let counts = counts.get_or_insert_with(|| ValueCounts::new(fields));
        let mut file_rows = 0u64;
        while let Some(pos) = pass.next()? {
            let split = assigner.assign(pos);
            rows.bump(split);
            file_rows += 1;
            if split == Split::Train {
                counts.add(&pass.rec.cats);
            }
        }
        skipped += pass.skipped;
        if file_rows == 0 {
            bail!(
                "{}: no data rows{}; expected at least one",
                path.display(),
                if pass.skipped > 0 {
                    format!(" (all {} lines were malformed and skipped)", pass.skipped)
                } else {
                    " after the header".to_string()
                }
            );
        }
    }
    let (Some(layout), Some(counts)) = (layout, counts) else {
        bail!("prepare: no input file");
    };
    let field_names = layout.field_names.clone();
    let dense_names = layout.dense_names.clone();
    let vocab = counts.into_vocab(opts.min_count);

    bar.set_message("pass 2: writing");
    let mut writer = CacheWriter::create(&opts.out)?;
    let mut idx = vec![0u32; field_names.len()];
    let mut rows2 = SplitCounts::default();
    let mut skipped2 = 0;
    let mut values = ValueCollector::new(&vocab.cardinalities());
    for (&(path, _), assigner) in inputs.iter().zip(&assigners) {
        let mut pass = Pass::open(path, &plan, opts.skip_bad_lines, &bar, Some(&layout))?;
        while let Some(pos) = pass.next()? {
            let rec = &pass.rec;
            let split = assigner.assign(pos);
            rows2.bump(split);
            vocab.map_row(&rec.cats, &mut idx);
            if values.missing() > 0 {
                let line = pass.line();
                for (f, &i) in idx.iter().enumerate() {
                    values.offer(f, i, || pass.parser.cat_value(line, f));
                }
            }
            writer
                .push(split, &rec.dense, &idx, rec.label)
                .with_context(|| format!("cannot write the cache for {}", opts.out.display()))?;
        }
        skipped2 += pass.skipped;
    }
    let named = || {
        let paths: Vec<String> = inputs
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        paths.join(", ")
    };
    if rows2 != rows || skipped2 != skipped {
        bail!(
            "{}: the input changed while it was being prepared (pass 1 saw {} rows, pass 2 {})",
            named(),
            rows.total(),
            rows2.total()
        );
    }
    if values.missing() > 0 {
        bail!(
            "{}: the input changed while it was being prepared ({} vocabulary values not seen \
             again in pass 2)",
            named(),
            values.missing()
        );
    }
    let vocab_file = VocabFile::new(
        opts.format.name(),
        match &opts.format {
            InputFormat::Csv { schema } => Some(CsvSchema::from_yaml_file(schema)?),
            _ => None,
        },
        plan.header,
        &layout,
        values.into_values(),
        opts.min_count.max(1),
    );
    writer
        .write_file(
            VOCAB_FILE,
            (serde_json::to_string(&vocab_file)? + "\n").as_bytes(),
        )
        .with_context(|| format!("cannot write the cache {}", opts.out.display()))?;
    let cardinalities = vocab.cardinalities();
    let freq: Vec<u32> = vocab.freq.concat();
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

/// The size of `path`, which must be a regular file: prepare reads it twice.
fn regular_file_size(path: &Path) -> Result<u64> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{}: not a regular file (a pipe, a terminal or a device?); prepare reads its input \
             twice (vocabulary, then the cache), so it needs a regular, seekable file: save the \
             data to a file first",
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

/// One pass over the file: yields (data-line position, parsed record) for good lines, and fails
/// or counts for bad ones.
struct Pass<'b> {
    file: PathBuf,
    reader: LineReader,
    parser: LineParser,
    rec: Record,
    /// The first line when it is data (no header): already read to learn the column count.
    first: Vec<u8>,
    /// `Some(terminated)` while `first` is still to be returned.
    pending: Option<bool>,
    /// Whether the line last returned is `first`.
    on_first: bool,
    next_pos: u64,
    skip: bool,
    skipped: u64,
    bar: &'b ProgressBar,
    bar_base: u64,
}

impl<'b> Pass<'b> {
    /// `like`: the layout of the first file of a predefined split, which this file must share
    /// (the same header; without a header, each line is checked against its column count).
    fn open(
        path: &Path,
        plan: &FormatPlan,
        skip: bool,
        bar: &'b ProgressBar,
        like: Option<&Layout>,
    ) -> Result<Pass<'b>> {
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
        let (header, pending) = if plan.header {
            (Some(splitter.columns_as_strings(&first)), None)
        } else {
            (None, Some(terminated))
        };
        let layout = match like {
            None => plan.layout(header, columns, path)?,
            Some(like) => {
                if let Some(header) = &header {
                    check_same_header(path, header, like)?;
                }
                like.clone()
            }
        };
        let parser = LineParser::new(layout);
        Ok(Pass {
            file: path.to_path_buf(),
            rec: parser.new_record(),
            reader,
            parser,
            first,
            pending,
            on_first: false,
            next_pos: 0,
            skip,
            skipped: 0,
            bar,
            bar_base: bar.position(),
        })
    }

    /// The text of the line last returned by `next`.
    fn line(&self) -> &[u8] {
        if self.on_first {
            &self.first
        } else {
            self.reader.current()
        }
    }

    /// The data-line position of the next good line, parsed into `self.rec`.
    fn next(&mut self) -> Result<Option<u64>> {
        loop {
            if self.next_pos.is_multiple_of(16_384) {
                self.bar
                    .set_position(self.bar_base + self.reader.bytes_read);
            }
            let (text, number, terminated): (&[u8], u64, bool) = match self.pending.take() {
                Some(terminated) => {
                    self.on_first = true;
                    (&self.first, 1, terminated)
                }
                None => {
                    self.on_first = false;
                    match self
                        .reader
                        .next_line()
                        .with_context(|| format!("cannot read {}", self.file.display()))?
                    {
                        Some(line) => (line.text, line.number, line.terminated),
                        None => return Ok(None),
                    }
                }
            };
            let pos = self.next_pos;
            self.next_pos += 1;
            let result = if terminated {
                self.parser.parse(text, &mut self.rec)
            } else {
                let columns = self.parser.count_columns(text);
                Err(FieldError {
                    column: columns,
                    column_name: self.parser.layout().column_names.get(columns - 1).cloned(),
                    expected: "a newline at the end of the line (the file ends mid-line: is it \
                               truncated?)"
                        .into(),
                    found: "the end of the file".into(),
                })
            };
            match result {
                Ok(()) => return Ok(Some(pos)),
                Err(_) if self.skip => self.skipped += 1,
                Err(e) => return Err(e.at(&self.file, number).into()),
            }
        }
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

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.bar
            .set_position(self.bar_base + self.reader.bytes_read);
    }
}
