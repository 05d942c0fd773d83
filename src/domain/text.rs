//! Text that does not read as what it is: characters that do not show as
//! themselves, and names that show nothing at all. One rule for every name and
//! line of text orgd shows to people.

use icu_properties::props::DefaultIgnorableCodePoint;
use icu_properties::{CodePointSetData, CodePointSetDataBorrowed};

/// Characters that take no space when shown: zero-width spaces and joiners,
/// the byte order mark, variation selectors (Unicode's Default_Ignorable_Code_Point).
const IGNORABLE: CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<DefaultIgnorableCodePoint>();

/// Characters that do not show as themselves: control characters and the
/// bidirectional overrides that make text display differently than it reads.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` would show as blank: empty, or only white space and
/// characters that take no space, so that a name made of them reads as no name.
pub fn shows_nothing(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || IGNORABLE.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_width_and_blank_text_shows_nothing() {
        for blank in [
            "",
            "  \t",
            "\u{200b}\u{200b}\u{200b}",         // zero-width spaces
            "\u{200c}\u{200d}\u{2060}\u{feff}", // joiners, word joiner, BOM
            "\u{3000}\u{fe0f}",                 // ideographic space, variation selector
        ] {
            assert!(shows_nothing(blank), "{blank:?}");
        }
        for shown in ["a", "\u{200b}a\u{200b}", "🦀", "·"] {
            assert!(!shows_nothing(shown), "{shown:?}");
        }
    }
}
