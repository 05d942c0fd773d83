use std::fmt;

use crate::error::{Error, Result};

/// An email address, trimmed and lower-cased so comparisons are case-insensitive.
/// Lower-cased in ASCII only: Unicode's case mapping would make look-alikes such
/// as the Kelvin sign (U+212A) into a Latin `k`, and so into someone else's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let value = raw.trim().to_ascii_lowercase();
        let invalid = |why: &str| {
            Error::invalid(
                field,
                format!("{} is not a valid email address: {why}", super::quoted(raw)),
            )
        };
        if value.is_empty() {
            return Err(Error::invalid(field, "an email address is required"));
        }
        if value.len() > 254 {
            return Err(invalid("longer than 254 characters"));
        }
        let Some((local, domain)) = value.split_once('@') else {
            return Err(invalid("it has no '@'"));
        };
        if local.is_empty() || domain.contains('@') {
            return Err(invalid("expected exactly one '@' with a name before it"));
        }
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c))
        {
            return Err(invalid(
                "it contains spaces or characters not allowed in an address",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels
                .iter()
                .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
        {
            return Err(invalid("the domain must look like example.com"));
        }
        Ok(Email(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(
            Email::parse("e", " Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@-x.com",
        ] {
            assert!(
                Email::parse("e", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
