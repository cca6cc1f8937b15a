//! libtorch's errors carry a C++ stack of a dozen or more `frame #…` lines and an `[enforce fail
//! at file.cc:N]` prefix; users need the one line that says what went wrong.

/// The first line of a libtorch error, without the enforce-location prefix.
pub(crate) fn brief(err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first
        .strip_prefix("Internal torch error: ")
        .unwrap_or(first);
    let first = match (first.starts_with("[enforce fail at"), first.find("] ")) {
        (true, Some(end)) => first[end + 2..].trim_start_matches(". "),
        _ => first,
    };
    first.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_message() {
        let e = "Internal torch error: [enforce fail at inline_container.cc:747] . open file \
                 failed with strerror: No such file or directory\nframe #0: c10::ThrowEnforce\n\
                 frame #1: <unknown function>";
        assert_eq!(
            brief(e),
            "open file failed with strerror: No such file or directory"
        );
        assert_eq!(brief("plain message"), "plain message");
    }
}
