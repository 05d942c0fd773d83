//! Command line and environment configuration. Every flag can also be set through
//! the environment variable named in its help.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod jwt;
mod mail;
mod webhooks;
pub use jwt::{JwksSource, JwtAlgorithm, JwtArgs, JwtKey};
pub use mail::{MailArgs, SmtpTls};
pub use webhooks::WebhookArgs;

#[derive(Debug, Parser)]
#[command(
    name = "orgd",
    version,
    about = "gRPC service that owns organizations, their members, roles and billing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up: the size does not matter
pub enum Command {
    /// Run the gRPC server. A repeated flag overrides the earlier one.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Print a development token signed with the configured HS256 secret.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub mail: MailArgs,
    /// Address to serve gRPC on.
    #[arg(long, env = "ORGD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// PostgreSQL URL. Without it, orgd runs a private cluster in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub embedded_db: EmbeddedDbArgs,
    #[command(flatten)]
    pub limits: ServingLimits,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// How many organizations a user may belong to.
    #[arg(long, env = "ORGD_MAX_ORGS_PER_USER", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_orgs_per_user: i64,
    /// The plan new team organizations subscribe to; by default the free plan,
    /// as personal ones. A paid plan here is invoiced from creation, before
    /// anyone chose it or added a payment method: only for deployments that
    /// bill by agreement.
    #[arg(long, env = "ORGD_DEFAULT_PLAN")]
    pub default_plan: Option<String>,
    /// How often billing periods that have ended are closed and invoiced.
    #[arg(long, env = "ORGD_BILLING_INTERVAL", default_value = "1m", value_parser = positive_duration)]
    pub billing_interval: Duration,
    /// How long after it is issued an invoice is due; an organization with an
    /// invoice open past it shows its subscription PAST_DUE.
    #[arg(long, env = "ORGD_INVOICE_DUE", default_value = "14days", value_parser = invoice_term)]
    pub invoice_due: Duration,
    /// How long an invitation link stays valid.
    #[arg(long, env = "ORGD_INVITATION_TTL", default_value = "7days", value_parser = positive_duration)]
    pub invitation_ttl: Duration,
    /// Invitation links are this prefix followed by the token.
    #[arg(
        long,
        env = "ORGD_INVITE_LINK_PREFIX",
        default_value = "http://localhost:3000/invitations/accept?token="
    )]
    pub invite_link_prefix: String,
    /// How long a deleted organization can be restored before it is purged.
    #[arg(long, env = "ORGD_DELETED_RETENTION", default_value = "30days", value_parser = positive_duration)]
    pub deleted_retention: Duration,
    /// How often expired deletions are purged.
    #[arg(long, env = "ORGD_PURGE_INTERVAL", default_value = "1m", value_parser = positive_duration)]
    pub purge_interval: Duration,
    /// How long the change feed keeps events (EventService); older ones are
    /// deleted with each purge round (--purge-interval).
    #[arg(long, env = "ORGD_EVENT_RETENTION", default_value = "30days", value_parser = positive_duration)]
    pub event_retention: Duration,
    /// How often an idle WatchEvents stream sends a checkpoint.
    #[arg(long, env = "ORGD_WATCH_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub watch_checkpoint_interval: Duration,
    /// How often a WatchEvents stream looks for new events when no commit has
    /// woken it (a wake-up can be lost, e.g. while orgd reconnects to PostgreSQL).
    #[arg(long, env = "ORGD_WATCH_POLL_INTERVAL", default_value = "500ms", value_parser = positive_duration)]
    pub watch_poll_interval: Duration,
    /// How often the email outbox is delivered.
    #[arg(long, env = "ORGD_OUTBOX_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub outbox_interval: Duration,
    /// Delivery attempts of an email before it is given up on.
    #[arg(long, env = "ORGD_OUTBOX_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..))]
    pub outbox_max_attempts: i32,
    /// Wait before retrying a failed email; it doubles with each further failure.
    #[arg(long, env = "ORGD_OUTBOX_RETRY_BASE", default_value = "30s", value_parser = positive_duration)]
    pub outbox_retry_base: Duration,
    /// Longest wait between retries of an email.
    #[arg(long, env = "ORGD_OUTBOX_RETRY_MAX", default_value = "1h", value_parser = positive_duration)]
    pub outbox_retry_max: Duration,
    /// How long a delivery round holds the emails it claimed. A send still going
    /// when the lease ends is cut off (the server counts as unavailable), so keep
    /// it well above --smtp-timeout × 20 (a round's batch). An email whose round
    /// stopped before recording its outcome is sent again once the lease ends.
    #[arg(long, env = "ORGD_OUTBOX_LEASE", default_value = "5m", value_parser = positive_duration)]
    pub outbox_lease: Duration,
    /// How long a contact-email verification link stays valid.
    #[arg(long, env = "ORGD_CONTACT_VERIFICATION_TTL", default_value = "24h", value_parser = positive_duration)]
    pub contact_verification_ttl: Duration,
    /// Verification links are this prefix followed by the token.
    #[arg(
        long,
        env = "ORGD_VERIFY_LINK_PREFIX",
        default_value = "http://localhost:3000/verify-contact-email?token="
    )]
    pub verify_link_prefix: String,
    /// Token subjects that are backend services (comma-separated): platform-level
    /// callers of PermissionService, ListUserOrganizations and WhoAmI, for any
    /// organization.
    #[arg(long, env = "ORGD_SERVICE_SUBJECTS", value_delimiter = ',')]
    pub service_subjects: Vec<String>,
    /// Limits a service to checking and looking up some permissions only:
    /// `SUBJECT=PERMISSION[,PERMISSION…]`, repeated or separated by `;`, e.g.
    /// `deploy=projects.create;mailer=billing.manage,members.manage`. A
    /// service not named here may ask about every permission.
    #[arg(long, env = "ORGD_SERVICE_PERMISSIONS", value_delimiter = ';', value_parser = service_permissions)]
    pub service_permissions: Vec<ServicePermissions>,
    /// Largest accepted request message.
    #[arg(long, env = "ORGD_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// How long shutdown waits for in-flight calls.
    #[arg(long, env = "ORGD_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, env = "ORGD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// One entry of `--service-permissions`: the permissions a service may ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePermissions {
    pub subject: String,
    pub permissions: Vec<String>,
}

