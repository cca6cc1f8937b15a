//! Malformed input is reported with file, line and column, so that one bad row among 45M can be
//! found with `sed -n LINEp`.
use std::path::{Path, PathBuf};

/// A malformed line (or file) in a raw input. Lines and columns are 1-based; the header, when there
/// is one, is line 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}: line {line}, column {column}{}: expected {expected}, found {found}",
    file.display(),
    column_name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
)]
pub struct InputError {
    pub file: PathBuf,
    pub line: u64,
    pub column: usize,
    pub column_name: Option<String>,
    pub expected: String,
    pub found: String,
}

/// What a line parser reports; the caller knows the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub column: usize,
    pub column_name: Option<String>,
    pub expected: String,
    pub found: String,
}

impl FieldError {
    pub(crate) fn at(self, file: &Path, line: u64) -> InputError {
        InputError {
            file: file.to_path_buf(),
            line,
            column: self.column,
            column_name: self.column_name,
            expected: self.expected,
            found: self.found,
        }
    }
}

/// Quote a raw value for a message, short and printable.
pub(crate) fn describe(value: &[u8]) -> String {
    if value.is_empty() {
        return "an empty value".to_string();
    }
    const MAX: usize = 40;
    let text = String::from_utf8_lossy(&value[..value.len().min(MAX)]);
    if value.len() > MAX {
        format!("{text:?}... ({} bytes)", value.len())
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn names_file_line_column_and_column_name() {
        let mut e = InputError {
            file: PathBuf::from("d/train.txt"),
            line: 7,
            column: 3,
            column_name: Some("I2".into()),
            expected: "an integer".into(),
            found: "\"x\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "d/train.txt: line 7, column 3 (I2): expected an integer, found \"x\""
        );
        e.column_name = None;
        assert_eq!(
            e.to_string(),
            "d/train.txt: line 7, column 3: expected an integer, found \"x\""
        );
    }
}
