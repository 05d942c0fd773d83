//! Raw card numbers (PANs) must never be stored or logged: holding one would put
//! orgd in PCI DSS scope. Payment data reaches orgd only as the payment
//! processor's token plus display data (brand, last four digits), so any free
//! text that contains something shaped like a card number is refused.

use crate::error::{Error, Result};

/// Card numbers are 12 to 19 digits long (ISO/IEC 7812).
const PAN_LENGTHS: std::ops::RangeInclusive<usize> = 12..=19;

/// Whether `text` contains a card number: 12–19 digits passing the Luhn check.
///
/// Digits may be separated by up to two punctuation or space characters (any
/// Unicode space, '-', '.', '_', '/' …), as people type or disguise card numbers
/// ("4242 4242 4242 4242", "4242.4242.4242.4242"); such a run is read as groups.
/// Resource ids (UUIDs) are not card numbers and are skipped. A candidate
/// is the whole run or any stretch of whole groups in it, so "No. 5 4242 4242
/// 4242 4242" is found. In a run longer than any card number (more than 19
/// digits) every stretch of 12–19 digits is a candidate, since a number glued
/// to other digits has no group to start at.
///
/// Not every stretch of every run: about one in ten arbitrary digit strings
/// passes Luhn, so checking all 15 stretches of a 16-digit run would refuse
/// roughly four in five 16-digit numbers that are not cards. Within these
/// rules it errs towards refusing, because a person can reword a refused text
/// while a stored card number cannot be taken back out of backups and logs.
///
/// A run of more than `MAX_EXAMINED_RUN` digits is taken to hold one without
/// checking its stretches: of its hundreds of 12–19-digit stretches about one
/// in ten passes Luhn, so only a crafted run has none, and checking them all
/// would cost a megabyte of digits some 8 million Luhn checks. Screening thus
/// stays one pass over the text.
pub fn find_card_number(text: &str) -> bool {
    // Every request's every text field comes here: most (names, ids, slugs) have
    // too few digits to hold a card number, and are let through without more ado.
    let too_few = |digits: usize| digits < *PAN_LENGTHS.start();
    if too_few(text.bytes().filter(u8::is_ascii_digit).count())
        || too_few(outside_uuids(text).filter(char::is_ascii_digit).count())
    {
        return false;
    }
    let mut run = Run::default();
    for c in outside_uuids(text) {
        if c.is_ascii_digit() {
            run.digits.push(c as u8 - b'0');
            run.separators = 0;
            if run.digits.len() > MAX_EXAMINED_RUN {
                return true;
            }
        } else if !c.is_alphanumeric() && !run.digits.is_empty() && run.separators < MAX_SEPARATORS
        {
            if run.separators == 0 {
                run.group_starts.push(run.digits.len());
            }
            run.separators += 1;
        } else {
            if run.has_card_number() {
                return true;
            }
            run.clear();
        }
    }
    run.has_card_number()
}

/// Digits read so far, joined across single separators.
#[derive(Default)]
struct Run {
    digits: Vec<u8>,
    /// Where each group after the first starts, as an index into `digits`.
    group_starts: Vec<usize>,
    /// Separator characters since the last digit.
    separators: usize,
}

/// The longest run of digits whose stretches are each checked.
const MAX_EXAMINED_RUN: usize = 64;

/// How many separator characters may stand between two groups of a number.
const MAX_SEPARATORS: usize = 2;

/// The characters of `text`, with every UUID (8-4-4-4-12 hex digits) read as
/// letters, so that an id that happens to be mostly digits is not read as a
/// card number.
fn outside_uuids(text: &str) -> impl Iterator<Item = char> + '_ {
    const UUID_LEN: usize = 36;
    let mut at = 0;
    let mut masked = 0;
    std::iter::from_fn(move || {
        if masked > 0 {
            masked -= 1;
            return Some('u');
        }
        if is_uuid_at(text.as_bytes(), at) {
            at += UUID_LEN;
            masked = UUID_LEN - 1;
            return Some('u');
        }
        // `at` only ever moves by whole characters or whole (ASCII) UUIDs.
        let c = text[at..].chars().next()?;
        at += c.len_utf8();
        Some(c)
    })
}

/// Whether a UUID starts at byte `at` of `bytes`.
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

impl Run {
    /// Starts a new run, keeping the buffers.
    fn clear(&mut self) {
        self.digits.clear();
        self.group_starts.clear();
        self.separators = 0;
    }

