//! Times as callers send them and PostgreSQL stores them.

use chrono::{DateTime, Datelike, Utc};

/// Whether `time` is within google.protobuf.Timestamp's range (years 1 to 9999),
/// which PostgreSQL's timestamptz also holds: a time outside it, from a forged
/// token or field, is the caller's mistake, not an internal error.
pub fn is_storable_time(time: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&time.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_years_1_to_9999_are_storable() {
        let at = |seconds| DateTime::from_timestamp(seconds, 0).unwrap();
        assert!(is_storable_time(&at(0)));
        assert!(is_storable_time(&at(253_402_300_799))); // 9999-12-31T23:59:59Z
        assert!(!is_storable_time(&at(253_402_300_800)));
        assert!(!is_storable_time(&at(-62_135_596_801))); // before 0001-01-01
    }
}
