//! Input formats and their column layouts. Every format resolves to one `Layout` (delimiter, label
//! column, dense columns and categorical columns, each with a transform): Criteo is fixed, Avazu is
//! a built-in schema resolved against its header, generic CSV/TSV files bring a YAML `CsvSchema`.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::describe;

/// Kind of raw input file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Criteo Display Advertising Challenge `train.txt`: tab-separated, no header,
    /// `label, I1..I13, C1..C26`.
    Criteo,
    /// Avazu CTR `train`: comma-separated with header; `id` dropped, `click` label, `hour`
    /// (YYMMDDHH) → dense hour of day, every other column categorical.
    Avazu,
    /// Any CSV/TSV file whose columns a YAML schema declares (see `CsvSchema`).
    Csv { schema: PathBuf },
}

impl InputFormat {
    pub fn name(&self) -> &'static str {
        match self {
            InputFormat::Criteo => "criteo",
            InputFormat::Avazu => "avazu",
            InputFormat::Csv { .. } => "csv",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputFormat::Csv { schema } => write!(f, "csv (schema {})", schema.display()),
            other => f.write_str(other.name()),
        }
    }
}

/// A column named by its header name, or by its 1-based position (as in `cut -f`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Number(usize),
    Name(String),
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnRef::Number(n) => write!(f, "column {n}"),
            ColumnRef::Name(s) => write!(f, "column {s:?}"),
        }
    }
}

/// How a column's text becomes a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Dense: `ln(1 + max(x, 0))`, empty = 0 (the Criteo/DLRM convention). Default for dense.
    Log1p,
    /// Dense: the number as is, empty = 0.
    Identity,
    /// Dense: hour of a `YYMMDDHH` timestamp divided by 23 (in [0, 1]).
    /// Categorical: the hour `00`..`23` as a value.
    HourOfDay,
    /// Categorical: day of week (`Mon`..`Sun`) of a `YYMMDDHH` timestamp.
    DayOfWeek,
    /// Categorical: the value's bytes as they are, empty = its own value. Default for categorical.
    Raw,
}

/// One feature column: a bare reference, or a reference with a transform and a feature name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Plain(ColumnRef),
    Detailed {
        column: ColumnRef,
        #[serde(default)]
        transform: Option<Transform>,
        #[serde(default)]
        name: Option<String>,
    },
}

/// The mapping form of `ColumnSpec`, read on its own so that its errors name the key and the
/// allowed values (an untagged enum only says that no variant matched).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailedSpec {
    column: ColumnRef,
    #[serde(default)]
    transform: Option<Transform>,
    #[serde(default)]
    name: Option<String>,
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_yaml::Value::deserialize(d)?;
        match value {
            serde_yaml::Value::Mapping(_) => {
                let spec: DetailedSpec = serde_path_to_error::deserialize(value)
                    .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner())))?;
                Ok(ColumnSpec::Detailed {
                    column: spec.column,
                    transform: spec.transform,
                    name: spec.name,
                })
            }
            serde_yaml::Value::Number(_) | serde_yaml::Value::String(_) => {
                ColumnRef::deserialize(value)
                    .map(ColumnSpec::Plain)
                    .map_err(|e| {
                        D::Error::custom(format!(
                            "expected a column name or a 1-based column number: {e}"
                        ))
                    })
            }
            other => Err(D::Error::custom(format!(
                "expected a column name, a 1-based column number, or {{column: C, transform: T, \
                 name: N}}, found {}",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            ))),
        }
    }
}

/// What happens to columns the schema does not mention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remaining {
    #[default]
    Ignore,
    /// Each becomes a raw categorical field, in file order, after the declared ones.
    Categorical,
}

/// YAML description of a generic CSV/TSV file. Example:
/// ```yaml
/// delimiter: "\t"        # one character; "tab" also accepted; default ","
/// header: true           # default true; without a header, refer to columns by number
/// label: click           # values must be 0 or 1
/// dense: [price, {column: 7, transform: identity, name: age}]
/// categorical: [user, item, {column: ts, transform: day_of_week}]
/// remaining: ignore      # or categorical
/// ignore: [id]           # only matters with remaining: categorical
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSchema {
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_header")]
    pub header: bool,
    pub label: ColumnRef,
    #[serde(default)]
    pub dense: Vec<ColumnSpec>,
    #[serde(default)]
    pub categorical: Vec<ColumnSpec>,
    #[serde(default)]
    pub remaining: Remaining,
    #[serde(default)]
    pub ignore: Vec<ColumnRef>,
}

fn default_delimiter() -> String {
    ",".to_string()
}

fn default_header() -> bool {
    true
}

impl CsvSchema {
    /// The Avazu layout: `id` ignored, `click` label, `hour` → dense hour of day, the 21 other
    /// columns categorical in file order. To add day of week as a categorical field, use
    /// `--format csv` with this schema plus `categorical: [{column: hour, transform: day_of_week}]`.
    pub fn avazu() -> CsvSchema {
        CsvSchema {
            delimiter: ",".into(),
            header: true,
            label: ColumnRef::Name("click".into()),
            dense: vec![ColumnSpec::Detailed {
                column: ColumnRef::Name("hour".into()),
                transform: Some(Transform::HourOfDay),
                name: Some("hour".into()),
            }],
            categorical: vec![],
            remaining: Remaining::Categorical,
            ignore: vec![ColumnRef::Name("id".into())],
        }
    }

