//! A small CSV writer and reader (RFC 4180 quoting) for the results tables and training logs.
//!
//! Errors name the file, the 1-based line and character column, and the column's header name.
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The one CSV writer (RFC 4180 quoting where needed, `\n` line ends), for whole tables and for
/// logs written line by line.
pub(crate) fn writer<W: std::io::Write>(out: W) -> ::csv::Writer<W> {
    ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(out)
}

/// Writes a header and rows to `path` atomically: a hidden sibling is written, synced and renamed.
pub(crate) fn write_table(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut w = writer(Vec::new());
    w.write_record(header)?;
    for row in rows {
        debug_assert_eq!(row.len(), header.len(), "row width should match the header");
        w.write_record(row)?;
    }
    let text = w
        .into_inner()
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error()))?;
    crate::atomic::write_atomic(path, &text)
}

/// One field of a record and where it starts in the file.
#[derive(Debug)]
pub(crate) struct Field {
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// One record: its fields and the line it starts on.
#[derive(Debug)]
pub(crate) struct Record {
    pub line: usize,
    pub fields: Vec<Field>,
}

/// Splits CSV text into records. Blank lines are skipped; `\r\n` and `\n` both end a record;
/// quoted fields may hold commas, doubled quotes and line breaks.
pub(crate) fn parse_records(text: &str, file: &Path) -> Result<Vec<Record>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1usize, 1usize);
    let mut fields: Vec<Field> = Vec::new();
    let mut record_line = 1usize;
    loop {
        // Start of a field.
        let (f_line, f_col) = (line, col);
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            col += 1;
            loop {
                match chars.next() {
                    None => bail!(
                        "{}:{f_line}:{f_col}: unterminated quoted field (expected a closing `\"`)",
                        file.display()
                    ),
                    Some('"') => {
                        col += 1;
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            col += 1;
                            value.push('"');
                        } else {
                            break;
                        }
                    }
                    Some('\n') => {
                        value.push('\n');
                        line += 1;
                        col = 1;
                    }
                    Some(c) => {
                        value.push(c);
                        col += 1;
                    }
                }
            }
            match chars.peek() {
                None | Some(',') | Some('\n') => {}
                Some('\r') => {}
                Some(c) => bail!(
                    "{}:{line}:{col}: expected `,` or the end of the line after a quoted field, \
                     found `{c}`",
                    file.display()
                ),
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' || c == '\r' {
                    break;
                }
                if c == '"' {
                    bail!(
                        "{}:{line}:{col}: unexpected `\"` inside an unquoted field (quote the \
                         whole field and double inner quotes)",
                        file.display()
                    );
                }
                value.push(c);
                col += 1;
                chars.next();
            }
        }
        fields.push(Field {
            text: value,
            line: f_line,
            col: f_col,
        });
        // End of the field: a comma, a line end or the end of the text.
        match chars.next() {
            Some(',') => col += 1,
            Some('\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                finish_record(&mut records, &mut fields, record_line);
                line += 1;
                col = 1;
                record_line = line;
            }
            Some('\n') => {
                finish_record(&mut records, &mut fields, record_line);
                line += 1;
                col = 1;
                record_line = line;
            }
            None => {
                finish_record(&mut records, &mut fields, record_line);
                break;
            }
            Some(c) => unreachable!("the field loops stop only at separators, not at `{c}`"),
        }
        if chars.peek().is_none() {
            break;
        }
    }
    Ok(records)
}

fn finish_record(records: &mut Vec<Record>, fields: &mut Vec<Field>, line: usize) {
    let blank = fields.len() == 1 && fields[0].text.is_empty();
    let taken = std::mem::take(fields);
    if !blank {
        records.push(Record {
            line,
            fields: taken,
        });
    }
}

/// A parsed table: a header that must name at least the expected columns (see `reject_unknown`),
/// and records whose width matches it.
pub(crate) struct Table {
    pub file: PathBuf,
    columns: HashMap<String, usize>,
    header: Vec<String>,
    pub records: Vec<Record>,
}

