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
    /// Scratch: delimiter positions of the current line.
    cuts: Vec<usize>,
    unquoted: Vec<u8>,
    from_unquoted: bool,
}

impl Splitter {
    pub(crate) fn new(delimiter: u8, quotes: bool) -> Splitter {
        Splitter {
            delimiter,
            quotes,
            spans: Vec::new(),
            cuts: Vec::new(),
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
            &mut self.cuts,
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
    /// `log1p_clamped(i)` for small non-negative integers, the most common dense values: a
    /// lookup is several times cheaper than the logarithm and gives the same bits.
    log1p_small: Vec<f32>,
}

/// Integers below this take their `log1p` from the table.
const LOG1P_TABLE: usize = 1 << 12;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl LineParser {
    pub(crate) fn new(layout: Layout) -> LineParser {
        LineParser {
            splitter: Splitter::new(layout.delimiter, layout.quotes),
            layout,
            log1p_small: (0..LOG1P_TABLE).map(|i| log1p_clamped(i as f64)).collect(),
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
        self.parse_into(line, &mut rec.label, &mut rec.dense, &mut rec.cats)
    }

    /// `log1p_clamped(n)`, from the table for small non-negative `n`.
    fn log1p_int(&self, n: i64) -> f32 {
        match usize::try_from(n) {
            Ok(i) if i < LOG1P_TABLE => self.log1p_small[i],
            _ => log1p_clamped(n as f64),
        }
    }

    /// `parse` into slices (`dense` and `cats` of the layout's lengths), so that a caller can
    /// parse many lines into flat arrays.
    pub(crate) fn parse_into(
        &mut self,
        line: &[u8],
        label_out: &mut f32,
        dense_out: &mut [f32],
        cats_out: &mut [u64],
    ) -> Result<(), FieldError> {
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
        *label_out = match self.layout.label {
            None => 0.0,
            Some(label) => match trim(self.column(line, label)) {
                b"0" => 0.0,
                b"1" => 1.0,
                v => return Err(self.error(label, "a label 0 or 1", describe(v))),
            },
        };
        for (i, &(c, kind)) in self.layout.dense.iter().enumerate() {
            let v = trim(self.column(line, c));
            dense_out[i] = match kind {
                DenseKind::Log1pInt => match parse_int(v) {
                    Some(x) => self.log1p_int(x.unwrap_or(0)),
                    None => {
                        return Err(self.error(
                            c,
                            "an integer (or an empty value for missing)",
                            describe(v),
                        ))
                    }
                },
                DenseKind::Log1p | DenseKind::Identity => match (kind, plain_digits(v)) {
                    // plain digits are an exact integer: the table gives the same bits
                    (DenseKind::Log1p, Some(n)) => self.log1p_int(n),
                    _ => match parse_float(v) {
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
                },
                DenseKind::HourOfDay => match parse_yymmddhh(v) {
                    Some((_, hour)) => hour as f32 / 23.0,
                    None => return Err(self.error(c, TIMESTAMP, describe(v))),
                },
            };
        }
        for (i, &(c, kind)) in self.layout.cats.iter().enumerate() {
            let v = self.column(line, c);
            cats_out[i] = match cat_token(kind, v) {
                Some(token) => hash_bytes(&token),
                None => return Err(self.error(c, TIMESTAMP, describe(v))),
            };
        }
        Ok(())
    }

    /// The error of a last line that ends without a newline.
    pub(crate) fn unterminated(&mut self, line: &[u8]) -> FieldError {
        let columns = self.count_columns(line);
        FieldError {
            column: columns,
            column_name: self.layout.column_names.get(columns - 1).cloned(),
            expected: "a newline at the end of the line (the file ends mid-line: is it \
                       truncated?)"
                .into(),
            found: "the end of the file".into(),
        }
    }

    /// The value of categorical field `field` in `line`, which must be the line last parsed
    /// successfully: the bytes whose hash `parse` recorded (for derived fields, the token).
    pub(crate) fn cat_value<'a>(&'a self, line: &'a [u8], field: usize) -> Cow<'a, [u8]> {
        let (c, kind) = self.layout.cats[field];
        cat_token(kind, self.column(line, c)).unwrap_or(Cow::Borrowed(b""))
    }
}

/// The lines of a block parsed into flat arrays, as a worker thread of `prepare` fills them: the
/// good lines' labels, dense values and value hashes, and the bad lines' errors.
#[derive(Debug, Default)]
pub(crate) struct ParsedLines {
    /// Lines in the block, good and bad.
    pub lines: usize,
    pub labels: Vec<f32>,
    /// Row-major, `num_dense` per good line.
    pub dense: Vec<f32>,
    /// Field-major (`cats[f * rows + r]`), a hash per categorical field per good line: the
    /// consumer looks values up a field at a time.
    pub cats: Vec<u64>,
    /// Row-major hashes while parsing.
    row_cats: Vec<u64>,
    /// Where each good line's text is in the block (to read its values again).
    pub spans: Vec<(usize, usize)>,
    /// The malformed lines: index among the block's lines, and what is wrong; in order.
    pub bad: Vec<(usize, FieldError)>,
}

impl ParsedLines {
    /// Parses every line of `block` (lines end with `\n`, a `\r` before it is dropped; a last
    /// line without `\n` is malformed: the file ends mid-line).
    pub(crate) fn parse(&mut self, parser: &mut LineParser, block: &[u8]) {
        let (nd, nf) = (parser.layout.dense.len(), parser.layout.cats.len());
        self.lines = 0;
        self.labels.clear();
        self.dense.clear();
        self.row_cats.clear();
        self.spans.clear();
        self.bad.clear();
        let mut start = 0;
        while start < block.len() {
            let (end, terminated) = match memchr::memchr(b'\n', &block[start..]) {
                Some(i) => (start + i, true),
                None => (block.len(), false),
            };
            let mut line = &block[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let row = self.labels.len();
            self.labels.push(0.0);
            self.dense.resize((row + 1) * nd, 0.0);
            self.row_cats.resize((row + 1) * nf, 0);
            let result = if terminated {
                parser.parse_into(
                    line,
                    &mut self.labels[row],
                    &mut self.dense[row * nd..],
                    &mut self.row_cats[row * nf..],
                )
            } else {
                Err(parser.unterminated(line))
            };
            match result {
                Ok(()) => self.spans.push((start, start + line.len())),
                Err(e) => {
                    self.labels.truncate(row);
                    self.dense.truncate(row * nd);
                    self.row_cats.truncate(row * nf);
                    self.bad.push((self.lines, e));
                }
            }
            self.lines += 1;
            start = end + 1;
        }
        let rows = self.labels.len();
        self.cats.clear();
        self.cats.resize(rows * nf, 0);
        for (r, row) in self.row_cats.chunks_exact(nf.max(1)).enumerate() {
            for (f, &h) in row.iter().enumerate() {
                self.cats[f * rows + r] = h;
            }
        }
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

/// The value of up to 15 plain decimal digits (below 2^53, so exact as an `f64` too), the
/// common case that needs neither UTF-8 checks nor the general parsers.
fn plain_digits(v: &[u8]) -> Option<i64> {
    if v.is_empty() || v.len() > 15 {
        return None;
    }
    let mut n = 0i64;
    for &b in v {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + i64::from(d);
    }
    Some(n)
}

/// `Some(None)` for empty (missing), `None` for not an integer.
fn parse_int(v: &[u8]) -> Option<Option<i64>> {
    if v.is_empty() {
        return Some(None);
    }
    if let Some(n) = plain_digits(v) {
        return Some(Some(n));
    }
    std::str::from_utf8(v).ok()?.parse::<i64>().ok().map(Some)
}

fn parse_float(v: &[u8]) -> Option<Option<f64>> {
    if v.is_empty() {
        return Some(None);
    }
    if let Some(n) = plain_digits(v) {
        // exact: what `str::parse::<f64>` returns for these digits
        return Some(Some(n as f64));
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

/// Writes the positions of `delim` in `line` to `cuts[..n]` and returns `n`. Eight bytes at a
/// time: a word's delimiters become a bit mask, and its first two positions are written whether
/// they exist or not (a third or more take a loop), so there is no branch per byte or per
/// column, which would be mispredicted at about every column.
fn delimiter_positions(line: &[u8], delim: u8, cuts: &mut Vec<usize>) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    if cuts.len() < line.len() + 2 {
        cuts.resize(line.len() + 2, 0);
    }
    // a slice: its length stays in a register (a `Vec`'s would be reloaded after each store)
    let cuts = &mut cuts[..line.len() + 2];
    let pattern = u64::from_ne_bytes([delim; 8]);
    let position = |base: usize, mask: u64| base + (mask.trailing_zeros() as usize >> 3);
    let mut n = 0;
    let mut words = line.chunks_exact(8);
    for (k, w) in (&mut words).enumerate() {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ pattern;
        // 0x80 in each byte of `x` that is zero (exact: no carry crosses a byte)
        let mut mask = !((x & LOW7).wrapping_add(LOW7) | x | LOW7);
        // the number of delimiters: the bytes' top bits, moved to the bottom and summed into
        // the highest byte (`count_ones` is a long sequence on x86_64 CPUs without POPCNT)
        let count = ((mask >> 7).wrapping_mul(0x0101_0101_0101_0101) >> 56) as usize;
        let base = 8 * k;
        cuts[n] = position(base, mask);
        mask &= mask.wrapping_sub(1);
        cuts[n + 1] = position(base, mask);
        for j in 2..count {
            mask &= mask.wrapping_sub(1);
            cuts[n + j] = position(base, mask);
        }
        n += count;
    }
    let base = line.len() - words.remainder().len();
    for (i, &b) in words.remainder().iter().enumerate() {
        cuts[n] = base + i;
        n += usize::from(b == delim);
    }
    n
}

fn split_into(
    line: &[u8],
    delim: u8,
    quotes: bool,
    spans: &mut Vec<(usize, usize)>,
    cuts: &mut Vec<usize>,
    unquoted: &mut Vec<u8>,
    from_unquoted: &mut bool,
) -> Result<(), FieldError> {
    spans.clear();
    if !quotes || !line.contains(&b'"') {
        *from_unquoted = false;
        let n = delimiter_positions(line, delim, cuts);
        let mut start = 0;
        spans.extend(cuts[..n].iter().map(|&end| {
            let span = (start, end);
            start = end + 1;
            span
        }));
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
    fn fast_number_paths_equal_the_general_parsers() {
        let cases = [
            "0",
            "7",
            "00042",
            "4095",
            "4096",
            "65535",
            "999999999999999",
            "1000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-0",
            "-3",
            "+5",
            "1.5",
            "1e3",
            "x",
            "",
            "0x10",
            "١٢",
        ];
        for v in cases {
            let general_int = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            let general_float = v.parse::<f64>().ok().filter(|x| x.is_finite());
            if v.is_empty() {
                assert_eq!(parse_int(b""), Some(None));
                assert_eq!(parse_float(b""), Some(None));
                continue;
            }
            assert_eq!(parse_int(v.as_bytes()), general_int.map(Some), "{v}");
            assert_eq!(
                parse_float(v.as_bytes()).map(|x| x.map(f64::to_bits)),
                general_float.map(|x| Some(x.to_bits())),
                "{v}"
            );
        }
        let parser = LineParser::new(Layout::criteo());
        for n in (-3..LOG1P_TABLE as i64 + 3).chain([1 << 40, i64::MIN, i64::MAX]) {
            assert_eq!(
                parser.log1p_int(n).to_bits(),
                log1p_clamped(n as f64).to_bits(),
                "{n}"
            );
        }
    }

    #[test]
    fn delimiter_positions_are_exact() {
        let mut x = 12345u64;
        let mut cuts = Vec::new();
        for len in 0..300 {
            for delim in [b'\t', b',', b';', 0x7f, 0] {
                let line: Vec<u8> = (0..len)
                    .map(|_| {
                        x = crate::data::hash::mix64(x + 1);
                        // about a third delimiters, the rest any byte (high ones too)
                        if x.is_multiple_of(3) {
                            delim
                        } else {
                            (x >> 8) as u8
                        }
                    })
                    .collect();
                let want: Vec<usize> = (0..len).filter(|&i| line[i] == delim).collect();
                let n = delimiter_positions(&line, delim, &mut cuts);
                assert_eq!(&cuts[..n], &want[..], "{line:?}");
            }
        }
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