    pub fn from_yaml_file(path: &Path) -> Result<CsvSchema> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read schema {}", path.display()))?;
        crate::config::check_yaml_depth(&text)
            .map_err(|e| anyhow::anyhow!("{}: invalid CSV schema: {e}", path.display()))?;
        // serde_yaml's message names the key path, line and column
        let schema: CsvSchema = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: invalid CSV schema", path.display()))?;
        schema
            .delimiter_byte()
            .with_context(|| path.display().to_string())?;
        Ok(schema)
    }

    pub(crate) fn delimiter_byte(&self) -> Result<u8> {
        let d = match self.delimiter.as_str() {
            "tab" | "\\t" => "\t",
            other => other,
        };
        match d.as_bytes() {
            [b] if b.is_ascii() && !matches!(*b, b'"' | b'\n' | b'\r') => Ok(*b),
            _ => bail!(
                "delimiter: expected one ASCII character other than a quote or newline \
                 (e.g. \",\", \"\\t\", \";\"), found {:?}",
                self.delimiter
            ),
        }
    }
}

/// Dense transforms as the parser applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DenseKind {
    /// Criteo: integers only.
    Log1pInt,
    Log1p,
    Identity,
    HourOfDay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CatKind {
    Raw,
    DayOfWeek,
    HourOfDay,
}

/// A format made concrete for one file.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub delimiter: u8,
    /// Whether `"` quoting (RFC 4180, no embedded newlines) is honoured.
    pub quotes: bool,
    pub column_names: Vec<String>,
    /// `None` only for serving rows that come without the label column.
    pub label: Option<usize>,
    pub dense: Vec<(usize, DenseKind)>,
    pub cats: Vec<(usize, CatKind)>,
    pub dense_names: Vec<String>,
    pub field_names: Vec<String>,
}

pub(crate) const CRITEO_DENSE: usize = 13;
pub(crate) const CRITEO_FIELDS: usize = 26;

impl Layout {
    pub(crate) fn criteo() -> Layout {
        let dense_names: Vec<String> = (1..=CRITEO_DENSE).map(|i| format!("I{i}")).collect();
        let field_names: Vec<String> = (1..=CRITEO_FIELDS).map(|i| format!("C{i}")).collect();
        let mut column_names = vec!["label".to_string()];
        column_names.extend(dense_names.iter().cloned());
        column_names.extend(field_names.iter().cloned());
        Layout {
            delimiter: b'\t',
            quotes: false,
            column_names,
            label: Some(0),
            dense: (1..=CRITEO_DENSE)
                .map(|c| (c, DenseKind::Log1pInt))
                .collect(),
            cats: (0..CRITEO_FIELDS)
                .map(|i| (1 + CRITEO_DENSE + i, CatKind::Raw))
                .collect(),
            dense_names,
            field_names,
        }
    }

    pub(crate) fn num_columns(&self) -> usize {
        self.column_names.len()
    }
}

/// Where a file's layout comes from, before its first line is seen.
pub(crate) struct FormatPlan {
    pub header: bool,
    pub delimiter: u8,
    pub quotes: bool,
    source: PlanSource,
}

enum PlanSource {
    Fixed(Layout),
    Schema { schema: CsvSchema, origin: String },
}

impl FormatPlan {
    pub(crate) fn load(format: &InputFormat) -> Result<FormatPlan> {
        let (schema, origin) = match format {
            InputFormat::Criteo => {
                let layout = Layout::criteo();
                return Ok(FormatPlan {
                    header: false,
                    delimiter: layout.delimiter,
                    quotes: false,
                    source: PlanSource::Fixed(layout),
                });
            }
            InputFormat::Avazu => (CsvSchema::avazu(), "the Avazu format".to_string()),
            InputFormat::Csv { schema } => (
                CsvSchema::from_yaml_file(schema)?,
                format!("schema {}", schema.display()),
            ),
        };
        Ok(FormatPlan {
            header: schema.header,
            delimiter: schema.delimiter_byte()?,
            quotes: true,
            source: PlanSource::Schema { schema, origin },
        })
    }

    /// `columns` are the header's names, or `None` with the column count of the first data line.
    pub(crate) fn layout(
        &self,
        header: Option<Vec<String>>,
        first_line_columns: usize,
        input: &Path,
    ) -> Result<Layout> {
        match &self.source {
            PlanSource::Fixed(layout) => Ok(layout.clone()),
            PlanSource::Schema { schema, origin } => {
                resolve(schema, origin, header, first_line_columns, input, self)
            }
        }
    }
}

