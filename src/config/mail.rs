//! How email leaves orgd: SMTP, or the log.

use std::time::Duration;

use clap::{Args, ValueEnum};
use lettre::message::Mailbox;

use super::positive_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmtpTls {
    /// Plaintext: only for a trusted relay on the same host or network.
    None,
    /// Plaintext upgraded with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// How email leaves orgd.
#[derive(Debug, Clone, Args)]
pub struct MailArgs {
    /// SMTP server for outgoing email. Without it, emails (links included) are
    /// written to the log.
    #[arg(long, env = "ORGD_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP server port.
    #[arg(long, env = "ORGD_SMTP_PORT", default_value_t = 587, value_parser = clap::value_parser!(u16).range(1..))]
    pub smtp_port: u16,
    /// SMTP user name (with --smtp-password).
    #[arg(long, env = "ORGD_SMTP_USERNAME", requires = "smtp_password")]
    pub smtp_username: Option<String>,
    /// SMTP password (with --smtp-username).
    #[arg(
        long,
        env = "ORGD_SMTP_PASSWORD",
        hide_env_values = true,
        requires = "smtp_username"
    )]
    pub smtp_password: Option<String>,
    /// Transport security of the SMTP connection.
    #[arg(long, env = "ORGD_SMTP_TLS", value_enum, default_value = "starttls")]
    pub smtp_tls: SmtpTls,
    /// How long to wait for the SMTP server to connect or answer a command.
    #[arg(long, env = "ORGD_SMTP_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub smtp_timeout: Duration,
    /// Sender of outgoing email, e.g. `Acme <no-reply@acme.test>`.
    #[arg(long, env = "ORGD_MAIL_FROM", default_value = "orgd <no-reply@localhost>", value_parser = mailbox)]
    pub mail_from: Mailbox,
}

/// An address with an optional display name, e.g. `orgd <no-reply@example.com>`.
fn mailbox(raw: &str) -> Result<Mailbox, String> {
    raw.parse()
        .map_err(|err| format!("{err}; expected e.g. 'orgd <no-reply@example.com>'"))
}