impl Table {
    /// Reads and parses `path`, checking the header against `expected`.
    pub fn read(path: &Path, expected: &[&str]) -> Result<Table> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Table::parse(&text, path, expected)
    }

    pub fn parse(text: &str, path: &Path, expected: &[&str]) -> Result<Table> {
        let mut records = parse_records(text, path)?;
        if records.is_empty() {
            bail!(
                "{}:1:1: empty file; expected a header line naming the columns {}",
                path.display(),
                expected.join(",")
            );
        }
        let header_rec = records.remove(0);
        let mut columns = HashMap::new();
        let mut header = Vec::new();
        for (i, f) in header_rec.fields.iter().enumerate() {
            let name = f.text.trim().to_string();
            if columns.insert(name.clone(), i).is_some() {
                bail!(
                    "{}:{}:{}: column `{name}` appears twice in the header",
                    path.display(),
                    f.line,
                    f.col
                );
            }
            header.push(name);
        }
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|c| !columns.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}:{}:1: the header lacks the column(s) {}",
                path.display(),
                header_rec.line,
                missing
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for r in &records {
            if r.fields.len() != header.len() {
                let last = r.fields.last().expect("a record has at least one field");
                bail!(
                    "{}:{}:{}: expected {} fields (as in the header), found {}",
                    path.display(),
                    r.line,
                    if r.fields.len() > header.len() {
                        r.fields[header.len()].col
                    } else {
                        last.col + last.text.chars().count()
                    },
                    header.len(),
                    r.fields.len()
                );
            }
        }
        Ok(Table {
            file: path.to_path_buf(),
            columns,
            header,
            records,
        })
    }

    /// The raw text of column `name` in record `r`.
    pub fn raw<'a>(&self, r: &'a Record, name: &str) -> &'a Field {
        let i = self.columns[name];
        debug_assert_eq!(self.header[i], name);
        &r.fields[i]
    }

    /// Column `name` of record `r`, parsed as `T`; `what` describes the expected value.
    pub fn get<T>(&self, r: &Record, name: &str, what: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let f = self.raw(r, name);
        f.text
            .trim()
            .parse::<T>()
            .map_err(|e| self.error(f, name, what, e))
    }

    /// Column `name` of record `r` as a number, NaN when the table has no such column.
    pub fn get_or_nan(&self, r: &Record, name: &str) -> Result<f64> {
        if self.columns.contains_key(name) {
            self.get(r, name, "a number")
        } else {
            Ok(f64::NAN)
        }
    }

    /// Errors on a header column that is not in `known`.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self.header.iter().find(|h| !known.contains(&h.as_str())) {
            None => Ok(()),
            Some(name) => bail!(
                "{}:1: unknown column `{name}` (expected columns: {})",
                self.file.display(),
                known.join(", ")
            ),
        }
    }

    /// An error about field `f` of column `name`.
    pub fn error(&self, f: &Field, name: &str, what: &str, why: impl Display) -> anyhow::Error {
        anyhow!(
            "{}:{}:{}: column `{name}`: expected {what}, found `{}` ({why})",
            self.file.display(),
            f.line,
            f.col,
            f.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        let row = vec!["x,\"y\"\nz".to_string(), "plain".to_string()];
        write_table(&p, &["a", "b"], &[row]).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text, "a,b\n\"x,\"\"y\"\"\nz\",plain\n");
        let recs = parse_records(&text, &p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].fields[0].text, "x,\"y\"\nz");
        assert_eq!(recs[1].fields[1].text, "plain");
        assert_eq!(recs[1].fields[1].line, 3);
    }

    #[test]
    fn crlf_and_blank_lines() {
        let recs = parse_records("a,b\r\n\r\n1,2\r\n", Path::new("t.csv")).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].line, 3);
        assert_eq!(recs[1].fields[1].col, 3);
    }

    #[test]
    fn stray_quote_is_an_error() {
        let e = parse_records("a,b\n1,x\"y\n", Path::new("t.csv")).unwrap_err();
        assert!(e.to_string().contains("t.csv:2:4"), "{e}");
    }
}