fn resolve(
    schema: &CsvSchema,
    origin: &str,
    header: Option<Vec<String>>,
    first_line_columns: usize,
    input: &Path,
    plan: &FormatPlan,
) -> Result<Layout> {
    let named = header.is_some();
    let names = header.unwrap_or_else(|| {
        (1..=first_line_columns)
            .map(|i| format!("col{i}"))
            .collect()
    });
    let find = |r: &ColumnRef| -> Result<usize> {
        match r {
            ColumnRef::Number(n) if (1..=names.len()).contains(n) => Ok(n - 1),
            ColumnRef::Number(n) => bail!(
                "{origin}: column number {n} is out of range: {} has {} columns (numbers are \
                 1-based)",
                input.display(),
                names.len()
            ),
            ColumnRef::Name(s) if !named => bail!(
                "{origin}: refers to column {s:?} by name, but the file has no header \
                 (header: false); use 1-based column numbers"
            ),
            ColumnRef::Name(s) => {
                let mut at = names.iter().enumerate().filter(|(_, n)| *n == s);
                let (first, _) = at.next().with_context(|| {
                    format!(
                        "{}: line 1 (header): expected a column named {s:?} (required by \
                         {origin}); the header has: {}",
                        input.display(),
                        list_columns(&names)
                    )
                })?;
                if let Some((second, _)) = at.next() {
                    bail!(
                        "{}: line 1 (header): columns {} and {} are both named {s:?}, which \
                         {origin} refers to; rename one or refer to it by its 1-based number",
                        input.display(),
                        first + 1,
                        second + 1
                    );
                }
                Ok(first)
            }
        }
    };
    let label = find(&schema.label)?;
    let mut used = vec![false; names.len()];
    used[label] = true;
    for r in &schema.ignore {
        used[find(r)?] = true;
    }
    let parts = |spec: &ColumnSpec| match spec {
        ColumnSpec::Plain(c) => (c.clone(), None, None),
        ColumnSpec::Detailed {
            column,
            transform,
            name,
        } => (column.clone(), *transform, name.clone()),
    };
    let (mut dense, mut dense_names) = (vec![], vec![]);
    for spec in &schema.dense {
        let (col, transform, name) = parts(spec);
        let c = find(&col)?;
        if c == label {
            bail!("{origin}: {col} is the label and cannot also be a dense feature");
        }
        used[c] = true;
        let kind = match transform.unwrap_or(Transform::Log1p) {
            Transform::Log1p => DenseKind::Log1p,
            Transform::Identity => DenseKind::Identity,
            Transform::HourOfDay => DenseKind::HourOfDay,
            t => bail!(
                "{origin}: dense {col}: transform {t:?} is categorical-only; expected log1p, \
                 identity or hour_of_day"
            ),
        };
        dense.push((c, kind));
        dense_names.push(name.unwrap_or_else(|| names[c].clone()));
    }
    for (i, n) in dense_names.iter().enumerate() {
        if dense_names[..i].contains(n) {
            bail!("{origin}: two dense features are named {n:?}; list a column once, or give one a `name:`");
        }
    }
    let (mut cats, mut field_names) = (vec![], vec![]);
    for spec in &schema.categorical {
        let (col, transform, name) = parts(spec);
        let c = find(&col)?;
        if c == label {
            bail!("{origin}: {col} is the label and cannot also be a categorical feature");
        }
        used[c] = true;
        let (kind, suffix) = match transform.unwrap_or(Transform::Raw) {
            Transform::Raw => (CatKind::Raw, ""),
            Transform::DayOfWeek => (CatKind::DayOfWeek, "_weekday"),
            Transform::HourOfDay => (CatKind::HourOfDay, "_hour"),
            t => bail!(
                "{origin}: categorical {col}: transform {t:?} is dense-only; expected raw, \
                 day_of_week or hour_of_day"
            ),
        };
        cats.push((c, kind));
        field_names.push(name.unwrap_or_else(|| format!("{}{suffix}", names[c])));
    }
    if schema.remaining == Remaining::Categorical {
        for (c, name) in names.iter().enumerate() {
            if !used[c] {
                cats.push((c, CatKind::Raw));
                field_names.push(name.clone());
            }
        }
    }
    if cats.is_empty() {
        bail!("{origin}: declares no categorical columns; expected at least one");
    }
    for (i, n) in field_names.iter().enumerate() {
        if field_names[..i].contains(n) {
            bail!("{origin}: two categorical fields are named {n:?}; give one a `name:`");
        }
    }
    Ok(Layout {
        delimiter: plan.delimiter,
        quotes: plan.quotes,
        column_names: names,
        label: Some(label),
        dense,
        cats,
        dense_names,
        field_names,
    })
}

/// A header's column names for a message: each quoted and cut short (a binary or one-line
/// file can make a "header" of megabytes), at most 30 of them.
fn list_columns(names: &[String]) -> String {
    const MAX: usize = 30;
    let mut shown: Vec<String> = names
        .iter()
        .take(MAX)
        .map(|n| describe(n.as_bytes()))
        .collect();
    if names.len() > MAX {
        shown.push(format!("... ({} columns)", names.len()));
    }
    shown.join(", ")
}