/// `SUBJECT=PERMISSION[,PERMISSION…]`.
fn service_permissions(raw: &str) -> Result<ServicePermissions, String> {
    let expected = || {
        format!(
            "expected SUBJECT=PERMISSION[,PERMISSION…], e.g. deploy=projects.create, not '{raw}'"
        )
    };
    let (subject, permissions) = raw.split_once('=').ok_or_else(expected)?;
    let permissions: Vec<String> = permissions
        .split(',')
        .map(|permission| permission.trim().to_owned())
        .collect();
    if subject.trim().is_empty() || permissions.iter().any(String::is_empty) {
        return Err(expected());
    }
    crate::domain::Names::permissions("--service-permissions", &permissions)
        .map_err(|err| err.to_string())?;
    Ok(ServicePermissions {
        subject: subject.trim().to_owned(),
        permissions,
    })
}

/// The database pool and the limits of each of its sessions.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database connections for calls. Background work has four more of its own.
    #[arg(long, env = "ORGD_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: u32,
    /// How long a call waits for a database connection before UNAVAILABLE.
    #[arg(long, env = "ORGD_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub db_acquire_timeout: Duration,
    /// Longest a statement may run (PostgreSQL's statement_timeout) before the
    /// call fails UNAVAILABLE.
    #[arg(long, env = "ORGD_DB_STATEMENT_TIMEOUT", default_value = "15s", value_parser = positive_duration)]
    pub db_statement_timeout: Duration,
    /// Longest a statement may wait for a row lock another change holds
    /// (PostgreSQL's lock_timeout) before the call fails ABORTED.
    #[arg(long, env = "ORGD_DB_LOCK_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub db_lock_timeout: Duration,
}

