//! Byte-level line reading: no UTF-8 requirement, `\r\n` accepted, and a last line without a
//! newline is flagged so that a truncated download is not silently half-parsed.
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

const BUF_BYTES: usize = 1 << 20;

pub(crate) struct LineReader {
    reader: BufReader<Box<dyn Read>>,
    buf: Vec<u8>,
    /// 1-based number of the line last returned.
    pub number: u64,
    pub bytes_read: u64,
}

pub(crate) struct Line<'a> {
    pub text: &'a [u8],
    pub number: u64,
    /// False only for a last line that ends without `\n`.
    pub terminated: bool,
}

impl LineReader {
    pub(crate) fn open(path: &Path) -> io::Result<LineReader> {
        Ok(LineReader::from_reader(Box::new(File::open(path)?)))
    }

    /// Lines of any stream (stdin for `mlet predict --input -`).
    pub(crate) fn from_reader(reader: Box<dyn Read>) -> LineReader {
        LineReader {
            reader: BufReader::with_capacity(BUF_BYTES, reader),
            buf: Vec::with_capacity(1024),
            number: 0,
            bytes_read: 0,
        }
    }

    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.bytes_read += n as u64;
        let mut text = &self.buf[..];
        let terminated = text.last() == Some(&b'\n');
        if terminated {
            text = &text[..text.len() - 1];
        }
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        Ok(Some(Line {
            text,
            number: self.number,
            terminated,
        }))
    }
}

/// Number of lines (a last line without `\n` counts), by scanning bytes only.
pub(crate) fn count_lines(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; BUF_BYTES];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}
