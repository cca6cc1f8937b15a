//! Raw rows for serving (`mlet predict`): parsed with the training file's layout as recorded in
//! the vocabulary file, values mapped through the vocabulary (unknown → 0), streamed in batches.
use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::batch::Batch;
use crate::data::error::FieldError;
use crate::data::lines::LineReader;
use crate::data::parse::{LineParser, Record, Splitter};
use crate::data::vocab::Vocab;
use crate::data::vocab_file::VocabFile;

/// A stream of raw rows turned into model inputs.
pub struct RawRows {
    name: PathBuf,
    reader: LineReader,
    parser: LineParser,
    vocab: Vocab,
    rec: Record,
    idx: Vec<u32>,
    /// The first line when it is data (no header): read to learn the column count.
    first: Option<Vec<u8>>,
    has_label: bool,
}

impl RawRows {
    /// Rows of `input` (`-` = standard input) in the layout `vocab` records. With a header the
    /// columns are found by name; without one, the first line's column count says whether the
    /// rows carry the label column.
    pub fn open(input: &Path, vocab: &VocabFile) -> Result<RawRows> {
        let (name, stream): (PathBuf, Box<dyn Read>) = if input == Path::new("-") {
            ("<stdin>".into(), Box::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            (input.to_path_buf(), Box::new(file))
        };
        let mut reader = LineReader::from_reader(stream);
        let read_err = || format!("cannot read {}", name.display());
        let first = reader.next_line().with_context(read_err)?.map(|line| {
            line.text
                .strip_prefix(b"\xef\xbb\xbf")
                .unwrap_or(line.text)
                .to_vec()
        });
        let mut splitter = Splitter::new(vocab.delimiter_byte(), vocab.quotes);
        let columns = match &first {
            Some(line) => splitter
                .split(line)
                .map_err(|e: FieldError| e.at(&name, 1))?,
            None => vocab.columns.len(),
        };
        let (header, first) = match first {
            Some(line) if vocab.header => (Some(splitter.columns_as_strings(&line)), None),
            // an empty input with a header: no rows, any layout will do
            None if vocab.header => (Some(vocab.columns.clone()), None),
            other => (None, other),
        };
        let layout = vocab.serving_layout(header, columns, &name)?;
        let has_label = layout.label.is_some();
        let parser = LineParser::new(layout);
        Ok(RawRows {
            name,
            reader,
            rec: parser.new_record(),
            parser,
            vocab: vocab.lookup()?,
            idx: vec![0; vocab.fields.len()],
            first,
            has_label,
        })
    }

    /// Whether the rows carry the label column (it is then checked to be 0 or 1, and ignored).
    pub fn has_label(&self) -> bool {
        self.has_label
    }

    /// Replaces `out` with the next (up to) `max` rows; returns how many (0 at the end). A
    /// malformed row is an error naming the input, its line and column.
    pub fn next_batch(&mut self, max: usize, out: &mut Batch) -> Result<usize> {
        out.clear();
        while out.size < max {
            let (text, number): (&[u8], u64) = match &self.first {
                Some(line) => (line, 1),
                None => match self
                    .reader
                    .next_line()
                    .with_context(|| format!("cannot read {}", self.name.display()))?
                {
                    // serving input often ends without a newline (printf, a pipe): accepted
                    Some(line) => (line.text, line.number),
                    None => break,
                },
            };
            self.parser
                .parse(text, &mut self.rec)
                .map_err(|e| e.at(&self.name, number))?;
            self.first = None;
            self.vocab.map_row(&self.rec.cats, &mut self.idx);
            out.dense.extend_from_slice(&self.rec.dense);
            out.cat.extend(self.idx.iter().map(|&i| i64::from(i)));
            out.label.push(self.rec.label);
            out.size += 1;
        }
        Ok(out.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::schema::Layout;

    fn vocab() -> VocabFile {
        let mut layout = Layout::criteo();
        layout.dense.truncate(1);
        layout.dense_names.truncate(1);
        layout.cats.truncate(2);
        layout.field_names.truncate(2);
        let values = vec![
            vec![None, Some(b"a".to_vec()), Some(b"".to_vec())],
            vec![None, Some(b"\xffx".to_vec())],
        ];
        VocabFile::new("criteo", None, false, &layout, values, 1)
    }

    /// A Criteo row with I1 and C1, C2 set (the rest empty), with or without the label.
    fn row(label: Option<&str>, i1: &str, c1: &[u8], c2: &[u8]) -> Vec<u8> {
        let mut cols: Vec<Vec<u8>> = vec![Vec::new(); 40];
        cols[0] = label.unwrap_or("").as_bytes().to_vec();
        cols[1] = i1.as_bytes().to_vec();
        cols[14] = c1.to_vec();
        cols[15] = c2.to_vec();
        if label.is_none() {
            cols.remove(0);
        }
        let mut line = cols.join(&b'\t');
        line.push(b'\n');
        line
    }

    fn rows(lines: &[Vec<u8>]) -> Result<(Batch, bool)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rows.tsv");
        std::fs::write(&path, lines.concat())?;
        let mut r = RawRows::open(&path, &vocab())?;
        let mut b = Batch::default();
        r.next_batch(100, &mut b)?;
        Ok((b, r.has_label()))
    }

    #[test]
    fn maps_values_and_unseen_is_oov() {
        // known: a, "", 0xff x; unseen: b, zz, y
        let (b, has_label) = rows(&[
            row(Some("1"), "3", b"a", b"\xffx"),
            row(Some("0"), "", b"", b"b"),
            row(Some("0"), "-5", b"zz", b"y"),
        ])
        .unwrap();
        assert!(has_label);
        assert_eq!(b.size, 3);
        assert_eq!(b.cat, vec![1, 1, 2, 0, 0, 0]);
        assert_eq!(b.label, vec![1.0, 0.0, 0.0]);
        // I1 only: ln(1 + 3), missing, a negative clamped to 0
        assert_eq!(b.dense, vec![4f32.ln(), 0.0, 0.0]);
        // without the label: 39 columns, the same values
        let (b, has_label) = rows(&[row(None, "3", b"a", b"\xffx")]).unwrap();
        assert!(!has_label);
        assert_eq!(b.cat, vec![1, 1]);
        assert_eq!(b.dense[0], 4f32.ln());
    }

    #[test]
    fn malformed_rows_name_line_and_column() {
        let good = row(Some("1"), "3", b"a", b"b");
        let err = rows(&[good.clone(), row(Some("1"), "x", b"a", b"b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column 2 (I1)"), "{err}");
        // a row without the label after one with it
        let err = rows(&[good, row(None, "3", b"a", b"b")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("40 tab-separated columns"),
            "{err}"
        );
    }
}
