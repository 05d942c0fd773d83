//! Settings of the messages that verify an email address: an organization's
//! contact email, a billing profile's billing email. A leaf, so both aggregates
//! can take it without importing each other.

use std::time::Duration;

/// Settings for email verification messages.
#[derive(Debug, Clone)]
pub struct ContactVerification {
    pub ttl: Duration,
    /// The link in the message is this URL followed by the token.
    pub link_prefix: String,
}
