//! Turns one line of text into a `Record` (label, transformed dense values, categorical value
//! hashes), reporting the 1-based column and what was expected when the line is malformed.
use crate::data::error::{describe, FieldError};
use crate::data::hash::hash_bytes;
use crate::data::schema::{CatKind, DenseKind, Layout};
use std::borrow::Cow;

/// One parsed data line. Categorical values are kept only as hashes of their bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Record {
    pub label: f32,
    pub dense: Vec<f32>,
    pub cats: Vec<u64>,
}

/// Splits lines into columns: plain delimiter splitting, or RFC 4180 quoting within one line.
pub(crate) struct Splitter {
    delimiter: u8,
    quotes: bool,
    /// Column boundaries of the current line, into the line or into `unquoted`.
    spans: Vec<(usize, usize)>,
    unquoted: Vec<u8>,
    from_unquoted: bool,
}

impl Splitter {
    pub(crate) fn new(delimiter: u8, quotes: bool) -> Splitter {
        Splitter {
            delimiter,
            quotes,
            spans: Vec::new(),
            unquoted: Vec::new(),
            from_unquoted: false,
        }
    }

    /// Splits `line` into columns and returns how many there are.
    pub(crate) fn split(&mut self, line: &[u8]) -> Result<usize, FieldError> {
        split_into(
            line,
            self.delimiter,
            self.quotes,
            &mut self.spans,
            &mut self.unquoted,
            &mut self.from_unquoted,
        )?;
        Ok(self.spans.len())
    }

    /// Column `i` of the line last split (which must be passed again).
    pub(crate) fn column<'a>(&'a self, line: &'a [u8], i: usize) -> &'a [u8] {
        let (a, b) = self.spans[i];
        if self.from_unquoted {
            &self.unquoted[a..b]
        } else {
            &line[a..b]
        }
    }

    /// The columns of the line last split, as owned strings (for a header).
    pub(crate) fn columns_as_strings(&self, line: &[u8]) -> Vec<String> {
        (0..self.spans.len())
            .map(|i| String::from_utf8_lossy(self.column(line, i)).into_owned())
            .collect()
    }
}

