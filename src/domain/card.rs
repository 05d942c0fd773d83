//! Raw card numbers (PANs) must never be stored or logged: holding one would put
//! orgd in PCI DSS scope. Payment data reaches orgd only as the payment
//! processor's token plus display data (brand, last four digits), so free text
//! that contains a card number is refused, and any other text that orgd repeats
//! in an error shows a card number masked.

use std::borrow::Cow;
use std::ops::{ControlFlow, Range, RangeInclusive};
use std::sync::LazyLock;

use icu_properties::props::GeneralCategory;
use icu_properties::{CodePointMapData, CodePointMapDataBorrowed};

use crate::error::{Error, Result};

/// Card numbers are 13 to 19 digits long.
const PAN_LENGTHS: RangeInclusive<usize> = 13..=19;
const LONGEST_PAN: usize = *PAN_LENGTHS.end();

/// The issuer identification number (IIN) ranges card numbers start with, as
/// (lowest, highest) prefix of as many digits as `lowest` has: the
/// international brands and the domestic ones that share their number space.
/// Digit strings of card length that start elsewhere (with 0, 1, 7 or 9, as
/// many account ids and phone numbers do) are not card numbers.
const IIN_RANGES: &[(u32, u32)] = &[
    (2200, 2204), // Mir
    (2221, 2720), // Mastercard
    (300, 305),   // Diners Club
    (34, 34),     // American Express
    (3528, 3589), // JCB
    (36, 39),     // Diners Club (36, 38, 39), American Express (37)
    (4, 4),       // Visa
    (5, 5),       // Maestro (50, 56–59), Mastercard (51–55)
    // Discover (6011, 644–649, 65), UnionPay (62), RuPay (60, 65), Maestro (6…)
    (6, 6),
    (81, 82), // UnionPay (81), RuPay (81, 82)
];

/// Whether `text` contains a card number: 13–19 digits that start in an
/// issuer's range (`IIN_RANGES`) and pass the Luhn check.
///
/// The text is read as a person sees it: any Unicode decimal digit counts as
/// its value (fullwidth "４", Arabic-Indic "٤", Devanagari "४"…), characters
/// that take no space of their own (zero-width spaces, joiners, combining
/// marks) are passed over, and digits may be written in groups ("3782 822463
/// 10005"). Between two groups may stand any spaces and tabs and up to two
/// other characters that are neither letters nor digits ("4242 / 4242",
/// "4242--4242", a line break). Resource ids (UUIDs) are not card numbers and
/// are skipped.
///
/// A candidate starts and ends where groups do, so "No. 5 4242 4242 4242
/// 4242" is found but a list of short numbers is not read as one; within a
/// group longer than any card number, where a card number glued to other
/// digits has no group to start at, it may start and end anywhere. Not every
/// stretch of every run: about one in ten digit strings passes Luhn, so most
/// lists of numbers would hold one somewhere. Within these rules it errs
/// towards refusing, because a person can reword a refused text while a stored
/// card number cannot be taken back out of backups and logs.
///
/// A group of more than `MAX_EXAMINED_GROUP` digits is taken to hold one
/// without checking its stretches: of its hundreds of stretches of card length
/// several start in an issuer's range and pass Luhn, so only a crafted group
/// has none, and checking them all would cost a megabyte of digits millions of
/// checks. Screening thus stays one pass over the text.
pub fn contains_card_number(text: &str) -> bool {
    scan(text, &mut |_| ControlFlow::Break(())).is_break()
}

/// `text` with every card number in it (as [`contains_card_number`] finds
/// them) masked but for its last four digits, "•••• 0005": for repeating in an
/// error text that was not screened, such as an id or a resource name.
pub fn mask_card_numbers(text: &str) -> Cow<'_, str> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    let _ = scan(text, &mut |span| {
        spans.push(span);
        ControlFlow::Continue(())
    });
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    // Candidates overlap ("4242 4242 4242 4242 4242"): mask their union.
    spans.sort_by_key(|span| span.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    let mut masked = String::with_capacity(text.len());
    let mut shown = 0;
    for span in merged {
        masked.push_str(&text[shown..span.start]);
        let digits: Vec<char> = text[span.clone()]
            .chars()
            .filter_map(|c| match read(c) {
                Reading::Digit(d) => Some(char::from(b'0' + d)),
                _ => None,
            })
            .collect();
        masked.push_str("•••• ");
        masked.extend(&digits[digits.len() - 4..]);
        shown = span.end;
    }
    masked.push_str(&text[shown..]);
    Cow::Owned(masked)
}

