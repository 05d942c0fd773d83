//! How webhooks are delivered (`crate::webhooks`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::positive_duration;

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// File with the key that webhook signing secrets are encrypted with (any
    /// secret of at least 32 bytes; AES-256-GCM under its SHA-256). Every
    /// replica on one database needs the same file. Without it, a random key is
    /// created in the data directory when the first endpoint needs one: keep
    /// that file, or endpoints' secrets cannot be read again.
    #[arg(long, env = "ORGD_WEBHOOK_KEY_FILE")]
    pub webhook_key_file: Option<PathBuf>,
    /// Lets webhook endpoints use plain http and private, loopback and
    /// link-local addresses: for tests and closed networks only.
    #[arg(long, env = "ORGD_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// How long an endpoint has to answer a delivery before it counts as failed.
    #[arg(long, env = "ORGD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub webhook_timeout: Duration,
    /// The waits before each retry of a failed delivery (comma-separated);
    /// once the last retry failed too, the endpoint is disabled.
    #[arg(
        long,
        env = "ORGD_WEBHOOK_RETRY_SCHEDULE",
        value_delimiter = ',',
        default_value = "5s,5m,30m,2h,5h,10h,10h",
        value_parser = positive_duration
    )]
    pub webhook_retry_schedule: Vec<Duration>,
    /// How long a delivery round holds the endpoints it claimed; a round cut
    /// off (orgd stopped) is taken over by another once it ends. At least
    /// twice --webhook-timeout.
    #[arg(long, env = "ORGD_WEBHOOK_LEASE", default_value = "1m", value_parser = positive_duration)]
    pub webhook_lease: Duration,
    /// How often delivery looks for due endpoints when no new event woke it
    /// (retries that came due, leases that ended).
    #[arg(long, env = "ORGD_WEBHOOK_POLL_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub webhook_poll_interval: Duration,
}

impl WebhookArgs {
    /// Refuses settings that cannot work together.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.webhook_lease >= self.webhook_timeout * 2,
            "--webhook-lease ({:?}) must be at least twice --webhook-timeout ({:?}), so that a delivery ends within its round's lease",
            self.webhook_lease,
            self.webhook_timeout
        );
        Ok(())
    }
}
