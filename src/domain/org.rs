//! The values that make up an organization.

use std::fmt;

use super::text::{is_hidden, shows_nothing};
use crate::error::{Error, Result};

const SLUG_MIN: usize = 3;
const SLUG_MAX: usize = 40;

/// A URL-safe organization handle: 3–40 of `a-z`, `0-9` and single inner hyphens,
/// never shaped like a UUID (so `organizations/{x}` is unambiguous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let valid = (SLUG_MIN..=SLUG_MAX).contains(&raw.len())
            && ok_chars
            && !raw.starts_with('-')
            && !raw.ends_with('-')
            && !raw.contains("--");
        if !valid {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is not a valid slug: use 3 to 40 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
                    super::quoted(raw)
                ),
            ));
        }
        if looks_like_uuid(raw) {
            return Err(Error::invalid(
                field,
                "a slug cannot have the shape of a UUID",
            ));
        }
        Ok(Slug(raw.to_owned()))
    }

    /// Derives a slug from a display name: "Acme Corp." → "acme-corp". Too-short
    /// results are padded so every name yields a valid slug.
    pub fn derive(display_name: &str) -> Slug {
        let mut slug = String::new();
        for c in display_name.to_lowercase().chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        let slug = match slug.len() {
            0 => "org".to_owned(),
            n if n < SLUG_MIN => format!("{slug}-org"),
            _ => slug.to_owned(),
        };
        let mut slug = truncate_for_suffix(slug);
        if looks_like_uuid(&slug) {
            // It would read as an id in `organizations/{slug}`.
            slug = truncate_for_suffix(format!("org-{slug}"));
        }
        Slug(slug)
    }

    /// The same slug with a suffix, to find a free one when the plain one is taken.
    pub fn with_suffix(&self, suffix: &str) -> Slug {
        Slug(format!("{}-{suffix}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cuts a slug so a "-xxxxxx" uniqueness suffix still fits in `SLUG_MAX`.
fn truncate_for_suffix(mut slug: String) -> String {
    slug.truncate(SLUG_MAX - 7);
    slug.trim_end_matches('-').to_owned()
}

/// Whether `key` reads as an id rather than a slug in `organizations/{key}`: a
/// UUID, or something shaped like one (a mistyped id).
pub fn looks_like_uuid(key: &str) -> bool {
    uuid::Uuid::try_parse(key).is_ok() || (key.len() == 36 && key.matches('-').count() == 4)
}

/// A human-readable name of an organization or an API token, 1–100 characters,
/// trimmed, some of them visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let value = raw.trim();
        if shows_nothing(value) {
            return Err(Error::invalid(
                field,
                "a display name is required, with at least one visible character",
            ));
        }
        if value.chars().count() > 100 {
            return Err(Error::invalid(
                field,
                "the display name is longer than 100 characters",
            ));
        }
        if value.chars().any(is_hidden) {
            return Err(Error::invalid(
                field,
                "the display name contains control characters",
            ));
        }
        Ok(DisplayName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text describing an organization, at most 1000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.chars().count() > 1000 {
            return Err(Error::invalid(
                field,
                "the description is longer than 1000 characters",
            ));
        }
        if raw.chars().any(|c| is_hidden(c) && c != '\n' && c != '\t') {
            return Err(Error::invalid(
                field,
                "the description contains control characters (only newlines and tabs are allowed)",
            ));
        }
        Ok(Description(raw.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Optimistic-concurrency tag of an organization, derived from its revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag(pub i64);

impl Etag {
    /// An empty etag means "no check" (AIP-154); anything else must be one we issued.
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Self>> {
        if raw.is_empty() {
            return Ok(None);
        }
        raw.strip_prefix("W/\"")
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|n| n.parse().ok())
            .map(|n| Some(Etag(n)))
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "{} is not an etag issued by this service",
                        super::quoted(raw)
                    ),
                )
            })
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W/\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(Slug::derive("Acme Corp.").as_str(), "acme-corp");
        assert_eq!(Slug::derive("  Ünïcode!! ").as_str(), "n-code");
        assert_eq!(Slug::derive("!!").as_str(), "org");
        assert_eq!(Slug::derive("ab").as_str(), "ab-org");
        let hex = "deadbeefdeadbeefdeadbeefdeadbeef";
        assert_eq!(Slug::derive(hex).as_str(), format!("org-{}", &hex[..29]));
        let hex_then_words = format!("{hex} and more");
        for name in [
            hex,
            &hex_then_words,
            "x",
            "Acme",
            &"long name ".repeat(10),
            "a-b",
        ] {
            let derived = Slug::derive(name);
            Slug::parse("s", derived.as_str()).unwrap();
            Slug::parse("s", derived.with_suffix("abcdef").as_str()).unwrap();
        }
        assert!(Slug::parse("s", "gggggggg-gggg-gggg-gggg-gggggggggggg").is_err());
        assert!(
            Slug::parse(
                "s",
                Slug::derive(&"x".repeat(300))
                    .with_suffix("abcdef")
                    .as_str()
            )
            .is_ok()
        );
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "a--b",
            "ABC",
            "a_b",
            "0190a9c2-1111-7000-8000-000000000000",
        ] {
            assert!(Slug::parse("s", bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn hidden_characters_are_refused() {
        for bad in ["a\u{0}b", "evil\u{202e}gpj.exe", "x\u{2066}y"] {
            assert!(DisplayName::parse("n", bad).is_err(), "{bad:?}");
            assert!(Description::parse("d", bad).is_err(), "{bad:?}");
        }
        assert!(Description::parse("d", "two\nlines\tok").is_ok());
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(
            Etag::parse_optional("e", &Etag(7).to_string()).unwrap(),
            Some(Etag(7))
        );
        assert_eq!(Etag::parse_optional("e", "").unwrap(), None);
        assert!(Etag::parse_optional("e", "7").is_err());
    }
}