/// Refuses `value` if it contains a card number. The message never repeats the
/// value: an error travels into logs and traces, and the number with it.
pub fn refuse_card_numbers(field: &str, value: &str) -> Result<()> {
    if contains_card_number(value) {
        return Err(card_number_refusal(field));
    }
    Ok(())
}

/// The refusal of a field that holds a card number; it names the field only.
pub fn card_number_refusal(field: &str) -> Error {
    Error::invalid(
        field,
        "this looks like a card number; orgd never stores card numbers: send the payment processor's token (e.g. pm_…) and display data instead",
    )
}

/// The longest group of digits whose stretches are each checked.
const MAX_EXAMINED_GROUP: usize = 64;

/// How many characters other than spaces may stand between two groups.
const MAX_GAP_MARKS: usize = 2;

/// Calls `found` with the byte range of each card number in `text` (ranges may
/// overlap), until it breaks.
fn scan(text: &str, found: &mut dyn FnMut(Range<usize>) -> ControlFlow<()>) -> ControlFlow<()> {
    // Most texts (names, ids, slugs) cannot hold that many digits: every
    // non-ASCII character has one byte of 0xC0 or more.
    let possible_digits = text
        .bytes()
        .filter(|b| b.is_ascii_digit() || *b >= 0xC0)
        .count();
    if possible_digits < *PAN_LENGTHS.start() {
        return ControlFlow::Continue(());
    }
    let mut run = Run::default();
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        if is_uuid_at(text.as_bytes(), at) {
            run.end(found)?;
            at += UUID_LEN;
            continue;
        }
        let next = at + c.len_utf8();
        match read(c) {
            Reading::Digit(value) => run.digit(value, at..next),
            Reading::Invisible => {}
            Reading::Space => run.gap(false, found)?,
            Reading::Mark => run.gap(true, found)?,
            Reading::Word => run.end(found)?,
        }
        at = next;
    }
    run.end(found)
}

/// What a character is to the screen.
enum Reading {
    /// A decimal digit of any script, with its value.
    Digit(u8),
    /// Takes no space of its own: format characters such as the zero-width
    /// space (Unicode category Cf) and combining marks (Mn, Me).
    Invisible,
    /// A space or a tab.
    Space,
    /// Punctuation, symbols, line breaks: may stand between groups.
    Mark,
    /// A letter or another kind of number: ends a run of digits.
    Word,
}

const CATEGORY: CodePointMapDataBorrowed<'static, GeneralCategory> =
    CodePointMapData::<GeneralCategory>::new();

fn read(c: char) -> Reading {
    if c.is_ascii() {
        return match c {
            '0'..='9' => Reading::Digit(c as u8 - b'0'),
            ' ' | '\t' => Reading::Space,
            c if c.is_ascii_alphabetic() => Reading::Word,
            _ => Reading::Mark,
        };
    }
    match CATEGORY.get(c) {
        GeneralCategory::DecimalNumber => Reading::Digit(digit_value(c)),
        GeneralCategory::Format
        | GeneralCategory::NonspacingMark
        | GeneralCategory::EnclosingMark => Reading::Invisible,
        GeneralCategory::SpaceSeparator => Reading::Space,
        _ if c.is_alphanumeric() => Reading::Word,
        _ => Reading::Mark,
    }
}

/// Where each run of consecutive decimal digits (Unicode category Nd) starts,
/// in order. Unicode encodes every set of decimal digits as ten consecutive
/// code points from 0 to 9, so a run is whole sets and starts with a zero.
static DIGIT_RUNS: LazyLock<Vec<u32>> = LazyLock::new(|| {
    CATEGORY
        .iter_ranges_for_value(GeneralCategory::DecimalNumber)
        .map(|range| *range.start())
        .collect()
});

/// The value of a decimal digit `c` (category Nd) of any script.
fn digit_value(c: char) -> u8 {
    let runs = &*DIGIT_RUNS;
    let zero = runs[runs.partition_point(|&start| start <= u32::from(c)) - 1];
    ((u32::from(c) - zero) % 10) as u8
}

