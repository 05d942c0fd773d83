//! How an error shows a value the caller sent: quoted, with control characters
//! escaped and at most `MAX_ECHOED_CHARS` of it, so that a long or hostile
//! value can neither blow up a reply's headers nor a log line.

/// Characters of a caller's value an error repeats.
pub const MAX_ECHOED_CHARS: usize = 100;

/// `raw` quoted for an error message: `'abc'`, or `'abc…' (5000 characters)`.
pub fn quoted(raw: &str) -> String {
    let count = raw.chars().count();
    let shown: String = raw
        .chars()
        .take(MAX_ECHOED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if count > MAX_ECHOED_CHARS {
        format!("'{shown}…' ({count} characters)")
    } else {
        format!("'{shown}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(quoted("acme"), "'acme'");
        assert_eq!(quoted("a\nb"), "'a\\nb'");
        let long = "x".repeat(5000);
        let shown = quoted(&long);
        assert!(shown.len() < 130, "{shown}");
        assert!(shown.ends_with("…' (5000 characters)"), "{shown}");
    }
}
