//! `vocab.json`: everything needed to turn a raw row into the model's inputs without `mlet` —
//! how the file is split, which column is the label, each dense column and its transform, each
//! categorical column, how its value is derived, and the raw value of every vocabulary index.
//! `prepare` writes it into the cache; `mlet export` copies it beside the model (adding the
//! hashed fields' buckets); `mlet predict` reads it. Format in `docs/data.md`.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::atomic::write_atomic;
use crate::data::schema::{CatKind, CsvSchema, DenseKind, Layout};
use crate::data::vocab::Vocab;

pub const VOCAB_FILE: &str = "vocab.json";
/// Bumped whenever the file changes incompatibly.
pub const VOCAB_FORMAT_VERSION: u32 = 1;

const VALUE_ENCODING: &str = "values[i] is the raw value of index i; values[0] is null (index 0 \
    = out of vocabulary: unseen values and values seen fewer than min_count training times). A \
    value is a JSON string when its bytes are valid UTF-8 (the string's UTF-8 encoding is the \
    bytes), otherwise {\"hex\": \"...\"} with the bytes in lowercase hex. Values are compared as \
    bytes, exactly (no trimming).";

/// Dense transforms (`x` the column's text; empty = missing → 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenseTransform {
    /// `ln(1 + max(x, 0))` of an integer `x` (Criteo).
    Log1pInt,
    /// `ln(1 + max(x, 0))` of a finite number.
    Log1p,
    /// The finite number as is.
    Identity,
    /// Hour of a `YYMMDDHH` timestamp divided by 23.
    HourOfDay,
}

/// How a categorical field's value comes from its column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derive {
    /// The column's bytes as they are.
    Raw,
    /// `Mon`..`Sun` of a `YYMMDDHH` timestamp (surrounding spaces ignored).
    DayOfWeek,
    /// `00`..`23` of a `YYMMDDHH` timestamp (surrounding spaces ignored).
    HourOfDay,
}

/// A vocabulary value: its bytes (see `VALUE_ENCODING`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VocabValue {
    Text(String),
    Bytes { hex: String },
}