/// A digit read, with where it stands in the text.
struct Digit {
    value: u8,
    at: Range<usize>,
    /// Whether a card number may start here; known once its group ends.
    may_start: bool,
}

/// Digits read so far, joined across gaps into groups.
#[derive(Default)]
struct Run {
    /// The current group's digits (at most `MAX_EXAMINED_GROUP`), after the
    /// last digits of the groups before it that a card number may still
    /// start at.
    digits: Vec<Digit>,
    /// Where the current group starts in `digits`.
    group: usize,
    /// The current group's length, counted on past `MAX_EXAMINED_GROUP`.
    group_len: usize,
    /// Where the last digit read ends in the text.
    last_end: usize,
    /// Whether the current group has ended and a gap follows.
    in_gap: bool,
    /// Characters other than spaces in the gap.
    gap_marks: usize,
}

impl Run {
    fn digit(&mut self, value: u8, at: Range<usize>) {
        if self.in_gap {
            self.in_gap = false;
            self.gap_marks = 0;
            self.group = self.digits.len();
            self.group_len = 0;
        }
        self.group_len += 1;
        self.last_end = at.end;
        if self.group_len <= MAX_EXAMINED_GROUP {
            self.digits.push(Digit {
                value,
                at,
                may_start: false,
            });
        }
    }

