//! How an error shows a value the caller sent: quoted, with control characters
//! escaped, card numbers masked and at most `MAX_ECHOED_CHARS` of it, so that a
//! long or hostile value can neither blow up a reply's headers nor a log line,
//! and a card number typed into an id reaches neither.

use super::mask_card_numbers;

/// Characters of a caller's value an error repeats.
pub const MAX_ECHOED_CHARS: usize = 100;

/// `raw` quoted for an error message: `'abc'`, or `'abc…' (5000 characters)`.
pub fn quoted(raw: &str) -> String {
    let count = raw.chars().count();
    // Masked before it is cut, so that no cut leaves part of a number showing.
    let masked = mask_card_numbers(raw);
    let shown: String = masked
        .chars()
        .take(MAX_ECHOED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if masked.chars().count() > MAX_ECHOED_CHARS {
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

    #[test]
    fn card_numbers_are_masked_even_where_the_value_is_cut() {
        assert_eq!(
            quoted("resources/4111 1111 1111 1111"),
            "'resources/•••• 1111'"
        );
        let long = format!("{}4111111111111111", "x".repeat(MAX_ECHOED_CHARS - 8));
        let shown = quoted(&long);
        assert!(!shown.contains("41111111"), "{shown}");
        assert!(shown.ends_with("x•••• 111…' (108 characters)"), "{shown}");
    }
}