impl VocabValue {
    pub fn of(bytes: &[u8]) -> VocabValue {
        match std::str::from_utf8(bytes) {
            Ok(s) => VocabValue::Text(s.to_string()),
            Err(_) => VocabValue::Bytes {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }

    pub fn bytes(&self) -> Result<Vec<u8>> {
        match self {
            VocabValue::Text(s) => Ok(s.as_bytes().to_vec()),
            VocabValue::Bytes { hex } => {
                let h = hex.as_bytes();
                if h.len() % 2 != 0 {
                    bail!("{{\"hex\": {hex:?}}}: expected an even number of hex digits");
                }
                h.chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .with_context(|| format!("{{\"hex\": {hex:?}}}: not hex digits"))
                    })
                    .collect()
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelColumn {
    /// 0-based position in `columns`.
    pub column: usize,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseColumn {
    /// The feature's name (the model's input order is the order of `dense`).
    pub name: String,
    /// 0-based position in `columns`.
    pub column: usize,
    pub transform: DenseTransform,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatField {
    pub name: String,
    /// 0-based position in `columns`.
    pub column: usize,
    pub derive: Derive,
    /// Vocabulary size including index 0 (= `values.len()`).
    pub cardinality: usize,
    /// Only in an export of a run trained with the hashing trick: the field's table has this many
    /// rows and the module reduces indices modulo it itself; feed vocabulary indices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_buckets: Option<usize>,
    pub values: Vec<Option<VocabValue>>,
}

/// The contents of `vocab.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VocabFile {
    pub format_version: u32,
    pub about: String,
    /// "criteo", "avazu" or "csv".
    pub format: String,
    /// The CSV schema `prepare` was given (format csv only).
    #[serde(default)]
    pub schema: Option<CsvSchema>,
    /// One ASCII character.
    pub delimiter: String,
    /// Whether line 1 is a header (then columns are found by name in it).
    pub header: bool,
    /// Whether `"`-quoted columns (RFC 4180 within one line, `""` for a quote) are honoured.
    pub quotes: bool,
    /// Names of the training file's columns (`col1`.. for a file without a header).
    pub columns: Vec<String>,
    pub label: LabelColumn,
    pub dense: Vec<DenseColumn>,
    pub fields: Vec<CatField>,
    pub min_count: u32,
    pub value_encoding: String,
}

impl VocabFile {
    pub(crate) fn new(
        format: &str,
        schema: Option<CsvSchema>,
        header: bool,
        layout: &Layout,
        values: Vec<Vec<Option<Vec<u8>>>>,
        min_count: u32,
    ) -> VocabFile {
        let label = layout.label.unwrap_or(0);
        VocabFile {
            format_version: VOCAB_FORMAT_VERSION,
            about: "mlet vocabulary: how raw rows become model inputs (docs/data.md, \
                    \"Vocabulary file\")"
                .into(),
            format: format.into(),
            schema,
            delimiter: (layout.delimiter as char).to_string(),
            header,
            quotes: layout.quotes,
            columns: layout.column_names.clone(),
            label: LabelColumn {
                column: label,
                name: layout.column_names[label].clone(),
            },
            dense: layout
                .dense
                .iter()
                .zip(&layout.dense_names)
                .map(|(&(column, kind), name)| DenseColumn {
                    name: name.clone(),
                    column,
                    transform: match kind {
                        DenseKind::Log1pInt => DenseTransform::Log1pInt,
                        DenseKind::Log1p => DenseTransform::Log1p,
                        DenseKind::Identity => DenseTransform::Identity,
                        DenseKind::HourOfDay => DenseTransform::HourOfDay,
                    },
                })
                .collect(),
            fields: layout
                .cats
                .iter()
                .zip(&layout.field_names)
                .zip(values)
                .map(|((&(column, kind), name), values)| CatField {
                    name: name.clone(),
                    column,
                    derive: match kind {
                        CatKind::Raw => Derive::Raw,
                        CatKind::DayOfWeek => Derive::DayOfWeek,
                        CatKind::HourOfDay => Derive::HourOfDay,
                    },
                    cardinality: values.len(),
                    hash_buckets: None,
                    values: values
                        .iter()
                        .map(|v| v.as_deref().map(VocabValue::of))
                        .collect(),
                })
                .collect(),
            min_count,
            value_encoding: VALUE_ENCODING.into(),
        }
    }

    /// Reads and checks a vocabulary file.
    pub fn read(path: &Path) -> Result<VocabFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: VocabFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an mlet vocabulary file", path.display()))?;
        v.check()
            .with_context(|| format!("{}: invalid vocabulary", path.display()))?;
        Ok(v)
    }

    /// The vocabulary of the cache at `dir`, with a clear error for caches made before
    /// vocabularies were recorded.
    pub fn of_cache(dir: &Path) -> Result<VocabFile> {
        let path = dir.join(VOCAB_FILE);
        if !path.is_file() {
            if dir.join(crate::data::cache::META_FILE).is_file() {
                bail!(
                    "{}: missing: the data cache {} predates vocabularies (mlet 0.1 caches kept \
                     only hashes of the values); re-prepare it with `mlet data prepare` from the \
                     same raw file and options (the indices come out the same, so trained runs \
                     stay valid)",
                    path.display(),
                    dir.display()
                );
            }
            bail!(
                "{}: no data cache there (no meta.json); was it moved or deleted? re-prepare it \
                 with `mlet data prepare` from the same raw file and options",
                dir.display()
            );
        }
        VocabFile::read(&path)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, (serde_json::to_string(self)? + "\n").as_bytes())
    }

    pub fn cardinalities(&self) -> Vec<usize> {
        self.fields.iter().map(|f| f.cardinality).collect()
    }

    fn check(&self) -> Result<()> {
        if self.format_version != VOCAB_FORMAT_VERSION {
            bail!(
                "format_version {} but this mlet reads version {VOCAB_FORMAT_VERSION}",
                self.format_version
            );
        }
        let n = self.columns.len();
        let delimiter = self.delimiter.as_bytes();
        if delimiter.len() != 1 || !delimiter[0].is_ascii() {
            bail!(
                "delimiter: expected one ASCII character, found {:?}",
                self.delimiter
            );
        }
        let in_range = |what: &str, c: usize| -> Result<()> {
            if c >= n {
                bail!("{what}: column {c} is not below the {n} columns");
            }
            Ok(())
        };
        in_range("label", self.label.column)?;
        for d in &self.dense {
            in_range(&format!("dense {}", d.name), d.column)?;
        }
        if self.fields.is_empty() {
            bail!("fields: expected at least one categorical field");
        }
        for f in &self.fields {
            in_range(&format!("field {}", f.name), f.column)?;
            if f.values.len() != f.cardinality || f.values.first() != Some(&None) {
                bail!(
                    "field {}: expected {} values with values[0] = null (OOV), found {}",
                    f.name,
                    f.cardinality,
                    f.values.len()
                );
            }
            if let Some(i) = f.values.iter().skip(1).position(Option::is_none) {
                bail!(
                    "field {}: values[{}] is null; only index 0 may be",
                    f.name,
                    i + 1
                );
            }
        }
        Ok(())
    }

    /// The lookup from raw values to indices (unknown values → 0).
    pub(crate) fn lookup(&self) -> Result<Vocab> {
        let values = self
            .fields
            .iter()
            .map(|f| {
                f.values
                    .iter()
                    .map(|v| v.as_ref().map(VocabValue::bytes).transpose())
                    .collect::<Result<Vec<_>>>()
                    .with_context(|| format!("field {}", f.name))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Vocab::from_values(&values))
    }

    pub(crate) fn delimiter_byte(&self) -> u8 {
        self.delimiter.as_bytes()[0]
    }

    /// The layout of serving rows: with a header, columns are found by name (the label column
    /// may be absent); without one, a row of `columns.len()` columns has the label and one of
    /// `columns.len() - 1` lacks it (the label's column is left out, the others keep their order).
    pub(crate) fn serving_layout(
        &self,
        header: Option<Vec<String>>,
        first_line_columns: usize,
        input: &Path,
    ) -> Result<Layout> {
        let n = self.columns.len();
        let (column_names, map, label): (Vec<String>, Vec<usize>, Option<usize>) = match header {
            Some(names) => {
                let find = |name: &str| names.iter().position(|h| h == name);
                let mut map = Vec::with_capacity(n);
                for (i, name) in self.columns.iter().enumerate() {
                    let used = self.dense.iter().any(|d| d.column == i)
                        || self.fields.iter().any(|f| f.column == i);
                    match find(name) {
                        Some(c) => map.push(c),
                        None if used => bail!(
                            "{}: line 1 (header): expected a column named {name:?} (the model \
                             reads it); the header has: {}",
                            input.display(),
                            names.join(", ")
                        ),
                        None => map.push(usize::MAX),
                    }
                }
                let label = find(&self.label.name);
                (names, map, label)
            }
            None if first_line_columns == n => (
                self.columns.clone(),
                (0..n).collect(),
                Some(self.label.column),
            ),
            None if first_line_columns + 1 == n => {
                let l = self.label.column;
                let mut names = self.columns.clone();
                names.remove(l);
                let map = (0..n).map(|c| if c > l { c - 1 } else { c }).collect();
                (names, map, None)
            }
            None => bail!(
                "{}: line 1: expected {n} columns (with the label) or {} (without), found {}",
                input.display(),
                n - 1,
                first_line_columns
            ),
        };
        Ok(Layout {
            delimiter: self.delimiter_byte(),
            quotes: self.quotes,
            column_names,
            label,
            dense: self
                .dense
                .iter()
                .map(|d| {
                    let kind = match d.transform {
                        DenseTransform::Log1pInt => DenseKind::Log1pInt,
                        DenseTransform::Log1p => DenseKind::Log1p,
                        DenseTransform::Identity => DenseKind::Identity,
                        DenseTransform::HourOfDay => DenseKind::HourOfDay,
                    };
                    (map[d.column], kind)
                })
                .collect(),
            cats: self
                .fields
                .iter()
                .map(|f| {
                    let kind = match f.derive {
                        Derive::Raw => CatKind::Raw,
                        Derive::DayOfWeek => CatKind::DayOfWeek,
                        Derive::HourOfDay => CatKind::HourOfDay,
                    };
                    (map[f.column], kind)
                })
                .collect(),
            dense_names: self.dense.iter().map(|d| d.name.clone()).collect(),
            field_names: self.fields.iter().map(|f| f.name.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_values_round_trip_through_json() {
        for bytes in [
            &b"68fd1e64"[..],
            b"",
            b"caf\xc3\xa9",
            b"\xff\x00a\"",
            b"\xc3",
        ] {
            let v = VocabValue::of(bytes);
            let json = serde_json::to_string(&v).unwrap();
            let back: VocabValue = serde_json::from_str(&json).unwrap();
            assert_eq!(back.bytes().unwrap(), bytes, "{json}");
            assert_eq!(
                matches!(v, VocabValue::Text(_)),
                std::str::from_utf8(bytes).is_ok(),
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&VocabValue::of(b"\xff\x00a")).unwrap(),
            r#"{"hex":"ff0061"}"#
        );
        assert!(VocabValue::Bytes { hex: "f".into() }.bytes().is_err());
        assert!(VocabValue::Bytes { hex: "zz".into() }.bytes().is_err());
    }

    #[test]
    fn serving_layout_without_label_shifts_columns() {
        let layout = Layout::criteo();
        let values = vec![vec![None, Some(b"x".to_vec())]; 26];
        let v = VocabFile::new("criteo", None, false, &layout, values, 1);
        let with = v.serving_layout(None, 40, Path::new("in")).unwrap();
        assert_eq!(with.label, Some(0));
        assert_eq!(with.dense[0].0, 1);
        assert_eq!(with.cats[25].0, 39);
        let without = v.serving_layout(None, 39, Path::new("in")).unwrap();
        assert_eq!(without.label, None);
        assert_eq!(without.dense[0].0, 0);
        assert_eq!(without.cats[25].0, 38);
        let err = v.serving_layout(None, 38, Path::new("in")).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected 40 columns (with the label) or 39"),
            "{err}"
        );
    }
}
