//! Malformed input is reported with file, line and column, so that one bad row among 45M can be
//! found with `sed -n LINEp`.
use std::fmt;
use std::path::{Path, PathBuf};

/// A malformed line (or file) in a raw input. Lines and columns are 1-based; the header, when there
/// is one, is line 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: PathBuf,
    pub line: u64,
    pub column: usize,
    pub column_name: Option<String>,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: line {}, column {}",
            self.file.display(),
            self.line,
            self.column
        )?;
        if let Some(name) = &self.column_name {
            write!(f, " ({name})")?;
        }
        write!(f, ": expected {}, found {}", self.expected, self.found)
    }
}

impl std::error::Error for InputError {}

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
