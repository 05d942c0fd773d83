//! How callers' tokens are verified: a shared secret, a public key or the
//! identity provider's JWKS.

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::positive_duration;
use crate::secret_file::{self, MIN_SECRET_LEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

/// How caller tokens are verified (and dev tokens signed).
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 secret shared with the identity provider. Without it and without a public
    /// key, a random development secret is created in the data directory.
    #[arg(long, env = "ORGD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key of the identity provider, for RS256 or ES256 tokens.
    #[arg(long, env = "ORGD_JWT_PUBLIC_KEY_FILE", conflicts_with = "jwt_secret")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Signature algorithm of caller tokens.
    #[arg(long, env = "ORGD_JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// The identity provider's key set (JWKS) URL, e.g.
    /// `https://idp.example.com/.well-known/jwks.json`: each token is verified with
    /// the key its `kid` names (RS256, ES256 or EdDSA, as the key says), and the
    /// set is fetched again as the provider rotates its keys. Fetched at start-up:
    /// orgd does not start without it.
    #[arg(
        long,
        env = "ORGD_JWT_JWKS_URL",
        conflicts_with_all = ["jwt_secret", "jwt_public_key_file", "jwt_algorithm"],
        value_parser = jwks_url
    )]
    pub jwt_jwks_url: Option<reqwest::Url>,
    /// How often the JWKS is fetched again (sooner if its Cache-Control max-age
    /// says so, but never more often than --jwt-jwks-min-refresh).
    #[arg(long, env = "ORGD_JWT_JWKS_REFRESH", default_value = "5m", value_parser = positive_duration)]
    pub jwt_jwks_refresh: Duration,
    /// Shortest time between two fetches of the JWKS: a token naming an unknown
    /// `kid` makes orgd fetch it again, at most this often.
    #[arg(long, env = "ORGD_JWT_JWKS_MIN_REFRESH", default_value = "30s", value_parser = positive_duration)]
    pub jwt_jwks_min_refresh: Duration,
    /// Required `iss` claim.
    #[arg(long, env = "ORGD_JWT_ISSUER", default_value = "orgd-dev")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "ORGD_JWT_AUDIENCE", default_value = "orgd")]
    pub jwt_audience: String,
    /// Directory for the embedded PostgreSQL cluster and the development secret.
    #[arg(long, env = "ORGD_DATA_DIR", default_value = ".orgd-data")]
    pub data_dir: PathBuf,
}

/// Key material resolved from `JwtArgs`.
#[derive(Clone)]
pub enum JwtKey {
    Secret(Vec<u8>),
    /// The development secret orgd created in its data directory.
    DevSecret(Vec<u8>),
    PublicKeyPem {
        algorithm: JwtAlgorithm,
        pem: Vec<u8>,
    },
    /// Keys fetched from the identity provider, and fetched again as they rotate.
    Jwks(JwksSource),
}

/// Where and how often the JWKS is fetched.
#[derive(Debug, Clone)]
pub struct JwksSource {
    pub url: reqwest::Url,
    pub refresh: Duration,
    pub min_refresh: Duration,
}

impl JwtArgs {
    pub fn key(&self) -> anyhow::Result<JwtKey> {
        if let Some(url) = &self.jwt_jwks_url {
            if self.jwt_jwks_min_refresh > self.jwt_jwks_refresh {
                bail!("--jwt-jwks-min-refresh must not be longer than --jwt-jwks-refresh");
            }
            return Ok(JwtKey::Jwks(JwksSource {
                url: url.clone(),
                refresh: self.jwt_jwks_refresh,
                min_refresh: self.jwt_jwks_min_refresh,
            }));
        }
        match (
            &self.jwt_secret,
            &self.jwt_public_key_file,
            self.jwt_algorithm,
        ) {
            (Some(secret), _, JwtAlgorithm::Hs256) if secret.len() < MIN_SECRET_LEN => {
                bail!(
                    "--jwt-secret must be at least {MIN_SECRET_LEN} bytes; a shorter one can be guessed"
                )
            }
            (Some(secret), _, JwtAlgorithm::Hs256) => {
                Ok(JwtKey::Secret(secret.as_bytes().to_vec()))
            }
            (Some(_), _, other) => {
                bail!("--jwt-secret is for HS256, but --jwt-algorithm is {other:?}")
            }
            (None, Some(path), JwtAlgorithm::Hs256) => {
                bail!(
                    "--jwt-public-key-file {} needs --jwt-algorithm RS256 or ES256",
                    path.display()
                )
            }
            (None, Some(path), algorithm) => Ok(JwtKey::PublicKeyPem {
                algorithm,
                pem: fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            }),
            (None, None, JwtAlgorithm::Hs256) => Ok(JwtKey::DevSecret(self.dev_secret()?)),
            (None, None, other) => bail!("--jwt-algorithm {other:?} needs --jwt-public-key-file"),
        }
    }

    /// The development secret in the data directory, created on first use, so
    /// `orgd serve` and `orgd token` agree without any configuration.
    fn dev_secret(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.dev_secret_path();
        tracing::warn!(
            path = %path.display(),
            "no --jwt-secret, --jwt-public-key-file or --jwt-jwks-url: caller tokens are checked with the development secret, for development only"
        );
        Ok(secret_file::read_or_create(&path)?.into_bytes())
    }

    /// Where the development secret is kept.
    pub fn dev_secret_path(&self) -> PathBuf {
        self.data_dir_file("dev-jwt-secret")
    }

    /// The absolute path of `name` in the data directory.
    pub fn data_dir_file(&self, name: &str) -> PathBuf {
        std::path::absolute(self.data_dir.join(name)).unwrap_or_else(|_| self.data_dir.join(name))
    }
}

/// An http(s) URL (plain http is for a provider on the same host or network).
fn jwks_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|err| format!("{err}"))?;
    match url.scheme() {
        "https" | "http" => Ok(url),
        other => Err(format!("expected an https URL, not {other}:")),
    }
}