/// How the embedded cluster (no DATABASE_URL) is sized.
#[derive(Debug, Clone, Args)]
pub struct EmbeddedDbArgs {
    /// Memory the embedded PostgreSQL is tuned for (e.g. 4GiB); by default half
    /// of the machine's (or its container's).
    #[arg(long, env = "ORGD_EMBEDDED_DB_MEMORY")]
    pub embedded_db_memory: Option<bytesize::ByteSize>,
    /// A PostgreSQL setting for the embedded cluster, over the tuned ones
    /// (NAME=VALUE; repeat the flag, or separate them by commas in the variable).
    #[arg(long = "embedded-db-setting", env = "ORGD_EMBEDDED_DB_SETTINGS", value_delimiter = ',', value_parser = db_setting)]
    pub embedded_db_settings: Vec<(String, String)>,
}

fn db_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// What one client may hold of the server, and how long.
#[derive(Debug, Clone, Args)]
pub struct ServingLimits {
    /// Longest a call may run (a shorter grpc-timeout from the client wins);
    /// then it ends DEADLINE_EXCEEDED / CANCELLED.
    #[arg(long, env = "ORGD_CALL_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub call_timeout: Duration,
    /// Calls one connection may have in flight (HTTP/2 max concurrent
    /// streams); beyond it a call is refused UNAVAILABLE at once.
    #[arg(long, env = "ORGD_MAX_CONCURRENT_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Client connections open at once; more wait to be accepted.
    #[arg(long, env = "ORGD_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a new connection has to make its first call before it is closed.
    #[arg(long, env = "ORGD_FIRST_CALL_DEADLINE", default_value = "10s", value_parser = positive_duration)]
    pub first_call_deadline: Duration,
    /// Age at which a connection is asked to go away (HTTP/2 GOAWAY), so that
    /// clients spread again over replicas; its calls in flight finish, each
    /// within --call-timeout.
    #[arg(long, env = "ORGD_MAX_CONNECTION_AGE", default_value = "30m", value_parser = positive_duration)]
    pub max_connection_age: Duration,
    /// How often an idle connection is pinged (HTTP/2 keepalive).
    #[arg(long, env = "ORGD_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "ORGD_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http2_keepalive_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Subject (`sub`) of the token.
    #[arg(long)]
    pub sub: String,
    /// Email address (`email`); required for users.
    #[arg(long, required_unless_present = "service")]
    pub email: Option<String>,
    /// Display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Mark the email as not verified.
    #[arg(long)]
    pub unverified: bool,
    /// A token for a backend service (list its subject in ORGD_SERVICE_SUBJECTS).
    #[arg(long)]
    pub service: bool,
    /// Lifetime of the token.
    #[arg(long, default_value = "12h", value_parser = positive_duration)]
    pub ttl: Duration,
}

