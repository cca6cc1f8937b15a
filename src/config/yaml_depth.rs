//! A cheap pre-scan of YAML nesting. serde_yaml rejects documents nested deeper than 128 levels,
//! but only after loading every event of the document, which takes seconds and hundreds of MB
//! for a hostile file (`[[[[...`); this scan rejects them in one pass over the bytes.

/// Deeper than serde_yaml itself accepts, so no document it would load is refused here.
pub const MAX_DEPTH: usize = 128;

/// Fails (naming the line) when `text` nests block mappings/sequences and flow collections
/// deeper than `MAX_DEPTH` levels together. The count is an upper bound of YAML's own only where
/// both agree the document is far too deep; quoted strings, comments and block scalars (`|`,
/// `>`) are skipped.
pub fn check_depth(text: &str) -> Result<(), String> {
    // indentation of the open block levels
    let mut blocks: Vec<usize> = Vec::new();
    // a block scalar's lines are text: (indentation of the line that opened it)
    let mut scalar_of: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(owner) = scalar_of {
            if indent > owner {
                continue;
            }
            scalar_of = None;
        }
        while blocks.last().is_some_and(|&top| top >= indent) {
            blocks.pop();
        }
        blocks.push(indent);
        // `- - - x`: every dash opens one more level
        let mut rest = trimmed;
        let mut dashes = 0;
        while let Some(r) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            dashes += 1;
            rest = r.trim_start_matches(' ');
        }
        let flow = flow_depth(rest);
        if blocks.len() + dashes + flow.deepest > MAX_DEPTH {
            return Err(format!(
                "line {}: nested deeper than {MAX_DEPTH} levels; expected a flatter document",
                number + 1
            ));
        }
        if flow.open > 0 {
            // a flow collection spanning lines: count its levels on the following lines too
            return check_flow_rest(text, number, blocks.len() + dashes, flow.open);
        }
        if flow.block_scalar {
            scalar_of = Some(indent);
        }
    }
    Ok(())
}

struct Flow {
    /// The deepest bracket level reached on the line.
    deepest: usize,
    /// Brackets still open at its end.
    open: usize,
    /// The line ends in a block scalar indicator (`key: |`, `- >-`).
    block_scalar: bool,
}

fn flow_depth(line: &str) -> Flow {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let bytes = line.as_bytes();
    let mut last_token_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if i == 0 || bytes[i - 1] == b' ' => {
                    return finish(depth, deepest, &line[last_token_start..i]);
                }
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b' ' => last_token_start = i + 1,
                _ => {}
            },
        }
    }
    finish(depth, deepest, &line[last_token_start..])
}

fn finish(depth: usize, deepest: usize, last: &str) -> Flow {
    let last = last.trim();
    Flow {
        deepest,
        open: depth,
        block_scalar: depth == 0 && (last.starts_with('|') || last.starts_with('>')),
    }
}

/// Continues a flow collection left open at line `from` (0-based) with `base` block levels.
fn check_flow_rest(text: &str, from: usize, base: usize, open: usize) -> Result<(), String> {
    let mut depth = open;
    for (number, line) in text.lines().enumerate().skip(from + 1) {
        let mut quote: Option<u8> = None;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                    b'[' | b'{' => {
                        depth += 1;
                        if base + depth > MAX_DEPTH {
                            return Err(format!(
                                "line {}: nested deeper than {MAX_DEPTH} levels; expected a \
                                 flatter document",
                                number + 1
                            ));
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
        }
    }
    // past the collection the rest is left to serde_yaml, whose limit then applies
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        let text = "name: x\nmodel: {kind: dlrm, bottom_mlp: [512, 256]}\nruns:\n  - name: a\n    \
                    embedding: {dim: 4}\n  - - [1, [2, [3]]]\nnote: |\n  [[[[[[[[ text ]]\n\
                    quoted: \"[[[[[\"  # [[[[\n";
        assert_eq!(check_depth(text), Ok(()));
        let at_limit = format!(
            "a: {}{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check_depth(&at_limit), Ok(()));
        // serde_yaml loads it, so the scan must not refuse it
        assert!(serde_yaml::from_str::<serde_yaml::Value>(&format!(
            "a: {}{}",
            "[".repeat(100),
            "]".repeat(100)
        ))
        .is_ok());
        assert_eq!(
            check_depth(&format!("a: {}{}", "[".repeat(100), "]".repeat(100))),
            Ok(())
        );
    }

    #[test]
    fn deep_flow_block_and_multiline_nesting_is_refused_with_its_line() {
        let flow = format!("name: x\nmodel: {}{}\n", "[".repeat(1000), "]".repeat(1000));
        assert!(check_depth(&flow).unwrap_err().starts_with("line 2:"));
        let maps = format!("m: {}1{}", "{a: ".repeat(200), "}".repeat(200));
        assert!(check_depth(&maps).is_err());
        let block: String = (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert!(check_depth(&block).unwrap_err().starts_with("line 129:"));
        let dashes = format!("x:\n  {}1\n", "- ".repeat(200));
        assert!(check_depth(&dashes).is_err());
        let lines = format!("x: [\n{}\n", "[\n".repeat(200));
        assert!(check_depth(&lines).is_err());
        // each is also one serde_yaml refuses
        for text in [&flow, &maps, &block, &dashes] {
            assert!(serde_yaml::from_str::<serde_yaml::Value>(text).is_err());
        }
    }
}
