//! How orgd opens a PostgreSQL connection: the URL, TLS (see `tls.rs`), the
//! session's name in `pg_stat_activity`, and the per-session limits that keep
//! one slow statement or lock wait from holding a pooled connection indefinitely.

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;

use super::tls::{self, TlsParams};

/// How long opening a connection may take, unless the URL sets `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    /// Shown in `pg_stat_activity`, unless the URL names one itself.
    pub application_name: String,
    /// Longest a statement may run before PostgreSQL cancels it (0: no limit).
    pub statement_timeout: Duration,
    /// Longest a statement may wait for a row or table lock (0: no limit).
    pub lock_timeout: Duration,
}

impl DbConfig {
    /// `url` with no limits: for one-off sessions such as migrations.
    pub fn unlimited(url: &str, application_name: &str) -> Self {
        DbConfig {
            url: url.to_owned(),
            application_name: application_name.to_owned(),
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
        }
    }

    /// The URL parsed, with the session settings orgd adds, and its TLS
    /// settings. The session settings travel in the startup packet, so they
    /// cost no round trip.
    fn postgres_config(&self) -> Result<(tokio_postgres::Config, TlsParams), ConnectionError> {
        let invalid = |err: &dyn std::fmt::Display| {
            ConnectionError::InvalidConnectionUrl(format!("DATABASE_URL does not parse: {err}"))
        };
        let (url, tls) = tls::split_url(&self.url).map_err(|err| invalid(&err))?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|err| invalid(&err))?;
        config.ssl_mode(tls.postgres_mode());
        if config.get_application_name().is_none() {
            config.application_name(&self.application_name);
        }
        // A connection attempt that hangs (a firewall dropping packets) fails
        // start-up in seconds rather than minutes, unless the URL says otherwise.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // Limits of zero are left out: the server's default (none) applies, and
        // a pooler that refuses the `options` startup parameter (PgBouncer
        // without `ignore_startup_parameters = options`) can still run migrations.
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, limit) in [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
        ] {
            if !limit.is_zero() {
                // At least 1 ms: PostgreSQL reads 0 as no limit at all.
                options.push_str(&format!(" -c {name}={}", limit.as_millis().max(1)));
            }
        }
        if !options.trim().is_empty() {
            config.options(options.trim_start());
        }
        Ok((config, tls))
    }

    /// `host:port` of the server(s) the URL names, for error messages.
    pub fn target(&self) -> String {
        let Some(config) = tls::split_url(&self.url)
            .ok()
            .and_then(|(url, _)| url.parse::<tokio_postgres::Config>().ok())
        else {
            return "(unparsable DATABASE_URL)".to_owned();
        };
        let ports = config.get_ports();
        config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Opens one connection.
    pub async fn establish(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (config, tls) = self.postgres_config()?;
        let connector = tls.connector().map_err(|err| {
            ConnectionError::BadConnection(format!(
                "connecting to PostgreSQL at {}: {err}",
                self.target()
            ))
        })?;
        let (client, connection) = config
            .connect(connector)
            .await
            .map_err(|err| self.connect_error(&err))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }

    /// The cause of a failed connection with where orgd tried to connect.
    fn connect_error(&self, err: &tokio_postgres::Error) -> ConnectionError {
        let mut cause = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            cause.push_str(": ");
            cause.push_str(&inner.to_string());
            source = inner.source();
        }
        ConnectionError::BadConnection(format!(
            "connecting to PostgreSQL at {}: {cause}",
            self.target()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_name_go_in_the_startup_options() {
        let config = DbConfig {
            url: "postgres://u:p@db.internal:6432/orgd?options=-c%20search_path%3Dx".into(),
            application_name: "orgd".into(),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_millis(2500),
        };
        let (parsed, _) = config.postgres_config().unwrap();
        assert_eq!(parsed.get_application_name(), Some("orgd"));
        assert_eq!(
            parsed.get_options(),
            Some("-c search_path=x -c statement_timeout=10000 -c lock_timeout=2500")
        );
        assert_eq!(config.target(), "db.internal:6432");
    }

    #[test]
    fn a_name_in_the_url_wins_and_no_limits_send_no_options() {
        let config = DbConfig::unlimited("postgres://h/db?application_name=mine", "orgd");
        let (parsed, _) = config.postgres_config().unwrap();
        assert_eq!(parsed.get_application_name(), Some("mine"));
        // Nothing for a pooler to refuse.
        assert_eq!(parsed.get_options(), None);
        assert_eq!(parsed.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn a_limit_under_a_millisecond_is_still_a_limit() {
        let config = DbConfig {
            lock_timeout: Duration::from_micros(500),
            ..DbConfig::unlimited("postgres://h/db", "orgd")
        };
        let (parsed, _) = config.postgres_config().unwrap();
        assert_eq!(parsed.get_options(), Some("-c lock_timeout=1"));
    }

    #[test]
    fn tls_settings_tokio_postgres_does_not_know_are_taken_out() {
        let config = DbConfig::unlimited(
            "postgres://u@db.example.com:5433/orgd?sslmode=verify-full&sslrootcert=/ca.pem&application_name=mine",
            "orgd",
        );
        let (parsed, tls) = config.postgres_config().unwrap();
        assert_eq!(
            parsed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(parsed.get_application_name(), Some("mine"));
        assert_eq!(tls.mode, tls::SslMode::VerifyFull);
        assert_eq!(config.target(), "db.example.com:5433");
    }

    #[test]
    fn an_unusable_sslmode_is_a_url_error() {
        let config = DbConfig::unlimited("host=db sslmode=verify-full", "orgd");
        let Err(ConnectionError::InvalidConnectionUrl(message)) = config.postgres_config() else {
            panic!("verify-full without sslrootcert was accepted");
        };
        assert!(message.contains("needs sslrootcert"), "{message}");
    }
}