/// A duration greater than zero, e.g. "5s", "30days".
fn positive_duration(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(duration) if duration.is_zero() => Err("must be greater than zero".into()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

/// An invoice's payment term: positive, and at most a year, so that every due
/// time is a date (and no term that long is a payment term).
fn invoice_term(raw: &str) -> Result<Duration, String> {
    let term = positive_duration(raw)?;
    if term > Duration::from_secs(366 * 24 * 60 * 60) {
        return Err("must be at most 366 days".into());
    }
    Ok(term)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn zero_sizes_and_intervals_are_refused() {
        for bad in [
            ["--pool-size", "0"],
            ["--max-connections", "0"],
            ["--db-lock-timeout", "0s"],
            ["--call-timeout", "0s"],
            ["--purge-interval", "0s"],
            ["--outbox-interval", "0s"],
            ["--outbox-max-attempts", "0"],
            ["--outbox-retry-base", "0s"],
            ["--outbox-retry-max", "0s"],
            ["--outbox-lease", "0s"],
            ["--smtp-timeout", "0s"],
            ["--smtp-port", "0"],
            ["--invoice-due", "0s"],
            ["--invoice-due", "1000000years"],
        ] {
            let argv = ["orgd", "serve", bad[0], bad[1]];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        assert!(Cli::try_parse_from(["orgd", "serve", "--purge-interval", "2m"]).is_ok());
    }

    #[test]
    fn a_jwks_replaces_the_configured_keys() {
        let serve = |flags: &[&str]| {
            let argv = ["orgd", "serve"].into_iter().chain(flags.iter().copied());
            match Cli::try_parse_from(argv).map(|cli| cli.command) {
                Ok(Command::Serve(args)) => Ok(args),
                Ok(_) => unreachable!("argv starts with serve"),
                Err(err) => Err(err),
            }
        };
        let url = "https://idp.example/.well-known/jwks.json";
        for other in [
            &["--jwt-secret", "a secret of more than thirty-two bytes"][..],
            &["--jwt-public-key-file", "key.pem"],
            &["--jwt-algorithm", "RS256"],
        ] {
            let flags = [&["--jwt-jwks-url", url][..], other].concat();
            assert!(serve(&flags).is_err(), "{other:?} accepted with a JWKS");
        }
        assert!(serve(&["--jwt-jwks-url", "file:///etc/jwks.json"]).is_err());
        let args = serve(&["--jwt-jwks-url", url]).unwrap();
        let Ok(super::JwtKey::Jwks(source)) = args.jwt.key() else {
            panic!("expected the JWKS as the key source")
        };
        assert_eq!(source.url.as_str(), url);
        assert_eq!(source.refresh, std::time::Duration::from_secs(300));
        assert_eq!(source.min_refresh, std::time::Duration::from_secs(30));
        let args = serve(&["--jwt-jwks-url", url, "--jwt-jwks-min-refresh", "10m"]).unwrap();
        assert!(
            args.jwt.key().is_err(),
            "a minimum above the refresh interval"
        );
    }

    #[test]
    fn service_permissions_are_a_map_of_subjects() {
        let parse = |flags: &[&str]| {
            let argv = ["orgd", "serve"].iter().chain(flags);
            match Cli::try_parse_from(argv).map(|cli| cli.command) {
                Ok(Command::Serve(args)) => Ok(args.service_permissions),
                Ok(_) => unreachable!("argv starts with serve"),
                Err(err) => Err(err),
            }
        };
        let limits = parse(&[
            "--service-permissions",
            "deploy=projects.create;mailer=billing.manage, members.manage",
            "--service-permissions",
            "audit=activity.read",
        ])
        .unwrap();
        let pairs: Vec<(&str, Vec<&str>)> = limits
            .iter()
            .map(|l| {
                (
                    l.subject.as_str(),
                    l.permissions.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("deploy", vec!["projects.create"]),
                ("mailer", vec!["billing.manage", "members.manage"]),
                ("audit", vec!["activity.read"]),
            ]
        );
        for bad in ["deploy", "=org.read", "deploy=", "deploy=org.read,"] {
            assert!(
                parse(&["--service-permissions", bad]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn mail_settings_are_checked_at_start_up() {
        for bad in [
            &["--mail-from", "not an address"][..],
            &["--smtp-username", "mailer"],
            &["--smtp-password", "secret"],
            &["--smtp-tls", "sometimes"],
        ] {
            let argv = ["orgd", "serve"].iter().chain(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let argv = [
            "orgd",
            "serve",
            "--mail-from",
            "Acme <no-reply@acme.test>",
            "--smtp-username",
            "mailer",
            "--smtp-password",
            "secret",
        ];
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("argv starts with serve")
        };
        assert_eq!(args.mail.mail_from.email.to_string(), "no-reply@acme.test");
        assert_eq!(args.mail.mail_from.name.as_deref(), Some("Acme"));
    }
}
