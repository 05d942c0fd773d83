//! What a payment processor reports about charging an invoice: the attempt's
//! reference and, when it failed, why.

use super::{is_hidden, quoted, shows_nothing};
use crate::error::{Error, Result};

/// The processor's reference of one payment attempt, e.g. Stripe's `pi_3Nv…`
/// or `ch_3Nv…`, Adyen's 16-character PSP reference: 4 to 128 ASCII letters,
/// digits, `_` and `-`, starting with a letter or digit. orgd keys attempts by
/// it, so it is taken as sent (no case folding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorReference(String);

impl ProcessorReference {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let valid = (4..=128).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if raw.is_empty() {
            return Err(Error::invalid(
                field,
                "the payment processor's reference of the attempt is required, e.g. pi_3NvXyz…",
            ));
        }
        if !valid {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is not a payment processor's reference: expected 4 to 128 ASCII letters, digits, '_' and '-', starting with a letter or digit, e.g. pi_3NvXyz…",
                    quoted(raw)
                ),
            ));
        }
        Ok(ProcessorReference(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a charge failed, as the processor put it: shown to the organization's
/// billing members and mailed to its billing email. 1 to 500 characters, one
/// paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureMessage(String);

impl FailureMessage {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let text = raw.trim();
        if shows_nothing(text) {
            return Err(Error::invalid(
                field,
                "say why the payment failed, e.g. the processor's \"Your card was declined.\"",
            ));
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!(
                    "the failure message is longer than {} characters",
                    Self::MAX_CHARS
                ),
            ));
        }
        if text.chars().any(is_hidden) {
            return Err(Error::invalid(
                field,
                "the failure message contains control characters or direction overrides",
            ));
        }
        Ok(FailureMessage(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_processor_ids() {
        for good in [
            "pi_3NvXyz123",
            "ch_1",
            "8535296650153317",
            "py_ABC-def_9",
            &"x".repeat(128),
        ] {
            assert_eq!(ProcessorReference::parse("r", good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "pi_",
            "_abc",
            "-abc",
            "pi_3Nv Xyz",
            "pi_3Nv/..",
            "pi_ü123",
            &"x".repeat(129),
        ] {
            assert!(ProcessorReference::parse("r", bad).is_err(), "{bad:?}");
        }
        // The refusal states every rule, the first character's included.
        let refused = ProcessorReference::parse("r", "_abc")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("starting with a letter or digit"),
            "{refused}"
        );
    }

    #[test]
    fn failure_messages_are_one_visible_paragraph() {
        assert_eq!(
            FailureMessage::parse("m", "  Your card was declined.  ")
                .unwrap()
                .as_str(),
            "Your card was declined."
        );
        assert!(FailureMessage::parse("m", &"é".repeat(500)).is_ok());
        for bad in [
            String::new(),
            " \u{200b} ".to_owned(),
            "é".repeat(501),
            "declined\nsee http://evil".to_owned(),
            "declined \u{202e}evil".to_owned(),
        ] {
            assert!(FailureMessage::parse("m", &bad).is_err(), "{bad:?}");
        }
    }
}
