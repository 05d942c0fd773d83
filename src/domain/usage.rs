//! What a backend service reports of an organization's usage: a charge's
//! description, as its invoice line shows it, and the metered interval.

use chrono::{DateTime, SubsecRound, Utc};

use super::{is_hidden, shows_nothing};
use crate::error::{Error, Result};

/// What a usage charge bills, as the invoice line shows it: 1 to 200
/// characters, one line (an invoice line has no room for more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeDescription(String);

impl ChargeDescription {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let text = raw.trim();
        if shows_nothing(text) {
            return Err(Error::invalid(
                field,
                "say what was used, as the invoice line should show it, e.g. \"app web-1: 310 GB-hours of memory\"",
            ));
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!(
                    "the description is longer than {} characters",
                    Self::MAX_CHARS
                ),
            ));
        }
        if text.chars().any(is_hidden) {
            return Err(Error::invalid(
                field,
                "the description is one line: it contains line breaks, control characters or direction overrides",
            ));
        }
        Ok(ChargeDescription(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The interval a usage charge metered: it ends no earlier than it starts.
/// (That it has ended, not in the future, is checked against the database's
/// clock when the charge is stored, the clock billing periods run by.) Its
/// times are kept to the microsecond, as PostgreSQL stores them, so that a
/// retried report sent with nanoseconds matches the charge it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl UsageInterval {
    /// `end_field` names the end, which a refusal blames.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>, end_field: &str) -> Result<Self> {
        let (start, end) = (start.trunc_subsecs(6), end.trunc_subsecs(6));
        if end < start {
            return Err(Error::invalid(
                end_field,
                format!("the usage ends ({end}) before it starts ({start})"),
            ));
        }
        Ok(UsageInterval { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_one_visible_line() {
        assert_eq!(
            ChargeDescription::parse("d", "  app web-1: 3 GB-hours ")
                .unwrap()
                .as_str(),
            "app web-1: 3 GB-hours"
        );
        assert!(ChargeDescription::parse("d", &"é".repeat(200)).is_ok());
        for bad in [
            String::new(),
            " \u{200b} ".to_owned(),
            "é".repeat(201),
            "two\nlines".to_owned(),
            "app \u{202e}evil".to_owned(),
        ] {
            assert!(ChargeDescription::parse("d", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_interval_ends_no_earlier_than_it_starts() {
        let start = DateTime::from_timestamp(1_000, 0).unwrap();
        let later = DateTime::from_timestamp(2_000, 0).unwrap();
        assert!(UsageInterval::new(start, start, "end").is_ok());
        assert!(UsageInterval::new(start, later, "end").is_ok());
        let nanos = DateTime::from_timestamp(1_000, 1_234_567).unwrap();
        let kept = UsageInterval::new(nanos, nanos, "end").unwrap();
        assert_eq!(kept.start.timestamp_subsec_nanos(), 1_234_000);
        let refused = UsageInterval::new(later, start, "end").unwrap_err();
        assert!(matches!(refused, Error::InvalidArgument { field, .. } if field == "end"));
    }
}