pub(crate) struct LineParser {
    layout: Layout,
    splitter: Splitter,
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl LineParser {
    pub(crate) fn new(layout: Layout) -> LineParser {
        LineParser {
            splitter: Splitter::new(layout.delimiter, layout.quotes),
            layout,
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn new_record(&self) -> Record {
        Record {
            label: 0.0,
            dense: vec![0.0; self.layout.dense.len()],
            cats: vec![0; self.layout.cats.len()],
        }
    }

    /// Splits a line and returns its column count (used for lines that fail before parsing).
    pub(crate) fn count_columns(&mut self, line: &[u8]) -> usize {
        self.splitter.split(line).unwrap_or(1)
    }

    fn column<'a>(&'a self, line: &'a [u8], i: usize) -> &'a [u8] {
        self.splitter.column(line, i)
    }

    fn error(&self, column: usize, expected: &str, found: String) -> FieldError {
        FieldError {
            column: column + 1,
            column_name: self.layout.column_names.get(column).cloned(),
            expected: expected.to_string(),
            found,
        }
    }

    pub(crate) fn parse(&mut self, line: &[u8], rec: &mut Record) -> Result<(), FieldError> {
        let n = self.splitter.split(line)?;
        let want = self.layout.num_columns();
        if n != want {
            let delim = match self.layout.delimiter {
                b'\t' => "tab".to_string(),
                d => format!("{:?}", d as char),
            };
            return Err(FieldError {
                column: n.min(want) + 1,
                column_name: None,
                expected: format!("{want} {delim}-separated columns"),
                found: match n {
                    1 if line.is_empty() => "an empty line".to_string(),
                    1 if self.layout.delimiter == b'\t' && line.contains(&b',') => {
                        "1 column (no tabs, but commas: a CSV file? see --format csv)".to_string()
                    }
                    1 => "1 column".to_string(),
                    n => format!("{n} columns"),
                },
            });
        }
        // serving rows may come without the label column (the layout then has none)
        rec.label = match self.layout.label {
            None => 0.0,
            Some(label) => match trim(self.column(line, label)) {
                b"0" => 0.0,
                b"1" => 1.0,
                v => return Err(self.error(label, "a label 0 or 1", describe(v))),
            },
        };
        for (i, &(c, kind)) in self.layout.dense.iter().enumerate() {
            let v = trim(self.column(line, c));
            rec.dense[i] = match kind {
                DenseKind::Log1pInt => match parse_int(v) {
                    Some(x) => log1p_clamped(x.map_or(0.0, |x| x as f64)),
                    None => {
                        return Err(self.error(
                            c,
                            "an integer (or an empty value for missing)",
                            describe(v),
                        ))
                    }
                },
                DenseKind::Log1p | DenseKind::Identity => match parse_float(v) {
                    Some(x) if kind == DenseKind::Log1p => log1p_clamped(x.unwrap_or(0.0)),
                    Some(x) => x.unwrap_or(0.0) as f32,
                    None => {
                        return Err(self.error(
                            c,
                            "a finite number (or an empty value for missing)",
                            describe(v),
                        ))
                    }
                },
                DenseKind::HourOfDay => match parse_yymmddhh(v) {
                    Some((_, hour)) => hour as f32 / 23.0,
                    None => return Err(self.error(c, TIMESTAMP, describe(v))),
                },
            };
        }
        for (i, &(c, kind)) in self.layout.cats.iter().enumerate() {
            let v = self.column(line, c);
            rec.cats[i] = match cat_token(kind, v) {
                Some(token) => hash_bytes(&token),
                None => return Err(self.error(c, TIMESTAMP, describe(v))),
            };
        }
        Ok(())
    }

    /// The value of categorical field `field` in `line`, which must be the line last parsed
    /// successfully: the bytes whose hash `parse` recorded (for derived fields, the token).
    pub(crate) fn cat_value<'a>(&'a self, line: &'a [u8], field: usize) -> Cow<'a, [u8]> {
        let (c, kind) = self.layout.cats[field];
        cat_token(kind, self.column(line, c)).unwrap_or(Cow::Borrowed(b""))
    }
}

/// The categorical value a column holds: its bytes as they are (`Raw`), or the token derived
/// from a `YYMMDDHH` timestamp (`Mon`..`Sun`, `00`..`23`); `None` for a bad timestamp. The one
/// definition both the vocabulary and the cache's hashes come from.
pub(crate) fn cat_token(kind: CatKind, v: &[u8]) -> Option<Cow<'_, [u8]>> {
    match kind {
        CatKind::Raw => Some(Cow::Borrowed(v)),
        CatKind::DayOfWeek => {
            parse_yymmddhh(trim(v)).map(|(weekday, _)| Cow::Borrowed(WEEKDAYS[weekday].as_bytes()))
        }
        CatKind::HourOfDay => {
            parse_yymmddhh(trim(v)).map(|(_, hour)| Cow::Owned(format!("{hour:02}").into_bytes()))
        }
    }
}

const TIMESTAMP: &str = "a YYMMDDHH timestamp (8 digits, e.g. 14102100)";

/// `ln(1 + max(x, 0))`: DLRM's convention for Criteo's counts.
pub(crate) fn log1p_clamped(x: f64) -> f32 {
    x.max(0.0).ln_1p() as f32
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// `Some(None)` for empty (missing), `None` for not an integer.
fn parse_int(v: &[u8]) -> Option<Option<i64>> {
    if v.is_empty() {
        return Some(None);
    }
    std::str::from_utf8(v).ok()?.parse::<i64>().ok().map(Some)
}

fn parse_float(v: &[u8]) -> Option<Option<f64>> {
    if v.is_empty() {
        return Some(None);
    }
    let x = std::str::from_utf8(v).ok()?.parse::<f64>().ok()?;
    x.is_finite().then_some(Some(x))
}

/// (weekday with Monday = 0, hour) of a `YYMMDDHH` timestamp in 2000-2099.
fn parse_yymmddhh(v: &[u8]) -> Option<(usize, u32)> {
    if v.len() != 8 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |i: usize| u32::from(v[i] - b'0') * 10 + u32::from(v[i + 1] - b'0');
    let (year, month, day, hour) = (2000 + num(0) as i64, num(2), num(4), num(6));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] || hour > 23 {
        return None;
    }
    // Days since 1970-01-01 (H. Hinnant's days_from_civil); that day was a Thursday.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days + 3).rem_euclid(7) as usize, hour))
}

fn split_into(
    line: &[u8],
    delim: u8,
    quotes: bool,
    spans: &mut Vec<(usize, usize)>,
    unquoted: &mut Vec<u8>,
    from_unquoted: &mut bool,
) -> Result<(), FieldError> {
    spans.clear();
    if !quotes || !line.contains(&b'"') {
        *from_unquoted = false;
        let mut start = 0;
        for (i, &b) in line.iter().enumerate() {
            if b == delim {
                spans.push((start, i));
                start = i + 1;
            }
        }
        spans.push((start, line.len()));
        return Ok(());
    }
    // Slow path, RFC 4180 quoting within one line: copy unescaped columns into `unquoted`.
    *from_unquoted = true;
    unquoted.clear();
    let n = line.len();
    let mut i = 0;
    loop {
        let start = unquoted.len();
        if i < n && line[i] == b'"' {
            i += 1;
            loop {
                if i >= n {
                    return Err(FieldError {
                        column: spans.len() + 1,
                        column_name: None,
                        expected: "a closing quote '\"' before the end of the line".into(),
                        found: "the end of the line".into(),
                    });
                }
                if line[i] == b'"' {
                    if line.get(i + 1) == Some(&b'"') {
                        unquoted.push(b'"');
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    unquoted.push(line[i]);
                    i += 1;
                }
            }
            spans.push((start, unquoted.len()));
            if i == n {
                return Ok(());
            }
            if line[i] != delim {
                return Err(FieldError {
                    column: spans.len(),
                    column_name: None,
                    expected: "a delimiter after the closing quote".into(),
                    found: describe(&line[i..(i + 1)]),
                });
            }
            i += 1;
        } else {
            let end = line[i..]
                .iter()
                .position(|&b| b == delim)
                .map_or(n, |p| i + p);
            unquoted.extend_from_slice(&line[i..end]);
            spans.push((start, unquoted.len()));
            if end == n {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays() {
        // 2014-10-21 was a Tuesday (first day of Avazu), 2000-01-01 a Saturday.
        assert_eq!(parse_yymmddhh(b"14102100"), Some((1, 0)));
        assert_eq!(parse_yymmddhh(b"00010123"), Some((5, 23)));
        assert_eq!(parse_yymmddhh(b"14022900"), None);
        assert_eq!(parse_yymmddhh(b"1410210"), None);
    }

    #[test]
    fn quoted_columns() {
        let mut p = Splitter::new(b',', true);
        let line = br#"a,"b,c","d""e",,"""#;
        assert_eq!(p.split(line).unwrap(), 5);
        assert_eq!(p.columns_as_strings(line), vec!["a", "b,c", "d\"e", "", ""]);
        assert!(p.split(br#"a,"b"#).is_err());
        assert!(p.split(br#""a"b,c"#).is_err());
    }
}