    fn gap(
        &mut self,
        mark: bool,
        found: &mut dyn FnMut(Range<usize>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.digits.is_empty() {
            return ControlFlow::Continue(());
        }
        if !self.in_gap {
            self.in_gap = true;
            self.end_group(found)?;
        }
        if mark {
            self.gap_marks += 1;
            if self.gap_marks > MAX_GAP_MARKS {
                self.clear();
            }
        }
        ControlFlow::Continue(())
    }

    fn end(&mut self, found: &mut dyn FnMut(Range<usize>) -> ControlFlow<()>) -> ControlFlow<()> {
        if !self.digits.is_empty() && !self.in_gap {
            self.end_group(found)?;
        }
        self.clear();
        ControlFlow::Continue(())
    }

    /// Checks every card number that may end in the group just ended.
    fn end_group(
        &mut self,
        found: &mut dyn FnMut(Range<usize>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let (group, len) = (self.group, self.digits.len());
        if self.group_len > MAX_EXAMINED_GROUP {
            let span = self.digits[group].at.start..self.last_end;
            self.clear();
            return found(span);
        }
        let glued = len - group > LONGEST_PAN;
        for (i, digit) in self.digits[group..].iter_mut().enumerate() {
            digit.may_start = i == 0 || glued;
        }
        let ends = if glued {
            group + 1..len + 1
        } else {
            len..len + 1
        };
        for end in ends {
            // The Luhn sums of the stretches ending here, a digit longer each
            // step, so that a group costs each digit a few additions.
            let mut sum = 0;
            for (from_right, start) in (end.saturating_sub(LONGEST_PAN)..end).rev().enumerate() {
                sum += luhn_value(self.digits[start].value, from_right % 2 == 1);
                let candidate = &self.digits[start..end];
                if PAN_LENGTHS.contains(&candidate.len())
                    && sum.is_multiple_of(10)
                    && candidate[0].may_start
                    && is_issued(candidate)
                {
                    found(candidate[0].at.start..candidate[candidate.len() - 1].at.end)?;
                }
            }
        }
        // Later groups can only extend card numbers starting in the last digits.
        self.digits.drain(..len.saturating_sub(LONGEST_PAN - 1));
        ControlFlow::Continue(())
    }

    /// Starts a new run, keeping the buffer.
    fn clear(&mut self) {
        self.digits.clear();
        self.group = 0;
        self.group_len = 0;
        self.in_gap = false;
        self.gap_marks = 0;
    }
}

/// Whether `digits` start in an issuer's range.
fn is_issued(digits: &[Digit]) -> bool {
    IIN_RANGES.iter().any(|&(lowest, highest)| {
        let width = lowest.ilog10() as usize + 1;
        let prefix = digits[..width]
            .iter()
            .fold(0, |n, digit| n * 10 + u32::from(digit.value));
        (lowest..=highest).contains(&prefix)
    })
}

/// What a digit adds to the Luhn sum, whose total a card number's last digit
/// makes a multiple of ten: every second digit from the right counts doubled,
/// less 9 when that is two digits.
fn luhn_value(digit: u8, doubled: bool) -> u32 {
    match (doubled, u32::from(digit) * 2) {
        (false, _) => u32::from(digit),
        (true, twice) if twice > 9 => twice - 9,
        (true, twice) => twice,
    }
}

const UUID_LEN: usize = 36;

/// Whether a UUID (8-4-4-4-12 hex digits) starts at byte `at` of `bytes`: an
/// id that happens to be mostly digits is not a card number.
fn is_uuid_at(bytes: &[u8], at: usize) -> bool {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let mut i = at;
    for (n, len) in SHAPE.iter().enumerate() {
        if n > 0 {
            if bytes.get(i) != Some(&b'-') {
                return false;
            }
            i += 1;
        }
        for _ in 0..*len {
            if !bytes.get(i).is_some_and(u8::is_ascii_hexdigit) {
                return false;
            }
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_too_long_to_examine_is_refused_in_one_pass() {
        // No card number starts with a 1: a group of ones of a megabyte would
        // otherwise be checked stretch by stretch.
        let ones = "1".repeat(MAX_EXAMINED_GROUP);
        assert!(!contains_card_number(&ones), "64 ones hold no card number");
        assert!(contains_card_number(&format!("{ones}1")));
        assert!(contains_card_number(&"1".repeat(1 << 20)));
        assert_eq!(mask_card_numbers(&format!("id {ones}1.")), "id •••• 1111.");
    }

    #[test]
    fn finds_card_numbers_as_people_type_them() {
        for text in [
            "4242424242424242",
            "4111 1111 1111 1111",
            "4242-4242-4242-4242",
            "378282246310005",     // American Express, 15 digits
            "3782 822463 10005",   // as printed on it
            "6011111111111117",    // Discover
            "5555555555554444",    // Mastercard
            "2223003122003222",    // Mastercard's 2-series
            "3566002020360505",    // JCB
            "30569309025904",      // Diners Club, 14 digits
            "6200000000000005",    // UnionPay
            "4222222222222",       // Visa, 13 digits
            "4111111111111111110", // 19 digits
            "my card is 4242 4242 4242 4242, thanks",
            "Main St 1, card:4242-4242 4242-4242 exp 12/29",
            "94242424242424242123", // 20 digits embedding a valid 16
            "x4242424242424242y",
            "No. 5 4242 4242 4242 4242", // a house number before the groups
            "5 4242424242424242",
            "4242 4242 4242 4242 1", // and one after them
            "4242  4242  4242  4242",
            "4242--4242--4242--4242",
            "4242.4242.4242.4242",
            "4242_4242_4242_4242",
            "4242/4242/4242/4242",
            "4242\u{a0}4242\u{a0}4242\u{a0}4242", // no-break spaces
            "4242\n4242\n4242\n4242",
            // Beside an id, which is skipped, and after multi-byte characters.
            "members/01234567-1234-7234-8234-424242424242 4242 4242 4242 4242",
            "01234567-1234-7234-8234-4242424242424242424242424242",
            "café № 4242424242424242",
        ] {
            assert!(contains_card_number(text), "{text:?} should be found");
        }
    }

    #[test]
    fn reads_digits_and_gaps_as_a_person_sees_them() {
        for text in [
            "3782   822463   10005",                            // wide gaps
            "4111 / 1111 / 1111 / 1111",                        // groups split by " / "
            "4111 - 1111 - 1111 - 1111",                        // and by " - "
            "4111\t1111\t\t1111\t1111",                         // tabs
            "4111\u{3000}1111\u{2009}1111 1111",                // ideographic and thin spaces
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",         // zero-width spaces
            "4\u{200c}1\u{200d}1\u{2060}1\u{feff}111111111111", // joiners, BOM
            "4\u{ad}111 1111 1111 1111",                        // a soft hyphen
            "4\u{332}1\u{332}1\u{332}1\u{332}111111111111",     // combining underlines
            "４１１１ １１１１ １１１１ １１１１",              // fullwidth
            "٤١١١ ١١١١ ١١١١ ١١١١",                              // Arabic-Indic
            "۴۱۱۱۱۱۱۱۱۱۱۱۱۱۱۱",                                 // Extended Arabic-Indic (Persian)
            "४१११ ११११११११११११",                                // Devanagari
            "𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏",                                 // mathematical bold
            "4111 １１１１ ١١١١ 1111",                          // mixed
        ] {
            assert!(contains_card_number(text), "{text:?} should be found");
        }
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for text in [
            "",
            "4242424242424241",    // fails Luhn (though parts of it pass)
            "1234 5678 9012 3456", // no issuer starts with 1
            "100000000008",        // a 12-digit cloud account id, Luhn-valid
            "491510000004",        // 12 digits are too few, Visa prefix or not
            "7000000000000001",    // Luhn-valid, but no card starts with 7
            "9000000000000008",
            "0000000000000000",
            "+1 415 555 0100", // a phone number
            "+44 20 7946 0958",
            "pm_1234",
            "card ending 4242, visa",
            "2024-01-15",
            "15.01.2024 to 15.02.2024",
            "2024-01-15 - 2024-02-15",
            // Groups separated by more than spaces and two other characters.
            "4111 ... 1111 ... 1111 ... 1111",
            "4111\n\n\n1111\n\n\n1111\n\n\n1111",
            "4111 x 1111 x 1111 x 1111",
            "4111½1111½1111½1111",
            // A list of numbers longer than any card number is not refused for
            // its length: its stretches of whole numbers are checked.
            "192.168.10.11, 192.168.10.12, 192.168.10.13, 192.168.10.14, 192.168.10.15, 192.168.10.16, 192.168.10.17, 192.168.10.18",
            // A resource id that is mostly digits is an id, not a card number.
            "organizations/01234567-1234-7234-8234-424242424242/invoices/12345678-4242-7424-8242-424242424242",
        ] {
            assert!(!contains_card_number(text), "{text:?} should not be found");
        }
    }

    #[test]
    fn stretches_of_whole_groups_count() {
        // No card number starts with 1, but the last four groups are one.
        assert!(contains_card_number("123 4111 1111 1111 1111"));
        // Glued to other digits, a card number inside a short group is not one.
        assert!(!contains_card_number("1234111111111111111"));
    }

    #[test]
    fn digits_of_every_script_have_their_values() {
        for (c, value) in [
            ('7', 7),
            ('٧', 7),
            ('۷', 7),
            ('७', 7),
            ('７', 7),
            ('𝟕', 7),
            ('𝟗', 9),
        ] {
            assert_eq!(digit_value(c), value, "{c:?}");
        }
        // Each run of digits is whole sets of ten, starting with a zero.
        for &start in DIGIT_RUNS.iter() {
            let zero = char::from_u32(start).unwrap();
            assert_eq!(digit_value(zero), 0, "{zero:?}");
            let nine = char::from_u32(start + 9).unwrap();
            assert_eq!(CATEGORY.get(nine), GeneralCategory::DecimalNumber);
        }
    }

    #[test]
    fn masks_card_numbers_but_their_last_four_digits() {
        assert_eq!(
            mask_card_numbers("organizations/acme/resources/4111111111111111"),
            "organizations/acme/resources/•••• 1111"
        );
        assert_eq!(
            mask_card_numbers("a 3782 822463 10005 and ٤٢٤٢ ٤٢٤٢ ٤٢٤٢ ٤٢٤٢."),
            "a •••• 0005 and •••• 4242."
        );
        // Overlapping candidates are masked as one.
        assert_eq!(
            mask_card_numbers("4242 4242 4242 4242 4242 4242"),
            "•••• 4242"
        );
        assert!(matches!(
            mask_card_numbers("organizations/100000000008"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn refusal_does_not_echo_the_number() {
        let err =
            refuse_card_numbers("billing.address_lines[0]", "4242 4242 4242 4242").unwrap_err();
        let Error::InvalidArgument { field, message } = &err else {
            panic!("expected InvalidArgument, got {err:?}");
        };
        assert_eq!(field, "billing.address_lines[0]");
        assert!(message.contains("token"), "{message}");
        let shown = format!("{err} {err:?}");
        for fragment in ["4242", "42424242"] {
            assert!(!shown.contains(fragment), "{shown}");
        }
        assert!(refuse_card_numbers("f", "Main Street 1").is_ok());
    }
}
