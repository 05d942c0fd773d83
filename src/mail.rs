//! Outgoing email: over SMTP when a server is configured, otherwise written to
//! the log. The outbox (`crate::store::outbox`) decides when to send and retry;
//! this module sends one message and says whether a failure is worth retrying.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use uuid::Uuid;

use crate::config::{MailArgs, SmtpTls};

/// One message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The outbox row id; it becomes the `Message-ID`, so a message sent twice
    /// (e.g. after a crash between sending and recording it) can be recognised.
    pub id: Uuid,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The server turned this message down for now (4xx): retry it later.
    #[error("{0}")]
    Transient(String),
    /// The message can never be delivered as it is (5xx, unusable address).
    #[error("{0}")]
    Permanent(String),
    /// The server could not be reached or refused the session (network, TLS,
    /// authentication): retry later, and don't try other messages now either.
    /// An outage is nobody's message's fault, so it uses up no attempts.
    #[error("{0}")]
    Unavailable(String),
}

/// Sends email.
pub enum Mailer {
    /// No SMTP server configured: messages (links included) go to the log.
    Log,
    Smtp(SmtpMailer),
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer `args` describe. Needs a Tokio runtime (the SMTP connection pool
    /// runs a task).
    pub fn from_config(args: &MailArgs) -> anyhow::Result<Mailer> {
        let Some(host) = &args.smtp_host else {
            return Ok(Mailer::Log);
        };
        let tls = match args.smtp_tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(TlsParameters::new(host.clone())?),
            SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(host.clone())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(args.smtp_port)
            .tls(tls)
            .timeout(Some(args.smtp_timeout));
        if let (Some(username), Some(password)) = (&args.smtp_username, &args.smtp_password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(Mailer::Smtp(SmtpMailer {
            transport: builder.build(),
            from: args.mail_from.clone(),
        }))
    }

    pub async fn send(&self, message: Outgoing<'_>) -> Result<(), SendError> {
        match self {
            Mailer::Log => {
                // Debug-quoted, so the body's lines stay on one log line.
                tracing::info!(id = %message.id, to = %message.to, subject = %message.subject, body = ?message.body, "email (no SMTP configured)");
                Ok(())
            }
            Mailer::Smtp(smtp) => smtp.send(message).await,
        }
    }
}

impl SmtpMailer {
    async fn send(&self, message: Outgoing<'_>) -> Result<(), SendError> {
        let to: Mailbox = message.to.parse().map_err(|err| {
            SendError::Permanent(format!("recipient {:?} is unusable: {err}", message.to))
        })?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject)
            .message_id(Some(message_id(message.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.to_owned())
            .map_err(|err| SendError::Permanent(format!("building the message: {err}")))?;
        self.transport.send(email).await.map(drop).map_err(classify)
    }
}

/// The `Message-ID` of the outbox message `id`.
pub fn message_id(id: Uuid) -> String {
    format!("<{id}@orgd>")
}

/// SMTP reply codes that blame the session's authentication, not the message.
const AUTH_CODES: [u16; 4] = [530, 534, 535, 538];
/// What lettre's client-side refusals of a whole session say (lettre 0.11 has no
/// finer error kind for them).
const SESSION_REFUSALS: [&str; 3] = [
    "STARTTLS is not supported",
    "No compatible authentication mechanism",
    "Connection is not encrypted",
];
/// "Service not available, closing transmission channel".
const SERVICE_UNAVAILABLE: u16 = 421;

fn classify(err: lettre::transport::smtp::Error) -> SendError {
    let text = err.to_string();
    match err.status().map(u16::from) {
        // Bad credentials would otherwise fail every message for good at once.
        Some(code) if AUTH_CODES.contains(&code) || code == SERVICE_UNAVAILABLE => {
            SendError::Unavailable(text)
        }
        Some(_) if err.is_permanent() => SendError::Permanent(text),
        Some(_) => SendError::Transient(text),
        // The client refused the session (no STARTTLS, no usable AUTH): a
        // configuration problem, not the message's, so it must not use up attempts.
        None if err.is_client() && SESSION_REFUSALS.iter().any(|s| text.contains(s)) => {
            SendError::Unavailable(text)
        }
        // Refused by the client before the server saw it (e.g. a non-ASCII address
        // the server cannot take): about this message, so retried within its limit.
        None if err.is_client() => SendError::Transient(text),
        None => SendError::Unavailable(text),
    }
}