    fn has_card_number(&self) -> bool {
        let digits = &self.digits[..];
        if digits.len() < *PAN_LENGTHS.start() {
            return false;
        }
        if digits.len() > *PAN_LENGTHS.end() {
            return PAN_LENGTHS
                .into_iter()
                .any(|len| digits.windows(len).any(passes_luhn));
        }
        // A trailing separator ("4242 ") starts no group.
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(
                self.group_starts
                    .iter()
                    .copied()
                    .filter(|&i| i < digits.len()),
            )
            .chain(std::iter::once(digits.len()))
            .collect();
        bounds.iter().enumerate().any(|(i, &start)| {
            bounds[i + 1..].iter().any(|&end| {
                PAN_LENGTHS.contains(&(end - start)) && passes_luhn(&digits[start..end])
            })
        })
    }
}

/// Refuses `value` if it contains a card number. The message never repeats the
/// value: an error travels into logs and traces, and the number with it.
pub fn refuse_card_numbers(field: &str, value: &str) -> Result<()> {
    if find_card_number(value) {
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

/// The Luhn mod-10 check that every card number's last digit satisfies.
fn passes_luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            match (i % 2 == 1, d * 2) {
                (false, _) => d,
                (true, doubled) if doubled > 9 => doubled - 9,
                (true, doubled) => doubled,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_too_long_to_examine_is_refused_in_one_pass() {
        // No stretch of a run of ones passes Luhn at every length: a run like it
        // of a megabyte was checked stretch by stretch before.
        let ones = "1".repeat(MAX_EXAMINED_RUN);
        assert!(!find_card_number(&ones), "64 ones hold no card number");
        assert!(find_card_number(&format!("{ones}1")));
        assert!(find_card_number(&"1".repeat(1 << 20)));
    }

    #[test]
    fn finds_card_numbers_as_people_type_them() {
        for text in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "378282246310005",     // Amex, 15 digits
            "3782 822463 10005",   // Amex as printed
            "6011111111111117",    // Discover
            "500000000009",        // 12 digits (Maestro length)
            "4111111111111111110", // 19 digits
            "my card is 4242 4242 4242 4242, thanks",
            "Main St 1, card:4242-4242 4242-4242 exp 12/29",
            "94242424242424242123", // 20 digits embedding a valid 16
            "x4242424242424242y",
            "No. 5 4242 4242 4242 4242", // a house number before the groups
            "5 4242424242424242",
            "4242 4242 4242 4242 1",  // and one after them
            "4242  4242  4242  4242", // double spaces
            "4242--4242--4242--4242",
            "4242.4242.4242.4242",
            "4242_4242_4242_4242",
            "4242\u{a0}4242\u{a0}4242\u{a0}4242", // no-break spaces
            "4242/4242/4242/4242",
            // Beside an id, which is skipped, and after multi-byte characters.
            "members/01234567-1234-7234-8234-424242424242 4242 4242 4242 4242",
            "01234567-1234-7234-8234-4242424242424242424242424242",
            "café № 4242424242424242",
        ] {
            assert!(find_card_number(text), "{text:?} should be found");
        }
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for text in [
            "",
            "4242424242424241",    // fails Luhn (though parts of it pass)
            "1234 5678 9012 3457", // fails Luhn, and so do its stretches of whole groups
            "41111111111",         // 11 digits
            "+1 415 555 0100",     // phone, 11 digits
            "+44 20 7946 0958",    // phone, 12 digits failing Luhn
            "pm_1234",
            "card ending 4242, visa",
            "2024-01-15",
            "15.01.2024 to 15.02.2024",
            "2024-01-15 - 2024-02-15", // " - " is more than two separators
            // A resource id that is mostly digits is an id, not a card number.
            "organizations/01234567-1234-7234-8234-424242424242/invoices/12345678-4242-7424-8242-424242424242",
            "members/01234567-1234-7234-8234-424242424242 and 42", // few digits outside the id
        ] {
            assert!(!find_card_number(text), "{text:?} should not be found");
        }
    }

    #[test]
    fn stretches_of_whole_groups_count() {
        // The 16 digits fail Luhn, but the last three groups are a valid 12-digit number.
        assert!(find_card_number("1234 5678 9012 3456"));
        assert!(!find_card_number("1234567890123456"));
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
